package reconciler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	consul "github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshgit/mesh/catalog"
	"github.com/meshgit/mesh/internal/meshgen"
)

var healthCheckLine = regexp.MustCompile(`(?m)^\s*healthCheck: \{[^}]*\}\n`)

// edsStream is one Envoy-shaped ADS stream subscribed to CDS and EDS, ACKing everything, and
// recording which services its EDS names and when it last ACKed an EDS response.
type edsStream struct {
	service  string
	mu       sync.Mutex
	services map[string]bool // services of the clusters in its last EDS
	edsAcks  int
	lastAck  time.Time
}

func (e *edsStream) run(b *testing.B, ctx context.Context, cc *grpc.ClientConn, node *corev3.Node, ready *sync.WaitGroup) {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType} {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			b.Fatal(err)
		}
	}
	go func() {
		first := true
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			ack := &discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}
			if r.TypeUrl != resourcev3.EndpointType {
				st.Send(ack)
				continue
			}
			svcs := map[string]bool{}
			for _, res := range r.Resources {
				cla := &endpointv3.ClusterLoadAssignment{}
				if res.UnmarshalTo(cla) == nil {
					// SNI: [subset.]service.default.dc.internal.td
					if head, _, ok := strings.Cut(cla.ClusterName, ".default."); ok {
						svcs[head[strings.LastIndex(head, ".")+1:]] = true
					}
				}
			}
			if err := st.Send(ack); err != nil {
				return
			}
			e.mu.Lock()
			e.services, e.edsAcks, e.lastAck = svcs, e.edsAcks+1, time.Now()
			e.mu.Unlock()
			if first {
				first = false
				ready.Done()
			}
		}
	}()
}

func (e *edsStream) acks() (int, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.edsAcks, e.lastAck
}

type catalogBench struct {
	s       *Server
	nodeOf  map[string]string // check ID → node
	streams []*edsStream
	names   []string // services
}

