package xds

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"weak"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// A delta response as the delta server sends it (shared body, then system version and nonce)
// decodes to the response it stands for, whether the server codec sends its buffers
// (preEncoded) or a plain gRPC codec marshals it as a proto.Message; and an equal body is
// encoded once while a stream holds it.
func TestDeltaMsgEncoding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	d := newDeltaServer(context.Background(), newWatchCache(), nil)
	for run := range 50 {
		var entries []deltaEntry
		want := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.ClusterType, Nonce: strconv.Itoa(run)}
		if run%3 != 0 {
			want.SystemVersionInfo = "v" + strconv.Itoa(run)
		}
		for i := range r.IntN(6) {
			value := make([]byte, []int{0, 3, deltaInline, deltaInline + 1, 5000}[r.IntN(5)])
			for k := range value {
				value[k] = byte(r.IntN(256))
			}
			a := &anypb.Any{TypeUrl: resourcev3.ClusterType, Value: value}
			e := deltaEntry{name: "r" + strconv.Itoa(i), version: strconv.Itoa(r.IntN(100)), any: a}
			entries = append(entries, e)
			want.Resources = append(want.Resources, &discoveryv3.Resource{Name: e.name, Version: e.version, Resource: a})
		}
		for i := range r.IntN(3) {
			want.RemovedResources = append(want.RemovedResources, "gone"+strconv.Itoa(i))
		}
		body := d.body(resourcev3.ClusterType, slices.Clone(entries), slices.Clone(want.RemovedResources))
		if again := d.body(resourcev3.ClusterType, slices.Clone(entries), slices.Clone(want.RemovedResources)); again != body {
			t.Fatalf("run %d: the same content was encoded twice", run)
		}
		msg := &deltaMsg{body: body, version: want.SystemVersionInfo, nonce: want.Nonce}
		viaCodec, err := unpooledCodec{}.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		viaProto, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{"server codec": viaCodec.Materialize(), "proto.Marshal": viaProto} {
			got := &discoveryv3.DeltaDiscoveryResponse{}
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatalf("run %d, %s: %v", run, name, err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("run %d, %s: decodes to %v, want %v", run, name, got, want)
			}
		}
		if reversed := slices.Clone(entries); len(reversed) > 1 {
			slices.Reverse(reversed)
			if d.body(resourcev3.ClusterType, reversed, slices.Clone(want.RemovedResources)) != body {
				t.Fatalf("run %d: the same content in another order was encoded again", run)
			}
			reversed[0].version += "x"
			if d.body(resourcev3.ClusterType, reversed, slices.Clone(want.RemovedResources)) == body {
				t.Fatalf("run %d: a response with another version shares the body", run)
			}
		}
		if len(want.RemovedResources) > 0 && d.body(resourcev3.ClusterType, slices.Clone(entries), nil) == body {
			t.Fatalf("run %d: a response without removals shares the body", run)
		}
		if other := d.body(resourcev3.RouteType, slices.Clone(entries), nil); other == body {
			t.Fatalf("run %d: another type URL shares the body", run)
		}
	}
}

