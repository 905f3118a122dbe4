package xds

import (
	"net"
	"strconv"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	mesh "github.com/meshgit/mesh"
)

// Listener names and filter names.
const (
	PublicListener = "public_listener"
	// GRPCServerListenerTemplate is the server_listener_resource_name_template of gRPC
	// bootstraps: %s is the listening IP:PORT.
	GRPCServerListenerTemplate = "grpc/server?xds.resource.listening_address=%s"

	hcmFilterName      = "envoy.filters.network.http_connection_manager"
	tcpProxyFilterName = "envoy.filters.network.tcp_proxy"
	routerFilterName   = "envoy.filters.http.router"
)

// GRPCServerListenerName is the listener a gRPC xDS server listening on host:port asks for.
func GRPCServerListenerName(host string, port int) string {
	return "grpc/server?xds.resource.listening_address=" + net.JoinHostPort(host, strconv.Itoa(port))
}

// OutboundListenerName is the name of an Envoy sidecar's listener for an upstream.
func OutboundListenerName(service string, port int) string {
	var buf [64]byte // most names fit: one allocation, the string's
	return string(strconv.AppendInt(append(append(buf[:0], service...), ":127.0.0.1:"...), int64(port), 10))
}

// listeners renders a proxy's listeners.
//
// Envoy: the inbound public_listener (mTLS requiring a client certificate, RBAC whose rules
// come over ECDS, then the local application) and one outbound listener per upstream on 127.0.0.1:localPort.
// gRPC: one API listener per upstream, named after the upstream service (the target
// xds:///service), and one server listener per endpoint of the proxy's own service.
func listeners(snap *mesh.Snapshot, p Proxy, m *memo) ([]*listenerv3.Listener, error) {
	svc := snap.Services[p.Service]
	if svc == nil {
		return nil, nil
	}
	var out []*listenerv3.Listener
	if p.Shape == ShapeGRPC {
		api, err := shared(m, m.setKey(memoListenerSet, p.Shape, p.Service), func() ([]*listenerv3.Listener, error) {
			var out []*listenerv3.Listener
			for _, u := range upstreams(snap, p.Service) {
				if snap.UpstreamChain(u) == nil {
					continue
				}
				l, err := shared(m, memoKey{kind: memoAPIListener, name: u.Service},
					func() (*listenerv3.Listener, error) { return apiListener(u.Service) })
				if err != nil {
					return nil, err
				}
				out = append(out, l)
			}
			return out, nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, api...)
		server, err := shared(m, memoKey{kind: memoServerLis, name: svc.Name},
			func() ([]*listenerv3.Listener, error) { return grpcServerListeners(snap, svc, m.principals()) })
		if err != nil {
			return nil, err
		}
		return append(out, server...), nil
	}
	if port := publicPort(svc, snap.Mesh.Datacenter); port > 0 {
		l, err := shared(m, memoKey{kind: memoPublicListener, name: publicListenerKey(svc, port)},
			func() (*listenerv3.Listener, error) { return publicListener(snap, svc, port, m) })
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	outbound, err := shared(m, m.setKey(memoListenerSet, p.Shape, p.Service), func() ([]*listenerv3.Listener, error) {
		return outboundListeners(snap, svc, m)
	})
	if err != nil {
		return nil, err
	}
	return append(out, outbound...), nil
}

// outboundListeners renders an Envoy sidecar's listeners for its upstreams: one per upstream
// with a local port, and in transparent mode the transparent listener.
func outboundListeners(snap *mesh.Snapshot, svc *mesh.Service, m *memo) ([]*listenerv3.Listener, error) {
	var out []*listenerv3.Listener
	ups := upstreams(snap, svc.Name)
	for _, u := range ups {
		chain := snap.UpstreamChain(u)
		if chain == nil || u.LocalPort <= 0 {
			continue
		}
		l, err := shared(m, memoKey{kind: memoOutboundLis, chain: chain, name: u.Service, port: u.LocalPort},
			func() (*listenerv3.Listener, error) {
				return outboundListener(OutboundListenerName(u.Service, u.LocalPort), u, chain, m)
			})
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	if svc.Transparent() {
		l, err := transparentListener(snap, ups, m)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// grpcServerListeners renders the server listeners of a gRPC service, one per endpoint address.
func grpcServerListeners(snap *mesh.Snapshot, svc *mesh.Service, pr *principals) ([]*listenerv3.Listener, error) {
	if len(svc.Endpoints) == 0 {
		return nil, nil
	}
	var out []*listenerv3.Listener
	rules := rbacRules(snap, svc.Name, mesh.IsHTTP(svc.Protocol), pr)
	seen := map[string]bool{}
	for _, ep := range svc.Endpoints {
		name := GRPCServerListenerName(ep.Address, ep.Port)
		if seen[name] {
			continue
		}
		seen[name] = true
		l, err := grpcServerListener(name, ep, svc.Name, rules)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// publicPort is the port of the public listener: the port the service's endpoints advertise
// (what other proxies dial), which the sidecar binds. Services whose endpoints use several ports
// take the first (endpoints are sorted) of the proxy's own datacenter dc, else the first; without
// endpoints, the service's port.
func publicPort(svc *mesh.Service, dc string) int {
	first := 0
	for _, ep := range svc.Endpoints {
		if ep.Port > 0 && ep.Datacenter == dc {
			return ep.Port
		}
		if ep.Port > 0 && first == 0 {
			first = ep.Port
		}
	}
	if first > 0 {
		return first
	}
	return svc.Port
}

// Envoy HTTP connection managers normalize request paths (normalize_path: RFC 3986 percent
// decoding of unreserved characters and dot-segment removal; merge_slashes) before RBAC and
// routing see them, exactly as mesh.NormalizePath does for the evaluator: otherwise
// "/v1/../admin" would pass an intention permission for "/v1/" and reach "/admin" in the
// application. The outbound listeners do the same so that routes match what the destination's
// RBAC will judge. Proxyless gRPC (server listeners, API listeners) does not normalize; it needs
// not: gRPC dispatches on the exact "/service/method" string, so a path that normalization would
// change names no method and is answered UNIMPLEMENTED whatever RBAC said.

// publicListenerKey names the public listener of svc on port in a memo by what publicListener
// reads of svc besides the snapshot: the port and the protocol's kind, and for a tcp service its
// name (its RBAC filter's default configuration names it). Services with the same port and an
// HTTP protocol share one listener. Service names are DNS labels: they contain no ':'.
func publicListenerKey(svc *mesh.Service, port int) string {
	if mesh.IsHTTP(svc.Protocol) {
		return "http:" + strconv.Itoa(port)
	}
	return "tcp:" + svc.Name + ":" + strconv.Itoa(port)
}

// publicListener is an Envoy sidecar's inbound listener. It depends on the service's protocol
// and port and on the mesh's TLS settings, not on intentions. Its TLS transport socket, the
// same for every service, is built once per memo.
func publicListener(snap *mesh.Snapshot, svc *mesh.Service, port int, m *memo) (*listenerv3.Listener, error) {
	ts, err := shared(m, memoKey{kind: memoDownstreamTLS}, func() (*corev3.TransportSocket, error) {
		return tlsTransportSocket(envoyDownstreamTLS(snap))
	})
	if err != nil {
		return nil, err
	}
	// The RBAC filter's rules come over ECDS (extensions.go): the listener does not change
	// when the intentions do.
	chain := &listenerv3.FilterChain{TransportSocket: ts}
	if mesh.IsHTTP(svc.Protocol) {
		rbac, err := discoveredHTTPRBAC()
		if err != nil {
			return nil, err
		}
		router, err := routerFilter()
		if err != nil {
			return nil, err
		}
		hcm, err := knownFilter(m, hcmFilterName, &hcmv3.HttpConnectionManager{
			StatPrefix:     PublicListener,
			CodecType:      hcmv3.HttpConnectionManager_AUTO,
			RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: localAppRouteConfig()},
			HttpFilters:    []*hcmv3.HttpFilter{rbac, router},
			NormalizePath:  wrapperspb.Bool(true),
			MergeSlashes:   true,
		})
		if err != nil {
			return nil, err
		}
		chain.Filters = []*listenerv3.Filter{hcm}
	} else {
		rbac, err := discoveredNetworkRBAC(svc.Name)
		if err != nil {
			return nil, err
		}
		tcp, err := knownFilter(m, tcpProxyFilterName, &tcpproxyv3.TcpProxy{
			StatPrefix:       PublicListener,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: localAppCluster},
		})
		if err != nil {
			return nil, err
		}
		chain.Filters = []*listenerv3.Filter{rbac, tcp}
	}
	return &listenerv3.Listener{
		Name:             PublicListener,
		Address:          socketAddress("0.0.0.0", port),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains:     []*listenerv3.FilterChain{chain},
	}, nil
}

// outboundListener is an Envoy sidecar's listener for upstream u on 127.0.0.1:u.LocalPort,
// named name (OutboundListenerName). Its filter depends on the upstream alone, not the port:
// it is shared with every other listener (and transparent filter chain) of the same upstream
// in m; its address, with every listener on the same local port.
func outboundListener(name string, u *mesh.Upstream, chain *mesh.Chain, m *memo) (*listenerv3.Listener, error) {
	filter, err := shared(m, memoKey{kind: memoOutbound, chain: chain, name: u.Service},
		func() (*listenerv3.Filter, error) { return outboundFilter(u, chain, m) })
	if err != nil {
		return nil, err
	}
	addr := sharedOK(m, memoKey{kind: memoLocalAddress, port: u.LocalPort},
		func() *corev3.Address { return socketAddress("127.0.0.1", u.LocalPort) })
	// The listener, its filter chain and their lists in one allocation (a server's first render
	// makes thousands).
	a := &struct {
		l       listenerv3.Listener
		fc      listenerv3.FilterChain
		chains  [1]*listenerv3.FilterChain
		filters [1]*listenerv3.Filter
	}{}
	a.filters[0] = filter
	a.fc.Filters = a.filters[:]
	a.chains[0] = &a.fc
	l := &a.l
	l.Name, l.Address, l.TrafficDirection, l.FilterChains = name, addr, corev3.TrafficDirection_OUTBOUND, a.chains[:]
	if err := learnOutboundEncoding(m, l, addr, filter); err != nil {
		return nil, err
	}
	return l, nil
}

// outboundFilter is the network filter that sends a connection to upstream u along its chain:
// an HTTP connection manager with the chain's routes (RDS), or a TCP proxy to its targets. m
// learns its references (knownFilter).
func outboundFilter(u *mesh.Upstream, chain *mesh.Chain, m *memo) (*listenerv3.Filter, error) {
	var filter *listenerv3.Filter
	var err error
	if mesh.IsHTTP(chain.Protocol) {
		f, enc, ok, herr := outboundHCMFilter("upstream."+u.Service, chain.Service)
		if herr != nil {
			return nil, herr
		}
		if ok {
			if m != nil { // what knownFilter would learn, and the filter's encoding
				learn(m, f, refsOf, &refs{routes: []string{chain.Service}})
				learn(m, f, rawOf, &enc)
			}
			return f, nil
		}
		hcm, herr := outboundHCM("upstream."+u.Service, chain.Service)
		if herr != nil {
			return nil, herr
		}
		filter, err = knownFilter(m, hcmFilterName, hcm)
	} else {
		tp := &tcpproxyv3.TcpProxy{StatPrefix: "upstream." + u.Service}
		var splits []mesh.TargetWeight
		if len(chain.Routes) > 0 {
			splits = chain.Routes[len(chain.Routes)-1].Splits
		}
		if len(splits) == 1 {
			tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: targetCluster(chain, splits[0].Target)}
		} else {
			wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
			for _, s := range splits {
				if s.Weight > 0 {
					wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{
						Name: targetCluster(chain, s.Target), Weight: uint32(s.Weight),
					})
				}
			}
			tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
		}
		filter, err = knownFilter(m, tcpProxyFilterName, tp)
	}
	if err != nil {
		return nil, err
	}
	return filter, nil
}

// apiListener is a gRPC client's listener for the target xds:///service: an HTTP connection
// manager that takes its routes over RDS. gRPC NACKs an RBAC filter here (RBAC is server side).
func apiListener(service string) (*listenerv3.Listener, error) {
	router, err := routerFilter()
	if err != nil {
		return nil, err
	}
	hcm, err := toAny(&hcmv3.HttpConnectionManager{
		StatPrefix: service,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsConfigSource(),
			RouteConfigName: service,
		}},
		HttpFilters: []*hcmv3.HttpFilter{router},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:        service,
		ApiListener: &listenerv3.ApiListener{ApiListener: hcm},
	}, nil
}

// grpcServerListener is the listener of a gRPC xDS server on one endpoint: its address must be
// the listening address; mTLS through the certificate provider; RBAC, then a non-forwarding route.
func grpcServerListener(name string, ep mesh.Endpoint, service string, rules *rbacv3.RBAC) (*listenerv3.Listener, error) {
	ts, err := tlsTransportSocket(grpcDownstreamTLS())
	if err != nil {
		return nil, err
	}
	rbac, err := httpRBACFilter(rules)
	if err != nil {
		return nil, err
	}
	router, err := routerFilter()
	if err != nil {
		return nil, err
	}
	hcm, err := typedNetworkFilter(hcmFilterName, &hcmv3.HttpConnectionManager{
		StatPrefix:     "inbound_" + service,
		CodecType:      hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: serverRouteConfig(service)},
		HttpFilters:    []*hcmv3.HttpFilter{rbac, router},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(ep.Address, ep.Port),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains: []*listenerv3.FilterChain{{
			Name:            "inbound_" + service,
			TransportSocket: ts,
			Filters:         []*listenerv3.Filter{hcm},
		}},
	}, nil
}

// routerFilter is the router HTTP filter, the same message for every connection manager: it
// is a constant, built once (messages are never modified once built).
var routerFilter = sync.OnceValues(func() (*hcmv3.HttpFilter, error) {
	return typedHTTPFilter(routerFilterName, &routerv3.Router{})
})

func typedHTTPFilter(name string, m proto.Message) (*hcmv3.HttpFilter, error) {
	a, err := toAny(m)
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}

func typedNetworkFilter(name string, m proto.Message) (*listenerv3.Filter, error) {
	a, err := toAny(m)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

// knownFilter is typedNetworkFilter telling m the references of the filter (filterRefs), read
// from msg itself, of which the filter's packed configuration is the encoding: the consistency
// check then does not unmarshal it again. TestKnownFilterRefs holds them to what filterRefs
// reads of the packed bytes.
func knownFilter(m *memo, name string, msg proto.Message) (*listenerv3.Filter, error) {
	f, err := typedNetworkFilter(name, msg)
	if err != nil || m == nil {
		return f, err
	}
	var r refs
	switch x := msg.(type) {
	case *hcmv3.HttpConnectionManager:
		if name == hcmFilterName {
			r = hcmRefs(x)
		}
	case *tcpproxyv3.TcpProxy:
		if name == tcpProxyFilterName {
			r = refs{clusters: tcpProxyRefs(x)}
		}
	}
	learn(m, f, refsOf, &r)
	return f, nil
}
