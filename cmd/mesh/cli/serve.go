package cli

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/catalog"
	"github.com/meshgit/mesh/internal/commitsig"
	"github.com/meshgit/mesh/internal/memlimit"
	"github.com/meshgit/mesh/internal/tlsutil"
	"github.com/meshgit/mesh/reconciler"
	"github.com/meshgit/mesh/xds"
)

func init() { register(newServeCmd) }

// serveOptions are the flags of mesh serve.
type serveOptions struct {
	repo, ref, dir, data             string
	http, httpAdvertise              string
	xds                              string
	xdsTLS                           bool
	datacenter                       string
	federate                         []string
	raft, raftAdvertise              string
	nodeID, join                     string
	tokenFile, webhookSecretFile     string
	gitTokenFile, gitUser, gitSSHKey string
	poll                             time.Duration
	syncInterval                     time.Duration
	history                          int
	logLevel                         string
	verifyCommits                    []string
	tlsCert, tlsKey, tlsCA           string
	insecurePlaintext                bool
	checkAllow                       []string
	memoryLimit                      string
	gogc                             string

	// ready, when set (tests), receives the running server once it listens.
	ready func(*reconciler.Server, string)
}

func newServeCmd() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve --repo PATH_OR_URL [--ref BRANCH] [--dir DIR] [flags]",
		Short: "Run a mesh server: follow a Git branch, replicate snapshots with Raft, serve them over xDS",
		Long: `Serve runs one server of the control plane. Without --join it bootstraps a one-server cluster
in --data (or resumes the cluster recorded there); with --join it joins the cluster of the
server at that HTTP address. The leader follows --ref of --repo (a local repository, watched
for pushes, or a URL, fetched every --poll and on POST /v1/webhook/git), compiles every new
commit and replicates the snapshot; every server serves its snapshot over xDS on --xds.

With --verify-commits, a commit is compiled only if it is signed by a trusted key (an SSH
allowed_signers file, as git verify-commit reads gpg.ssh.allowedSignersFile, or an armored
OpenPGP keyring); any other is refused, shown in mesh status, and the last good snapshot stays
served.

Write endpoints (pin, unpin, join, remove) need the token of --token-file; without it, a
random token is created in DATA/token on first start. SIGINT or SIGTERM shuts down cleanly.

One server per data directory: a second one fails at once. A data directory that cannot be read
back is refused with the file's name; recover by moving it away and starting with --join (see
docs/operations.md, Recovery from faults).

Instances registered on this server (PUT /v1/agent/service/register here) belong to its own
catalog node, synced every --sync-interval; every catalog node (a server or a mesh agent) that
stops syncing for 3 of its intervals has its instances marked critical by the leader, which
checks every min(1s, --sync-interval/3).

With --tls-cert-file, --tls-key-file and --tls-ca-file (made with mesh tls), Raft runs over
mutual TLS (only server certificates of that CA are accepted, on both ends) and the HTTP API
over HTTPS; --join then takes https://HOST:PORT or HOST:PORT. Without them, every address must
be a loopback one: a non-loopback --http, --raft or --xds (without --xds-tls) is refused unless
--insecure-plaintext is given. The data directory and everything in it are made owner-only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.repo == "" {
				return usageError{errors.New("serve: --repo is required")}
			}
			if o.syncInterval < 30*time.Millisecond {
				return usageError{fmt.Errorf("serve: --sync-interval %v: want at least 30ms", o.syncInterval)}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runServe(ctx, o, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.repo, "repo", "", "the Git repository to follow: a local path (work tree or bare) or a URL (required)")
	f.StringVar(&o.ref, "ref", "", "the branch to follow (default: the repository's HEAD)")
	f.StringVar(&o.dir, "dir", "", "the mesh directory inside the repository (default: its root)")
	f.StringVar(&o.data, "data", reconciler.DefaultDataDir, "the data directory (Raft log, snapshots, mirror, token)")
	f.StringVar(&o.http, "http", reconciler.DefaultHTTPAddr, "address of the HTTP API")
	f.StringVar(&o.httpAdvertise, "http-advertise", "", "HTTP address other servers and clients use (default: --http)")
	f.StringVar(&o.xds, "xds", reconciler.DefaultXDSAddr, "address of the xDS gRPC server")
	f.BoolVar(&o.xdsTLS, "xds-tls", false, "require mTLS on xDS: proxies present a certificate from the mesh CA whose service equals their node.cluster, and get only that service's configuration")
	f.StringVar(&o.raft, "raft", reconciler.DefaultRaftAddr, "address of Raft")
	f.StringVar(&o.raftAdvertise, "raft-advertise", "", "Raft address other servers use (default: --raft; required if --raft is 0.0.0.0)")
	f.StringVar(&o.nodeID, "node-id", "", "this server's id (default: derived from the hostname, kept in --data)")
	f.StringVar(&o.join, "join", "", "HTTP address of a server of the cluster to join (host:port, or https://host:port; https by default with --tls-cert-file)")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the token write endpoints require (default: DATA/token, created)")
	f.StringVar(&o.webhookSecretFile, "webhook-secret-file", "", "file holding the Git webhook secret (without it, webhooks are refused)")
	f.StringVar(&o.gitTokenFile, "git-token-file", "", "file holding an HTTPS token for a remote repository")
	f.StringVar(&o.gitUser, "git-user", "x-access-token", "user name sent with --git-token-file")
	f.StringVar(&o.gitSSHKey, "git-ssh-key-file", "", "SSH private key for a remote repository")
	f.DurationVar(&o.poll, "poll", reconciler.DefaultPoll, "fetch interval of a remote repository (safety-net poll of a local one)")
	f.DurationVar(&o.syncInterval, "sync-interval", reconciler.DefaultCatalogSync, "anti-entropy period of this server's own catalog node (instances registered on it); the leader checks nodes' liveness every min(1s, this/3)")
	f.IntVar(&o.history, "history", reconciler.DefaultHistory, "snapshots each server keeps")
	f.StringArrayVar(&o.federate, "federate", nil, "DC=https://HOST:PORT[,https://HOST:PORT...]: follow datacenter DC's cluster at that HTTP API (its mesh gateways and healthy-instance counts, blocking queries; with several of its servers, the next is tried when one fails); repeatable, once per datacenter")
	f.StringVar(&o.datacenter, "datacenter", "", "the datacenter this cluster serves, one of mesh.datacenters (default mesh.datacenter): the same snapshot and version, with chains resolved there, its own catalog and leaves naming it")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&o.memoryLimit, "memory-limit", "", "soft memory limit of the Go runtime, as GOMEMLIMIT reads it (e.g. 600MiB, 2GiB, off): the garbage collector works harder near it instead of letting the heap grow by --gogc over its live heap (default: GOMEMLIMIT, else none)")
	f.StringVar(&o.gogc, "gogc", "", "the garbage collector's target, as GOGC reads it (a percentage, or off): the heap grows this much over what the last collection kept before the next one runs; lower trades CPU for memory (default: GOGC, else "+strconv.Itoa(memlimit.DefaultGCPercent)+")")
	f.StringSliceVar(&o.verifyCommits, "verify-commits", nil, "serve only commits signed by a key of these files: SSH allowed_signers or armored OpenPGP keyrings (repeatable or comma-separated); others are refused and shown in status")
	f.StringVar(&o.tlsCert, "tls-cert-file", "", "this server's certificate (mesh tls cert create --server): TLS on Raft and the HTTP API")
	f.StringVar(&o.tlsKey, "tls-key-file", "", "the key of --tls-cert-file")
	f.StringVar(&o.tlsCA, "tls-ca-file", "", "the servers' CA (mesh-ca.pem of mesh tls ca create)")
	addCheckAllowFlag(f, &o.checkAllow)
	f.BoolVar(&o.insecurePlaintext, "insecure-plaintext", false, "allow non-loopback addresses without TLS (anyone reaching them can read and replace the configuration)")
	return cmd
}

// gcName is how the log names a GC target: its percentage, or off.
func gcName(percent int) string {
	if percent < 0 {
		return "off"
	}
	return strconv.Itoa(percent)
}

// runServe runs a server until ctx ends, then shuts it down in order: stop accepting (HTTP API,
// Git loop), stop xDS streams, shut Raft down and close its stores.
func runServe(ctx context.Context, o serveOptions, stderr io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return usageError{fmt.Errorf("serve: --log-level: %v", err)}
	}
	if o.datacenter != "" && !ca.ValidName(o.datacenter) {
		return usageError{fmt.Errorf("serve: --datacenter %q is not a datacenter name (a DNS label)", o.datacenter)}
	}
	federate := map[string]string{}
	for _, f := range o.federate {
		dc, u, ok := strings.Cut(f, "=")
		if !ok || !ca.ValidName(dc) || u == "" || federate[dc] != "" {
			return usageError{fmt.Errorf("serve: --federate %q: want DC=https://HOST:PORT, once per datacenter", f)}
		}
		federate[dc] = u
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	material, err := tlsutil.Load(o.tlsCert, o.tlsKey, o.tlsCA)
	if errors.Is(err, tlsutil.ErrIncomplete) {
		return usageError{fmt.Errorf("serve: %w", err)}
	} else if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := checkPlaintext(o, material != nil); err != nil {
		return err
	}
	limit, err := memlimit.Set(o.memoryLimit)
	if err != nil {
		return usageError{fmt.Errorf("serve: --memory-limit %w", err)}
	}
	if limit != math.MaxInt64 {
		log.Info("go runtime soft memory limit", "limit", memlimit.Format(limit))
	}
	gogc, from, err := memlimit.SetGCPercent(o.gogc, memlimit.DefaultGCPercent)
	if err != nil {
		return usageError{fmt.Errorf("serve: --gogc %w", err)}
	}
	log.Info("go runtime garbage collection target", "gogc", gcName(gogc), "from", from)
	restrictUmask() // files the server creates are owner-only
	// The data directory's lock before anything else is opened: a second server on it fails at once.
	lock, err := reconciler.LockDataDir(o.data)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer lock.Release()

	cfg := reconciler.Config{
		Repo: o.repo, Ref: o.ref, Dir: o.dir, DataDir: o.data,
		HTTPAddr: o.http, HTTPAdvertise: o.httpAdvertise, RaftAddr: o.raft, RaftAdvertise: o.raftAdvertise,
		NodeID: o.nodeID, Join: o.join, Poll: o.poll, History: o.history, Log: log, TLS: material, Lock: lock,
		Datacenter: o.datacenter, Federate: federate,
		CatalogSync: o.syncInterval, CatalogTick: min(time.Second, o.syncInterval/3),
	}
	if cfg.Token, err = serverToken(o.tokenFile, o.data, log); err != nil {
		return err
	}
	if o.webhookSecretFile != "" {
		if cfg.WebhookSecret, err = readSecret(o.webhookSecretFile); err != nil {
			return err
		}
	}
	if cfg.GitAuth, err = gitAuth(o); err != nil {
		return err
	}
	if cfg.CheckAllow, err = catalog.ParseAllow(o.checkAllow); err != nil {
		return usageError{fmt.Errorf("serve: --check-allow: %w", err)}
	}
	if len(o.verifyCommits) > 0 {
		if cfg.VerifyCommits, err = commitsig.Load(o.verifyCommits...); err != nil {
			return usageError{fmt.Errorf("serve: --verify-commits: %w", err)}
		}
		log.Info("serving only signed commits", "keys", cfg.VerifyCommits.String())
	}

	lis, err := net.Listen("tcp", o.xds)
	if err != nil {
		return fmt.Errorf("serve: xds listen: %w", err)
	}
	if msg := plaintextWarning(lis.Addr()); msg != "" && !o.xdsTLS { // only with --insecure-plaintext
		log.Warn("!!! " + msg + " !!!")
		fmt.Fprintf(stderr, "\nWARNING: %s\n\n", msg)
	}
	var (
		xsrv    *xds.Server
		gsrv    *grpc.Server
		serving = &xds.ServingCertificate{} // Sign is set once the reconciler (and its CA) exists
		roots   = &liveRoots{}              // likewise its CA
	)
	if o.xdsTLS {
		// Fail closed: until the CA exists, every handshake fails.
		xsrv = xds.NewServer(log, xds.WithPeerAuthentication())
		gsrv = grpc.NewServer(append(xds.GRPCServerOptions(), grpc.Creds(xds.ServerCredentials(roots.pool, serving.Certificate)))...)
	} else {
		xsrv = xds.NewServer(log)
		gsrv = grpc.NewServer(xds.GRPCServerOptions()...)
	}
	xsrv.Register(gsrv)
	// xsrv is also a reconciler.TrustBundler: the server hands it the CA's trust bundle (before the
	// first snapshot, and after every rotation).
	cfg.Publisher, cfg.Proxies, cfg.Collectors = xsrv, xsrv.Proxies, xsrv.Collectors()
	cfg.ProxyConfig = xsrv.ProxyConfig

	srv, err := reconciler.New(cfg)
	if err != nil {
		lis.Close()
		return err
	}
	authority := srv.CA()
	roots.ca.Store(authority)
	serving.Sign = func(csr []byte) ([]byte, error) {
		// The serving key is made and kept in this process; only the CSR reaches the CA.
		l, err := authority.Sign(xds.ServerIdentity, csr)
		if err != nil {
			return nil, err
		}
		return []byte(l.CertPEM), nil
	}
	openCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = srv.Open(openCtx)
	cancel()
	if err != nil {
		lis.Close()
		xsrv.Close()
		return fmt.Errorf("serve: %w", err)
	}
	go func() {
		if err := gsrv.Serve(lis); err != nil {
			log.Error("xds server", "err", err)
		}
	}()
	log.Info("xds listening", "addr", lis.Addr().String(), "tls", o.xdsTLS)
	if o.ready != nil {
		o.ready(srv, lis.Addr().String())
	}

	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx) // stop accepting: HTTP API and Git loop
	stopped := make(chan struct{})
	go func() { gsrv.GracefulStop(); close(stopped) }() // stop accepting xDS connections
	xsrv.Close()                                        // end the xDS streams
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		gsrv.Stop()
	}
	return errors.Join(err, srv.Close(sctx)) // Raft, then its stores
}

// liveRoots verifies proxies against the CA's current bundle, read at every handshake, so a
// rotation applies to the next connection without waiting for anything.
type liveRoots struct {
	ca   atomic.Pointer[ca.CA]
	mu   sync.Mutex
	pem  string
	last *x509.CertPool
}

func (r *liveRoots) pool() *x509.CertPool {
	authority := r.ca.Load()
	if authority == nil {
		return nil
	}
	b, err := authority.Bundle()
	if err != nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if b.BundlePEM != r.pem {
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM([]byte(b.BundlePEM)) {
			return nil
		}
		r.pem, r.last = b.BundlePEM, p
	}
	return r.last
}

// checkPlaintext refuses non-loopback addresses that would carry plaintext: --http and --raft
// without TLS material, --xds without --xds-tls, unless --insecure-plaintext.
func checkPlaintext(o serveOptions, tls bool) error {
	if o.insecurePlaintext {
		return nil
	}
	var open []string
	if !tls {
		for _, a := range [][2]string{{"--http", o.http}, {"--raft", o.raft}} {
			if !loopbackAddr(a[1]) {
				open = append(open, a[0]+" "+a[1])
			}
		}
	}
	if !o.xdsTLS && !loopbackAddr(o.xds) {
		open = append(open, "--xds "+o.xds+" (without --xds-tls)")
	}
	if len(open) == 0 {
		return nil
	}
	return usageError{fmt.Errorf("serve: refusing to listen without TLS on %s: anyone who reaches it could read or replace the mesh's configuration and CA.\n"+
		"Make certificates with mesh tls (mesh tls ca create; mesh tls cert create --server --node ID) and pass --tls-cert-file, --tls-key-file and --tls-ca-file (and --xds-tls for xDS),\n"+
		"use loopback addresses, or accept the risk with --insecure-plaintext", strings.Join(open, ", "))}
}

// loopbackAddr reports whether a listening address host:port is on a loopback interface only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// plaintextWarning returns the warning for plaintext xDS on addr, or "" on a loopback address.
func plaintextWarning(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return ""
	}
	return fmt.Sprintf("xDS listens on %s WITHOUT TLS OR AUTHENTICATION: any host that can reach it gets the mesh configuration. Use a loopback address for development.", addr)
}

// serverToken reads the write token from file, or from DATA/token, creating it on first start.
func serverToken(file, data string, log *slog.Logger) (string, error) {
	if file != "" {
		return readToken(file)
	}
	file = filepath.Join(data, "token")
	if tok, err := readToken(file); err == nil {
		return tok, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return "", err
	}
	b := make([]byte, 32)
	rand.Read(b)
	tok := hex.EncodeToString(b)
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	log.Info("created the write token", "file", file)
	return tok, nil
}

func readToken(file string) (string, error) {
	b, err := readSecret(file)
	if err != nil {
		return "", err
	}
	// The token is the file's last non-empty line, so the whole output of
	// `mesh token create ... > file` works as a token file.
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	tok := strings.TrimSpace(lines[len(lines)-1])
	for _, c := range tok {
		if c <= ' ' || c == 0x7f {
			return "", fmt.Errorf("token file %s: the token has a space or control character", file)
		}
	}
	if tok == "" {
		return "", fmt.Errorf("token file %s: empty", file)
	}
	return tok, nil
}

// readSecret reads a secret file, without its trailing newline.
func readSecret(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read secret: %w", err)
	}
	b = []byte(strings.TrimRight(string(b), "\r\n"))
	if len(b) == 0 {
		return nil, fmt.Errorf("read secret: %s is empty", file)
	}
	return b, nil
}

func gitAuth(o serveOptions) (transport.AuthMethod, error) {
	switch {
	case o.gitSSHKey != "" && o.gitTokenFile != "":
		return nil, usageError{errors.New("serve: --git-ssh-key-file and --git-token-file exclude each other")}
	case o.gitSSHKey != "":
		auth, err := gitssh.NewPublicKeysFromFile("git", o.gitSSHKey, "")
		if err != nil {
			return nil, fmt.Errorf("serve: ssh key: %w", err)
		}
		return auth, nil
	case o.gitTokenFile != "":
		tok, err := readToken(o.gitTokenFile)
		if err != nil {
			return nil, err
		}
		return &githttp.BasicAuth{Username: o.gitUser, Password: tok}, nil
	}
	return nil, nil
}
