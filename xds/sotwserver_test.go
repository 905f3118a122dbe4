package xds

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
	"weak"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgit/mesh/internal/adsclient"
)

// The differential test of the state-of-the-world server (sotwserver.go): the random steps of
// TestWatchCacheMatchesSnapshotCache (snapshots shared by groups of nodes, named
// subscriptions that change, with duplicates and absent names, reconnects), on
// two watch caches, one served by our server and one by go-control-plane's, to the same raw
// SotW clients over loopback: every client must hold exactly what its subscription selects of
// its node's snapshot, at the snapshot's version, after every step, and once all are up to
// date no response is sent (no ACK is answered). Our server runs with GRPCServerOptions
// (shared pre-encoded bodies) in even runs and with gRPC's own codec in odd ones.
func TestSotwServerMatchesControlPlane(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("MESH_DIFF_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (MESH_DIFF_SEED reproduces)", seed)
	for run := range 6 {
		r := rand.New(rand.NewPCG(seed, uint64(run)))
		ctx, cancel := context.WithCancel(context.Background())
		caches := []nodeCache{newWatchCache(), newWatchCache()}
		var opts []grpc.ServerOption
		if run%2 == 0 {
			opts = GRPCServerOptions()
		}
		ours := serveSotw(t, newSotwServer(ctx, caches[0].(*watchCache), nil), opts...)
		runDifferential(t, r, 24, caches, []string{"our SotW server", "go-control-plane's SotW server"},
			[]string{ours, serveCache(t, caches[1])}, diffMode{sotwOnly: true})
		cancel()
	}
}

// serveSotw serves x on loopback.
func serveSotw(t *testing.T, x *sotwServer, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, x)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// A request whose nonce is not the latest response's is ignored: it answers a response the
// client had not yet seen the next one of. Answering it (its version is older) would send the
// same resources again, and the client would ACK that too.
func TestSotwStaleNonceIgnored(t *testing.T) {
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	if err := srv.SetSnapshot(seal(t, denseMesh(3, ""))); err != nil {
		t.Fatal(err)
	}
	a := newRawADS(t, dialRaw(t, addr))
	a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("s0-1", "s0"), TypeUrl: resourcev3.ClusterType})
	r1 := a.mustRecv(resourcev3.ClusterType)
	a.ack(r1)
	if err := srv.SetSnapshot(seal(t, denseMesh(4, ""))); err != nil {
		t.Fatal(err)
	}
	r2 := a.mustRecv(resourcev3.ClusterType)
	if r2.VersionInfo == r1.VersionInfo || len(r2.Resources) <= len(r1.Resources) {
		t.Fatalf("after a service was added: version %q (was %q), %d clusters (were %d)", r2.VersionInfo, r1.VersionInfo, len(r2.Resources), len(r1.Resources))
	}
	// A late request answering r1, with a version older than the cache's.
	a.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: r1.VersionInfo, ResponseNonce: r1.Nonce})
	if r, err := a.recv(300 * time.Millisecond); err != nil || r != nil {
		t.Fatalf("a request with a stale nonce was answered: version %q, nonce %q (%v)", r.GetVersionInfo(), r.GetNonce(), err)
	}
	a.ack(r2)
	if r, err := a.recv(300 * time.Millisecond); err != nil || r != nil {
		t.Fatalf("an ACK of the current version was answered: version %q, nonce %q (%v)", r.GetVersionInfo(), r.GetNonce(), err)
	}
	if err := srv.SetSnapshot(seal(t, denseMesh(5, ""))); err != nil {
		t.Fatal(err)
	}
	if r3 := a.mustRecv(resourcev3.ClusterType); len(r3.Resources) <= len(r2.Resources) {
		t.Fatalf("after another service was added: %d clusters, want more than %d", len(r3.Resources), len(r2.Resources))
	}
}

