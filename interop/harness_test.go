package interop

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/testutil"
)

// TestMain lets the test binary play the roles of roles_test.go.
func TestMain(m *testing.M) {
	// Servers and agents started by these tests (in process or as processes) health-check only
	// loopback addresses: the meshes' Git endpoints are often 10.x, and tests stay on loopback.
	os.Setenv("MESH_CHECK_ALLOW", "127.0.0.0/8,::1/128")
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// impl is one gRPC xDS implementation: how to start its server and its client.
type impl struct {
	name   string // as in README.md's table: grpc-go, c-core, grpc-js
	short  string // in service names: go, py, node
	server func(listen, name string) []string
	client []string
	env    []string
}

const installHint = "the interop tests need gRPC C-core for Python and grpc-js-xds: run .ci/run's install step " +
	"(apt-get install -y python3-grpcio python3-protobuf nodejs npm; npm ci in interop/node)"

// impls returns the three implementations, failing the test with installHint when one cannot run.
func impls(t *testing.T) []impl {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/usr/bin/python3", "-c", "import grpc; print(grpc.__version__)").CombinedOutput(); err != nil {
		t.Fatalf("/usr/bin/python3 cannot import grpc (%v: %s): %s", err, bytes.TrimSpace(out), installHint)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("no node: %s", installHint)
	}
	if _, err := os.Stat(filepath.Join("node", "node_modules", "@grpc", "grpc-js-xds")); err != nil {
		t.Fatalf("no interop/node/node_modules: %s", installHint)
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	return []impl{
		{name: "grpc-go", short: "go",
			server: func(l, n string) []string { return []string{self, "--listen", l, "--name", n} },
			client: []string{self}, env: []string{}},
		{name: "c-core", short: "py",
			server: func(l, n string) []string {
				return []string{"/usr/bin/python3", abs("python/server.py"), "--listen", l, "--name", n}
			},
			client: []string{"/usr/bin/python3", abs("python/client.py")}},
		{name: "grpc-js", short: "node",
			server: func(l, n string) []string { return []string{"node", abs("node/server.js"), "--listen", l, "--name", n} },
			client: []string{"node", abs("node/client.js")},
			// grpc-js-xds enforces RBAC only behind this flag (its RBAC filter is experimental).
			env: []string{"GRPC_XDS_EXPERIMENTAL_RBAC=true"}},
	}
}

// env is one mesh: a Git repository, a `mesh serve` following it, and the processes started.
type env struct {
	t     *testing.T
	dir   string
	repo  string
	self  string
	http  string
	xds   string
	token string // the admin token file mesh serve wrote
	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan struct{}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// lockedWriter appends to a buffer under a mutex.
type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

// newEnv commits meshCUE into a new repository and starts `mesh serve` on it.
func newEnv(t *testing.T, meshCUE string) *env {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: t.TempDir(), self: self}
	e.repo = filepath.Join(e.dir, "repo")
	ports := testutil.FreeAddrs(t, 3)
	e.http, e.xds = ports[0], ports[1]
	if err := os.MkdirAll(e.repo, 0o755); err != nil {
		t.Fatal(err)
	}
	e.git("init", "-q", "-b", "main")
	e.commit(meshCUE, "interop mesh")
	data := filepath.Join(e.dir, "data")
	e.token = filepath.Join(data, "token")
	t.Cleanup(e.stopAll)
	e.start("mesh-serve", nil, nil, []string{roleEnv + "=mesh"}, e.self, "serve", "--repo", e.repo, "--ref", "main",
		"--data", data, "--http", e.http, "--xds", e.xds, "--raft", ports[2])
	e.waitVersion("")
	return e
}

func (e *env) git(args ...string) {
	e.t.Helper()
	testutil.Git(e.t, e.repo, args...)
}

// commit writes mesh.cue and commits it.
func (e *env) commit(meshCUE, msg string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.repo, "mesh.cue"), []byte(meshCUE), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.git("add", "-A")
	e.git("commit", "-q", "-m", msg)
}

