package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
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
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/testutil"
)

// testCA is a throwaway certificate authority issuing SPIFFE leaf certificates.
type testCA struct {
	key    *ecdsa.PrivateKey
	cert   *x509.Certificate
	certPE []byte
	serial int64
	mu     sync.Mutex
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mesh test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: testTrustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: key, cert: cert, certPE: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), serial: 1}
}

// issue writes cert.pem, key.pem and ca.pem for service into a new directory and returns it.
func (ca *testCA) issue(t testing.TB, service string) string {
	t.Helper()
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := url.Parse(mesh.SpiffeID(testTrustDomain, "dc1", service))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: service},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), service)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
		"ca.pem":   ca.certPE,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testLogger logs to the test at warn level and above (set MESH_XDS_DEBUG=1 for everything).
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("MESH_XDS_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

var _ io.Writer = testWriter{}

// startXDS serves s on a loopback port and returns its address.
func startXDS(t testing.TB, s *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(GRPCServerOptions()...)
	s.Register(g)
	go g.Serve(lis)
	t.Cleanup(func() {
		s.Close()
		g.Stop()
	})
	return lis.Addr().String()
}

func grpcBootstrap(t testing.TB, xdsAddr, service, nodeID, certDir string) []byte {
	t.Helper()
	b, err := GRPCBootstrap(GRPCBootstrapOptions{Service: service, NodeID: nodeID, XDSAddr: xdsAddr, CertDir: certDir, RefreshInterval: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// echoHandler answers any method with the subset name of the server, after reading the
// request; RBAC runs in the xDS server's interceptors before it.
func echoHandler(subset string) grpc.StreamHandler {
	return func(_ any, stream grpc.ServerStream) error {
		in := &wrapperspb.StringValue{}
		if err := stream.RecvMsg(in); err != nil {
			return err
		}
		return stream.SendMsg(wrapperspb.String(subset))
	}
}

// startGreeter starts an xDS-enabled gRPC server on lis for service with the given subset
// name, and waits until it is SERVING (it needs its listener from the control plane).
func startGreeter(t testing.TB, lis net.Listener, xdsAddr, service, nodeID, subset, certDir string) *xds.GRPCServer {
	t.Helper()
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	var once sync.Once
	srv, err := xds.NewGRPCServer(
		grpc.Creds(creds),
		grpc.UnknownServiceHandler(echoHandler(subset)),
		xds.BootstrapContentsForTesting(grpcBootstrap(t, xdsAddr, service, nodeID, certDir)),
		xds.ServingModeCallback(func(addr net.Addr, args xds.ServingModeChangeArgs) {
			if args.Mode == connectivity.ServingModeServing {
				once.Do(func() { close(serving) })
			} else if args.Err != nil {
				t.Logf("server %s not serving: %v", addr, args.Err)
			}
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	select {
	case <-serving:
	case <-time.After(20 * time.Second):
		t.Fatalf("xDS server %s (%s) never became SERVING", service, subset)
	}
	return srv
}

// dialService returns a client of service to xds:///<target>, with its own bootstrap.
func dialService(t testing.TB, xdsAddr, service, nodeID, target, certDir string) *grpc.ClientConn {
	t.Helper()
	rb, err := xds.NewXDSResolverWithConfigForTesting(grpcBootstrap(t, xdsAddr, service, nodeID, certDir))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(rb), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// call makes one RPC and returns the answering subset, or the status code.
func call(cc *grpc.ClientConn, method string, md ...string) (string, codes.Code, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	out := &wrapperspb.StringValue{}
	err := cc.Invoke(ctx, method, wrapperspb.String("hi"), out, grpc.WaitForReady(true))
	if err != nil {
		return "", status.Code(err), err
	}
	return out.GetValue(), codes.OK, nil
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, timeout, 20*time.Millisecond, what, cond)
}

func proxyStatus(s *Server, nodeID string) (ProxyStatus, bool) {
	for _, p := range s.Proxies() {
		if p.NodeID == nodeID {
			return p, true
		}
	}
	return ProxyStatus{}, false
}

// upToDate reports whether a node ACKed the version it should run.
func upToDate(s *Server, nodeID string) bool {
	p, ok := proxyStatus(s, nodeID)
	return ok && p.Version != "" && p.AckedVersion == p.Version
}

func listenLoopback(t testing.TB) (net.Listener, int) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis, lis.Addr().(*net.TCPAddr).Port
}

var _ = fmt.Sprintf
