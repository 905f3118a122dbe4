package apiclient

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRedirectToLeader: a write sent to a follower reaches the leader, on another port, with its
// body and token; redirects that change the path, or go from https to http, are refused.
func TestRedirectToLeader(t *testing.T) {
	var got struct {
		auth, body string
	}
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		json.NewDecoder(r.Body).Decode(&in)
		got.auth, got.body = r.Header.Get("Authorization"), in["version"]
		w.Write([]byte(`{"ok": true}`))
	}))
	defer leader.Close()
	redirectTo := func(target string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target, http.StatusTemporaryRedirect)
		}))
	}
	follower := redirectTo(leader.URL + "/v1/pin")
	defer follower.Close()

	c := Client{Addr: strings.TrimPrefix(follower.URL, "http://"), Token: "secret"}
	resp, err := c.Do(context.Background(), http.MethodPost, "/v1/pin", map[string]string{"version": "abc"}, 1<<20)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("%v %+v", err, resp)
	}
	var out struct{ OK bool }
	if err := resp.DecodeInto(http.MethodPost, "/v1/pin", &out); err != nil || !out.OK {
		t.Errorf("decoded %+v, %v", out, err)
	}
	if got.auth != "Bearer secret" || got.body != "abc" {
		t.Errorf("the leader got token %q and body %q", got.auth, got.body)
	}

	otherPath := redirectTo(leader.URL + "/v1/elsewhere")
	defer otherPath.Close()
	if _, err := (&Client{Addr: otherPath.URL}).Do(context.Background(), http.MethodPost, "/v1/pin", struct{}{}, 1<<20); err == nil {
		t.Error("a redirect to another path was followed")
	}

	// https → http: the token must not leave TLS.
	tlsFollower := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, leader.URL+"/v1/pin", http.StatusTemporaryRedirect)
	}))
	defer tlsFollower.Close()
	got.auth = ""
	tc := Client{Addr: tlsFollower.URL, Token: "secret", HTTP: tlsFollower.Client()}
	if _, err := tc.Do(context.Background(), http.MethodPost, "/v1/pin", struct{}{}, 1<<20); err == nil || got.auth != "" {
		t.Errorf("a redirect from https to http was followed (err %v, token %q)", err, got.auth)
	}

	// A loop of redirects ends after a few hops, with the redirect as the answer.
	var loop *httptest.Server
	loop = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, loop.URL+"/v1/pin", http.StatusTemporaryRedirect)
	}))
	defer loop.Close()
	resp, err = (&Client{Addr: loop.URL}).Do(context.Background(), http.MethodPost, "/v1/pin", struct{}{}, 1<<20)
	if err != nil || resp.Status != http.StatusTemporaryRedirect {
		t.Errorf("redirect loop: %v %+v", err, resp)
	}
}

// TestErrorAnswers: the message of an error answer, its JSON error field or its text, and a
// bounded read.
func TestErrorAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/json":
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error": "needs an operator token"}`))
		case "/text":
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("no leader\n"))
		default:
			w.Write([]byte(strings.Repeat("x", 1000)))
		}
	}))
	defer srv.Close()
	c := Client{Addr: srv.URL}
	for path, want := range map[string]string{"/json": "needs an operator token", "/text": "no leader"} {
		resp, err := c.Do(context.Background(), http.MethodGet, path, nil, 1<<20)
		if err != nil || resp.ErrorMessage() != want {
			t.Errorf("%s: %v %q, want %q", path, err, resp.ErrorMessage(), want)
		}
	}
	resp, err := c.Do(context.Background(), http.MethodGet, "/big", nil, 100)
	if err != nil || len(resp.Body) != 100 {
		t.Errorf("bounded read: %v, %d bytes", err, len(resp.Body))
	}
}