// Unsubscribing from "*" leaves held, in go-control-plane's server, what the client held under
// the wildcard until the next response of the type: subscribing by name to one of those is
// answered only if it changed since. The server's own delta server answers the same, step by
// step.
func TestDeltaServerUnsubscribeWildcard(t *testing.T) {
	type served struct {
		name  string
		cache *watchCache
		addr  string
	}
	own, cpl := newWatchCache(), newWatchCache()
	servers := []served{{"delta server", own, serveDeltaServer(t, own)}, {"go-control-plane", cpl, serveCache(t, cpl)}}
	snap := func(content map[string]int) *cachev3.Snapshot {
		var items []types.Resource
		for _, n := range slices.Sorted(func(yield func(string) bool) {
			for n := range content {
				if !yield(n) {
					return
				}
			}
		}) {
			items = append(items, diffResource(resourcev3.ClusterType, n, content[n]))
		}
		cs := &cachev3.Snapshot{}
		cs.Resources[types.Cluster] = cachev3.NewResources(fmt.Sprint(content), items)
		if err := cs.ConstructVersionMap(); err != nil {
			t.Fatal(err)
		}
		return cs
	}
	set := func(cs *cachev3.Snapshot) {
		for _, s := range servers {
			if err := s.cache.SetSnapshot(context.Background(), "n", cs); err != nil {
				t.Fatal(err)
			}
		}
	}
	set(snap(map[string]int{"c0": 0, "c1": 0, "c2": 0}))
	type stream struct {
		st    discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
		resps chan *discoveryv3.DeltaDiscoveryResponse
	}
	var streams []stream
	for _, s := range servers {
		cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		resps := make(chan *discoveryv3.DeltaDiscoveryResponse, 16)
		go func() {
			for {
				r, err := st.Recv()
				if err != nil {
					close(resps)
					return
				}
				resps <- r
			}
		}()
		streams = append(streams, stream{st, resps})
	}
	send := func(req *discoveryv3.DeltaDiscoveryRequest) {
		for _, s := range streams {
			if err := s.st.Send(proto.CloneOf(req)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// next returns the names in each server's next response and its removed names (which must
	// be the same for both servers, versions included), and ACKs it.
	next := func(step string) (names, removed []string) {
		var out []string
		for i, s := range streams {
			var r *discoveryv3.DeltaDiscoveryResponse
			select {
			case r = <-s.resps:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: %s sent nothing", step, servers[i].name)
			}
			var got []string
			for _, res := range r.GetResources() {
				got = append(got, res.GetName()+"@"+res.GetVersion()[:8])
			}
			slices.Sort(got)
			removed = slices.Sorted(slices.Values(r.GetRemovedResources()))
			out = append(out, fmt.Sprintf("%v removed %v", got, removed))
			names = names[:0]
			for _, res := range r.GetResources() {
				names = append(names, res.GetName())
			}
			slices.Sort(names)
			if err := s.st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: r.GetNonce()}); err != nil {
				t.Fatal(err)
			}
		}
		if out[0] != out[1] {
			t.Fatalf("%s: %s sent %s, %s sent %s", step, servers[0].name, out[0], servers[1].name, out[1])
		}
		return names, removed
	}
	send(&discoveryv3.DeltaDiscoveryRequest{Node: (&diffClient{node: "n"}).nodeProto(), TypeUrl: resourcev3.ClusterType})
	if got, _ := next("legacy wildcard"); !slices.Equal(got, []string{"c0", "c1", "c2"}) {
		t.Fatalf("legacy wildcard: sent %v, want c0 c1 c2", got)
	}
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{"c0"}})
	if got, removed := next("c0 under the wildcard"); len(got)+len(removed) != 0 {
		t.Fatalf("c0 under the wildcard: sent %v removed %v, want an empty response", got, removed)
	}
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesUnsubscribe: []string{"*"}})
	// c1 changes, c2 does not; neither is subscribed: nothing is sent until the client
	// subscribes to both, and then c1 alone (c2 is still held).
	set(snap(map[string]int{"c0": 0, "c1": 1, "c2": 0}))
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{"c1", "c2"}})
	if got, removed := next("c1 and c2 by name"); !slices.Equal(got, []string{"c1"}) || len(removed) != 0 {
		t.Fatalf("c1 and c2 by name: sent %v removed %v, want c1 alone", got, removed)
	}
	set(snap(map[string]int{"c0": 0, "c1": 1}))
	if got, removed := next("c2 removed"); len(got) != 0 || !slices.Equal(removed, []string{"c2"}) {
		t.Fatalf("c2 removed: sent %v removed %v, want the removal of c2", got, removed)
	}
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{"*"}})
	if got, removed := next("wildcard"); len(got)+len(removed) != 0 {
		t.Fatalf("wildcard: sent %v removed %v, want an empty response", got, removed)
	}
	set(snap(map[string]int{"c0": 2, "c1": 1, "c3": 0}))
	if got, _ := next("wildcard again"); !slices.Equal(got, []string{"c0", "c3"}) {
		t.Fatalf("wildcard again: sent %v, want c0 and c3", got)
	}
}

