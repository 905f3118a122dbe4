package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/testutil"
	"github.com/meshgit/mesh/xds"
)

// testTiming keeps elections short on loopback without flapping on a busy 2-core machine.
var testTiming = RaftTiming{
	HeartbeatTimeout:   400 * time.Millisecond,
	ElectionTimeout:    400 * time.Millisecond,
	LeaderLeaseTimeout: 200 * time.Millisecond,
	CommitTimeout:      5 * time.Millisecond,
}

const testToken = "test-token"

func testLogger(name string) *slog.Logger {
	if os.Getenv("MESH_TEST_LOG") == "" {
		return discardLogger()
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", name)
}

// testRepo is a bare repository ("origin") and a work tree that pushes to it with the git CLI.
type testRepo struct {
	t      testing.TB
	bare   string
	work   string
	pushed time.Time // when the last `git push` returned
}

func newTestRepo(t testing.TB) *testRepo {
	t.Helper()
	dir := t.TempDir()
	r := &testRepo{t: t, bare: filepath.Join(dir, "origin.git"), work: filepath.Join(dir, "work")}
	r.git("", "init", "-q", "--bare", "-b", "main", r.bare)
	r.git("", "init", "-q", "-b", "main", r.work)
	r.git(r.work, "remote", "add", "origin", r.bare)
	return r
}

func (r *testRepo) git(dir string, args ...string) string {
	r.t.Helper()
	return testutil.Git(r.t, dir, args...)
}

// stage writes files into the work tree (an empty content deletes the file) and stages all.
func (r *testRepo) stage(files map[string]string) {
	r.t.Helper()
	for name, data := range files {
		p := filepath.Join(r.work, filepath.FromSlash(name))
		if data == "" {
			os.Remove(p)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	r.git(r.work, "add", "-A")
}

// commit writes files (an empty content deletes the file), commits, pushes to origin's main and
// returns the commit SHA. It returns when `git push` has returned.
func (r *testRepo) commit(files map[string]string, msg string, force bool) string {
	r.t.Helper()
	r.stage(files)
	r.git(r.work, "commit", "-q", "--allow-empty", "-m", msg)
	sha := r.git(r.work, "rev-parse", "HEAD")
	args := []string{"push", "-q", "origin", "HEAD:main"}
	if force {
		args = append(args, "--force")
	}
	r.git(r.work, args...)
	r.pushed = time.Now()
	return sha
}

// meshFiles returns a valid mesh whose version depends on n.
func meshFiles(n int) map[string]string {
	return map[string]string{
		"mesh/mesh.cue": `package mesh

mesh: {
	name:             "test"
	trustDomain:      "test.mesh"
	datacenter:       "dc1"
	datacenters:      ["dc1"]
	defaultIntention: "deny"
}
`,
		"mesh/services.cue": fmt.Sprintf(`package mesh

services: web: {protocol: "grpc", port: %d, upstreams: api: localPort: 9191, endpoints: [{address: "127.0.0.1", port: %d}]}
services: api: {protocol: "grpc", port: 9090, endpoints: [{address: "127.0.0.1", port: %d}]}
intentions: api: web: action: "allow"
`, 8000+n, 8000+n, 9000+n),
		"mesh/bad.cue": "",
	}
}

// brokenFile is a configuration error at mesh/bad.cue... relative to the mesh directory: bad.cue:3.
var brokenFile = map[string]string{"mesh/bad.cue": `package mesh

services: db: {protocol: "tcp", port: "eighty"}
`}

// versionOf compiles files as the server will and returns the version.
func versionOf(t testing.TB, files map[string]string) string {
	t.Helper()
	var list []compiler.File
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if files[n] != "" && strings.HasPrefix(n, "mesh/") {
			list = append(list, compiler.File{Name: strings.TrimPrefix(n, "mesh/"), Data: []byte(files[n])})
		}
	}
	s, err := compiler.Compile(context.Background(), list)
	if err != nil {
		t.Fatalf("compile fixture: %v", err)
	}
	return s.Version
}

type nodeOpts struct {
	dir, httpAddr, raftAddr, join string
}

func testConfig(t testing.TB, repo string, o nodeOpts) Config {
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.httpAddr == "" {
		o.httpAddr = "127.0.0.1:0"
	}
	if o.raftAddr == "" {
		o.raftAddr = "127.0.0.1:0"
	}
	return Config{
		Repo: repo, Ref: "main", Dir: "mesh", DataDir: o.dir,
		HTTPAddr: o.httpAddr, RaftAddr: o.raftAddr, Join: o.join,
		Token: testToken, Poll: 30 * time.Second, Raft: testTiming,
		Log: testLogger(filepath.Base(o.dir)), CheckAllow: loopbackOnly,
	}
}

// loopbackOnly keeps the servers' health checks of test meshes (whose Git endpoints are often
// 10.x addresses) on loopback: tests send no packet elsewhere.
var loopbackOnly = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// attachXDS gives the server configured by cfg a real xDS server on a loopback port.
func attachXDS(t testing.TB, cfg *Config) (*xds.Server, string) {
	t.Helper()
	x := xds.NewServer(cfg.Log)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	x.Register(g)
	go g.Serve(lis)
	t.Cleanup(func() { x.Close(); g.Stop() })
	cfg.Publisher, cfg.Proxies = x, x.Proxies
	return x, lis.Addr().String()
}

// dialXDS starts a proxyless gRPC client of service web (node nodeID) for xds:///api through
// the xDS server at addr: gRPC's own xDS client fetches and ACKs web's configuration.
func dialXDS(t testing.TB, addr, nodeID string) *grpc.ClientConn {
	t.Helper()
	b, err := xds.GRPCBootstrap(xds.GRPCBootstrapOptions{Service: "web", NodeID: nodeID, XDSAddr: addr, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(b)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///api", grpc.WithResolvers(rb), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	cc.Connect()
	t.Cleanup(func() { cc.Close() })
	return cc
}

// acked reports whether proxy nodeID has ACKed its configuration as of mesh version v.
func acked(x *xds.Server, nodeID, v string) bool {
	for _, p := range x.Proxies() {
		if p.NodeID == nodeID {
			return p.AckedVersion == p.Version && strings.HasPrefix(p.AckedVersion, v+"-")
		}
	}
	return false
}

func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// kill stops a server the way a crash would: no leadership transfer, no graceful HTTP shutdown.
func (s *Server) kill() {
	s.shutdownOnce.Do(func() {
		s.httpSrv.Close()
		s.bgCancel()
	})
	s.Close(context.Background())
}

// waitFor polls cond every 5ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, timeout, 5*time.Millisecond, what, cond)
}

func servedVersion(s *Server) string {
	if snap := s.Served(); snap != nil {
		return snap.Version
	}
	return ""
}

// waitServed waits, without polling, until s serves version; it returns false on timeout.
func waitServed(s *Server, version string, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := s.pub.changed()
		if servedVersion(s) == version {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return servedVersion(s) == version
		}
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// serverWithTwoVersions starts a one-server cluster on a repository with two commits, waits
// until the second (v1) is served and the CA exists, and returns the server and both versions.
func serverWithTwoVersions(t *testing.T) (s *Server, v0, v1 string) {
	t.Helper()
	repo := newTestRepo(t)
	f0, f1 := meshFiles(0), meshFiles(1)
	v0, v1 = versionOf(t, f0), versionOf(t, f1)
	repo.commit(f0, "v0", false)
	s = startServer(t, testConfig(t, repo.bare, nodeOpts{}))
	if !waitServed(s, v0, 10*time.Second) {
		t.Fatal("v0 not served")
	}
	repo.commit(f1, "v1", false)
	if !waitServed(s, v1, 5*time.Second) {
		t.Fatal("v1 not served")
	}
	waitFor(t, 10*time.Second, "the CA to be created", func() bool { return s.CA().State() != nil })
	return s, v0, v1
}
