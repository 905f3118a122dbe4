package reconciler

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func postWebhook(t *testing.T, addr string, body []byte, header map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/webhook/git", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A remote repository (file:// URL, fetched into the mirror) polled once an hour: only a
// correctly signed webhook makes the server fetch.
func TestWebhook(t *testing.T) {
	repo := newTestRepo(t)
	f0, f1, f2 := meshFiles(0), meshFiles(1), meshFiles(2)
	v0, v1, v2 := versionOf(t, f0), versionOf(t, f1), versionOf(t, f2)
	repo.commit(f0, "v0", false)
	secret := []byte("webhook-secret")
	cfg := testConfig(t, "file://"+repo.bare, nodeOpts{})
	cfg.Ref = "" // follow the remote's HEAD
	cfg.Poll = time.Hour
	cfg.WebhookSecret = secret
	cfg.MaxWebhookBody = 64 << 10
	s := startServer(t, cfg)
	if !waitServed(s, v0, 10*time.Second) {
		t.Fatal("v0 not served")
	}
	fetches := func() float64 { return counterValue(s, "mesh_git_fetches_total") }
	waitFor(t, 5*time.Second, "the first fetch to end", func() bool { return fetches() >= 1 })

	sha1 := repo.commit(f1, "v1", false)
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","after":%q}`, sha1))
	other := []byte(`{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}`)
	before := fetches()
	for name, c := range map[string]struct {
		body   []byte
		header map[string]string
		want   int
	}{
		"missing signature":         {body, nil, http.StatusUnauthorized},
		"wrong secret":              {body, map[string]string{"X-Hub-Signature-256": sign([]byte("guess"), body)}, http.StatusUnauthorized},
		"signature of another body": {body, map[string]string{"X-Hub-Signature-256": sign(secret, other)}, http.StatusUnauthorized},
		"sha1 signature":            {body, map[string]string{"X-Hub-Signature": "sha1=00"}, http.StatusUnauthorized},
		"malformed signature":       {body, map[string]string{"X-Hub-Signature-256": "sha256=zz"}, http.StatusUnauthorized},
		"wrong gitlab token":        {body, map[string]string{"X-Gitlab-Token": "webhook-secreT"}, http.StatusUnauthorized},
		"oversized body":            {bytes.Repeat([]byte("x"), 65<<10), map[string]string{"X-Hub-Signature-256": sign(secret, bytes.Repeat([]byte("x"), 65<<10))}, http.StatusRequestEntityTooLarge},
	} {
		if got := postWebhook(t, s.HTTPAddr(), c.body, c.header); got != c.want {
			t.Errorf("%s: HTTP %d, want %d", name, got, c.want)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if got := fetches(); got != before {
		t.Errorf("refused webhooks caused %v fetches", got-before)
	}
	if servedVersion(s) != v0 {
		t.Fatal("a refused webhook changed what is served")
	}

	// A valid GitHub delivery fetches and serves the push.
	if got := postWebhook(t, s.HTTPAddr(), body, map[string]string{"X-Hub-Signature-256": sign(secret, body), "X-GitHub-Event": "push"}); got != http.StatusAccepted {
		t.Fatalf("valid webhook: HTTP %d", got)
	}
	if !waitServed(s, v1, 5*time.Second) {
		t.Fatal("v1 not served after a valid webhook")
	}
	// The very same delivery again is a replay: refused, no fetch.
	time.Sleep(100 * time.Millisecond)
	before = fetches()
	if got := postWebhook(t, s.HTTPAddr(), body, map[string]string{"X-Hub-Signature-256": sign(secret, body)}); got != http.StatusUnauthorized {
		t.Errorf("replayed delivery: HTTP %d, want 401", got)
	}
	time.Sleep(300 * time.Millisecond)
	if got := fetches(); got != before {
		t.Errorf("a replayed webhook caused %v fetches", got-before)
	}

	// GitLab's token header works too.
	sha2 := repo.commit(f2, "v2", false)
	body2 := []byte(fmt.Sprintf(`{"object_kind":"push","after":%q}`, sha2))
	if got := postWebhook(t, s.HTTPAddr(), body2, map[string]string{"X-Gitlab-Token": string(secret)}); got != http.StatusAccepted {
		t.Fatalf("gitlab webhook: HTTP %d", got)
	}
	if !waitServed(s, v2, 5*time.Second) {
		t.Fatal("v2 not served after a GitLab webhook")
	}
	if m := get(t, "http://"+s.HTTPAddr()+"/metrics"); !strings.Contains(m, `mesh_webhooks_total{result="unauthorized"} 6`) {
		t.Errorf("webhook metrics:\n%s", grepLines(m, "mesh_webhooks_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// counterValue reads a counter of s's registry.
func counterValue(s *Server, name string) float64 {
	mfs, _ := s.metrics.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
