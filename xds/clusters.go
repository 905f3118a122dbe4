package xds

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	mesh "github.com/meshgit/mesh"
)

// localAppCluster is the Envoy cluster of the application behind the sidecar.
const localAppCluster = "local_app"

// defaultConnectTimeout applies when a target has none.
const defaultConnectTimeout = 5 * time.Second

// proxyTarget is a target that a proxy sends traffic to, with the chain it came from.
type proxyTarget struct {
	chain  *mesh.Chain
	target *mesh.Target
	mode   string // the mesh gateway mode of the upstream it came from
}

// proxyTargets returns the targets a proxy's routes and tcp proxies name, sorted by SNI.
// Failover targets are not clusters of their own: they are lower priorities of the target's
// endpoints (see endpoints.go).
func proxyTargets(snap *mesh.Snapshot, service string) []proxyTarget {
	seen := map[string]bool{}
	var out []proxyTarget
	for _, u := range upstreams(snap, service) {
		chain := snap.UpstreamChain(u)
		if chain == nil {
			continue
		}
		for _, r := range chain.Routes {
			for _, s := range r.Splits {
				t := chain.Targets[s.Target]
				if t == nil || seen[t.SNI] {
					continue
				}
				seen[t.SNI] = true
				out = append(out, proxyTarget{chain: chain, target: t, mode: snap.Mesh.GatewayMode(u)})
			}
		}
	}
	slices.SortFunc(out, func(a, b proxyTarget) int { return strings.Compare(a.target.SNI, b.target.SNI) }) // SNIs are unique
	return out
}

// proxyTargets is proxyTargets(snap, p.Service), listed once per list of upstreams and shape
// in m (the cluster and endpoint sets of the services with the same upstreams both read it).
// The list is shared: it is never modified.
func (m *memo) proxyTargets(snap *mesh.Snapshot, p Proxy) []proxyTarget {
	return sharedOK(m, m.setKey(memoTargets, p.Shape, p.Service), func() []proxyTarget { return proxyTargets(snap, p.Service) })
}

// clusters renders a proxy's clusters: one EDS cluster per target, named by its SNI, whose TLS
// checks the SPIFFE ID of the target (and of its failover targets); and for Envoy the local_app
// cluster of the application behind the sidecar.
func clusters(snap *mesh.Snapshot, p Proxy, m *memo) ([]*clusterv3.Cluster, error) {
	var out []*clusterv3.Cluster
	if p.Shape == ShapeEnvoy {
		if svc := snap.Services[p.Service]; svc != nil && (svc.Port > 0 || len(svc.Endpoints) > 0) {
			c, err := shared(m, memoKey{kind: memoLocalApp, name: localAppKey(svc)}, func() (*clusterv3.Cluster, error) { return localApp(svc) })
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	if needsPassthrough(snap, p) {
		out = append(out, passthroughCluster())
	}
	targets, err := shared(m, m.setKey(memoClusterSet, p.Shape, p.Service), func() ([]*clusterv3.Cluster, error) {
		var out []*clusterv3.Cluster
		for _, pt := range m.proxyTargets(snap, p) {
			c, err := shared(m, memoKey{kind: memoTargetCluster, shape: p.Shape, chain: pt.chain, target: pt.target, name: pt.mode},
				func() (*clusterv3.Cluster, error) { return buildTargetCluster(snap, pt, p.Shape, m) })
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return append(out, targets...), nil
}

// localAppKey names the local_app cluster of svc in a memo by all that localApp reads of svc:
// its port and whether it speaks HTTP/2. Services alike in both share one cluster.
func localAppKey(svc *mesh.Service) string {
	return strconv.FormatBool(localAppHTTP2(svc)) + ":" + strconv.Itoa(svc.Port)
}

// localAppHTTP2 reports whether the sidecar speaks HTTP/2 to svc's application.
func localAppHTTP2(svc *mesh.Service) bool {
	return svc.Protocol == mesh.ProtocolHTTP2 || svc.Protocol == mesh.ProtocolGRPC
}

// localApp is the cluster of the application behind svc's sidecar: it reads svc's port and
// protocol only (localAppKey).
func localApp(svc *mesh.Service) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:                 localAppCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: localAppCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint("127.0.0.1", svc.Port)},
			}},
		},
	}
	if localAppHTTP2(svc) {
		if err := setHTTP2(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// setHTTP2 makes Envoy speak HTTP/2 to the cluster's endpoints.
func setHTTP2(c *clusterv3.Cluster) error {
	opts, err := http2Options()
	if err != nil {
		return err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		// Its own Any of the shared bytes, not one message shared by every cluster:
		// go-control-plane's server marshals each cluster per stream, and streams marshalling
		// one message on every core contend for its size cache.
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {TypeUrl: opts.TypeUrl, Value: opts.Value},
	}
	return nil
}

// http2Options are the protocol options of a cluster whose endpoints speak HTTP/2: a
// constant, validated and packed once (never modified).
var http2Options = sync.OnceValues(func() (*anypb.Any, error) {
	return toAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
})

// buildTargetCluster renders the cluster of one target.
func buildTargetCluster(snap *mesh.Snapshot, pt proxyTarget, shape Shape, m *memo) (*clusterv3.Cluster, error) {
	t := pt.target
	timeout := t.ConnectTimeout.D()
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	// The cluster and its fixed parts in one allocation (a server's first render makes
	// thousands).
	a := &struct {
		c   clusterv3.Cluster
		typ clusterv3.Cluster_Type
		eds clusterv3.Cluster_EdsClusterConfig
		d   durationpb.Duration
	}{}
	a.typ.Type = clusterv3.Cluster_EDS
	a.eds.EdsConfig, a.eds.ServiceName = adsConfigSource(), t.SNI
	a.d.Seconds, a.d.Nanos = int64(timeout/time.Second), int32(timeout%time.Second) // durationpb.New's
	c := &a.c
	c.Name, c.ClusterDiscoveryType, c.EdsClusterConfig, c.ConnectTimeout = t.SNI, &a.typ, &a.eds, &a.d
	setLBPolicy(c, t.LoadBalancer, shape)
	sans := targetSANs(snap, pt)
	var ts *corev3.TransportSocket
	var err error
	if shape == ShapeGRPC {
		ts, err = tlsTransportSocket(grpcUpstreamTLS(t.SNI, sans))
	} else {
		if mesh.IsHTTP(pt.chain.Protocol) && pt.chain.Protocol != mesh.ProtocolHTTP {
			if err := setHTTP2(c); err != nil {
				return nil, err
			}
		}
		ts, err = envoyUpstreamTLSSocket(snap, t.SNI, sans, m) // tlsTransportSocket(envoyUpstreamTLS(snap, t.SNI, sans))
	}
	if err != nil {
		return nil, err
	}
	c.TransportSocket = ts
	if shape == ShapeEnvoy {
		// A failover target reached through mesh gateways needs its own SNI, which the gateways
		// route on: its endpoints carry metadata that selects a transport socket with it.
		for _, ft := range gatewayFailovers(snap, pt) {
			fts, err := envoyUpstreamTLSSocket(snap, ft.SNI, sans, m)
			if err != nil {
				return nil, err
			}
			match, err := structpb.NewStruct(map[string]any{transportSocketMatchTarget: ft.ID})
			if err != nil {
				return nil, err
			}
			c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
				Name: ft.ID, Match: match, TransportSocket: fts,
			})
		}
	}
	learnTargetClusterEncoding(m, c)
	return c, nil
}

