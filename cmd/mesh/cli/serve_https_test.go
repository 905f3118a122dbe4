package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/testutil"
	"github.com/meshgit/mesh/reconciler"
)

// Two mesh serve processes' worth of servers with TLS material from mesh tls: the second joins
// the first over HTTPS; the CLI reaches them with --ca-file or $MESH_CACERT, refuses them
// without it, and says where its token came from when the server refuses it.
func TestServeTLSCluster(t *testing.T) {
	repo := t.TempDir()
	testutil.Git(t, repo, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "mesh.cue"), []byte(`package mesh

mesh: {name: "t", trustDomain: "t.mesh"}
services: web: {protocol: "http", port: 8080}
`), 0o644)
	testutil.Git(t, repo, "add", "-A")
	testutil.Git(t, repo, "commit", "-q", "-m", "mesh")

	certs := t.TempDir()
	run := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := Run(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	for _, args := range [][]string{
		{"tls", "ca", "create", "--dir", certs},
		{"tls", "cert", "create", "--server", "--node", "s1", "--dir", certs},
		{"tls", "cert", "create", "--server", "--node", "s2", "--dir", certs},
	} {
		if code, _, errOut := run(args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
	}
	for _, f := range []string{"mesh-ca-key.pem", "server-s1-key.pem"} {
		if fi, err := os.Stat(filepath.Join(certs, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want mode 0600", f, fi.Mode())
		}
	}
	caFile := filepath.Join(certs, "mesh-ca.pem")
	tlsOpts := func(node, data string) serveOptions {
		return serveOptions{repo: repo, data: data, logLevel: "info", nodeID: node,
			tlsCert: filepath.Join(certs, "server-"+node+".pem"), tlsKey: filepath.Join(certs, "server-"+node+"-key.pem"), tlsCA: caFile}
	}
	// The first server's data directory exists already, open to all: it is made owner-only.
	data1 := filepath.Join(t.TempDir(), "data1")
	os.MkdirAll(filepath.Join(data1, "old"), 0o755)
	os.WriteFile(filepath.Join(data1, "notes"), []byte("x"), 0o644)
	for f, mode := range map[string]os.FileMode{data1: 0o755, filepath.Join(data1, "old"): 0o755, filepath.Join(data1, "notes"): 0o644} {
		if err := os.Chmod(f, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	addr1, _, log1 := startServe(t, tlsOpts("s1", data1))
	o2 := tlsOpts("s2", filepath.Join(t.TempDir(), "data2"))
	o2.join, o2.tokenFile = "https://"+addr1, filepath.Join(data1, "token")
	addr2, _, log2 := startServe(t, o2)
	for _, f := range []string{data1, filepath.Join(data1, "old"), filepath.Join(data1, "notes"), filepath.Join(data1, "snapshots"), filepath.Join(data1, "raft.db"), filepath.Join(data1, "token")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v %v, want owner-only", f, fi.Mode(), err)
		}
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, errOut := run("status", "--http", "https://"+addr2, "--ca-file", caFile)
		if code == 0 && strings.Contains(out, "servers:  2") && !strings.Contains(out, "nothing served") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status over https: exit %d\n%s%s\n%s\n%s", code, out, errOut, log1.String(), log2.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The environment works as the flags do; a bare address with a CA means https.
	t.Setenv("MESH_HTTP_ADDR", addr1)
	t.Setenv("MESH_CACERT", caFile)
	if code, out, errOut := run("servers", "list"); code != 0 || !strings.Contains(out, "s2") {
		t.Errorf("servers list from the environment: exit %d %s %s", code, out, errOut)
	}
	// The cluster views reach the peers over HTTPS, verified with the cluster's CA.
	deadline = time.Now().Add(20 * time.Second)
	for {
		code, out, errOut := run("members")
		if code == 0 && strings.Count(out, " alive ") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members over https: exit %d\n%s%s", code, out, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, out, errOut := run("proxies"); code != 0 || errOut != "" || !strings.Contains(out, "no proxies connected to any server") {
		t.Errorf("proxies over https: exit %d %s %s", code, out, errOut)
	}
	// A write through the follower follows the leader's https redirect, with the token from the environment.
	tok, _ := readToken(filepath.Join(data1, "token"))
	t.Setenv("MESH_HTTP_TOKEN", tok)
	for _, addr := range []string{addr1, addr2} {
		if code, out, errOut := run("unpin", "--http", addr); code != 0 {
			t.Errorf("unpin via %s: exit %d %s %s", addr, code, out, errOut)
		}
	}
	t.Setenv("MESH_HTTP_TOKEN", "wrong")
	if code, _, errOut := run("unpin"); code != ExitError || !strings.Contains(errOut, "the token sent came from $MESH_HTTP_TOKEN") {
		t.Errorf("unpin with a wrong token: exit %d %s", code, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad-token")
	os.WriteFile(bad, []byte("nope\n"), 0o600)
	if code, _, errOut := run("agent", "--service", "web", "--dir", t.TempDir(), "--once", "--token-file", bad); code != ExitError ||
		!strings.Contains(errOut, "the token sent came from --token-file "+bad) {
		t.Errorf("agent with a wrong token: exit %d %s", code, errOut)
	}
	t.Setenv("MESH_HTTP_TOKEN", "")
	t.Setenv("MESH_CACERT", "")
	if code, _, errOut := run("status", "--http", "https://"+addr1); code != ExitError || !strings.Contains(errOut, "--ca-file") {
		t.Errorf("status without the CA: exit %d %s", code, errOut)
	}
	if code, _, errOut := run("status", "--http", addr1); code != ExitError || !strings.Contains(errOut, "speaks HTTPS") {
		t.Errorf("status over http to https: exit %d %s", code, errOut)
	}
}

// The write token of ./mesh-data is sent only to a loopback address.
func TestDefaultTokenOnlyToLoopback(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, k := range []string{envToken, envTokenFile, envTokenOld} {
		t.Setenv(k, "")
	}
	os.MkdirAll("mesh-data", 0o700)
	os.WriteFile(filepath.Join("mesh-data", "token"), []byte("local-secret\n"), 0o600)
	for addr, want := range map[string]string{
		"127.0.0.1:8500": "local-secret", "https://localhost:8500": "local-secret", "[::1]:8500": "local-secret",
		"10.0.0.1:8500": "", "https://mesh.example.com": "", "0.0.0.0:8500": "",
	} {
		a := apiFlags{http: addr}
		c, err := a.client(true)
		if err != nil {
			t.Fatal(err)
		}
		if c.Token != want {
			t.Errorf("%s: token %q, want %q", addr, c.Token, want)
		}
	}
	a := apiFlags{http: "10.0.0.1:8500"}
	if _, err := a.client(true); err != nil {
		t.Fatal(err)
	}
	err := a.explain(&reconcilerAPIError401)
	if !strings.Contains(err.Error(), "no token was sent") || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("401 without a token: %v", err)
	}
}

var reconcilerAPIError401 = reconciler.APIError{Status: 401, Msg: "missing or wrong token"}

// mesh status says plainly when the cluster has no leader.
func TestStatusNoLeader(t *testing.T) {
	var out bytes.Buffer
	printStatus(&out, &reconciler.Status{Node: "s1", RaftState: "Candidate", Servers: make([]reconciler.ServerStatus, 3)})
	if !strings.Contains(out.String(), "lost quorum") || !strings.Contains(out.String(), "2 of the 3 servers") {
		t.Errorf("status without a leader:\n%s", out.String())
	}
}
