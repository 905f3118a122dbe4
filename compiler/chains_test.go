package compiler

import (
	"context"
	"testing"

	mesh "github.com/meshgit/mesh"
)

// upstreamDCMesh: web calls api in dc2 and auth locally; api has endpoints in both datacenters,
// a v2 subset and fails over to dc1.
const upstreamDCMesh = `package mesh

mesh: {name: "m", trustDomain: "m.mesh", datacenter: "dc1", datacenters: ["dc1", "dc2"]}
services: {
	web: {protocol: "http", port: 80, upstreams: {
		api: {localPort: 9001, datacenter: "dc2"}
		auth: {localPort: 9002, datacenter: "dc1"}
	}}
	api: {protocol: "http", port: 8080, endpoints: [
		{address: "10.1.0.1", port: 8080, datacenter: "dc1", meta: version: "v1"},
		{address: "10.2.0.1", port: 8080, datacenter: "dc2", meta: version: "v2"},
	]}
	auth: {protocol: "grpc", port: 9090, endpoints: [{address: "10.1.0.2", port: 9090}]}
}
resolvers: api: {subsets: v2: filter: version: "v2"}
resolvers: api: failover: "*": datacenters: ["dc1"]
routers: api: routes: [{match: http: pathPrefix: "/v2/", destination: subset: "v2"}]
`

// TestUpstreamDatacenter: an upstream that names another datacenter follows the service's chain
// resolved there, as Consul's upstream datacenter does; one that names the local datacenter, or
// none, follows the local chain.
func TestUpstreamDatacenter(t *testing.T) {
	snap, err := Compile(context.Background(), []File{{Name: "m.cue", Data: []byte(upstreamDCMesh)}})
	if err != nil {
		t.Fatal(err)
	}
	web := snap.Services["web"]
	remote := snap.UpstreamChain(web.Upstreams["api"])
	if remote == nil || remote != snap.RemoteChains["api@dc2"] || remote.Datacenter != "dc2" {
		t.Fatalf("api from web: chain %+v, want RemoteChains[api@dc2]", remote)
	}
	if got := snap.UpstreamChain(web.Upstreams["auth"]); got != snap.Chains["auth"] {
		t.Errorf("auth from web (local datacenter named): %+v, want the local chain", got)
	}
	if len(snap.RemoteChains) != 1 {
		t.Errorf("remote chains %v, want only api@dc2", snap.RemoteChains)
	}
	local := snap.Chains["api"]
	want := map[*mesh.Chain][2]string{ // default route target, /v2/ route target
		local:  {mesh.TargetID("", "api", "dc1"), mesh.TargetID("v2", "api", "dc1")},
		remote: {mesh.TargetID("", "api", "dc2"), mesh.TargetID("v2", "api", "dc2")},
	}
	for ch, ids := range want {
		if len(ch.Routes) != 2 {
			t.Fatalf("%s chain: %d routes", ch.Datacenter, len(ch.Routes))
		}
		if got := ch.Routes[1].Splits[0].Target; got != ids[0] {
			t.Errorf("chain in %q: default route to %s, want %s", ch.Datacenter, got, ids[0])
		}
		if got := ch.Routes[0].Splits[0].Target; got != ids[1] {
			t.Errorf("chain in %q: /v2/ route to %s, want %s", ch.Datacenter, got, ids[1])
		}
	}
	// The remote chain fails over to dc1; the local one is already there.
	rt := remote.Targets[mesh.TargetID("", "api", "dc2")]
	if rt == nil || len(rt.Failover) != 1 || rt.Failover[0] != mesh.TargetID("", "api", "dc1") {
		t.Errorf("remote target %+v, want failover to api in dc1", rt)
	}
	if lt := local.Targets[mesh.TargetID("", "api", "dc1")]; lt == nil || len(lt.Failover) != 0 {
		t.Errorf("local target %+v, want no failover", lt)
	}
	if eps := snap.Endpoints(rt); len(eps) != 1 || eps[0].Address != "10.2.0.1" {
		t.Errorf("remote target endpoints %+v, want dc2's", eps)
	}
}
