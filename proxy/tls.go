package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
)

// certFiles reads the agent's files, again whenever one of them changed (checked at most once a
// second), so that renewed leaves and rotated roots apply to new connections.
//
// Sessions are resumed (TLS 1.3 tickets, TLS 1.2 session tickets) between sidecars, sparing a
// reconnection the signatures and the chain building: a resumed handshake is still checked by
// VerifyConnection (the chain against the current roots at the current time, the SPIFFE ID the
// cluster accepts, RBAC on the ID the session carries), and every session is forgotten when
// the files change (new ticket keys, a new client cache), so that a renewed leaf or a rotated
// root is presented and checked by a full handshake.
type certFiles struct {
	dir string

	mu       sync.Mutex
	checked  time.Time
	stamp    string
	cert     *tls.Certificate
	roots    *x509.CertPool
	err      error
	server   *tls.Config            // built once: its ticket keys outlive one connection
	sessions tls.ClientSessionCache // the client's sessions, by endpoint and SNI
	verified verifiedChains
}

// sessionCacheSize bounds the client sessions kept: one per upstream endpoint.
const sessionCacheSize = 1024

func newCertFiles(dir string) *certFiles {
	return &certFiles{dir: dir, sessions: tls.NewLRUClientSessionCache(sessionCacheSize)}
}

func (c *certFiles) load() (*tls.Certificate, *x509.CertPool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && time.Since(c.checked) < time.Second {
		return c.cert, c.roots, nil
	}
	c.checked = time.Now()
	var stamp bytes.Buffer
	for _, f := range []string{ca.CertFile, ca.KeyFile, ca.CAFile} {
		fi, err := os.Stat(filepath.Join(c.dir, f))
		if err != nil {
			return c.keep(fmt.Errorf("certificate files: %w", err))
		}
		fmt.Fprintf(&stamp, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	if c.cert != nil && stamp.String() == c.stamp {
		return c.cert, c.roots, nil
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(c.dir, ca.CertFile), filepath.Join(c.dir, ca.KeyFile))
	if err != nil {
		return c.keep(fmt.Errorf("certificate files: %w", err))
	}
	pem, err := os.ReadFile(filepath.Join(c.dir, ca.CAFile))
	if err != nil {
		return c.keep(fmt.Errorf("certificate files: %w", err))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return c.keep(errors.New("certificate files: ca.pem holds no certificate"))
	}
	if c.cert != nil {
		c.forgetSessions()
	}
	c.cert, c.roots, c.stamp = &cert, roots, stamp.String()
	return c.cert, c.roots, nil
}

// keep returns the last good files when reading new ones failed (a rename in progress).
func (c *certFiles) keep(err error) (*tls.Certificate, *x509.CertPool, error) {
	if c.cert != nil {
		return c.cert, c.roots, nil
	}
	return nil, nil, err
}

// forgetSessions makes every session issued or kept so far unusable; c.mu is held.
func (c *certFiles) forgetSessions() {
	c.sessions = tls.NewLRUClientSessionCache(sessionCacheSize)
	if c.server != nil {
		c.server.SetSessionTicketKeys([][32]byte{newTicketKey()})
	}
}

func newTicketKey() [32]byte {
	var k [32]byte
	rand.Read(k[:])
	return k
}

// serverTLS is the inbound TLS configuration, the same for every connection: the caller must
// present a certificate that chains to the trust bundle; its SPIFFE ID is checked by RBAC after
// the handshake, a resumed one's too.
func (c *certFiles) serverTLS() *tls.Config {
	c.load() // files that changed make new ticket keys before this connection resumes a session
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.server == nil {
		c.server = c.newServerTLS()
		c.server.SetSessionTicketKeys([][32]byte{newTicketKey()})
	}
	return c.server
}

// clientSessions is the session cache of connections to the endpoint addr: a session is only
// offered to the endpoint that issued it.
func (c *certFiles) clientSessions(addr string) tls.ClientSessionCache {
	c.load() // files that changed forget their sessions before this connection resumes one
	c.mu.Lock()
	defer c.mu.Unlock()
	return endpointSessions{cache: c.sessions, addr: addr}
}

type endpointSessions struct {
	cache tls.ClientSessionCache
	addr  string
}

func (e endpointSessions) Get(key string) (*tls.ClientSessionState, bool) {
	return e.cache.Get(e.addr + " " + key)
}

func (e endpointSessions) Put(key string, s *tls.ClientSessionState) {
	e.cache.Put(e.addr+" "+key, s)
}

func (c *certFiles) newServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAnyClientCert, // verified by VerifyConnection against the current roots
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, _, err := c.load()
			return cert, err
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := c.verify(cs, x509.ExtKeyUsageClientAuth, nil)
			return err
		},
	}
}

// clientTLS is the outbound TLS configuration for an upstream: its SNI, and a server
// certificate that chains to the trust bundle and names one of the SPIFFE IDs in sans (checked
// on resumed sessions too: VerifyConnection runs on every handshake). The caller sets
// ClientSessionCache to resume sessions.
func (c *certFiles) clientTLS(u *upstreamTLS) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         u.sni,
		InsecureSkipVerify: true, // the leaves carry SPIFFE IDs, not host names: VerifyConnection checks them
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _, err := c.load()
			return cert, err
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := c.verify(cs, x509.ExtKeyUsageServerAuth, u.sans)
			return err
		},
	}
}

