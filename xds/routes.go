package xds

import (
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	mesh "github.com/meshgit/mesh"
)

// routes renders the route configurations of a proxy: one per HTTP upstream, named after the
// upstream service, whose routes are the upstream's discovery chain in order (the chain's last
// route catches everything). Envoy and gRPC share the shape; only the timeout field differs
// (gRPC reads max_stream_duration, Envoy the route timeout).
func routes(snap *mesh.Snapshot, p Proxy, m *memo) []*routev3.RouteConfiguration {
	set := sharedOK(m, m.setKey(memoRouteSet, p.Shape, p.Service), func() []*routev3.RouteConfiguration {
		var out []*routev3.RouteConfiguration
		for _, u := range upstreams(snap, p.Service) {
			chain := snap.UpstreamChain(u)
			// gRPC reaches every upstream through an API listener and RDS; Envoy only HTTP ones.
			if chain == nil || (!mesh.IsHTTP(chain.Protocol) && p.Shape != ShapeGRPC) {
				continue
			}
			out = append(out, sharedOK(m, memoKey{kind: memoRoute, shape: p.Shape, chain: chain},
				func() *routev3.RouteConfiguration {
					rc := routeConfig(snap, chain, p.Shape)
					learnRouteConfigEncoding(m, rc)
					return rc
				}))
		}
		return out
	})
	return append([]*routev3.RouteConfiguration(nil), set...) // a copy: Resources.sort sorts in place
}

// routeConfig renders one upstream's chain.
func routeConfig(snap *mesh.Snapshot, chain *mesh.Chain, shape Shape) *routev3.RouteConfiguration {
	vh := &routev3.VirtualHost{Name: chain.Service, Domains: []string{"*"}}
	for i := range chain.Routes {
		if r := chainRoute(snap, chain, &chain.Routes[i], shape); r != nil {
			vh.Routes = append(vh.Routes, r)
		}
	}
	return &routev3.RouteConfiguration{
		Name:             chain.Service,
		VirtualHosts:     []*routev3.VirtualHost{vh},
		ValidateClusters: wrapperspb.Bool(true),
	}
}

// chainRoute renders one route of a chain, or returns nil when the route can never match for
// this shape.
func chainRoute(snap *mesh.Snapshot, chain *mesh.Chain, r *mesh.ChainRoute, shape Shape) *routev3.Route {
	match := r.Match
	if shape == ShapeGRPC && match != nil && len(match.Methods) > 0 {
		// gRPC clients route on their outgoing metadata, which has no :method; every gRPC
		// request is a POST. So a methods condition either always holds or never does.
		if !slices.Contains(match.Methods, "POST") {
			return nil
		}
		m := *match
		m.Methods = nil
		match = &m
	}
	// The route, its action and its cluster in one allocation (a server's first render makes
	// thousands).
	a := &struct {
		r       routev3.Route
		route   routev3.Route_Route
		action  routev3.RouteAction
		cluster routev3.RouteAction_Cluster
	}{}
	action := &a.action
	switch {
	case len(r.Splits) == 1:
		a.cluster.Cluster = targetCluster(chain, r.Splits[0].Target)
		action.ClusterSpecifier = &a.cluster
	default:
		wc := &routev3.WeightedCluster{}
		var total uint32
		for _, s := range r.Splits {
			if s.Weight <= 0 {
				continue
			}
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name:   targetCluster(chain, s.Target),
				Weight: wrapperspb.UInt32(uint32(s.Weight)),
			})
			total += uint32(s.Weight)
		}
		// total_weight is deprecated, and Envoy, grpc-go and grpc-js sum the weights themselves,
		// but gRPC C-core 1.51 takes an unset total_weight for 100 and refuses the whole
		// RouteConfiguration when the weights sum to anything else ("RouteAction
		// weighted_cluster has incorrect total weight").
		wc.TotalWeight = wrapperspb.UInt32(total)
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if r.PrefixRewrite != "" {
		action.PrefixRewrite = r.PrefixRewrite
	}
	if !r.RequestTimeout.IsZero() {
		if shape == ShapeGRPC {
			action.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{
				MaxStreamDuration: durationpb.New(r.RequestTimeout.D()),
			}
		} else {
			action.Timeout = durationpb.New(r.RequestTimeout.D())
		}
	}
	if r.NumRetries > 0 || len(r.RetryOn) > 0 {
		rp := &routev3.RetryPolicy{RetryOn: strings.Join(r.RetryOn, ",")}
		if rp.RetryOn == "" {
			rp.RetryOn = defaultRetryOn(shape)
		}
		if r.NumRetries > 0 {
			rp.NumRetries = wrapperspb.UInt32(uint32(r.NumRetries))
		}
		action.RetryPolicy = rp
	}
	a.route.Route = action
	a.r.Match, a.r.Action = routeMatch(match), &a.route
	return &a.r
}

func defaultRetryOn(shape Shape) string {
	if shape == ShapeGRPC {
		return "unavailable"
	}
	return "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
}

// targetCluster returns the cluster name (SNI) of a chain target.
func targetCluster(chain *mesh.Chain, id string) string {
	if t := chain.Targets[id]; t != nil {
		return t.SNI
	}
	return id // the compiler guarantees targets exist; a dangling one fails validation later
}

// routeMatch renders a chain route's match. Route matching uses Envoy's native matchers, which
// ignore the query string for paths and match query parameters by name.
func routeMatch(m *mesh.HTTPMatch) *routev3.RouteMatch {
	if m == nil {
		// Not one message shared by every route: go-control-plane's server marshals each
		// route per stream, and streams marshalling one message on every core contend for its
		// size cache.
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	}
	rm := &routev3.RouteMatch{}
	switch {
	case m.Path != "":
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	case m.PathRegex != "":
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.PathRegex}}
	default:
		// An empty prefix would fail validation; "" prefix and "/" differ only for the empty
		// path, which HTTP never sends.
		prefix := m.PathPrefix
		if prefix == "" {
			prefix = "/"
		}
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: prefix}
	}
	if len(m.Methods) > 0 {
		rm.Headers = append(rm.Headers, methodsMatcher(m.Methods))
	}
	for _, h := range m.Header {
		hm, negate := headerMatcher(h)
		if negate {
			// Route matchers have no NOT: an inverted present match is absent.
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
			hm.InvertMatch = true
		} else if hm.InvertMatch {
			rm.Headers = append(rm.Headers, presenceGuard(hm.Name))
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, q := range m.QueryParam {
		qm := &routev3.QueryParameterMatcher{Name: q.Name}
		switch q.Kind {
		case mesh.MatchPresent:
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		case mesh.MatchRegex:
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: regexString(q.Value)}
		default:
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: exactString(q.Value)}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	return rm
}

// serverRouteConfig is the inline route configuration of a gRPC server listener: gRPC servers
// do not forward, they only need a route that matches so that the HTTP filters run.
func serverRouteConfig(service string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: "inbound_" + service,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "inbound_" + service,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
			}},
		}},
	}
}

// localAppRouteConfig is the inline route configuration of an Envoy public listener: everything
// that RBAC lets through goes to the local application, the same for every service (publicListenerKey).
func localAppRouteConfig() *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: "public_listener",
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "public_listener",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: localAppCluster},
				}},
			}},
		}},
	}
}
