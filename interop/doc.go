// Package interop holds mesh's interoperability tests: the xDS configuration that `mesh serve`
// sends is consumed by three independent gRPC xDS implementations, grpc-go (this test binary),
// gRPC C-core (python/, Debian's python3-grpcio 1.51) and grpc-js-xds (node/, npm's 1.14), each
// run as a real process with its own bootstrap from `mesh grpc bootstrap` and certificates from
// `mesh agent`. The tests guarantee that every scenario of README.md's table passes on every
// implementation that supports it (mTLS with SPIFFE identities, RBAC enforced by each server,
// routing, splits, live intention changes), across implementation pairs, and that C-core's RBAC
// agrees with mesh.Authorize on random meshes. The package has no code of its own.
package interop
