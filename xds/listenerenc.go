package xds

import (
	"fmt"
	"sync"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Outbound listeners written straight to bytes.
//
// An Envoy sidecar has an outbound listener per upstream, and the listeners of a mesh differ
// only in their name and local port: their filter is the upstream's (shared by every listener
// of that upstream) and their address the local port's (shared by every listener on it). The
// memo marshals each filter and address once; an outbound listener's deterministic encoding is
// then its name, those two encodings and its traffic direction, in field number order, which
// is what protobuf-go's deterministic marshal writes (a message's set fields in field number
// order, each nested message as its own encoding). TestOutboundListenerEncoding holds the two
// together on every outbound listener of random and generated meshes, and the shared
// rendering tests hold every served byte to rendering without a memo (which marshals).

// Field numbers of the messages an outbound listener is made of.
const (
	listenerNameField             = 1  // Listener.name
	listenerAddressField          = 2  // Listener.address
	listenerFilterChainsField     = 3  // Listener.filter_chains
	listenerTrafficDirectionField = 16 // Listener.traffic_direction
	filterChainFiltersField       = 3  // FilterChain.filters
)

// learnOutboundEncoding tells m the content hash and wire of l, an outbound listener
// {name, address: addr, filter_chains: [{filters: [filter]}], traffic_direction}, encoded from
// the encodings of addr and filter (each marshalled once per memo). A nil m learns nothing.
func learnOutboundEncoding(m *memo, l *listenerv3.Listener, addr *corev3.Address, filter *listenerv3.Filter) error {
	if m == nil {
		return nil
	}
	addrEnc, err := m.encodingOf(addr)
	if err != nil {
		return err
	}
	filterEnc, err := m.encodingOf(filter)
	if err != nil {
		return err
	}
	enc := appendOutboundListener(nil, l.Name, addrEnc, filterEnc, l.TrafficDirection)
	m.learnEncoded(l, enc, listenerTypeURL, l.Name)
	return nil
}

// appendOutboundListener appends to b the deterministic encoding of a Listener whose name is
// name, whose address and only filter chain's only filter are encoded as addr and filter, and
// whose traffic direction is dir. A nil b is allocated to the size of the encoding.
func appendOutboundListener(b []byte, name string, addr, filter []byte, dir corev3.TrafficDirection) []byte {
	chainLen := protowire.SizeTag(filterChainFiltersField) + protowire.SizeBytes(len(filter))
	if b == nil {
		n := protowire.SizeTag(listenerNameField) + protowire.SizeBytes(len(name)) +
			protowire.SizeTag(listenerAddressField) + protowire.SizeBytes(len(addr)) +
			protowire.SizeTag(listenerFilterChainsField) + protowire.SizeBytes(chainLen) +
			protowire.SizeTag(listenerTrafficDirectionField) + protowire.SizeVarint(uint64(dir))
		b = make([]byte, 0, n)
	}
	if name != "" { // proto3: an empty string is not written
		b = protowire.AppendTag(b, listenerNameField, protowire.BytesType)
		b = protowire.AppendString(b, name)
	}
	b = protowire.AppendTag(b, listenerAddressField, protowire.BytesType)
	b = protowire.AppendBytes(b, addr)
	b = protowire.AppendTag(b, listenerFilterChainsField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(chainLen))
	b = protowire.AppendTag(b, filterChainFiltersField, protowire.BytesType)
	b = protowire.AppendBytes(b, filter)
	if dir != 0 { // proto3: a zero enum is not written
		b = protowire.AppendTag(b, listenerTrafficDirectionField, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(dir))
	}
	return b
}

// listenerTypeURL is the type URL of a Listener.
var listenerTypeURL = typeURL(&listenerv3.Listener{})

// encodingOf returns the deterministic encoding of x, a shared message (never modified),
// marshalled once per memo.
func (m *memo) encodingOf(x proto.Message) ([]byte, error) {
	if b := learnt(m, x, rawOf); b != nil {
		return *b, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(x)
	if err != nil {
		return nil, err
	}
	return *learn(m, x, rawOf, &b), nil
}

// An upstream's HTTP connection manager, written straight to bytes.
//
// Every HTTP upstream's outbound filter is the same connection manager but for its stat
// prefix ("upstream.<service>") and the route configuration it takes over RDS (the chain's
// service): the router filter, the ADS config source and the path normalization are
// constants, encoded once (outboundHCMParts). outboundHCMFilter writes the connection manager
// around them as toAny would pack it (fields outside oneofs in field number order, then the
// rds member of the route_specifier oneof), and the filter around that, so that neither is
// marshalled. Validation: the constants pass ValidateAll with any prefix and route name (checked
// once, on the whole message), the stat prefix is never empty (its only rule), and the route
// configuration's name has no rule; a name that is not valid UTF-8, which protobuf-go refuses
// to marshal, is left to toAny. TestOutboundHCMEncoding holds the bytes to toAny's and a fresh
// marshal of the filter.

// Field numbers of the connection manager and filter fields outboundHCMFilter writes.
const (
	hcmStatPrefixField    = 2  // HttpConnectionManager.stat_prefix
	hcmRdsField           = 3  // HttpConnectionManager.rds (oneof route_specifier)
	hcmHTTPFiltersField   = 5  // HttpConnectionManager.http_filters
	hcmNormalizePathField = 30 // HttpConnectionManager.normalize_path
	hcmMergeSlashesField  = 33 // HttpConnectionManager.merge_slashes
	rdsConfigSourceField  = 1  // Rds.config_source
	rdsRouteConfigField   = 2  // Rds.route_config_name
	filterNameField       = 1  // Filter.name
	filterTypedField      = 4  // Filter.typed_config (oneof config_type)
)

// outboundHCMParts are the encodings every outbound connection manager shares: its router
// filter (with its field tag and length), the rest of its fields outside the oneof
// (normalize_path, merge_slashes), and the ADS config source.
type outboundHCMParts struct {
	router, tail, ads []byte
}

// hcmTypeURL is the type URL of an HttpConnectionManager.
var hcmTypeURL = typeURL(&hcmv3.HttpConnectionManager{})

// outboundHCM is the connection manager of an HTTP upstream's outbound filter.
func outboundHCM(statPrefix, routeConfig string) (*hcmv3.HttpConnectionManager, error) {
	router, err := routerFilter()
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsConfigSource(),
			RouteConfigName: routeConfig,
		}},
		HttpFilters:   []*hcmv3.HttpFilter{router},
		NormalizePath: wrapperspb.Bool(true),
		MergeSlashes:  true,
	}, nil
}