// A subscription naming "*" and a resource is wildcard: it is sent every resource, and its
// ACK is not answered (go-control-plane's server sends it the named resources only, then
// answers each of its ACKs again).
func TestSotwExplicitWildcard(t *testing.T) {
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	if err := srv.SetSnapshot(seal(t, denseMesh(4, ""))); err != nil {
		t.Fatal(err)
	}
	all := newRawADS(t, dialRaw(t, addr))
	all.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("s0-1", "s0"), TypeUrl: resourcev3.ClusterType})
	want := all.mustRecv(resourcev3.ClusterType)

	a := newRawADS(t, dialRaw(t, addr))
	first, err := want.Resources[0].UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"*", cachev3.GetResourceName(first)}
	a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("s0-2", "s0"), TypeUrl: resourcev3.ClusterType, ResourceNames: names})
	r := a.mustRecv(resourcev3.ClusterType)
	if len(r.Resources) != len(want.Resources) || len(r.Resources) < 4 {
		t.Fatalf("wildcard with a name: %d clusters, want every one (%d)", len(r.Resources), len(want.Resources))
	}
	a.ack(r, names...)
	if r, err := a.recv(300 * time.Millisecond); err != nil || r != nil {
		t.Fatalf("the ACK of a wildcard subscription was answered: version %q, %d resources (%v)", r.GetVersionInfo(), len(r.GetResources()), err)
	}
}

