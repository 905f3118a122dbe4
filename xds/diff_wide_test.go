package xds

import (
	"fmt"
	"math/rand/v2"
	"testing"

	mesh "github.com/meshgit/mesh"
)

// TestInboundOnlyWideMatchesPerName holds inboundOnly under a mesh-wide intention change, which
// looks each proxy's deps up in what changed of all the services and chains (wideChanges), to
// asking about each dep in turn (serviceChanged, chainChanged): over random meshes whose
// default intention flips together with random changes of services (endpoints, ports,
// upstreams, a new service) and chains, both answer the same for every service.
func TestInboundOnlyWideMatchesPerName(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 3))
	same, inbound := 0, 0
	for iter := range 60 {
		base := randomTransparentMesh(r, 3+r.IntN(8))
		for _, svc := range base.Services {
			if r.IntN(3) > 0 {
				svc.Mode = "" // direct: its reach does not change with the default
			}
		}
		prev := seal(t, base)
		next := mutateIntentions(r, prev)
		next.Mesh.DefaultIntention = map[mesh.Action]mesh.Action{mesh.Allow: mesh.Deny, mesh.Deny: mesh.Allow}[prev.Mesh.DefaultIntention]
		names := next.ServiceNames()
		for range r.IntN(3) {
			svc := next.Services[names[r.IntN(len(names))]]
			switch r.IntN(4) {
			case 0:
				svc.Endpoints = append(svc.Endpoints, ep(fmt.Sprintf("10.1.0.%d", r.IntN(200)), 21000, "dc1"))
			case 1:
				svc.Port++
			case 2:
				addUpstream(next, svc.Name, names[r.IntN(len(names))], 9500+r.IntN(100))
			default:
				addService(next, fmt.Sprintf("n%d", r.IntN(5)), mesh.ProtocolHTTP, 8080, ep("10.2.0.1", 21000, "dc1"))
			}
		}
		next.VirtualIPs = mesh.AssignVirtualIPs(next.ServiceNames())
		snap := seal(t, next)
		if r.IntN(3) == 0 && len(snap.Chains) > 0 {
			for key, ch := range snap.Chains { // a chain changes alone
				cp := *ch
				cp.Protocol += "x"
				snap.Chains[key] = &cp
				break
			}
		}
		wide, perName := diff(prev, snap), diff(prev, snap)
		if !wide.intentions[mesh.Wildcard] {
			t.Fatalf("mesh %d: the default flipped, yet not every destination's intentions changed", iter)
		}
		for _, name := range prev.ServiceNames() {
			d := dependencies(prev, name)
			got := wide.inboundOnly(name, d)
			want := !perName.all && !perName.reachChanged(name, d.up.reach)
			for _, ch := range d.up.chains {
				want = want && !perName.chainChanged(ch)
			}
			for svc := range d.services {
				want = want && !perName.serviceChanged(svc)
			}
			if got != want {
				t.Fatalf("mesh %d, service %s: inboundOnly %v, asking each dep %v", iter, name, got, want)
			}
			same++
			if got {
				inbound++
			}
		}
	}
	if inbound < 50 || same-inbound < 50 {
		t.Fatalf("%d services, %d of them inbound only: not both cases", same, inbound)
	}
}
