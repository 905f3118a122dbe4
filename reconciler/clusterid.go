package reconciler

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A cluster has an identity: a random id made when its first server bootstraps, kept in every
// server's raft.db (beside Raft's term) and replicated in the FSM. Every Raft connection starts
// with a preamble in which both ends say which cluster they belong to; a connection between two
// clusters is refused before Raft sees a byte of it. So a server whose data directory was wiped,
// and which bootstrapped a new cluster, is never absorbed by its old cluster (whose higher term
// would otherwise overwrite its log under a state machine that already applied its own entries),
// and a server never joins a cluster other than its own.
//
// A server without an id (one joining with an empty data directory, or one upgraded from a
// version without ids) accepts the first cluster that contacts it and keeps its id. A server of
// a version without ids (no preamble at all) is accepted as one without an id, so that a cluster
// can be upgraded one server at a time.
//
// The check wraps any raft.StreamLayer (plain TCP or TLS), so it composes with the transport.

// clusterIDKey is the key of the cluster id in raft.db's stable store.
var clusterIDKey = []byte("MeshClusterID")

const (
	clusterMagic    = "MESH-RAFT-CLUSTER/1"
	clusterLineMax  = 128
	handshakeWindow = 10 * time.Second
)

// ClusterConflict records a Raft peer of another cluster.
type ClusterConflict struct {
	Peer        string    `json:"peer"`        // its address
	PeerCluster string    `json:"peerCluster"` // its cluster id
	Incoming    bool      `json:"incoming"`    // it connected to this server (it counts this server as a member)
	Time        time.Time `json:"time"`
}

// clusterIdentity is this server's cluster id, shared by the stream layer and the server.
type clusterIdentity struct {
	mu      sync.Mutex
	id      string
	ready   chan struct{} // closed once the id is known (read from raft.db, or "" for a joiner)
	persist func(string) error
	log     *slog.Logger

	conflict atomic.Pointer[ClusterConflict]
	lastLog  atomic.Int64 // unix nanos of the last conflict logged (rate limit)
}

func newClusterIdentity(log *slog.Logger) *clusterIdentity {
	return &clusterIdentity{ready: make(chan struct{}), log: log}
}

// start sets the id read from the data directory ("" if none) and lets connections through.
func (c *clusterIdentity) start(id string, persist func(string) error) {
	c.mu.Lock()
	c.id, c.persist = id, persist
	c.mu.Unlock()
	close(c.ready)
}

func (c *clusterIdentity) get() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id
}

// adopt takes id as this server's cluster id if it has none, and reports whether id is (now)
// this server's.
func (c *clusterIdentity) adopt(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == "" || c.id == id {
		return true
	}
	if c.id != "" {
		return false
	}
	if c.persist != nil {
		if err := c.persist(id); err != nil {
			c.log.Error("store the cluster id", "err", err)
			return false
		}
	}
	c.id = id
	c.log.Info("joined cluster", "cluster", id)
	return true
}

func (c *clusterIdentity) recordConflict(peer, peerCluster string, incoming bool) {
	c.conflict.Store(&ClusterConflict{Peer: peer, PeerCluster: peerCluster, Incoming: incoming, Time: time.Now().UTC()})
	now := time.Now().UnixNano()
	if last := c.lastLog.Load(); now-last < int64(10*time.Second) || !c.lastLog.CompareAndSwap(last, now) {
		return
	}
	c.log.Error("refused a raft connection with a server of another cluster: a server's data directory was probably wiped and it bootstrapped a new cluster; "+recovery,
		"peer", peer, "peer_cluster", peerCluster, "cluster", c.get(), "incoming", incoming)
}

func newClusterID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// clusterLayer wraps a raft.StreamLayer with the cluster preamble.
type clusterLayer struct {
	raft.StreamLayer
	id *clusterIdentity
}

