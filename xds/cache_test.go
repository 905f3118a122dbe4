package xds

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The differential test of the watch cache (cache.go): random sequences of snapshots, set for
// nodes that share them as the proxies of a group do, are served by the watch cache and by
// go-control-plane's SnapshotCache, each behind go-control-plane's server on loopback, to the
// same raw ADS clients (state of the world and delta, wildcard and named subscriptions that
// change, reconnects, delta ones with initial_resource_versions some of them stale). After
// every step each client of each cache must hold exactly what its subscription selects of its
// node's snapshot (resources byte for byte, the SotW version, the delta resource versions).

var diffCacheTypes = []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ExtensionConfigType}

func TestWatchCacheMatchesSnapshotCache(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("MESH_DIFF_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (MESH_DIFF_SEED reproduces)", seed)
	for run := range 5 {
		r := rand.New(rand.NewPCG(seed, uint64(run)))
		runCacheDifferential(t, r, 24)
	}
}

// serveCache serves c with go-control-plane's server on loopback.
func serveCache(t *testing.T, c cachev3.Cache) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(ctx, c, nil))
	go g.Serve(lis)
	t.Cleanup(func() { cancel(); g.Stop() })
	return lis.Addr().String()
}

// diffGroup is the evolving content of one group of nodes.
type diffGroup struct {
	content map[resourcev3.Type]map[string]int // name → content
	res     map[resourcev3.Type]cachev3.Resources
	cs      *cachev3.Snapshot
}

func diffNames(typ resourcev3.Type) []string {
	p := map[resourcev3.Type]string{resourcev3.ClusterType: "c", resourcev3.EndpointType: "c", resourcev3.ExtensionConfigType: "x"}[typ]
	return []string{p + "0", p + "1", p + "2", p + "3", p + "4"}
}

func diffResource(typ resourcev3.Type, name string, content int) types.Resource {
	switch typ {
	case resourcev3.ClusterType:
		return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Duration(content+1) * time.Millisecond)}
	case resourcev3.EndpointType:
		return &endpointv3.ClusterLoadAssignment{ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{Locality: &corev3.Locality{Zone: strconv.Itoa(content)}}}}
	default:
		a, _ := anypb.New(wrapperspb.String(strconv.Itoa(content)))
		return &corev3.TypedExtensionConfig{Name: name, TypedConfig: a}
	}
}

// step changes g at random: some types change content (new version), some are rebuilt with the
// same content and version (a new map), the others are kept as they were (the same map).
func (g *diffGroup) step(r *rand.Rand, label string) {
	cs := &cachev3.Snapshot{}
	for _, typ := range diffCacheTypes {
		cur := g.content[typ]
		switch x := r.IntN(10); {
		case cur == nil || x < 4:
			next := map[string]int{}
			for _, n := range diffNames(typ) {
				if r.IntN(10) < 6 {
					next[n] = r.IntN(3)
				}
			}
			g.content[typ] = next
			fallthrough
		case x < 5:
			items := map[string]types.Resource{}
			names := slices.Sorted(maps.Keys(g.content[typ]))
			for _, n := range names {
				items[n] = diffResource(typ, n, g.content[typ][n])
			}
			version := g.res[typ].Version
			if x < 4 || cur == nil {
				version = label + "-" + typ[len(typ)-8:]
			}
			list := make([]types.Resource, 0, len(names))
			for _, n := range names {
				list = append(list, items[n])
			}
			g.res[typ] = cachev3.NewResources(version, list)
		}
		cs.Resources[cachev3.GetResponseType(typ)] = g.res[typ]
	}
	if err := cs.ConstructVersionMap(); err != nil {
		panic(err)
	}
	g.cs = cs
}

// diffClient is one raw ADS client of one cache: one stream, all diffCacheTypes.
type diffClient struct {
	t     *testing.T
	addr  string
	node  string
	delta bool
	names map[resourcev3.Type][]string // nil: wildcard

	mu      sync.Mutex
	state   map[resourcev3.Type]map[string]diffEntry
	version map[resourcev3.Type]string // SotW: last version received
	nonce   map[resourcev3.Type]string
	sotw    discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	dstr    discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	// responses counts the SotW responses received.
	responses int
}

