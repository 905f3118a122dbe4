package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"

	mesh "github.com/meshgit/mesh"
)

// Benchmarks (make bench): rendering a 10k-service mesh for 1,000 proxies with 5 upstreams
// each, fully and after a one-intention change, and fanning a new snapshot out to 1,000 ADS
// streams until every one ACKs.

const (
	benchServices  = 10000
	benchProxies   = 1000
	benchUpstreams = 5
)

func benchName(i int) string { return fmt.Sprintf("svc-%05d", i%benchServices) }

// bigMesh builds the benchmark mesh. variant changes one intention into proxy service 17
// (odd: deny, even: allow); tls changes a mesh-wide setting, which re-renders everything.
func bigMesh(variant int, tls string) *mesh.Snapshot {
	s := newSnap(mesh.Deny)
	s.Mesh.TLS.MinVersion = tls
	for i := 0; i < benchServices; i++ {
		name := benchName(i)
		proto := mesh.ProtocolHTTP
		if i%10 == 9 {
			proto = mesh.ProtocolTCP
		}
		a, b := i/250, i%250
		addService(s, name, proto, 8080,
			ep(fmt.Sprintf("10.%d.%d.1", a, b), 21000, "dc1", "version", "v1"),
			ep(fmt.Sprintf("10.%d.%d.2", a, b), 21000, "dc1", "version", "v2"))
		if i%10 == 3 { // a tenth of the services split 90/10 between subsets
			v1, v2 := mesh.TargetID("v1", name, "dc1"), mesh.TargetID("v2", name, "dc1")
			setChain(s, name, map[string]string{"v1": "v1", "v2": "v2"}, []mesh.ChainRoute{
				{Match: &mesh.HTTPMatch{PathPrefix: "/canary/"}, Splits: []mesh.TargetWeight{{Target: v2, Weight: mesh.TotalWeight}}},
				{Splits: []mesh.TargetWeight{{Target: v1, Weight: 9000}, {Target: v2, Weight: 1000}}},
			})
		}
	}
	for i := 0; i < benchProxies; i++ {
		for k := 1; k <= benchUpstreams; k++ {
			up := benchName(i*7 + k*131)
			addUpstream(s, benchName(i), up, 10000+k)
		}
		for k := 1; k <= 3; k++ {
			s.Intentions = append(s.Intentions, &mesh.Intention{Source: benchName(i + k*17), Destination: benchName(i),
				Precedence: mesh.PrecedenceExact, Action: mesh.Allow})
		}
		if i%10 == 0 && i%10 != 9 {
			s.Intentions = append(s.Intentions, &mesh.Intention{Source: benchName(i + 5000), Destination: benchName(i),
				Precedence: mesh.PrecedenceExact, Permissions: []mesh.Permission{
					{Action: mesh.Deny, HTTP: &mesh.HTTPMatch{PathPrefix: "/admin/"}},
					{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Methods: []string{"GET", "HEAD"}}},
				}})
		}
	}
	act := mesh.Allow
	if variant%2 == 1 {
		act = mesh.Deny
	}
	s.Intentions = append(s.Intentions, &mesh.Intention{Source: benchName(9999), Destination: benchName(17), Precedence: mesh.PrecedenceExact, Action: act})
	s.Intentions = append(s.Intentions, &mesh.Intention{Source: mesh.Wildcard, Destination: mesh.Wildcard, Precedence: mesh.PrecedenceWildcardBoth, Action: mesh.Deny})
	mesh.SortIntentions(s.Intentions)
	return s
}

// cpuTime returns the CPU time (user and system) this process has used. The machines are
// shared, so the benchmarks report CPU time per operation next to wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per operation since start.
func reportCPU(b *testing.B, start time.Duration, n int) {
	if n > 0 {
		b.ReportMetric(float64(cpuTime()-start)/float64(n)/1e6, "cpu-ms/op")
	}
}

// registerNodes makes n envoy nodes known to s as if each had opened a stream (without a
// client), one per proxy service.
func registerNodes(b *testing.B, s *Server, n int) {
	cb := (*callbacks)(s)
	for i := 0; i < n; i++ {
		registerNode(b, cb, int64(i+1), benchName(i%benchProxies))
	}
}

