package reconciler

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The preamble: a peer of the same cluster gets through, one of another cluster is refused on
// both ends, a peer without an id is let through and a server of an older version (no
// preamble, Raft's bytes at once) too, with its bytes intact.
func TestClusterLayer(t *testing.T) {
	listen := func(id string) (*clusterLayer, *clusterIdentity) {
		tcp, err := newTCPLayer("127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		ident := newClusterIdentity(discardLogger())
		ident.start(id, nil)
		l := &clusterLayer{StreamLayer: tcp, id: ident}
		t.Cleanup(func() { l.Close() })
		return l, ident
	}
	server, serverID := listen("cluster-a")
	// read accepts one connection and returns what its first read gives.
	read := func() (string, error) {
		c, err := server.Accept()
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 16)
		n, err := c.Read(b)
		return string(b[:n]), err
	}
	type result struct {
		got string
		err error
	}
	accept := func() chan result {
		ch := make(chan result, 1)
		go func() { got, err := read(); ch <- result{got, err} }()
		return ch
	}
	addr := server.Addr().String()

	for _, c := range []struct{ id, want string }{{"cluster-a", "same cluster"}, {"", "no id"}} {
		ch := accept()
		client, _ := listen(c.id)
		conn, err := client.Dial(raft.ServerAddress(addr), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: dial: %v", c.want, err)
		}
		conn.Write([]byte("\x00raft"))
		if r := <-ch; r.err != nil || r.got != "\x00raft" {
			t.Errorf("%s: the server read %q, %v", c.want, r.got, r.err)
		}
		conn.Close()
	}

	ch := accept()
	other, otherID := listen("cluster-b")
	if _, err := other.Dial(raft.ServerAddress(addr), 5*time.Second); !errors.Is(err, ErrClusterMismatch) {
		t.Errorf("dial from another cluster: %v, want ErrClusterMismatch", err)
	}
	if r := <-ch; !errors.Is(r.err, ErrClusterMismatch) {
		t.Errorf("the server accepted another cluster: %q, %v", r.got, r.err)
	}
	if c := serverID.conflict.Load(); c == nil || c.PeerCluster != "cluster-b" || !c.Incoming {
		t.Errorf("server's conflict record %+v", c)
	}
	if c := otherID.conflict.Load(); c == nil || c.PeerCluster != "cluster-a" || c.Incoming {
		t.Errorf("dialer's conflict record %+v", c)
	}

	ch = accept()
	legacy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	legacy.Write([]byte("\x01vote"))
	if r := <-ch; r.err != nil || r.got != "\x01" && r.got != "\x01vote" {
		t.Errorf("a server without the preamble: the server read %q, %v", r.got, r.err)
	}
	legacy.Close()

	// A probe that connects and closes is an EOF, nothing to log.
	ch = accept()
	probe, _ := net.Dial("tcp", addr)
	probe.Close()
	if r := <-ch; !errors.Is(r.err, io.EOF) {
		t.Errorf("a probe: %v, want EOF", r.err)
	}
}