type diffEntry struct {
	version string // delta only
	bytes   string
}

func (c *diffClient) nodeProto() *corev3.Node { return &corev3.Node{Id: c.node} }

// connect opens the stream and subscribes; a delta client sends what it holds as its initial
// resource versions, with staleVersion for one of them when stale is set.
func (c *diffClient) connect(stale string) {
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cl := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cancel = func() { cancel(); conn.Close() }
	c.done = make(chan struct{})
	c.nonce = map[resourcev3.Type]string{}
	if c.delta {
		if c.dstr, err = cl.DeltaAggregatedResources(ctx); err != nil {
			c.t.Fatal(err)
		}
		for _, typ := range diffCacheTypes {
			init := map[string]string{}
			for n, e := range c.state[typ] {
				init[n] = e.version
				if n == stale {
					init[n] = "stale"
				}
			}
			c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{Node: c.nodeProto(), TypeUrl: typ,
				ResourceNamesSubscribe: c.names[typ], InitialResourceVersions: init})
		}
		go c.recvDelta(c.dstr, c.done)
		return
	}
	if c.sotw, err = cl.StreamAggregatedResources(ctx); err != nil {
		c.t.Fatal(err)
	}
	for _, typ := range diffCacheTypes {
		c.sendSotw(typ)
	}
	go c.recvSotw(c.sotw, c.done)
}

func (c *diffClient) close() {
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	cancel()
	<-done
}

// sendSotw sends the current request of typ (an ACK of the last response). Called with c.mu held.
func (c *diffClient) sendSotw(typ resourcev3.Type) {
	err := c.sotw.Send(&discoveryv3.DiscoveryRequest{Node: c.nodeProto(), TypeUrl: typ, VersionInfo: c.version[typ],
		ResponseNonce: c.nonce[typ], ResourceNames: c.names[typ]})
	_ = err // a live stream that fails ends its Recv too, which records why
}

func (c *diffClient) sendDelta(req *discoveryv3.DeltaDiscoveryRequest) {
	_ = c.dstr.Send(req) // as sendSotw
}

func (c *diffClient) recvSotw(str discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, done chan struct{}) {
	defer close(done)
	for {
		resp, err := str.Recv()
		if err != nil {
			if str.Context().Err() == nil {
				c.fail(fmt.Errorf("stream ended: %w", err))
			}
			return
		}
		typ := resp.GetTypeUrl()
		st := map[string]diffEntry{}
		c.mu.Lock()
		for _, a := range resp.GetResources() {
			m, err := a.UnmarshalNew()
			if err != nil {
				c.mu.Unlock()
				c.fail(err)
				return
			}
			// What the client asks for (a response to an older request may have more).
			if n := cachev3.GetResourceName(m); c.names[typ] == nil || slices.Contains(c.names[typ], n) {
				st[n] = diffEntry{bytes: string(a.GetValue())}
			}
		}
		c.state[typ], c.version[typ], c.nonce[typ] = st, resp.GetVersionInfo(), resp.GetNonce()
		c.responses++
		c.sendSotw(typ)
		c.mu.Unlock()
	}
}

func (c *diffClient) recvDelta(str discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, done chan struct{}) {
	defer close(done)
	for {
		resp, err := str.Recv()
		if err != nil {
			if str.Context().Err() == nil {
				c.fail(fmt.Errorf("stream ended: %w", err))
			}
			return
		}
		typ := resp.GetTypeUrl()
		c.mu.Lock()
		if c.state[typ] == nil {
			c.state[typ] = map[string]diffEntry{}
		}
		for _, r := range resp.GetResources() {
			if c.names[typ] != nil && !slices.Contains(c.names[typ], r.GetName()) {
				continue // answers an older subscription
			}
			c.state[typ][r.GetName()] = diffEntry{version: r.GetVersion(), bytes: string(r.GetResource().GetValue())}
		}
		for _, n := range resp.GetRemovedResources() {
			delete(c.state[typ], n)
		}
		c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()})
		c.mu.Unlock()
	}
}

func (c *diffClient) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

