package reconciler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/meshgen"
	"github.com/meshgit/mesh/xds"
)

// BenchmarkMeshWideChange holds mesh's xDS fan-out against go-control-plane's own, in the same
// run, on the same streams (issue 13's target: ≤ 1× raw, stretch 0.5×).
//
// The mesh is meshgen's 1,000-service repository (seed 1: 20 teams, ~5 intentions per
// destination, ~6 explicit upstreams per caller, canary chains on a tenth), compiled by our
// compiler (both variants with one compiler cache, as a server compiles successive commits); the mesh-wide change flips mesh.defaultIntention between "deny" and "allow", which
// changes the RBAC of every service: the RBAC extension configs (ECDS) of every proxy.
// streams=N opens N ADS streams, one Envoy node each, node i running service i mod 1,000
// (sorted by name), each subscribing to listeners, clusters, routes, endpoints and extension
// configs and ACKing every response at once; xds=sotw opens state-of-the-world streams,
// xds=delta delta ones (what `mesh envoy bootstrap` configures). Three servers hold the same streams, each over 4 gRPC
// connections:
//
//   - raw: go-control-plane's server and SnapshotCache, fed cache snapshots holding exactly
//     the resources our renderer produces for each service (rendered, versioned per type by a
//     content hash, and built into one cache snapshot per service before the timer starts), so
//     the same types are re-sent as by mesh; a change is SetSnapshot of every node's "after"
//     snapshot, in a loop, until every stream has ACKed every type that changed.
//   - mesh: our xds.Server from SetSnapshot(after mesh snapshot) (diff, render, validate, hash,
//     set) until every stream has ACKed the same. It runs on a gRPC server with
//     xds.GRPCServerOptions, as `mesh serve` runs it (raw on gRPC's defaults, as
//     go-control-plane's users run it).
//   - commit: a reconciler with the same xds.Server attached, from `git push` of the change
//     (watch, compile with the reconciler's compiler cache, Raft apply, publish) until the same.
//
// Each iteration runs one change on each server in turn (interleaved, so load from elsewhere
// on the machine falls on all), alternating direction. It reports per server p50/p99 of the
// change and the ratio of mesh and commit p50 to raw p50; and, measured three times before the
// loop on fresh servers (interleaved too), the median initial sync: from opening every stream
// to every stream having ACKed all five types (raw: node snapshots set before; mesh: the server
// serves the snapshot, proxies rendered as they connect), and for mesh the initial sync of the
// same streams connecting again after all hung up (mesh-reconnect: every group rendered
// already, so the connect path and fan-out without the render). Each sync starts after a
// garbage collection, so that whether one falls within it depends on what the sync allocates,
// not on what ran before. Both report wall time and the process's CPU time (the machines are
// shared: CPU time is the steadier of the two), and the initial syncs the MB allocated
// (process-wide, clients included); -benchmem's figures are of the three changes together.
// Run with -benchtime 10x; with MESH_FANOUT_ONLY=raw|mesh|commit only that server's changes
// run (for -cpuprofile, -memprofile: the others report 1ms; none: only set-up and initial
// syncs run); MESH_FANOUT_INITIALPROFILE=prefix profiles each initial sync alone
// (profileInitial); MESH_FANOUT_CPUPROFILE=file profiles the changes alone (not the set-up
// and initial syncs), MESH_FANOUT_ALLOCPROFILE=file writes the allocation profile before
// (file.before) and after them.
//
//	go test -tags hashicorpmetrics -run '^$' -bench MeshWideChange -benchtime 10x -timeout 60m ./reconciler/
func BenchmarkMeshWideChange(b *testing.B) {
	files, _, err := meshgen.Generate(meshgen.Options{Services: 1000, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	variants := [2]map[string]string{{}, {}}
	for _, f := range files {
		for v, def := range []string{"deny", "allow"} {
			data := string(f.Data)
			if f.Name == "mesh.cue" {
				data = strings.Replace(data, `defaultIntention: "deny"`, `defaultIntention: "`+def+`"`, 1)
			}
			variants[v]["mesh/"+f.Name] = data
		}
	}
	if variants[0]["mesh/mesh.cue"] == variants[1]["mesh/mesh.cue"] {
		b.Fatal("mesh.cue has no defaultIntention to flip")
	}
	var fx *fanoutFixture
	for _, proto := range []string{"sotw", "delta"} {
		for _, streams := range []int{1000, 2000} {
			b.Run(fmt.Sprintf("xds=%s/streams=%d", proto, streams), func(b *testing.B) {
				if fx == nil {
					fx = newFanoutFixture(b, variants)
				}
				benchMeshWideChange(b, fx, streams, proto == "delta")
			})
		}
	}
}

// fanoutFixture is what the benchmark precomputes once: both snapshots, and per service the
// raw server's cache snapshots and which types the change alters.
type fanoutFixture struct {
	files    [2]map[string]string
	snaps    [2]*mesh.Snapshot
	services []string
	raw      [2]map[string]*cachev3.Snapshot
	changed  map[string]uint8 // service → bit set of fanoutTypes that the change alters
}

// fanoutTypes are the types every stream subscribes to, in the order of its bit set: an Envoy
// sidecar's, its RBAC extension configs (ECDS) included.
var fanoutTypes = []string{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.RouteType, resourcev3.EndpointType,
	resourcev3.ExtensionConfigType}

const allFanoutTypes = 1<<5 - 1

func newFanoutFixture(b *testing.B, variants [2]map[string]string) *fanoutFixture {
	fx := &fanoutFixture{files: variants, changed: map[string]uint8{}}
	// One compiler cache for both, as a server compiles successive commits: the second
	// snapshot shares with the first the elements the flip leaves unchanged, as it would with
	// the snapshot before it on every server (the leader's compile reuses them, and a
	// follower's Raft delta keeps them).
	cache := compiler.NewCache()
	shared := 0
	for v := range variants {
		var list []compiler.File
		for _, name := range slices.Sorted(maps.Keys(variants[v])) {
			list = append(list, compiler.File{Name: strings.TrimPrefix(name, "mesh/"), Data: []byte(variants[v][name])})
		}
		snap, _, err := compiler.CompileWithReport(context.Background(), list, compiler.Options{Cache: cache})
		if err != nil {
			b.Fatal(err)
		}
		fx.snaps[v] = snap
		fx.raw[v] = map[string]*cachev3.Snapshot{}
	}
	fx.services = slices.Sorted(maps.Keys(fx.snaps[0].Services))
	for _, svc := range fx.services {
		if fx.snaps[0].Services[svc] == fx.snaps[1].Services[svc] {
			shared++
		}
	}
	b.Logf("%d of %d services shared by both snapshots", shared, len(fx.services))
	var hashes [2]map[string][5]string
	for v, snap := range fx.snaps {
		hashes[v] = map[string][5]string{}
		for _, svc := range fx.services {
			res, err := xds.Render(snap, xds.Proxy{Service: svc, Shape: xds.ShapeEnvoy})
			if err != nil {
				b.Fatal(err)
			}
			byType := map[string][]types.Resource{}
			for _, x := range res.Listeners {
				byType[resourcev3.ListenerType] = append(byType[resourcev3.ListenerType], x)
			}
			for _, x := range res.Clusters {
				byType[resourcev3.ClusterType] = append(byType[resourcev3.ClusterType], x)
			}
			for _, x := range res.Routes {
				byType[resourcev3.RouteType] = append(byType[resourcev3.RouteType], x)
			}
			for _, x := range res.Endpoints {
				byType[resourcev3.EndpointType] = append(byType[resourcev3.EndpointType], x)
			}
			for _, x := range res.Extensions {
				byType[resourcev3.ExtensionConfigType] = append(byType[resourcev3.ExtensionConfigType], x)
			}
			cs := &cachev3.Snapshot{}
			var hs [5]string
			for k, t := range fanoutTypes {
				h := sha256.New()
				for _, r := range byType[t] {
					data, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
					if err != nil {
						b.Fatal(err)
					}
					h.Write(data)
				}
				hs[k] = hex.EncodeToString(h.Sum(nil))[:16]
				cs.Resources[cachev3.GetResponseType(t)] = cachev3.NewResources(hs[k], byType[t])
			}
			if err := cs.ConstructVersionMap(); err != nil { // for delta, before the timer
				b.Fatal(err)
			}
			hashes[v][svc] = hs
			fx.raw[v][svc] = cs
		}
	}
	n := 0
	for _, svc := range fx.services {
		var bits uint8
		for k := range fanoutTypes {
			if hashes[0][svc][k] != hashes[1][svc][k] {
				bits |= 1 << k
			}
		}
		fx.changed[svc] = bits
		if bits != 0 {
			n++
		}
	}
	b.Logf("%d services, %d of them changed by the flip of defaultIntention", len(fx.services), n)
	return fx
}

// fanoutServer is one of the servers compared.
type fanoutServer struct {
	name    string
	addr    string
	delta   bool // the streams are delta ADS streams
	clients []*fanoutClient
	cancel  context.CancelFunc
	// set makes variant v the served one; it returns when the server was handed it.
	set func(b *testing.B, v int)
	// hangUp closes the streams that connect opened, leaving the server running, and returns
	// when the server has seen them close (nil: not supported).
	hangUp    func(b *testing.B)
	connected func() int // the nodes the server counts connected (mesh only)
	lat       []time.Duration
	cpu       []time.Duration // process CPU time over each change
}

func benchMeshWideChange(b *testing.B, fx *fanoutFixture, streams int, delta bool) {
	// Initial sync, three times per server, on fresh servers; on the mesh server, once more
	// after every stream hung up: its groups are rendered by then, so that sync is the
	// connect path and fan-out alone (reconnect).
	var initial, initialCPU [2][]time.Duration
	var reconnectCPU []time.Duration
	var initialMB [2][]float64
	var reconnectMB []float64
	for round := range 3 {
		for k, start := range []func(*testing.B, *fanoutFixture, int) *fanoutServer{startRawFanout, startMeshFanout} {
			srv := start(b, fx, streams)
			srv.delta = delta
			prefix := fmt.Sprintf("%s.%s.%d", strings.ReplaceAll(b.Name(), "/", "_"), srv.name, round)
			runtime.GC() // every sync starts from the same heap: what it allocates decides its GC
			stop := profileInitial(b, prefix)
			alloc, cpu := allocatedMB(), cpuTime()
			initial[k] = append(initial[k], srv.connect(b, fx, streams))
			initialCPU[k] = append(initialCPU[k], cpuTime()-cpu)
			initialMB[k] = append(initialMB[k], allocatedMB()-alloc)
			stop()
			if srv.hangUp != nil {
				srv.hangUp(b)
				runtime.GC()
				stop := profileInitial(b, prefix+".reconnect")
				alloc, cpu := allocatedMB(), cpuTime()
				srv.connect(b, fx, streams)
				reconnectCPU = append(reconnectCPU, cpuTime()-cpu)
				reconnectMB = append(reconnectMB, allocatedMB()-alloc)
				stop()
			}
			srv.close()
		}
	}
	raw, meshSrv, commit := startRawFanout(b, fx, streams), startMeshFanout(b, fx, streams), startCommitFanout(b, fx, streams)
	servers := []*fanoutServer{raw, meshSrv, commit}
	for _, srv := range servers {
		srv.delta = delta
		srv.connect(b, fx, streams)
		defer srv.close()
	}
	checkSameContent(b, raw, meshSrv)
	checkSameContent(b, raw, commit)

	if path := os.Getenv("MESH_FANOUT_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if path := os.Getenv("MESH_FANOUT_ALLOCPROFILE"); path != "" {
		writeAllocs(b, path+".before")
		defer writeAllocs(b, path)
	}
	v := 1
	for b.Loop() {
		for _, srv := range servers {
			if only := os.Getenv("MESH_FANOUT_ONLY"); only != "" && only != srv.name {
				srv.lat, srv.cpu = append(srv.lat, time.Millisecond), append(srv.cpu, time.Millisecond)
				continue
			}
			cpu := cpuTime()
			srv.lat = append(srv.lat, srv.change(b, fx, v))
			srv.cpu = append(srv.cpu, cpuTime()-cpu)
		}
		v = 1 - v
	}
	b.StopTimer()
	p := func(l []time.Duration, q float64) float64 {
		s := slices.Sorted(slices.Values(l))
		return float64(s[min(len(s)-1, int(q*float64(len(s))))].Microseconds()) / 1000
	}
	for _, srv := range servers {
		b.ReportMetric(p(srv.lat, 0.5), srv.name+"-change-p50-ms")
		b.ReportMetric(p(srv.lat, 0.99), srv.name+"-change-p99-ms")
	}
	for _, srv := range servers {
		b.ReportMetric(p(srv.cpu, 0.5), srv.name+"-change-cpu-ms")
	}
	b.ReportMetric(p(meshSrv.lat, 0.5)/p(raw.lat, 0.5), "mesh/raw-change")
	b.ReportMetric(p(meshSrv.cpu, 0.5)/p(raw.cpu, 0.5), "mesh/raw-change-cpu")
	b.ReportMetric(p(commit.lat, 0.5)/p(raw.lat, 0.5), "commit/raw-change")
	b.ReportMetric(p(initial[0], 0.5), "raw-initial-ms")
	b.ReportMetric(p(initial[1], 0.5), "mesh-initial-ms")
	b.ReportMetric(p(initial[1], 0.5)/p(initial[0], 0.5), "mesh/raw-initial")
	b.ReportMetric(p(initialCPU[0], 0.5), "raw-initial-cpu-ms")
	b.ReportMetric(p(initialCPU[1], 0.5), "mesh-initial-cpu-ms")
	b.ReportMetric(p(reconnectCPU, 0.5), "mesh-reconnect-cpu-ms")
	median := func(l []float64) float64 { return slices.Sorted(slices.Values(l))[len(l)/2] }
	b.ReportMetric(median(initialMB[0]), "raw-initial-MB")
	b.ReportMetric(median(initialMB[1]), "mesh-initial-MB")
	b.ReportMetric(median(reconnectMB), "mesh-reconnect-MB")
	b.ReportMetric(p(reconnectCPU, 0.5)/p(initialCPU[0], 0.5), "mesh-reconnect/raw-initial-cpu")
}

// allocatedMB is what the process has allocated on the heap so far, in MB.
func allocatedMB() float64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.TotalAlloc) / (1 << 20)
}

