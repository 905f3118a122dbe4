package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/meshgit/mesh/internal/testutil"
)

// grpcLogs holds gRPC's warnings and errors of the whole test run (gRPC's file_watcher logs file
// contents when a pair does not match), searched for key material by the end-to-end tests.
var grpcLogs testutil.SyncBuffer

func TestMain(m *testing.M) {
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, &grpcLogs, &grpcLogs))
	os.Exit(m.Run())
}

// env is a CA served over real HTTP on loopback, with everything it and its agents log and answer.
type env struct {
	ca       *CA
	srv      *httptest.Server
	rec      *recorder
	logs     testutil.SyncBuffer
	log      *slog.Logger
	operator string
}

func newEnv(t *testing.T, cfg Config) *env {
	e := &env{operator: "op-" + t.Name()}
	e.log = slog.New(slog.NewTextHandler(&e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Log, cfg.OperatorToken = e.log, e.operator
	e.ca = newTestCA(t, cfg)
	e.rec = &recorder{h: e.ca.Handler()}
	e.srv = httptest.NewServer(e.rec) // a real listener on 127.0.0.1:0
	t.Cleanup(e.srv.Close)
	return e
}

// agent starts `mesh agent` logic for service and waits for its first certificate.
func (e *env) agent(t *testing.T, ctx context.Context, service string, issued *atomic.Int32) string {
	t.Helper()
	tr, err := (&Client{Addr: e.srv.URL, Token: e.operator}).CreateToken(ctx, TokenRequest{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), service)
	first := make(chan struct{})
	var once sync.Once
	a := &Agent{Client: &Client{Addr: e.srv.URL, Token: tr.Token}, Service: service, Dir: dir, Log: e.log.With("agent", service),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
		OnIssue: func(*Leaf) {
			if issued != nil {
				issued.Add(1)
			}
			once.Do(func() { close(first) })
		}}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("agent %s: %v", service, err)
		}
	})
	select {
	case <-first:
	case err := <-done:
		t.Fatalf("agent %s stopped: %v", service, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("agent %s: no certificate", service)
	}
	return dir
}

// provider is gRPC's file_watcher over an agent's directory.
func provider(t *testing.T, dir string, refresh time.Duration) certprovider.Provider {
	t.Helper()
	p, err := pemfile.NewProvider(pemfile.Options{CertFile: filepath.Join(dir, CertFile), KeyFile: filepath.Join(dir, KeyFile),
		RootFile: filepath.Join(dir, CAFile), RefreshDuration: refresh})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// mtls is the TLS a proxyless service builds over its provider: present its leaf, verify the
// peer's chain against the bundle and accept only the SPIFFE IDs allow admits.
func mtls(p certprovider.Provider, server bool, allow func(id string) bool) credentials.TransportCredentials {
	km := func() (*certprovider.KeyMaterial, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return p.KeyMaterial(ctx)
	}
	usage := x509.ExtKeyUsageServerAuth
	if server {
		usage = x509.ExtKeyUsageClientAuth
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: !server, // VerifyPeerCertificate verifies: SPIFFE IDs are not host names
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			m, err := km()
			if err != nil {
				return err
			}
			id, err := VerifyPeer(raw, m.Roots, usage, time.Now())
			if err != nil {
				return err
			}
			if !allow(id) {
				return fmt.Errorf("peer %s not allowed", id)
			}
			return nil
		},
	}
	leaf := func() (*tls.Certificate, error) {
		m, err := km()
		if err != nil {
			return nil, err
		}
		return &m.Certs[0], nil
	}
	if server {
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return leaf() }
	} else {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return leaf() }
	}
	return credentials.NewTLS(cfg)
}

func only(id string) func(string) bool { return func(got string) bool { return got == id } }

func sid(service string) string { return "spiffe://shop.mesh/ns/default/dc/dc1/svc/" + service }

// grpcServer serves the health service with creds and records the client leaf serials it sees.
func grpcServer(t *testing.T, creds credentials.TransportCredentials, seen *sync.Map) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if p, ok := peer.FromContext(ctx); ok && seen != nil {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
				seen.Store(ti.State.PeerCertificates[0].SerialNumber.String(), ti.State.PeerCertificates)
			}
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func check(addr string, creds credentials.TransportCredentials) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer cc.Close()
	return checkConn(cc)
}

func checkConn(cc *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// TestGRPCMTLS: certificates written by the agent give working mTLS, and the server refuses
// plaintext, other CAs and other services.
func TestGRPCMTLS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newEnv(t, Config{})
	apiDir := e.agent(t, ctx, "api", nil)
	webDir := e.agent(t, ctx, "web", nil)
	dbDir := e.agent(t, ctx, "db", nil)
	addr := grpcServer(t, mtls(provider(t, apiDir, time.Second), true, only(sid("web"))), nil)

	if err := check(addr, mtls(provider(t, webDir, time.Second), false, only(sid("api")))); err != nil {
		t.Fatalf("web → api over mTLS: %v", err)
	}
	mustFail(t, "plaintext client", check(addr, insecure.NewCredentials()))
	mustFail(t, "db's identity where only web is allowed", check(addr, mtls(provider(t, dbDir, time.Second), false, only(sid("api")))))
	// A client whose "web" certificate comes from another CA (same trust domain, other root).
	other := newTestCA(t, Config{})
	otherTok, _, _ := other.CreateToken(ctx, ScopeService, "web")
	osrv := httptest.NewServer(other.Handler())
	defer osrv.Close()
	foreignDir := filepath.Join(t.TempDir(), "foreign")
	if _, err := (&Agent{Client: &Client{Addr: osrv.URL, Token: otherTok}, Service: "web", Dir: foreignDir}).Issue(ctx); err != nil {
		t.Fatal(err)
	}
	// It trusts our bundle (so it would accept the server); only its own certificate is foreign.
	ours, _ := os.ReadFile(filepath.Join(webDir, CAFile))
	if err := os.WriteFile(filepath.Join(foreignDir, CAFile), ours, 0o644); err != nil {
		t.Fatal(err)
	}
	mustFail(t, "a certificate from another CA", check(addr, mtls(provider(t, foreignDir, time.Second), false, only(sid("api")))))
	// And the client checks the server: web refuses a server that is not the one it wants.
	mustFail(t, "a server with another identity", check(addr, mtls(provider(t, webDir, time.Second), false, only(sid("db")))))
	cancel()
	noKeyMaterial(t, "responses", e.rec.bodies.String(), e.ca)
	noKeyMaterial(t, "logs", e.logs.String(), e.ca)
	if strings.Contains(grpcLogs.String(), "PRIVATE KEY") {
		t.Error("gRPC logged a private key")
	}
}

