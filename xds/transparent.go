package xds

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	mesh "github.com/meshgit/mesh"
)

// The transparent sidecar's shape, as Consul's transparent proxy: the host redirects the
// application's outbound connections to one listener, which matches each connection's original
// destination address against the virtual IPs of the services it may reach, one filter chain
// each, and passes any other connection through to where it was going (the original_dst
// cluster), unless the mesh says mesh destinations only.
const (
	// TransparentPort is the port of the transparent outbound listener on 127.0.0.1.
	TransparentPort = 15001
	// TransparentListener is its name.
	TransparentListener = "outbound_listener:127.0.0.1:15001"
	// PassthroughCluster sends a connection to its original destination.
	PassthroughCluster = "original-destination"

	originalDstFilterName = "envoy.filters.listener.original_dst"
)

// transparentListener renders the outbound listener of a transparent Envoy sidecar: a filter
// chain per upstream with a chain, matched by the upstream's virtual IP, in upstream order.
func transparentListener(snap *mesh.Snapshot, ups []*mesh.Upstream, m *memo) (*listenerv3.Listener, error) {
	origDst, err := toAny(&originaldstv3.OriginalDst{})
	if err != nil {
		return nil, err
	}
	vips := virtualIPs(snap)
	l := &listenerv3.Listener{
		Name:             TransparentListener,
		Address:          socketAddress("127.0.0.1", TransparentPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       originalDstFilterName,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: origDst},
		}},
	}
	for _, u := range ups {
		chain := snap.UpstreamChain(u)
		vip, ok := vips[u.Service]
		if chain == nil || !ok {
			continue
		}
		filter, err := shared(m, memoKey{kind: memoOutbound, chain: chain, name: u.Service},
			func() (*listenerv3.Filter, error) { return outboundFilter(u, chain, m) })
		if err != nil {
			return nil, err
		}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name: u.Service,
			FilterChainMatch: &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{{
				AddressPrefix: vip, PrefixLen: wrapperspb.UInt32(32),
			}}},
			Filters: []*listenerv3.Filter{filter},
		})
	}
	if !snap.Mesh.TransparentProxy.MeshDestinationsOnly {
		tcp, err := knownFilter(m, tcpProxyFilterName, &tcpproxyv3.TcpProxy{
			StatPrefix:       PassthroughCluster,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: PassthroughCluster},
		})
		if err != nil {
			return nil, err
		}
		l.DefaultFilterChain = &listenerv3.FilterChain{Name: PassthroughCluster, Filters: []*listenerv3.Filter{tcp}}
	}
	return l, nil
}

// passthroughCluster is the cluster of connections to addresses outside the mesh.
func passthroughCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 PassthroughCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
	}
}

// needsPassthrough reports whether a proxy's sidecar passes connections outside the mesh through.
func needsPassthrough(snap *mesh.Snapshot, p Proxy) bool {
	return p.Shape == ShapeEnvoy && snap.Services[p.Service].Transparent() && !snap.Mesh.TransparentProxy.MeshDestinationsOnly
}

// virtualIPs returns the snapshot's virtual IPs; a snapshot built without them (by hand, not
// by the compiler) gets the ones the compiler would have given.
func virtualIPs(snap *mesh.Snapshot) map[string]string {
	if snap.VirtualIPs != nil {
		return snap.VirtualIPs
	}
	return mesh.AssignVirtualIPs(snap.ServiceNames())
}
