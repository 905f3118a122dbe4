// Package adsclient opens raw ADS streams that play Envoy sidecars for benchmarks: one stream per
// proxy, state of the world or delta, that ACKs every response at once and counts what it
// received. It is the one client of the dense-mesh benchmarks (xds.BenchmarkDenseMesh) and of the
// side-by-side comparison with istiod (bench/istio), so both servers are measured by the same
// code.
//
// A stream subscribes to every listener and cluster (wildcard). For routes and endpoints it
// either subscribes wildcard as well (Options.Follow false: what go-control-plane based servers
// answer) or, like Envoy, by name: the route configurations its listeners' HTTP connection
// managers name over RDS, the extension configurations (ECDS) its filters name, and the endpoints
// of its EDS clusters, updated whenever listeners or clusters change (Options.Follow true: what
// istiod needs, and what mesh serve answers too).
// A stream never NACKs: it does not validate what it receives beyond decoding what it follows.
package adsclient

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Types are the four resource types every sidecar stream subscribes to, listeners first;
// extension configurations (ECDS) are a fifth when the listeners name some (or
// Options.Extensions does).
var Types = []string{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.RouteType, resourcev3.EndpointType}

// Options say how a stream talks.
type Options struct {
	Delta  bool // delta xDS (DeltaAggregatedResources); otherwise state of the world
	Follow bool // subscribe to routes and endpoints by name, as Envoy does; otherwise wildcard
	// Extensions are extension configurations (ECDS) to subscribe to from the start; with
	// Follow, those the listeners' filters name are added.
	Extensions []string
	// Retry reopens a stream the server ended (or refused, as istiod's rate limit on new
	// streams does), as Envoy does: after a random delay below Backoff (default 500 ms), doubled
	// at each failure in a row up to MaxBackoff (default 30 s). Without it the client ends with
	// the stream.
	Retry      bool
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Keep keeps what a state-of-the-world stream holds (Held), for tests that compare
	// servers; benchmarks leave it off. Delta streams ignore it.
	Keep bool
}

// Client is one open stream. Its counters may be read while it runs.
type Client struct {
	bytes    atomic.Int64 // received, protobuf size of each response
	ecds     atomic.Bool  // extension configurations are subscribed to: synced waits for them too
	vmu      sync.Mutex
	versions map[string]string   // type → version of its last response
	held     map[string][]string // type → the sorted encodings of its last response's resources (Keep)
	marker   atomic.Pointer[[]byte]
	markerAt atomic.Int64 // unix nanoseconds at which the marker was first seen (and ACKed), 0 before
	retries  atomic.Int64 // streams reopened
	synced   chan struct{}
	syncOnce sync.Once
	done     chan struct{}
	err      atomic.Value // error that ended the stream

	opts  Options
	mu    sync.Mutex             // guards send and the subscriptions below
	send  func(typ string) error // (re)subscribes to typ with the names below
	names map[string][]string    // type → subscribed names (Follow), nil for wildcard
	sent  map[string][]string    // type → names last subscribed (delta), for the differences
	// What a following delta stream knows of the resources it holds: every listener's route
	// configurations and every EDS cluster's endpoint name.
	routes    map[string]*followed // listener name → what it names
	endpoints map[string]string
}

// Open opens a stream on cc for node and answers it in the background until ctx ends or the
// server ends the stream (without Options.Retry).
func Open(ctx context.Context, cc *grpc.ClientConn, node *corev3.Node, opts Options) (*Client, error) {
	c := &Client{opts: opts, synced: make(chan struct{}), done: make(chan struct{})}
	c.versions = map[string]string{}
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
	go func() {
		for failures := 0; ; failures++ {
			c.mu.Lock()
			c.names, c.sent = map[string][]string{}, map[string][]string{}
			c.routes, c.endpoints = map[string]*followed{}, map[string]string{}
			c.mu.Unlock()
			var err error
			received := false
			if opts.Delta {
				err = c.runDelta(ctx, ads, node, &received)
			} else {
				err = c.runSotW(ctx, ads, node, &received)
			}
			if !opts.Retry || ctx.Err() != nil {
				c.end(err)
				return
			}
			if received {
				failures = 0
			}
			c.retries.Add(1)
			select {
			case <-time.After(opts.backoff(failures)):
			case <-ctx.Done():
				c.end(ctx.Err())
				return
			}
		}
	}()
	return c, nil
}

