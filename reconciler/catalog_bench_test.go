package reconciler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

func (e *edsStream) run(ctx context.Context, cc *grpc.ClientConn, node *corev3.Node, ready *sync.WaitGroup) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType} {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			return err
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
	return nil
}

func (e *edsStream) acks() (int, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.edsAcks, e.lastAck
}

type catalogBench struct {
	s       *Server
	xdsAddr string
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
	cb := &catalogBench{s: s, xdsAddr: xdsAddr}
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

	if streams == 0 {
		return cb
	}
	sctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	start = time.Now()
	var err2 error
	if cb.streams, err2 = connectStreams(sctx, xdsAddr, cb.names, streams); err2 != nil {
		b.Fatal(err2)
	}
	b.Logf("%d ADS streams have their first EDS after %v", streams, time.Since(start).Round(time.Millisecond))
	return cb
}

// connectStreams connects n Envoy-shaped ADS streams to the xDS server at addr over 8
// connections, one per service of names in turn, and returns once each has its first EDS (or
// ctx ends: the connections close with it).
func connectStreams(ctx context.Context, addr string, names []string, n int) ([]*edsStream, error) {
	conns := make([]*grpc.ClientConn, 8)
	for i := range conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, func() { cc.Close() })
		conns[i] = cc
	}
	var ready sync.WaitGroup
	var out []*edsStream
	for i := range n {
		e := &edsStream{service: names[i%len(names)]}
		ready.Add(1)
		if err := e.run(ctx, conns[i%len(conns)], &corev3.Node{Id: fmt.Sprintf("bench-%d", i), Cluster: e.service, UserAgentName: "envoy"}, &ready); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	done := make(chan struct{})
	go func() { ready.Wait(); close(done) }()
	select {
	case <-done:
		return out, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
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