// setupCatalogBench starts one server on a generated mesh of services services, registers
// perService instances of each (a TTL check each, passing) through Raft, and connects streams
// Envoy-shaped ADS streams, one per service in turn.
func setupCatalogBench(b *testing.B, services, perService, streams int) *catalogBench {
	files, stats, err := meshgen.Generate(meshgen.Options{Services: services, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	repo := newTestRepo(b)
	m := map[string]string{}
	for _, f := range files {
		// Without Git health checks: the leader would probe the generated endpoints (addresses
		// nobody serves), and their first results would land among the measured flips.
		m["mesh/"+f.Name] = healthCheckLine.ReplaceAllString(string(f.Data), "")
	}
	repo.commit(m, "bench", false)
	cfg := testConfig(b, repo.bare, nodeOpts{})
	cfg.CatalogSync = time.Hour
	_, xdsAddr := attachXDS(b, &cfg)
	s := startServer(b, cfg)
	waitFor(b, 5*time.Minute, "the snapshot", func() bool { return s.Served() != nil && s.IsLeader() })
	snap := s.Served()
	cb := &catalogBench{s: s}
	for name := range snap.Services {
		cb.names = append(cb.names, name)
	}
	slices.Sort(cb.names)
	start := time.Now()
	ctx := context.Background()
	// 100 nodes (hosts with their agents), the instances spread over them.
	nodes := make([]*catalog.Node, 100)
	for k := range nodes {
		nodes[k] = &catalog.Node{Name: fmt.Sprintf("host-%d", k), Address: "127.0.0.1", SyncInterval: time.Hour}
	}
	cb.nodeOf = map[string]string{}
	work := make(chan *catalog.Instance)
	var wg sync.WaitGroup
	for range 16 { // concurrent writes share Raft's disk writes
		wg.Add(1)
		go func() {
			defer wg.Done()
			for in := range work {
				node := nodes[nodeIndex(in.Node)]
				if err := s.cat.Submit(ctx, testToken, catalog.Command{Op: catalog.OpRegister, Node: node, Instance: in}); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i, name := range cb.names {
		for j := range perService {
			node := nodes[(i*perService+j)%len(nodes)]
			cb.nodeOf[fmt.Sprintf("ttl:%s-%d", name, j)] = node.Name
			in := &catalog.Instance{Node: node.Name, ID: fmt.Sprintf("%s-%d", name, j), Service: name, Address: fmt.Sprintf("127.1.%d.%d", i/250, j+1),
				Port: 20000 + i%250, Weights: catalog.Weights{Passing: 1, Warning: 1}, Meta: map[string]string{"version": "v1"},
				Checks: []catalog.Check{{ID: fmt.Sprintf("ttl:%s-%d", name, j), Name: "ttl", Type: catalog.CheckTTL, Status: catalog.StatusPassing,
					CheckDefinition: catalog.CheckDefinition{TTL: time.Hour}}}}
			work <- in
		}
	}
	close(work)
	wg.Wait()
	b.Logf("%s; %d instances registered through Raft in %v", stats, len(cb.names)*perService, time.Since(start).Round(time.Millisecond))

	conns := make([]*grpc.ClientConn, 8)
	for i := range conns {
		cc, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		conns[i] = cc
	}
	sctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	var ready sync.WaitGroup
	start = time.Now()
	for i := range streams {
		e := &edsStream{service: cb.names[i%len(cb.names)]}
		ready.Add(1)
		e.run(b, sctx, conns[i%len(conns)], &corev3.Node{Id: fmt.Sprintf("bench-%d", i), Cluster: e.service, UserAgentName: "envoy"}, &ready)
		cb.streams = append(cb.streams, e)
	}
	ready.Wait()
	b.Logf("%d ADS streams have their first EDS after %v", streams, time.Since(start).Round(time.Millisecond))
	return cb
}

// callers returns the streams whose EDS holds service.
func (cb *catalogBench) callers(service string) []*edsStream {
	var out []*edsStream
	for _, e := range cb.streams {
		e.mu.Lock()
		if e.services[service] {
			out = append(out, e)
		}
		e.mu.Unlock()
	}
	return out
}

// BenchmarkHealthFlip: one instance's TTL check flips (critical, then passing again), through
// Raft on the leader; measured from the write to the moment every proxy whose EDS holds the
// service has ACKed a new EDS. Proxies that do not hold it must receive nothing (counted).
// 1,000 services, 10,000 instances, 1,000 Envoy-shaped ADS streams on one server.
func BenchmarkHealthFlip(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d/instances=%d/streams=%d", n, 10*n, n), func(b *testing.B) { benchHealthFlip(b, n) })
	}
}

func benchHealthFlip(b *testing.B, n int) {
	cb := setupCatalogBench(b, n, 10, n)
	rng := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	unaffectedPushes, affectedTotal := 0, 0
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		var name string
		var affected []*edsStream
		for tries := 0; len(affected) == 0 && tries < 1000; tries++ {
			name = cb.names[rng.IntN(len(cb.names))]
			affected = cb.callers(name)
		}
		before := map[*edsStream]int{}
		for _, e := range cb.streams {
			before[e], _ = e.acks()
		}
		status := catalog.StatusCritical
		b.StartTimer()
		start := time.Now()
		if err := cb.s.cat.Submit(ctx, testToken, catalog.Command{Op: catalog.OpCheck, NodeName: cb.nodeOf["ttl:"+name+"-0"], ID: "ttl:" + name + "-0", Status: status}); err != nil {
			b.Fatal(err)
		}
		var last time.Time
		deadline := time.Now().Add(30 * time.Second)
		for _, e := range affected {
			for {
				n, at := e.acks()
				if n > before[e] {
					if at.After(last) {
						last = at
					}
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("flip %d of %s: a caller did not ACK within 30s", i, name)
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
		lat = append(lat, last.Sub(start))
		b.StopTimer()
		time.Sleep(50 * time.Millisecond) // late pushes to others would show now
		isAffected := map[*edsStream]bool{}
		for _, e := range affected {
			isAffected[e] = true
		}
		for _, e := range cb.streams {
			if n, _ := e.acks(); !isAffected[e] && n > before[e] {
				unaffectedPushes++
			}
		}
		affectedTotal += len(affected)
		// Restore it, so that the next pick starts from passing everywhere.
		cb.s.cat.Submit(ctx, testToken, catalog.Command{Op: catalog.OpCheck, NodeName: cb.nodeOf["ttl:"+name+"-0"], ID: "ttl:" + name + "-0", Status: catalog.StatusPassing})
		waitFor(b, 30*time.Second, "the restore", func() bool {
			for _, e := range affected {
				if n, _ := e.acks(); n < before[e]+2 {
					return false
				}
			}
			return true
		})
		b.StartTimer()
	}
	b.StopTimer()
	reportLatency(b, lat)
	b.ReportMetric(float64(affectedTotal)/float64(b.N), "callers/flip")
	b.ReportMetric(float64(unaffectedPushes), "pushes-to-others")
}

// nodeIndex is k of "host-k".
func nodeIndex(name string) int {
	var k int
	fmt.Sscanf(name, "host-%d", &k)
	return k
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func maxRSS() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss // KiB on Linux
}

// BenchmarkCatalogChurn: health flips of random instances at a target rate (1,000/s) for 10 s
// ($MESH_BENCH_CHURN to change it)
// with the streams of BenchmarkHealthFlip connected; reports the rate achieved, the Raft writes
// per second, the CPU used (cores, the whole process: server and clients) and how long after
// the last write every caller had ACKed (the backlog).
func BenchmarkCatalogChurn(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d/instances=%d/streams=%d", n, 10*n, n), func(b *testing.B) { benchChurn(b, n) })
	}
}

func benchChurn(b *testing.B, n int) {
	cb := setupCatalogBench(b, n, 10, n)
	const rate = 1000
	dur := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("MESH_BENCH_CHURN")); err == nil && d > 0 {
		dur = d // the 60s: MESH_BENCH_CHURN=60s
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	for range b.N {
		var writes atomic.Int64
		cpu, rss, idx := cpuTime(), maxRSS(), cb.s.Catalog().Index()
		start := time.Now()
		tick := time.NewTicker(time.Second / 100)
		var wg sync.WaitGroup
		issued := 0
		for time.Since(start) < dur {
			<-tick.C
			// As many as the rate asks for by now: a tick the machine dropped is made up for.
			want := int(time.Since(start).Seconds() * rate)
			for ; issued < want; issued++ {
				name := cb.names[rng.IntN(len(cb.names))]
				id := fmt.Sprintf("ttl:%s-%d", name, rng.IntN(10))
				status := []string{catalog.StatusPassing, catalog.StatusCritical, catalog.StatusWarning}[rng.IntN(3)]
				wg.Add(1)
				go func() {
					defer wg.Done()
					if cb.s.cat.Submit(ctx, testToken, catalog.Command{Op: catalog.OpCheck, NodeName: cb.nodeOf[id], ID: id, Status: status}) == nil {
						writes.Add(1)
					}
				}()
			}
		}
		tick.Stop()
		wg.Wait()
		end := time.Now()
		elapsed := end.Sub(start)
		// Backlog: until the served snapshot reflects the last write.
		last := cb.s.Catalog()
		waitFor(b, time.Minute, "the publisher to catch up", func() bool {
			cb.s.pub.mu.Lock()
			defer cb.s.pub.mu.Unlock()
			return cb.s.pub.catalog == last || cb.s.pub.catalog.Index() >= last.Index()
		})
		b.ReportMetric(float64(writes.Load())/elapsed.Seconds(), "changes/s")
		b.ReportMetric(float64(cb.s.Catalog().Index()-idx)/elapsed.Seconds(), "raft-entries/s")
		b.ReportMetric((cpuTime()-cpu).Seconds()/time.Since(start).Seconds(), "cores")
		b.ReportMetric(float64(time.Since(end).Microseconds())/1000, "catch-up-ms")
		b.ReportMetric(float64(maxRSS()-rss)/1024, "rss-growth-MiB")
	}
}

// BenchmarkRegisterConsulAPI: registrations through the HTTP API with the real consul/api
// client (8 concurrent clients), each with a TTL check; reports requests/s and p99.
func BenchmarkRegisterConsulAPI(b *testing.B) {
	repo := newTestRepo(b)
	repo.commit(meshFiles(0), "v0", false)
	cfg := testConfig(b, repo.bare, nodeOpts{})
	s := startServer(b, cfg)
	waitFor(b, 10*time.Second, "a leader", func() bool { return s.Served() != nil && s.IsLeader() })
	c, err := consul.NewClient(&consul.Config{Address: s.HTTPAddr(), Token: testToken})
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var lat []time.Duration
	var n atomic.Int64
	b.SetParallelism(4) // 4 × GOMAXPROCS goroutines
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			i := n.Add(1)
			t0 := time.Now()
			err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: fmt.Sprintf("api-%d", i), Name: "api", Address: "127.0.0.1",
				Port: int(1024 + i%60000), Check: &consul.AgentServiceCheck{TTL: "1h", Status: consul.HealthPassing}})
			if err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	b.ReportMetric(float64(len(lat))/time.Since(start).Seconds(), "registrations/s")
	reportLatency(b, lat)
}