// verify checks a peer's chain against the current roots and, when want is set, its SPIFFE ID.
func (c *certFiles) verify(cs tls.ConnectionState, usage x509.ExtKeyUsage, want map[string]bool) (string, error) {
	_, roots, err := c.load()
	if err != nil {
		return "", err
	}
	now := time.Now()
	key := chainKey(cs.PeerCertificates, usage)
	id, ok := c.verified.get(key, roots, now)
	if !ok {
		raw := make([][]byte, len(cs.PeerCertificates))
		for i, pc := range cs.PeerCertificates {
			raw[i] = pc.Raw
		}
		if id, err = ca.VerifyPeer(raw, roots, usage, now); err != nil {
			return "", err
		}
		c.verified.put(key, roots, id, cs.PeerCertificates, now)
	}
	if want != nil && !want[id] {
		return "", fmt.Errorf("peer %s is not one of the SPIFFE IDs the cluster accepts", id)
	}
	return id, nil
}

// verifiedChains remembers the chains that passed ca.VerifyPeer, so that the many connections
// of one peer do not each rebuild its chain: an entry answers only for the same certificates,
// the same roots (a reload makes a new pool), within every certificate's validity and for
// verifiedTTL after the verification.
type verifiedChains struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]verifiedChain
}

type verifiedChain struct {
	roots    *x509.CertPool
	id       string
	from, to time.Time
}

const (
	verifiedTTL  = time.Minute
	verifiedSize = 1024
)

func chainKey(certs []*x509.Certificate, usage x509.ExtKeyUsage) [sha256.Size]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d;", usage)
	for _, c := range certs {
		fmt.Fprintf(h, "%d;", len(c.Raw))
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func (v *verifiedChains) get(key [sha256.Size]byte, roots *x509.CertPool, now time.Time) (string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.entries[key]
	if !ok || e.roots != roots || now.Before(e.from) || !now.Before(e.to) {
		return "", false
	}
	return e.id, true
}

func (v *verifiedChains) put(key [sha256.Size]byte, roots *x509.CertPool, id string, certs []*x509.Certificate, now time.Time) {
	e := verifiedChain{roots: roots, id: id, from: now, to: now.Add(verifiedTTL)}
	for _, c := range certs {
		if c.NotBefore.After(e.from) {
			e.from = c.NotBefore
		}
		if c.NotAfter.Before(e.to) {
			e.to = c.NotAfter
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.entries == nil || len(v.entries) >= verifiedSize {
		v.entries = map[[sha256.Size]byte]verifiedChain{}
	}
	v.entries[key] = e
}

// peerID returns the verified SPIFFE ID of a completed handshake.
func peerID(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 || len(cs.PeerCertificates[0].URIs) != 1 {
		return ""
	}
	return cs.PeerCertificates[0].URIs[0].String()
}

// XDSCredentials are the gRPC credentials of an xDS connection to a server run with --xds-tls:
// the proxy presents the agent's leaf (its service must equal the node's cluster) and accepts
// only a server whose leaf chains to the trust bundle and names the servers' identity
// (mesh.ServerService) in trustDomain, in any datacenter.
func XDSCredentials(certDir, trustDomain string) credentials.TransportCredentials {
	c := newCertFiles(certDir)
	prefix, suffix := "spiffe://"+trustDomain+"/ns/default/dc/", "/svc/"+mesh.ServerService
	return credentials.NewTLS(&tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // VerifyConnection checks the chain and the SPIFFE ID
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _, err := c.load()
			return cert, err
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := c.verify(cs, x509.ExtKeyUsageServerAuth, nil)
			if err != nil {
				return err
			}
			dc, ok := strings.CutPrefix(id, prefix)
			if dc, ok = strings.CutSuffix(dc, suffix); !ok || dc == "" || strings.Contains(dc, "/") {
				return fmt.Errorf("xds server %s is not a mesh server of trust domain %s", id, trustDomain)
			}
			return nil
		},
	})
}

// errHelloRead stops the handshake peekSNI starts once the ClientHello is read.
var errHelloRead = errors.New("client hello read")

// peekSNI reads a TLS ClientHello from c without answering it (the tls_inspector), and returns
// its server name and the bytes read, which the caller passes on before the rest.
func peekSNI(c net.Conn) (string, []byte, error) {
	var rec bytes.Buffer
	var sni string
	c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	defer c.SetReadDeadline(time.Time{})
	err := tls.Server(readOnly{io.TeeReader(c, &rec)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni = h.ServerName
			return nil, errHelloRead
		},
	}).Handshake()
	if !errors.Is(err, errHelloRead) {
		return "", nil, fmt.Errorf("tls_inspector: not a TLS ClientHello: %w", err)
	}
	return sni, rec.Bytes(), nil
}

// readOnly is a net.Conn that reads from r and refuses to write or to be closed through.
type readOnly struct{ r io.Reader }

func (c readOnly) Read(b []byte) (int, error)     { return c.r.Read(b) }
func (readOnly) Write([]byte) (int, error)        { return 0, io.ErrClosedPipe }
func (readOnly) Close() error                     { return nil }
func (readOnly) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (readOnly) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (readOnly) SetDeadline(time.Time) error      { return nil }
func (readOnly) SetReadDeadline(time.Time) error  { return nil }
func (readOnly) SetWriteDeadline(time.Time) error { return nil }
