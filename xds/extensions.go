package xds

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

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
// (sorted by name); nothing for the other shapes. The memo learns the content hash and wire of
// each (so memo.resourceHash does not marshal them again), and the pair's version map and cache
// resources (presetRBAC: the group's cache snapshot takes them rather than making its own).
func extensionConfigs(snap *mesh.Snapshot, p Proxy, m *memo) ([]*corev3.TypedExtensionConfig, error) {
	set, err := publicRBACSet(snap, p, m)
	if set == nil || err != nil {
		return nil, err
	}
	if m != nil {
		for i, x := range set.xs {
			learn(m, x, encOf, set.enc[i])
		}
		m.presetRBAC(set)
	}
	return set.xs, nil
}

// publicRBACSet returns the RBAC pair of p's public listener, built once per service and memo;
// nil when p is not an Envoy sidecar with a public listener.
func publicRBACSet(snap *mesh.Snapshot, p Proxy, m *memo) (*rbacSet, error) {
	svc := snap.Services[p.Service]
	if svc == nil || p.Shape != ShapeEnvoy || p.Kind == mesh.KindMeshGateway || publicPort(svc, snap.Mesh.Datacenter) <= 0 {
		return nil, nil
	}
	return shared(m, memoKey{kind: memoPublicRBAC, name: svc.Name}, func() (*rbacSet, error) {
		return publicRBAC(snap, svc, m.principals())
	})
}

// rbacSet is the RBAC pair of a service's public listener, as rendered once per snapshot: the
// two extension configurations, sorted by name, each one's content hash and wire (its
// deterministic encoding), the pair's content hash and version map as the ExtensionConfigType
// of a group (what hashByType computes of them), and what the cache holds of them at the
// version they have when they changed in this snapshot. It is never modified.
type rbacSet struct {
	xs       []*corev3.TypedExtensionConfig
	enc      [2]*encoded
	typeHash string
	version  string            // <snapshot version>-<typeHash[:8]>
	versions map[string]string // name → content hash
	res      cachev3.Resources // at version
}

// publicRBAC renders the RBAC of svc's public listener as the configuration of the HTTP RBAC
// filter and of the network RBAC filter; the listener uses the one of its protocol. The rules
// are those of svc's protocol in both (for a tcp service, an intention with permissions fails
// closed in either). Both configurations pass ValidateAll (the network filter's checks the
// rules as the HTTP filter's does, and its stat prefix), as does each TypedExtensionConfig.
//
// Both are what toAny packs, byte for byte (TestRBACAnyMatchesToAny), written straight to
// bytes from the encodings of their principals (rbacenc.go): a mesh-wide change renders this
// for every service. The deterministic encoding of each extension configuration is its wire
// and what its content hash is of, so nothing marshals it again. Rules that hold an invalid
// piece are built as messages, for ValidateAll's error (or, were it to pass, proto's bytes).
func publicRBAC(snap *mesh.Snapshot, svc *mesh.Service, pr *principals) (*rbacSet, error) {
	if pr == nil {
		pr = newPrincipals(snap, nil)
	}
	l7 := mesh.IsHTTP(svc.Protocol)
	e := rbacEncoders.Get().(*rbacEncoder)
	defer rbacEncoders.Put(e)
	policies, action, valid := e.encodeRules(snap, svc.Name, l7, pr)
	size := rulesSize(action, policies)
	write := func(b []byte) []byte { return appendRules(b, action, policies) }
	if !valid {
		rules := rbacRules(snap, svc.Name, l7, pr)
		nf := networkRBAC(svc.Name, rules)
		if err := nf.ValidateAll(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidResource, nf.ProtoReflect().Descriptor().FullName(), err)
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rules)
		if err != nil {
			return nil, err
		}
		size, write = len(b), func(dst []byte) []byte { return append(dst, b...) }
	}
	encs, values := rbacAny(size, write, svc.Name)
	return newRBACSet(snap.Version, encs, values)
}

// newRBACSet returns the set of the two extension configurations PublicHTTPRBAC and
// PublicNetworkRBAC whose deterministic encodings are encs, each one's packed value starting at
// values[i], for the snapshot of version snapVersion; each passes ValidateAll (their typed
// configs were checked before). A mesh-wide change makes one per service: everything is
// allocated at once (the set, its messages and their encodings) but the version map and the
// cache's index, and its four strings (each one's content hash, the pair's, its version) are
// cut from one.
func newRBACSet(snapVersion string, encs [2][]byte, values [2]int) (*rbacSet, error) {
	a := &struct {
		set   rbacSet
		xs    [2]*corev3.TypedExtensionConfig
		x     [2]corev3.TypedExtensionConfig
		any   [2]anypb.Any
		parts [2]encodedParts
	}{}
	set := &a.set
	set.xs = a.xs[:]
	var hashes [2][hashLen]byte
	var buf [128]byte // as hashByType hashes each resource of a type: no allocation
	b := buf[:0]
	for i, c := range [2]struct{ name, url string }{{PublicHTTPRBAC, httpRBACTypeURL}, {PublicNetworkRBAC, networkRBACTypeURL}} {
		a.any[i].TypeUrl, a.any[i].Value = c.url, encs[i][values[i]:]
		x := &a.x[i]
		x.Name, x.TypedConfig = c.name, &a.any[i]
		a.xs[i] = x
		if err := x.ValidateAll(); err != nil {
			return nil, fmt.Errorf("%w: extension config %q: %w", ErrInvalidResource, x.Name, err)
		}
		hashes[i] = hashBytes(encs[i])
		b = binary.LittleEndian.AppendUint64(b, uint64(len(x.Name)))
		b = append(append(b, x.Name...), hashes[i][:]...)
	}
	typeHash := hashBytes(b)
	// One string: both hashes, the pair's, then the version <snapVersion>-<typeHash[:8]>.
	var all strings.Builder
	all.Grow(3*hashLen + len(snapVersion) + 1 + 8)
	all.Write(hashes[0][:])
	all.Write(hashes[1][:])
	all.Write(typeHash[:])
	all.WriteString(snapVersion)
	all.WriteByte('-')
	all.Write(typeHash[:8])
	str := all.String()
	set.typeHash, set.version = str[2*hashLen:3*hashLen], str[3*hashLen:]
	set.versions = make(map[string]string, 2)
	set.res = cachev3.Resources{Version: set.version, Items: make(map[string]types.ResourceWithTTL, 2)}
	for i, x := range set.xs {
		hash := str[i*hashLen : (i+1)*hashLen]
		a.parts[i].fillHashed(x, encs[i], extensionConfigTypeURL, x.Name, hash)
		set.enc[i] = &a.parts[i].enc
		set.versions[x.Name] = hash
		set.res.Items[x.Name] = types.ResourceWithTTL{Resource: set.enc[i].wire}
	}
	return set, nil
}

