package xds

import (
	"sync"
	"unicode/utf8"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Route configurations written straight to bytes.
//
// An upstream's route configuration (routeConfig) is built once per memo and marshalled once.
// Its shape is small: one virtual host, whose routes each have a match and a route action (a
// cluster or weighted clusters, a prefix rewrite, a timeout or maximum stream duration, a retry
// policy). appendRouteConfig writes it as protobuf-go's deterministic marshal does (fields
// outside oneofs in field number order, then the oneofs in declaration order: endpointenc.go);
// a match with more than a path prefix or path (headers, query parameters, a regex) is
// marshalled by protobuf-go and its encoding embedded, as a nested message's encoding is the
// encoding of the message alone. Anything the encoder does not know (another oneof member, a
// string that is not valid UTF-8, which protobuf-go refuses to marshal) makes it give up, and
// the configuration is marshalled whole. TestRouteConfigEncoding holds the two together on
// every route configuration of random, transparent and generated meshes and both shapes, and
// requires every field they set to be one the encoder writes; TestRouteConfigEncodingEdges
// covers the edges and the field numbers.

// Field numbers of the messages a route configuration is made of.
const (
	rcNameField             = 1  // RouteConfiguration.name
	rcVirtualHostsField     = 2  // RouteConfiguration.virtual_hosts
	rcValidateClustersField = 7  // RouteConfiguration.validate_clusters
	vhNameField             = 1  // VirtualHost.name
	vhDomainsField          = 2  // VirtualHost.domains
	vhRoutesField           = 3  // VirtualHost.routes
	routeMatchField         = 1  // Route.match
	routeRouteField         = 2  // Route.route (oneof action)
	matchPrefixField        = 1  // RouteMatch.prefix (oneof path_specifier)
	matchPathField          = 2  // RouteMatch.path (oneof path_specifier)
	actionClusterField      = 1  // RouteAction.cluster (oneof cluster_specifier)
	actionWeightedField     = 3  // RouteAction.weighted_clusters (oneof cluster_specifier)
	actionPrefixRewrite     = 5  // RouteAction.prefix_rewrite
	actionTimeoutField      = 8  // RouteAction.timeout
	actionRetryPolicyField  = 9  // RouteAction.retry_policy
	actionMaxStreamDuration = 36 // RouteAction.max_stream_duration
	weightedClustersField   = 1  // WeightedCluster.clusters
	weightedTotalField      = 3  // WeightedCluster.total_weight
	clusterWeightNameField  = 1  // WeightedCluster.ClusterWeight.name
	clusterWeightField      = 2  // WeightedCluster.ClusterWeight.weight
	retryOnField            = 1  // RetryPolicy.retry_on
	retryNumField           = 2  // RetryPolicy.num_retries
	maxStreamDurationField  = 1  // RouteAction.MaxStreamDuration.max_stream_duration
)

// learnRouteConfigEncoding tells m the content hash and wire of rc, written by
// appendRouteConfig, unless the encoder gives up (then hashing marshals it). A nil m learns
// nothing.
func learnRouteConfigEncoding(m *memo, rc *routev3.RouteConfiguration) {
	if m == nil {
		return
	}
	if enc, ok := encodeRouteConfig(rc); ok {
		m.learnEncoded(rc, enc, routeConfigTypeURL, rc.Name)
	}
}

// routeConfigTypeURL is the type URL of a RouteConfiguration.
var routeConfigTypeURL = typeURL(&routev3.RouteConfiguration{})

// routeScratch is scratch space for encoding route configurations (encodeRouteConfig).
var routeScratch = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// encodeRouteConfig returns the deterministic encoding of rc, in an allocation of its size, or
// false when appendRouteConfig gives up.
func encodeRouteConfig(rc *routev3.RouteConfiguration) ([]byte, bool) {
	p := routeScratch.Get().(*[]byte)
	defer routeScratch.Put(p)
	b, ok := appendRouteConfig((*p)[:0], rc)
	*p = b[:0]
	if !ok {
		return nil, false
	}
	return append(make([]byte, 0, len(b)), b...), true
}

// appendRouteConfig appends the deterministic encoding of rc to b, or reports false when it
// holds what the encoder does not write.
func appendRouteConfig(b []byte, rc *routev3.RouteConfiguration) ([]byte, bool) {
	w := encWriter{b: b, ok: true}
	w.str(rcNameField, rc.Name)
	for _, vh := range rc.VirtualHosts {
		if vh == nil {
			return b, false
		}
		w.nested(rcVirtualHostsField, func() { w.virtualHost(vh) })
	}
	if v := rc.ValidateClusters; v != nil {
		w.nested(rcValidateClustersField, func() { w.boolField(wrapperValueField, v.Value) })
	}
	return w.b, w.ok
}

// encWriter appends fields to b, and records in ok whether everything could be written.
type encWriter struct {
	b  []byte
	ok bool
}

// nested appends field num holding the message body writes: a length of one byte is
// reserved (most nested messages are shorter than 128 bytes) and the body moved up when its
// length takes more.
func (w *encWriter) nested(num protowire.Number, body func()) {
	w.b = protowire.AppendTag(w.b, num, protowire.BytesType)
	at := len(w.b)
	w.b = append(w.b, 0)
	body()
	n := len(w.b) - at - 1
	if k := protowire.SizeVarint(uint64(n)); k > 1 {
		w.b = append(w.b, make([]byte, k-1)...)
		copy(w.b[at+k:], w.b[at+1:at+1+n])
	}
	protowire.AppendVarint(w.b[at:at], uint64(n))
}

// str appends a proto3 string field (nothing when empty); a string that is not valid UTF-8
// cannot be written.
func (w *encWriter) str(num protowire.Number, s string) {
	if !utf8.ValidString(s) {
		w.ok = false
	}
	w.b = appendStringField(w.b, num, s)
}

// member appends a string that is a oneof member or an element of a repeated field: written
// even when empty.
func (w *encWriter) member(num protowire.Number, s string) {
	if !utf8.ValidString(s) {
		w.ok = false
	}
	w.b = protowire.AppendTag(w.b, num, protowire.BytesType)
	w.b = protowire.AppendString(w.b, s)
}

func (w *encWriter) boolField(num protowire.Number, v bool) {
	if v {
		w.b = appendVarintField(w.b, num, 1)
	}
}

func (w *encWriter) uint32Value(num protowire.Number, v *wrapperspb.UInt32Value) {
	w.b = appendUInt32ValueField(w.b, num, v)
}

func (w *encWriter) duration(num protowire.Number, d *durationpb.Duration) {
	if d == nil {
		return
	}
	w.b = protowire.AppendTag(w.b, num, protowire.BytesType)
	w.b = protowire.AppendVarint(w.b, uint64(durationSize(d)))
	w.b = appendVarintField(w.b, durationSecondsField, uint64(d.Seconds))
	w.b = appendVarintField(w.b, durationNanosField, uint64(int64(d.Nanos)))
}

func (w *encWriter) virtualHost(vh *routev3.VirtualHost) {
	w.str(vhNameField, vh.Name)
	for _, d := range vh.Domains {
		w.member(vhDomainsField, d)
	}
	for _, r := range vh.Routes {
		if r == nil {
			w.ok = false
			return
		}
		w.nested(vhRoutesField, func() { w.route(r) })
	}
}

func (w *encWriter) route(r *routev3.Route) {
	if m := r.Match; m != nil {
		w.match(m)
	}
	switch a := r.Action.(type) {
	case nil:
	case *routev3.Route_Route:
		if a.Route == nil {
			w.b = append(protowire.AppendTag(w.b, routeRouteField, protowire.BytesType), 0)
			return
		}
		w.nested(routeRouteField, func() { w.action(a.Route) })
	default:
		w.ok = false
	}
}

// match appends a route's match: written here when it is a path prefix or a path alone, else
// marshalled by protobuf-go.
func (w *encWriter) match(m *routev3.RouteMatch) {
	simple := m.CaseSensitive == nil && m.RuntimeFraction == nil && len(m.Headers) == 0 && len(m.QueryParameters) == 0 &&
		len(m.Cookies) == 0 && m.Grpc == nil && m.TlsContext == nil && len(m.DynamicMetadata) == 0 && m.FilterState == nil
	switch p := m.PathSpecifier.(type) {
	case *routev3.RouteMatch_Prefix:
		if simple {
			w.nested(routeMatchField, func() { w.member(matchPrefixField, p.Prefix) })
			return
		}
	case *routev3.RouteMatch_Path:
		if simple {
			w.nested(routeMatchField, func() { w.member(matchPathField, p.Path) })
			return
		}
	}
	enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		w.ok = false
		return
	}
	w.b = appendBytesField(w.b, routeMatchField, enc)
}

