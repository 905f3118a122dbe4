package reconciler

import (
	"context"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	consul "github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshgit/mesh/internal/testutil"
)

// failoverDCMesh: web in dc1 calls api, whose only Git endpoint is in dc1 and whose resolver
// fails over to dc2 through the mesh gateways (mode local: dc1's gateway). dc2's instances of
// api come from dc2's catalog.
var failoverDCMesh = map[string]string{"mesh/mesh.cue": `package mesh

mesh: {name: "test", trustDomain: "test.mesh", datacenter: "dc1", datacenters: ["dc1", "dc2"], meshGateway: mode: "local"}
services: api: {protocol: "tcp", port: 9090, endpoints: [{address: "127.0.0.1", port: 21000, datacenter: "dc1"}]}
services: web: {protocol: "tcp", port: 8080, upstreams: api: localPort: 9191}
resolvers: api: failover: "*": datacenters: ["dc2"]
intentions: api: web: action: "allow"
`}

// prioStream is an Envoy-shaped ADS stream of a sidecar of service, subscribed to CDS and EDS,
// ACKing everything, recording for one cluster (by its name's prefix) the priorities and
// endpoints of the last EDS it ACKed, and when.
type prioStream struct {
	prefix string
	mu     sync.Mutex
	acks   int
	prios  int // priorities (localities) of the cluster in the last ACKed EDS
	eps    int // its endpoints, all priorities
	at     time.Time
	wake   chan struct{} // closed and replaced at each ACK of an EDS
}

// watchPriorities opens the stream for node id of service through the xDS server at addr.
func watchPriorities(t testing.TB, addr, id, service, prefix string) *prioStream {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Close() })
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: id, Cluster: service, UserAgentName: "envoy"}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType} {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}
	p := &prioStream{prefix: prefix, wake: make(chan struct{})}
	go p.recv(st)
	return p
}

func (p *prioStream) recv(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient) {
	for {
		r, err := st.Recv()
		if err != nil {
			return
		}
		prios, eps, found := 0, 0, false
		if r.TypeUrl == resourcev3.EndpointType {
			for _, res := range r.Resources {
				cla := &endpointv3.ClusterLoadAssignment{}
				if res.UnmarshalTo(cla) == nil && strings.HasPrefix(cla.ClusterName, p.prefix) {
					found, prios = true, len(cla.Endpoints)
					for _, l := range cla.Endpoints {
						eps += len(l.LbEndpoints)
					}
				}
			}
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
			return
		}
		if found {
			p.mu.Lock()
			p.acks, p.prios, p.eps, p.at = p.acks+1, prios, eps, time.Now()
			close(p.wake)
			p.wake = make(chan struct{})
			p.mu.Unlock()
		}
	}
}

// state returns the cluster's priorities and endpoints in the last EDS ACKed.
func (p *prioStream) state() (prios, eps int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.prios, p.eps
}

// waitPrios waits (without polling) until the last ACKed EDS has n priorities, and returns when
// it was ACKed; false at the deadline.
func (p *prioStream) waitPrios(n int, deadline time.Time) (time.Time, bool) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		p.mu.Lock()
		ok, at, wake := p.acks > 0 && p.prios == n, p.at, p.wake
		p.mu.Unlock()
		if ok {
			return at, true
		}
		select {
		case <-wake:
		case <-timer.C:
			return time.Time{}, false
		}
	}
}

// federatedPair starts dc1 and dc2 (one server each) on fixed loopback addresses, each
// federated with the other through a relay (a link the test can cut), and waits until both
// serve and see each other connected.
func federatedPair(t testing.TB, files map[string]string) (s1, s2 *Server, xds1 string, r1, r2 *testutil.Relay) {
	t.Helper()
	repo := newTestRepo(t)
	repo.commit(files, "two datacenters", false)
	h1, h2 := freeAddr(t), freeAddr(t)
	r1, r2 = testutil.NewRelay(t, h1), testutil.NewRelay(t, h2) // r1 leads to dc1, r2 to dc2
	cfg1 := testConfig(t, repo.bare, nodeOpts{httpAddr: h1})
	cfg1.Federate = map[string]string{"dc2": "http://" + r2.Addr}
	_, xds1 = attachXDS(t, &cfg1)
	cfg2 := testConfig(t, repo.bare, nodeOpts{httpAddr: h2})
	cfg2.Datacenter, cfg2.Federate = "dc2", map[string]string{"dc1": "http://" + r1.Addr}
	attachXDS(t, &cfg2)
	s1, s2 = startServer(t, cfg1), startServer(t, cfg2)
	waitFor(t, 10*time.Second, "both datacenters serve, federated", func() bool {
		return s1.Served() != nil && s2.Served() != nil && s1.IsLeader() && s2.IsLeader() &&
			peerState(s1) == PeerConnected && peerState(s2) == PeerConnected
	})
	return s1, s2, xds1, r1, r2
}

// peerState is the state of a server's one federated peer.
func peerState(s *Server) string {
	if f := s.Status().Federation; len(f) == 1 {
		return f[0].State
	}
	return ""
}

