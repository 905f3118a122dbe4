package interop

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/testutil"
)

const trustDomain = "interop.mesh"

// gRPC status codes the tests expect.
const (
	codeOK               = 0
	codePermissionDenied = 7
)

// interopMesh is the mesh of TestInterop: per implementation a server service "<short>-srv"
// with a v1 and a v2 endpoint (each a process of that implementation), a router sending
// x-canary: 1 or an x-tier other than gold to v2, and a 90/10 split between v1 and v2; clients
// web (allowed), admin (L7: Hello, Delete with x-role: admin, a GET-only Get) and batch
// (denied); flipped, web is denied and batch allowed. fo fails over from dc1 to dc2. Each
// implementation's hc service has only catalog instances (healthMeshCUE).
func interopMesh(ims []impl, ports map[string][2]string, flipped bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `package mesh

mesh: {name: "interop", trustDomain: %q, datacenter: "dc1", datacenters: ["dc1", "dc2"], defaultIntention: "deny"}

// Failover through EDS priorities: fo's dc1 endpoint is a closed port, its dc2 one a grpc-go
// server (whose dc1 certificate the clients accept: a cluster's SANs include its primary's).
services: fo: {protocol: "grpc", port: 8080, endpoints: [
	{address: "127.0.0.1", port: %s, datacenter: "dc1"},
	{address: "127.0.0.1", port: %s, datacenter: "dc2"},
]}
resolvers: fo: failover: "*": datacenters: ["dc2"]
intentions: fo: web: action: "allow"

// imp's endpoint is a server of imp that presents batch's certificate: clients must refuse it.
services: imp: {protocol: "grpc", port: 8080, endpoints: [{address: "127.0.0.1", port: %s, datacenter: "dc1"}]}
intentions: imp: web: action: "allow"

// rh balances with ring_hash (maglev would become ring_hash for gRPC too).
services: rh: {protocol: "grpc", port: 8080, endpoints: [{address: "127.0.0.1", port: %s, datacenter: "dc1"}]}
resolvers: rh: loadBalancer: policy: "ring_hash"
intentions: rh: web: action: "allow"
`, trustDomain, port(ports["fo"][0]), port(ports["fo"][1]), port(ports["imp"][0]), port(ports["rh"][0]))
	web, batch := "allow", "deny"
	if flipped {
		web, batch = "deny", "allow"
	}
	ups := []string{"fo: localPort: 9099", "imp: localPort: 9098", "rh: localPort: 9097"}
	for i, im := range ims {
		s := im.short + "-srv"
		ups = append(ups, fmt.Sprintf("%q: localPort: %d", s, 9100+i), fmt.Sprintf("%q: localPort: %d", hcService(im), 9110+i))
		ep := func(addr, version string) string {
			host, port, _ := strings.Cut(addr, ":")
			return fmt.Sprintf(`{address: %q, port: %s, datacenter: "dc1", meta: {version: %q}}`, host, port, version)
		}
		fmt.Fprintf(&b, `
services: %[1]q: {protocol: "grpc", port: 8080, endpoints: [%[2]s, %[3]s]}
intentions: %[1]q: {
	web: action: %[5]q
	admin: permissions: [
		{action: "allow", http: {path: "/test.Greeter/Hello", methods: ["POST"]}},
		{action: "allow", http: {path: "/test.Greeter/Delete", header: [{name: "x-role", exact: "admin"}]}},
		// gRPC calls are POSTs: this permission never matches one.
		{action: "allow", http: {path: "/test.Greeter/Get", methods: ["GET"]}},
	]
	batch: action: %[4]q
}
routers: %[1]q: routes: [
	// With a timeout (max_stream_duration for gRPC) and a retry policy, which every client must accept.
	{match: http: header: [{name: "x-canary", exact: "1"}], destination: {service: %[1]q, subset: "v2", requestTimeout: "5s", numRetries: 2, retryOn: ["unavailable", "5xx"]}},
	// An inverted match does not hold when the header is absent (grpc-js needed a presence guard).
	{match: http: header: [{name: "x-tier", exact: "gold", invert: true}], destination: {service: %[1]q, subset: "v2"}},
]
splitters: %[1]q: splits: [{weight: 90, subset: "v1"}, {weight: 10, subset: "v2"}]
// least_request: gRPC clients get round_robin (C-core and grpc-js accept nothing else).
resolvers: %[1]q: {defaultSubset: "v1", subsets: {v1: filter: {version: "v1"}, v2: filter: {version: "v2"}}, loadBalancer: policy: "least_request"}
`, s, ep(ports[s][0], "v1"), ep(ports[s][1], "v2"), batch, web)
	}
	b.WriteString(healthMeshCUE(ims))
	for _, c := range []string{"web", "admin", "batch"} {
		fmt.Fprintf(&b, "services: %s: {protocol: \"grpc\", port: 8080, upstreams: {%s}}\n", c, strings.Join(ups, ", "))
	}
	return b.String()
}

