package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Material is a server's TLS material: its server certificate and key, and the cluster's CA.
type Material struct {
	cert tls.Certificate
	pool *x509.CertPool
}

// Load reads a server's certificate, key and CA files (all three, or none: nil, nil). The
// certificate must be a server certificate (IsServer) that chains to the CA.
func Load(certFile, keyFile, caFile string) (*Material, error) {
	if certFile == "" && keyFile == "" && caFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, ErrIncomplete
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %s and %s: %w", certFile, keyFile, err)
	}
	pool, err := LoadCAFile(caFile)
	if err != nil {
		return nil, err
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: %s: %w", certFile, err)
		}
	}
	if !IsServer(leaf) {
		return nil, fmt.Errorf("tls: %s: %w (make one with mesh tls cert create --server)", certFile, ErrNotServer)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("tls: %s is not signed by the CA of %s: %w", certFile, caFile, err)
	}
	return &Material{cert: cert, pool: pool}, nil
}

// LoadCAFile reads a PEM file of CA certificates into a pool.
func LoadCAFile(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: CA file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// ServerConfig is the configuration of the HTTP API: this server's certificate. Clients are
// authenticated by token, not by certificate.
func (m *Material) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{m.cert}}
}

// ClientConfig is the configuration of this server's HTTP client (join, registration): the other
// end must present a server certificate of the CA. It is checked against ServerName, not the
// address dialled, so servers reach each other at any address without listing it in their
// certificates (clients, which verify the address, need --additional-ipaddress).
func (m *Material) ClientConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: m.pool, ServerName: ServerName, VerifyPeerCertificate: verifyServerPeer}
}

// PeerServerConfig is the configuration of the Raft listener: the peer must present a server
// certificate of the CA.
func (m *Material) PeerServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS12,
		Certificates:          []tls.Certificate{m.cert},
		ClientAuth:            tls.RequireAndVerifyClientCert,
		ClientCAs:             m.pool,
		VerifyPeerCertificate: verifyServerPeer,
	}
}

// PeerClientConfig is the configuration of Raft's outgoing connections: this server presents its
// certificate, and the peer must present a server certificate of the CA (Go checks ServerName
// and the server usage; verifyServerPeer says so again).
func (m *Material) PeerClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS12,
		Certificates:          []tls.Certificate{m.cert},
		RootCAs:               m.pool,
		ServerName:            ServerName,
		VerifyPeerCertificate: verifyServerPeer,
	}
}

// verifyServerPeer runs after Go has verified the chain: the leaf must be a server certificate.
func verifyServerPeer(_ [][]byte, chains [][]*x509.Certificate) error {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return errors.New("tls: no verified peer certificate")
	}
	if leaf := chains[0][0]; !IsServer(leaf) {
		return fmt.Errorf("tls: peer %q: %w", leaf.Subject.CommonName, ErrNotServer)
	}
	return nil
}
