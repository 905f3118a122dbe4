package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	mesh "github.com/meshgit/mesh"
)

// Authenticated xDS (mesh serve --xds-tls).
//
// The gRPC server's transport credentials (ServerCredentials) require a client certificate that
// chains to the mesh CA's current trust bundle, asked for at every handshake so that a rotation
// takes effect at once. A Server made with WithPeerAuthentication then serves a stream only if
// the verified leaf has exactly one URI SAN, a SPIFFE ID
// spiffe://<trustDomain>/ns/default/dc/<dc>/svc/<service> of the served mesh's trust domain, whose
// service equals the stream's node.cluster: a proxy can only ever receive its own service's
// configuration. Anything else ends the stream with PermissionDenied and a log line that names
// the node and the presented identity (certificates are public; no key is ever in this path).

// ServerIdentity is the service name of the mesh servers' own xDS serving certificate: a leaf
// of the mesh CA whose SPIFFE ID is spiffe://<trustDomain>/ns/default/dc/<dc>/svc/mesh-server.
// Clients check it (ClientCredentials); a proxy presenting it is refused (authorizePeer). The
// name is reserved (mesh.ServerService): the compiler rejects a service of that name and the
// CA's API never signs it.
const ServerIdentity = mesh.ServerService

// ServerCredentials returns the TLS transport credentials of an authenticated xDS gRPC server.
// roots returns the trust bundle (the CA's current roots; nil refuses every handshake) and cert
// the server's own certificate (a leaf of the mesh CA for ServerIdentity, with its key, which
// the server made itself); both are called at every handshake, so a rotated bundle or a renewed
// certificate is used by the next connection without restarting anything. Clients must present
// a certificate that chains to roots and is valid for client authentication; TLS 1.2 at least.
func ServerCredentials(roots func() *x509.CertPool, cert func() (*tls.Certificate, error)) credentials.TransportCredentials {
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert,
		NextProtos: []string{"h2"},
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool := roots()
		if pool == nil {
			return nil, errors.New("xds: no trust bundle yet")
		}
		c, err := cert()
		if err != nil {
			return nil, fmt.Errorf("xds: serving certificate: %w", err)
		}
		if c == nil {
			return nil, errors.New("xds: no serving certificate yet")
		}
		return &tls.Config{
			MinVersion:   tls.VersionTLS12,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			Certificates: []tls.Certificate{*c},
			NextProtos:   []string{"h2"},
		}, nil
	}
	return credentials.NewTLS(base)
}

// ClientCredentials returns TLS transport credentials for a client of an authenticated xDS
// server: it presents cert (the workload's leaf, read at every handshake) and accepts a server
// whose certificate chains to roots and whose SPIFFE service is ServerIdentity in trustDomain.
// SPIFFE certificates carry no DNS names, so the usual host name check is replaced by that one.
func ClientCredentials(trustDomain string, roots func() *x509.CertPool, cert func() (*tls.Certificate, error)) credentials.TransportCredentials {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		// The chain and the SPIFFE ID are verified below, against the live roots.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert()
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := verifyChain(raw, roots(), x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			id, err := ParseSPIFFEID(leaf)
			if err != nil {
				return err
			}
			if id.TrustDomain != trustDomain || id.Service != ServerIdentity {
				return fmt.Errorf("xds: server identity %s, want service %q of trust domain %q", id, ServerIdentity, trustDomain)
			}
			return nil
		},
	}
	return credentials.NewTLS(cfg)
}

func verifyChain(raw [][]byte, roots *x509.CertPool, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(raw) == 0 {
		return nil, errors.New("xds: peer sent no certificate")
	}
	if roots == nil {
		return nil, errors.New("xds: no trust bundle")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("xds: peer certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, fmt.Errorf("xds: peer certificate: %w", err)
	}
	return certs[0], nil
}

// SPIFFEID is a parsed mesh workload identity.
type SPIFFEID struct {
	TrustDomain, Datacenter, Service string
}

func (id SPIFFEID) String() string { return mesh.SpiffeID(id.TrustDomain, id.Datacenter, id.Service) }

// ParseSPIFFEID returns the identity of a mesh leaf certificate: its one URI SAN must be
// spiffe://<trustDomain>/ns/default/dc/<dc>/svc/<service>.
func ParseSPIFFEID(c *x509.Certificate) (SPIFFEID, error) {
	if len(c.URIs) != 1 {
		return SPIFFEID{}, fmt.Errorf("certificate has %d URI SANs, want exactly one SPIFFE ID", len(c.URIs))
	}
	return parseSPIFFEURI(c.URIs[0])
}

func parseSPIFFEURI(u *url.URL) (SPIFFEID, error) {
	if u.Scheme != "spiffe" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" {
		return SPIFFEID{}, fmt.Errorf("URI SAN %q is not a SPIFFE ID", u.String())
	}
	parts := strings.Split(u.Path, "/")
	// "", "ns", "default", "dc", <dc>, "svc", <service>
	if len(parts) != 7 || parts[0] != "" || parts[1] != "ns" || parts[2] != "default" || parts[3] != "dc" || parts[5] != "svc" ||
		parts[4] == "" || parts[6] == "" {
		return SPIFFEID{}, fmt.Errorf("SPIFFE ID %q is not spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>", u.String())
	}
	return SPIFFEID{TrustDomain: u.Host, Datacenter: parts[4], Service: parts[6]}, nil
}

