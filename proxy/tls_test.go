package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/cpu"

	"github.com/meshgit/mesh/ca"
)

// countingCache is a client session cache that counts the sessions it hands out.
type countingCache struct {
	tls.ClientSessionCache
	hits atomic.Int64
}

func (c *countingCache) Get(key string) (*tls.ClientSessionState, bool) {
	s, ok := c.ClientSessionCache.Get(key)
	if ok {
		c.hits.Add(1)
	}
	return s, ok
}

// dialResuming dials addr over mTLS with the certificate of cf, accepting the SPIFFE ID of
// service and offering the sessions of cache; it returns whether the session was resumed and
// the echo of "hi" (empty when the connection was refused after the handshake).
func dialResuming(addr string, cf *certFiles, service string, cache tls.ClientSessionCache) (bool, string, error) {
	cfg := cf.clientTLS(&upstreamTLS{sans: map[string]bool{"spiffe://shop.mesh/ns/default/dc/dc1/svc/" + service: true}})
	cfg.ClientSessionCache = cache
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return false, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	c.Write([]byte("hi"))
	c.CloseWrite()
	got, _ := io.ReadAll(c) // also reads the session tickets
	return c.ConnectionState().DidResume, string(got), nil
}

// TestResumedSessionsAreVerified: sidecars resume sessions, and a resumed handshake is checked
// as a full one: the SPIFFE ID the caller accepts, the intentions (RBAC on the ID the session
// carries); new certificate files forget every session.
func TestResumedSessionsAreVerified(t *testing.T) {
	s := newSidecars(t, "allow")
	apiPub := fmt.Sprintf("127.0.0.1:%d", s.apiPub)
	eventually(t, 10*time.Second, "api's public listener", func() error { return tlsEcho(apiPub, s.webDir, "api") })

	web := newCertFiles(s.webDir)
	cache := &countingCache{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	for i, wantResumed := range []bool{false, true} {
		resumed, got, err := dialResuming(apiPub, web, "api", cache)
		if err != nil || got != "hi" || resumed != wantResumed {
			t.Fatalf("web's connection %d: resumed %v, echo %q, %v; want resumed %v and an echo", i, resumed, got, err, wantResumed)
		}
	}
	// The same session, offered to a caller that accepts another SPIFFE ID: refused.
	hits := cache.hits.Load()
	if _, _, err := dialResuming(apiPub, web, "batch", cache); err == nil || !strings.Contains(err.Error(), "SPIFFE IDs the cluster accepts") {
		t.Fatalf("a resumed session with the wrong server identity: %v", err)
	}
	if cache.hits.Load() == hits {
		t.Fatal("the session was not offered: the check of the resumed handshake was not exercised")
	}

	// A caller without an intention resumes its session and is still refused.
	batch := newCertFiles(s.batchDir)
	bcache := tls.NewLRUClientSessionCache(4)
	for i := range 2 {
		resumed, got, err := dialResuming(apiPub, batch, "api", bcache)
		if err != nil || got != "" || resumed != (i == 1) {
			t.Fatalf("batch's connection %d: resumed %v, echo %q, %v; want refused after the handshake, resumed the second time", i, resumed, got, err)
		}
	}

	// The sidecars' own hop: web's sidecar resumes with api's, until either's files change.
	through := func() int64 {
		t.Helper()
		before := s.api.resumed.Load()
		if err := echoes(s.upstream(), []byte("ping")); err != nil {
			t.Fatal(err)
		}
		return s.api.resumed.Load() - before
	}
	through()
	if through() != 1 {
		t.Fatal("web's sidecar did not resume its session with api's")
	}
	// web's files change (a renewed leaf): it forgets its sessions.
	renewLeaf(t, s.e.ca, "web", s.webDir)
	recheck(s.web.certs)
	if through() != 0 {
		t.Fatal("web's sidecar resumed a session across new certificate files")
	}
	if through() != 1 {
		t.Fatal("web's sidecar did not resume the session of its new certificate")
	}
	// api's files change: the tickets it issued are no longer accepted.
	renewLeaf(t, s.e.ca, "api", s.apiDir)
	recheck(s.api.certs)
	if through() != 0 {
		t.Fatal("api's sidecar accepted a ticket issued before its new certificate files")
	}
	if resumed, got, err := dialResuming(apiPub, web, "api", cache); err != nil || got != "hi" || resumed {
		t.Fatalf("after api's renewal: resumed %v, echo %q, %v; want a full handshake", resumed, got, err)
	}
}

// recheck makes cf read its files at its next use (it looks at most once a second).
func recheck(cf *certFiles) {
	cf.mu.Lock()
	cf.checked = time.Time{}
	cf.mu.Unlock()
}

// renewLeaf writes a new leaf for service into dir, in place of the old files.
func renewLeaf(t *testing.T, c *ca.CA, service, dir string) {
	t.Helper()
	fresh := writeLeaf(t, c, service)
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	for _, f := range []string{ca.CertFile, ca.KeyFile, ca.CAFile} {
		b, err := os.ReadFile(filepath.Join(fresh, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDataPathCipher: the sidecars' hop is TLS 1.3 with AES-128-GCM where the CPU has AES
// instructions (ChaCha20-Poly1305 elsewhere) and ECDSA P-256 keys.
func TestDataPathCipher(t *testing.T) {
	e := newEnv(t)
	api, web := newCertFiles(e.certDir("api")), newCertFiles(e.certDir("web"))
	a, b := tcpPair(t)
	srv := tls.Server(newRecordConn(b), api.serverTLS())
	go srv.Handshake()
	cl := tls.Client(newRecordConn(a), web.clientTLS(&upstreamTLS{sni: "api.default.dc1.internal.shop.mesh", sans: map[string]bool{"spiffe://shop.mesh/ns/default/dc/dc1/svc/api": true}}))
	cl.SetDeadline(time.Now().Add(5 * time.Second))
	if err := cl.Handshake(); err != nil {
		t.Fatal(err)
	}
	cs := cl.ConnectionState()
	hw := cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ || cpu.ARM64.HasAES && cpu.ARM64.HasPMULL || cpu.S390X.HasAES && cpu.S390X.HasAESGCM
	want := uint16(tls.TLS_CHACHA20_POLY1305_SHA256)
	if hw {
		want = tls.TLS_AES_128_GCM_SHA256
	}
	if cs.Version != tls.VersionTLS13 || cs.CipherSuite != want {
		t.Fatalf("negotiated %s with %s; want TLS 1.3 with %s (hardware AES: %v)", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), tls.CipherSuiteName(want), hw)
	}
	cert, _, err := api.load()
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("the leaf's key is %T, want ECDSA P-256", cert.PrivateKey)
	}
}
