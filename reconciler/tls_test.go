package reconciler

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshgit/mesh/internal/tlsutil"
)

// testPKI is a CA made with tlsutil in a temporary directory, and certificates it signs.
type testPKI struct {
	t             testing.TB
	dir           string
	caCert, caKey []byte
	caFile        string
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	cert, key, err := tlsutil.NewCA(1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: dir, caCert: cert, caKey: key, caFile: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(p.caFile, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// files writes a certificate for name and returns its certificate and key files.
func (p *testPKI) files(name string, server bool) (certFile, keyFile string) {
	p.t.Helper()
	cert, key, err := tlsutil.NewCert(p.caCert, p.caKey, tlsutil.CertRequest{Server: server, Name: name, Days: 1}, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	if err := tlsutil.WriteFiles(certFile, cert, keyFile, key); err != nil {
		p.t.Fatal(err)
	}
	return certFile, keyFile
}

// server returns the TLS material of a server certificate for name.
func (p *testPKI) server(name string) *tlsutil.Material {
	p.t.Helper()
	c, k := p.files(name, true)
	m, err := tlsutil.Load(c, k, p.caFile)
	if err != nil {
		p.t.Fatal(err)
	}
	return m
}

// keyPair returns a certificate for name with its key.
func (p *testPKI) keyPair(name string, server bool) tls.Certificate {
	p.t.Helper()
	c, k := p.files(name, server)
	pair, err := tls.LoadX509KeyPair(c, k)
	if err != nil {
		p.t.Fatal(err)
	}
	return pair
}

// httpsClient trusts the PKI's CA.
func (p *testPKI) httpsClient(follow bool) *http.Client {
	p.t.Helper()
	pool, err := tlsutil.LoadCAFile(p.caFile)
	if err != nil {
		p.t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// startTLSCluster starts three servers with TLS from pki, joined over HTTPS, serving v0.
func startTLSCluster(t *testing.T, pki *testPKI, repo *testRepo, v0 string) [3]*Server {
	t.Helper()
	var nodes [3]*Server
	for i := range nodes {
		o := nodeOpts{}
		if i > 0 {
			o.join = nodes[0].HTTPAddr()
		}
		cfg := testConfig(t, repo.bare, o)
		cfg.TLS = pki.server("node" + strconv.Itoa(i))
		nodes[i] = startServer(t, cfg)
	}
	for _, n := range nodes {
		if !waitServed(n, v0, 20*time.Second) {
			t.Fatalf("%s serves %q, want %s", n.NodeID(), servedVersion(n), v0)
		}
	}
	return nodes
}

func raftTerm(s *Server) uint64 {
	term, _ := strconv.ParseUint(s.node.raft.Stats()["term"], 10, 64)
	return term
}

// peerTransport is a real Raft client over plain TCP (cfg nil) or TLS with cfg.
func peerTransport(t *testing.T, cfg *tls.Config, cluster string) *raft.NetworkTransport {
	t.Helper()
	var trans *raft.NetworkTransport
	if cfg == nil {
		var err error
		if trans, err = raft.NewTCPTransport("127.0.0.1:0", nil, 1, 3*time.Second, os.Stderr); err != nil {
			t.Fatal(err)
		}
	} else {
		stream, err := newTLSStreamLayer("127.0.0.1:0", nil, cfg, cfg)
		if err != nil {
			t.Fatal(err)
		}
		id := newClusterIdentity(discardLogger()) // a member says which cluster it belongs to
		id.start(cluster, nil)
		trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: &clusterLayer{StreamLayer: stream, id: id}, MaxPool: 1, Timeout: 3 * time.Second})
	}
	t.Cleanup(func() { trans.Close() })
	return trans
}

// A three-server cluster over TLS: Raft over mutual TLS, the HTTP API over HTTPS (joins
// included). A plaintext Raft client, a client with another CA's server certificate and a client
// with the cluster CA's *client* certificate all get their AppendEntries refused, and a
// term far ahead that would have unseated the leader changes nothing; the same request from a
// server certificate of the CA is answered (the frame is well-formed). A server whose Raft port
// speaks plaintext, or one with another CA, cannot join.
func TestTLSCluster(t *testing.T) {
	pki := newTestPKI(t)
	repo := newTestRepo(t)
	repo.commit(meshFiles(0), "v0", false)
	nodes := startTLSCluster(t, pki, repo, versionOf(t, meshFiles(0)))
	li := leaderIndex(t, nodes[:])
	leader, follower := nodes[li], nodes[(li+1)%3]
	if got := len(follower.Status().Servers); got != 3 {
		t.Fatalf("cluster has %d servers, want 3", got)
	}

	t.Run("raft", func(t *testing.T) {
		other := newTestPKI(t)
		wrongCA := other.server("intruder")
		clientCert := pki.keyPair("operator", false)
		pool, _ := tlsutil.LoadCAFile(pki.caFile)
		member := pki.server("node9").PeerClientConfig()
		for _, target := range []*Server{leader, follower} {
			term, index := raftTerm(target), target.node.raft.LastIndex()
			attack := &raft.AppendEntriesRequest{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte("127.0.0.1:1")},
				Term:      term + 100, LeaderCommitIndex: index,
			}
			for name, cfg := range map[string]*tls.Config{
				"plaintext":   nil,
				"another CA":  wrongCA.PeerClientConfig(),
				"client cert": {MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: tlsutil.ServerName, Certificates: []tls.Certificate{clientCert}},
			} {
				var resp raft.AppendEntriesResponse
				err := peerTransport(t, cfg, target.cluster.get()).AppendEntries("x", raft.ServerAddress(target.RaftAddr()), attack, &resp)
				if err == nil {
					t.Errorf("%s: %s answered an AppendEntries: %+v", target.NodeID(), name, resp)
				}
			}
			// A server certificate of the CA gets an answer to the same frame with a stale term.
			stale := *attack
			stale.Term = 0
			var resp raft.AppendEntriesResponse
			if err := peerTransport(t, member, target.cluster.get()).AppendEntries("x", raft.ServerAddress(target.RaftAddr()), &stale, &resp); err != nil {
				t.Errorf("%s: a server certificate of the CA: %v", target.NodeID(), err)
			} else if resp.Success || resp.Term < term {
				t.Errorf("%s: stale AppendEntries answered %+v", target.NodeID(), resp)
			}
			if got := raftTerm(target); got != term {
				t.Errorf("%s: term %d after the attempts, was %d", target.NodeID(), got, term)
			}
		}
		if !leader.IsLeader() {
			t.Errorf("the leader lost leadership")
		}
	})

	t.Run("https", func(t *testing.T) {
		c := &Client{Addr: "https://" + follower.HTTPAddr(), HTTP: pki.httpsClient(true)}
		st, err := c.Status(context.Background())
		if err != nil || st.Node != follower.NodeID() {
			t.Fatalf("status over https: %+v, %v", st, err)
		}
		// Plain HTTP on the HTTPS port gets nothing.
		if _, err := (&Client{Addr: "http://" + follower.HTTPAddr()}).Status(context.Background()); err == nil {
			t.Errorf("plain http status answered")
		}
		// A client that does not trust the CA refuses the server.
		if _, err := (&Client{Addr: "https://" + follower.HTTPAddr()}).Status(context.Background()); !isTLSVerifyError(err) {
			t.Errorf("status without the CA: %v, want a certificate error", err)
		}
		// A follower redirects writes to the leader's https address.
		req, _ := http.NewRequest(http.MethodPost, "https://"+follower.HTTPAddr()+"/v1/reconcile", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := pki.httpsClient(false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := "https://" + leader.HTTPAddr() + "/v1/reconcile"; resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != want {
			t.Errorf("follower answered %d Location %q, want 307 %q", resp.StatusCode, resp.Header.Get("Location"), want)
		}
		// And the client follows it there.
		w := &Client{Addr: "https://" + follower.HTTPAddr(), Token: testToken, HTTP: pki.httpsClient(true)}
		if err := w.Reconcile(context.Background()); err != nil {
			t.Errorf("reconcile through a follower: %v", err)
		}
	})

	t.Run("join", func(t *testing.T) {
		// A Raft port that speaks plaintext is refused before it becomes a voter.
		plain := peerTransport(t, nil, "")
		c := &Client{Addr: "https://" + leader.HTTPAddr(), Token: testToken, HTTP: pki.httpsClient(true)}
		err := c.Join(context.Background(), JoinRequest{ID: "plain", RaftAddress: string(plain.LocalAddr()), HTTPAddress: "127.0.0.1:1"})
		if !errors.Is(err, ErrPeerRefused) {
			t.Errorf("join of a plaintext raft peer: %v, want %v", err, ErrPeerRefused)
		}
		// A server with another CA's material cannot join: it does not trust the cluster.
		cfg := testConfig(t, repo.bare, nodeOpts{join: leader.HTTPAddr()})
		cfg.TLS = newTestPKI(t).server("stranger")
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Open(ctx); err == nil || !isTLSVerifyError(err) {
			t.Errorf("join with another CA: %v, want a certificate error", err)
		}
		s.Close(context.Background())
		// Nor can a plaintext server, whose HTTPS client has no CA to trust the cluster with.
		cfg = testConfig(t, repo.bare, nodeOpts{join: "https://" + leader.HTTPAddr()})
		s, err = New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Open(ctx); err == nil || !isTLSVerifyError(err) {
			t.Errorf("plaintext join: %v, want a certificate error", err)
		}
		s.Close(context.Background())
		if got := len(leader.Status().Servers); got != 3 {
			t.Errorf("cluster has %d servers after the refused joins, want 3: %+v", got, leader.Status().Servers)
		}
	})
}
