package proxy

import (
	"fmt"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Filter configurations over ECDS (the extension config discovery service), as Envoy takes
// them: a network filter with config_discovery names its configuration (the filter's name is
// the resource name), the proxy subscribes to the names its listeners use over the same ADS
// stream, and a connection is judged by the configuration received last. The mesh server sends
// the public listener's RBAC this way, so that an intention change does not change a listener.
//
// Fail closed, as Envoy: until a filter's first configuration arrives (its listener is
// "warming"), a connection waits for it, up to extensionWait, and is then judged by the
// filter's default configuration; without one, it is refused. A configuration that was
// received and then removed is replaced by the default at once (refused without one).

// extensionWait is how long a connection waits for the first configuration of its filter:
// Envoy's default initial_fetch_timeout.
const extensionWait = 15 * time.Second

// networkRBACType is the type URL of the network RBAC filter's configuration.
const networkRBACType = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"

// discoveredFilter is a network filter whose configuration comes over ECDS.
type discoveredFilter struct {
	name       string
	def        *rbac // the default configuration; nil: none
	noWarming  bool  // apply_default_config_without_warming: the default until the first arrives
	hasDefault bool
}

// extensionSet is the filter configurations received, by name; never modified once published.
type extensionSet struct {
	rbac map[string]*rbac
	seen map[string]bool // every name ever received on this proxy
}

// extensions holds the published extensionSet and wakes the connections waiting for one.
type extensions struct {
	mu      sync.Mutex
	set     *extensionSet
	changed chan struct{} // closed (and replaced) on every publish
}

func newExtensions() *extensions {
	return &extensions{set: &extensionSet{rbac: map[string]*rbac{}, seen: map[string]bool{}}, changed: make(chan struct{})}
}

func (e *extensions) load() (*extensionSet, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.set, e.changed
}

func (e *extensions) publish(rbacs map[string]*rbac) {
	e.mu.Lock()
	defer e.mu.Unlock()
	seen := make(map[string]bool, len(e.set.seen)+len(rbacs))
	for n := range e.set.seen {
		seen[n] = true
	}
	for n := range rbacs {
		seen[n] = true
	}
	e.set = &extensionSet{rbac: rbacs, seen: seen}
	close(e.changed)
	e.changed = make(chan struct{})
}

// rbacFor returns the RBAC rules that judge a connection on chain c now (nil: no RBAC filter,
// everyone passes), waiting for a discovered filter's first configuration; an error when the
// filter has no configuration and no default.
func (p *Proxy) rbacFor(c *chainConfig) (*rbac, error) {
	d := c.discovered
	if d == nil {
		return c.rbac, nil
	}
	var timeout <-chan time.Time
	for {
		set, changed := p.ext.load()
		if r, ok := set.rbac[d.name]; ok {
			return r, nil
		}
		if d.hasDefault && (d.noWarming || set.seen[d.name]) {
			return d.def, nil
		}
		if set.seen[d.name] {
			return nil, fmt.Errorf("%w: the configuration %s of the RBAC filter was removed and it has no default", ErrDenied, d.name)
		}
		if timeout == nil {
			t := time.NewTimer(p.extWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-changed:
		case <-timeout:
			if d.hasDefault {
				return d.def, nil
			}
			return nil, fmt.Errorf("%w: no configuration %s of the RBAC filter within %s", ErrDenied, d.name, p.extWait)
		}
	}
}

// parseDiscoveredFilter reads a network filter with config_discovery: only a network RBAC
// filter whose configuration comes over ADS can be honoured.
func parseDiscoveredFilter(f *listenerv3.Filter) (*discoveredFilter, error) {
	src := f.GetConfigDiscovery()
	if src.GetConfigSource().GetAds() == nil {
		return nil, fmt.Errorf("%w: filter %s: config_discovery from a source other than ADS", ErrUnsupported, f.GetName())
	}
	urls := src.GetTypeUrls()
	if len(urls) == 0 {
		return nil, fmt.Errorf("%w: filter %s: config_discovery without type_urls", ErrUnsupported, f.GetName())
	}
	for _, u := range urls {
		if u != networkRBACType {
			return nil, fmt.Errorf("%w: filter %s: config_discovery of %s (only network RBAC)", ErrUnsupported, f.GetName(), u)
		}
	}
	d := &discoveredFilter{name: f.GetName(), noWarming: src.GetApplyDefaultConfigWithoutWarming()}
	if dc := src.GetDefaultConfig(); dc != nil {
		r, err := compileNetworkRBACAny(dc)
		if err != nil {
			return nil, fmt.Errorf("filter %s: default config: %w", f.GetName(), err)
		}
		d.def, d.hasDefault = r, true
	} else if d.noWarming {
		return nil, fmt.Errorf("%w: filter %s: apply_default_config_without_warming without a default config", ErrUnsupported, f.GetName())
	}
	return d, nil
}

// compileNetworkRBACAny compiles a network RBAC filter configuration packed in an Any.
func compileNetworkRBACAny(a *anypb.Any) (*rbac, error) {
	if a.GetTypeUrl() != networkRBACType {
		return nil, fmt.Errorf("%w: a %s (only network RBAC)", ErrUnsupported, a.GetTypeUrl())
	}
	var r netrbacv3.RBAC
	if err := a.UnmarshalTo(&r); err != nil {
		return nil, err
	}
	return compileNetworkRBAC(&r)
}

// compileNetworkRBAC compiles a network RBAC filter's configuration. No rules: Envoy allows
// every connection.
func compileNetworkRBAC(r *netrbacv3.RBAC) (*rbac, error) {
	if r.GetMatcher() != nil {
		return nil, fmt.Errorf("%w: an RBAC matcher tree", ErrUnsupported)
	}
	rb, err := compileRBAC(r.GetRules())
	if err != nil {
		return nil, err
	}
	if rb == nil {
		rb = &rbac{allow: false} // a DENY engine without policies
	}
	return rb, nil
}

// applyExtensions applies an ECDS response: every configuration compiled, or none applied.
// A state-of-the-world response holds every subscribed configuration that exists: one left out
// was removed.
func (p *Proxy) applyExtensions(resp *discoveryv3.DiscoveryResponse) error {
	out := map[string]*rbac{}
	for _, res := range resp.GetResources() {
		var x corev3.TypedExtensionConfig
		if err := res.UnmarshalTo(&x); err != nil {
			return fmt.Errorf("extension config: %w", err)
		}
		r, err := compileNetworkRBACAny(x.GetTypedConfig())
		if err != nil {
			return fmt.Errorf("extension config %s: %w", x.GetName(), err)
		}
		out[x.GetName()] = r
	}
	p.ext.publish(out)
	return nil
}

// extensionNames returns the names of the filter configurations the bound listeners take
// over ECDS, sorted.
func (p *Proxy) extensionNames() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	set := map[string]bool{}
	for _, l := range p.listeners {
		for _, c := range l.cfg.Load().chains {
			if c.discovered != nil {
				set[c.discovered.name] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
