package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshgit/mesh/internal/adsclient"
)

// result is one run of one server.
type result struct {
	ready       time.Duration         // process start → a proxy fully synced
	change      map[int]time.Duration // proxies → the change made → the last proxy ACKed it
	changeCPU   map[int]time.Duration // proxies → the server's CPU time for the change
	changeBytes map[int]float64       // proxies → bytes received per proxy for the change
	sync        time.Duration         // the last number of proxies: first stream opened → all synced
	refused     int64                 // streams reopened during that sync (istiod's rate limit)
	syncBytes   float64               // bytes per proxy of that initial sync
	rssReady    int64                 // RSS once ready, no proxy connected
	rssIdle     int64                 // RSS with the last number of proxies synced, idle
	peak        int64                 // VmHWM at the end
}

func (r result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ready %.2fs", seconds(r.ready))
	if len(r.change) == 0 { // -only start
		fmt.Fprintf(&b, "  RSS ready %s", mib(r.rssReady))
		return b.String()
	}
	for _, n := range slices.Sorted(maps.Keys(r.change)) {
		fmt.Fprintf(&b, "  change@%d %.3fs (%.2f CPU-s, %.1f KB/proxy)", n, seconds(r.change[n]), seconds(r.changeCPU[n]), r.changeBytes[n]/1024)
	}
	fmt.Fprintf(&b, "  sync %.2fs (%d streams reopened, %.0f KB/proxy)  RSS ready %s idle %s peak %s", seconds(r.sync), r.refused, r.syncBytes/1024, mib(r.rssReady), mib(r.rssIdle), mib(r.peak))
	return b.String()
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// Time limits: generous on a loaded 2-core machine, but bounded.
const (
	readyTimeout  = 10 * time.Minute
	syncTimeout   = 10 * time.Minute
	changeTimeout = 5 * time.Minute
)

// measure runs server s once in dir.
func measure(ctx context.Context, s server, dir string, o options) (result, error) {
	res := result{change: map[int]time.Duration{}, changeCPU: map[int]time.Duration{}, changeBytes: map[int]float64{}}
	if err := s.Setup(dir, o.services); err != nil {
		return res, err
	}
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return res, err
	}
	defer log.Close()
	start := time.Now()
	p, err := s.Start(log)
	if err != nil {
		return res, err
	}
	defer p.stop()
	if err := waitReady(ctx, s, p); err != nil {
		return res, err
	}
	res.ready = time.Since(start)
	res.rssReady, _ = p.memory()
	if o.onlyStart {
		return res, p.exited()
	}

	variant := 0
	for k, n := range o.proxies {
		last := k == len(o.proxies)-1
		cctx, cancel := context.WithCancel(ctx)
		clients, conns, took, err := connect(cctx, s, n)
		if err != nil {
			cancel()
			return res, err
		}
		settle(p) // a server busy with the connections (or anything else) would slow the change
		if last {
			res.sync = took
			for _, c := range clients {
				res.syncBytes += float64(c.Bytes())
			}
			res.syncBytes /= float64(n)
			for _, c := range clients {
				res.refused += c.Retries()
			}
			res.rssIdle, _ = p.memory()
		}
		variant = 1 - variant
		cpu := p.cpu()
		d, bytes, err := change(s, p, clients, variant)
		res.changeCPU[n] = p.cpu() - cpu
		cancel()
		for _, cc := range conns {
			cc.Close()
		}
		if err != nil {
			return res, fmt.Errorf("%d proxies: %w", n, err)
		}
		res.change[n], res.changeBytes[n] = d, bytes
		time.Sleep(time.Second) // let the server notice the streams are gone
	}
	_, res.peak = p.memory()
	return res, p.exited()
}

// settle waits until the server process has used less than a tenth of a core for half a
// second (at most a minute), at least a second.
func settle(p *proc) {
	time.Sleep(time.Second)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		before := p.cpu()
		time.Sleep(500 * time.Millisecond)
		if p.cpu()-before < 50*time.Millisecond {
			return
		}
	}
}

// dial opens a client connection to the server's xDS address: one per proxy, as sidecars have.
func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(512<<20)))
}

// dialProbe is dial with gRPC's connection backoff at 50 ms: the probe dials before the server
// listens, and the default backoff (1 s, ±20%) would measure gRPC's wait, not the server.
func dialProbe(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(512<<20)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1, MaxDelay: 50 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
}

