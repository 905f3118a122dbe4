package proxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/xds"
)

// env is a mesh for the proxy's tests: a CA, a Git repository whose commits are compiled and
// served by a real xDS server over loopback gRPC.
type env struct {
	t       testing.TB
	ca      *ca.CA
	xs      *xds.Server
	xdsAddr string
	repo    string
	log     *slog.Logger
	// serve, if set, serves each committed snapshot instead of e.xs.SetSnapshot.
	serve func(*mesh.Snapshot)
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, log: slog.New(slog.DiscardHandler)}
	if testing.Verbose() {
		e.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e.ca = ca.New(ca.Config{})
	if err := e.ca.Init(context.Background(), "shop.mesh", nil); err != nil {
		t.Fatal(err)
	}
	e.xs, e.xdsAddr = serveXDS(t, e.log.With("component", "xds"))
	e.repo = t.TempDir()
	e.git("init", "-q", "-b", "main")
	return e
}

// serveXDS starts an xDS server on loopback.
func serveXDS(t testing.TB, log *slog.Logger) (*xds.Server, string) {
	t.Helper()
	xs := xds.NewServer(log)
	xl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	xs.Register(g)
	go g.Serve(xl)
	t.Cleanup(func() { xs.Close(); g.Stop() })
	return xs, xl.Addr().String()
}

func (e *env) git(args ...string) {
	e.t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = e.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// commit commits src as mesh.cue, compiles the commit from Git and serves it.
func (e *env) commit(src string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.repo, "mesh.cue"), []byte(src), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.git("add", "mesh.cue")
	e.git("commit", "-q", "-m", "mesh")
	snap, err := compiler.CompileGit(context.Background(), e.repo, "HEAD", "")
	if err != nil {
		e.t.Fatal(err)
	}
	if e.serve != nil {
		e.serve(snap)
		return
	}
	if err := e.xs.SetSnapshot(snap); err != nil {
		e.t.Fatal(err)
	}
}

// certDir issues a leaf for service from e's CA and writes the agent's three files.
func (e *env) certDir(service string) string {
	e.t.Helper()
	return writeLeaf(e.t, e.ca, service)
}

func writeLeaf(t testing.TB, c *ca.CA, service string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := c.Sign(service, csr)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), service)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		ca.CertFile: []byte(leaf.CertPEM),
		ca.KeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		ca.CAFile:   []byte(leaf.BundlePEM),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// proxy starts a built-in proxy for service with the certificates of dir.
func (e *env) proxy(service, dir string) *Proxy {
	e.t.Helper()
	return e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: service, CertDir: dir})
}

// proxyWith starts a built-in proxy with cfg, completed for tests.
func (e *env) proxyWith(cfg Config) *Proxy {
	e.t.Helper()
	cfg.ProxyID, cfg.InboundHost, cfg.RetryInterval = cfg.Service+"-1", "127.0.0.1", 100*time.Millisecond
	cfg.Log = e.log.With("proxy", cfg.Service)
	p, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	p.Open()
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			e.t.Error(err)
		}
	})
	return p
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// echoServer is a plain TCP application that echoes what it reads and counts connections.
type echoServer struct {
	ln    net.Listener
	conns atomic.Int64
}

func newEchoServer(t testing.TB) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return s
}

func (s *echoServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// roundTrip sends payload to addr, half-closes, and returns what came back.
func roundTrip(addr string, payload []byte, timeout time.Duration) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(c)
	if werr := <-errc; werr != nil && rerr == nil {
		rerr = werr
	}
	return got, rerr
}

// eventually retries f every 20ms until it succeeds or d passes.
func eventually(t testing.TB, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// echoes reports whether payload makes the round trip through addr.
func echoes(addr string, payload []byte) error {
	got, err := roundTrip(addr, payload, 5*time.Second)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("got %d bytes back, want %d", len(got), len(payload))
	}
	return nil
}

var errNoEcho = errors.New("no echo")
