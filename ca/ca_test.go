package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/testutil"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestCA(t testing.TB, cfg Config) *CA {
	t.Helper()
	c := New(cfg)
	if err := c.Init(context.Background(), "shop.mesh", nil); err != nil {
		t.Fatal(err)
	}
	return c
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrFor(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE REQUEST", der)
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

const apiID = "spiffe://shop.mesh/ns/default/dc/dc1/svc/api"

func TestCSRValidation(t *testing.T) {
	c := newTestCA(t, Config{})
	key := p256(t)
	rsaKey := func(bits int) crypto.Signer {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	tampered := func() []byte {
		blk, _ := pem.Decode(csrFor(t, key, nil))
		der := bytes.Clone(blk.Bytes)
		der[len(der)-3] ^= 0xff // inside the signature
		return pemBlock("CERTIFICATE REQUEST", der)
	}
	otherKeySigned := func() []byte {
		// A CSR for one public key signed by another: the self-signature does not verify.
		// ECDSA signatures vary in length: draw until they agree, so the DER stays well-formed.
		for {
			blk, _ := pem.Decode(csrFor(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "aaaa"}}))
			other, _ := pem.Decode(csrFor(t, p256(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "aaaa"}}))
			a, _ := x509.ParseCertificateRequest(blk.Bytes)
			b, _ := x509.ParseCertificateRequest(other.Bytes)
			if len(a.Signature) == len(b.Signature) {
				return pemBlock("CERTIFICATE REQUEST", bytes.Replace(blk.Bytes, a.Signature, b.Signature, 1))
			}
		}
	}
	tests := []struct {
		name string
		csr  []byte
		ok   bool
		msg  string
	}{
		{"no SAN", csrFor(t, key, nil), true, ""},
		{"its own SPIFFE ID", csrFor(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(apiID)}}), true, ""},
		{"subject ignored", csrFor(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "db"}}), true, ""},
		{"RSA 2048", csrFor(t, rsaKey(2048), nil), true, ""},
		{"another service's identity", csrFor(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL("spiffe://shop.mesh/ns/default/dc/dc1/svc/db")}}), false, "URI SAN"},
		{"another trust domain", csrFor(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL("spiffe://evil.mesh/ns/default/dc/dc1/svc/api")}}), false, "URI SAN"},
		{"another datacenter", csrFor(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL("spiffe://shop.mesh/ns/default/dc/dc2/svc/api")}}), false, "URI SAN"},
		{"own identity twice", csrFor(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(apiID), mustURL(apiID)}}), false, "URI SANs"},
		{"own and another", csrFor(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(apiID), mustURL("spiffe://shop.mesh/ns/default/dc/dc1/svc/db")}}), false, "URI SAN"},
		{"https URI", csrFor(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL("https://api.example.com")}}), false, "URI SAN"},
		{"DNS SAN", csrFor(t, key, &x509.CertificateRequest{DNSNames: []string{"api.example.com"}}), false, "only the SPIFFE ID"},
		{"IP SAN", csrFor(t, key, &x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}), false, "only the SPIFFE ID"},
		{"e-mail SAN", csrFor(t, key, &x509.CertificateRequest{EmailAddresses: []string{"a@b.c"}}), false, "only the SPIFFE ID"},
		{"tampered signature", tampered(), false, "signature"},
		{"signed by another key", otherKeySigned(), false, "signature"},
		{"RSA 1024", csrFor(t, rsaKey(1024), nil), false, "RSA key of 1024 bits"},
		{"P-224", csrFor(t, p224, nil), false, "curve P-224"},
		{"Ed25519", csrFor(t, ed, nil), false, "key type"},
		{"not PEM", []byte("hello"), false, "no CERTIFICATE REQUEST"},
		{"a certificate, not a request", []byte(c.State().Active().RootPEM), false, "no CERTIFICATE REQUEST"},
		{"garbage DER", pemBlock("CERTIFICATE REQUEST", []byte{0x30, 0x03, 1, 2, 3}), false, "refused"},
		{"huge", bytes.Repeat([]byte("A"), maxCSR+1), false, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := c.Sign("api", tt.csr)
			if !tt.ok {
				if !errors.Is(err, ErrBadCSR) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("err = %v, want ErrBadCSR mentioning %q", err, tt.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			certs, err := parseCerts([]byte(leaf.CertPEM))
			if err != nil {
				t.Fatal(err)
			}
			l := certs[0]
			if len(l.URIs) != 1 || l.URIs[0].String() != apiID || len(l.DNSNames)+len(l.IPAddresses)+len(l.EmailAddresses) != 0 {
				t.Fatalf("leaf SANs: %v %v %v %v", l.URIs, l.DNSNames, l.IPAddresses, l.EmailAddresses)
			}
			if l.Subject.CommonName != "" || l.IsCA {
				t.Fatalf("leaf subject %q, CA %v", l.Subject, l.IsCA)
			}
		})
	}
	if _, err := c.Sign("Not_A_Label", csrFor(t, key, nil)); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("bad service name: %v", err)
	}
}