// A readier says when it is ready beyond serving a synced probe stream.
type readier interface {
	// awaitReady returns once the server says it is ready, until ctx ends or p exits.
	awaitReady(ctx context.Context, p *proc) error
}

// waitReady opens a probe stream, reopened every 50 ms while the server refuses it, until it
// is fully synced, and then, for a readier, until it says it is ready: the server is then ready
// to serve proxies, mTLS included (istiod creates its CA before it serves, and refuses streams
// until its caches are synced; mesh serve answers once its first snapshot is applied, and says
// ready in /v1/status once the CA's trust bundle is served too).
func waitReady(ctx context.Context, s server, p *proc) error {
	cc, err := dialProbe(s.XDSAddr())
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	opts := s.XDS()
	opts.Backoff, opts.MaxBackoff = 50*time.Millisecond, 50*time.Millisecond
	c, err := adsclient.Open(ctx, cc, s.Node(0, "probe"), opts)
	if err != nil {
		return err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.Synced():
			if r, ok := s.(readier); ok {
				return r.awaitReady(ctx, p)
			}
			return nil
		case <-c.Done():
			return fmt.Errorf("not ready within %s: %v", readyTimeout, c.Err())
		case <-tick.C:
			if err := p.exited(); err != nil {
				return err
			}
		}
	}
}

// connect opens n proxies' streams and waits until every one is synced; it returns how long
// that took from the first stream opened.
func connect(ctx context.Context, s server, n int) ([]*adsclient.Client, []*grpc.ClientConn, time.Duration, error) {
	clients := make([]*adsclient.Client, 0, n)
	conns := make([]*grpc.ClientConn, 0, n)
	fail := func(err error) ([]*adsclient.Client, []*grpc.ClientConn, time.Duration, error) {
		for _, cc := range conns {
			cc.Close()
		}
		return nil, nil, 0, err
	}
	start := time.Now()
	for i := range n {
		cc, err := dial(s.XDSAddr())
		if err != nil {
			return fail(err)
		}
		conns = append(conns, cc)
		c, err := adsclient.Open(ctx, cc, s.Node(i, "0"), s.XDS())
		if err != nil {
			return fail(err)
		}
		clients = append(clients, c)
	}
	deadline := time.After(syncTimeout)
	for i, c := range clients {
		select {
		case <-c.Synced():
		case <-c.Done():
			return fail(fmt.Errorf("proxy %d: stream ended before it synced: %v", i, c.Err()))
		case <-deadline:
			return fail(fmt.Errorf("%d proxies not synced within %s: %w", n, syncTimeout, errTimeout))
		}
	}
	return clients, conns, time.Since(start), nil
}

