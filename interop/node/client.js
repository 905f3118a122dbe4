'use strict';
// An xDS grpc-js client for mesh's interop tests.
//
// Usage: GRPC_XDS_BOOTSTRAP=boot.json node client.js
//
// Reads one JSON request a line on stdin:
//   {"id": "r1", "target": "svc", "method": "/test.Greeter/Hello", "metadata": {"k": "v"},
//    "count": 10, "timeout_ms": 5000}
// and for each makes count calls, one after the other, to xds:///target (XdsChannelCredentials:
// mTLS with the bootstrap's certificates) with waitForReady, printing one JSON line per call:
//   {"id": "r1", "code": 0, "status": "OK", "details": "", "reply": "<the server's JSON>"}
// then {"id": "r1", "done": true}. Clients are kept per target. Exits at end of input.
const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');
const readline = require('readline');
const { encodeString, decodeString } = require('./wire');

xds.register();
const creds = new xds.XdsChannelCredentials(grpc.credentials.createInsecure());
const clients = {};
const statusName = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));
const identity = (x) => x;

function callOnce(client, req) {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(req.metadata || {})) md.add(k, v);
    const deadline = new Date(Date.now() + (req.timeout_ms || 5000));
    client.makeUnaryRequest(req.method, identity, identity, encodeString('hi'), md, { deadline, waitForReady: true }, (err, reply) => {
      if (err) resolve({ id: req.id, code: err.code, status: statusName[err.code], details: err.details || '' });
      else resolve({ id: req.id, code: 0, status: 'OK', details: '', reply: decodeString(reply) });
    });
  });
}

async function main() {
  const rl = readline.createInterface({ input: process.stdin });
  console.log(JSON.stringify({ ready: true }));
  for await (const line of rl) {
    if (!line.trim()) continue;
    const req = JSON.parse(line);
    if (!clients[req.target]) clients[req.target] = new grpc.Client('xds:///' + req.target, creds);
    for (let i = 0; i < (req.count || 1); i++) console.log(JSON.stringify(await callOnce(clients[req.target], req)));
    console.log(JSON.stringify({ id: req.id, done: true }));
  }
  Object.values(clients).forEach((c) => c.close());
  process.exit(0);
}

main();
