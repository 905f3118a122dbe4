package xds

import (
	"fmt"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	mesh "github.com/meshgit/mesh"
)

// Extension configurations (ECDS): what changes often, apart from what does not.
//
// An authorization change alters nothing of a sidecar but the RBAC of its inbound listener.
// Inline in public_listener, it would change the listener, and a state-of-the-world LDS
// response carries every listener of the proxy (the transparent outbound listener has a filter
// chain per reachable service: hundreds of kilobytes in a dense mesh). Envoy has no filter
// chain discovery, but it fetches a filter's configuration as a resource of its own
// (envoy.config.core.v3.TypedExtensionConfig, over ADS): public_listener names its RBAC
// filter, network or HTTP, by a stable name, and the rules travel alone. An intention change
// then changes one small extension configuration and leaves every listener byte for byte as
// it was, so LDS is not sent at all.
//
// Fail closed: the filter's config_discovery carries a default configuration that denies
// every caller, applied only if the first delivery fails (apply_default_config_without_warming
// is false: Envoy warms the listener until the rules arrive). type_urls admits the one RBAC
// type the filter is, so a misdelivered configuration is rejected rather than applied.
// Downstream network filters take ECDS since Envoy 1.28, HTTP filters long before.
//
// Proxyless gRPC does not do ECDS: its server listeners keep the RBAC inline (listeners.go).

// Names of the extension configurations of public_listener's RBAC filter (also the filter
// names, as Envoy subscribes to a filter's configuration by the filter's name). The two
// filter types have two names, so that a service changing protocol never sends a filter a
// configuration of the other type.
//
// Both are rendered for every Envoy sidecar, whatever its protocol: a proxy is sent only the
// names it subscribes to (those its listeners name), so the other costs nothing on the wire,
// and a protocol change never removes the configuration the running listener uses. Removing it
// (delta xDS sends removals) would make the old listener's filter fall back to its deny-all
// default until the new listener is warm; kept, the old listener runs the current rules until
// Envoy replaces it (make before break, as the xDS protocol asks of removals).
const (
	PublicNetworkRBAC = "rbac:" + PublicListener + ":network"
	PublicHTTPRBAC    = "rbac:" + PublicListener + ":http"
)

// Type URLs of the RBAC filter configurations.
var (
	networkRBACTypeURL = typeURL(&netrbacv3.RBAC{})
	httpRBACTypeURL    = typeURL(&rbacfilterv3.RBAC{})
)

func typeURL(m proto.Message) string {
	return "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
}

// extensionConfigs renders the extension configurations of proxy p: for an Envoy sidecar
// with a public listener, the rules of its RBAC filter, as the HTTP and as the network filter
// (sorted by name); nothing for the other shapes.
func extensionConfigs(snap *mesh.Snapshot, p Proxy, m *memo) ([]*corev3.TypedExtensionConfig, error) {
	svc := snap.Services[p.Service]
	if svc == nil || p.Shape != ShapeEnvoy || p.Kind == mesh.KindMeshGateway || publicPort(svc, snap.Mesh.Datacenter) <= 0 {
		return nil, nil
	}
	return shared(m, memoKey{kind: memoPublicRBAC, name: svc.Name}, func() ([]*corev3.TypedExtensionConfig, error) {
		return publicRBAC(snap, svc, m.principals())
	})
}

// publicRBAC renders the RBAC of svc's public listener as the configuration of the HTTP RBAC
// filter and of the network RBAC filter; the listener uses the one of its protocol. The rules
// are those of svc's protocol in both (for a tcp service, an intention with permissions fails
// closed in either).
//
// Both are what toAny packs, byte for byte, but the rules, which are most of either, are
// marshalled once (rbacAny): a mesh-wide change renders this for every service.
func publicRBAC(snap *mesh.Snapshot, svc *mesh.Service, pr *principals) ([]*corev3.TypedExtensionConfig, error) {
	rules := rbacRules(snap, svc.Name, mesh.IsHTTP(svc.Protocol), pr)
	// The HTTP filter's configuration is the rules alone, and its ValidateAll is theirs (as
	// an embedded message), which the network filter's checks too, with its stat prefix.
	nf := networkRBAC(svc.Name, rules)
	if err := nf.ValidateAll(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidResource, nf.ProtoReflect().Descriptor().FullName(), err)
	}
	h, n, err := rbacAny(rules, svc.Name)
	if err != nil {
		return nil, err
	}
	return []*corev3.TypedExtensionConfig{{Name: PublicHTTPRBAC, TypedConfig: h}, {Name: PublicNetworkRBAC, TypedConfig: n}}, nil
}