// version returns the version the server serves ("" when it does not answer).
func (e *env) version() string {
	resp, err := http.Get("http://" + e.http + "/v1/status")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var st struct {
		Version string `json:"version"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	return st.Version
}

// waitVersion waits (30s at most) until the server serves a version other than old.
func (e *env) waitVersion(old string) string {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if v := e.version(); v != "" && v != old {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("mesh serve served no version after %q in 30s:\n%s", old, e.logs())
	return ""
}

// mesh runs one mesh command and returns its stdout.
func (e *env) mesh(args ...string) string {
	e.t.Helper()
	cmd := exec.Command(e.self, args...)
	cmd.Env = append(os.Environ(), roleEnv+"=mesh")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("mesh %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// identity gives service a token and runs `mesh agent --once` for its certificates; it returns
// the certificate directory.
func (e *env) identity(service string) string {
	e.t.Helper()
	var tok string
	deadline := time.Now().Add(20 * time.Second)
	for {
		// The CA exists once the leader has applied the first snapshot; until then, 503.
		cmd := exec.Command(e.self, "token", "create", "--service", service, "--http", e.http, "--token-file", e.token)
		cmd.Env = append(os.Environ(), roleEnv+"=mesh")
		out, err := cmd.Output()
		if err == nil {
			f := strings.Fields(string(out))
			tok = f[len(f)-1]
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("mesh token create --service %s: %v", service, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	tokFile := filepath.Join(e.dir, service+".token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	certs := filepath.Join(e.dir, "certs", service)
	e.mesh("agent", "--once", "--service", service, "--dir", certs, "--token-file", tokFile, "--http", e.http)
	return certs
}

// bootstrap writes the `mesh grpc bootstrap` of one process of service and returns its path.
func (e *env) bootstrap(service, nodeID, certs string) string {
	e.t.Helper()
	boot := filepath.Join(e.dir, nodeID+"-bootstrap.json")
	b := e.mesh("grpc", "bootstrap", "--service", service, "--node-id", nodeID,
		"--cert-dir", certs, "--xds", e.xds, "--datacenter", "dc1")
	if err := os.WriteFile(boot, []byte(b), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return boot
}

// start starts a long-running process; stdin is a pipe when in is non-nil, stdout goes to
// stdout when non-nil (and to the log otherwise).
func (e *env) start(name string, in *io.WriteCloser, stdout io.Writer, env []string, argv ...string) *proc {
	e.t.Helper()
	p := &proc{name: name, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = e.dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = childAttr()
	w := lockedWriter{p.mu, p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if stdout != nil {
		p.cmd.Stdout = stdout
	}
	if in != nil {
		pipe, err := p.cmd.StdinPipe()
		if err != nil {
			e.t.Fatal(err)
		}
		*in = pipe
	}
	if err := p.cmd.Start(); err != nil {
		e.t.Fatalf("start %s: %v", name, err)
	}
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	go func() { p.cmd.Wait(); close(p.done) }()
	return p
}

// stopAll stops every process, newest first: SIGTERM, then SIGKILL after 3s.
func (e *env) stopAll() {
	e.mu.Lock()
	procs := e.procs
	e.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	if e.t.Failed() {
		e.t.Log(e.logs())
	}
}

// logs returns the last lines of every process's output.
func (e *env) logs() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, p := range e.procs {
		lines := strings.Split(strings.TrimSpace(p.output()), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		fmt.Fprintf(&b, "--- %s (last lines)\n%s\n", p.name, strings.Join(lines, "\n"))
	}
	return b.String()
}

// client is a running interop client process of one implementation and identity.
type client struct {
	e    *env
	name string
	in   io.WriteCloser
	out  chan result
	seq  int
	proc *proc
}

// startClient starts im's client with the bootstrap of identity; waitReady waits for it.
func (e *env) startClient(im impl, identity, boot string) *client {
	e.t.Helper()
	c := &client{e: e, name: im.name + "/" + identity, out: make(chan result, 4096)}
	env := append([]string{"GRPC_XDS_BOOTSTRAP=" + boot, roleEnv + "=go-client"}, im.env...)
	r, w := io.Pipe()
	p := e.start("client-"+im.short+"-"+identity, &c.in, w, env, im.client...)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var res result
			if json.Unmarshal(sc.Bytes(), &res) != nil {
				lockedWriter{p.mu, p.log}.Write(append(sc.Bytes(), '\n'))
				continue
			}
			c.out <- res
		}
		close(c.out)
	}()
	go func() { <-p.done; w.Close() }()
	c.proc = p
	return c
}

// waitReady waits (30s at most) for the client's first line, which says it is ready.
func (c *client) waitReady() {
	c.e.t.Helper()
	e, p := c.e, c.proc
	select {
	case res, ok := <-c.out:
		if !ok || !res.Ready {
			e.t.Fatalf("client %s did not start: %v\n%s", c.name, res, p.output())
		}
	case <-time.After(30 * time.Second):
		e.t.Fatalf("client %s not ready in 30s:\n%s", c.name, p.output())
	}
}

// calls makes n calls to method of target with metadata md (key, value, ...) and returns
// their results, failing t when the client does not answer. Every call waits for the channel
// to be ready, for 10s at most.
func (c *client) calls(t *testing.T, target, method string, n int, md ...string) []result {
	t.Helper()
	return c.callsWithin(t, 10*time.Second, target, method, n, md...)
}

// callsWithin is calls with a deadline per call.
func (c *client) callsWithin(t *testing.T, timeout time.Duration, target, method string, n int, md ...string) []result {
	t.Helper()
	c.seq++
	req := request{ID: fmt.Sprint(c.seq), Target: target, Method: method, Count: n, TimeoutMS: int(timeout.Milliseconds()), Metadata: map[string]string{}}
	for i := 0; i+1 < len(md); i += 2 {
		req.Metadata[md[i]] = md[i+1]
	}
	b, _ := json.Marshal(req)
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		t.Fatalf("client %s: %v", c.name, err)
	}
	var out []result
	// Calls answer in milliseconds; the bound allows one call to wait its whole deadline.
	deadline := time.After(timeout + time.Duration(n)*100*time.Millisecond + 10*time.Second)
	for {
		select {
		case res, ok := <-c.out:
			if !ok {
				<-c.proc.done
				t.Fatalf("client %s exited (%v):\n%s", c.name, c.proc.cmd.ProcessState, c.e.logs())
			}
			if res.ID != req.ID {
				continue
			}
			if res.Done {
				return out
			}
			out = append(out, res)
		case <-deadline:
			t.Fatalf("client %s: %d of %d results of %s → %s in time", c.name, len(out), n, target, method)
		}
	}
}

// call makes one call.
func (c *client) call(t *testing.T, target, method string, md ...string) result {
	t.Helper()
	return c.calls(t, target, method, 1, md...)[0]
}

// replyOf decodes the server's answer of an OK result.
func replyOf(r result) reply {
	var rep reply
	json.Unmarshal([]byte(r.Reply), &rep)
	return rep
}