// A delta stream whose service disappears from the mesh ends with NotFound (the kill path of
// ads.go), with the server's own delta server as with go-control-plane's; and the server
// counts the stream's ACK of what it was sent.
func TestDeltaStreamKilled(t *testing.T) {
	for name, opts := range map[string][]Option{"own delta server": nil, "go-control-plane's": {WithControlPlaneDeltaServer()}} {
		t.Run(name, func(t *testing.T) {
			srv := NewServer(testLogger(t), opts...)
			addr := startXDS(t, srv)
			if err := srv.SetSnapshot(seal(t, richMesh())); err != nil {
				t.Fatal(err)
			}
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoyNode("web-1", "web"), TypeUrl: resourcev3.ClusterType}); err != nil {
				t.Fatal(err)
			}
			r, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if len(r.GetResources()) == 0 || r.GetNonce() == "" || r.GetSystemVersionInfo() == "" {
				t.Fatalf("first response: %d clusters, nonce %q, version %q", len(r.GetResources()), r.GetNonce(), r.GetSystemVersionInfo())
			}
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: r.GetNonce()}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "the ACK recorded", func() bool {
				ps, ok := proxyStatus(srv, "web-1")
				return ok && ps.Acked[shortType(resourcev3.ClusterType)] == r.GetSystemVersionInfo()
			})
			without := richMesh()
			delete(without.Services, "web")
			delete(without.Chains, "web")
			if err := srv.SetSnapshot(seal(t, without)); err != nil {
				t.Fatal(err)
			}
			for range 10 {
				if _, err = st.Recv(); err != nil {
					break
				}
			}
			if status.Code(err) != codes.NotFound {
				t.Fatalf("after the service's removal: %v, want NotFound", err)
			}
		})
	}
}

// Streams subscribing to the same names by name share one set, however they got there; a
// stream that changes its names gets another without altering the shared one.
func TestDeltaNameSetsShared(t *testing.T) {
	sets := &nameSets{sets: map[uint64]weak.Pointer[nameSet]{}}
	a := newDeltaType(sets, resourcev3.EndpointType, &discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"x", "y", "z"}})
	b := newDeltaType(sets, resourcev3.EndpointType, &discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"z", "w"}})
	b.update(sets, []string{"x", "y"}, []string{"w"})
	if a.namesRef == nil || a.namesRef != b.namesRef {
		t.Fatalf("the same names are held in two sets: %v, %v", a.names, b.names)
	}
	b.update(sets, nil, []string{"z"})
	if a.namesRef == b.namesRef || len(a.names) != 3 || len(b.names) != 2 {
		t.Fatalf("after one stream unsubscribed: %v and %v", a.names, b.names)
	}
	runtime.KeepAlive(a)
}

// A delta stream may ask for at most maxUnknownTypes unknown type URLs (each has its state):
// the next one ends it with InvalidArgument.
func TestDeltaUnknownTypesBounded(t *testing.T) {
	srv := NewServer(nil)
	addr := startXDS(t, srv)
	if err := srv.SetSnapshot(seal(t, richMesh())); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxUnknownTypes + 1 {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: "type.googleapis.com/unknown.T" + strconv.Itoa(i)}
		if i == 0 {
			req.Node = envoyNode("web-1", "web")
		}
		if err := st.Send(req); err != nil {
			break
		}
	}
	for range maxUnknownTypes + 1 {
		if _, err = st.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("after %d unknown types: %v, want InvalidArgument", maxUnknownTypes+1, err)
	}
}

