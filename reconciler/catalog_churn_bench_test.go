package reconciler

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshgit/mesh/catalog"
)

// The churn benchmark measures the server alone: the 1,000 ADS streams and the load generator
// run in a child process (this test binary again, with $MESH_CHURN_CLIENTS naming its
// configuration), as proxies and agents on other hosts would. The child sends the changes to
// the server's HTTP API as agents do (PUT /v1/catalog/command); the parent samples its own
// CPU time, RSS and the publisher's lag every second.

const churnClientsEnv = "MESH_CHURN_CLIENTS"

func TestMain(m *testing.M) {
	if path := os.Getenv(churnClientsEnv); path != "" {
		if err := churnClients(path); err != nil {
			fmt.Fprintln(os.Stderr, "churn clients:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// churnConfig is what the child process is told.
type churnConfig struct {
	XDS, HTTP, Token string
	Names            []string // services, sorted: instance j of Names[i] is on node host-((i*PerService+j)%100)
	PerService       int
	Streams          int
	Rate             int // changes per second
	Duration         time.Duration
}

// churnResult is what the child reports when its generator is done.
type churnResult struct {
	Writes, Errors int64
	Elapsed        time.Duration
	FirstError     string
}

// churnClients is the child process: it connects the streams, says "ready", waits for "go" on
// stdin, generates the changes, prints a churnResult and keeps the streams until stdin closes.
func churnClients(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg churnConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+10*time.Minute)
	defer cancel()
	if _, err := connectStreams(ctx, cfg.XDS, cfg.Names, cfg.Streams); err != nil {
		return fmt.Errorf("connect streams: %w", err)
	}
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if line, err := in.ReadString('\n'); err != nil || strings.TrimSpace(line) != "go" {
		return fmt.Errorf("waiting for go: %q %v", line, err)
	}
	res := generateChurn(ctx, cfg)
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	io.Copy(io.Discard, in) // the parent closes stdin once it has measured the catch-up
	return nil
}

// generateChurn sends check transitions of random instances at cfg.Rate for cfg.Duration,
// with at most 512 requests in flight (more and the generator waits: the achieved rate shows it).
func generateChurn(ctx context.Context, cfg churnConfig) churnResult {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}, Timeout: 30 * time.Second}
	submit := catalog.HTTPSubmitter("http://"+cfg.HTTP, hc)
	rng := rand.New(rand.NewPCG(3, 4))
	var writes, errs atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	start := time.Now()
	tick := time.NewTicker(time.Second / 100)
	defer tick.Stop()
	issued := 0
	for time.Since(start) < cfg.Duration && ctx.Err() == nil {
		<-tick.C
		// As many as the rate asks for by now: a tick the machine dropped is made up for.
		want := int(time.Since(start).Seconds() * float64(cfg.Rate))
		for ; issued < want; issued++ {
			i, j := rng.IntN(len(cfg.Names)), rng.IntN(cfg.PerService)
			name := cfg.Names[i]
			c := catalog.Command{Op: catalog.OpCheck, NodeName: fmt.Sprintf("host-%d", (i*cfg.PerService+j)%100), ID: fmt.Sprintf("ttl:%s-%d", name, j),
				Status: []string{catalog.StatusPassing, catalog.StatusCritical, catalog.StatusWarning}[rng.IntN(3)]}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := submit(ctx, cfg.Token, c); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					return
				}
				writes.Add(1)
			}()
		}
	}
	wg.Wait()
	r := churnResult{Writes: writes.Load(), Errors: errs.Load(), Elapsed: time.Since(start)}
	if e, ok := firstErr.Load().(string); ok {
		r.FirstError = e
	}
	return r
}

// BenchmarkCatalogChurn: check transitions of random instances at 1,000/s for 10 s
// ($MESH_BENCH_CHURN=60s for the minute) sent over HTTP by a child process that also
// holds the ADS streams (one per service); the server, alone in this process, is measured every
// second: CPU (cores), RSS (first, last, max, slope) and the lag of the served catalog behind
// the applied one (max and slope: a backlog would grow), then the catch-up after the last write.
func BenchmarkCatalogChurn(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d/instances=%d/streams=%d", n, 10*n, n), func(b *testing.B) { benchChurn(b, n) })
	}
}

func benchChurn(b *testing.B, n int) {
	cb := setupCatalogBench(b, n, 10, 0)
	cfg := churnConfig{XDS: cb.xdsAddr, HTTP: cb.s.HTTPAddr(), Token: testToken, Names: cb.names, PerService: 10, Streams: n,
		Rate: 1000, Duration: 10 * time.Second}
	if d, err := time.ParseDuration(os.Getenv("MESH_BENCH_CHURN")); err == nil && d > 0 {
		cfg.Duration = d // the 60s: MESH_BENCH_CHURN=60s
	}
	for range b.N {
		runChurn(b, cb, cfg)
	}
}