// backoff is the delay before reopening a stream after failures failed streams in a row.
func (o Options) backoff(failures int) time.Duration {
	d, limit := cmp.Or(o.Backoff, 500*time.Millisecond), cmp.Or(o.MaxBackoff, 30*time.Second)
	for range failures {
		if d >= limit {
			break
		}
		d *= 2
	}
	return rand.N(min(d, limit)) + 1
}

// Retries is the number of times the stream was reopened.
func (c *Client) Retries() int64 { return c.retries.Load() }

// Synced is closed once one stream has received (and ACKed) every type.
func (c *Client) Synced() <-chan struct{} { return c.synced }

// Done is closed when the stream has ended; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is the error that ended the stream, nil while it runs.
func (c *Client) Err() error {
	if e, ok := c.err.Load().(error); ok {
		return e
	}
	return nil
}

// Bytes is the number of bytes received so far; SwapBytes resets it.
func (c *Client) Bytes() int64            { return c.bytes.Load() }
func (c *Client) SwapBytes(n int64) int64 { return c.bytes.Swap(n) }

// Version is the version of the last response of type typ (SotW version_info, delta
// system_version_info), "" before the first.
func (c *Client) Version(typ string) string {
	c.vmu.Lock()
	defer c.vmu.Unlock()
	return c.versions[typ]
}

// Expect arms the marker: from now on, the first response (of any type) holding a resource
// whose encoding contains marker records the time it was ACKed (MarkerAt).
func (c *Client) Expect(marker []byte) {
	c.markerAt.Store(0)
	c.marker.Store(&marker)
}

// MarkerAt is when the armed marker was first received and ACKed, the zero time before.
func (c *Client) MarkerAt() time.Time {
	if n := c.markerAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (c *Client) end(err error) {
	c.err.Store(err)
	close(c.done)
}

func (c *Client) runSotW(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient, node *corev3.Node, received *bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	// The last version and nonce of each type, for requests that change a subscription.
	versions, nonces := map[string]string{}, map[string]string{}
	c.mu.Lock()
	c.send = func(typ string) error {
		return st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typ, ResourceNames: c.names[typ], VersionInfo: versions[typ], ResponseNonce: nonces[typ]})
	}
	c.mu.Unlock()
	if err := c.subscribeAll(func(typ string, names []string, first bool) error {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typ, ResourceNames: names}
		if first {
			req.Node = node
		}
		return st.Send(req)
	}); err != nil {
		return err
	}
	seen := map[string]bool{}
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		*received = true
		c.bytes.Add(int64(proto.Size(r)))
		c.mu.Lock()
		versions[r.TypeUrl], nonces[r.TypeUrl] = r.VersionInfo, r.Nonce
		err = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: c.names[r.TypeUrl]})
		if err == nil {
			err = c.follow(r.TypeUrl, r.Resources)
		}
		c.mu.Unlock()
		if err != nil {
			return err
		}
		c.received(r.TypeUrl, r.VersionInfo, r.Resources, seen)
	}
}

func (c *Client) runDelta(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient, node *corev3.Node, received *bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.send = func(typ string) error {
		add, remove := diff(c.sent[typ], c.names[typ])
		c.sent[typ] = c.names[typ]
		if len(add)+len(remove) == 0 {
			return nil
		}
		return st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: add, ResourceNamesUnsubscribe: remove})
	}
	c.mu.Unlock()
	if err := c.subscribeAll(func(typ string, names []string, first bool) error {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: names}
		if first {
			req.Node = node
		}
		return st.Send(req)
	}); err != nil {
		return err
	}
	seen := map[string]bool{}
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		*received = true
		c.bytes.Add(int64(proto.Size(r)))
		anys := make([]*anypb.Any, 0, len(r.Resources))
		for _, res := range r.Resources {
			if res.Resource != nil {
				anys = append(anys, res.Resource)
			}
		}
		c.mu.Lock()
		err = st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
		if err == nil {
			err = c.followDelta(r.TypeUrl, anys, r.RemovedResources)
		}
		c.mu.Unlock()
		if err != nil {
			return err
		}
		c.received(r.TypeUrl, r.SystemVersionInfo, anys, seen)
	}
}

