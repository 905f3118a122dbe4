package ui_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/meshgit/mesh/internal/testutil"
	"github.com/meshgit/mesh/reconciler"
	"github.com/meshgit/mesh/xds"
)

const testToken = "ui-test-token-0123456789"

var testTiming = reconciler.RaftTiming{
	HeartbeatTimeout:   400 * time.Millisecond,
	ElectionTimeout:    400 * time.Millisecond,
	LeaderLeaseTimeout: 200 * time.Millisecond,
	CommitTimeout:      5 * time.Millisecond,
}

// meshServer is a real one-server cluster following a real Git repository, with a real xDS
// server on loopback.
type meshServer struct {
	repo    string // work tree; the mesh is under mesh/
	srv     *reconciler.Server
	xds     *xds.Server
	xdsAddr string
	base    string // http://127.0.0.1:PORT
}

// copyTree copies the .cue files of src into dst.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".cue") {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startMesh commits meshDir under mesh/ of a new repository and serves it.
func startMesh(t testing.TB, meshDir string) *meshServer {
	t.Helper()
	m := &meshServer{repo: t.TempDir()}
	testutil.Git(t, m.repo, "init", "-q", "-b", "main")
	copyTree(t, meshDir, filepath.Join(m.repo, "mesh"))
	testutil.Git(t, m.repo, "add", "-A")
	testutil.Git(t, m.repo, "commit", "-q", "-m", "the mesh")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	cfg := reconciler.Config{Repo: m.repo, Ref: "main", Dir: "mesh", DataDir: t.TempDir(),
		// repo-example's Git endpoints are 10.x addresses: the servers' checks stay on loopback.
		CheckAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		HTTPAddr:   "127.0.0.1:0", RaftAddr: "127.0.0.1:0", Token: testToken, Poll: 30 * time.Second,
		Raft: testTiming, Log: log}
	m.xds = xds.NewServer(log)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	m.xds.Register(g)
	go g.Serve(lis)
	t.Cleanup(func() { m.xds.Close(); g.Stop() })
	m.xdsAddr = lis.Addr().String()
	cfg.Publisher, cfg.Proxies = m.xds, m.xds.Proxies
	m.srv, err = reconciler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.srv.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.srv.Close(context.Background()) })
	m.base = "http://" + m.srv.HTTPAddr()
	waitFor(t, 60*time.Second, "the first snapshot to be served", func() bool { return m.srv.Served() != nil })
	return m
}

// commit writes files (paths under mesh/) and commits them; it returns the commit's SHA.
func (m *meshServer) commit(t testing.TB, files map[string]string, msg string) string {
	t.Helper()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(m.repo, "mesh", name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Git(t, m.repo, "add", "-A")
	testutil.Git(t, m.repo, "commit", "-q", "-m", msg)
	return testutil.Git(t, m.repo, "rev-parse", "HEAD")
}

// grpcClient starts a proxyless gRPC client of service (node nodeID) for xds:///target: gRPC's
// own xDS client fetches and ACKs the configuration.
func (m *meshServer) grpcClient(t testing.TB, service, nodeID, target string) {
	t.Helper()
	b, err := xds.GRPCBootstrap(xds.GRPCBootstrapOptions{Service: service, NodeID: nodeID, XDSAddr: m.xdsAddr, CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(b)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(rb), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	cc.Connect()
	t.Cleanup(func() { cc.Close() })
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, timeout, 10*time.Millisecond, what, cond)
}

// browser is a real headless Chromium (Debian's chromium package) driven over the DevTools
// protocol, with a fresh profile. It records every console error, uncaught exception and
// browser log error (failed loads, CSP violations) of the pages it shows.
type browser struct {
	ctx context.Context

	mu     sync.Mutex
	errors []string
}

func newBrowser(t testing.TB) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	if p := os.Getenv("MESH_CHROMIUM"); p != "" {
		opts = append(opts, chromedp.ExecPath(p))
	} else if p, err := exec.LookPath("chromium"); err == nil {
		opts = append(opts, chromedp.ExecPath(p))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{ctx: ctx}
	ctx2, cancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel2()
	// The first action starts the browser; it must run on ctx itself (a timeout there would
	// stop the browser), so the bound comes from a watchdog.
	stop := context.AfterFunc(ctx2, func() {
		if ctx2.Err() == context.DeadlineExceeded {
			cancel()
		}
	})
	_, err := chromedp.Run(ctx, chromedp.Evaluate[any](`1`))
	stop()
	if err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium (install Debian's chromium package; .ci/run does): %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for msg, err := range messages {
			if err != nil {
				return
			}
			if msg.Type == chromedp.ConsoleError || msg.Type == chromedp.ConsoleException {
				b.record(fmt.Sprintf("%s (%s:%d)", msg, msg.URL, msg.Line))
			}
		}
	}()
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return b
}

func (b *browser) record(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors = append(b.errors, s)
}

// takeErrors returns the errors recorded since the last call.
func (b *browser) takeErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.errors
	b.errors = nil
	return out
}

// run runs actions with a timeout.
func (b *browser) run(t testing.TB, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %v (errors so far: %v)", err, b.takeErrors())
	}
}

// eval evaluates expr in the page and decodes its value into a T.
func eval[T any](t testing.TB, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// text returns the visible text of the first element matching the CSS selector sel.
func text(t testing.TB, b *browser, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("browser: text of %s: %v", sel, err)
	}
	return v
}

// js runs expr in the page for its effect.
func js(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[any](expr)(ctx, tg)
		return err
	})
}

// waitJS polls expr in the page until it is truthy.
func waitJS(expr string, timeout time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(20*time.Millisecond))
}