// Option configures a Server.
type Option func(*Server)

// WithPeerAuthentication makes the server serve a stream only to a peer whose verified TLS
// client certificate names the stream's service (see ServerCredentials, which the gRPC server
// must use). Without it, xDS is unauthenticated (loopback development).
func WithPeerAuthentication() Option {
	return func(s *Server) { s.authPeers = true }
}

// peerIdentity is who the TLS layer says the peer of a stream is.
type peerIdentity struct {
	id  SPIFFEID
	err error // why the peer has no usable identity
}

// peerIdentityFrom reads the verified leaf of ctx's peer. Only chains the handshake verified
// count: a certificate that was merely presented is no identity.
func peerIdentityFrom(ctx context.Context) peerIdentity {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return peerIdentity{err: errors.New("the connection is not authenticated (no TLS)")}
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return peerIdentity{err: fmt.Errorf("the connection is not authenticated (%s)", p.AuthInfo.AuthType())}
	}
	if len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return peerIdentity{err: errors.New("the peer presented no verified client certificate")}
	}
	id, err := ParseSPIFFEID(ti.State.VerifiedChains[0][0])
	return peerIdentity{id: id, err: err}
}

// authorizePeer checks that a stream's peer may receive the configuration of p, for node n.
// Called with s.mu held.
func (s *Server) authorizePeer(pi *peerIdentity, n *corev3.Node, p Proxy, streamID int64) error {
	if !s.authPeers {
		return nil
	}
	var err error
	switch {
	case pi == nil:
		err = errors.New("the stream's peer is unknown")
	case pi.err != nil:
		err = pi.err
	case pi.id.Service == ServerIdentity:
		err = fmt.Errorf("identity %s is the servers' own, never a proxy's", pi.id)
	case s.snap != nil && pi.id.TrustDomain != s.snap.Mesh.TrustDomain:
		err = fmt.Errorf("identity %s is not of trust domain %q", pi.id, s.snap.Mesh.TrustDomain)
	case pi.id.Service != p.Service:
		err = fmt.Errorf("identity %s is service %q, but node.cluster is %q", pi.id, pi.id.Service, p.Service)
	}
	if err == nil {
		return nil
	}
	s.log.Warn("refusing xDS stream: peer identity does not match the node", "stream", streamID,
		"node", n.GetId(), "service", p.Service, "err", err)
	s.metrics.rejected.WithLabelValues("identity").Inc()
	return status.Error(codes.PermissionDenied, fmt.Sprintf("node %q: %v", n.GetId(), err))
}

// ServingCertificate is the xDS server's own certificate: a leaf of the mesh CA for
// ServerIdentity whose key this process makes and keeps in memory (it never leaves it, like
// a workload's). Certificate is the cert function of ServerCredentials: it asks sign for a
// leaf on first use and again once 75% of the leaf's life has passed, and keeps serving the
// current leaf while signing fails and it is still valid. It is safe for concurrent use.
type ServingCertificate struct {
	// Sign turns a PEM certificate request into the PEM leaf and chain for ServerIdentity:
	// in mesh serve, func(csr) { l, err := ca.Sign(xds.ServerIdentity, csr); return l.CertPEM }.
	Sign func(csrPEM []byte) (certPEM []byte, err error)
	Now  func() time.Time // default time.Now

	mu      sync.Mutex
	key     *ecdsa.PrivateKey
	cert    *tls.Certificate
	renewAt time.Time
}

// Certificate returns the current serving certificate, signing a new one when it is due.
func (c *ServingCertificate) Certificate() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	if c.cert != nil && now.Before(c.renewAt) {
		return c.cert, nil
	}
	cert, err := c.issue()
	if err != nil {
		if c.cert != nil && now.Before(c.cert.Leaf.NotAfter) {
			return c.cert, nil // still valid: retry at the next handshake
		}
		return nil, err
	}
	c.cert = cert
	c.renewAt = cert.Leaf.NotBefore.Add(cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore) * 3 / 4)
	return cert, nil
}

func (c *ServingCertificate) issue() (*tls.Certificate, error) {
	if c.Sign == nil {
		return nil, errors.New("xds: serving certificate: no signer")
	}
	if c.key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		c.key = k
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, c.key)
	if err != nil {
		return nil, err
	}
	certPEM, err := c.Sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		return nil, fmt.Errorf("xds: serving certificate: %w", err)
	}
	out := &tls.Certificate{PrivateKey: c.key}
	for rest := certPEM; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			out.Certificate = append(out.Certificate, blk.Bytes)
		}
	}
	if len(out.Certificate) == 0 {
		return nil, errors.New("xds: serving certificate: the signer returned no certificate")
	}
	leaf, err := x509.ParseCertificate(out.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("xds: serving certificate: %w", err)
	}
	if !c.key.PublicKey.Equal(leaf.PublicKey) {
		return nil, errors.New("xds: serving certificate: the signed certificate is not for this key")
	}
	if id, err := ParseSPIFFEID(leaf); err != nil || id.Service != ServerIdentity {
		return nil, fmt.Errorf("xds: serving certificate: identity %v (%v), want service %q", id, err, ServerIdentity)
	}
	out.Leaf = leaf
	return out, nil
}
