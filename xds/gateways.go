package xds

import (
	"sort"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	sniclusterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/sni_cluster/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	mesh "github.com/meshgit/mesh"
)

// Mesh gateways, in Consul's shapes. A gateway routes on the SNI of the connections it accepts
// and never terminates their TLS: the mTLS session is the sidecars', end to end.
//
//   - One listener, default:0.0.0.0:<port of the gateway's catalog instance>, with tls_inspector.
//   - One filter chain per other datacenter that has gateways: server_names
//     "*.<dc>.internal.<trustDomain>" → tcp_proxy to the cluster <dc>.internal.<trustDomain>,
//     whose endpoints are that datacenter's gateways (their WAN addresses).
//   - A last chain without a match: sni_cluster (the cluster named by the SNI) and tcp_proxy, to
//     the local targets: one cluster per target in the gateway's datacenter, named by its SNI,
//     without a transport socket, whose endpoints are the target's local endpoints.

// Filter names of gateways.
const (
	tlsInspectorName   = "envoy.filters.listener.tls_inspector"
	sniClusterName     = "envoy.filters.network.sni_cluster"
	gatewayListenerFmt = "default:0.0.0.0:"
)

// gatewayPort is the port of the gateway's own catalog instance in its datacenter (0: none yet).
func gatewayPort(snap *mesh.Snapshot, service string) int {
	for _, g := range snap.MeshGateways[snap.Mesh.Datacenter] {
		if g.Service == service && g.Port > 0 {
			return g.Port
		}
	}
	return 0
}

// remoteGatewayDCs returns the other datacenters of the mesh that have gateways, sorted.
func remoteGatewayDCs(snap *mesh.Snapshot) []string {
	var out []string
	for dc, gws := range snap.MeshGateways {
		if dc != snap.Mesh.Datacenter && len(gws) > 0 {
			out = append(out, dc)
		}
	}
	sort.Strings(out)
	return out
}

// DatacenterSNI is the SNI suffix of a datacenter's targets, and the cluster name of its gateways.
func DatacenterSNI(dc, trustDomain string) string { return dc + ".internal." + trustDomain }

// localTargets returns the targets in the gateway's datacenter that any chain names, plus each
// service's default target, sorted by SNI.
func localTargets(snap *mesh.Snapshot) []*mesh.Target {
	dc, td := snap.Mesh.Datacenter, snap.Mesh.TrustDomain
	seen := map[string]*mesh.Target{}
	for _, chains := range []map[string]*mesh.Chain{snap.Chains, snap.RemoteChains} {
		for _, c := range chains {
			for _, t := range c.Targets {
				if t.Datacenter == dc {
					seen[t.SNI] = t
				}
			}
		}
	}
	for name := range snap.Services {
		sni := mesh.SNI("", name, dc, td)
		if seen[sni] == nil {
			seen[sni] = &mesh.Target{Service: name, Datacenter: dc, SNI: sni}
		}
	}
	out := make([]*mesh.Target, 0, len(seen))
	for _, t := range seen {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SNI < out[j].SNI })
	return out
}

// renderGateway renders a mesh gateway's resources; it has no secrets (it holds no certificate).
func renderGateway(snap *mesh.Snapshot, p Proxy) (*Resources, error) {
	r := &Resources{}
	td := snap.Mesh.TrustDomain
	for _, dc := range remoteGatewayDCs(snap) {
		name := DatacenterSNI(dc, td)
		r.Clusters = append(r.Clusters, gatewayCluster(name, defaultConnectTimeout))
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
		loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Region: dc},
			LoadBalancingWeight: wrapperspb.UInt32(uint32(len(snap.MeshGateways[dc])))}
		for _, g := range snap.MeshGateways[dc] {
			addr, port := g.WAN()
			loc.LbEndpoints = append(loc.LbEndpoints, catalogEndpoint(mesh.Endpoint{Address: addr, Port: port, Health: g.Health}))
		}
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
		r.Endpoints = append(r.Endpoints, cla)
	}
	for _, t := range localTargets(snap) {
		timeout := t.ConnectTimeout.D()
		if timeout <= 0 {
			timeout = defaultConnectTimeout
		}
		r.Clusters = append(r.Clusters, gatewayCluster(t.SNI, timeout))
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: t.SNI}
		if eps := snap.Endpoints(t); len(eps) > 0 {
			loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Region: t.Datacenter, Zone: t.Service},
				LoadBalancingWeight: wrapperspb.UInt32(uint32(len(eps)))}
			for _, ep := range eps {
				loc.LbEndpoints = append(loc.LbEndpoints, catalogEndpoint(ep))
			}
			cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
		}
		r.Endpoints = append(r.Endpoints, cla)
	}
	if port := gatewayPort(snap, p.Service); port > 0 {
		l, err := gatewayListener(snap, port)
		if err != nil {
			return nil, err
		}
		r.Listeners = []*listenerv3.Listener{l}
	}
	r.sort()
	return r, nil
}

func gatewayCluster(name string, timeout time.Duration) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource(), ServiceName: name},
		ConnectTimeout:       durationpb.New(timeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
}

func gatewayListener(snap *mesh.Snapshot, port int) (*listenerv3.Listener, error) {
	inspector, err := toAny(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		return nil, err
	}
	l := &listenerv3.Listener{
		Name:             gatewayListenerFmt + strconv.Itoa(port),
		Address:          socketAddress("0.0.0.0", port),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name: tlsInspectorName, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector},
		}},
	}
	td := snap.Mesh.TrustDomain
	for _, dc := range remoteGatewayDCs(snap) {
		tcp, err := typedNetworkFilter(tcpProxyFilterName, &tcpproxyv3.TcpProxy{
			StatPrefix:       "mesh_gateway_remote.default." + dc,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: DatacenterSNI(dc, td)},
		})
		if err != nil {
			return nil, err
		}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{"*." + DatacenterSNI(dc, td)}},
			Filters:          []*listenerv3.Filter{tcp},
		})
	}
	sni, err := typedNetworkFilter(sniClusterName, &sniclusterv3.SniCluster{})
	if err != nil {
		return nil, err
	}
	tcp, err := typedNetworkFilter(tcpProxyFilterName, &tcpproxyv3.TcpProxy{
		StatPrefix:       "mesh_gateway_local.default",
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: ""}, // sni_cluster names it
	})
	if err != nil {
		return nil, err
	}
	l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{Filters: []*listenerv3.Filter{sni, tcp}})
	return l, nil
}
