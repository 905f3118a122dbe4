package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/internal/testutil"
)

// newMeshCA returns the real mesh CA (in memory) for the test trust domain.
func newMeshCA(t testing.TB) *ca.CA {
	t.Helper()
	c := ca.New(ca.Config{Store: ca.NewMemStore(nil), Rate: -1})
	if err := c.Init(context.Background(), testTrustDomain, nil); err != nil {
		t.Fatal(err)
	}
	return c
}

// caLeaf makes a key here (as mesh agent does) and has c sign a CSR for service.
func caLeaf(t testing.TB, c *ca.CA, service string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Sign(service, csr)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(l.CertPEM), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

// livePool returns the CA's current bundle as a pool, read at every call.
func livePool(t testing.TB, c *ca.CA) func() *x509.CertPool {
	return func() *x509.CertPool {
		b, err := c.Bundle()
		if err != nil {
			return nil
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM([]byte(b.BundlePEM)) {
			return nil
		}
		return p
	}
}

// caSigner is how mesh serve lets ServingCertificate ask the CA for the server's leaf.
func caSigner(c *ca.CA) func([]byte) ([]byte, error) {
	return func(csr []byte) ([]byte, error) {
		l, err := c.Sign(ServerIdentity, csr)
		if err != nil {
			return nil, err
		}
		return []byte(l.CertPEM), nil
	}
}

// startTLSXDS serves srv as mesh serve --xds-tls does: the trust bundle from c set on srv,
// ServerCredentials with srv's live pool and a ServingCertificate signed by c.
func startTLSXDS(t *testing.T, srv *Server, c *ca.CA) string {
	t.Helper()
	b, err := c.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetTrustBundle([]byte(b.BundlePEM)); err != nil {
		t.Fatal(err)
	}
	sc := &ServingCertificate{Sign: caSigner(c)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(ServerCredentials(srv.TrustPool, sc.Certificate)))
	srv.Register(g)
	go g.Serve(lis)
	t.Cleanup(func() {
		srv.Close()
		g.Stop()
	})
	return lis.Addr().String()
}

func dialTLS(t *testing.T, addr string, roots func() *x509.CertPool, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	creds := ClientCredentials(testTrustDomain, roots, func() (*tls.Certificate, error) {
		if cert == nil {
			return &tls.Certificate{}, nil // no certificate
		}
		return cert, nil
	})
	return dialCreds(t, addr, creds)
}

func dialCreds(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// adsFails opens an ADS stream as node (id, service) and returns the status it ends with, or
// OK when the first cluster response arrives.
func adsStatus(t *testing.T, cc *grpc.ClientConn, id, service string) *status.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return status.Convert(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode(id, service), TypeUrl: resourcev3.ClusterType}); err != nil {
		_, err = st.Recv()
		return status.Convert(err)
	}
	r, err := st.Recv()
	if err != nil {
		return status.Convert(err)
	}
	if len(r.Resources) == 0 {
		t.Fatalf("%s got an empty response", id)
	}
	return status.New(codes.OK, "")
}

// TestXDSTLS: with ServerCredentials and WithPeerAuthentication, real gRPC ADS clients with
// certificates from the real mesh CA are served only their own service's configuration.
func TestXDSTLS(t *testing.T) {
	c := newMeshCA(t)
	var logs testutil.SyncBuffer
	srv := NewServer(slogTo(&logs), WithPeerAuthentication())
	addr := startTLSXDS(t, srv, c)
	if err := srv.SetSnapshot(seal(t, richMesh())); err != nil {
		t.Fatal(err)
	}
	roots := livePool(t, c)
	web := caLeaf(t, c, "web")

	t.Run("matching identity is served", func(t *testing.T) {
		if st := adsStatus(t, dialTLS(t, addr, roots, web), "web-1", "web"); st.Code() != codes.OK {
			t.Fatalf("web as web: %v", st.Err())
		}
	})
	t.Run("web certificate with node db is refused", func(t *testing.T) {
		st := adsStatus(t, dialTLS(t, addr, roots, web), "db-1", "db")
		if st.Code() != codes.PermissionDenied {
			t.Fatalf("web as db: got %v, want PermissionDenied", st.Err())
		}
		if !strings.Contains(st.Message(), "spiffe://test.mesh/ns/default/dc/dc1/svc/web") {
			t.Errorf("the refusal does not say who asked: %s", st.Message())
		}
		if _, ok := proxyStatus(srv, "db-1"); ok {
			t.Error("the refused node is registered")
		}
		if !strings.Contains(logs.String(), "refusing xDS stream") {
			t.Error("no log line for the refusal")
		}
	})
	t.Run("delta stream with the wrong node is refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dialTLS(t, addr, roots, web)).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoyNode("api-1", "api"), TypeUrl: resourcev3.ClusterType}); err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("delta web as api: got %v, want PermissionDenied", err)
		}
	})
	t.Run("client without certificate fails the handshake", func(t *testing.T) {
		st := adsStatus(t, dialTLS(t, addr, roots, nil), "web-2", "web")
		if st.Code() == codes.OK || st.Code() == codes.PermissionDenied {
			t.Fatalf("no certificate: got %v, want a failed handshake", st.Err())
		}
		t.Logf("no certificate: %v", st.Err())
		if _, ok := proxyStatus(srv, "web-2"); ok {
			t.Error("a client without certificate reached the xDS server")
		}
	})
	t.Run("client with another CA's certificate fails the handshake", func(t *testing.T) {
		other := newMeshCA(t)
		st := adsStatus(t, dialTLS(t, addr, roots, caLeaf(t, other, "web")), "web-3", "web")
		if st.Code() == codes.OK || st.Code() == codes.PermissionDenied {
			t.Fatalf("other CA: got %v, want a failed handshake", st.Err())
		}
		t.Logf("other CA: %v", st.Err())
		if _, ok := proxyStatus(srv, "web-3"); ok {
			t.Error("a client of another CA reached the xDS server")
		}
	})
	t.Run("plaintext client fails", func(t *testing.T) {
		st := adsStatus(t, dialRaw(t, addr), "web-4", "web")
		if st.Code() == codes.OK {
			t.Fatal("a plaintext client was served")
		}
		t.Logf("plaintext: %v", st.Err())
	})
	t.Run("client refuses a server that is not mesh-server", func(t *testing.T) {
		impostor := caLeaf(t, c, "web")
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		isrv := NewServer(nil, WithPeerAuthentication())
		g := grpc.NewServer(grpc.Creds(ServerCredentials(roots, func() (*tls.Certificate, error) { return impostor, nil })))
		isrv.Register(g)
		go g.Serve(lis)
		defer func() { isrv.Close(); g.Stop() }()
		st := adsStatus(t, dialTLS(t, lis.Addr().String(), roots, web), "web-5", "web")
		if st.Code() == codes.OK || !strings.Contains(st.Message(), "server identity") {
			t.Fatalf("the client accepted a server whose identity is web: %v", st.Err())
		}
	})
	t.Run("the server trusts the bundle it is given, at the next handshake", func(t *testing.T) {
		other := newMeshCA(t)
		foreign := caLeaf(t, other, "web")
		both := func() *x509.CertPool {
			p := roots()
			ob, _ := other.Bundle()
			p.AppendCertsFromPEM([]byte(ob.BundlePEM))
			return p
		}
		if st := adsStatus(t, dialTLS(t, addr, both, foreign), "web-8", "web"); st.Code() == codes.OK {
			t.Fatal("a foreign CA's leaf was accepted before its root was in the bundle")
		}
		cb, _ := c.Bundle()
		ob, _ := other.Bundle()
		if err := srv.SetTrustBundle([]byte(cb.BundlePEM + ob.BundlePEM)); err != nil {
			t.Fatal(err)
		}
		if st := adsStatus(t, dialTLS(t, addr, both, foreign), "web-9", "web"); st.Code() != codes.OK {
			t.Fatalf("after adding its root to the bundle: %v", st.Err())
		}
		if err := srv.SetTrustBundle([]byte(cb.BundlePEM)); err != nil {
			t.Fatal(err)
		}
		if st := adsStatus(t, dialTLS(t, addr, both, foreign), "web-10", "web"); st.Code() == codes.OK {
			t.Fatal("a foreign CA's leaf was accepted after its root left the bundle")
		}
	})
	t.Run("the servers' own identity is no proxy's", func(t *testing.T) {
		st := adsStatus(t, dialTLS(t, addr, roots, caLeaf(t, c, ServerIdentity)), "server-1", ServerIdentity)
		if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "servers' own") {
			t.Fatalf("%s as a proxy: got %v, want PermissionDenied", ServerIdentity, st.Err())
		}
	})
	t.Run("an identity of another trust domain is refused", func(t *testing.T) {
		od := ca.New(ca.Config{Store: ca.NewMemStore(nil), Rate: -1})
		if err := od.Init(context.Background(), "other.mesh", nil); err != nil {
			t.Fatal(err)
		}
		cb, _ := c.Bundle()
		ob, _ := od.Bundle()
		if err := srv.SetTrustBundle([]byte(cb.BundlePEM + ob.BundlePEM)); err != nil {
			t.Fatal(err)
		}
		defer srv.SetTrustBundle([]byte(cb.BundlePEM))
		both := func() *x509.CertPool {
			p := roots()
			p.AppendCertsFromPEM([]byte(ob.BundlePEM))
			return p
		}
		st := adsStatus(t, dialTLS(t, addr, both, caLeaf(t, od, "web")), "web-12", "web")
		if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "trust domain") {
			t.Fatalf("other trust domain: got %v, want PermissionDenied", st.Err())
		}
	})
	t.Run("after a CA rotation, leaves of the new authority are accepted", func(t *testing.T) {
		if err := c.Rotate(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		fresh := caLeaf(t, c, "web")
		// Before the server has the new bundle (the cross-signed chain carries the leaf to
		// the old root), and after.
		if st := adsStatus(t, dialTLS(t, addr, roots, fresh), "web-11", "web"); st.Code() != codes.OK {
			t.Fatalf("new-authority leaf, old bundle: %v", st.Err())
		}
		b, _ := c.Bundle()
		if err := srv.SetTrustBundle([]byte(b.BundlePEM)); err != nil {
			t.Fatal(err)
		}
		if st := adsStatus(t, dialTLS(t, addr, roots, fresh), "web-6", "web"); st.Code() != codes.OK {
			t.Fatalf("new-authority leaf: %v", st.Err())
		}
		if st := adsStatus(t, dialTLS(t, addr, roots, web), "web-7", "web"); st.Code() != codes.OK {
			t.Fatalf("old-authority leaf during the rotation: %v", st.Err())
		}
	})
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("a private key is in the log")
	}
}

