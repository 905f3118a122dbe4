package xds

import (
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	mesh "github.com/meshgit/mesh"
)

// endpoints renders one ClusterLoadAssignment per target cluster of a proxy: the target's
// endpoints at priority 0 and each failover target's endpoints at the next priorities, in order.
// Priorities are contiguous: a failover target without endpoints takes no priority. Every
// locality carries a load-balancing weight, because gRPC ignores localities without one.
func endpoints(snap *mesh.Snapshot, p Proxy, m *memo) []*endpointv3.ClusterLoadAssignment {
	set := sharedOK(m, m.setKey(memoEndpointSet, p.Shape, p.Service), func() []*endpointv3.ClusterLoadAssignment {
		targets := m.proxyTargets(snap, p)
		out := make([]*endpointv3.ClusterLoadAssignment, 0, len(targets))
		for _, pt := range targets {
			if p.Shape != ShapeEnvoy {
				pt.mode = mesh.MeshGatewayNone // see targetEndpoints
			}
			key := memoKey{kind: memoLoadAssignment, shape: p.Shape, chain: pt.chain, target: pt.target, name: pt.mode}
			out = append(out, sharedOK(m, key, func() *endpointv3.ClusterLoadAssignment {
				cla := loadAssignment(snap, pt, p.Shape)
				learnLoadAssignmentEncoding(m, cla)
				return cla
			}))
		}
		return out
	})
	return append([]*endpointv3.ClusterLoadAssignment(nil), set...) // a copy: Resources.sort sorts in place
}

func loadAssignment(snap *mesh.Snapshot, pt proxyTarget, shape Shape) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: pt.target.SNI}
	chainOf := []*mesh.Target{pt.target}
	for _, id := range pt.target.Failover {
		if ft := pt.chain.Targets[id]; ft != nil {
			chainOf = append(chainOf, ft)
		}
	}
	priority := uint32(0)
	for i, t := range chainOf {
		eps := targetEndpoints(snap, t, pt.mode)
		if len(eps) == 0 || shape == ShapeGRPC && allCritical(eps) && laterHealthy(snap, chainOf[i+1:], pt.mode) {
			// Proxyless gRPC does not weigh a priority by its health (it ignores
			// overprovisioning): the control plane moves the failover up itself.
			continue
		}
		// The locality's three messages in one allocation.
		a := &struct {
			loc endpointv3.LocalityLbEndpoints
			l   corev3.Locality
			w   wrapperspb.UInt32Value
		}{}
		a.l.Region, a.l.Zone = t.Datacenter, t.Service
		a.w.Value = uint32(len(eps))
		loc := &a.loc
		loc.Locality, loc.Priority, loc.LoadBalancingWeight = &a.l, priority, &a.w
		loc.LbEndpoints = make([]*endpointv3.LbEndpoint, 0, len(eps))
		viaGateway := shape == ShapeEnvoy && t != pt.target && slices.Contains(gatewayFailovers(snap, pt), t)
		for _, ep := range eps {
			le := catalogEndpoint(ep)
			if viaGateway {
				le.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
					"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{transportSocketMatchTarget: structpb.NewStringValue(t.ID)}},
				}}
			}
			loc.LbEndpoints = append(loc.LbEndpoints, le)
		}
		cla.Endpoints = append(cla.Endpoints, loc)
		priority++
	}
	return cla
}

// targetEndpoints returns the endpoints a sidecar dials for target t: the target's own, or for a
// target in another datacenter under mode local or remote, mesh gateways: the local
// datacenter's (LAN addresses) or the target datacenter's (WAN addresses). The cluster's SNI and
// SPIFFE checks stay the target's, so the gateways route on the SNI and the mTLS session is end
// to end. Proxyless gRPC always dials directly: gRPC clients send no SNI from xDS (gRFC A29), so
// a gateway could not route their connections.
//
// A target in a datacenter whose federated view counts no healthy instance of its service gets
// no endpoints: its priority is skipped and traffic fails over past it.
func targetEndpoints(snap *mesh.Snapshot, t *mesh.Target, mode string) []mesh.Endpoint {
	if t.Datacenter != snap.Mesh.Datacenter {
		if counts, ok := snap.RemoteHealthy[t.Datacenter]; ok && counts[t.Service] == 0 {
			return nil
		}
	}
	if t.Datacenter == snap.Mesh.Datacenter || mode != mesh.MeshGatewayLocal && mode != mesh.MeshGatewayRemote {
		return snap.Endpoints(t)
	}
	var out []mesh.Endpoint
	if mode == mesh.MeshGatewayLocal {
		for _, g := range snap.MeshGateways[snap.Mesh.Datacenter] {
			out = append(out, mesh.Endpoint{Address: g.Address, Port: g.Port, Datacenter: snap.Mesh.Datacenter, Health: g.Health})
		}
		return out
	}
	for _, g := range snap.MeshGateways[t.Datacenter] {
		addr, port := g.WAN()
		out = append(out, mesh.Endpoint{Address: addr, Port: port, Datacenter: t.Datacenter, Health: g.Health})
	}
	return out
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
		le.LoadBalancingWeight.Value = uint32(ep.Weight) // its own, not yet shared
	}
	return le
}

// lbEndpoint is the endpoint address:port of weight 1. Its eight messages are made in one
// allocation: a load assignment has one per instance, and a server's first render thousands.
func lbEndpoint(address string, port int) *endpointv3.LbEndpoint {
	a := &struct {
		le   endpointv3.LbEndpoint
		host endpointv3.LbEndpoint_Endpoint
		ep   endpointv3.Endpoint
		addr corev3.Address
		sock corev3.Address_SocketAddress
		sa   corev3.SocketAddress
		port corev3.SocketAddress_PortValue
		w    wrapperspb.UInt32Value
	}{}
	a.port.PortValue = uint32(port)
	a.sa.Address, a.sa.PortSpecifier = address, &a.port
	a.sock.SocketAddress = &a.sa
	a.addr.Address = &a.sock
	a.ep.Address = &a.addr
	a.host.Endpoint = &a.ep
	a.w.Value = 1
	a.le.HostIdentifier, a.le.LoadBalancingWeight = &a.host, &a.w
	return &a.le
}

func socketAddress(address string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       address,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// laterHealthy reports whether one of targets has an endpoint not known critical.
func laterHealthy(snap *mesh.Snapshot, targets []*mesh.Target, mode string) bool {
	for _, t := range targets {
		if eps := targetEndpoints(snap, t, mode); len(eps) > 0 && !allCritical(eps) {
			return true
		}
	}
	return false
}

// allCritical reports whether every endpoint is known critical.
func allCritical(eps []mesh.Endpoint) bool {
	for _, ep := range eps {
		if ep.Health != mesh.HealthCritical {
			return false
		}
	}
	return true
}
