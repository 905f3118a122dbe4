package ca

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/status"
	grpcxds "google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/xds"
)

const xdsMesh = `package mesh

mesh: {
	name:             "e2e"
	trustDomain:      "shop.mesh"
	datacenter:       "dc1"
	datacenters:      ["dc1"]
	defaultIntention: "deny"
}

services: greeter: {protocol: "grpc", port: 8080, endpoints: [{address: "127.0.0.1", port: %d}]}
services: web: {protocol: "grpc", port: 8080, upstreams: greeter: localPort: 9191}
services: batch: {protocol: "grpc", port: 8080, upstreams: greeter: localPort: 9191}

intentions: greeter: web: action: "allow"
`

// TestXDSWithAgentCertificates: real gRPC xDS servers and clients, configured by our xDS server,
// take their certificates from directories written by the agent (the "mesh" file_watcher
// provider of mesh grpc bootstrap). mTLS works, RBAC decides on the SPIFFE ID our CA put in the
// leaf, and a plaintext client or one whose certificate comes from another CA gets nowhere.
func TestXDSWithAgentCertificates(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newEnv(t, Config{})
	greeterDir := e.agent(t, ctx, "greeter", nil)
	webDir := e.agent(t, ctx, "web", nil)
	batchDir := e.agent(t, ctx, "batch", nil)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := compiler.Compile(ctx, []compiler.File{{Name: "mesh.cue", Data: fmt.Appendf(nil, xdsMesh, lis.Addr().(*net.TCPAddr).Port)}})
	if err != nil {
		t.Fatal(err)
	}
	xs := xds.NewServer(e.log.With("component", "xds"))
	if err := xs.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	xl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	xs.Register(g)
	go g.Serve(xl)
	t.Cleanup(func() { xs.Close(); g.Stop() })
	xdsAddr := xl.Addr().String()

	bootstrap := func(service, dir string) []byte {
		b, err := xds.GRPCBootstrap(xds.GRPCBootstrapOptions{Service: service, NodeID: service + "-1", XDSAddr: xdsAddr, CertDir: dir, RefreshInterval: "1s"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// The greeter: an xDS server whose listener, TLS and RBAC come from the control plane.
	screds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	var once sync.Once
	gs, err := grpcxds.NewGRPCServer(grpc.Creds(screds),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			in := &wrapperspb.StringValue{}
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return stream.SendMsg(wrapperspb.String("hello"))
		}),
		grpcxds.BootstrapContentsForTesting(bootstrap("greeter", greeterDir)),
		grpcxds.ServingModeCallback(func(_ net.Addr, args grpcxds.ServingModeChangeArgs) {
			if args.Mode == connectivity.ServingModeServing {
				once.Do(func() { close(serving) })
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	select {
	case <-serving:
	case <-time.After(20 * time.Second):
		t.Fatal("the greeter never became SERVING")
	}

	dial := func(service, dir string) *grpc.ClientConn {
		rb, err := grpcxds.NewXDSResolverWithConfigForTesting(bootstrap(service, dir))
		if err != nil {
			t.Fatal(err)
		}
		creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient("xds:///greeter", grpc.WithResolvers(rb), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	hello := func(cc *grpc.ClientConn, waitForReady bool) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return cc.Invoke(ctx, "/test.Greeter/Hello", wrapperspb.String("hi"), &wrapperspb.StringValue{}, grpc.WaitForReady(waitForReady))
	}

	if err := hello(dial("web", webDir), true); err != nil {
		t.Fatalf("web → greeter (allowed): %v", err)
	}
	if err := hello(dial("batch", batchDir), true); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("batch → greeter (no intention): %v, want PermissionDenied", err)
	}
	// Plaintext straight to the greeter's port: the listener requires TLS.
	plain, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	mustFail(t, "plaintext client", hello(plain, false))

	// "web" with a certificate from another CA (it trusts ours, so only its own leaf is foreign).
	other := newTestCA(t, Config{})
	otherTok, _, _ := other.CreateToken(ctx, ScopeService, "web")
	osrv := httptest.NewServer(other.Handler())
	defer osrv.Close()
	foreign := filepath.Join(t.TempDir(), "foreign")
	if _, err := (&Agent{Client: &Client{Addr: osrv.URL, Token: otherTok}, Service: "web", Dir: foreign}).Issue(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, CAFile), mustRead(t, filepath.Join(webDir, CAFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	err = hello(dial("web", foreign), false)
	if status.Code(err) == codes.OK || status.Code(err) == codes.PermissionDenied {
		t.Fatalf("web with another CA's certificate: %v, want a failed handshake", err)
	}
	t.Logf("web with another CA's certificate: refused: %v", err)

	cancel()
	noKeyMaterial(t, "responses", e.rec.bodies.String(), e.ca)
	noKeyMaterial(t, "logs", e.logs.String(), e.ca)
}