// converged reports whether a's view of b is b's own state: the same gateways and
// healthy-instance counts.
func converged(a, b *Server) bool {
	own := b.federationState(b.Catalog())
	if own == nil {
		return false
	}
	dc := b.datacenter()
	return gatewaysEqual(a.fed.gateways()[dc], own.Gateways) && maps.Equal(a.fed.healthy()[dc], own.Healthy) &&
		peerState(a) == PeerConnected
}

func registerGateway(t testing.TB, c *consul.Client, id string, port int) {
	t.Helper()
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{Kind: consul.ServiceKindMeshGateway, ID: id, Name: "gateway",
		Address: "127.0.0.1", Port: port, TaggedAddresses: map[string]consul.ServiceAddress{"wan": {Address: "127.0.0.1", Port: port}}}); err != nil {
		t.Fatal(err)
	}
}

// TestFederationLinkCut: dc1 and dc2 federated through a link the test cuts. While it is cut,
// each side keeps serving its local traffic (catalog writes reach its proxies) with its last
// view of the other (dc1's web keeps dc2's failover priority), and /v1/status says the peer is
// failing. dc2 changes meanwhile (api's only instance there turns critical, a second gateway
// registers); once the link is back, the views converge and dc1's proxy gets the new
// priorities, within a bounded time.
func TestFederationLinkCut(t *testing.T) {
	s1, s2, xds1, r1, r2 := federatedPair(t, failoverDCMesh)
	c1, c2 := consulClient(t, s1.HTTPAddr(), testToken), consulClient(t, s2.HTTPAddr(), testToken)
	registerGateway(t, c1, "gw-dc1", 18443)
	registerGateway(t, c2, "gw-dc2", 19443)
	if err := c2.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-2", Name: "api", Address: "127.0.0.1", Port: 22000,
		Check: &consul.AgentServiceCheck{CheckID: "api-2-ttl", TTL: "1h", Status: consul.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	web := watchPriorities(t, xds1, "web-1", "web", "api.")
	if _, ok := web.waitPrios(2, time.Now().Add(10*time.Second)); !ok {
		p, e := web.state()
		t.Fatalf("web in dc1: api has %d priorities (%d endpoints), want 2: dc1's endpoint, dc2 through the gateway", p, e)
	}
	waitFor(t, 5*time.Second, "views converged before the cut", func() bool { return converged(s1, s2) && converged(s2, s1) })

	r1.Stop()
	r2.Stop()
	waitFor(t, 5*time.Second, "both sides see the peer failing", func() bool {
		return peerState(s1) == PeerFailing && peerState(s2) == PeerFailing
	})
	// Local traffic: a new api instance in dc1 reaches dc1's proxies; dc2 registers and reads.
	if err := c1.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-1b", Name: "api", Address: "127.0.0.1", Port: 21001}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "dc1's new api instance in web's EDS while cut", func() bool {
		p, e := web.state()
		return p == 2 && e == 3 // dc1: Git's and api-1b; dc2: dc1's gateway
	})
	if err := c2.Agent().FailTTL("api-2-ttl", "down"); err != nil {
		t.Fatal(err)
	}
	registerGateway(t, c2, "gw-dc2b", 19444)
	waitFor(t, 5*time.Second, "dc2's own state changed while cut", func() bool {
		st := s2.federationState(s2.Catalog())
		return st != nil && st.Healthy["api"] == 0 && len(st.Gateways) == 2
	})
	if es, _, err := c2.Health().Service("api", "", true, nil); err != nil || len(es) != 0 {
		t.Fatalf("dc2 answers its own reads while cut: %v, %v", es, err)
	}
	// dc1 keeps its last view of dc2: one gateway, api healthy there, failover priority kept.
	if h := s1.fed.healthy()["dc2"]["api"]; h != 1 || len(s1.fed.gateways()["dc2"]) != 1 {
		t.Fatalf("dc1's view of dc2 while cut: api healthy %d, gateways %v", h, s1.fed.gateways()["dc2"])
	}
	if p, _ := web.state(); p != 2 {
		t.Fatalf("web in dc1 lost dc2's failover priority while cut: %d priorities", p)
	}
	if f := s1.Status().Federation[0]; f.Error == "" || f.LastContact.IsZero() {
		t.Fatalf("dc1's status of dc2 while cut: %+v", f)
	}

	restored := time.Now()
	r1.Start()
	r2.Start()
	waitFor(t, 15*time.Second, "views converge after the link is restored", func() bool { return converged(s1, s2) && converged(s2, s1) })
	if _, ok := web.waitPrios(1, time.Now().Add(5*time.Second)); !ok {
		p, e := web.state()
		t.Fatalf("web in dc1 after the link is back: %d priorities (%d endpoints), want 1 (dc2 has no healthy api)", p, e)
	}
	t.Logf("converged and web ACKed the new priorities %v after the link was restored", time.Since(restored).Round(time.Millisecond))
	if h := s2.fed.healthy()["dc1"]["api"]; h != 2 {
		t.Fatalf("dc2's view of dc1: %d healthy api, want 2 (Git's endpoint and api-1b)", h)
	}
	// And it keeps following: api in dc2 passes again → the failover priority comes back.
	if err := c2.Agent().PassTTL("api-2-ttl", "up"); err != nil {
		t.Fatal(err)
	}
	if _, ok := web.waitPrios(2, time.Now().Add(5*time.Second)); !ok {
		t.Fatal("web in dc1 did not get dc2's failover priority back")
	}
}