// plaintextCall calls addr without TLS: it must not get through a server of the mesh.
func plaintextCall(addr string) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return cc.Invoke(ctx, "/test.Greeter/Hello", wrapperspb.String("hi"), &wrapperspb.StringValue{})
}

func port(addr string) string {
	_, p, _ := strings.Cut(addr, ":")
	return p
}

// TestInterop runs grpc-go, C-core and grpc-js servers and clients against one `mesh serve`:
// every client calls every server (mTLS with SPIFFE identities, L4 and L7 RBAC enforced by the
// server), every client routes by header (also an inverted match) and splits 90/10, refuses a
// server with another service's certificate and fails over to a dc2 priority, every server
// refuses plaintext, every client moves traffic off a catalog instance whose TTL check fails
// (and back when it passes), and a committed intention flip reaches every pair. README.md has the table.
func TestInterop(t *testing.T) {
	ims := impls(t)
	ports := map[string][2]string{}
	addrs := testutil.FreeAddrs(t, 4*len(ims)+4)
	for i, im := range ims {
		ports[im.short+"-srv"] = [2]string{addrs[2*i], addrs[2*i+1]}
		ports[hcService(im)] = [2]string{addrs[2*len(ims)+4+2*i], addrs[2*len(ims)+4+2*i+1]}
	}
	ports["fo"] = [2]string{addrs[2*len(ims)], addrs[2*len(ims)+1]} // the first stays closed
	ports["imp"] = [2]string{addrs[2*len(ims)+2]}
	ports["rh"] = [2]string{addrs[2*len(ims)+3]}
	begin := time.Now()
	e := newEnv(t, interopMesh(ims, ports, false))
	t.Logf("mesh serve up: %s", time.Since(begin).Round(time.Millisecond))
	startHealth(e, ims, ports)
	clients := startAll(e, ims, ports)
	t.Logf("servers and clients started: %s", time.Since(begin).Round(time.Millisecond))
	start := time.Now()
	for _, cim := range ims {
		for _, sim := range ims {
			t.Run(fmt.Sprintf("%s→%s", cim.name, sim.name), func(t *testing.T) {
				pair(t, clients, cim, sim)
			})
		}
	}
	t.Logf("pairs: %s", time.Since(start).Round(time.Millisecond))
	for i, cim := range ims {
		sim := ims[(i+1)%len(ims)]
		t.Run(fmt.Sprintf("%s routes to %s", cim.name, sim.name), func(t *testing.T) {
			routing(t, clients["web"][cim.name], sim.short+"-srv")
		})
	}
	t.Run("servers require mTLS", func(t *testing.T) {
		for _, sim := range ims {
			if err := plaintextCall(ports[sim.short+"-srv"][0]); err == nil {
				t.Errorf("a plaintext call straight to %s's server succeeded", sim.name)
			} else {
				t.Logf("%s refuses plaintext: %v", sim.name, err)
			}
		}
	})
	t.Run("clients check the server's SPIFFE ID", func(t *testing.T) {
		for _, cim := range ims {
			r := clients["web"][cim.name].callsWithin(t, 2*time.Second, "imp", "/test.Greeter/Hello", 1)[0]
			if r.Code == codeOK || r.Code == codePermissionDenied {
				t.Errorf("%s web → imp (a server with batch's certificate): %d %q, want a refused handshake", cim.name, r.Code, r.Details)
			} else {
				t.Logf("%s refuses a server with batch's certificate: %s %q", cim.name, r.Status, r.Details)
			}
		}
	})
	t.Run("ring_hash", func(t *testing.T) {
		for _, cim := range ims {
			if cim.name == "c-core" {
				// Found here: the client dies with SIGSEGV on its first call to a ring_hash
				// cluster, consistent with grpc/grpc#31766 (a crash in the ring_hash picker of
				// 1.51, fixed by grpc/grpc#32012 after it). So it is not called.
				t.Logf("c-core 1.51: ring_hash not supported by that implementation: its ring_hash picker crashes (grpc/grpc#31766); not called")
				continue
			}
			for _, r := range clients["web"][cim.name].calls(t, "rh", "/test.Greeter/Hello", 5) {
				if r.Code != codeOK || replyOf(r).Server != "rh-1" {
					t.Errorf("%s web → rh (ring_hash): %d %q from %q", cim.name, r.Code, r.Details, replyOf(r).Server)
				}
			}
		}
	})
	t.Run("failover to the dc2 priority", func(t *testing.T) {
		for _, cim := range ims {
			for _, r := range clients["web"][cim.name].calls(t, "fo", "/test.Greeter/Hello", 5) {
				if r.Code != codeOK || replyOf(r).Server != "fo-dc2" {
					t.Errorf("%s web → fo: %d %q from %q, want an answer from fo-dc2 (dc1 is down)", cim.name, r.Code, r.Details, replyOf(r).Server)
				}
			}
		}
	})
	t.Run("health moves traffic off an unhealthy instance", func(t *testing.T) {
		health(t, e, ims, clients["web"])
	})
	t.Run("intention flip", func(t *testing.T) {
		old := e.version()
		e.commit(interopMesh(ims, ports, true), "deny web, allow batch")
		e.waitVersion(old)
		for _, cim := range ims {
			for _, sim := range ims {
				s := sim.short + "-srv"
				flipped(t, clients["batch"][cim.name], s, codeOK)
				flipped(t, clients["web"][cim.name], s, codePermissionDenied)
			}
		}
	})
}