// extensionConfigTypeURL is the type URL of a TypedExtensionConfig.
var extensionConfigTypeURL = typeURL(&corev3.TypedExtensionConfig{})

// rbacAny packs the HTTP RBAC filter's configuration {rules} and the network RBAC filter's
// {rules, stat_prefix}, where write appends the size bytes of rules' deterministic encoding,
// as the extension configurations PublicHTTPRBAC and PublicNetworkRBAC, and returns the
// deterministic encoding of each (enc), whose packed value starts at values[i].
// In both filter configurations rules is field 1, the lowest: the deterministic encoding of a
// message is its set fields in field number order (as protobuf-go marshals them), so each is
// rules' field followed by the encoding of the rest of the message (the network filter's stat
// prefix). These are the bytes toAny writes, which TestRBACAnyMatchesToAny holds them to;
// TestRBACExtensionEncoding holds enc to a fresh deterministic marshal of each configuration.
// Both encodings share one allocation, and the rules are written once and copied.
func rbacAny(size int, write func([]byte) []byte, service string) (enc [2][]byte, values [2]int) {
	prefix := "connect_authz_" + service // networkRBAC's
	ruleLen := protowire.SizeTag(rbacRulesField) + protowire.SizeBytes(size)
	tailLen := protowire.SizeTag(netStatPrefixField) + protowire.SizeBytes(len(prefix))
	httpLen := extensionHeaderSize(PublicHTTPRBAC, httpRBACTypeURL, ruleLen) + ruleLen
	netLen := extensionHeaderSize(PublicNetworkRBAC, networkRBACTypeURL, ruleLen+tailLen) + ruleLen + tailLen
	buf := make([]byte, 0, httpLen+netLen)
	var rules []byte // the rules' field, as written in the first
	for i, c := range [2]struct {
		name, url string
		tail      bool
	}{{PublicHTTPRBAC, httpRBACTypeURL, false}, {PublicNetworkRBAC, networkRBACTypeURL, true}} {
		vlen := ruleLen
		if c.tail {
			vlen += tailLen
		}
		start := len(buf)
		buf = appendExtensionHeader(buf, c.name, c.url, vlen)
		values[i] = len(buf) - start
		if rules == nil {
			buf = protowire.AppendTag(buf, rbacRulesField, protowire.BytesType)
			buf = protowire.AppendVarint(buf, uint64(size))
			buf = write(buf)
			rules = buf[start+values[i]:]
		} else {
			buf = append(buf, rules...)
		}
		if c.tail {
			buf = protowire.AppendTag(buf, netStatPrefixField, protowire.BytesType)
			buf = protowire.AppendString(buf, prefix)
		}
		enc[i] = buf[start:len(buf):len(buf)]
	}
	return enc, values
}

// extensionHeaderSize is the size of what appendExtensionHeader appends.
func extensionHeaderSize(name, url string, vlen int) int {
	anyLen := protowire.SizeTag(1) + protowire.SizeBytes(len(url)) + protowire.SizeTag(2) + protowire.SizeBytes(vlen)
	return protowire.SizeTag(1) + protowire.SizeBytes(len(name)) + protowire.SizeTag(2) + protowire.SizeVarint(uint64(anyLen)) +
		protowire.SizeTag(1) + protowire.SizeBytes(len(url)) + protowire.SizeTag(2) + protowire.SizeVarint(uint64(vlen))
}

// appendExtensionHeader appends to b the deterministic encoding of a TypedExtensionConfig
// {name, typed_config: Any{type_url: url, value}} up to value's bytes (a value of vlen > 0
// bytes follows; a nil b is allocated with room for them): name is field 1, typed_config field 2, and in the
// Any type_url is field 1 and value field 2.
func appendExtensionHeader(b []byte, name, url string, vlen int) []byte {
	anyLen := protowire.SizeTag(1) + protowire.SizeBytes(len(url)) + protowire.SizeTag(2) + protowire.SizeBytes(vlen)
	n := protowire.SizeTag(1) + protowire.SizeBytes(len(name)) + protowire.SizeTag(2) + protowire.SizeBytes(anyLen)
	if b == nil {
		b = make([]byte, 0, n+vlen)
	}
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(anyLen))
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, url)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(vlen))
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
