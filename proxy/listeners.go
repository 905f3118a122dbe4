package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	sniclusterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/sni_cluster/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// handshakeTimeout bounds a TLS handshake on either side.
const handshakeTimeout = 10 * time.Second

// listenerConfig is what the proxy honours of a Listener.
type listenerConfig struct {
	addr    string
	inbound bool
	inspect bool // tls_inspector: read the SNI of the ClientHello, without decrypting
	chains  []*chainConfig
}

// chainConfig is one filter chain: a sidecar's only one, or a gateway's, chosen by SNI.
type chainConfig struct {
	serverNames []string // the match; none: the default chain
	tls         bool     // terminate mTLS (a DownstreamTlsContext requiring a client certificate)
	rbac        *rbac    // nil: no RBAC filter (or one configured over ECDS)
	sniCluster  bool     // sni_cluster: the cluster is the SNI
	clusters    []weightedCluster
	total       uint32
	// discovered is the RBAC filter whose configuration comes over ECDS (extensions.go).
	discovered *discoveredFilter
}

type weightedCluster struct {
	name   string
	weight uint32
}

func (c *chainConfig) cluster() string {
	if len(c.clusters) == 1 {
		return c.clusters[0].name
	}
	n := rand.Uint32N(c.total)
	for _, wc := range c.clusters {
		if n < wc.weight {
			return wc.name
		}
		n -= wc.weight
	}
	return c.clusters[len(c.clusters)-1].name
}

// parseListener reads a Listener; inboundHost, if set, replaces the host of inbound listeners.
func parseListener(l *listenerv3.Listener, inboundHost string) (*listenerConfig, error) {
	if l.GetApiListener() != nil {
		return nil, fmt.Errorf("%w: an API listener (proxyless gRPC only)", ErrUnsupported)
	}
	c := &listenerConfig{inbound: l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND}
	for _, lf := range l.GetListenerFilters() {
		if !lf.GetTypedConfig().MessageIs(&tlsinspectorv3.TlsInspector{}) {
			return nil, fmt.Errorf("%w: listener filter %s (only tls_inspector)", ErrUnsupported, lf.GetName())
		}
		c.inspect = true
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil || sa.GetProtocol() != corev3.SocketAddress_TCP {
		return nil, fmt.Errorf("%w: an address that is not a TCP socket address", ErrUnsupported)
	}
	host := sa.GetAddress()
	if c.inbound && inboundHost != "" {
		host = inboundHost
	}
	c.addr = net.JoinHostPort(host, strconv.Itoa(int(sa.GetPortValue())))
	if l.GetDefaultFilterChain() != nil {
		return nil, fmt.Errorf("%w: a default filter chain", ErrUnsupported)
	}
	if len(l.GetFilterChains()) > 1 && !c.inspect {
		return nil, fmt.Errorf("%w: %d filter chains without tls_inspector", ErrUnsupported, len(l.GetFilterChains()))
	}
	for i, fc := range l.GetFilterChains() {
		cc, err := parseChain(fc, c.inspect)
		if err != nil {
			return nil, fmt.Errorf("filter chain %d: %w", i, err)
		}
		c.chains = append(c.chains, cc)
	}
	if len(c.chains) == 0 {
		return nil, fmt.Errorf("%w: a listener without filter chains", ErrUnsupported)
	}
	return c, nil
}

// parseChain reads one filter chain; its match may only name server names, with tls_inspector.
func parseChain(fc *listenerv3.FilterChain, inspect bool) (*chainConfig, error) {
	cc := &chainConfig{}
	if m := fc.GetFilterChainMatch(); m != nil {
		only := &listenerv3.FilterChainMatch{ServerNames: m.GetServerNames()}
		if !proto.Equal(m, only) || !inspect {
			return nil, fmt.Errorf("%w: a filter chain match on more than server names (with tls_inspector)", ErrUnsupported)
		}
		cc.serverNames = m.GetServerNames()
	}
	if err := parseDownstreamTLS(fc.GetTransportSocket(), cc); err != nil {
		return nil, err
	}
	if err := parseFilters(fc.GetFilters(), cc); err != nil {
		return nil, err
	}
	return cc, nil
}

// chainFor picks the chain for a server name as Envoy does: an exact server name, else the
// longest wildcard suffix ("*.dc2.internal.td"), else the chain without server names.
func (c *listenerConfig) chainFor(sni string) *chainConfig {
	var best, def *chainConfig
	bestLen := -1
	for _, cc := range c.chains {
		if len(cc.serverNames) == 0 {
			def = cc
		}
		for _, n := range cc.serverNames {
			if n == sni {
				return cc
			}
			if suffix, ok := strings.CutPrefix(n, "*"); ok && strings.HasSuffix(sni, suffix) && len(suffix) > bestLen {
				best, bestLen = cc, len(suffix)
			}
		}
	}
	if best != nil {
		return best
	}
	return def
}

func parseDownstreamTLS(ts *corev3.TransportSocket, c *chainConfig) error {
	if ts == nil {
		return nil
	}
	var dtc tlsv3.DownstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&dtc); err != nil {
		return fmt.Errorf("%w: transport socket %s (want a DownstreamTlsContext): %v", ErrUnsupported, ts.GetName(), err)
	}
	if !dtc.GetRequireClientCertificate().GetValue() {
		return fmt.Errorf("%w: inbound TLS without a required client certificate", ErrUnsupported)
	}
	c.tls = true
	return nil
}

