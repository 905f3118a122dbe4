package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/internal/testutil"
	"github.com/meshgit/mesh/xds"
)

// TestServeXDSTLS runs mesh serve --xds-tls end to end: the CA comes up with the cluster, a
// service token and `mesh agent` give web its certificate, and the xDS server serves web's
// configuration only to a client presenting that certificate for node.cluster web. The same
// certificate with node.cluster db, no certificate, or plaintext, get nothing.
func TestServeXDSTLS(t *testing.T) {
	repo := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "mesh.cue"), []byte(`package mesh

mesh: {name: "t", trustDomain: "t.mesh"}
services: web: {protocol: "grpc", port: 8080, upstreams: db: localPort: 9000, endpoints: [{address: "127.0.0.1", port: 8080}]}
services: db: {protocol: "grpc", port: 9090, endpoints: [{address: "127.0.0.1", port: 9090}]}
intentions: db: web: action: "allow"
`), 0o644)
	git("add", "-A")
	git("commit", "-q", "-m", "mesh")

	dir := t.TempDir()
	adminToken := filepath.Join(dir, "admin-token")
	os.WriteFile(adminToken, []byte("operator-secret-token\n"), 0o600)
	httpAddr, xdsAddr, log := startServe(t, serveOptions{repo: repo, data: filepath.Join(dir, "data"),
		xdsTLS: true, tokenFile: adminToken, logLevel: "info"})

	// The leader creates the CA once the first snapshot names the trust domain.
	op := &ca.Client{Addr: httpAddr, Token: "operator-secret-token"}
	deadline := time.Now().Add(20 * time.Second)
	var tok *ca.TokenResponse
	for {
		var err error
		if tok, err = op.CreateToken(context.Background(), ca.TokenRequest{Service: "web"}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no service token: %v\n%s", err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	tokFile := filepath.Join(dir, "web-token")
	os.WriteFile(tokFile, []byte(tok.Token+"\n"), 0o600)
	certs := filepath.Join(dir, "web-certs")
	var out, errOut testutil.SyncBuffer
	if code := Run([]string{"agent", "--service", "web", "--dir", certs, "--http", httpAddr, "--token-file", tokFile, "--once"}, &out, &errOut); code != 0 {
		t.Fatalf("mesh agent: exit %d\n%s", code, errOut.String())
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(certs, "cert.pem"), filepath.Join(certs, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)

	// fetch opens an ADS stream as node (id, cluster) and returns the first answer's error.
	fetch := func(creds grpc.DialOption, cluster string) error {
		conn, err := grpc.NewClient(xdsAddr, creds)
		if err != nil {
			return err
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(cctx)
		if err != nil {
			return err
		}
		req := &discoverygrpc.DiscoveryRequest{
			Node:    &corev3.Node{Id: cluster + "-1", Cluster: cluster, UserAgentName: "envoy"},
			TypeUrl: resource.ClusterType,
		}
		if err := stream.Send(req); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if len(resp.Resources) == 0 {
			return errors.New("no clusters")
		}
		return nil
	}
	mtls := grpc.WithTransportCredentials(xds.ClientCredentials("t.mesh", func() *x509.CertPool { return roots },
		func() (*tls.Certificate, error) { return &pair, nil }))
	if err := fetch(mtls, "web"); err != nil {
		t.Fatalf("web with its own certificate: %v\n%s", err, log.String())
	}
	if err := fetch(mtls, "db"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("web's certificate asking for db's configuration: %v, want PermissionDenied", err)
	}
	noCert := grpc.WithTransportCredentials(xds.ClientCredentials("t.mesh", func() *x509.CertPool { return roots },
		func() (*tls.Certificate, error) { return &tls.Certificate{}, nil }))
	if err := fetch(noCert, "web"); err == nil {
		t.Errorf("a client without a certificate was served")
	}
	if err := fetch(grpc.WithTransportCredentials(insecure.NewCredentials()), "web"); err == nil {
		t.Errorf("a plaintext client was served")
	}
}
