package reconciler

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
)

var twoDCMesh = map[string]string{"mesh/mesh.cue": `package mesh

mesh: {name: "test", trustDomain: "test.mesh", datacenter: "dc1", datacenters: ["dc1", "dc2"], meshGateway: mode: "local"}
services: api: {protocol: "tcp", port: 9090, endpoints: [{address: "127.0.0.1", port: 21000, datacenter: "dc2"}]}
services: web: {protocol: "tcp", port: 8080, upstreams: api: localPort: 9191}
intentions: api: web: action: "allow"
`}

// TestTwoDatacentersOneRepository: two clusters (one server each, each its own Raft and catalog)
// follow one repository; the dc2 one serves the same version from dc2's point of view (chains
// resolved there), and a mesh gateway registered in its catalog is a dc2 gateway there only.
func TestTwoDatacentersOneRepository(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(twoDCMesh, "two datacenters", false)
	cfg1 := testConfig(t, repo.bare, nodeOpts{})
	x1, _ := attachXDS(t, &cfg1)
	cfg2 := testConfig(t, repo.bare, nodeOpts{})
	cfg2.Datacenter = "dc2"
	x2, _ := attachXDS(t, &cfg2)
	s1, s2 := startServer(t, cfg1), startServer(t, cfg2)
	waitFor(t, 10*time.Second, "both datacenters serve", func() bool {
		return x1.Snapshot() != nil && x2.Snapshot() != nil && s1.IsLeader() && s2.IsLeader()
	})
	a, b := x1.Snapshot(), x2.Snapshot()
	if a.Version != b.Version || a.Mesh.Datacenter != "dc1" || b.Mesh.Datacenter != "dc2" {
		t.Fatalf("dc1 serves %s as %s, dc2 serves %s as %s", a.Version, a.Mesh.Datacenter, b.Version, b.Mesh.Datacenter)
	}
	chain := b.UpstreamChain(b.Services["web"].Upstreams["api"])
	if tgt := chain.Targets[chain.Routes[0].Splits[0].Target]; tgt.Datacenter != "dc2" {
		t.Fatalf("dc2 resolves web's upstream api in %s", tgt.Datacenter)
	}

	c := consulClient(t, s2.HTTPAddr(), testToken)
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{Kind: consul.ServiceKindMeshGateway, ID: "gw-1", Name: "gateway",
		Address: "127.0.0.1", Port: 8443, TaggedAddresses: map[string]consul.ServiceAddress{
			"lan": {Address: "127.0.0.1", Port: 8443}, "wan": {Address: "127.0.0.2", Port: 443}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "dc2's gateway in dc2's xDS", func() bool {
		g := x2.Snapshot().MeshGateways["dc2"]
		return len(g) == 1 && g[0].WANAddress == "127.0.0.2" && g[0].WANPort == 443
	})
	if g := x1.Snapshot().MeshGateways; len(g) != 0 {
		t.Fatalf("dc1 knows gateways %v without federation", g)
	}
	self, err := c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	if dc := self["Config"]["Datacenter"]; dc != "dc2" {
		t.Fatalf("dc2's agent says datacenter %v", dc)
	}
	waitFor(t, 10*time.Second, "dc2's CA", func() bool { return s2.ca.State() != nil })
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := s2.ca.Sign("web", csr)
	if err != nil {
		t.Fatal(err)
	}
	if want := mesh.SpiffeID("test.mesh", "dc2", "web"); leaf.SPIFFEID != want {
		t.Fatalf("dc2's CA signed %s, want %s", leaf.SPIFFEID, want)
	}
}

// TestFederation: two clusters federated both ways: a gateway registered in dc2 reaches dc1's
// proxies (its WAN address) through a blocking query, with dc2's healthy-instance counts in
// dc1's status; when dc2 goes away dc1 keeps its last view and says the peer is failing.
func TestFederation(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(twoDCMesh, "two datacenters", false)
	ln1, ln2 := freeAddr(t), freeAddr(t)
	cfg1 := testConfig(t, repo.bare, nodeOpts{httpAddr: ln1})
	cfg1.Federate = map[string]string{"dc2": "http://" + ln2}
	x1, _ := attachXDS(t, &cfg1)
	cfg2 := testConfig(t, repo.bare, nodeOpts{httpAddr: ln2})
	cfg2.Datacenter, cfg2.Federate = "dc2", map[string]string{"dc1": "http://" + ln1}
	attachXDS(t, &cfg2)
	s1, s2 := startServer(t, cfg1), startServer(t, cfg2)
	waitFor(t, 10*time.Second, "both serve", func() bool { return s1.Served() != nil && s2.Served() != nil && s2.IsLeader() })

	c := consulClient(t, s2.HTTPAddr(), testToken)
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{Kind: consul.ServiceKindMeshGateway, ID: "gw-1", Name: "gateway",
		Address: "127.0.0.1", Port: 8443, TaggedAddresses: map[string]consul.ServiceAddress{"wan": {Address: "127.0.0.2", Port: 443}}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 5*time.Second, "dc2's gateway in dc1's xDS", func() bool {
		g := x1.Snapshot().MeshGateways["dc2"]
		return len(g) == 1 && g[0].WANAddress == "127.0.0.2"
	})
	t.Logf("dc2's gateway reached dc1's xDS in %v", time.Since(start).Round(time.Millisecond))
	waitFor(t, 5*time.Second, "dc1's status of dc2", func() bool {
		f := s1.Status().Federation
		return len(f) == 1 && f[0].State == PeerConnected && f[0].Healthy["api"] == 1 && f[0].Gateways == 1
	})
	waitFor(t, 5*time.Second, "dc2's status of dc1", func() bool {
		f := s2.Status().Federation
		return len(f) == 1 && f[0].Datacenter == "dc1" && f[0].State == PeerConnected
	})

	// Each CA hands out the other's roots too: workloads of the two datacenters trust each other.
	waitFor(t, 10*time.Second, "cross-trusted roots", func() bool {
		b1, err1 := s1.ca.Bundle()
		b2, err2 := s2.ca.Bundle()
		r1, r2 := s1.ca.LocalRootsPEM(), s2.ca.LocalRootsPEM()
		return err1 == nil && err2 == nil && r1 != "" && r2 != "" && r1 != r2 &&
			strings.Contains(b1.BundlePEM, r2) && strings.Contains(b2.BundlePEM, r1)
	})

	// ?dc= forwards catalog and health reads to the datacenter named, as Consul does.
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-2", Name: "api", Address: "127.0.0.1", Port: 21001}); err != nil {
		t.Fatal(err)
	}
	c1 := consulClient(t, s1.HTTPAddr(), testToken)
	waitFor(t, 5*time.Second, "dc2's api through dc1 with ?dc=dc2", func() bool {
		es, _, err := c1.Health().Service("api", "", false, &consul.QueryOptions{Datacenter: "dc2"})
		return err == nil && len(es) == 1 && es[0].Service.ID == "api-2" && es[0].Node.Datacenter == "dc2"
	})
	if es, _, err := c1.Health().Service("api", "", false, nil); err != nil || len(es) != 0 {
		t.Fatalf("dc1's own api instances: %v, %v", es, err)
	}
	if _, _, err := c1.Health().Service("api", "", false, &consul.QueryOptions{Datacenter: "dc9"}); err == nil || !strings.Contains(err.Error(), "No path to datacenter") {
		t.Fatalf("?dc=dc9: %v", err)
	}

	s2.Close(context.Background())
	waitFor(t, 10*time.Second, "dc1 sees dc2 failing", func() bool {
		f := s1.Status().Federation
		return len(f) == 1 && f[0].State == PeerFailing
	})
	if g := x1.Snapshot().MeshGateways["dc2"]; len(g) != 1 {
		t.Fatalf("dc1 forgot dc2's gateways when the link broke: %v", g)
	}
	if s1.Served() == nil || s1.Status().PublishError != "" {
		t.Fatal("dc1 stopped serving")
	}
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
