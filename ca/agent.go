package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshgit/mesh/internal/atomicfile"
)

// Files an Agent writes in its directory: what gRPC's file_watcher certificate provider (the
// "mesh" instance of `mesh grpc bootstrap`) reads.
const (
	CertFile = "cert.pem" // the leaf and the chain a peer needs
	KeyFile  = "key.pem"  // the workload's private key, 0600
	CAFile   = "ca.pem"   // the trust bundle
)

// maxRefusals is how many refusals in a row (401, 403, 400) end an Agent's Run.
const maxRefusals = 3

// Agent keeps a service's certificate files fresh: it makes the key itself (the key never leaves
// the process and its directory), asks the CA to sign a CSR, writes the files atomically, and
// renews at RenewAt of each leaf. Transient failures (network, 429, 5xx) are retried with
// exponential backoff; refusals (401, 403, 400) end Run with the error once they repeat.
//
// The key is made once per directory and kept across renewals: gRPC's file_watcher reads cert.pem
// and key.pem one after the other, and a pair caught between two renames would not match (gRPC
// then keeps the old pair, but logs both files' contents, the key included, at warning level).
// With one key per directory every pair gRPC can read matches. Delete key.pem to get a new key at
// the next start.
type Agent struct {
	Client  *Client
	Service string
	Dir     string
	Log     *slog.Logger // default: discard

	MinBackoff time.Duration // default 1s
	MaxBackoff time.Duration // default 30s
	// OnIssue, if set, is called after each leaf's files are written.
	OnIssue func(*Leaf)
	// ExtraFiles (base name → content) are written into Dir (0644, atomically, not rewritten
	// when unchanged) after each leaf's files, so that the files they name exist first. `mesh
	// agent` beside Envoy passes xds.EnvoySDSFiles(Dir): the file-based SDS through which Envoy
	// presents cert.pem/key.pem to an xDS server with --xds-tls. They must not hold key material.
	ExtraFiles map[string][]byte

	key  crypto.Signer
	caMu sync.Mutex // serializes writes of ca.pem: Issue's and followRoots'
}