// rbacAny packs the HTTP RBAC filter's configuration {rules} and the network RBAC filter's
// {rules, stat_prefix} from one deterministic marshal of rules, which is most of either. In
// both messages rules is field 1, the lowest: the deterministic encoding of a message is its
// set fields in field number order (as protobuf-go marshals them), so each is rules' field
// followed by the encoding of the rest of the message. These are the bytes toAny writes, which
// TestRBACAnyMatchesToAny holds them to.
func rbacAny(rules *rbacv3.RBAC, service string) (h, n *anypb.Any, err error) {
	opts := proto.MarshalOptions{Deterministic: true}
	b, err := opts.Marshal(rules)
	if err != nil {
		return nil, nil, err
	}
	hv := make([]byte, 0, len(b)+protowire.SizeVarint(uint64(len(b)))+1)
	hv = protowire.AppendTag(hv, rbacRulesField, protowire.BytesType)
	hv = protowire.AppendBytes(hv, b)
	nv := make([]byte, len(hv), len(hv)+len(service)+24)
	copy(nv, hv)
	if nv, err = opts.MarshalAppend(nv, networkRBAC(service, nil)); err != nil {
		return nil, nil, err
	}
	return &anypb.Any{TypeUrl: httpRBACTypeURL, Value: hv}, &anypb.Any{TypeUrl: networkRBACTypeURL, Value: nv}, nil
}

// rbacRulesField is the number of the rules field of both RBAC filter configurations.
const rbacRulesField = 1

// unreferencedOK reports whether an extension config no listener names may be rendered: one
// of public_listener's RBAC pair when the other is named.
func unreferencedOK(name string, named map[string]bool) bool {
	return name == PublicHTTPRBAC && named[PublicNetworkRBAC] || name == PublicNetworkRBAC && named[PublicHTTPRBAC]
}

// denyAll is RBAC rules that match no caller: an ALLOW engine without policies.
func denyAll() *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}
}

// discoveredConfig is the config_discovery of a filter whose configuration of type url comes
// over ADS, with def as the fail-closed default.
func discoveredConfig(url string, def proto.Message) (*corev3.ExtensionConfigSource, error) {
	d, err := toAny(def)
	if err != nil {
		return nil, err
	}
	return &corev3.ExtensionConfigSource{
		ConfigSource:                     adsConfigSource(),
		DefaultConfig:                    d,
		ApplyDefaultConfigWithoutWarming: false,
		TypeUrls:                         []string{url},
	}, nil
}

// discoveredNetworkRBAC is public_listener's network RBAC filter, configured over ECDS.
func discoveredNetworkRBAC(service string) (*listenerv3.Filter, error) {
	src, err := discoveredConfig(networkRBACTypeURL, networkRBAC(service, denyAll()))
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: PublicNetworkRBAC, ConfigType: &listenerv3.Filter_ConfigDiscovery{ConfigDiscovery: src}}, nil
}

// discoveredHTTPRBAC is public_listener's HTTP RBAC filter, configured over ECDS: a constant,
// built once (messages are never modified once built).
var discoveredHTTPRBAC = sync.OnceValues(func() (*hcmv3.HttpFilter, error) {
	src, err := discoveredConfig(httpRBACTypeURL, &rbacfilterv3.RBAC{Rules: denyAll()})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: PublicHTTPRBAC, ConfigType: &hcmv3.HttpFilter_ConfigDiscovery{ConfigDiscovery: src}}, nil
})

// extensionTypeURL is the type URL of the configuration an extension config carries.
func extensionTypeURL(x *corev3.TypedExtensionConfig) string {
	return x.GetTypedConfig().GetTypeUrl()
}