// subscribeAll sends the initial request of each type: wildcard, except routes and endpoints
// when following (Envoy asks for those once it knows their names), and extension
// configurations by name.
func (c *Client) subscribeAll(send func(typ string, names []string, first bool) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, typ := range Types {
		if c.opts.Follow && (typ == resourcev3.RouteType || typ == resourcev3.EndpointType) {
			continue
		}
		if err := send(typ, nil, k == 0); err != nil {
			return err
		}
	}
	if len(c.opts.Extensions) == 0 {
		return nil
	}
	names := slices.Sorted(slices.Values(c.opts.Extensions))
	c.names[resourcev3.ExtensionConfigType], c.sent[resourcev3.ExtensionConfigType] = names, names
	c.ecds.Store(true)
	return send(resourcev3.ExtensionConfigType, names, false)
}

// Held is what a state-of-the-world stream with Options.Keep holds of typ: the encodings of
// the resources of its last response, sorted.
func (c *Client) Held(typ string) []string {
	c.vmu.Lock()
	defer c.vmu.Unlock()
	return c.held[typ]
}

// received records a response (already ACKed).
func (c *Client) received(typeURL, version string, resources []*anypb.Any, seen map[string]bool) {
	c.vmu.Lock()
	c.versions[typeURL] = version
	if c.opts.Keep && !c.opts.Delta {
		held := make([]string, 0, len(resources))
		for _, r := range resources {
			held = append(held, r.GetTypeUrl()+"\x00"+string(r.GetValue()))
		}
		slices.Sort(held)
		if c.held == nil {
			c.held = map[string][]string{}
		}
		c.held[typeURL] = held
	}
	c.vmu.Unlock()
	if m := c.marker.Load(); m != nil && c.markerAt.Load() == 0 {
		for _, r := range resources {
			if bytes.Contains(r.GetValue(), *m) {
				c.markerAt.Store(time.Now().UnixNano())
				break
			}
		}
	}
	seen[typeURL] = true
	for _, t := range Types {
		if !seen[t] {
			return
		}
	}
	if !c.ecds.Load() || seen[resourcev3.ExtensionConfigType] {
		c.syncOnce.Do(func() { close(c.synced) })
	}
}

// follow updates the route and endpoint subscriptions from a full state-of-the-world response.
func (c *Client) follow(typ string, resources []*anypb.Any) error {
	if !c.opts.Follow {
		return nil
	}
	switch typ {
	case resourcev3.ListenerType:
		var names, ecds []string
		for _, r := range resources {
			f := listener(r)
			names, ecds = append(names, f.routes...), append(ecds, f.ecds...)
		}
		if err := c.resubscribe(resourcev3.ExtensionConfigType, append(ecds, c.opts.Extensions...)); err != nil {
			return err
		}
		return c.resubscribe(resourcev3.RouteType, names)
	case resourcev3.ClusterType:
		var names []string
		for _, r := range resources {
			if _, eds := clusterEDS(r); eds != "" {
				names = append(names, eds)
			}
		}
		return c.resubscribe(resourcev3.EndpointType, names)
	}
	return nil
}

// followDelta is follow for a delta response: added or changed resources and removed names.
func (c *Client) followDelta(typ string, resources []*anypb.Any, removed []string) error {
	if !c.opts.Follow {
		return nil
	}
	switch typ {
	case resourcev3.ListenerType:
		for _, n := range removed {
			delete(c.routes, n)
		}
		for _, r := range resources {
			f := listener(r)
			c.routes[f.name] = f
		}
		var names, ecds []string
		for _, f := range c.routes {
			names, ecds = append(names, f.routes...), append(ecds, f.ecds...)
		}
		if err := c.resubscribe(resourcev3.ExtensionConfigType, append(ecds, c.opts.Extensions...)); err != nil {
			return err
		}
		return c.resubscribe(resourcev3.RouteType, names)
	case resourcev3.ClusterType:
		for _, n := range removed {
			delete(c.endpoints, n)
		}
		for _, r := range resources {
			if n, eds := clusterEDS(r); eds != "" {
				c.endpoints[n] = eds
			} else {
				delete(c.endpoints, n)
			}
		}
		var names []string
		for _, n := range c.endpoints {
			names = append(names, n)
		}
		return c.resubscribe(resourcev3.EndpointType, names)
	}
	return nil
}

