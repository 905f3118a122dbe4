package xds

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	mesh "github.com/meshgit/mesh"
)

// The differential test: for random meshes and random requests, the verdict of mesh.Authorize
// equals what gRPC's own RBAC engine does with the filters we render. gRPC's engine is internal
// to grpc-go (google.golang.org/grpc/internal/xds/rbac), so the comparison runs real RPCs
// through a real xDS gRPC server (mTLS with SPIFFE identities) from real xDS gRPC clients.

// The request paths are canonical gRPC method names, which mesh.NormalizePath leaves unchanged
// (TestDifferentialPathsAreCanonical checks it). That is deliberate: Authorize judges the
// normalized path, as Envoy's HTTP connection managers do (normalize_path, merge_slashes), but
// gRPC's RBAC engine sees the raw :path, so for a path like "/t.Svc/../u.Svc/A" the two may
// disagree. They disagree harmlessly: gRPC dispatches on the exact "/service/method" string and
// answers such a path UNIMPLEMENTED whether RBAC allowed it or not, so no request reaches a
// method that Authorize would deny. The Envoy side of normalization is fixed by the golden
// files and TestEnvoyNormalizesPaths.
var (
	diffPaths   = []string{"/t.Svc/A", "/t.Svc/B", "/t.Svc/AB", "/t.Other/A", "/u.Svc/A"}
	diffHeaders = []string{"x-a", "x-b"}
	diffValues  = []string{"1", "2", "ab", "", "prod"}
	diffSources = []string{"s1", "s2", "s3"}
)

func randomMatch(r *rand.Rand) *mesh.HTTPMatch {
	if r.IntN(6) == 0 {
		return nil
	}
	m := &mesh.HTTPMatch{}
	switch r.IntN(5) {
	case 0:
		m.Path = diffPaths[r.IntN(len(diffPaths))]
	case 1:
		m.PathPrefix = []string{"/t.Svc/", "/t.", "/t.Svc/A", "/"}[r.IntN(4)]
	case 2:
		m.PathRegex = []string{`/t\.Svc/[AB]`, `.*A`, `/t\..*`, `/[tu]\.Svc/A+`}[r.IntN(4)]
	}
	switch r.IntN(6) {
	case 0:
		m.Methods = []string{"POST"}
	case 1:
		m.Methods = []string{"GET"}
	case 2:
		m.Methods = []string{"GET", "POST"}
	}
	for i, n := 0, r.IntN(3); i < n; i++ {
		h := mesh.HeaderMatch{Name: diffHeaders[r.IntN(len(diffHeaders))], Invert: r.IntN(3) == 0}
		switch r.IntN(5) {
		case 0:
			h.Kind = mesh.MatchExact
		case 1:
			h.Kind = mesh.MatchPrefix
		case 2:
			h.Kind = mesh.MatchSuffix
		case 3:
			h.Kind = mesh.MatchRegex
		default:
			h.Kind = mesh.MatchPresent
		}
		switch h.Kind {
		case mesh.MatchRegex:
			h.Value = []string{"[0-9]", "a.*", "1|2", ".*"}[r.IntN(4)]
		case mesh.MatchPresent:
		default:
			h.Value = diffValues[r.IntN(len(diffValues))]
			if h.Value == "" {
				h.Value = "a"
			}
		}
		if h.Kind == "" || (h.Kind != mesh.MatchPresent && h.Value == "") {
			continue
		}
		m.Header = append(m.Header, h)
	}
	if r.IntN(10) == 0 {
		m.QueryParam = []mesh.QueryMatch{{Name: "q", Kind: mesh.MatchPresent}}
	}
	return m
}

// randomMesh returns a mesh with destination greeter (gRPC) on port and sources s1..s3, with
// random intentions at every precedence and a random default.
func randomMesh(r *rand.Rand, port int) *mesh.Snapshot {
	def := mesh.Deny
	if r.IntN(2) == 0 {
		def = mesh.Allow
	}
	s := newSnap(def)
	addService(s, "greeter", mesh.ProtocolGRPC, 8080, ep("127.0.0.1", port, "dc1"))
	for _, src := range diffSources {
		addService(s, src, mesh.ProtocolGRPC, 8080)
		addUpstream(s, src, "greeter", 9191)
	}
	action := func() mesh.Action {
		if r.IntN(2) == 0 {
			return mesh.Allow
		}
		return mesh.Deny
	}
	for _, dst := range []string{"greeter", mesh.Wildcard} {
		for _, src := range append(append([]string{}, diffSources...), mesh.Wildcard) {
			if r.IntN(5) >= 2 {
				continue
			}
			in := &mesh.Intention{Source: src, Destination: dst}
			if dst != mesh.Wildcard && r.IntN(2) == 0 {
				for i, n := 0, 1+r.IntN(3); i < n; i++ {
					in.Permissions = append(in.Permissions, mesh.Permission{Action: action(), HTTP: randomMatch(r)})
				}
			} else {
				in.Action = action()
			}
			addIntention(s, in)
		}
	}
	return s
}

