package ca

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/testutil"
)

// recorder keeps every response body a server sends, to search them for key material.
type recorder struct {
	h      http.Handler
	bodies testutil.SyncBuffer
}

type teeWriter struct {
	http.ResponseWriter
	out io.Writer
}

func (w teeWriter) Write(p []byte) (int, error) { w.out.Write(p); return w.ResponseWriter.Write(p) }

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.h.ServeHTTP(teeWriter{w, &r.bodies}, req)
}

func call(t *testing.T, srv *httptest.Server, method, path, tok, body string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestHandlerAuth(t *testing.T) {
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newTestCA(t, Config{OperatorToken: "op-secret", Log: log})
	rec := &recorder{h: c.Handler()}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	ctx := context.Background()
	apiTok, _, _ := c.CreateToken(ctx, ScopeService, "api")
	dbTok, _, _ := c.CreateToken(ctx, ScopeService, "db")
	csr := string(csrFor(t, p256(t), nil))
	signBody := func(svc, csr string) string {
		return `{"service":"` + svc + `","csr":` + jsonString(csr) + `}`
	}

	for _, tc := range []struct {
		name, method, path, tok, body string
		want                          int
	}{
		{"sign without token", "POST", "/v1/ca/sign", "", signBody("api", csr), 401},
		{"sign with a wrong token", "POST", "/v1/ca/sign", "mesh_wrong", signBody("api", csr), 401},
		{"sign with another service's token", "POST", "/v1/ca/sign", dbTok, signBody("api", csr), 403},
		{"sign for another service with my token", "POST", "/v1/ca/sign", apiTok, signBody("db", csr), 403},
		{"sign for own service", "POST", "/v1/ca/sign", apiTok, signBody("api", csr), 200},
		{"operator signs any service", "POST", "/v1/ca/sign", "op-secret", signBody("db", csr), 200},
		{"bad CSR", "POST", "/v1/ca/sign", apiTok, signBody("api", "junk"), 400},
		{"CSR asking for db with api's token", "POST", "/v1/ca/sign", apiTok,
			signBody("api", string(csrFor(t, p256(t), &x509CR{URIs: urls("spiffe://shop.mesh/ns/default/dc/dc1/svc/db")}))), 400},
		{"malformed body", "POST", "/v1/ca/sign", apiTok, `{"service":`, 400},
		{"unknown field", "POST", "/v1/ca/sign", apiTok, `{"service":"api","csr":"x","dns":"evil"}`, 400},
		{"malformed body without token", "POST", "/v1/ca/sign", "", `{"service":`, 401},
		{"malformed body with a wrong token", "POST", "/v1/ca/sign", "mesh_x", `{"service":`, 401},
		{"roots need no token", "GET", "/v1/ca/roots", "", "", 200},
		{"tokens without token", "POST", "/v1/tokens", "", `{"service":"web"}`, 401},
		{"tokens with a service token", "POST", "/v1/tokens", apiTok, `{"service":"web"}`, 403},
		{"tokens with operator", "POST", "/v1/tokens", "op-secret", `{"service":"web"}`, 201},
		{"token with bad service", "POST", "/v1/tokens", "op-secret", `{"service":"Web!"}`, 400},
		{"rotate with a service token", "POST", "/v1/ca/rotate", apiTok, `{}`, 403},
		{"rotate with a wrong token", "POST", "/v1/ca/rotate", "nope", `{}`, 401},
		{"rotate with operator", "POST", "/v1/ca/rotate", "op-secret", `{}`, 200},
		{"revoke unknown", "DELETE", "/v1/tokens/0123456789abcdef", "op-secret", "", 404},
		{"revoke with a service token", "DELETE", "/v1/tokens/0123456789abcdef", apiTok, "", 403},
	} {
		code, h, body := call(t, srv, tc.method, tc.path, tc.tok, tc.body)
		if code != tc.want {
			t.Errorf("%s: HTTP %d, want %d: %s", tc.name, code, tc.want, body)
		}
		if code == 401 && h.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
	}

	// Through the client: errors map to the sentinels.
	cl := &Client{Addr: srv.URL, Token: dbTok}
	if _, err := cl.Sign(ctx, "api", []byte(csr)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("client, other service: %v", err)
	}
	cl.Token = "mesh_nope"
	if _, err := cl.Sign(ctx, "api", []byte(csr)); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("client, wrong token: %v", err)
	}
	cl.Token = "op-secret"
	tr, err := cl.CreateToken(ctx, TokenRequest{Service: "web"})
	if err != nil || tr.Token == "" || tr.Service != "web" {
		t.Fatalf("create token: %+v %v", tr, err)
	}
	if err := cl.RevokeToken(ctx, tr.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Client{Addr: srv.URL, Token: tr.Token}).Sign(ctx, "web", []byte(csr)); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("revoked token: %v", err)
	}
	noKeyMaterial(t, "responses", rec.bodies.String(), c)
	noKeyMaterial(t, "logs", logs.String(), c)
}