func (w *encWriter) action(a *routev3.RouteAction) {
	w.str(actionPrefixRewrite, a.PrefixRewrite)
	w.duration(actionTimeoutField, a.Timeout)
	if rp := a.RetryPolicy; rp != nil {
		w.nested(actionRetryPolicyField, func() {
			w.str(retryOnField, rp.RetryOn)
			w.uint32Value(retryNumField, rp.NumRetries)
		})
	}
	if d := a.MaxStreamDuration; d != nil {
		w.nested(actionMaxStreamDuration, func() { w.duration(maxStreamDurationField, d.MaxStreamDuration) })
	}
	switch c := a.ClusterSpecifier.(type) {
	case nil:
	case *routev3.RouteAction_Cluster:
		w.member(actionClusterField, c.Cluster)
	case *routev3.RouteAction_WeightedClusters:
		w.nested(actionWeightedField, func() {
			if c.WeightedClusters == nil {
				return
			}
			for _, cw := range c.WeightedClusters.Clusters {
				if cw == nil {
					w.ok = false
					return
				}
				w.nested(weightedClustersField, func() {
					w.str(clusterWeightNameField, cw.Name)
					w.uint32Value(clusterWeightField, cw.Weight)
				})
			}
			w.uint32Value(weightedTotalField, c.WeightedClusters.TotalWeight)
		})
	default:
		w.ok = false
	}
}