// profileInitial starts profiling an initial sync, name being the benchmark's, the server's and
// the round's,
// when MESH_FANOUT_INITIALPROFILE is set: the CPU profile goes to
// $MESH_FANOUT_INITIALPROFILE.name.cpu (merge the rounds': go tool pprof -proto) and the
// allocation profiles before and after to .name.allocs.before and .name.allocs (the sync's
// own: go tool pprof -base). It returns what stops it.
func profileInitial(b *testing.B, name string) func() {
	prefix := os.Getenv("MESH_FANOUT_INITIALPROFILE")
	if prefix == "" {
		return func() {}
	}
	prefix += "." + name
	writeAllocs(b, prefix+".allocs.before")
	f, err := os.Create(prefix + ".cpu")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		writeAllocs(b, prefix+".allocs")
	}
}

// writeAllocs writes the allocation profile to path (the changes' own allocations are the
// difference of two: go tool pprof -base path.before path).
func writeAllocs(b *testing.B, path string) {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

func fanNode(i int) string { return fmt.Sprintf("fan-%d", i) }

// serveGRPC serves register's services on a loopback port until b ends.
func serveGRPC(b *testing.B, register func(*grpc.Server), opts ...grpc.ServerOption) (string, func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer(opts...)
	register(g)
	go g.Serve(lis)
	return lis.Addr().String(), g.Stop
}

func startRawFanout(b *testing.B, fx *fanoutFixture, streams int) *fanoutServer {
	ctx, cancel := context.WithCancel(context.Background())
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	srv := serverv3.NewServer(ctx, cache, nil)
	addr, stop := serveGRPC(b, func(g *grpc.Server) { discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv) })
	setAll := func(v int) {
		for i := range streams {
			if err := cache.SetSnapshot(ctx, fanNode(i), fx.raw[v][fx.services[i%len(fx.services)]]); err != nil {
				b.Fatal(err)
			}
		}
	}
	setAll(0)
	return &fanoutServer{name: "raw", addr: addr, cancel: func() { stop(); cancel() },
		set: func(b *testing.B, v int) { setAll(v) }}
}