func TestLeafVerifiesAndTTL(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	ttl := 10 * time.Second
	c := newTestCA(t, Config{Now: clk.Now, Settings: func() Settings { return Settings{Datacenter: "dc2", LeafTTL: ttl} }})
	key := p256(t)
	leaf, err := c.Sign("web", csrFor(t, key, nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://shop.mesh/ns/default/dc/dc2/svc/web"; leaf.SPIFFEID != want {
		t.Fatalf("id %s, want %s", leaf.SPIFFEID, want)
	}
	if got := leaf.NotAfter.Sub(clk.Now()); got != ttl {
		t.Fatalf("leaf lives %v after now, want %v", got, ttl)
	}
	id, err := verifyLeaf(leaf.CertPEM, leaf.BundlePEM, clk.Now(), x509.ExtKeyUsageClientAuth)
	if err != nil || id != leaf.SPIFFEID {
		t.Fatalf("verify: %v %s", err, id)
	}
	if _, err := verifyLeaf(leaf.CertPEM, leaf.BundlePEM, clk.Now().Add(ttl+time.Second), x509.ExtKeyUsageServerAuth); err == nil {
		t.Fatal("expired leaf verified")
	}
	if c.State().Active().ChainPEM != "" {
		t.Fatal("generated root has a chain")
	}
}

func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(100 * time.Second)
	lo, hi := na, nb
	for range 2000 {
		r := RenewAt(nb, na)
		if r.Before(nb.Add(60*time.Second)) || r.After(nb.Add(90*time.Second)) {
			t.Fatalf("renew at %v, outside 60%%..90%%", r.Sub(nb))
		}
		if r.Before(lo) {
			lo = r
		}
		if r.After(hi) {
			hi = r
		}
	}
	if lo.Sub(nb) > 62*time.Second || hi.Sub(nb) < 88*time.Second {
		t.Fatalf("renewal times %v..%v do not spread over 60%%..90%%", lo.Sub(nb), hi.Sub(nb))
	}
}

// verifyLeaf verifies a cert.pem against a ca.pem as a peer would.
func verifyLeaf(certPEMs, bundle string, now time.Time, usage x509.ExtKeyUsage) (string, error) {
	certs, err := parseCerts([]byte(certPEMs))
	if err != nil {
		return "", err
	}
	raw := make([][]byte, len(certs))
	for i, c := range certs {
		raw[i] = c.Raw
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(bundle)) {
		return "", errors.New("empty bundle")
	}
	return VerifyPeer(raw, roots, usage, now)
}