// Dial connects and exchanges the preamble: this side's id, then the other's verdict and id.
func (l *clusterLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	<-l.id.ready
	conn, err := l.StreamLayer.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = handshakeWindow
	}
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "%s %s\n", clusterMagic, l.id.get()); err != nil {
		conn.Close()
		return nil, err
	}
	line, err := readLine(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("raft handshake with %s: %w", addr, err)
	}
	verdict, peer, _ := strings.Cut(line, " ")
	if verdict != "OK" || !l.id.adopt(peer) {
		conn.Close()
		l.id.recordConflict(string(addr), peer, false)
		return nil, fmt.Errorf("%w: %s belongs to cluster %s, this server to %s", ErrClusterMismatch, addr, peer, l.id.get())
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// Accept returns connections that check the preamble on their first read, in the transport's
// goroutine for that connection, so a slow peer holds up nobody else.
func (l *clusterLayer) Accept() (net.Conn, error) {
	conn, err := l.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return &clusterConn{Conn: conn, id: l.id}, nil
}

type clusterConn struct {
	net.Conn
	id      *clusterIdentity
	once    sync.Once
	err     error
	pending []byte // read while looking for the preamble, not part of it
}

func (c *clusterConn) Read(p []byte) (int, error) {
	c.once.Do(func() { c.err = c.handshake() })
	if c.err != nil {
		return 0, c.err
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *clusterConn) handshake() error {
	c.Conn.SetDeadline(time.Now().Add(handshakeWindow))
	defer c.Conn.SetDeadline(time.Time{})
	select {
	case <-c.id.ready:
	case <-time.After(handshakeWindow):
		return errors.New("raft handshake: this server is not ready")
	}
	// A server of a version without cluster ids sends Raft's first byte (an RPC type, 0 to 3)
	// at once: it is let through as a server without an id, so that a cluster upgrades one
	// server at a time.
	first := make([]byte, 1)
	if _, err := io.ReadFull(c.Conn, first); err != nil {
		c.Conn.Close()
		if errors.Is(err, io.EOF) {
			return io.EOF // a probe (the leader checking a joining server's Raft port)
		}
		return fmt.Errorf("raft handshake: %w", err)
	}
	if first[0] != clusterMagic[0] {
		c.pending = first
		return nil
	}
	rest, err := readLine(c.Conn)
	line := string(first) + rest
	if errors.Is(err, io.EOF) {
		c.Conn.Close()
		return io.EOF // a probe (the leader checking a joining server's Raft port): nothing to log
	}
	if err != nil {
		c.Conn.Close()
		return fmt.Errorf("raft handshake: %w", err)
	}
	magic, peer, _ := strings.Cut(line, " ")
	if magic != clusterMagic {
		c.Conn.Close()
		return fmt.Errorf("raft handshake from %s: not a mesh server", c.RemoteAddr())
	}
	if !c.id.adopt(peer) {
		fmt.Fprintf(c.Conn, "NO %s\n", c.id.get())
		c.Conn.Close()
		c.id.recordConflict(c.RemoteAddr().String(), peer, true)
		return fmt.Errorf("%w: %s belongs to cluster %s", ErrClusterMismatch, c.RemoteAddr(), peer)
	}
	if _, err := fmt.Fprintf(c.Conn, "OK %s\n", c.id.get()); err != nil {
		c.Conn.Close()
		return err
	}
	return nil
}

// readLine reads one preamble line byte by byte (never past it: the rest belongs to Raft).
func readLine(conn net.Conn) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < clusterLineMax {
		if _, err := conn.Read(one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return "", errors.New("raft handshake: preamble too long")
}

// tcpLayer is a plain TCP raft.StreamLayer.
type tcpLayer struct {
	ln  net.Listener
	adv net.Addr
}

func newTCPLayer(bind string, adv net.Addr) (*tcpLayer, error) {
	ln, err := listenRaft(bind, adv)
	if err != nil {
		return nil, err
	}
	return &tcpLayer{ln: ln, adv: adv}, nil
}

// advertiseAddr parses --raft-advertise ("" is nil: the listening address).
func advertiseAddr(advertise string) (net.Addr, error) {
	if advertise == "" {
		return nil, nil
	}
	a, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("raft advertise address %q: %w", advertise, err)
	}
	if a.IP == nil || a.IP.IsUnspecified() || a.Port == 0 {
		return nil, fmt.Errorf("raft advertise address %q: not an address other servers can reach", advertise)
	}
	return a, nil
}

// listenRaft listens on bind; without an advertise address, bind must be one other servers
// can dial.
func listenRaft(bind string, adv net.Addr) (net.Listener, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen on %s: %w", bind, err)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); adv == nil && (!ok || a.IP.IsUnspecified()) {
		ln.Close()
		return nil, fmt.Errorf("raft listens on %s, which other servers cannot dial: set --raft-advertise", bind)
	}
	return ln, nil
}

func (t *tcpLayer) Accept() (net.Conn, error) { return t.ln.Accept() }
func (t *tcpLayer) Close() error              { return t.ln.Close() }
func (t *tcpLayer) Addr() net.Addr {
	if t.adv != nil {
		return t.adv
	}
	return t.ln.Addr()
}

func (t *tcpLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return (&net.Dialer{Timeout: timeout}).Dial("tcp", string(addr))
}