// benchXDSOptions are the xds.Server options of the mesh and commit servers: with
// MESH_BENCH_CPL_DELTA set, delta streams are served by go-control-plane's server (the before
// of xds's own delta server).
func benchXDSOptions() []xds.Option {
	if os.Getenv("MESH_BENCH_CPL_DELTA") != "" {
		return []xds.Option{xds.WithControlPlaneDeltaServer()}
	}
	return nil
}

func startMeshFanout(b *testing.B, fx *fanoutFixture, streams int) *fanoutServer {
	x := xds.NewServer(nil, benchXDSOptions()...)
	addr, stop := serveGRPC(b, x.Register, xds.GRPCServerOptions()...) // as `mesh serve`
	if err := x.SetSnapshot(fx.snaps[0]); err != nil {
		b.Fatal(err)
	}
	srv := &fanoutServer{name: "mesh", addr: addr, cancel: func() { x.Close(); stop() },
		set: func(b *testing.B, v int) {
			if err := x.SetSnapshot(fx.snaps[v]); err != nil {
				b.Fatal(err)
			}
		}}
	srv.connected = func() int {
		n := 0
		for _, p := range x.Proxies() {
			if p.Connected {
				n++
			}
		}
		return n
	}
	return srv
}

func startCommitFanout(b *testing.B, fx *fanoutFixture, streams int) *fanoutServer {
	repo := newTestRepo(b)
	repo.commit(fx.files[0], "v0", false)
	cfg := testConfig(b, repo.bare, nodeOpts{})
	cfg.Log = discardLogger()
	x := xds.NewServer(nil, benchXDSOptions()...)
	addr, stop := serveGRPC(b, x.Register, xds.GRPCServerOptions()...) // as `mesh serve`
	cfg.Publisher, cfg.Proxies = x, x.Proxies
	s := startServer(b, cfg)
	waitFor(b, 5*time.Minute, "the first commit to be served", func() bool { return servedVersion(s) == fx.snaps[0].Version })
	return &fanoutServer{name: "commit", addr: addr, cancel: func() { x.Close(); stop() },
		set: func(b *testing.B, v int) {
			repo.commit(map[string]string{"mesh/mesh.cue": fx.files[v]["mesh/mesh.cue"]}, "flip defaultIntention", false)
		}}
}