// parseFilters accepts [network RBAC, inline or over ECDS] then tcp_proxy, nothing else.
func parseFilters(filters []*listenerv3.Filter, c *chainConfig) error {
	for i, f := range filters {
		if f.GetConfigDiscovery() != nil {
			if c.rbac != nil || c.discovered != nil {
				return fmt.Errorf("%w: two RBAC filters", ErrUnsupported)
			}
			d, err := parseDiscoveredFilter(f)
			if err != nil {
				return err
			}
			c.discovered = d
			continue
		}
		a := f.GetTypedConfig()
		if a == nil {
			return fmt.Errorf("%w: filter %s without a typed config", ErrUnsupported, f.GetName())
		}
		switch {
		case a.MessageIs(&hcmv3.HttpConnectionManager{}):
			return fmt.Errorf("%w: filter %s: the HTTP connection manager and its HTTP filters are L7 (use Envoy for http, http2 and grpc services)", ErrUnsupported, f.GetName())
		case a.MessageIs(&sniclusterv3.SniCluster{}):
			c.sniCluster = true
		case a.MessageIs(&netrbacv3.RBAC{}):
			var r netrbacv3.RBAC
			if err := a.UnmarshalTo(&r); err != nil {
				return err
			}
			if c.rbac != nil || c.discovered != nil {
				return fmt.Errorf("%w: two RBAC filters", ErrUnsupported)
			}
			rb, err := compileNetworkRBAC(&r)
			if err != nil {
				return fmt.Errorf("filter %s: %w", f.GetName(), err)
			}
			c.rbac = rb
		case a.MessageIs(&tcpproxyv3.TcpProxy{}):
			if i != len(filters)-1 {
				return fmt.Errorf("%w: tcp_proxy must be the last filter", ErrUnsupported)
			}
			var tp tcpproxyv3.TcpProxy
			if err := a.UnmarshalTo(&tp); err != nil {
				return err
			}
			if c.sniCluster {
				return nil // the SNI names the cluster
			}
			return parseTCPProxy(&tp, c)
		default:
			return fmt.Errorf("%w: filter %s (%s)", ErrUnsupported, f.GetName(), a.GetTypeUrl())
		}
	}
	return fmt.Errorf("%w: a filter chain without tcp_proxy", ErrUnsupported)
}

func parseTCPProxy(tp *tcpproxyv3.TcpProxy, c *chainConfig) error {
	switch s := tp.GetClusterSpecifier().(type) {
	case *tcpproxyv3.TcpProxy_Cluster:
		c.clusters, c.total = []weightedCluster{{name: s.Cluster, weight: 1}}, 1
	case *tcpproxyv3.TcpProxy_WeightedClusters:
		for _, wc := range s.WeightedClusters.GetClusters() {
			if wc.GetWeight() > 0 {
				c.clusters = append(c.clusters, weightedCluster{name: wc.GetName(), weight: wc.GetWeight()})
				c.total += wc.GetWeight()
			}
		}
		if c.total == 0 {
			return fmt.Errorf("%w: weighted clusters without weight", ErrUnsupported)
		}
	default:
		return fmt.Errorf("%w: tcp_proxy without a cluster", ErrUnsupported)
	}
	return nil
}

