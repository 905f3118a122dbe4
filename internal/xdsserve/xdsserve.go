// Package xdsserve runs the proxyless gRPC xDS server of mesh's programs that play a service
// (the demo's payments, the grpc-go server of the interop tests). Its listener, its mTLS and its
// RBAC come from the mesh server through the bootstrap of GRPC_XDS_BOOTSTRAP; every method goes
// to one handler, so what decides whether a call reaches it is the RBAC. Run prints "serving on
// ADDR" when the control plane has sent the listener ("not serving on ADDR ERR" when it is
// withdrawn or refused) and returns nil after SIGTERM or an interrupt.
package xdsserve

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds"
)

// Run serves handler on listen until SIGTERM or an interrupt, printing serving-mode changes to out.
func Run(listen string, handler grpc.StreamHandler, out io.Writer) error {
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	srv, err := xds.NewGRPCServer(
		grpc.Creds(creds),
		grpc.UnknownServiceHandler(handler),
		xds.ServingModeCallback(func(addr net.Addr, a xds.ServingModeChangeArgs) {
			if a.Mode == connectivity.ServingModeServing {
				fmt.Fprintln(out, "serving on", addr)
			} else {
				fmt.Fprintln(out, "not serving on", addr, a.Err)
			}
		}),
	)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		<-sig
		srv.Stop()
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
