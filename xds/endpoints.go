package xds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	mesh "github.com/meshgit/mesh"
)

// endpoints renders one ClusterLoadAssignment per target cluster of a proxy: the target's
// endpoints at priority 0 and each failover target's endpoints at the next priorities, in order.
// Priorities are contiguous: a failover target without endpoints takes no priority. Every
// locality carries a load-balancing weight, because gRPC ignores localities without one.
func endpoints(snap *mesh.Snapshot, p Proxy, m *memo) []*endpointv3.ClusterLoadAssignment {
	set := sharedOK(m, m.setKey(memoEndpointSet, "", p.Service), func() []*endpointv3.ClusterLoadAssignment {
		targets := proxyTargets(snap, p.Service)
		out := make([]*endpointv3.ClusterLoadAssignment, 0, len(targets))
		for _, pt := range targets {
			out = append(out, sharedOK(m, memoKey{kind: memoLoadAssignment, chain: pt.chain, name: pt.target.SNI},
				func() *endpointv3.ClusterLoadAssignment { return loadAssignment(snap, pt) }))
		}
		return out
	})
	return append([]*endpointv3.ClusterLoadAssignment(nil), set...) // a copy: Resources.sort sorts in place
}

func loadAssignment(snap *mesh.Snapshot, pt proxyTarget) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: pt.target.SNI}
	chainOf := []*mesh.Target{pt.target}
	for _, id := range pt.target.Failover {
		if ft := pt.chain.Targets[id]; ft != nil {
			chainOf = append(chainOf, ft)
		}
	}
	priority := uint32(0)
	for _, t := range chainOf {
		eps := snap.Endpoints(t)
		if len(eps) == 0 {
			continue
		}
		loc := &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Region: t.Datacenter, Zone: t.Service},
			Priority:            priority,
			LoadBalancingWeight: wrapperspb.UInt32(uint32(len(eps))),
		}
		for _, ep := range eps {
			loc.LbEndpoints = append(loc.LbEndpoints, catalogEndpoint(ep))
		}
		cla.Endpoints = append(cla.Endpoints, loc)
		priority++
	}
	return cla
}

// catalogEndpoint renders an endpoint with its health, as Consul does: critical is sent as
// UNHEALTHY (proxies keep it out of rotation but know it), passing and warning as HEALTHY with
// the instance's weight for that status; an endpoint from Git (no health) as UNKNOWN, routed to.
func catalogEndpoint(ep mesh.Endpoint) *endpointv3.LbEndpoint {
	le := lbEndpoint(ep.Address, ep.Port)
	switch ep.Health {
	case mesh.HealthPassing, mesh.HealthWarning:
		le.HealthStatus = corev3.HealthStatus_HEALTHY
	case mesh.HealthCritical:
		le.HealthStatus = corev3.HealthStatus_UNHEALTHY
	}
	if ep.Weight > 0 {
		le.LoadBalancingWeight = wrapperspb.UInt32(uint32(ep.Weight))
	}
	return le
}

func lbEndpoint(address string, port int) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddress(address, port),
		}},
		LoadBalancingWeight: wrapperspb.UInt32(1),
	}
}

func socketAddress(address string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       address,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}