// hcmParts validates the constant parts of outbound connection managers (ValidateAll of a whole
// one) and encodes them, once.
var hcmParts = sync.OnceValues(func() (*outboundHCMParts, error) {
	h, err := outboundHCM("upstream.x", "x")
	if err != nil {
		return nil, err
	}
	if err := h.ValidateAll(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidResource, h.ProtoReflect().Descriptor().FullName(), err)
	}
	det := proto.MarshalOptions{Deterministic: true}
	router, err := det.Marshal(h.HttpFilters[0])
	if err != nil {
		return nil, err
	}
	ads, err := adsConfigSourceEncoding()
	if err != nil {
		return nil, err
	}
	p := &outboundHCMParts{router: appendBytesField(nil, hcmHTTPFiltersField, router), ads: ads}
	p.tail = protowire.AppendTag(p.tail, hcmNormalizePathField, protowire.BytesType)
	p.tail = protowire.AppendVarint(p.tail, uint64(varintFieldSize(wrapperValueField, 1)))
	p.tail = appendVarintField(p.tail, wrapperValueField, 1)
	p.tail = appendVarintField(p.tail, hcmMergeSlashesField, 1)
	return p, nil
})

// outboundHCMFilter returns the network filter of an HTTP upstream whose connection manager
// has stat prefix statPrefix and takes route configuration routeConfig over RDS, and the
// filter's deterministic encoding; or false when either string is not valid UTF-8 (then
// toAny packs it, and reports that).
func outboundHCMFilter(statPrefix, routeConfig string) (*listenerv3.Filter, []byte, bool, error) {
	if statPrefix == "" || !utf8.ValidString(statPrefix) || !utf8.ValidString(routeConfig) {
		return nil, nil, false, nil
	}
	p, err := hcmParts()
	if err != nil {
		return nil, nil, false, err
	}
	rds := messageFieldSize(rdsConfigSourceField, len(p.ads)) + stringFieldSize(rdsRouteConfigField, routeConfig)
	hcm := stringFieldSize(hcmStatPrefixField, statPrefix) + len(p.router) + len(p.tail) + messageFieldSize(hcmRdsField, rds)
	anyLen := stringFieldSize(fAnyTypeURL, hcmTypeURL) + messageFieldSize(fAnyValue, hcm)
	n := stringFieldSize(filterNameField, hcmFilterName) + messageFieldSize(filterTypedField, anyLen)
	b := make([]byte, 0, n)
	b = appendStringField(b, filterNameField, hcmFilterName)
	b = protowire.AppendTag(b, filterTypedField, protowire.BytesType) // a oneof member
	b = protowire.AppendVarint(b, uint64(anyLen))
	b = appendStringField(b, fAnyTypeURL, hcmTypeURL)
	b = protowire.AppendTag(b, fAnyValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(hcm))
	value := len(b)
	b = appendStringField(b, hcmStatPrefixField, statPrefix)
	b = append(b, p.router...)
	b = append(b, p.tail...)
	b = protowire.AppendTag(b, hcmRdsField, protowire.BytesType) // a oneof member
	b = protowire.AppendVarint(b, uint64(rds))
	b = appendBytesField(b, rdsConfigSourceField, p.ads)
	b = appendStringField(b, rdsRouteConfigField, routeConfig)
	a := &struct { // the filter's three messages in one allocation
		f     listenerv3.Filter
		typed listenerv3.Filter_TypedConfig
		any   anypb.Any
	}{}
	a.any.TypeUrl, a.any.Value = hcmTypeURL, b[value:]
	a.typed.TypedConfig = &a.any
	a.f.Name, a.f.ConfigType = hcmFilterName, &a.typed
	return &a.f, b, true, nil
}
