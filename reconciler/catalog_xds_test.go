package reconciler

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// healthMesh declares web calling api, with no static endpoints for api: its instances come
// from the catalog.
var healthMesh = map[string]string{
	"mesh/mesh.cue": `package mesh

mesh: {
	name:             "test"
	trustDomain:      "test.mesh"
	datacenter:       "dc1"
	datacenters:      ["dc1"]
	defaultIntention: "deny"
}
`,
	"mesh/services.cue": `package mesh

services: web: {protocol: "grpc", port: 8000, upstreams: api: localPort: 9191}
services: api: {protocol: "grpc", port: 9090}
intentions: api: web: action: "allow"
`,
}

// backend is a real gRPC server answering every method with its name, with grpc.health.v1.
type backend struct {
	name   string
	addr   string
	health *grpchealth.Server
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: lis.Addr().String(), health: grpchealth.NewServer()}
	g := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		in := &wrapperspb.StringValue{}
		if err := stream.RecvMsg(in); err != nil {
			return err
		}
		return stream.SendMsg(wrapperspb.String(name))
	}))
	healthpb.RegisterHealthServer(g, b.health)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return b
}

func (b *backend) port() int {
	_, p, _ := net.SplitHostPort(b.addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}

func callAPI(cc *grpc.ClientConn) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := &wrapperspb.StringValue{}
	if err := cc.Invoke(ctx, "/test.API/Hello", wrapperspb.String("hi"), out, grpc.WaitForReady(true)); err != nil {
		return "error: " + err.Error()
	}
	return out.GetValue()
}

// TestHealthMovesGRPCTraffic: a proxyless gRPC client of api, two real gRPC server instances
// registered in the catalog with gRPC health checks. When one turns NOT_SERVING, every RPC after
// the client's new EDS goes to the other; when it recovers, traffic returns. The same with a
// TTL check that fails.
func TestHealthMovesGRPCTraffic(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(healthMesh, "v0", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	cfg.CatalogTick = 50 * time.Millisecond
	x, xdsAddr := attachXDS(t, &cfg)
	s := startServer(t, cfg)
	waitFor(t, 10*time.Second, "a served snapshot", func() bool { return s.Served() != nil && s.IsLeader() })

	a, b := startBackend(t, "a"), startBackend(t, "b")
	c := consulClient(t, s.HTTPAddr(), testToken)
	for _, be := range []*backend{a, b} {
		err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-" + be.name, Name: "api", Address: "127.0.0.1", Port: be.port(),
			Checks: consul.AgentServiceChecks{
				{CheckID: "grpc-" + be.name, GRPC: be.addr, Interval: "100ms", Timeout: "1s"},
				{CheckID: "ttl-" + be.name, TTL: "1h", Status: consul.HealthPassing},
			}})
		if err != nil {
			t.Fatal(err)
		}
	}
	cc := dialXDS(t, xdsAddr, "web-1")
	spread := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			got[callAPI(cc)]++
		}
		return got
	}
	waitFor(t, 20*time.Second, "both instances to take traffic", func() bool {
		got := spread(10)
		return got["a"] > 0 && got["b"] > 0
	})

	flip := func(what string, fail, recover func()) {
		t.Helper()
		fail()
		waitFor(t, 10*time.Second, what+": api-a critical in the catalog", func() bool {
			return s.Catalog().Instance(s.NodeID(), "api-a").Status(s.Catalog().Node(s.NodeID())) == "critical"
		})
		waitFor(t, 10*time.Second, what+": web to ACK the new EDS", func() bool {
			for _, p := range x.Proxies() {
				if p.NodeID == "web-1" {
					return p.AckedVersion == p.Version && x.Snapshot().Services["api"].Endpoints[0].Health == "critical"
				}
			}
			return false
		})
		// The client applies what it ACKed; give it the time of one RPC round.
		waitFor(t, 5*time.Second, what+": traffic to leave api-a", func() bool { return spread(5)["a"] == 0 })
		if got := spread(50); got["b"] != 50 {
			t.Fatalf("%s: after api-a turned critical, RPCs went %v, want all 50 to b", what, got)
		}
		recover()
		waitFor(t, 20*time.Second, what+": traffic to return to api-a", func() bool { return spread(10)["a"] > 0 })
	}
	flip("gRPC health NOT_SERVING",
		func() { a.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING) },
		func() { a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING) })
	flip("TTL check failed",
		func() {
			if err := c.Agent().FailTTL("ttl-a", "down for maintenance"); err != nil {
				t.Fatal(err)
			}
		},
		func() {
			if err := c.Agent().PassTTL("ttl-a", "back"); err != nil {
				t.Fatal(err)
			}
		})
}

