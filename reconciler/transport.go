package reconciler

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// handshakeTimeout bounds a TLS handshake on the Raft port, so a peer that connects and says
// nothing holds no goroutine for long.
const handshakeTimeout = 10 * time.Second

// tlsStreamLayer is Raft's transport over mutual TLS: both ends present a server certificate of
// the cluster's CA (tlsutil.Material's peer configurations), so a plaintext client, a client
// certificate or another CA's certificate never reaches Raft's decoder.
type tlsStreamLayer struct {
	ln     net.Listener
	adv    net.Addr
	server *tls.Config
	client *tls.Config
}

// newTLSStreamLayer listens on bind; adv is the address other servers dial (nil: the listener's,
// which must then be a specific address).
func newTLSStreamLayer(bind string, adv net.Addr, server, client *tls.Config) (*tlsStreamLayer, error) {
	ln, err := listenRaft(bind, adv)
	if err != nil {
		return nil, err
	}
	return &tlsStreamLayer{ln: ln, adv: adv, server: server, client: client}, nil
}

// Accept waits for the next connection; its TLS handshake runs (bounded) on its first read, in
// the goroutine Raft gives each connection, so a slow peer never holds up the others.
func (l *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, err
	}
	return &serverConn{Conn: tls.Server(c, l.server)}, nil
}

func (l *tlsStreamLayer) Close() error { return l.ln.Close() }

func (l *tlsStreamLayer) Addr() net.Addr {
	if l.adv != nil {
		return l.adv
	}
	return l.ln.Addr()
}

// Dial connects to a peer and completes the handshake within timeout.
func (l *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: l.client}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", string(addr))
}

// serverConn is an accepted TLS connection whose handshake is bounded by handshakeTimeout.
type serverConn struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *serverConn) Read(p []byte) (int, error) {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		if c.err = c.Conn.HandshakeContext(ctx); c.err != nil {
			c.Conn.Close()
		}
	})
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// probePeer checks that a server at raftAddr answers on its Raft port with a server certificate
// of the cluster's CA, before the leader makes it a voter.
func (n *raftNode) probePeer(raftAddr string) error {
	if n.stream == nil {
		return nil
	}
	c, err := n.stream.Dial(raft.ServerAddress(raftAddr), 5*time.Second)
	if err != nil {
		return fmt.Errorf("raft over TLS to %s: %w", raftAddr, err)
	}
	return c.Close()
}

// newTransport is Raft's network transport: over mutual TLS when the server has TLS material,
// else plain TCP; either way behind the cluster-id preamble (clusterLayer). The TLS layer is
// returned for probePeer.
func newTransport(s *Server, log hclog.Logger) (*raft.NetworkTransport, *tlsStreamLayer, error) {
	adv, err := advertiseAddr(s.cfg.RaftAdvertise)
	if err != nil {
		return nil, nil, err
	}
	var inner raft.StreamLayer
	var tlsLayer *tlsStreamLayer
	if s.cfg.TLS == nil {
		if inner, err = newTCPLayer(s.cfg.RaftAddr, adv); err != nil {
			return nil, nil, err
		}
	} else {
		if tlsLayer, err = newTLSStreamLayer(s.cfg.RaftAddr, adv, s.cfg.TLS.PeerServerConfig(), s.cfg.TLS.PeerClientConfig()); err != nil {
			return nil, nil, err
		}
		inner = tlsLayer
	}
	t := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: &clusterLayer{StreamLayer: inner, id: s.cluster}, MaxPool: 3, Timeout: 10 * time.Second, Logger: log})
	return t, tlsLayer, nil
}