func TestRotation(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	ttl := time.Hour
	store := NewMemStore(nil)
	c := newTestCA(t, Config{Now: clk.Now, LeafTTL: ttl, RetireGrace: time.Minute, Store: store})
	ctx := context.Background()
	old := c.State().Active().RootPEM
	oldLeaf, err := c.Sign("api", csrFor(t, p256(t), nil))
	if err != nil {
		t.Fatal(err)
	}

	clk.Add(10 * time.Minute)
	if err := c.Rotate(ctx, nil); err != nil {
		t.Fatal(err)
	}
	st := c.State()
	if len(st.Authorities) != 2 {
		t.Fatalf("%d authorities after rotation", len(st.Authorities))
	}
	keys := 0
	for _, a := range st.Authorities {
		if a.KeyPEM != "" {
			keys++
		}
	}
	if keys != 1 || st.Active().KeyPEM == "" {
		t.Fatalf("%d signing keys kept after rotation, want only the active one", keys)
	}
	if want := clk.Now().Add(ttl + time.Minute); !st.Authorities[0].RetireAfter.Equal(want) {
		t.Fatalf("retire after %v, want %v", st.Authorities[0].RetireAfter, want)
	}
	b, _ := c.Bundle()
	if len(b.Roots) != 2 || !b.Roots[1].Active || b.Roots[0].Active {
		t.Fatalf("bundle %+v", b.Roots)
	}
	if err := c.Rotate(ctx, nil); !errors.Is(err, ErrRotating) {
		t.Fatalf("a second rotation before the first retired: %v", err)
	}
	newLeaf, err := c.Sign("web", csrFor(t, p256(t), nil))
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	// Every combination that can meet during a rotation verifies:
	for _, tc := range []struct {
		name, leaf, bundle string
	}{
		{"old leaf, old bundle", oldLeaf.CertPEM, old},
		{"old leaf, new bundle", oldLeaf.CertPEM, newLeaf.BundlePEM},
		{"new leaf, old bundle (through the cross-signature)", newLeaf.CertPEM, old},
		{"new leaf, new bundle", newLeaf.CertPEM, newLeaf.BundlePEM},
		{"new leaf, only the new root", newLeaf.CertPEM, st.Active().RootPEM},
	} {
		if _, err := verifyLeaf(tc.leaf, tc.bundle, now, x509.ExtKeyUsageServerAuth); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if n := strings.Count(newLeaf.CertPEM, "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("new leaf's cert.pem holds %d certificates, want leaf + cross-signed root", n)
	}

	// Too early: the old root may still have live leaves.
	clk.Add(ttl)
	if ids, err := c.Tidy(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("tidy before RetireAfter: %v %v", ids, err)
	}
	if err := store.Commit(ctx, Command{Op: OpRetire, Time: clk.Now(), ID: st.Authorities[0].ID}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("early retire command: %v", err)
	}
	clk.Add(time.Minute)
	if ids, err := c.Tidy(ctx); err != nil || len(ids) != 1 || ids[0] != st.Authorities[0].ID {
		t.Fatalf("tidy: %v %v", ids, err)
	}
	st2 := c.State()
	if len(st2.Authorities) != 1 || st2.Active().CrossSignedPEM != "" {
		t.Fatalf("after retire: %d authorities, cross-signature %q", len(st2.Authorities), st2.Active().CrossSignedPEM)
	}
	last, err := c.Sign("web", csrFor(t, p256(t), nil))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(last.CertPEM, "BEGIN CERTIFICATE"); n != 1 {
		t.Fatalf("cert.pem after retirement holds %d certificates", n)
	}
	if _, err := verifyLeaf(last.CertPEM, old, clk.Now(), x509.ExtKeyUsageServerAuth); err == nil {
		t.Fatal("a leaf issued after retirement verifies against the retired root")
	}
	if _, err := verifyLeaf(newLeaf.CertPEM, last.BundlePEM, now, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("a leaf issued during the rotation no longer verifies: %v", err)
	}
	// The active authority can never be retired.
	if err := store.Commit(ctx, Command{Op: OpRetire, Time: clk.Now(), ID: st2.Active().ID}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("retiring the active authority: %v", err)
	}
}

func TestStateEncodingAndApply(t *testing.T) {
	c := newTestCA(t, Config{})
	ctx := context.Background()
	if _, _, err := c.CreateToken(ctx, ScopeService, "api"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rotate(ctx, nil); err != nil {
		t.Fatal(err)
	}
	b, err := c.State().Encode()
	if err != nil {
		t.Fatal(err)
	}
	st, err := DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := st.Encode()
	if !bytes.Equal(b, b2) {
		t.Fatal("state does not survive encode/decode")
	}
	if s := st.String(); strings.Contains(s, "PRIVATE") || strings.Contains(s, st.Active().KeyPEM) {
		t.Fatal("String shows key material")
	}
	// A command applied to equal states gives equal states (what every Raft server relies on).
	_, rec := NewToken(ScopeOperator, "", time.Unix(1, 0))
	cmd := Command{Op: OpAddToken, Time: time.Unix(1, 0), Token: &rec}
	cb, _ := cmd.Encode()
	dc, err := DecodeCommand(cb)
	if err != nil {
		t.Fatal(err)
	}
	a1, err1 := c.State().Apply(cmd)
	a2, err2 := st.Apply(dc)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	e1, _ := a1.Encode()
	e2, _ := a2.Encode()
	if !bytes.Equal(e1, e2) {
		t.Fatal("Apply is not deterministic")
	}
	for _, bad := range []Command{
		{Op: "bogus"},
		{Op: OpInit, TrustDomain: "x", Authority: st.Active()},
		{Op: OpRotate},
		{Op: OpRotate, Authority: st.Active()}, // exists
		{Op: OpAddToken, Token: &TokenRecord{Hash: "short", Scope: ScopeService, Service: "a"}},
		{Op: OpAddToken, Token: &rec}, // already added? not to st: make it a duplicate below
		{Op: OpRevokeToken, ID: "nope"},
		{Op: OpRetire, ID: "nope"},
	} {
		if bad.Op == OpAddToken && bad.Token == &rec {
			if _, err := a1.Apply(bad); err == nil {
				t.Errorf("duplicate token accepted")
			}
			continue
		}
		if _, err := st.Apply(bad); err == nil {
			t.Errorf("%+v accepted", bad.Op)
		}
	}
	if _, err := (*State)(nil).Apply(Command{Op: OpAddToken, Token: &rec}); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("apply before init: %v", err)
	}
	if err := c.Init(ctx, "shop.mesh", nil); !errors.Is(err, ErrInitialized) {
		t.Fatalf("second init: %v", err)
	}
}

func TestLimiter(t *testing.T) {
	clk := &clock{t: time.Unix(0, 0)}
	l := NewLimiter(10, 3)
	l.now = clk.Now
	for i := range 3 {
		if ok, _ := l.Allow(); !ok {
			t.Fatalf("burst token %d refused", i)
		}
	}
	ok, wait := l.Allow()
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("empty bucket: ok=%v wait=%v", ok, wait)
	}
	clk.Add(50 * time.Millisecond)
	if ok, wait := l.Allow(); ok || wait != 50*time.Millisecond {
		t.Fatalf("half refilled: ok=%v wait=%v", ok, wait)
	}
	clk.Add(50 * time.Millisecond)
	if ok, _ := l.Allow(); !ok {
		t.Fatal("refilled token refused")
	}
	clk.Add(time.Hour) // refills to the burst, not beyond
	n := 0
	for {
		if ok, _ := l.Allow(); !ok {
			break
		}
		n++
	}
	if n != 3 {
		t.Fatalf("after an idle hour %d tokens, want the burst of 3", n)
	}
	// Over one simulated second at 10/s, with requests every millisecond: at most burst+rate pass.
	n = 0
	for range 1000 {
		clk.Add(time.Millisecond)
		if ok, _ := l.Allow(); ok {
			n++
		}
	}
	if n < 9 || n > 11 {
		t.Fatalf("%d allowed in a second at 10/s", n)
	}
	if ok, _ := NewLimiter(-1, 0).Allow(); !ok {
		t.Fatal("disabled limiter refused")
	}
}