func runChurn(b *testing.B, cb *catalogBench, cfg churnConfig) {
	path := b.TempDir() + "/churn.json"
	buf, _ := json.Marshal(cfg)
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		b.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	child.Env = append(os.Environ(), churnClientsEnv+"="+path)
	child.Stderr = os.Stderr
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer child.Process.Kill()
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(what string, d time.Duration) string {
		select {
		case l, ok := <-lines:
			if !ok {
				b.Fatalf("the client process ended before %s", what)
			}
			return l
		case <-time.After(d):
			b.Fatalf("no %s from the client process within %v", what, d)
		}
		return ""
	}
	start := time.Now()
	if l := next("ready", 5*time.Minute); l != "ready" {
		b.Fatalf("client process: %q", l)
	}
	b.Logf("the client process has %d streams with their first EDS after %v", cfg.Streams, time.Since(start).Round(time.Millisecond))
	idx := cb.s.Catalog().Index()
	smp := startChurnSampler(cb.s)
	fmt.Fprintln(stdin, "go")
	var res churnResult
	if err := json.Unmarshal([]byte(next("result", cfg.Duration+5*time.Minute)), &res); err != nil {
		b.Fatal(err)
	}
	end := time.Now()
	last := cb.s.Catalog().Index()
	waitFor(b, time.Minute, "the publisher to catch up", func() bool { return servedCatalogIndex(cb.s) >= last })
	catchUp := time.Since(end)
	samples := smp.stop()
	stdin.Close()
	child.Wait()
	if res.Errors > 0 {
		b.Logf("%d writes failed; first: %s", res.Errors, res.FirstError)
	}
	reportChurn(b, res, samples, float64(last-idx), catchUp)
}

// servedCatalogIndex is the index of the catalog the publisher has handed to xDS.
func servedCatalogIndex(s *Server) uint64 {
	s.pub.mu.Lock()
	defer s.pub.mu.Unlock()
	if s.pub.catalog == nil {
		return 0
	}
	return s.pub.catalog.Index()
}

// churnSample is one second of the server's life under churn.
type churnSample struct {
	at    time.Duration // since the start
	cores float64       // CPU time used in the second, in cores
	rss   float64       // MiB, at the end of the second
	lag   time.Duration // how long the oldest applied, unserved change had waited (0: all served)
}

type churnSampler struct {
	stopc   chan struct{}
	done    chan []churnSample
	applied []appliedAt // (time, applied index), every 10ms
}

type appliedAt struct {
	t   time.Time
	idx uint64
}

func startChurnSampler(s *Server) *churnSampler {
	c := &churnSampler{stopc: make(chan struct{}), done: make(chan []churnSample, 1)}
	go func() {
		var out []churnSample
		start, cpu := time.Now(), cpuTime()
		lastSec := start
		fine := time.NewTicker(10 * time.Millisecond)
		defer fine.Stop()
		for {
			select {
			case <-c.stopc:
				c.done <- out
				return
			case now := <-fine.C:
				c.applied = append(c.applied, appliedAt{now, s.Catalog().Index()})
				if now.Sub(lastSec) < time.Second {
					continue
				}
				ncpu := cpuTime()
				out = append(out, churnSample{at: now.Sub(start), cores: (ncpu - cpu).Seconds() / now.Sub(lastSec).Seconds(),
					rss: currentRSS(), lag: c.lag(now, servedCatalogIndex(s))})
				cpu, lastSec = ncpu, now
				c.applied = c.applied[max(0, len(c.applied)-1000):] // 10s of history is plenty
			}
		}
	}()
	return c
}

// lag is how long ago the first change past served was applied (0 if served is current).
func (c *churnSampler) lag(now time.Time, served uint64) time.Duration {
	for _, a := range c.applied {
		if a.idx > served {
			return now.Sub(a.t)
		}
	}
	return 0
}

func (c *churnSampler) stop() []churnSample {
	close(c.stopc)
	return <-c.done
}

func reportChurn(b *testing.B, res churnResult, samples []churnSample, entries float64, catchUp time.Duration) {
	if len(samples) < 2 {
		b.Fatalf("%d samples: the run was too short", len(samples))
	}
	var cores, maxCores, maxRSS, maxLag float64
	xs, rss, lag := make([]float64, len(samples)), make([]float64, len(samples)), make([]float64, len(samples))
	for i, s := range samples {
		cores += s.cores
		maxCores, maxRSS = max(maxCores, s.cores), max(maxRSS, s.rss)
		maxLag = max(maxLag, float64(s.lag.Microseconds())/1000)
		xs[i], rss[i], lag[i] = s.at.Minutes(), s.rss, float64(s.lag.Microseconds())/1000
	}
	sec := res.Elapsed.Seconds()
	b.ReportMetric(float64(res.Writes)/sec, "changes/s")
	b.ReportMetric(entries/sec, "raft-entries/s")
	b.ReportMetric(cores/float64(len(samples)), "server-cores")
	b.ReportMetric(maxCores, "server-cores-max-1s")
	b.ReportMetric(samples[0].rss, "rss-first-MiB")
	b.ReportMetric(samples[len(samples)-1].rss, "rss-last-MiB")
	b.ReportMetric(maxRSS, "rss-max-MiB")
	h := len(samples) / 2 // the second half: past the heap's warm-up
	b.ReportMetric(slope(xs, rss), "rss-slope-MiB/min")
	b.ReportMetric(slope(xs[h:], rss[h:]), "rss-slope-2nd-half-MiB/min")
	b.ReportMetric(maxLag, "lag-max-ms")
	b.ReportMetric(slope(xs, lag), "lag-slope-ms/min")
	b.ReportMetric(slope(xs[h:], lag[h:]), "lag-slope-2nd-half-ms/min")
	var series strings.Builder
	for i := 0; i < len(samples); i += max(1, len(samples)/12) {
		s := samples[i]
		fmt.Fprintf(&series, " %ds: %.2f cores %.0f MiB lag %v;", int(s.at.Seconds()), s.cores, s.rss, s.lag.Round(time.Millisecond))
	}
	b.Logf("server every %ds:%s", max(1, len(samples)/12), series.String())
	b.ReportMetric(float64(catchUp.Microseconds())/1000, "catch-up-ms")
}

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// cpuTime is the CPU time this process (the server) has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// currentRSS is this process's resident set now, in MiB (from /proc/self/statm; 0 elsewhere).
func currentRSS() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize()) / (1 << 20)
}