// transportSocketMatchTarget is the endpoint metadata key (under
// envoy.transport_socket_match) that names the failover target whose SNI the endpoint needs.
const transportSocketMatchTarget = "target"

// gatewayFailovers returns the failover targets of pt in other datacenters that its upstream's
// mesh gateway mode reaches through gateways, in failover order.
func gatewayFailovers(snap *mesh.Snapshot, pt proxyTarget) []*mesh.Target {
	if pt.mode != mesh.MeshGatewayLocal && pt.mode != mesh.MeshGatewayRemote {
		return nil
	}
	var out []*mesh.Target
	for _, id := range pt.target.Failover {
		if ft := pt.chain.Targets[id]; ft != nil && ft.Datacenter != snap.Mesh.Datacenter && ft.SNI != pt.target.SNI {
			out = append(out, ft)
		}
	}
	return out
}

// setLBPolicy maps the mesh's load-balancing policy. Proxyless gRPC clients get only what every
// gRPC xDS client understands, round_robin and ring_hash: grpc-go has least_request, but gRPC
// C-core 1.51 and grpc-js 1.14 refuse a Cluster whose lb_policy is anything else ("unsupported
// lb_policy"), which would fail every call to that upstream. So for gRPC clients least_request
// and random become round_robin and maglev becomes ring_hash. The rendering is shared by every
// client of a shape, so this is not decided per client version (see interop/README.md).
func setLBPolicy(c *clusterv3.Cluster, policy string, shape Shape) {
	switch policy {
	case mesh.LBLeastRequest:
		if shape == ShapeGRPC {
			c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		} else {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		}
	case mesh.LBRandom:
		if shape == ShapeGRPC {
			c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		} else {
			c.LbPolicy = clusterv3.Cluster_RANDOM
		}
	case mesh.LBRingHash:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
	case mesh.LBMaglev:
		if shape == ShapeGRPC {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
		} else {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
		}
	default:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	}
	if c.LbPolicy == clusterv3.Cluster_RING_HASH {
		// gRPC accepts only xxHash.
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			HashFunction: clusterv3.Cluster_RingHashLbConfig_XX_HASH,
		}}
	}
}

// targetSANs returns the SPIFFE IDs a target's endpoints (and its failover targets' endpoints)
// present, sorted and unique.
func targetSANs(snap *mesh.Snapshot, pt proxyTarget) []string {
	td := snap.Mesh.TrustDomain
	out := make([]string, 1, 1+len(pt.target.Failover))
	out[0] = mesh.SpiffeID(td, pt.target.Datacenter, pt.target.Service)
	for _, id := range pt.target.Failover {
		if ft := pt.chain.Targets[id]; ft != nil {
			out = append(out, mesh.SpiffeID(td, ft.Datacenter, ft.Service))
		}
	}
	if len(out) > 1 {
		slices.Sort(out)
		out = slices.Compact(out)
	}
	return out
}

func sanMatchers(sans []string) []*matcherv3.StringMatcher {
	out := make([]*matcherv3.StringMatcher, len(sans))
	for i, s := range sans {
		out[i] = exactString(s)
	}
	return out
}

// adsConfigSource is the config source of everything a proxy fetches (EDS, RDS, SDS, ECDS):
// ADS, API v3. It is a constant, built once and shared by every message that names it
// (messages are never modified once built).
var adsConfigSource = sync.OnceValue(func() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
})