func TestTokens(t *testing.T) {
	var logs testutil.SyncBuffer
	c := newTestCA(t, Config{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ctx := context.Background()
	tok, rec, err := c.CreateToken(ctx, ScopeService, "api")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "mesh_") || len(tok) != 5+43 {
		t.Fatalf("token %q", tok)
	}
	b, _ := c.State().Encode()
	if bytes.Contains(b, []byte(tok)) || bytes.Contains(b, []byte(strings.TrimPrefix(tok, "mesh_"))) {
		t.Fatal("the state holds the token itself")
	}
	if strings.Contains(logs.String(), strings.TrimPrefix(tok, "mesh_")) {
		t.Fatal("the token was logged")
	}
	if r, err := c.Authorize(tok, "api"); err != nil || r.ID != rec.ID {
		t.Fatalf("own service: %v", err)
	}
	if _, err := c.Authorize(tok, "db"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("other service: %v", err)
	}
	if _, err := c.Authorize(tok, ""); !errors.Is(err, ErrForbidden) {
		t.Fatalf("operator action with a service token: %v", err)
	}
	if _, err := c.Authorize(tok+"x", "api"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := c.Authorize("", "api"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("no token: %v", err)
	}
	if err := c.RevokeToken(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Authorize(tok, "api"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("revoked token: %v", err)
	}
	if _, _, err := c.CreateToken(ctx, ScopeService, ""); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("token without service: %v", err)
	}
	if _, _, err := c.CreateToken(ctx, ScopeOperator, "api"); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("operator token with a service: %v", err)
	}
	opTok, _, err := c.CreateToken(ctx, ScopeOperator, "")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := c.Authorize(opTok, "anything"); err != nil || r.Scope != ScopeOperator {
		t.Fatalf("operator token: %v", err)
	}
}

func TestFromPEMIntermediate(t *testing.T) {
	now := time.Now()
	rootKey := p256(t)
	rootTmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "corp root"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour * 24 * 365), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	interKey := p256(t)
	interTmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "mesh intermediate"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour * 24 * 30), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ik, _ := keyPEM(interKey)
	if _, err := FromPEM(certPEM(interDER), ik, nil, now); err == nil {
		t.Fatal("an intermediate without its root accepted")
	}
	wrongKey, _ := keyPEM(p256(t))
	if _, err := FromPEM(certPEM(interDER), wrongKey, certPEM(rootDER), now); err == nil {
		t.Fatal("a key that does not match accepted")
	}
	a, err := FromPEM(certPEM(interDER), ik, certPEM(rootDER), now)
	if err != nil {
		t.Fatal(err)
	}
	c := New(Config{})
	if err := c.Init(context.Background(), "corp.mesh", a); err != nil {
		t.Fatal(err)
	}
	leaf, err := c.Sign("api", csrFor(t, p256(t), nil))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(leaf.CertPEM, "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("cert.pem holds %d certificates, want leaf + intermediate", n)
	}
	if _, err := verifyLeaf(leaf.CertPEM, string(certPEM(rootDER)), time.Now(), x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatal(err)
	}
	// Rotation under an operator intermediate: the next generated root is cross-signed by it.
	if err := c.Rotate(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	leaf2, err := c.Sign("api", csrFor(t, p256(t), nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifyLeaf(leaf2.CertPEM, string(certPEM(rootDER)), time.Now(), x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("new leaf against the corporate root: %v", err)
	}
	// A self-signed root given alone is accepted too.
	rk, _ := keyPEM(rootKey)
	if _, err := FromPEM(certPEM(rootDER), rk, nil, now); err != nil {
		t.Fatal(err)
	}
}

func TestBundleJSONHasNoKey(t *testing.T) {
	c := newTestCA(t, Config{})
	c.Rotate(context.Background(), nil)
	b, _ := c.Bundle()
	j, _ := json.Marshal(b)
	if bytes.Contains(j, []byte("PRIVATE KEY")) {
		t.Fatal("bundle JSON holds a private key")
	}
}

type x509CR = x509.CertificateRequest

func urls(s ...string) []*url.URL {
	var out []*url.URL
	for _, x := range s {
		out = append(out, mustURL(x))
	}
	return out
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestSignConcurrencyBound(t *testing.T) {
	c := newTestCA(t, Config{MaxConcurrent: 1, Rate: -1})
	csr := csrFor(t, p256(t), nil)
	c.sem <- struct{}{} // a signature in progress
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := c.SignLimited(ctx, "api", csr); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second signature while the slot is taken: %v", err)
	}
	<-c.sem
	if _, _, err := c.SignLimited(context.Background(), "api", csr); err != nil {
		t.Fatal(err)
	}
	if New(Config{MaxConcurrent: -1}).sem != nil {
		t.Fatal("negative MaxConcurrent still bounds")
	}
}

func TestLeadInitializesAndRetires(t *testing.T) {
	clk := &clock{t: time.Now()}
	c := New(Config{Now: clk.Now, LeafTTL: time.Minute, RetireGrace: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var td atomic.Value
	td.Store("")
	go c.Lead(ctx, func() string { return td.Load().(string) }, 5*time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if c.State() != nil {
		t.Fatal("initialized without a trust domain")
	}
	td.Store("shop.mesh")
	waitFor(t, func() bool { return c.State() != nil })
	if c.State().TrustDomain != "shop.mesh" {
		t.Fatalf("trust domain %q", c.State().TrustDomain)
	}
	if err := c.Rotate(ctx, nil); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute + 2*time.Second)
	waitFor(t, func() bool { return len(c.State().Authorities) == 1 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