// resubscribe subscribes typ to names (sorted, deduplicated) if they differ from the current ones.
func (c *Client) resubscribe(typ string, names []string) error {
	slices.Sort(names)
	names = slices.Compact(names)
	if names == nil {
		names = []string{}
	}
	old, ok := c.names[typ]
	if ok && slices.Equal(old, names) || !ok && len(names) == 0 {
		return nil // unchanged; or nothing to ask for yet (an empty list would be a wildcard)
	}
	c.names[typ] = names
	if typ == resourcev3.ExtensionConfigType && len(names) > 0 {
		c.ecds.Store(true)
	}
	return c.send(typ)
}

// Decoding a listener or cluster to follow it costs the benchmark's CPU, on the machine the
// servers run on: what was decoded is remembered by a hash of its encoding (proxies of the same
// service, and every response re-sending an unchanged resource, share it).
var (
	seed    = maphash.MakeSeed()
	decoded sync.Map // uint64 → followed
)

// followed is what a stream follows of one listener or cluster.
type followed struct {
	name   string
	routes []string // a listener's route configurations
	ecds   []string // the extension configurations a listener's filters name
	eds    string   // an EDS cluster's endpoint name
}

// listener is what a listener names: the route configurations its HTTP connection managers
// (in its filter chains or its API listener) fetch over RDS, and the extension configurations
// its network and HTTP filters fetch over ECDS.
func listener(r *anypb.Any) *followed {
	return decode(r, func(f *followed) {
		var l listenerv3.Listener
		if err := r.UnmarshalTo(&l); err != nil {
			return
		}
		f.name = l.Name
		hcm := func(a *anypb.Any) {
			var h hcmv3.HttpConnectionManager
			if !a.MessageIs(&h) || a.UnmarshalTo(&h) != nil {
				return
			}
			if rds := h.GetRds(); rds != nil {
				f.routes = append(f.routes, rds.RouteConfigName)
			}
			for _, hf := range h.HttpFilters {
				if hf.GetConfigDiscovery() != nil {
					f.ecds = append(f.ecds, hf.Name)
				}
			}
		}
		chains := l.FilterChains
		if l.DefaultFilterChain != nil {
			chains = append(chains, l.DefaultFilterChain)
		}
		for _, fc := range chains {
			for _, fl := range fc.Filters {
				if fl.GetConfigDiscovery() != nil {
					f.ecds = append(f.ecds, fl.Name)
				}
				if a := fl.GetTypedConfig(); a != nil {
					hcm(a)
				}
			}
		}
		if a := l.GetApiListener().GetApiListener(); a != nil {
			hcm(a)
		}
	})
}

// clusterEDS is a cluster's name and the name under which its endpoints are fetched, "" for a
// cluster that is not EDS.
func clusterEDS(r *anypb.Any) (string, string) {
	f := decode(r, func(f *followed) {
		var cl clusterv3.Cluster
		if err := r.UnmarshalTo(&cl); err != nil {
			return
		}
		f.name = cl.Name
		if cl.GetType() == clusterv3.Cluster_EDS {
			f.eds = cmp.Or(cl.GetEdsClusterConfig().GetServiceName(), cl.Name)
		}
	})
	return f.name, f.eds
}

func decode(r *anypb.Any, fill func(*followed)) *followed {
	h := maphash.Bytes(seed, r.GetValue()) ^ maphash.String(seed, r.GetTypeUrl())
	if v, ok := decoded.Load(h); ok {
		return v.(*followed)
	}
	f := &followed{}
	fill(f)
	decoded.Store(h, f)
	return f
}

// diff is what to subscribe and unsubscribe to go from old to new (both sorted).
func diff(old, new []string) (add, remove []string) {
	for _, n := range new {
		if _, ok := slices.BinarySearch(old, n); !ok {
			add = append(add, n)
		}
	}
	for _, o := range old {
		if _, ok := slices.BinarySearch(new, o); !ok {
			remove = append(remove, o)
		}
	}
	return add, remove
}

// String names the stream's mode, for tables.
func (o Options) String() string {
	p := "sotw"
	if o.Delta {
		p = "delta"
	}
	if o.Follow {
		return fmt.Sprintf("%s, RDS/EDS by name", p)
	}
	return p
}