func (srv *fanoutServer) close() {
	srv.cancel()
}

// connect opens the streams and returns how long it took until every one had ACKed all types.
func (srv *fanoutServer) connect(b *testing.B, fx *fanoutFixture, streams int) time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	conns := make([]*grpc.ClientConn, 4)
	for i := range conns {
		cc, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = cc
	}
	stopServer := srv.cancel
	hangUp := func() {
		cancel()
		for _, cc := range conns {
			cc.Close()
		}
	}
	srv.cancel = func() {
		hangUp()
		stopServer()
	}
	if srv.connected != nil {
		srv.hangUp = func(b *testing.B) {
			hangUp()
			srv.cancel = stopServer
			waitFor(b, time.Minute, "every stream to close on the server", func() bool { return srv.connected() == 0 })
		}
	}
	w := newWaiter(streams)
	srv.clients = make([]*fanoutClient, streams)
	for i := range srv.clients {
		srv.clients[i] = &fanoutClient{w: w}
		srv.clients[i].arm(allFanoutTypes)
	}
	start := time.Now()
	for i, c := range srv.clients {
		node := &corev3.Node{Id: fanNode(i), Cluster: fx.services[i%len(fx.services)], UserAgentName: "envoy"}
		if srv.delta {
			c.openDelta(b, ctx, conns[i%len(conns)], node)
		} else {
			c.open(b, ctx, conns[i%len(conns)], node)
		}
	}
	w.wait(b, srv.name+" initial sync", 5*time.Minute)
	return time.Since(start)
}