// The wire bytes of a response (a shared body and the stream's nonce) are the deterministic
// encoding of the DiscoveryResponse they stand for, whether sent by GRPCServerOptions' codec
// (wire) or marshalled as a proto.Message; resources that are wires (wire.go) and resources
// that are not are encoded alike.
func TestSotwResponseEncoding(t *testing.T) {
	var items []types.Resource
	for i := range 5 {
		c := &clusterv3.Cluster{Name: "c" + strconv.Itoa(i), ConnectTimeout: durationpb.New(time.Duration(i+1) * time.Second)}
		if i >= 3 {
			c.AltStatName = strings.Repeat("large resource, referenced rather than copied ", 4)
		}
		if i%2 == 0 {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, newWire(c, b))
			continue
		}
		items = append(items, c)
	}
	for _, version := range []string{"v1", ""} {
		r := cachev3.NewResources(version, items)
		ts, err := newTypeSet(types.Cluster, r, map[string]map[string]string{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, requested := range [][]string{nil, {"c3", "c0", "absent", "c3"}} {
			sub := newSotwSub(requested)
			msg := &sotwMsg{body: ts.sotwBody(&sub), tail: protowire.AppendString(protowire.AppendTag(nil, 5, protowire.BytesType), "42")}
			want := &discoveryv3.DiscoveryResponse{VersionInfo: version, TypeUrl: resourcev3.ClusterType, Nonce: "42"}
			names := sub.names
			if sub.all() {
				names = slices.Sorted(maps.Keys(r.Items))
			}
			for _, n := range names {
				if res, ok := r.Items[n]; ok {
					b, err := cachev3.MarshalResource(typed(res.Resource))
					if err != nil {
						t.Fatal(err)
					}
					want.Resources = append(want.Resources, &anypb.Any{TypeUrl: resourcev3.ClusterType, Value: b})
				}
			}
			wantBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if got := msg.wire().Materialize(); !bytes.Equal(got, wantBytes) {
				t.Fatalf("version %q, names %v: wire bytes differ from the response's encoding", version, requested)
			}
			if got, err := proto.Marshal(msg); err != nil || !bytes.Equal(got, wantBytes) {
				t.Fatalf("version %q, names %v: proto.Marshal differs from the response's encoding (%v)", version, requested, err)
			}
			if len(want.Resources) != map[bool]int{true: 5, false: 2}[sub.all()] {
				t.Fatalf("names %v: %d resources", requested, len(want.Resources))
			}
			if sub.all() && !referenced(msg.body.bufs, items[4].(*wire).any.GetValue()) {
				t.Fatalf("version %q: a large resource's bytes were copied into the body", version)
			}
		}
	}
}

// referenced reports whether one of bufs is value itself (not a copy).
func referenced(bufs mem.BufferSlice, value []byte) bool {
	for _, b := range bufs {
		if d := b.ReadOnlyData(); len(d) == len(value) && &d[0] == &value[0] {
			return true
		}
	}
	return false
}

// A typeSet's response body is built once for every subscription naming the same resources
// (in any order, with duplicates), and held weakly: once nobody holds it, it is collected.
func TestSotwBodiesSharedAndWeak(t *testing.T) {
	var items []types.Resource
	for i := range 3 {
		items = append(items, &clusterv3.Cluster{Name: "c" + strconv.Itoa(i)})
	}
	ts, err := newTypeSet(types.Cluster, cachev3.NewResources("v", items), map[string]map[string]string{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	s1, s2, s3 := newSotwSub([]string{"c2", "c0"}), newSotwSub([]string{"c0", "c2", "c0"}), newSotwSub([]string{"c1"})
	b1, b2, b3 := ts.sotwBody(&s1), ts.sotwBody(&s2), ts.sotwBody(&s3)
	if b1 != b2 {
		t.Fatal("two subscriptions to the same names got bodies built twice")
	}
	if b1 == b3 || bytes.Equal(b1.bufs.Materialize(), b3.bufs.Materialize()) {
		t.Fatal("subscriptions to other names got the same body")
	}
	all := newSotwSub(nil)
	if ba, bb := ts.sotwBody(&all), ts.sotwBody(&all); ba != bb {
		t.Fatal("the wildcard body was built twice")
	}
	runtime.KeepAlive(b1)
	runtime.KeepAlive(b2)
	runtime.KeepAlive(b3)
	for range 3 {
		runtime.GC()
	}
	ts.sotw.mu.Lock()
	defer ts.sotw.mu.Unlock()
	if ts.sotw.all.Value() != nil || ts.sotw.named[s1.key].body.Value() != nil {
		t.Fatal("bodies nobody holds were not collected")
	}
}

// The same differential at the level of the Server: two servers, ours and one with
// WithControlPlaneSotW, are set the same random sequence of meshes (services added and
// removed, an intention's permissions changed: clusters, endpoints, listeners, routes and
// RBAC extension configs change), and serve the same Envoy-like clients (internal/adsclient:
// wildcard listeners and clusters; routes, endpoints and extension configs by name as Envoy
// follows them, or wildcard), some of which reconnect. After every step, once both servers
// report every proxy up to date, each client of ours must hold exactly what its twin holds of
// every type (resources byte for byte, and the version).
func TestSotwServerMatchesControlPlaneServer(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("MESH_DIFF_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (MESH_DIFF_SEED reproduces)", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	servers := [2]*Server{NewServer(testLogger(t)), NewServer(testLogger(t), WithControlPlaneSotW())}
	names := [2]string{"our SotW server", "go-control-plane's SotW server"}
	var ccs [2]*grpc.ClientConn
	for k, s := range servers {
		ccs[k] = dialRaw(t, startXDS(t, s))
	}
	set := func() {
		snap := seal(t, denseMesh(3+r.IntN(4), []string{"", "/a", "/b"}[r.IntN(3)]))
		for _, s := range servers {
			if err := s.SetSnapshot(snap); err != nil {
				t.Fatal(err)
			}
		}
	}
	type twin struct {
		node, service string
		opts          adsclient.Options
		cancel        [2]context.CancelFunc
		c             [2]*adsclient.Client
	}
	open := func(tw *twin) {
		for k := range servers {
			if tw.cancel[k] != nil {
				tw.cancel[k]()
				<-tw.c[k].Done()
			}
			ctx, cancel := context.WithCancel(context.Background())
			c, err := adsclient.Open(ctx, ccs[k], envoyNode(tw.node, tw.service), tw.opts)
			if err != nil {
				t.Fatal(err)
			}
			tw.cancel[k], tw.c[k] = cancel, c
		}
	}
	set()
	twins := make([]*twin, 6)
	for i := range twins {
		tw := &twin{node: "n" + strconv.Itoa(i), service: "s" + strconv.Itoa(i%3),
			opts: adsclient.Options{Follow: i%2 == 0, Keep: true, Extensions: []string{PublicHTTPRBAC}}}
		open(tw)
		twins[i] = tw
	}
	defer func() {
		for _, tw := range twins {
			for k := range servers {
				tw.cancel[k]()
			}
		}
	}()
	typs := append(slices.Clone(adsclient.Types), resourcev3.ExtensionConfigType)
	for step := range 12 {
		if step > 0 {
			set()
			if r.IntN(2) == 0 {
				open(twins[r.IntN(len(twins))])
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, tw := range twins {
			for {
				diff := ""
				for k, s := range servers {
					if !upToDate(s, tw.node) {
						diff = names[k] + ": not up to date"
					}
				}
				for _, typ := range typs {
					a, b := tw.c[0], tw.c[1]
					if a.Version(typ) != b.Version(typ) || !slices.Equal(a.Held(typ), b.Held(typ)) {
						diff += fmt.Sprintf("; %s: version %q, %d resources from ours, version %q, %d resources from go-control-plane's",
							shortType(typ), a.Version(typ), len(a.Held(typ)), b.Version(typ), len(b.Held(typ)))
					}
				}
				if diff == "" {
					break
				}
				if time.Now().After(deadline) {
					for k, s := range servers {
						p, _ := proxyStatus(s, tw.node)
						t.Logf("%s: %+v", names[k], p)
					}
					t.Fatalf("step %d: node %s (%v): %s", step, tw.node, tw.opts, diff)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
}

// A stream asking for ever more unknown resource types (each of which the server must keep
// the state of) is ended with InvalidArgument once there are too many; until then each is
// answered as go-control-plane answers one: with no resources, when its version is not "".
func TestSotwUnknownTypesBounded(t *testing.T) {
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	if err := srv.SetSnapshot(seal(t, denseMesh(3, ""))); err != nil {
		t.Fatal(err)
	}
	a := newRawADS(t, dialRaw(t, addr))
	a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("s0-1", "s0"), TypeUrl: "type.googleapis.com/unknown.0", VersionInfo: "1"})
	if r := a.mustRecv("type.googleapis.com/unknown.0"); len(r.Resources) != 0 || r.VersionInfo != "" {
		t.Fatalf("an unknown type: version %q, %d resources; want none", r.VersionInfo, len(r.Resources))
	}
	for i := 1; i <= maxUnknownTypes; i++ {
		a.send(&discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/unknown." + strconv.Itoa(i)})
	}
	if st := a.expectError(); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "unknown resource types") {
		t.Fatalf("after %d unknown types: %v, want InvalidArgument", maxUnknownTypes+1, st)
	}
}

// A NACK (whose version is the last one the proxy accepted, older than the cache's) is not
// answered with the configuration just rejected; the next change is sent.
func TestSotwNackNotResent(t *testing.T) {
	srv := NewServer(testLogger(t))
	addr := startXDS(t, srv)
	if err := srv.SetSnapshot(seal(t, denseMesh(3, ""))); err != nil {
		t.Fatal(err)
	}
	a := newRawADS(t, dialRaw(t, addr))
	a.send(&discoveryv3.DiscoveryRequest{Node: envoyNode("s0-1", "s0"), TypeUrl: resourcev3.ClusterType})
	r1 := a.mustRecv(resourcev3.ClusterType)
	a.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: r1.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "cluster: bad"}})
	if r, err := a.recv(300 * time.Millisecond); err != nil || r != nil {
		t.Fatalf("a NACK was answered: version %q (rejected %q), nonce %q (%v)", r.GetVersionInfo(), r1.VersionInfo, r.GetNonce(), err)
	}
	if err := srv.SetSnapshot(seal(t, denseMesh(4, ""))); err != nil {
		t.Fatal(err)
	}
	if r2 := a.mustRecv(resourcev3.ClusterType); r2.VersionInfo == r1.VersionInfo {
		t.Fatalf("after a change: version %q again", r2.VersionInfo)
	}
}

// A state-of-the-world body that many streams send is copied into one buffer once the lists
// of buffers its messages hold would outweigh the copy (bodyBufs), and its messages encode the
// same response before and after.
func TestSotwBodyFlattenedWhenShared(t *testing.T) {
	var items []types.Resource
	for i := range 100 {
		c := &clusterv3.Cluster{Name: "c" + strconv.Itoa(i), AltStatName: strings.Repeat("x", 400)}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, newWire(c, b))
	}
	ts, err := newTypeSet(types.Cluster, cachev3.NewResources("v1", items), map[string]map[string]string{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	all := newSotwSub(nil)
	tail := protowire.AppendString(protowire.AppendTag(nil, 5, protowire.BytesType), "42")
	first := &sotwMsg{body: ts.sotwBody(&all), tail: tail}
	want := first.wire().Materialize()
	if len(first.wire()) < 200 || first.body.flat.Load() != nil {
		t.Fatalf("one stream: %d buffers, copied %v; want every resource referenced", len(first.wire()), first.body.flat.Load() != nil)
	}
	for i := 2; i <= 10; i++ {
		msg := &sotwMsg{body: ts.sotwBody(&all), tail: tail}
		if msg.body != first.body {
			t.Fatal("the wildcard body was built twice")
		}
		if !bytes.Equal(msg.wire().Materialize(), want) {
			t.Fatalf("%d streams: the message encodes another response", i)
		}
		if flat := len(msg.wire()) == 2; flat != (i >= 6) {
			t.Fatalf("%d streams: %d buffers in a message", i, len(msg.wire()))
		}
	}
	runtime.KeepAlive(first)
}

// State-of-the-world streams subscribing to the same names share one sorted list of them, and
// keep none of the strings of the requests they received (a thousand per type in a dense
// mesh): what a stream keeps of its latest request's names, for the next ACK to be decoded
// into, is that list when the request named them sorted, else a list of the shared strings.
func TestSotwNamesSharedNotKept(t *testing.T) {
	var names []string
	for i := range 1000 {
		names = append(names, "endpoints-"+strconv.Itoa(100000+i))
	}
	fresh := func(order []string) []string { // as a request decodes them: strings of its own
		out := make([]string, len(order))
		for i, n := range order {
			out[i] = strings.Clone(n)
		}
		return out
	}
	subscribe := func(requested []string) *sotwType {
		ty := &sotwType{sub: newSotwSub(requested)}
		ty.reqNames = ty.asReceived(requested)
		return ty
	}
	first := subscribe(fresh(names))
	reversed := slices.Clone(names)
	slices.Reverse(reversed)
	var kept []weak.Pointer[byte]
	var streams []*sotwType
	for _, order := range [][]string{names, reversed} {
		req := fresh(order)
		kept = append(kept, weak.Make(unsafe.StringData(req[0])))
		ty := subscribe(req)
		if &ty.sub.names[0] != &first.sub.names[0] {
			t.Fatal("two streams subscribing to the same names hold two lists")
		}
		if !slices.Equal(ty.reqNames, order) {
			t.Fatal("the names kept for the next ACK are not the request's, in its order")
		}
		streams = append(streams, ty)
	}
	if &streams[0].reqNames[0] != &first.sub.names[0] {
		t.Fatal("a request naming the subscription's names in order got a list of its own")
	}
	for i := 0; ; i++ {
		runtime.GC()
		if kept[0].Value() == nil && kept[1].Value() == nil {
			break
		}
		if i == 50 {
			t.Fatal("a stream keeps the strings of the request it received")
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.KeepAlive(first)
	runtime.KeepAlive(streams)
}
