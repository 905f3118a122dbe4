"""An xDS-enabled gRPC C-core server for mesh's interop tests (run with /usr/bin/python3).

Usage: GRPC_XDS_BOOTSTRAP=boot.json python3 server.py --listen 127.0.0.1:PORT --name NAME

Its listener, mTLS (xds server credentials, the bootstrap's file_watcher certificates) and RBAC
come from the mesh server. It answers every method with a StringValue holding JSON: its name,
"c-core", the method, and the SPIFFE IDs of the caller's certificate. Stops on SIGTERM.
"""

import argparse
import json
import signal
import sys
import threading
from concurrent import futures

import grpc

from wire import decode_string, encode_string


def peer_spiffe_ids(context):
    ids = set()
    for values in (context.auth_context() or {}).values():
        for v in values:
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            if isinstance(v, str) and v.startswith("spiffe://"):
                ids.add(v)
    return sorted(ids)


class Answer(grpc.GenericRpcHandler):
    def __init__(self, name):
        self.name = name

    def service(self, details):
        method = details.method

        def handle(request, context):
            reply = {
                "server": self.name,
                "impl": "c-core",
                "method": method,
                "request": decode_string(request),
                "peer": peer_spiffe_ids(context),
            }
            return encode_string(json.dumps(reply))

        return grpc.unary_unary_rpc_method_handler(handle)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--name", required=True)
    a = p.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), xds=True)
    server.add_generic_rpc_handlers((Answer(a.name),))
    creds = grpc.xds_server_credentials(grpc.insecure_server_credentials())
    server.add_secure_port(a.listen, creds)
    server.start()
    print("started", a.listen, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