// registerNode makes an envoy node of service known to s as if it had opened stream id.
func registerNode(b *testing.B, cb *callbacks, id int64, service string) {
	if err := cb.OnStreamOpen(context.Background(), id, ""); err != nil {
		b.Fatal(err)
	}
	req := &discoveryv3.DiscoveryRequest{Node: envoyNode(fmt.Sprintf("node-%d", id-1), service), TypeUrl: resourcev3.ListenerType}
	if err := cb.OnStreamRequest(id, req); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRenderPure is the rendering alone: Render for 1,000 proxies, no validation.
func BenchmarkRenderPure(b *testing.B) {
	snap := seal(b, bigMesh(0, "TLSv1_2"))
	b.ReportAllocs()
	n, cpu := 0, cpuTime()
	defer func() { reportCPU(b, cpu, n) }()
	for b.Loop() {
		n++
		for i := 0; i < benchProxies; i++ {
			if _, err := Render(snap, Proxy{Service: benchName(i), Shape: ShapeEnvoy}); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// benchServer is a server with benchProxies registered nodes, serving snap.
func benchServer(b *testing.B, snap *mesh.Snapshot) *Server {
	s := NewServer(nil)
	b.Cleanup(s.Close)
	registerNodes(b, s, benchProxies)
	if err := s.SetSnapshot(snap); err != nil {
		b.Fatal(err)
	}
	return s
}

// alternate sets snaps[0] and snaps[1] in turn, reporting CPU time and renders per change.
func alternate(b *testing.B, s *Server, snaps []*mesh.Snapshot) {
	b.ReportAllocs()
	i, cpu := 0, cpuTime()
	renders := testutil.ToFloat64(s.metrics.renders)
	for b.Loop() {
		if err := s.SetSnapshot(snaps[i%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportCPU(b, cpu, i)
	b.ReportMetric((testutil.ToFloat64(s.metrics.renders)-renders)/float64(i), "renders/op")
}

// BenchmarkSetSnapshotFull re-renders every proxy (a mesh-wide setting changes each time):
// render, ValidateAll, consistency checks, hashing and cache snapshots for 1,000 proxies.
func BenchmarkSetSnapshotFull(b *testing.B) {
	snaps := []*mesh.Snapshot{seal(b, bigMesh(0, "TLSv1_2")), seal(b, bigMesh(0, "TLSv1_3"))}
	s := benchServer(b, snaps[1])
	alternate(b, s, snaps)
}

// BenchmarkSetSnapshotOneIntention flips one intention: only the destination's proxies are
// re-rendered (the time is mostly the snapshot diff).
func BenchmarkSetSnapshotOneIntention(b *testing.B) {
	snaps := []*mesh.Snapshot{seal(b, bigMesh(0, "TLSv1_2")), seal(b, bigMesh(1, "TLSv1_2"))}
	s := benchServer(b, snaps[1])
	ch := diff(snaps[0], snaps[1])
	n := 0
	for i := 0; i < benchProxies; i++ {
		if ch.affects(benchName(i), nil) {
			n++
		}
	}
	if n != 1 {
		b.Fatalf("one intention affects %d proxies, want 1", n)
	}
	alternate(b, s, snaps)
}

// BenchmarkFanout1000Streams opens 1,000 ADS streams (one node each, 100 services), then
// measures the time from SetSnapshot with a change affecting every proxy (the "* → *"
// intention) to every stream having received and ACKed it. It reports the heap per idle
// stream (client and server side together, in this process).
func BenchmarkFanout1000Streams(b *testing.B) {
	const streams = 1000
	snaps := make([]*mesh.Snapshot, 2)
	for v := range snaps {
		m := bigMesh(0, "TLSv1_2")
		for _, in := range m.Intentions {
			if in.Source == mesh.Wildcard && in.Destination == mesh.Wildcard && v == 1 {
				in.Action = mesh.Allow
			}
		}
		snaps[v] = seal(b, m)
	}
	s := NewServer(nil)
	addr := startXDS(b, s)
	if err := s.SetSnapshot(snaps[0]); err != nil {
		b.Fatal(err)
	}
	conns := make([]*grpc.ClientConn, 4)
	for i := range conns {
		conns[i] = dialRaw(b, addr)
	}
	var want atomic.Value // the snapshot version being fanned out
	want.Store("")
	var acked atomic.Int64
	done := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ready sync.WaitGroup
	var before runtime.MemStats
	for i := 0; i < streams; i++ {
		if i == 100 {
			// Every group is rendered by now: measure what the other 900 idle streams add.
			ready.Wait()
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(&before)
		}
		ready.Add(1)
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conns[i%len(conns)]).StreamAggregatedResources(ctx)
		if err != nil {
			b.Fatal(err)
		}
		node := envoyNode(fmt.Sprintf("fan-%d", i), benchName(i%100))
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ListenerType}); err != nil {
			b.Fatal(err)
		}
		go func() {
			first := true
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
					return
				}
				if first {
					first = false
					ready.Done()
					continue
				}
				if v := want.Load().(string); v != "" && strings.HasPrefix(r.VersionInfo, v) {
					if acked.Add(1) == streams {
						done <- struct{}{}
					}
				}
			}
		}()
	}
	ready.Wait()
	runtime.GC()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perStream := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (streams - 100)

	i, cpu := 1, cpuTime()
	for b.Loop() {
		acked.Store(0)
		want.Store(snaps[i%2].Version)
		if err := s.SetSnapshot(snaps[i%2]); err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			b.Fatalf("only %d of %d streams ACKed within 60s", acked.Load(), streams)
		}
		i++
	}
	reportCPU(b, cpu, i-1)
	b.ReportMetric(perStream, "heap-B/idle-stream")
}

// testRootPEM makes a self-signed CA certificate (the public half of a trust bundle).
func testRootPEM(b testing.TB, cn string) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// BenchmarkRotation1000SDSStreams measures a root rotation reaching Envoy sidecars: from
// SetTrustBundle with a new bundle (old and new root, as during a rotation) to every one of
// 1,000 SDS streams having received and ACKed its new ROOTCA.
func BenchmarkRotation1000SDSStreams(b *testing.B) {
	const streams = 1000
	s := NewServer(nil)
	addr := startXDS(b, s)
	if err := s.SetSnapshot(seal(b, bigMesh(0, "TLSv1_2"))); err != nil {
		b.Fatal(err)
	}
	oldRoot, newRoot := testRootPEM(b, "old root"), testRootPEM(b, "new root")
	bundles := [][]byte{oldRoot, append(append([]byte{}, oldRoot...), newRoot...)}
	if err := s.SetTrustBundle(bundles[0]); err != nil {
		b.Fatal(err)
	}
	conns := make([]*grpc.ClientConn, 4)
	for i := range conns {
		conns[i] = dialRaw(b, addr)
	}
	var gen atomic.Int64 // the bundle generation being fanned out; 0 before the first
	var acked atomic.Int64
	done := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ready sync.WaitGroup
	for i := 0; i < streams; i++ {
		ready.Add(1)
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conns[i%len(conns)]).StreamAggregatedResources(ctx)
		if err != nil {
			b.Fatal(err)
		}
		node := envoyNode(fmt.Sprintf("sds-%d", i), benchName(i%100))
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType, ResourceNames: []string{SecretRoots}}); err != nil {
			b.Fatal(err)
		}
		go func() {
			first, seen := true, int64(0)
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: []string{SecretRoots}}); err != nil {
					return
				}
				if first {
					first = false
					ready.Done()
					continue
				}
				if g := gen.Load(); g > seen {
					seen = g
					if acked.Add(1) == streams {
						done <- struct{}{}
					}
				}
			}
		}()
	}
	ready.Wait()
	i, cpu := 1, cpuTime()
	for b.Loop() {
		acked.Store(0)
		gen.Add(1)
		if err := s.SetTrustBundle(bundles[i%2]); err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			b.Fatalf("only %d of %d SDS streams received the new bundle within 60s", acked.Load(), streams)
		}
		i++
	}
	reportCPU(b, cpu, i-1)
}
