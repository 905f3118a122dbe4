package reconciler

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshgit/mesh/ca"
)

// Every write endpoint of the API against every kind of token, over real HTTP: no token or an
// unknown one is 401; a service token is 403 everywhere but its own service's sign; an operator
// token may do every write but join; the server token may do everything.
func TestWriteAuthorization(t *testing.T) {
	s, v0, v1 := serverWithTwoVersions(t)
	ctx := context.Background()
	admin := &ca.Client{Addr: s.HTTPAddr(), Token: testToken}
	newToken := func(req ca.TokenRequest) *ca.TokenResponse {
		t.Helper()
		r, err := admin.CreateToken(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tokens := []struct{ kind, token string }{
		{"none", ""},
		{"unknown", "mesh_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
		{"service", newToken(ca.TokenRequest{Service: "web"}).Token},
		{"operator", newToken(ca.TokenRequest{Scope: ca.ScopeOperator}).Token},
		{"server", testToken},
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}

	type call struct{ method, path, body string }
	sign := func(service string) call {
		b, _ := json.Marshal(ca.SignRequest{Service: service, CSR: string(csr)})
		return call{"POST", "/v1/ca/sign", string(b)}
	}
	// want is the status for none, unknown, service, operator and server tokens, in that order.
	// Each authorized call succeeds, but for the rotation the operator token made just before
	// (409: one rotation at a time), a join without a body (400) and the removal of a server that
	// is not in the cluster (404).
	endpoints := []struct {
		call func() call
		want [5]int
	}{
		{func() call { return call{"POST", "/v1/pin", `{"version":"` + v0 + `"}`} }, [5]int{401, 401, 403, 200, 200}},
		{func() call { return call{"POST", "/v1/unpin", ``} }, [5]int{401, 401, 403, 200, 200}},
		{func() call { return call{"POST", "/v1/reconcile", ``} }, [5]int{401, 401, 403, 202, 202}},
		{func() call { return call{"POST", "/v1/join", `{}`} }, [5]int{401, 401, 403, 403, 400}},
		// An authorized removal of a server not in the cluster is 404 (issue 12.4).
		{func() call { return call{"DELETE", "/v1/servers/nosuch", ``} }, [5]int{401, 401, 403, 404, 404}},
		{func() call { return call{"GET", "/v1/tokens", ``} }, [5]int{401, 401, 403, 200, 200}},
		{func() call { return call{"POST", "/v1/tokens", `{"service":"api"}`} }, [5]int{401, 401, 403, 201, 201}},
		{func() call {
			return call{"DELETE", "/v1/tokens/" + newToken(ca.TokenRequest{Service: "api"}).ID, ``}
		}, [5]int{401, 401, 403, 200, 200}},
		{func() call { return call{"POST", "/v1/ca/rotate", `{}`} }, [5]int{401, 401, 403, 200, 409}},
		{func() call { return sign("web") }, [5]int{401, 401, 200, 200, 200}},
		{func() call { return sign("api") }, [5]int{401, 401, 403, 200, 200}},
	}
	for i, tok := range tokens {
		for _, e := range endpoints {
			c := e.call()
			code, msg := send(t, s.HTTPAddr(), c.method, c.path, c.body, tok.token)
			if code != e.want[i] {
				t.Errorf("%s %s with %s token: HTTP %d (%s), want %d", c.method, c.path, tok.kind, code, msg, e.want[i])
			}
		}
	}
	if s.Status().Pin != "" || servedVersion(s) != v1 {
		t.Errorf("pin %q, serving %s after the last unpin; want no pin and %s", s.Status().Pin, servedVersion(s), v1)
	}
}

// send makes one request with token (none when "") and returns the status and the answer's text.
func send(t *testing.T, addr, method, path, body, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	cl := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	return resp.StatusCode, strings.TrimSpace(string(b))
}