// TestAuthorizePeerOff: without WithPeerAuthentication, xDS stays unauthenticated.
func TestAuthorizePeerOff(t *testing.T) {
	srv, addr := servingServer(t)
	_ = srv
	if st := adsStatus(t, dialRaw(t, addr), "web-1", "web"); st.Code() != codes.OK {
		t.Fatalf("plaintext without authentication: %v", st.Err())
	}
}

func TestParseSPIFFEID(t *testing.T) {
	for _, c := range []struct {
		uri string
		ok  bool
	}{
		{"spiffe://shop.mesh/ns/default/dc/dc1/svc/web", true},
		{"spiffe://shop.mesh/ns/default/dc/dc1/svc/web/x", false},
		{"spiffe://shop.mesh/ns/other/dc/dc1/svc/web", false},
		{"spiffe://shop.mesh/ns/default/dc//svc/web", false},
		{"spiffe://shop.mesh/ns/default/dc/dc1/svc/", false},
		{"https://shop.mesh/ns/default/dc/dc1/svc/web", false},
		{"spiffe://shop.mesh:1/ns/default/dc/dc1/svc/web", false},
		{"spiffe://shop.mesh/ns/default/dc/dc1/svc/web?x=1", false},
	} {
		u, err := url.Parse(c.uri)
		if err != nil {
			t.Fatal(err)
		}
		id, err := ParseSPIFFEID(&x509.Certificate{URIs: []*url.URL{u}})
		if (err == nil) != c.ok {
			t.Errorf("%s: %v, %v", c.uri, id, err)
		}
		if c.ok && id.String() != c.uri {
			t.Errorf("%s round-trips to %s", c.uri, id)
		}
	}
	if _, err := ParseSPIFFEID(&x509.Certificate{}); err == nil {
		t.Error("no URI SAN accepted")
	}
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestServingCertificate(t *testing.T) {
	c := newMeshCA(t)
	now := time.Now()
	sc := &ServingCertificate{Sign: caSigner(c), Now: func() time.Time { return now }}
	c1, err := sc.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	id, err := ParseSPIFFEID(c1.Leaf)
	if err != nil || id.Service != ServerIdentity || id.TrustDomain != testTrustDomain {
		t.Fatalf("serving identity %v, %v", id, err)
	}
	if c2, _ := sc.Certificate(); c2 != c1 {
		t.Fatal("not cached")
	}
	now = c1.Leaf.NotBefore.Add(c1.Leaf.NotAfter.Sub(c1.Leaf.NotBefore) * 4 / 5)
	c3, err := sc.Certificate()
	if err != nil || c3 == c1 || c3.Leaf.SerialNumber.Cmp(c1.Leaf.SerialNumber) == 0 {
		t.Fatalf("not renewed at 80%% of its life: %v", err)
	}
	// A failing signer keeps the valid certificate, and only that.
	sc.Sign = func([]byte) ([]byte, error) { return nil, errors.New("ca down") }
	now = c3.Leaf.NotBefore.Add(c3.Leaf.NotAfter.Sub(c3.Leaf.NotBefore) * 4 / 5)
	if c4, err := sc.Certificate(); err != nil || c4 != c3 {
		t.Fatalf("failing signer: %v", err)
	}
	now = c3.Leaf.NotAfter.Add(time.Second)
	if _, err := sc.Certificate(); err == nil {
		t.Fatal("an expired certificate was served")
	}
	// A signer that returns another identity is refused.
	sc.Sign = func(csr []byte) ([]byte, error) {
		l, err := c.Sign("web", csr)
		if err != nil {
			return nil, err
		}
		return []byte(l.CertPEM), nil
	}
	if _, err := sc.Certificate(); err == nil || !strings.Contains(err.Error(), "identity") {
		t.Fatalf("a web leaf as serving certificate: %v", err)
	}
}