// A delta stream does not keep what it decoded of a request once the request is applied: the
// names of a subscription (a thousand per type in a dense mesh's first requests) are garbage
// while the stream waits to send its answer to a proxy that reads slowly, and after, not kept
// until the proxy's next request (for a proxy in step, the next change of the mesh). The proxy
// here reads nothing: its first answer fills gRPC's flow control window, and the stream waits
// in SendMsg with its second. Fails when the stream's request, which every request is received
// into, still holds the names then.
func TestDeltaRequestReleasedOnceApplied(t *testing.T) {
	c := newWatchCache()
	long := strings.Repeat("x", 200)
	var endpoints, routes []string
	var eps, rts []types.Resource
	for i := range 1000 {
		endpoints = append(endpoints, long+"-endpoints-"+strconv.Itoa(i))
		eps = append(eps, diffResource(resourcev3.EndpointType, endpoints[i], 0))
		routes = append(routes, "route-"+strconv.Itoa(i))
		rts = append(rts, &routev3.RouteConfiguration{Name: routes[i]})
	}
	cs := &cachev3.Snapshot{}
	cs.Resources[types.Endpoint] = cachev3.NewResources("v0", eps)
	cs.Resources[types.Route] = cachev3.NewResources("v0", rts)
	if err := cs.ConstructVersionMap(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetSnapshot(context.Background(), "n", cs); err != nil {
		t.Fatal(err)
	}

	held := make(chan weak.Pointer[string], 1)
	cb := serverv3.CallbackFuncs{StreamDeltaRequestFunc: func(_ int64, req *discoveryv3.DeltaDiscoveryRequest) error {
		if sub := req.GetResourceNamesSubscribe(); req.GetTypeUrl() == resourcev3.RouteType && len(sub) > 0 {
			held <- weak.Make(&sub[0])
		}
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(GRPCServerOptions()...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, ownDeltaADS{serverv3.NewServer(ctx, c, nil), newDeltaServer(ctx, c, cb)})
	go g.Serve(lis)
	defer g.Stop()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []*discoveryv3.DeltaDiscoveryRequest{
		{Node: (&diffClient{node: "n"}).nodeProto(), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: endpoints},
		{TypeUrl: resourcev3.RouteType, ResourceNamesSubscribe: routes},
	} {
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	var w weak.Pointer[string]
	select {
	case w = <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the callbacks")
	}
	for i := 0; w.Value() != nil; i++ {
		if i == 100 {
			t.Fatal("the names of an applied request are still reachable from the stream")
		}
		time.Sleep(10 * time.Millisecond)
		runtime.GC()
	}
}

// A stream subscribing by name to the names another stream's set holds (the first requests of
// a dense mesh's proxies: the same thousand endpoints and routes) takes that set without
// building a map of the names first; one whose names differ by one, repeat one or are
// unsubscribed in the same request gets a set of its own, as before.
func TestDeltaSubscribeToSharedNamesBuildsNoMap(t *testing.T) {
	sets := &nameSets{sets: map[uint64]weak.Pointer[nameSet]{}}
	names := make([]string, 1000)
	for i := range names {
		names[i] = "endpoints-of-cluster-" + strconv.Itoa(i)
	}
	first := newDeltaType(sets, resourcev3.EndpointType, &discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: names})
	rev := slices.Clone(names)
	slices.Reverse(rev)
	req := &discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: rev}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var d *deltaType
	for range 10 {
		d = newDeltaType(sets, resourcev3.EndpointType, req)
	}
	runtime.ReadMemStats(&after)
	if d.namesRef != first.namesRef {
		t.Fatal("a stream subscribing to the same names holds a set of its own")
	}
	// A map of 1,000 names is tens of KB; the stream's state and a bitmap of the names, a few
	// hundred bytes.
	if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > 2048 {
		t.Fatalf("subscribing to 1,000 names another stream holds allocated %d bytes, want at most 2 KB", per)
	}

	other := slices.Clone(names)
	other[500] = "another"
	dup := slices.Clone(names)
	dup[999] = dup[0]
	for _, c := range []struct {
		name       string
		sub, unsub []string
		want       int
		shared     bool
	}{
		{"one name differs", other, nil, 1000, false},
		{"one name repeated", dup, nil, 999, false},
		{"one name also unsubscribed", append(slices.Clone(names), "*"), names[:1], 999, false},
		{"the wildcard too", append(slices.Clone(names), "*"), nil, 1000, true},
	} {
		d := newDeltaType(sets, resourcev3.EndpointType, &discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: c.sub, ResourceNamesUnsubscribe: c.unsub})
		if shared := d.namesRef == first.namesRef; len(d.names) != c.want || shared != c.shared {
			t.Errorf("%s: %d names, shared %v; want %d, shared %v", c.name, len(d.names), shared, c.want, c.shared)
		}
		for _, n := range c.sub {
			if _, ok := d.names[n]; !ok && n != "*" && !slices.Contains(c.unsub, n) {
				t.Errorf("%s: %s is not subscribed", c.name, n)
			}
		}
		if star := slices.Contains(c.sub, "*"); d.wildcard != star {
			t.Errorf("%s: wildcard %v, want %v", c.name, d.wildcard, star)
		}
	}
	runtime.KeepAlive(first)
}

// A body that many streams send is copied into one buffer once the lists of buffers its
// messages hold would outweigh the copy: the messages made after hold three buffers (the copy,
// their nonce and version) rather than two per resource, and encode the same response. A body
// few streams send keeps referencing each resource's bytes.
func TestDeltaBodyFlattenedWhenShared(t *testing.T) {
	d := newDeltaServer(context.Background(), newWatchCache(), nil)
	var entries []deltaEntry
	want := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.ClusterType, SystemVersionInfo: "v1"}
	for i := range 100 {
		a := &anypb.Any{TypeUrl: resourcev3.ClusterType, Value: bytes.Repeat([]byte{byte(i)}, 400)}
		e := deltaEntry{name: "cluster-" + strconv.Itoa(i), version: "1", any: a}
		entries = append(entries, e)
		want.Resources = append(want.Resources, &discoveryv3.Resource{Name: e.name, Version: e.version, Resource: a})
	}
	check := func(step string, body *deltaBody, nonce string, maxBufs int) {
		t.Helper()
		msg := &deltaMsg{body: body, version: want.SystemVersionInfo, nonce: nonce}
		bufs, err := unpooledCodec{}.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if len(bufs) > maxBufs {
			t.Fatalf("%s: the message holds %d buffers, want at most %d", step, len(bufs), maxBufs)
		}
		got := &discoveryv3.DeltaDiscoveryResponse{}
		if err := proto.Unmarshal(bufs.Materialize(), got); err != nil {
			t.Fatal(err)
		}
		w := proto.CloneOf(want)
		w.Nonce = nonce
		if !proto.Equal(got, w) {
			t.Fatalf("%s: decodes to another response", step)
		}
	}
	body := d.body(resourcev3.ClusterType, slices.Clone(entries), nil)
	check("one stream", body, "1", 1000)
	if body.flat.Load() != nil {
		t.Fatal("a body one stream sends was copied")
	}
	// 100 resources of about 450 bytes, 201 buffers at 40 bytes a message: copied at the 6th.
	for i := 2; i <= 10; i++ {
		if d.body(resourcev3.ClusterType, slices.Clone(entries), nil) != body {
			t.Fatal("the same content was encoded twice")
		}
		if flat := body.flat.Load() != nil; flat != (i >= 6) {
			t.Fatalf("%d streams: copied %v", i, flat)
		}
	}
	check("ten streams", body, "10", 2)
	runtime.KeepAlive(body)
}