// startAll starts every server process (v1 and v2 of each implementation, and fo's dc2 one)
// and every client process (each implementation as web, admin and batch); it returns the
// clients by identity and implementation.
func startAll(e *env, ims []impl, ports map[string][2]string) map[string]map[string]*client {
	for _, im := range ims {
		s := im.short + "-srv"
		certs := e.identity(s)
		for i, v := range []string{"v1", "v2"} {
			env := append([]string{"GRPC_XDS_BOOTSTRAP=" + e.bootstrap(s, s+"-"+v, certs), roleEnv + "=go-server"}, im.env...)
			e.start(s+"-"+v, nil, nil, env, im.server(ports[s][i], s+"-"+v)...)
		}
	}
	rhCerts := e.identity("rh")
	e.start("rh-1", nil, nil, []string{"GRPC_XDS_BOOTSTRAP=" + e.bootstrap("rh", "rh-1", rhCerts), roleEnv + "=go-server"},
		ims[0].server(ports["rh"][0], "rh-1")...)
	foCerts := e.identity("fo")
	e.start("fo-dc2", nil, nil, []string{"GRPC_XDS_BOOTSTRAP=" + e.bootstrap("fo", "fo-dc2", foCerts), roleEnv + "=go-server"},
		ims[0].server(ports["fo"][1], "fo-dc2")...)
	clients := map[string]map[string]*client{}
	for _, id := range []string{"web", "admin", "batch"} {
		certs := e.identity(id)
		if id == "batch" {
			e.start("imp", nil, nil, []string{"GRPC_XDS_BOOTSTRAP=" + e.bootstrap("imp", "imp-1", certs), roleEnv + "=go-server"},
				ims[0].server(ports["imp"][0], "imp")...)
		}
		clients[id] = map[string]*client{}
		for _, im := range ims {
			clients[id][im.name] = e.startClient(im, id, e.bootstrap(id, id+"-"+im.short, certs))
		}
	}
	for _, byImpl := range clients {
		for _, c := range byImpl {
			c.waitReady()
		}
	}
	return clients
}