// change makes the authorization change and waits until every proxy has received and ACKed
// listeners carrying it; it returns that time and the bytes each proxy received for the change
// (until nothing more arrived for a second).
func change(s server, p *proc, clients []*adsclient.Client, variant int) (time.Duration, float64, error) {
	for _, c := range clients {
		c.SwapBytes(0)
		c.Expect([]byte(adminPrefixes[variant]))
	}
	t0, err := s.Change(variant)
	if err != nil {
		return 0, 0, err
	}
	deadline := t0.Add(changeTimeout)
	var last time.Time
	for i := 0; i < len(clients); {
		if at := clients[i].MarkerAt(); !at.IsZero() {
			if at.After(last) {
				last = at
			}
			i++
			continue
		}
		if err := p.exited(); err != nil {
			return 0, 0, err
		}
		select {
		case <-clients[i].Done():
			return 0, 0, fmt.Errorf("proxy %d: stream ended: %v", i, clients[i].Err())
		default:
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("proxy %d did not get the change within %s: %w", i, changeTimeout, errTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	total := func() (n int64) {
		for _, c := range clients {
			n += c.Bytes()
		}
		return n
	}
	prev := total()
	for quiet := time.Now(); time.Since(quiet) < time.Second && time.Since(last) < 30*time.Second; time.Sleep(50 * time.Millisecond) {
		if n := total(); n != prev {
			prev, quiet = n, time.Now()
		}
	}
	return last.Sub(t0), float64(prev) / float64(len(clients)), nil
}

// printTable prints the medians of every server beside the targets: a Markdown table.
func printTable(w io.Writer, list []server, results map[string][]result, o options) {
	last := o.proxies[len(o.proxies)-1]
	type row struct {
		name   string
		target float64 // mesh/istiod at most; 0: none
		goal   string
		get    func(result) float64
		format func(float64) string
	}
	secs := func(v float64) string { return fmt.Sprintf("%.2f s", v) }
	kb := func(v float64) string { return fmt.Sprintf("%.1f KB", v/1024) }
	mb := func(v float64) string { return fmt.Sprintf("%.0f MiB", v/(1<<20)) }
	rows := []row{{"start → ready", 1, "≤ 1×", func(r result) float64 { return seconds(r.ready) }, secs}}
	if o.onlyStart {
		o.proxies = nil
	}
	for _, n := range o.proxies {
		rows = append(rows,
			row{fmt.Sprintf("authorization change → all ACK, %d proxies", n), 0.5, "≤ 0.5× (stretch 0.25×)",
				func(r result) float64 { return seconds(r.change[n]) }, secs},
			row{fmt.Sprintf("server CPU for that change, %d proxies", n), 0, "",
				func(r result) float64 { return seconds(r.changeCPU[n]) }, func(v float64) string { return fmt.Sprintf("%.2f CPU-s", v) }},
			row{fmt.Sprintf("bytes pushed per proxy for that change, %d proxies", n), 0, "",
				func(r result) float64 { return r.changeBytes[n] }, kb})
	}
	if o.onlyStart {
		rows = append(rows, row{"RSS ready, no proxies", 0, "", func(r result) float64 { return float64(r.rssReady) }, mb})
	} else {
		rows = append(rows,
			row{fmt.Sprintf("initial sync of %d proxies", last), 0.5, "≤ 0.5×", func(r result) float64 { return seconds(r.sync) }, secs},
			row{fmt.Sprintf("streams refused and reopened during that sync, %d proxies", last), 0, "",
				func(r result) float64 { return float64(r.refused) }, func(v float64) string { return fmt.Sprintf("%.0f", v) }},
			row{fmt.Sprintf("bytes per proxy of the initial sync, %d proxies", last), 0, "", func(r result) float64 { return r.syncBytes }, kb},
			row{"RSS ready, no proxies", 0, "", func(r result) float64 { return float64(r.rssReady) }, mb},
			row{fmt.Sprintf("RSS idle, %d proxies synced", last), 0, "", func(r result) float64 { return float64(r.rssIdle) }, mb},
			row{"peak RSS (VmHWM)", 0.5, "≤ 0.5×", func(r result) float64 { return float64(r.peak) }, mb},
		)
	}

	fmt.Fprintf(w, "\n%d services; medians of %d runs; xDS: ", o.services, o.runs)
	for k, s := range list {
		if k > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "%s %s", s.Name(), s.XDS())
	}
	if len(o.istiodEnv) > 0 {
		fmt.Fprintf(w, "; istiod with %s", strings.Join(o.istiodEnv, " "))
	}
	if o.meshMemLimit != "" {
		fmt.Fprintf(w, "; mesh serve with --memory-limit %s", o.meshMemLimit)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	head := "| |"
	sep := "|---|"
	for _, s := range list {
		head += " " + s.Name() + " |"
		sep += "---|"
	}
	both := results["istiod"] != nil && results["mesh serve"] != nil
	if both {
		head += " mesh/istiod | target | met |"
		sep += "---|---|---|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, r := range rows {
		line := "| " + r.name + " |"
		med := map[string]float64{}
		for _, s := range list {
			var v []float64
			for _, res := range results[s.Name()] {
				v = append(v, r.get(res))
			}
			med[s.Name()] = median(v)
			line += " " + r.format(med[s.Name()]) + " |"
		}
		if both {
			ratio := med["mesh serve"] / med["istiod"]
			shown := fmt.Sprintf("%.2f×", ratio)
			if med["istiod"] == 0 {
				shown = "—"
			}
			met := ""
			if r.target > 0 {
				met = "no"
				if ratio <= r.target {
					met = "yes"
				}
			}
			line += fmt.Sprintf(" %s | %s | %s |", shown, r.goal, met)
		}
		fmt.Fprintln(w, line)
	}
}