// change makes variant v served and returns how long until every stream ACKed what changed.
func (srv *fanoutServer) change(b *testing.B, fx *fanoutFixture, v int) time.Duration {
	w := newWaiter(len(srv.clients))
	for i, c := range srv.clients {
		c.w = w
		c.arm(fx.changed[fx.services[i%len(fx.services)]])
	}
	start := time.Now()
	srv.set(b, v)
	w.wait(b, srv.name+" change", 5*time.Minute)
	return time.Since(start)
}

// checkSameContent fails unless both servers sent every stream as many resources of each type.
func checkSameContent(b *testing.B, x, y *fanoutServer) {
	for i := range x.clients {
		if cx, cy := x.clients[i].counts(), y.clients[i].counts(); cx != cy {
			b.Fatalf("stream %d: %s sent %v resources per type, %s %v", i, x.name, cx, y.name, cy)
		}
	}
}

// waiter counts streams that have yet to ACK what they wait for.
type waiter struct {
	pending atomic.Int64
	done    chan struct{}
}

func newWaiter(n int) *waiter {
	w := &waiter{done: make(chan struct{})}
	w.pending.Store(int64(n))
	if n == 0 {
		close(w.done)
	}
	return w
}

func (w *waiter) finished() {
	if w.pending.Add(-1) == 0 {
		close(w.done)
	}
}

