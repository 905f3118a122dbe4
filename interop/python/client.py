"""An xDS gRPC C-core client for mesh's interop tests (run with /usr/bin/python3).

Usage: GRPC_XDS_BOOTSTRAP=boot.json python3 client.py

Reads one JSON request a line on stdin:
  {"id": "r1", "target": "svc", "method": "/test.Greeter/Hello", "metadata": {"k": "v"},
   "count": 10, "timeout_ms": 5000}
and for each makes count calls to xds:///target (xds channel credentials: mTLS with the
bootstrap's certificates) with wait_for_ready, printing one JSON line per call:
  {"id": "r1", "code": 0, "status": "OK", "details": "", "reply": "<the server's JSON>"}
then {"id": "r1", "done": true}. Channels are kept per target. Exits at end of input.
"""

import json
import sys

import grpc
import grpc.experimental

from wire import decode_string, encode_string


def main():
    channels = {}
    creds = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        target = req["target"]
        if target not in channels:
            channels[target] = grpc.secure_channel("xds:///" + target, creds)
        call = channels[target].unary_unary(req["method"])
        md = tuple((k, v) for k, v in (req.get("metadata") or {}).items())
        timeout = req.get("timeout_ms", 5000) / 1000.0
        for _ in range(req.get("count", 1)):
            out = {"id": req["id"]}
            try:
                reply = call(encode_string("hi"), metadata=md, timeout=timeout, wait_for_ready=True)
                out.update(code=0, status="OK", details="", reply=decode_string(reply))
            except grpc.RpcError as e:
                code = e.code()
                out.update(code=code.value[0], status=code.name, details=e.details() or "")
            print(json.dumps(out), flush=True)
        print(json.dumps({"id": req["id"], "done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