// TestGitHealthCheck: a service's healthCheck in Git checks its Git endpoints (on the leader)
// and is the default check of an instance registered without one; an HTTP check follows a real
// HTTP server: 2xx passing, 429 warning, else critical.
func TestGitHealthCheck(t *testing.T) {
	var code atomic.Int32
	code.Store(200)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	defer app.Close()
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(app.URL, "http://"))
	repo := newTestRepo(t)
	files := maps.Clone(healthMesh)
	files["mesh/services.cue"] = fmt.Sprintf(`package mesh

services: web: {protocol: "grpc", port: 8000, upstreams: api: localPort: 9191}
services: api: {protocol: "http", port: 9090, endpoints: [{address: %q, port: %s}],
	healthCheck: {http: "/healthz", interval: "200ms", timeout: "150ms"}}
intentions: api: web: action: "allow"
`, host, port)
	repo.commit(files, "v0", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	cfg.CatalogTick = 50 * time.Millisecond
	x, _ := attachXDS(t, &cfg)
	s := startServer(t, cfg)
	waitFor(t, 10*time.Second, "a served snapshot", func() bool { return s.Served() != nil && s.IsLeader() })

	staticHealth := func() string {
		snap := x.Snapshot()
		if snap == nil || len(snap.Services["api"].Endpoints) == 0 {
			return ""
		}
		return snap.Services["api"].Endpoints[0].Health
	}
	waitFor(t, 10*time.Second, "the Git endpoint passing in xDS", func() bool { return staticHealth() == "passing" })
	code.Store(429)
	waitFor(t, 10*time.Second, "the Git endpoint warning (429)", func() bool { return staticHealth() == "warning" })
	code.Store(503)
	waitFor(t, 10*time.Second, "the Git endpoint critical (503)", func() bool { return staticHealth() == "critical" })

	// An instance registered without a check gets the Git healthCheck against its own address.
	c := consulClient(t, s.HTTPAddr(), testToken)
	p, _ := strconv.Atoi(port)
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-2", Name: "api", Address: host, Port: p}); err != nil {
		t.Fatal(err)
	}
	checks, err := c.Agent().Checks()
	if err != nil || checks["service:api-2"] == nil || checks["service:api-2"].Type != "http" {
		t.Fatalf("default check: %+v, %v", checks, err)
	}
	if def := checks["service:api-2"].Definition; def.HTTP != app.URL+"/healthz" || def.IntervalDuration != 200*time.Millisecond {
		t.Fatalf("default check definition %+v", def)
	}
	code.Store(200)
	waitFor(t, 10*time.Second, "the registered instance passing with Git's check", func() bool {
		in := s.Catalog().Instance(s.NodeID(), "api-2")
		return in != nil && in.Status(s.Catalog().Node(s.NodeID())) == "passing" && staticHealth() == "passing"
	})
}

// TestHealthFailover: api's resolver fails over from dc1 to dc2. Its dc1 instance comes from
// the catalog, its dc2 endpoint from Git. While the dc1 instance passes, it takes every RPC;
// when it turns critical, the target has no healthy instance and the failover target takes
// over; when it passes again, traffic comes back.
func TestHealthFailover(t *testing.T) {
	local, remote := startBackend(t, "dc1"), startBackend(t, "dc2")
	repo := newTestRepo(t)
	files := map[string]string{
		"mesh/mesh.cue": strings.Replace(healthMesh["mesh/mesh.cue"], `datacenters:      ["dc1"]`, `datacenters:      ["dc1", "dc2"]`, 1),
		"mesh/services.cue": fmt.Sprintf(`package mesh

services: web: {protocol: "grpc", port: 8000, upstreams: api: localPort: 9191}
services: api: {protocol: "grpc", port: 9090, endpoints: [{address: "127.0.0.1", port: %d, datacenter: "dc2"}]}
resolvers: api: failover: "*": datacenters: ["dc2"]
intentions: api: web: action: "allow"
`, remote.port()),
	}
	repo.commit(files, "v0", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	_, xdsAddr := attachXDS(t, &cfg)
	s := startServer(t, cfg)
	waitFor(t, 10*time.Second, "a served snapshot", func() bool { return s.Served() != nil && s.IsLeader() })
	c := consulClient(t, s.HTTPAddr(), testToken)
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-1", Name: "api", Address: "127.0.0.1", Port: local.port(),
		Check: &consul.AgentServiceCheck{CheckID: "ttl", TTL: "1h", Status: consul.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	cc := dialXDS(t, xdsAddr, "web-1")
	only := func(want string) func() bool {
		return func() bool {
			for range 10 {
				if got := callAPI(cc); got != want {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 20*time.Second, "every RPC to the dc1 instance", only("dc1"))
	if err := c.Agent().FailTTL("ttl", "down"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "failover: every RPC to dc2", only("dc2"))
	if err := c.Agent().PassTTL("ttl", "up"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "every RPC back to dc1", only("dc1"))
}
