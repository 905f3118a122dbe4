package xds

import (
	"maps"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	mesh "github.com/meshgit/mesh"
)

// TestEndpointHealthPushesOnlyEDS: an endpoint's health changing (the catalog's doing) pushes
// only EDS, only to the proxies that call the service: critical as UNHEALTHY (sent, not
// dropped), warning with its weight.
func TestEndpointHealthPushesOnlyEDS(t *testing.T) {
	srv, addr := servingServer(t)
	base := srv.Snapshot()
	cc := dialRaw(t, addr)
	web, db := newRawADS(t, cc), newRawADS(t, cc)
	types := []string{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.EndpointType}
	for _, s := range []struct {
		a    *rawADS
		node *corev3.Node
	}{{web, envoyNode("web-1", "web")}, {db, envoyNode("db-1", "db")}} {
		for _, typ := range types {
			s.a.send(&discoveryv3.DiscoveryRequest{Node: s.node, TypeUrl: typ})
			s.a.ack(s.a.mustRecv(typ))
		}
	}
	for _, a := range []*rawADS{web, db} { // RDS and anything else sent meanwhile
		for r, _ := a.recv(300 * time.Millisecond); r != nil; r, _ = a.recv(300 * time.Millisecond) {
			a.ack(r)
		}
	}

	svcs := maps.Clone(base.Services)
	api := *svcs["api"]
	api.Endpoints = slices.Clone(api.Endpoints)
	api.Endpoints[0].Health = mesh.HealthCritical
	api.Endpoints[1].Health, api.Endpoints[1].Weight = mesh.HealthWarning, 3
	svcs["api"] = &api
	if err := srv.SetSnapshot(base.WithServices(svcs)); err != nil {
		t.Fatal(err)
	}
	r := web.mustRecv(resourcev3.EndpointType)
	web.ack(r)
	health := map[string]corev3.HealthStatus{}
	weight := map[string]uint32{}
	for _, res := range r.Resources {
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := res.UnmarshalTo(cla); err != nil {
			t.Fatal(err)
		}
		for _, loc := range cla.Endpoints {
			for _, le := range loc.LbEndpoints {
				a := le.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
				health[a], weight[a] = le.HealthStatus, le.GetLoadBalancingWeight().GetValue()
			}
		}
	}
	if health["10.0.1.1"] != corev3.HealthStatus_UNHEALTHY || health["10.0.1.2"] != corev3.HealthStatus_HEALTHY || weight["10.0.1.2"] != 3 {
		t.Fatalf("EDS health %v, weights %v: want 10.0.1.1 UNHEALTHY (sent), 10.0.1.2 HEALTHY with weight 3", health, weight)
	}
	if r, err := web.recv(300 * time.Millisecond); r != nil || err != nil {
		t.Fatalf("web was pushed %s (err %v) besides EDS", r.GetTypeUrl(), err)
	}
	if r, err := db.recv(300 * time.Millisecond); r != nil || err != nil {
		t.Fatalf("db, which does not call api, was pushed %s (err %v)", r.GetTypeUrl(), err)
	}
}

// TestEDSOnlyRenderMatchesFull: when only the endpoints of services a proxy calls change, its
// EDS alone is rendered, and the result equals a full rendering (same hashes for every type);
// the proxies of the changed service itself are rendered in full.
func TestEDSOnlyRenderMatchesFull(t *testing.T) {
	srv := NewServer(testLogger(t))
	base := seal(t, richMesh())
	svcs := maps.Clone(base.Services)
	api := *svcs["api"]
	api.Endpoints = append(slices.Clone(api.Endpoints), mesh.Endpoint{Address: "10.0.1.9", Port: 21000, Datacenter: "dc1",
		Meta: map[string]string{"version": "v1"}, Health: mesh.HealthCritical})
	api.Endpoints[0].Health, api.Endpoints[0].Weight = mesh.HealthWarning, 5
	svcs["api"] = &api
	next := base.WithServices(svcs)
	ch := diff(base, next)
	for _, shape := range []Shape{ShapeEnvoy, ShapeGRPC} {
		p := Proxy{Service: "web", Shape: shape}
		old, err := srv.render(base, nil, newMemo(base, nil), p, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if !ch.edsOnly("web", old.deps) {
			t.Fatalf("%s: a change of api's endpoints is not EDS-only for web", shape)
		}
		if ch.edsOnly("api", dependencies(base, "api")) {
			t.Fatalf("%s: a new endpoint of api is EDS-only for api's own proxies (their listeners read them)", shape)
		}
		healthOnly := maps.Clone(base.Services)
		h := *healthOnly["api"]
		h.Endpoints = slices.Clone(h.Endpoints)
		h.Endpoints[1].Health = mesh.HealthCritical
		healthOnly["api"] = &h
		if !diff(base, base.WithServices(healthOnly)).edsOnly("api", dependencies(base, "api")) {
			t.Fatalf("%s: a change of api's endpoints' health alone is not EDS-only for api's own proxies", shape)
		}
		eds, ok, err := srv.renderEDS(next, nil, newMemo(next, nil), p, old)
		if err != nil || !ok {
			t.Fatalf("%s: renderEDS: %v %v", shape, ok, err)
		}
		full, err := srv.render(next, nil, nil, p, old, false)
		if err != nil {
			t.Fatal(err)
		}
		if eds.hash != full.hash || eds.typeHash != full.typeHash || eds.typeVersion != full.typeVersion {
			t.Fatalf("%s: EDS-only %v %v, full %v %v", shape, eds.hash, eds.typeVersion, full.hash, full.typeVersion)
		}
		if eds.typeHash.get(resourcev3.EndpointType) == old.typeHash.get(resourcev3.EndpointType) {
			t.Fatalf("%s: the EDS did not change", shape)
		}
		for _, typ := range resourceTypes {
			if !maps.Equal(eds.cs.VersionMap[typ], full.cs.VersionMap[typ]) {
				t.Fatalf("%s: version maps of %s differ", shape, typ)
			}
		}
	}
}
