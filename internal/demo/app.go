package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgit/mesh/internal/xdsserve"
)

// Exit statuses of the call role.
const (
	callAllowed = 0
	callDenied  = 3 // PERMISSION_DENIED: the server's RBAC refused the call
	callFailed  = 1
)

// servePayments is the payments service: a proxyless gRPC xDS server on --listen. Its listener,
// its mTLS (certificates from the files `mesh agent` writes) and its RBAC come from the mesh
// server through the bootstrap of GRPC_XDS_BOOTSTRAP. It answers every method, so what decides
// whether a call reaches it is the RBAC. It prints "serving" once the control plane has sent its
// listener, and stops on SIGTERM.
func servePayments(args []string) int {
	fs := flag.NewFlagSet("payments", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on (an endpoint of payments in the mesh)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := xdsserve.Run(*listen, answer, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// answer handles any method: it reads the request and says which method served it.
func answer(_ any, stream grpc.ServerStream) error {
	in := &wrapperspb.StringValue{}
	if err := stream.RecvMsg(in); err != nil {
		return err
	}
	method, _ := grpc.MethodFromServerStream(stream)
	return stream.SendMsg(wrapperspb.String(fmt.Sprintf("payments ran %s for %s", method, in.GetValue())))
}

// callOnce is one call of the web service to xds:///payments, with web's identity (the
// bootstrap of GRPC_XDS_BOOTSTRAP names its certificates). It prints the answer and exits 0, or
// prints the refusal and exits callDenied for PERMISSION_DENIED, callFailed otherwise.
func callOnce(args []string) int {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	target := fs.String("target", "payments", "the service to call")
	method := fs.String("method", "", "the full method, /package.Service/Method")
	timeout := fs.Duration("timeout", 15*time.Second, "how long the call may take")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return callFailed
	}
	cc, err := grpc.NewClient("xds:///"+*target, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return callFailed
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	out := &wrapperspb.StringValue{}
	err = cc.Invoke(ctx, *method, wrapperspb.String("order-42"), out, grpc.WaitForReady(true))
	switch status.Code(err) {
	case codes.OK:
		fmt.Println(out.GetValue())
		return callAllowed
	case codes.PermissionDenied:
		fmt.Println(status.Convert(err).Message())
		return callDenied
	}
	fmt.Printf("%v (connection state %s)\n", err, cc.GetState())
	return callFailed
}
