package proxy

import (
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"testing"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/compiler"
)

const failoverMesh = `package mesh

mesh: {
	name:             "failover"
	trustDomain:      "shop.mesh"
	datacenter:       "dc1"
	datacenters:      ["dc1", "dc2"]
	defaultIntention: "deny"
	meshGateway: mode: "local"
}

services: api: {protocol: "tcp", port: %d, endpoints: [
	{address: "127.0.0.1", port: %d, datacenter: "dc1"},
	{address: "127.0.0.1", port: %d, datacenter: "dc2"},
]}
services: web: {protocol: "tcp", port: %d, endpoints: [{address: "127.0.0.1", port: %d, datacenter: "dc1"}], upstreams: api: localPort: %d}
resolvers: api: failover: "*": datacenters: ["dc2"]
intentions: api: web: action: "allow"
`

// nameServer answers every connection with its name once the caller half-closes.
func nameServer(t *testing.T, name string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
				c.Write([]byte(name))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestFailoverAcrossDatacenters: web in dc1 calls api, which fails over to dc2. When api's dc1
// instance turns critical, web's sidecar sends the next connections to dc2 through both
// gateways within 2 s; when it recovers, traffic returns to dc1.
func TestFailoverAcrossDatacenters(t *testing.T) {
	e := newEnv(t)
	xs2, xds2 := serveXDS(t, e.log.With("component", "xds-dc2"))
	ca2 := ca.New(ca.Config{Store: ca.NewMemStore(e.ca.State()), Datacenter: "dc2"})
	appDC1, appDC2 := nameServer(t, "dc1"), nameServer(t, "dc2")
	pub1, pub2, webUp := freePort(t), freePort(t), freePort(t)
	gw1, gw2 := freePort(t), freePort(t)
	gateways := map[string][]mesh.Gateway{
		"dc1": {{Service: "gateway", Address: "127.0.0.1", Port: gw1}},
		"dc2": {{Service: "gateway", Address: "127.0.0.1", Port: gw2}},
	}
	base, err := compiler.Compile(t.Context(), []compiler.File{{Name: "m.cue",
		Data: fmt.Appendf(nil, failoverMesh, appDC1, pub1, pub2, freePort(t), freePort(t), webUp)}})
	if err != nil {
		t.Fatal(err)
	}
	// serve publishes both datacenters' views with dc1's api instance in health h (the catalog's
	// part, done here directly). On another host dc2's api would have its own port: the dc2
	// view's local_app is appDC2.
	serve := func(h string) {
		svcs := maps.Clone(base.Services)
		api := *svcs["api"]
		api.Endpoints = slices.Clone(api.Endpoints)
		for i := range api.Endpoints {
			if api.Endpoints[i].Datacenter == "dc1" {
				api.Endpoints[i].Health = h
			}
		}
		svcs["api"] = &api
		dc1 := base.WithServices(svcs).WithMeshGateways(gateways)
		api2 := api
		api2.Port = appDC2
		svcs2 := maps.Clone(svcs)
		svcs2["api"] = &api2
		dc2, err := compiler.ForDatacenter(dc1.WithServices(svcs2), "dc2")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.xs.SetSnapshot(dc1); err != nil {
			t.Fatal(err)
		}
		if err := xs2.SetSnapshot(dc2); err != nil {
			t.Fatal(err)
		}
	}
	serve(mesh.HealthPassing)
	e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: "web", CertDir: e.certDir("web")})
	e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: "api", CertDir: e.certDir("api")})
	e.proxyWith(Config{XDSAddr: e.xdsAddr, Service: "gateway", Kind: mesh.KindMeshGateway})
	e.proxyWith(Config{XDSAddr: xds2, Service: "gateway", Kind: mesh.KindMeshGateway})
	e.proxyWith(Config{XDSAddr: xds2, Service: "api", CertDir: writeLeaf(t, ca2, "api")})

	up := fmt.Sprintf("127.0.0.1:%d", webUp)
	answers := func(want string) func() error {
		return func() error {
			got, err := roundTrip(up, []byte("x"), 2*time.Second)
			if err != nil || string(got) != want {
				return fmt.Errorf("answered by %q (%v), want %s", got, err, want)
			}
			return nil
		}
	}
	eventually(t, 10*time.Second, "api in dc1 answers", answers("dc1"))
	start := time.Now()
	serve(mesh.HealthCritical)
	eventually(t, 2*time.Second, "traffic fails over to dc2", answers("dc2"))
	t.Logf("failover to dc2 in %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	serve(mesh.HealthPassing)
	eventually(t, 2*time.Second, "traffic returns to dc1", answers("dc1"))
	t.Logf("back to dc1 in %v", time.Since(start).Round(time.Millisecond))
}