// listener is a bound listener; its configuration can be swapped while it runs.
type listener struct {
	name string
	ln   net.Listener
	cfg  atomic.Pointer[listenerConfig]

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (l *listener) track(c net.Conn, add bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if add {
		if l.closed {
			return false
		}
		l.conns[c] = struct{}{}
	} else {
		delete(l.conns, c)
	}
	return true
}

func (l *listener) close() {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	l.ln.Close()
	for c := range conns {
		c.Close()
	}
}

func (p *Proxy) applyListeners(resp *discoveryv3.DiscoveryResponse) error {
	want := map[string]*listenerConfig{}
	for _, r := range resp.GetResources() {
		var l listenerv3.Listener
		if err := r.UnmarshalTo(&l); err != nil {
			return fmt.Errorf("listener: %w", err)
		}
		c, err := parseListener(&l, p.cfg.InboundHost)
		if err != nil {
			return fmt.Errorf("listener %s: %w", l.GetName(), err)
		}
		want[l.GetName()] = c
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Bind what is new first, so that a failure leaves the running listeners as they were.
	bound := map[string]*listener{}
	for name, c := range want {
		if old := p.listeners[name]; old != nil && old.cfg.Load().addr == c.addr {
			continue
		}
		ln, err := net.Listen("tcp", c.addr)
		if err != nil {
			for _, b := range bound {
				b.close()
			}
			return fmt.Errorf("listener %s: %w", name, err)
		}
		bound[name] = &listener{name: name, ln: ln, conns: map[net.Conn]struct{}{}}
	}
	for name, old := range p.listeners {
		if _, keep := want[name]; !keep || bound[name] != nil {
			old.close()
			delete(p.listeners, name)
		}
	}
	for name, c := range want {
		if l := bound[name]; l != nil {
			l.cfg.Store(c)
			p.listeners[name] = l
			go p.serve(l)
			continue
		}
		p.listeners[name].cfg.Store(c)
	}
	return nil
}

func (p *Proxy) serve(l *listener) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		if !l.track(c, true) {
			c.Close()
			return
		}
		go func() {
			defer l.track(c, false)
			defer c.Close()
			if err := p.handleConn(l, c); err != nil {
				p.log.Debug("connection closed", "listener", l.name, "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// handleConn runs one downstream connection to its end.
func (p *Proxy) handleConn(l *listener, down net.Conn) error {
	lc := l.cfg.Load()
	var hello []byte // the ClientHello read by tls_inspector, to pass on
	sni := ""
	if lc.inspect {
		var err error
		if sni, hello, err = peekSNI(down); err != nil {
			return err
		}
	}
	cfg := lc.chainFor(sni)
	if cfg == nil {
		return fmt.Errorf("%w: no filter chain for server name %q", ErrNoEndpoint, sni)
	}
	rb, err := p.rbacFor(cfg)
	if err != nil {
		return err
	}
	if cfg.tls {
		if hello != nil {
			return fmt.Errorf("%w: TLS termination behind tls_inspector", ErrUnsupported)
		}
		tc := tls.Server(newRecordConn(down), p.certs.serverTLS())
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("inbound handshake: %w", err)
		}
		down = tc
		if tc.ConnectionState().DidResume {
			p.resumed.Add(1)
		}
		if id := peerID(tc.ConnectionState()); !rb.allowed(id) {
			return fmt.Errorf("%w: %s", ErrDenied, id)
		}
	} else if rb != nil && !rb.allowed("") {
		return fmt.Errorf("%w: a caller without a certificate", ErrDenied)
	}
	cluster := sni
	if !cfg.sniCluster {
		cluster = cfg.cluster()
	}
	up, err := p.dial(cluster)
	if err != nil {
		return err
	}
	if _, err := up.Write(hello); err != nil {
		up.Close()
		return err
	}
	if !l.track(up, true) {
		up.Close()
		return nil
	}
	defer l.track(up, false)
	if pipe(down, up) {
		p.spliced.Add(1)
	}
	return nil
}

// dial connects to an endpoint of cluster name, over mTLS when the cluster says so.
func (p *Proxy) dial(name string) (net.Conn, error) {
	st := p.state.Load()
	c := st.clusters[name]
	if c == nil {
		return nil, fmt.Errorf("%w: unknown cluster %s", ErrNoEndpoint, name)
	}
	a := c.static
	if a == nil {
		a = st.endpoints[c.eds]
	}
	ep := c.choose(a.pick())
	addr := ep.addr
	if addr == "" {
		return nil, fmt.Errorf("%w: cluster %s", ErrNoEndpoint, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	ut := c.tlsFor(ep.match)
	if ut == nil {
		return conn, nil
	}
	tcfg := p.certs.clientTLS(ut)
	tcfg.ClientSessionCache = p.certs.clientSessions(addr)
	tc := tls.Client(newRecordConn(conn), tcfg)
	hctx, hcancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer hcancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cluster %s: %s: %w", name, addr, err)
	}
	return tc, nil
}