func TestHandlerNotInitialized(t *testing.T) {
	c := New(Config{OperatorToken: "op"})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	if code, _, _ := call(t, srv, "GET", "/v1/ca/roots", "", ""); code != 503 {
		t.Fatalf("roots before init: %d", code)
	}
	if code, _, _ := call(t, srv, "POST", "/v1/ca/sign", "op", `{"service":"api","csr":"x"}`); code != 503 {
		t.Fatalf("sign before init: %d", code)
	}
}

func TestHandlerRateLimit(t *testing.T) {
	c := newTestCA(t, Config{Rate: 1, Burst: 2})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	tok, _, _ := c.CreateToken(context.Background(), ScopeService, "api")
	cl := &Client{Addr: srv.URL, Token: tok}
	csr := csrFor(t, p256(t), nil)
	for i := range 2 {
		if _, err := cl.Sign(context.Background(), "api", csr); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_, err := cl.Sign(context.Background(), "api", csr)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 429 || ae.RetryAfter != time.Second || !ae.Temporary() || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("third request: %v (%+v)", err, ae)
	}
	// A refused token does not take from the bucket: unauthenticated floods cannot starve others.
	bad := &Client{Addr: srv.URL, Token: "mesh_bad"}
	if _, err := bad.Sign(context.Background(), "api", csr); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("bad token under limit: %v", err)
	}
}

func TestAgentFiles(t *testing.T) {
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newTestCA(t, Config{Log: log})
	rec := &recorder{h: c.Handler()}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	tok, _, _ := c.CreateToken(context.Background(), ScopeService, "api")
	dir := filepath.Join(t.TempDir(), "certs")
	a := &Agent{Client: &Client{Addr: srv.URL, Token: tok}, Service: "api", Dir: dir, Log: log}
	l1, err := a.Issue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	key1, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)); err != nil {
		t.Fatal(err)
	}
	// A new agent (a restart) keeps the key; the certificate changes.
	a2 := &Agent{Client: a.Client, Service: "api", Dir: dir, Log: log}
	l2, err := a2.Issue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	key2, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	if !bytes.Equal(key1, key2) || l1.Serial == l2.Serial {
		t.Fatal("restart: key changed or certificate did not")
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Fatalf("directory holds %d entries, want cert.pem, key.pem, ca.pem", len(ents))
	}
	noKeyMaterial(t, "responses", rec.bodies.String(), c)
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Fatal("logs hold a private key")
	}
}

func TestAgentRetriesAndGivesUp(t *testing.T) {
	c := newTestCA(t, Config{})
	tok, _, _ := c.CreateToken(context.Background(), ScopeService, "api")
	var calls, badCalls atomic.Int32
	h := c.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Requests with the bad token are counted apart: the first agent's last request
		// (its trust-bundle query, canceled) may reach this handler after it has returned.
		if strings.Contains(r.Header.Get("Authorization"), "mesh_bad") {
			badCalls.Add(1)
		}
		if calls.Add(1) <= 3 {
			http.Error(w, `{"error":"not yet"}`, 503)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	issued := make(chan *Leaf, 1)
	a := &Agent{Client: &Client{Addr: srv.URL, Token: tok}, Service: "api", Dir: t.TempDir(), MinBackoff: 10 * time.Millisecond,
		OnIssue: func(l *Leaf) {
			select {
			case issued <- l:
			default:
			}
		}}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-issued:
	case err := <-done:
		t.Fatalf("agent stopped: %v", err)
	case <-ctx.Done():
		t.Fatal("no certificate after transient errors")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}

	// A refused token ends Run with the error.
	b := &Agent{Client: &Client{Addr: srv.URL, Token: "mesh_bad"}, Service: "api", Dir: t.TempDir(), MinBackoff: time.Millisecond}
	if err := b.Run(context.Background()); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}
	if n := badCalls.Load(); n != maxRefusals {
		t.Fatalf("%d requests before giving up, want %d", n, maxRefusals)
	}
}

