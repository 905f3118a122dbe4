package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/cmd/mesh/cli"
)

// TestCACommands runs mesh token create, agent --once, ca roots and ca rotate against the CA's
// HTTP handler on loopback.
func TestCACommands(t *testing.T) {
	c := ca.New(ca.Config{OperatorToken: "admin-token"})
	if err := c.Init(context.Background(), "shop.mesh", nil); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	dir := t.TempDir()
	admin := filepath.Join(dir, "admin")
	os.WriteFile(admin, []byte("admin-token\n"), 0o600)
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("nope\n"), 0o600)
	var all bytes.Buffer
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := cli.Run(args, &out, &errb)
		all.Write(out.Bytes())
		all.Write(errb.Bytes())
		return code, out.String(), errb.String()
	}

	code, out, errs := run("token", "create", "--service", "api", "--http", srv.URL, "--token-file", admin)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, errs)
	}
	// stdout is the token alone (so "> file" makes a token file); the prose is on stderr.
	tok, ok := strings.CutSuffix(out, "\n")
	if !ok || strings.ContainsAny(tok, " \n") {
		t.Fatalf("token create printed more than the token on stdout: %q", out)
	}
	if _, err := c.Authorize(tok, "api"); err != nil {
		t.Fatalf("stdout %q is not api's token: %v", tok, err)
	}
	if !strings.Contains(errs, "created token ") || !strings.Contains(errs, " for service api") || strings.Contains(errs, tok) {
		t.Fatalf("token create's stderr: %q", errs)
	}
	if code, _, errs := run("token", "create", "--service", "api", "--http", srv.URL, "--token-file", wrong); code != 2 || !strings.Contains(errs, "401") {
		t.Fatalf("wrong admin token: %d %s", code, errs)
	}
	if code, _, _ := run("token", "create", "--http", srv.URL, "--token-file", admin); code != 2 {
		t.Fatalf("token create without --service: %d", code)
	}

	tokFile := filepath.Join(dir, "api-token")
	os.WriteFile(tokFile, []byte(tok+"\n"), 0o600)

	// token list: ID, kind, service, created; never the token nor its hash.
	code, out, errs = run("token", "list", "--http", srv.URL, "--token-file", admin)
	id := c.State().Tokens[0].ID
	if code != 0 || !strings.Contains(out, "ID") || !strings.Contains(out, id+"  service  api  ") || strings.Contains(out, tok) ||
		strings.Contains(out, c.State().Tokens[0].Hash) {
		t.Fatalf("token list: %d %q %s", code, out, errs)
	}
	code, out, _ = run("token", "list", "--http", srv.URL, "--token-file", admin, "--format", "json")
	var listed []ca.TokenInfo
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 1 || listed[0].ID != id || listed[0].Service != "api" ||
		listed[0].Scope != ca.ScopeService || listed[0].Created.IsZero() || strings.Contains(out, "hash") {
		t.Fatalf("token list --format json: %d %s", code, out)
	}
	if code, _, errs := run("token", "list", "--http", srv.URL, "--token-file", tokFile); code != 2 || !strings.Contains(errs, "403") {
		t.Fatalf("token list with a service token: %d %s", code, errs)
	}
	certs := filepath.Join(dir, "certs")
	if code, out, errs := run("agent", "--service", "api", "--dir", certs, "--http", srv.URL, "--token-file", tokFile, "--once"); code != 0 ||
		!strings.Contains(out, "spiffe://shop.mesh/ns/default/dc/dc1/svc/api") {
		t.Fatalf("agent --once: %d %s %s", code, out, errs)
	}
	for _, f := range []string{ca.CertFile, ca.KeyFile, ca.CAFile} {
		if _, err := os.Stat(filepath.Join(certs, f)); err != nil {
			t.Fatal(err)
		}
	}
	if code, _, errs := run("agent", "--service", "db", "--dir", filepath.Join(dir, "db"), "--http", srv.URL, "--token-file", tokFile, "--once"); code != 2 ||
		!strings.Contains(errs, "403") {
		t.Fatalf("agent with another service's token: %d %s", code, errs)
	}

	if code, out, _ := run("ca", "roots", "--http", srv.URL); code != 0 || strings.Count(out, "BEGIN CERTIFICATE") != 1 {
		t.Fatalf("ca roots: %d %s", code, out)
	}
	if code, out, errs := run("ca", "rotate", "--http", srv.URL, "--token-file", admin); code != 0 || !strings.Contains(out, "retiring root") {
		t.Fatalf("ca rotate: %d %s %s", code, out, errs)
	}
	if code, _, _ := run("ca", "rotate", "--http", srv.URL, "--token-file", tokFile); code != 2 {
		t.Fatal("ca rotate with a service token succeeded")
	}
	code, out, _ = run("ca", "roots", "--http", srv.URL, "--format", "json")
	var b ca.Bundle
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil || len(b.Roots) != 2 {
		t.Fatalf("ca roots --format json: %d %s", code, out)
	}
	for _, args := range [][]string{
		{"agent", "--dir", certs, "--http", srv.URL, "--token-file", tokFile},
		{"agent", "--service", "api", "--http", srv.URL, "--token-file", tokFile},
		{"agent", "--service", "Bad_Name", "--dir", certs, "--http", srv.URL, "--token-file", tokFile},
		{"agent", "--service", "api", "--dir", certs, "--http", srv.URL, "--token-file", filepath.Join(dir, "missing")},
	} {
		if code, _, _ := run(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if strings.Contains(all.String(), "PRIVATE KEY") {
		t.Fatal("a command printed a private key")
	}
}