// resubscribe changes a named subscription of typ to names.
func (c *diffClient) resubscribe(typ resourcev3.Type, names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.names[typ]
	c.names[typ] = names
	for n := range c.state[typ] {
		if !slices.Contains(names, n) {
			delete(c.state[typ], n) // a client forgets what it no longer wants
		}
	}
	if !c.delta {
		c.sendSotw(typ)
		return
	}
	var sub, unsub []string
	for _, n := range names {
		if !slices.Contains(old, n) {
			sub = append(sub, n)
		}
	}
	for _, n := range old {
		if !slices.Contains(names, n) {
			unsub = append(unsub, n)
		}
	}
	c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub})
}

// mismatch returns how the client differs from what it should hold of cs, or "".
func (c *diffClient) mismatch(cs *cachev3.Snapshot) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err.Error()
	}
	for _, typ := range diffCacheTypes {
		want := map[string]diffEntry{}
		for n, r := range cs.GetResources(typ) {
			if c.names[typ] != nil && !slices.Contains(c.names[typ], n) {
				continue
			}
			b, _ := cachev3.MarshalResource(r)
			e := diffEntry{bytes: string(b)}
			if c.delta {
				e.version = cs.GetVersionMap(typ)[n]
			}
			want[n] = e
		}
		if got := c.state[typ]; !maps.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			return fmt.Sprintf("%s: holds %v, want %v", typ, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
		if !c.delta && c.version[typ] != cs.GetVersion(typ) {
			return fmt.Sprintf("%s: version %q, want %q", typ, c.version[typ], cs.GetVersion(typ))
		}
	}
	return ""
}

func runCacheDifferential(t *testing.T, r *rand.Rand, steps int) {
	quiet := cplLogger{slog.New(slog.DiscardHandler)}
	caches := []nodeCache{newWatchCache(), cachev3.NewSnapshotCache(false, cachev3.IDHash{}, quiet)}
	runDifferential(t, r, steps, caches, []string{"watch cache", "SnapshotCache"},
		[]string{serveCache(t, caches[0]), serveCache(t, caches[1])}, false)
}

