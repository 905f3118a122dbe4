package proxy

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgit/mesh/xds"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// allowOnly is network RBAC rules that allow the one SPIFFE ID id.
func allowOnly(id string) *netrbacv3.RBAC {
	return &netrbacv3.RBAC{StatPrefix: "t", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"p": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
				PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}}}}},
		},
	}}}
}

// ecdsResponse is an ECDS response carrying configs.
func ecdsResponse(t *testing.T, version string, configs map[string]proto.Message) *discoveryv3.DiscoveryResponse {
	t.Helper()
	r := &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.ExtensionConfigType, VersionInfo: version, Nonce: version}
	for name, m := range configs {
		r.Resources = append(r.Resources, mustAny(t, &corev3.TypedExtensionConfig{Name: name, TypedConfig: mustAny(t, m)}))
	}
	return r
}

// testADS is an adsState whose requests are recorded.
func testADS() (*adsState, *[]*discoveryv3.DiscoveryRequest) {
	var sent []*discoveryv3.DiscoveryRequest
	a := &adsState{version: map[string]string{}, nonce: map[string]string{}, first: true,
		send: func(r *discoveryv3.DiscoveryRequest) error { sent = append(sent, r); return nil }}
	return a, &sent
}

func newTestProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(Config{XDSAddr: "127.0.0.1:1", Service: "api", CertDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExtensionRBACFailsClosed: a connection on a chain whose RBAC filter is configured over
// ECDS waits for the first configuration and is judged by it; without one in time it gets the
// filter's default, and is refused when there is no default; a configuration removed after it
// was received falls back to the default at once.
func TestExtensionRBACFailsClosed(t *testing.T) {
	const web, batch = "spiffe://shop.mesh/ns/default/dc/dc1/svc/web", "spiffe://shop.mesh/ns/default/dc/dc1/svc/batch"
	p := newTestProxy(t)
	p.extWait = 200 * time.Millisecond
	denyAll, err := compileNetworkRBAC(&netrbacv3.RBAC{StatPrefix: "t", Rules: &rbacv3.RBAC{}})
	if err != nil {
		t.Fatal(err)
	}
	withDefault := &chainConfig{discovered: &discoveredFilter{name: xds.PublicNetworkRBAC, def: denyAll, hasDefault: true}}
	noDefault := &chainConfig{discovered: &discoveredFilter{name: xds.PublicNetworkRBAC}}

	// Nothing received: the default after the wait, or a refusal.
	start := time.Now()
	rb, err := p.rbacFor(withDefault)
	if err != nil || rb.allowed(web) || time.Since(start) < p.extWait {
		t.Fatalf("before any configuration: %v, %v after %s; want the deny-all default after %s", rb, err, time.Since(start), p.extWait)
	}
	if _, err := p.rbacFor(noDefault); !errors.Is(err, ErrDenied) {
		t.Fatalf("no configuration, no default: err = %v, want ErrDenied", err)
	}

	// A connection waiting when the configuration arrives is judged by it.
	done := make(chan *rbac, 1)
	go func() { r, _ := p.rbacFor(noDefault); done <- r }()
	time.Sleep(20 * time.Millisecond)
	a, sent := testADS()
	if err := p.handle(a, ecdsResponse(t, "v1", map[string]proto.Message{xds.PublicNetworkRBAC: allowOnly(web)})); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r == nil || !r.allowed(web) || r.allowed(batch) {
			t.Fatalf("the waiting connection got %+v, want the rules that allow web alone", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the waiting connection was not woken by the configuration")
	}
	if last := (*sent)[len(*sent)-1]; last.ErrorDetail != nil || last.VersionInfo != "v1" {
		t.Fatalf("the configuration was not ACKed: %v", last)
	}

	// Removed (a response without it): the default at once, or a refusal.
	if err := p.handle(a, ecdsResponse(t, "v2", nil)); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if rb, err := p.rbacFor(withDefault); err != nil || rb.allowed(web) || time.Since(start) > p.extWait/2 {
		t.Fatalf("after removal: %v, %v after %s; want the default at once", rb, err, time.Since(start))
	}
	if _, err := p.rbacFor(noDefault); !errors.Is(err, ErrDenied) {
		t.Fatalf("after removal, no default: err = %v, want ErrDenied", err)
	}
}

// TestNACKsUnhonourableExtensions: what the proxy cannot evaluate over ECDS, an HTTP RBAC
// configuration or rules on requests, and a listener whose filter would take one, is NACKed with
// an error that says so; the configuration applied before stays.
func TestNACKsUnhonourableExtensions(t *testing.T) {
	const web = "spiffe://shop.mesh/ns/default/dc/dc1/svc/web"
	p := newTestProxy(t)
	a, sent := testADS()
	if err := p.handle(a, ecdsResponse(t, "good", map[string]proto.Message{xds.PublicNetworkRBAC: allowOnly(web)})); err != nil {
		t.Fatal(err)
	}
	header := allowOnly(web)
	header.Rules.Policies["p"].Permissions = []*rbacv3.Permission{{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":path"}}}}
	for name, c := range map[string]struct {
		resp *discoveryv3.DiscoveryResponse
		want string
	}{
		"http": {ecdsResponse(t, "http", map[string]proto.Message{xds.PublicHTTPRBAC: &rbacfilterv3.RBAC{}}), "only network RBAC"},
		"l7":   {ecdsResponse(t, "l7", map[string]proto.Message{xds.PublicNetworkRBAC: header}), "only any"},
	} {
		if err := p.handle(a, c.resp); err != nil {
			t.Fatal(err)
		}
		last := (*sent)[len(*sent)-1]
		if last.ErrorDetail == nil || !strings.Contains(last.ErrorDetail.Message, c.want) || last.VersionInfo != "good" {
			t.Errorf("%s: request %v, want a NACK saying %q that keeps version good", name, last, c.want)
		}
		if msg := p.Status().LastNACK[resourcev3.ExtensionConfigType]; !strings.Contains(msg, c.want) {
			t.Errorf("%s: status NACK %q", name, msg)
		}
	}
	set, _ := p.ext.load()
	if r := set.rbac[xds.PublicNetworkRBAC]; r == nil || !r.allowed(web) {
		t.Fatal("a NACK dropped the configuration applied before")
	}

	// A listener whose RBAC filter would take an HTTP RBAC over ECDS, or take its
	// configuration from elsewhere than ADS.
	tcp := &listenerv3.Filter{Name: "tcp", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t,
		&tcpproxyv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "local_app"}})}}
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	for name, c := range map[string]struct {
		src  *corev3.ExtensionConfigSource
		want string
	}{
		"http type": {&corev3.ExtensionConfigSource{ConfigSource: ads, TypeUrls: []string{"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}, "only network RBAC"},
		"not ads":   {&corev3.ExtensionConfigSource{ConfigSource: &corev3.ConfigSource{}, TypeUrls: []string{networkRBACType}}, "other than ADS"},
		"no types":  {&corev3.ExtensionConfigSource{ConfigSource: ads}, "without type_urls"},
	} {
		l := &listenerv3.Listener{Name: "public_listener", Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 1}}}},
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{
				{Name: xds.PublicNetworkRBAC, ConfigType: &listenerv3.Filter_ConfigDiscovery{ConfigDiscovery: c.src}}, tcp}}}}
		resp := &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.ListenerType, VersionInfo: name, Nonce: name, Resources: []*anypb.Any{mustAny(t, l)}}
		if err := p.handle(a, resp); err != nil {
			t.Fatal(err)
		}
		last := (*sent)[len(*sent)-1]
		if last.TypeUrl != resourcev3.ListenerType || last.ErrorDetail == nil || !strings.Contains(last.ErrorDetail.Message, c.want) {
			t.Errorf("%s: request %v, want a listener NACK saying %q", name, last, c.want)
		}
	}
	if n := len(p.Status().Listeners); n != 0 {
		t.Fatalf("%d listeners bound after NACKs", n)
	}
}