// noKeyMaterial fails if text holds a PEM private key or the CA's signing key.
func noKeyMaterial(t *testing.T, what, text string, c *CA) {
	t.Helper()
	if text == "" {
		t.Fatalf("%s: nothing recorded", what)
	}
	if strings.Contains(text, "PRIVATE KEY") {
		t.Fatalf("%s hold a private key", what)
	}
	for _, a := range c.State().Authorities {
		if a.KeyPEM == "" {
			continue
		}
		lines := strings.Split(a.KeyPEM, "\n")
		if strings.Contains(text, lines[1]) {
			t.Fatalf("%s hold the CA key", what)
		}
	}
}

// A follower redirects writes to the leader with 307; the client follows with the token.
func TestClientFollowsLeaderRedirect(t *testing.T) {
	c := newTestCA(t, Config{OperatorToken: "op"})
	leader := httptest.NewServer(c.Handler())
	defer leader.Close()
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", leader.URL+r.URL.RequestURI())
		w.WriteHeader(http.StatusTemporaryRedirect)
	}))
	defer follower.Close()
	tr, err := (&Client{Addr: follower.URL, Token: "op"}).CreateToken(context.Background(), TokenRequest{Service: "api"})
	if err != nil || tr.Service != "api" {
		t.Fatalf("through a redirect: %+v %v", tr, err)
	}
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", leader.URL+"/elsewhere")
		w.WriteHeader(http.StatusTemporaryRedirect)
	}))
	defer evil.Close()
	if _, err := (&Client{Addr: evil.URL, Token: "op"}).CreateToken(context.Background(), TokenRequest{Service: "api"}); err == nil || !strings.Contains(err.Error(), "bad redirect") {
		t.Fatalf("redirect to another path: %v", err)
	}
}

// The servers' own identity (mesh.ServerService) is signed for no token, over the API: a
// service token for it cannot be made, one stored by an older release signs nothing, and an
// operator token, which may sign any service, is refused it too. The servers' in-process Sign
// still issues it (their xDS serving certificate).
func TestServerIdentityNeverSignedForTokens(t *testing.T) {
	c := newTestCA(t, Config{OperatorToken: "op-secret"})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	ctx := context.Background()
	if _, _, err := c.CreateToken(ctx, ScopeService, mesh.ServerService); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("CreateToken(service %s): %v, want ErrBadRequest", mesh.ServerService, err)
	}
	if code, _, body := call(t, srv, "POST", "/v1/tokens", "op-secret", `{"service":"`+mesh.ServerService+`"}`); code != 400 {
		t.Errorf("POST /v1/tokens for %s: HTTP %d (%s), want 400", mesh.ServerService, code, body)
	}
	// A token record for the name, as an older release could have replicated.
	old, rec := NewToken(ScopeService, mesh.ServerService, time.Now())
	if err := c.cfg.Store.Commit(ctx, Command{Op: OpAddToken, Time: rec.Created, Token: &rec}); err != nil {
		t.Fatal(err)
	}
	csr := string(csrFor(t, p256(t), nil))
	body := `{"service":"` + mesh.ServerService + `","csr":` + jsonString(csr) + `}`
	for name, tok := range map[string]string{"its own service token": old, "the operator token": "op-secret"} {
		if code, _, msg := call(t, srv, "POST", "/v1/ca/sign", tok, body); code != 403 || !strings.Contains(msg, "servers' own identity") {
			t.Errorf("sign %s with %s: HTTP %d (%s), want 403", mesh.ServerService, name, code, msg)
		}
	}
	if code, _, msg := call(t, srv, "POST", "/v1/ca/sign", "op-secret", `{"service":"api","csr":`+jsonString(csr)+`}`); code != 200 {
		t.Errorf("operator signing api: HTTP %d (%s), want 200", code, msg)
	}
	leaf, err := c.Sign(mesh.ServerService, []byte(csr))
	if err != nil || !strings.HasSuffix(leaf.SPIFFEID, "/svc/"+mesh.ServerService) {
		t.Fatalf("in-process Sign for the servers: %+v, %v", leaf, err)
	}
}