type diffRequest struct {
	path    string
	headers map[string]string
}

func randomRequest(r *rand.Rand) diffRequest {
	q := diffRequest{path: diffPaths[r.IntN(len(diffPaths))], headers: map[string]string{}}
	for _, h := range diffHeaders {
		if r.IntN(3) > 0 {
			q.headers[h] = diffValues[r.IntN(len(diffValues))]
		}
	}
	return q
}

func TestDifferentialPathsAreCanonical(t *testing.T) {
	for _, p := range diffPaths {
		if n := mesh.NormalizePath(p); n != p {
			t.Errorf("differential path %q normalizes to %q: gRPC and Authorize would judge different paths", p, n)
		}
	}
}

func TestDifferentialAuthorizeVsGRPCRBAC(t *testing.T) {
	differential(t, 40, func(t *testing.T, lis net.Listener, xdsAddr, certDir string) {
		startGreeter(t, lis, xdsAddr, "greeter", "greeter-1", "v1", certDir)
	})
}

// TestDifferentialAuthorizeVsCCoreRBAC runs the random meshes through gRPC C-core's own RBAC
// engine: the greeter is interop/python/server.py, an xDS server of Debian's python3-grpcio
// (C-core 1.51), as a real process; the clients stay grpc-go.
func TestDifferentialAuthorizeVsCCoreRBAC(t *testing.T) {
	differential(t, 20, startCCoreGreeter)
}

// TestDifferentialAuthorizeVsGRPCJSRBAC runs the random meshes through grpc-js-xds's RBAC filter
// (interop/node/server.js, behind GRPC_XDS_EXPERIMENTAL_RBAC=true), as a real process.
func TestDifferentialAuthorizeVsGRPCJSRBAC(t *testing.T) {
	differential(t, 20, startGRPCJSGreeter)
}

// differential compares, for random meshes (MESH_DIFF_MESHES, default meshes) and random
// requests (MESH_DIFF_SEED reproduces them), mesh.Authorize with the verdicts of a greeter that
// startServer serves on lis, configured by our xDS server, called by grpc-go clients s1..s3.
func differential(t *testing.T, meshes int, startServer func(t *testing.T, lis net.Listener, xdsAddr, certDir string)) {
	if v, err := strconv.Atoi(os.Getenv("MESH_DIFF_MESHES")); err == nil && v > 0 {
		meshes = v
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("MESH_DIFF_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (MESH_DIFF_SEED reproduces), %d meshes", seed, meshes)
	r := rand.New(rand.NewPCG(seed, 0x6d657368))

	ca := newTestCA(t)
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	lis, port := listenLoopback(t)
	if err := srv.SetSnapshot(seal(t, randomMesh(r, port))); err != nil {
		t.Fatal(err)
	}
	startServer(t, lis, addr, ca.issue(t, "greeter"))
	certs := map[string]string{}
	for _, src := range diffSources {
		certs[src] = ca.issue(t, src)
	}

	rpcs, allowed := 0, 0
	for i := 0; i < meshes; i++ {
		snap := seal(t, randomMesh(r, port))
		if err := srv.SetSnapshot(snap); err != nil {
			t.Fatal(err)
		}
		// The version changes only when greeter's resources do (a random mesh may render the
		// same RBAC as the last one).
		waitFor(t, 10*time.Second, "greeter to ACK the mesh", func() bool { return upToDate(srv, "greeter-1") })
		for _, src := range diffSources {
			// A fresh channel per mesh: the server applies a new RBAC to new connections and
			// drains the old ones.
			cc := dialService(t, addr, src, fmt.Sprintf("%s-%d", src, i), "greeter", certs[src])
			for j := 0; j < 8; j++ {
				q := randomRequest(r)
				want := mesh.Authorize(snap, mesh.Request{Source: src, Destination: "greeter", Method: "POST", Path: q.path, Headers: q.headers})
				var md []string
				for k, v := range q.headers {
					md = append(md, k, v)
				}
				code := callVerdict(t, cc, q.path, md...)
				rpcs++
				if want.Allowed() {
					allowed++
				}
				if code != codes.OK && code != codes.PermissionDenied {
					t.Fatalf("mesh %d, %s %s %v: unexpected status %v", i, src, q.path, q.headers, code)
				}
				if (code == codes.OK) != want.Allowed() {
					t.Errorf("mesh %d (seed %d): %s → greeter %s headers %v: Authorize says %s (%s), the server's RBAC says %v\nintentions: %s",
						i, seed, src, q.path, q.headers, want.Verdict, want.Reason, code, describeIntentions(snap))
				}
			}
			cc.Close()
		}
	}
	t.Logf("%d RPCs compared, %d allowed", rpcs, allowed)
}

// startGRPCJSGreeter runs interop/node/server.js, serving every path of the differential test.
func startGRPCJSGreeter(t *testing.T, lis net.Listener, xdsAddr, certDir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join("..", "interop", "node", "node_modules", "@grpc", "grpc-js-xds")); err != nil {
		t.Fatalf("no grpc-js-xds in interop/node/node_modules: run .ci/run's install step (npm ci in interop/node)")
	}
	startGreeterProcess(t, lis, xdsAddr, certDir, []string{"GRPC_XDS_EXPERIMENTAL_RBAC=true"},
		"node", filepath.Join("..", "interop", "node", "server.js"), "--methods", strings.Join(diffPaths, ","))
}