func (w *waiter) wait(b *testing.B, what string, d time.Duration) {
	select {
	case <-w.done:
	case <-time.After(d):
		b.Fatalf("%s: %d streams not done within %v", what, w.pending.Load(), d)
	}
}

// fanoutClient is one raw ADS stream that ACKs every response at once.
type fanoutClient struct {
	mu       sync.Mutex
	w        *waiter
	want     uint8     // types still awaited with a new version
	versions [5]string // as of arm
	last     [5]string // the last version ACKed per type
	n        [5]int    // resources in the last response per type
}

// arm makes the client wait for a new version of each type in want.
func (c *fanoutClient) arm(want uint8) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.want, c.versions = want, c.last
	if want == 0 {
		c.w.finished()
	}
}

func (c *fanoutClient) counts() [5]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *fanoutClient) open(b *testing.B, ctx context.Context, cc *grpc.ClientConn, node *corev3.Node) {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for k, typ := range fanoutTypes {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typ}
		if k == 0 {
			req.Node = node
		}
		if err := st.Send(req); err != nil {
			b.Fatal(err)
		}
	}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
				return
			}
			c.received(r.TypeUrl, r.VersionInfo, func(int) int { return len(r.Resources) })
		}
	}()
}

func (c *fanoutClient) openDelta(b *testing.B, ctx context.Context, cc *grpc.ClientConn, node *corev3.Node) {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for k, typ := range fanoutTypes {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ}
		if k == 0 {
			req.Node = node
		}
		if err := st.Send(req); err != nil {
			b.Fatal(err)
		}
	}
	go func() {
		var known [5]map[string]bool // resources held, per type
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
				return
			}
			c.received(r.TypeUrl, r.SystemVersionInfo, func(k int) int {
				if known[k] == nil {
					known[k] = map[string]bool{}
				}
				for _, x := range r.Resources {
					known[k][x.Name] = true
				}
				for _, name := range r.RemovedResources {
					delete(known[k], name)
				}
				return len(known[k])
			})
		}
	}()
}

// received records a response of typeURL at version (ACKed already); count says how many
// resources of the type the stream holds now, given the type's index.
func (c *fanoutClient) received(typeURL, version string, count func(int) int) {
	k := slices.Index(fanoutTypes, typeURL)
	if k < 0 {
		return
	}
	n := count(k)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last[k], c.n[k] = version, n
	if c.want&(1<<k) != 0 && version != c.versions[k] {
		c.want &^= 1 << k
		if c.want == 0 {
			c.w.finished()
		}
	}
}