// TestGRPCRenewalAndRotation runs a minute of continuous RPCs with 10-second leaves, rotates the
// root a third of the way in, and expects certificates renewed, the old root retired and not one
// failed call.
func TestGRPCRenewalAndRotation(t *testing.T) {
	duration := time.Minute
	if testing.Short() {
		duration = 25 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newEnv(t, Config{LeafTTL: 10 * time.Second, RetireGrace: 2 * time.Second})
	go e.ca.Run(ctx, 200*time.Millisecond)
	var apiIssued, webIssued atomic.Int32
	apiDir := e.agent(t, ctx, "api", &apiIssued)
	webDir := e.agent(t, ctx, "web", &webIssued)
	var seen sync.Map // client leaf serial → chain, as the server saw them
	addr := grpcServer(t, mtls(provider(t, apiDir, 100*time.Millisecond), true, only(sid("web"))), &seen)
	clientCreds := mtls(provider(t, webDir, 100*time.Millisecond), false, only(sid("api")))

	long, err := grpc.NewClient(addr, grpc.WithTransportCredentials(clientCreds))
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	rpcs := func(fresh bool) {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var err error
			if fresh { // a new connection, so a new handshake with the current files
				err = check(addr, clientCreds)
			} else {
				err = checkConn(long)
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				ok.Add(1)
			}
		}
	}
	wg.Add(3)
	go rpcs(false)
	go rpcs(true)
	go rpcs(true)

	start := time.Now()
	oldRoot := e.ca.State().Active().RootPEM
	time.Sleep(duration / 3)
	op := &Client{Addr: e.srv.URL, Token: e.operator}
	rr, err := op.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.Bundle.Roots) != 2 {
		t.Fatalf("bundle after rotate holds %d roots", len(rr.Bundle.Roots))
	}
	newRoot := e.ca.State().Active().RootPEM
	time.Sleep(time.Until(start.Add(duration)))
	close(stop)
	wg.Wait()

	b, err := op.Roots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d RPCs ok, %d failed; api issued %d leaves, web %d; bundle now %d roots",
		ok.Load(), failed.Load(), apiIssued.Load(), webIssued.Load(), len(b.Roots))
	if failed.Load() != 0 {
		t.Errorf("%d RPCs failed, first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load() < int64(duration/(40*time.Millisecond)) {
		t.Errorf("only %d RPCs succeeded", ok.Load())
	}
	// 10 s leaves renewed at 6-9 s: at least one renewal per 9 s after the first leaf.
	if min := int32(duration / (9 * time.Second)); webIssued.Load() <= min || apiIssued.Load() <= min {
		t.Errorf("leaves issued: web %d, api %d, want more than %d each", webIssued.Load(), apiIssued.Load(), min)
	}
	if len(b.Roots) != 1 || b.Roots[0].RootPEM != newRoot {
		t.Errorf("old root not retired: %d roots", len(b.Roots))
	}
	// The server saw the client renew, and its last certificates chain to the new root alone.
	var serials int
	var newest []*x509.Certificate
	seen.Range(func(_, v any) bool {
		serials++
		chain := v.([]*x509.Certificate)
		if newest == nil || chain[0].NotBefore.After(newest[0].NotBefore) {
			newest = chain
		}
		return true
	})
	if serials < int(duration/(9*time.Second)) {
		t.Errorf("server saw %d client certificates", serials)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(newRoot))
	if _, err := newest[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the newest client certificate does not chain to the new root: %v", err)
	}
	// (A short run may end before web's first renewal after the retirement.)
	if !testing.Short() && strings.Contains(string(mustRead(t, filepath.Join(webDir, CAFile))), strings.TrimSpace(oldRoot)) {
		t.Error("web's ca.pem still trusts the retired root")
	}
	cancel()
	noKeyMaterial(t, "responses", e.rec.bodies.String(), e.ca)
	noKeyMaterial(t, "logs", e.logs.String(), e.ca)
	if strings.Contains(grpcLogs.String(), "PRIVATE KEY") {
		t.Error("gRPC logged a private key")
	}
	if !strings.Contains(e.logs.String(), "ca authority retired") || !strings.Contains(e.logs.String(), "certificate written") {
		t.Error("logs do not show the retirement and renewals: is the log search looking at the right thing?")
	}
}

func mustFail(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: the call succeeded", what)
	}
	t.Logf("%s: refused: %v", what, err)
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