// startCCoreGreeter runs interop/python/server.py on lis's address as node greeter-1 of
// service greeter. It fails the test, saying how to install them, when /usr/bin/python3 or its
// grpc module (python3-grpcio) is missing.
func startCCoreGreeter(t *testing.T, lis net.Listener, xdsAddr, certDir string) {
	t.Helper()
	if out, err := exec.Command("/usr/bin/python3", "-c", "import grpc").CombinedOutput(); err != nil {
		t.Fatalf("/usr/bin/python3 cannot import grpc (%v: %s): run .ci/run's install step (apt-get install -y python3-grpcio python3-protobuf)", err, out)
	}
	startGreeterProcess(t, lis, xdsAddr, certDir, nil, "/usr/bin/python3", filepath.Join("..", "interop", "python", "server.py"))
}

// startGreeterProcess runs an interop server program (argv, then --listen and --name) on lis's
// address as node greeter-1 of service greeter, stopping it when the test ends.
func startGreeterProcess(t *testing.T, lis net.Listener, xdsAddr, certDir string, env []string, argv ...string) {
	t.Helper()
	boot := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := os.WriteFile(boot, grpcBootstrap(t, xdsAddr, "greeter", "greeter-1", certDir), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // the server binds the address itself
	var out bytes.Buffer
	cmd := exec.Command(argv[0], append(argv[1:], "--listen", addr, "--name", "greeter-1")...)
	cmd.Env = append(append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+boot), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", argv[1], out.String())
		}
	})
}

// callVerdict makes one RPC and returns its status, retrying (a bounded number of times) only
// when no verdict arrived: a transport failure such as a connection the server is draining
// after an update. A verdict, OK or PermissionDenied, is never retried, so a disagreement
// between the RBAC and Authorize cannot be hidden by asking again.
func callVerdict(t *testing.T, cc *grpc.ClientConn, path string, md ...string) codes.Code {
	t.Helper()
	var code codes.Code
	for attempt := 0; attempt < 5; attempt++ {
		_, code, _ = call(cc, path, md...)
		if !transportFailure(code) {
			return code
		}
		time.Sleep(100 * time.Millisecond)
	}
	return code
}

// transportFailure reports whether code means that the RPC did not reach a verdict: the
// connection was unavailable or went away, not that RBAC (or the handler) answered.
func transportFailure(code codes.Code) bool {
	return code == codes.Unavailable
}

func describeIntentions(s *mesh.Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "default %s\n", s.Mesh.DefaultIntention)
	for _, in := range s.Intentions {
		fmt.Fprintf(&b, "  %s → %s: ", in.Source, in.Destination)
		if in.Action != "" {
			fmt.Fprintf(&b, "%s\n", in.Action)
			continue
		}
		for i, p := range in.Permissions {
			fmt.Fprintf(&b, "[%d %s %s] ", i, p.Action, p.HTTP.Describe())
		}
		b.WriteString("\n")
	}
	return b.String()
}