// runDifferential drives two caches, served at addrs, with the same random steps and holds
// their clients to the same state (only state-of-the-world clients with sotwOnly).
func runDifferential(t *testing.T, r *rand.Rand, steps int, caches []nodeCache, cacheNames, addrs []string, sotwOnly bool) {
	groups := []*diffGroup{{}, {}}
	for _, g := range groups {
		g.content = map[resourcev3.Type]map[string]int{}
		g.res = map[resourcev3.Type]cachev3.Resources{}
	}
	// Nodes n0..n5; node i belongs to group i%2; each node has one client per cache, with the
	// same protocol and subscriptions.
	const nodes = 6
	nodeGroup := func(i int) int { return i % 2 }
	randomNames := func(typ resourcev3.Type) []string {
		var out []string
		for _, n := range diffNames(typ) {
			if r.IntN(2) == 0 {
				out = append(out, n)
			}
		}
		if len(out) == 0 {
			out = []string{diffNames(typ)[r.IntN(5)]}
		}
		if sotwOnly && r.IntN(3) == 0 {
			out = append(out, out[0], "absent") // a duplicate, and a resource nobody has
		}
		return out
	}
	clients := make([][2]*diffClient, nodes)
	for i := range nodes {
		delta := i%3 != 0 && !sotwOnly
		names := map[resourcev3.Type][]string{}
		for _, typ := range diffCacheTypes {
			if r.IntN(2) == 0 {
				names[typ] = randomNames(typ)
			}
		}
		for k := range 2 {
			c := &diffClient{t: t, addr: addrs[k], node: "n" + strconv.Itoa(i), delta: delta,
				names: maps.Clone(names), state: map[resourcev3.Type]map[string]diffEntry{}, version: map[resourcev3.Type]string{}}
			for typ, ns := range names {
				c.names[typ] = slices.Clone(ns)
			}
			clients[i][k] = c
		}
	}
	defer func() {
		for _, pair := range clients {
			for _, c := range pair {
				if c.cancel != nil {
					c.close()
				}
			}
		}
	}()
	// Half the clients connect before any snapshot is set.
	connected := make([]bool, nodes)
	for i := range nodes {
		if r.IntN(2) == 0 {
			clients[i][0].connect("")
			clients[i][1].connect("")
			connected[i] = true
		}
	}
	for step := range steps {
		// Sometimes two snapshots in a row: the second is set while responses to the first are
		// on their way, so that requests find the snapshot moved since what they ACK.
		for sub := range 1 + r.IntN(2) {
			label := "s" + strconv.Itoa(step) + "." + strconv.Itoa(sub)
			for gi, g := range groups {
				g.step(r, label+"g"+strconv.Itoa(gi)) // versions name their content
			}
			if r.IntN(5) == 0 {
				groups[1].cs = groups[0].cs // two groups with the same snapshot
			}
			for i := range nodes {
				for _, c := range caches {
					if err := c.SetSnapshot(context.Background(), "n"+strconv.Itoa(i), groups[nodeGroup(i)].cs); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		for i := range nodes {
			if !connected[i] {
				clients[i][0].connect("")
				clients[i][1].connect("")
				connected[i] = true
				continue
			}
			switch x := r.IntN(8); x {
			case 0: // reconnect, a delta client with one stale initial version
				stale := ""
				cs := groups[nodeGroup(i)].cs
				for _, typ := range diffCacheTypes {
					for n := range cs.GetResources(typ) {
						if r.IntN(4) == 0 {
							stale = n
						}
					}
				}
				for k := range 2 {
					clients[i][k].close()
					clients[i][k].connect(stale)
				}
			case 1, 2: // change a named subscription
				typ := diffCacheTypes[r.IntN(len(diffCacheTypes))]
				if clients[i][0].names[typ] == nil {
					continue
				}
				names := randomNames(typ)
				for k := range 2 {
					clients[i][k].resubscribe(typ, slices.Clone(names))
				}
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for i := range nodes {
			cs := groups[nodeGroup(i)].cs
			for k := range 2 {
				for {
					m := clients[i][k].mismatch(cs)
					if m == "" {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("step %d: node n%d (delta %v, names %v) served by the %s: %s (the other: %q)", step, i,
							clients[i][k].delta, clients[i][k].names, cacheNames[k], m, clients[i][1-k].mismatch(cs))
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
		}
	}
	// Once every client holds its state, responses stop (a few may still be on their way): no
	// response answers an ACK of itself.
	count := func() (n []int) {
		for _, pair := range clients {
			for _, c := range pair {
				c.mu.Lock()
				n = append(n, c.responses)
				c.mu.Unlock()
			}
		}
		return n
	}
	time.Sleep(100 * time.Millisecond)
	before := count()
	time.Sleep(200 * time.Millisecond)
	if after := count(); !slices.Equal(before, after) {
		t.Fatalf("responses after every client is up to date: %v, then %v", before, after)
	}
}

// A delta client that reconnects with the versions it was sent as initial_resource_versions
// is sent nothing again (go-control-plane's SnapshotCache sends a hash of each resource's
// bytes as its version but compares initial versions with the snapshot's version map, so it
// re-sends everything); one it lacks, or holds at a stale version, is sent alone.
func TestDeltaReconnectSendsOnlyWhatChanged(t *testing.T) {
	s := NewServer(nil)
	addr := startXDS(t, s)
	if err := s.SetSnapshot(seal(t, richMesh())); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
	first := func(init map[string]string) *discoveryv3.DeltaDiscoveryResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoyNode("web-1", "web"), TypeUrl: resourcev3.ClusterType,
			InitialResourceVersions: init}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := first(nil)
	if len(r.GetResources()) < 2 {
		t.Fatalf("first connection: %d clusters, want several", len(r.GetResources()))
	}
	held := map[string]string{}
	for _, res := range r.GetResources() {
		held[res.GetName()] = res.GetVersion()
	}
	if r := first(held); len(r.GetResources()) != 0 || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("reconnect with every version held: sent %d clusters, removed %v; want nothing", len(r.GetResources()), r.GetRemovedResources())
	}
	stale := r.GetResources()[0].GetName()
	held[stale] = "stale"
	held["gone"] = "1"
	r = first(held)
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != stale || !slices.Equal(r.GetRemovedResources(), []string{"gone"}) {
		t.Fatalf("reconnect with %q stale and a cluster that is gone: sent %d clusters, removed %v; want %q alone and [gone]",
			stale, len(r.GetResources()), r.GetRemovedResources(), stale)
	}
}