// flipped waits (20s at most) until c's calls to s get want after an intention flip; until then
// they may get only the old verdict.
func flipped(t *testing.T, c *client, s string, want int) {
	t.Helper()
	old := codePermissionDenied + codeOK - want
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := c.call(t, s, "/test.Greeter/Hello")
		switch {
		case r.Code == want:
			return
		case r.Code != old:
			t.Errorf("%s → %s during the flip: %d %s %q", c.name, s, r.Code, r.Status, r.Details)
			return
		case time.Now().After(deadline):
			t.Errorf("%s → %s after the flip: %d %s %q, want code %d within 20s", c.name, s, r.Code, r.Status, r.Details, want)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pair checks one client implementation against one server implementation: mTLS carries the
// caller's SPIFFE ID, and the server's RBAC allows, denies, and decides on path, method and
// header as the intentions say.
func pair(t *testing.T, clients map[string]map[string]*client, cim, sim impl) {
	s := sim.short + "-srv"
	web := clients["web"][cim.name].call(t, s, "/test.Greeter/Hello")
	if web.Code != codeOK {
		t.Fatalf("web → %s (allowed): %d %s %q", s, web.Code, web.Status, web.Details)
	}
	rep := replyOf(web)
	if rep.Impl != sim.name || !strings.HasPrefix(rep.Server, s+"-") {
		t.Errorf("web → %s answered by %q (%s)", s, rep.Server, rep.Impl)
	}
	wantID := mesh.SpiffeID(trustDomain, "dc1", "web")
	if !slices.Contains(rep.Peer, wantID) {
		t.Errorf("%s saw the caller as %v, want %s (its certificate from mesh agent)", sim.name, rep.Peer, wantID)
	}
	if r := clients["batch"][cim.name].call(t, s, "/test.Greeter/Hello"); r.Code != codePermissionDenied {
		t.Errorf("batch → %s (denied): %d %s %q, want PERMISSION_DENIED", s, r.Code, r.Status, r.Details)
	}
	admin := clients["admin"][cim.name]
	for _, c := range []struct {
		method string
		md     []string
		want   int
	}{
		{"/test.Greeter/Hello", nil, codeOK},
		{"/test.Greeter/Delete", nil, codePermissionDenied},
		{"/test.Greeter/Delete", []string{"x-role", "admin"}, codeOK},
		{"/test.Greeter/Delete", []string{"x-role", "user"}, codePermissionDenied},
		{"/test.Greeter/Hello", []string{"x-role", "user"}, codeOK},
		{"/test.Greeter/Get", nil, codePermissionDenied},
	} {
		if r := admin.call(t, s, c.method, c.md...); r.Code != c.want {
			t.Errorf("admin → %s %s %v: %d %s %q, want code %d", s, c.method, c.md, r.Code, r.Status, r.Details, c.want)
		}
	}
}

// routing checks that x-canary: 1 and x-tier: silver always reach v2 and that the split (no
// x-tier at all: the inverted match does not hold) sends about 10% there.
func routing(t *testing.T, c *client, s string) {
	for _, r := range c.calls(t, s, "/test.Greeter/Hello", 20, "x-canary", "1") {
		if r.Code != codeOK || replyOf(r).Server != s+"-v2" {
			t.Fatalf("x-canary: 1 → %s reached %q (%d %q), want %s-v2", s, replyOf(r).Server, r.Code, r.Details, s)
		}
	}
	for _, r := range c.calls(t, s, "/test.Greeter/Hello", 10, "x-tier", "silver") {
		if r.Code != codeOK || replyOf(r).Server != s+"-v2" {
			t.Fatalf("x-tier: silver → %s reached %q (%d %q), want %s-v2", s, replyOf(r).Server, r.Code, r.Details, s)
		}
	}
	const n = 500
	v2 := 0
	for _, r := range c.calls(t, s, "/test.Greeter/Hello", n) {
		if r.Code != codeOK {
			t.Fatalf("split → %s: %d %q", s, r.Code, r.Details)
		}
		if replyOf(r).Server == s+"-v2" {
			v2++
		}
	}
	// Binomial(500, 0.1): mean 50, sd ≈ 6.7; allow 5 sd.
	sd := math.Sqrt(n * 0.1 * 0.9)
	if math.Abs(float64(v2)-n*0.1) > 5*sd {
		t.Errorf("v2 got %d of %d RPCs, want %d ± %.0f", v2, n, n/10, 5*sd)
	}
	t.Logf("v2 got %d of %d", v2, n)
}