// Run issues a leaf and renews it until ctx ends (returning nil) or the CA refuses the agent.
// Once the first leaf is written it also follows the trust bundle (followRoots): ca.pem is
// rewritten when the roots change between renewals (a federated datacenter's roots arrive, a
// rotation), without a new leaf.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	following := false
	log := a.logger()
	backoff := a.minBackoff()
	refusals := 0
	for {
		start := time.Now()
		leaf, err := a.Issue(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var next time.Time
		if err != nil {
			// A refusal is final, but not at the first sight: a follower may not have applied
			// a token created a moment ago.
			if !temporary(err) {
				if refusals++; refusals >= maxRefusals {
					return err
				}
			}
			wait := jitter(backoff)
			if ae := (*APIError)(nil); errors.As(err, &ae) && ae.RetryAfter > wait {
				wait = ae.RetryAfter
			}
			log.Warn("certificate request failed; retrying", "service", a.Service, "err", err, "retryIn", wait.Round(time.Millisecond))
			next = time.Now().Add(wait)
			backoff = min(2*backoff, a.maxBackoff())
		} else {
			backoff, refusals = a.minBackoff(), 0
			if !following {
				following = true
				wg.Add(1)
				go func() { defer wg.Done(); a.followRoots(ctx) }()
			}
			from := leaf.NotBefore
			if start.After(from) {
				from = start
			}
			next = RenewAt(from, leaf.NotAfter)
			log.Info("certificate written", "service", a.Service, "spiffeId", leaf.SPIFFEID, "serial", leaf.Serial,
				"notAfter", leaf.NotAfter, "renewAt", next.Round(time.Millisecond))
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Issue makes a CSR with the agent's key, has it signed and writes the three files.
func (a *Agent) Issue(ctx context.Context) (*Leaf, error) {
	if !ValidName(a.Service) {
		return nil, fmt.Errorf("%w: service name %q", ErrBadRequest, a.Service)
	}
	if err := a.loadKey(); err != nil {
		return nil, err
	}
	csr, err := NewCSR(a.key)
	if err != nil {
		return nil, err
	}
	leaf, err := a.Client.Sign(ctx, a.Service, csr)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts([]byte(leaf.CertPEM))
	if err != nil {
		return nil, err
	}
	if !publicKeyEqual(certs[0].PublicKey, a.key.Public()) {
		return nil, errors.New("ca: the signed certificate is not for this agent's key")
	}
	if err := a.writeCA([]byte(leaf.BundlePEM)); err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(filepath.Join(a.Dir, CertFile), []byte(leaf.CertPEM), 0o644); err != nil {
		return nil, err
	}
	for name, data := range a.ExtraFiles {
		if name != filepath.Base(name) || name == "." || name == ".." || name == KeyFile || name == CertFile || name == CAFile {
			return nil, fmt.Errorf("%w: extra file name %q", ErrBadRequest, name)
		}
		if err := WriteFileAtomic(filepath.Join(a.Dir, name), data, 0o644); err != nil {
			return nil, err
		}
	}
	if a.OnIssue != nil {
		a.OnIssue(leaf)
	}
	return leaf, nil
}

func (a *Agent) writeCA(bundle []byte) error {
	a.caMu.Lock()
	defer a.caMu.Unlock()
	return WriteFileAtomic(filepath.Join(a.Dir, CAFile), bundle, 0o644)
}

// followRoots keeps ca.pem equal to the CA's trust bundle until ctx ends: blocking queries on
// GET /v1/ca/roots with the hash of what ca.pem holds answer when the bundle differs. Failures
// are retried with the agent's backoff; a refusal is not final here (Run's renewals decide).
func (a *Agent) followRoots(ctx context.Context) {
	log := a.logger()
	backoff := a.minBackoff()
	for ctx.Err() == nil {
		cur, _ := os.ReadFile(filepath.Join(a.Dir, CAFile))
		start := time.Now()
		b, err := a.Client.RootsAfter(ctx, RootsHash(cur), rootsWait)
		if ctx.Err() != nil {
			return
		}
		if err == nil && b.Hash != RootsHash(cur) && b.BundlePEM != "" {
			if err = a.writeCA([]byte(b.BundlePEM)); err == nil {
				log.Info("trust bundle updated", "service", a.Service, "roots", len(b.Roots))
			}
		}
		wait := time.Duration(0)
		if err != nil {
			wait = jitter(backoff)
			backoff = min(2*backoff, a.maxBackoff())
			log.Warn("following the trust bundle failed; retrying", "service", a.Service, "err", err, "retryIn", wait.Round(time.Millisecond))
		} else {
			backoff = a.minBackoff()
			if b.Hash == RootsHash(cur) && time.Since(start) < time.Second {
				wait = a.minBackoff() // a server that does not block: do not spin
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// loadKey reuses the directory's key when it is one this agent would have made, else makes one.
func (a *Agent) loadKey() error {
	if a.key != nil {
		return nil
	}
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return err
	}
	file := filepath.Join(a.Dir, KeyFile)
	if b, err := os.ReadFile(file); err == nil {
		if k, err := parseKey(b); err == nil {
			if ek, ok := k.(*ecdsa.PrivateKey); ok && ek.Curve == elliptic.P256() {
				a.key = k
				return nil
			}
		}
		a.logger().Warn("replacing unusable key file", "file", file)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	b, err := keyPEM(k)
	if err != nil {
		return err
	}
	// A certificate of an older key must not be read together with the new key.
	if err := os.Remove(filepath.Join(a.Dir, CertFile)); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := WriteFileAtomic(file, b, 0o600); err != nil {
		return err
	}
	a.key = k
	return nil
}

// NewCSR returns a PEM certificate request for key with no SANs: the CA sets the identity.
func NewCSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE REQUEST", der), nil
}

// WriteFileAtomic replaces name with data as atomicfile.Write does (a reader sees the old
// content or the new, never a part); when name already holds data it leaves the file alone, so
// that watchers of the certificate files see no change.
func WriteFileAtomic(name string, data []byte, perm os.FileMode) error {
	if old, err := os.ReadFile(name); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return atomicfile.Write(name, data, perm)
}

func temporary(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Temporary()
	}
	var pe *os.PathError
	return !errors.As(err, &pe) && !errors.Is(err, ErrBadRequest) // network errors and the like
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
}

func (a *Agent) logger() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

func (a *Agent) minBackoff() time.Duration {
	if a.MinBackoff > 0 {
		return a.MinBackoff
	}
	return time.Second
}

func (a *Agent) maxBackoff() time.Duration {
	if a.MaxBackoff > 0 {
		return a.MaxBackoff
	}
	return 30 * time.Second
}
