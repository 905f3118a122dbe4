'use strict';
// An xDS-enabled grpc-js server for mesh's interop tests.
//
// Usage: GRPC_XDS_BOOTSTRAP=boot.json node server.js --listen 127.0.0.1:PORT --name NAME
//        [--methods /test.Greeter/Hello,/test.Greeter/Delete,/test.Greeter/Get]
//
// Its listener, mTLS (XdsServerCredentials, the bootstrap's file_watcher certificates) and RBAC
// (only with GRPC_XDS_EXPERIMENTAL_RBAC=true) come from the mesh server. grpc-js has no handler
// for unknown methods, so it serves the methods listed. Each answers a StringValue holding JSON:
// its name, "grpc-js", the method, and the SPIFFE IDs of the caller's certificate. It prints
// "serving" when the control plane's listener makes it serve, and stops on SIGTERM.
const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');
const { encodeString, decodeString, parseArgs } = require('./wire');

const args = parseArgs(process.argv.slice(2));
const methods = (args.methods || '/test.Greeter/Hello,/test.Greeter/Delete,/test.Greeter/Get').split(',');
const identity = (x) => x;

function peerIDs(call) {
  const cert = call.getAuthContext && call.getAuthContext().sslPeerCertificate;
  if (!cert || !cert.subjectaltname) return [];
  return cert.subjectaltname.split(', ').filter((s) => s.startsWith('URI:spiffe://')).map((s) => s.slice(4)).sort();
}

const definition = {};
const handlers = {};
methods.forEach((path, i) => {
  const key = 'm' + i;
  definition[key] = {
    path, requestStream: false, responseStream: false,
    requestSerialize: identity, requestDeserialize: identity,
    responseSerialize: identity, responseDeserialize: identity,
  };
  handlers[key] = (call, callback) => {
    const reply = { server: args.name, impl: 'grpc-js', method: path, request: decodeString(call.request), peer: peerIDs(call) };
    callback(null, encodeString(JSON.stringify(reply)));
  };
});

// register() installs the HTTP filters (router, RBAC) and the LB policies; without it every
// listener is NACKed ("envoy.filters.http.router filter validation failed").
xds.register();
const server = new xds.XdsServer();
server.addService(definition, handlers);
server.addServingStateListener(args.listen, (st) => {
  console.log(st.code === grpc.status.OK ? 'serving on ' + args.listen : 'not serving on ' + args.listen + ': ' + st.details);
});
server.bindAsync(args.listen, new xds.XdsServerCredentials(grpc.ServerCredentials.createInsecure()), (err) => {
  if (err) {
    console.error('bind:', err.message);
    process.exit(1);
  }
  console.log('started', args.listen);
});
const stop = () => server.tryShutdown(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
