package xds

import (
	"context"
	"fmt"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/adsclient"
)

// The dense mesh of issue 13: 1,000 HTTP services, each proxy able to reach every service
// ("*" → "*" allow), in two models: "explicit" (the old one: every service lists the 999
// others as upstreams, one local port each) and "transparent" (mode "transparent", nothing
// listed). The authorization change edits one L7 intention into every proxied service (an
// RBAC change of each, leaving what anyone reaches as it was).

const denseServices = 1000

func denseName(i int) string { return fmt.Sprintf("svc-%04d", i) }

func denseBenchMesh(transparent bool, variant int) *mesh.Snapshot {
	s := newSnap(mesh.Deny)
	if transparent {
		s.Mesh.Mode = mesh.ModeTransparent
	}
	for i := range denseServices {
		svc := addService(s, denseName(i), mesh.ProtocolHTTP, 8080,
			ep(fmt.Sprintf("10.%d.%d.1", i/250, i%250), 21000, "dc1"), ep(fmt.Sprintf("10.%d.%d.2", i/250, i%250), 21000, "dc1"))
		if transparent {
			svc.Mode = mesh.ModeTransparent
			continue
		}
		for j := range denseServices {
			if j != i {
				addUpstream(s, denseName(i), denseName(j), 10000+j)
			}
		}
	}
	prefix := []string{"/admin/", "/internal/"}[variant%2]
	for i := range denseServices {
		s.Intentions = append(s.Intentions, &mesh.Intention{Source: denseName(denseServices - 1 - i), Destination: denseName(i),
			Precedence: mesh.PrecedenceExact, Permissions: []mesh.Permission{
				{Action: mesh.Deny, HTTP: &mesh.HTTPMatch{PathPrefix: prefix}},
				{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Methods: []string{"GET", "HEAD"}}},
			}})
	}
	s.Intentions = append(s.Intentions, &mesh.Intention{Source: mesh.Wildcard, Destination: mesh.Wildcard,
		Precedence: mesh.PrecedenceWildcardBoth, Action: mesh.Allow})
	mesh.SortIntentions(s.Intentions)
	if transparent {
		s.VirtualIPs = mesh.AssignVirtualIPs(s.ServiceNames())
	}
	return s
}

// BenchmarkDenseMesh measures, per model, protocol (state of the world or delta) and number
// of raw ADS streams (one node per service, each subscribing to listeners, clusters, routes
// and endpoints, and by name to its public listener's RBAC extension config, as Envoy does,
// and ACKing everything): the authorization change until every stream has received its new
// RBAC and ACKed it (ns/op, and the CPU time it took), the bytes pushed
// per proxy for it, and once per run the initial sync of every stream and the bytes per proxy
// it took. MESH_BENCH_FOLLOW=1 subscribes to routes and endpoints by name, as Envoy does
// (adsclient.Options.Follow); MESH_BENCH_CPL_DELTA=1 serves delta with go-control-plane's
// server (WithControlPlaneDeltaServer).
func BenchmarkDenseMesh(b *testing.B) {
	for _, model := range []string{"explicit", "transparent"} {
		var snaps [2]*mesh.Snapshot
		for _, proto := range []string{"sotw", "delta"} {
			for _, streams := range []int{100, 500} {
				b.Run(fmt.Sprintf("model=%s/xds=%s/streams=%d", model, proto, streams), func(b *testing.B) {
					if snaps[0] == nil {
						for v := range snaps {
							snaps[v] = seal(b, denseBenchMesh(model == "transparent", v))
						}
					}
					benchDense(b, snaps, streams, proto == "delta")
				})
			}
		}
	}
}

func benchDense(b *testing.B, snaps [2]*mesh.Snapshot, streams int, delta bool) {
	var opts []Option
	if os.Getenv("MESH_BENCH_CPL_DELTA") != "" {
		opts = append(opts, WithControlPlaneDeltaServer()) // the before of the own delta server
	}
	s := NewServer(nil, opts...)
	addr := startXDS(b, s)
	if err := s.SetSnapshot(snaps[0]); err != nil {
		b.Fatal(err)
	}
	conns := make([]*grpc.ClientConn, 4)
	for i := range conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		conns[i] = cc
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clients := make([]*adsclient.Client, streams)
	stopPeak := watchPeakHeap(b, fmt.Sprintf("streams=%d", streams))
	start := time.Now()
	for i := range streams {
		node := envoyNode(fmt.Sprintf("dense-%d", i), denseName(i))
		c, err := adsclient.Open(ctx, conns[i%len(conns)], node, adsclient.Options{Delta: delta, Extensions: []string{PublicHTTPRBAC},
			Follow: os.Getenv("MESH_BENCH_FOLLOW") != ""})
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = c
	}
	for _, c := range clients {
		select {
		case <-c.Synced():
		case <-c.Done():
			b.Fatal(c.Err())
		}
	}
	initial := time.Since(start)
	stopPeak()
	var initialBytes int64
	for _, c := range clients {
		initialBytes += c.SwapBytes(0)
	}

	i, cpu := 1, cpuTime()
	for b.Loop() {
		want := snaps[i%2].Version
		if err := s.SetSnapshot(snaps[i%2]); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(120 * time.Second)
		for _, c := range clients {
			for !strings.HasPrefix(c.Version(resourcev3.ExtensionConfigType), want) {
				if time.Now().After(deadline) {
					b.Fatalf("not every stream got version %s within 120s", want)
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
		i++
	}
	reportCPU(b, cpu, i-1)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live-MB") // server and clients
	writeHeapProfile(b, fmt.Sprintf("streams=%d", streams))
	var changeBytes int64
	for _, c := range clients {
		changeBytes += c.Bytes()
	}
	b.ReportMetric(initial.Seconds()*1000, "initial-sync-ms")
	b.ReportMetric(float64(initialBytes)/float64(streams)/1024, "initial-KB/proxy")
	b.ReportMetric(float64(changeBytes)/float64(streams)/float64(i-1)/1024, "change-KB/proxy")
}

// writeHeapProfile writes, when MESH_BENCH_HEAPPROFILE names a file, a heap profile of what is
// live now (every stream synced and the server idle, after a GC) to that file with name appended. go test
// -memprofile cannot show it: it is written after the benchmark has let everything go.
func writeHeapProfile(b *testing.B, name string) {
	path := os.Getenv("MESH_BENCH_HEAPPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path + "." + name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// watchPeakHeap, when MESH_BENCH_HEAPPROFILE names a file, writes a heap profile to that file
// with name and ".peak" appended each time a garbage collection finds more live heap than any
// before, until the returned function is called: the profile of the initial sync's peak.
func watchPeakHeap(b *testing.B, name string) (stop func()) {
	path := os.Getenv("MESH_BENCH_HEAPPROFILE")
	if path == "" {
		return func() {}
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		sample := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak uint64
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			rtmetrics.Read(sample)
			if live := sample[0].Value.Uint64(); live > peak {
				peak = live
				f, err := os.Create(path + "." + name + ".peak")
				if err != nil {
					b.Error(err)
					return
				}
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		}
	}()
	return func() { close(done); <-finished }
}
