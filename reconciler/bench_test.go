package reconciler

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/meshgen"
	"github.com/meshgit/mesh/xds"
)

// BenchmarkCommitToServed measures, per push, the time from `git push` returning to a proxyless
// gRPC xDS client having ACKed the new version: on the one server, or on every server of three.
// Run with -benchtime 50x for the 50 pushes of the issue; it reports p50 and p99.
func BenchmarkCommitToServed(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) { benchCommitToServed(b, n, testTiming) })
	}
	// hashicorp/raft's default timers (50ms commit timeout: followers learn of commits later).
	b.Run("nodes=3/raft-defaults", func(b *testing.B) { benchCommitToServed(b, 3, RaftTiming{}) })
}

var benchRun int

func benchCommitToServed(b *testing.B, n int, timing RaftTiming) {
	benchRun++
	repo := newTestRepo(b)
	repo.commit(meshFiles(0), "v0", false)
	v0 := versionOf(b, meshFiles(0))
	xdss := make([]*xds.Server, n)
	var join string
	for i := range n {
		cfg := testConfig(b, repo.bare, nodeOpts{join: join})
		cfg.Raft = timing
		var addr string
		xdss[i], addr = attachXDS(b, &cfg)
		s := startServer(b, cfg)
		if i == 0 {
			join = s.HTTPAddr()
		}
		dialXDS(b, addr, fmt.Sprintf("web-%d-%d", benchRun, i))
	}
	allAcked := func(v string) bool {
		for i, x := range xdss {
			if !acked(x, fmt.Sprintf("web-%d-%d", benchRun, i), v) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(30 * time.Second)
	for !allAcked(v0) {
		if time.Now().After(deadline) {
			for i, x := range xdss {
				b.Logf("xds %d: %+v", i, x.Proxies())
			}
			b.Fatal("clients did not ACK v0")
		}
		time.Sleep(time.Millisecond)
	}

	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		files := meshFiles(i + 1)
		b.StopTimer()
		v := versionOf(b, files)
		b.StartTimer()
		repo.commit(files, "bench", false)
		start := repo.pushed
		deadline := start.Add(10 * time.Second)
		for !allAcked(v) {
			if time.Now().After(deadline) {
				b.Fatalf("push %d not ACKed within 10s", i)
			}
			time.Sleep(200 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkRestart10k restarts a server whose FSM holds a 10,000-service snapshot and reports how
// long until it serves it from disk (before Raft or Git) and until its FSM holds it again.
func BenchmarkRestart10k(b *testing.B) {
	repo, _, stats := repo10k(b)
	o := nodeOpts{dir: b.TempDir()}
	cfg := testConfig(b, repo.bare, o)
	s := startServer(b, cfg)
	waitFor(b, 10*time.Minute, "the 10k-service snapshot to be served", func() bool { return s.Served() != nil })
	want := s.Served().Version
	b.Logf("%s; version %s", stats, want)
	o.httpAddr, o.raftAddr = s.HTTPAddr(), s.RaftAddr()
	s.Close(context.Background())

	var disk, fsm time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		s = startServer(b, testConfig(b, repo.bare, o))
		if got := s.Served(); got == nil || got.Version != want {
			b.Fatal("not served from disk after Open")
		}
		disk += time.Since(start)
		waitFor(b, time.Minute, "the FSM to hold the snapshot", func() bool {
			st := s.fsm.state()
			return st.served != nil && st.served.Version == want
		})
		fsm += time.Since(start)
		b.StopTimer()
		s.Close(context.Background())
		b.StartTimer()
	}
	b.ReportMetric(float64(disk.Milliseconds())/float64(b.N), "served-from-disk-ms")
	b.ReportMetric(float64(fsm.Milliseconds())/float64(b.N), "fsm-restored-ms")
}

// BenchmarkPush10k measures, per push to a 10,000-service mesh, the time from `git push`
// returning to the server serving the new version, when the push flips one intention in one
// team's file: what a routine change costs at that size, with the reconciler's compiler.Cache.
func BenchmarkPush10k(b *testing.B) { benchPush10k(b, 1) }

// BenchmarkPush10kFollower is BenchmarkPush10k on a two-server cluster: p50-ms is the follower's
// commit → served, leader-p50-ms the leader's, and lag-p50-ms the follower's lag behind the
// leader: replicating and applying the delta, and checking the snapshot it builds against its
// version before serving it (verify.go).
func BenchmarkPush10kFollower(b *testing.B) { benchPush10k(b, 2) }

func benchPush10k(b *testing.B, n int) {
	repo, m, _ := repo10k(b)
	team := ""
	for _, name := range slices.Sorted(maps.Keys(m)) {
		if strings.HasPrefix(name, "mesh/teams/") && strings.Contains(m[name], `action: "allow"`) {
			team = name
			break
		}
	}
	var nodes []*Server
	join := ""
	for i := range n {
		cfg := testConfig(b, repo.bare, nodeOpts{join: join})
		if n > 1 {
			// Compiling 10k services starves two shared cores for seconds: the tests' 400 ms
			// timers would have the servers take leadership from each other all along.
			cfg.Raft = RaftTiming{HeartbeatTimeout: 5 * time.Second, ElectionTimeout: 5 * time.Second,
				LeaderLeaseTimeout: 2 * time.Second, CommitTimeout: 5 * time.Millisecond}
		}
		s := startServer(b, cfg)
		if i == 0 {
			join = s.HTTPAddr()
		}
		nodes = append(nodes, s)
	}
	leader, last := nodes[0], nodes[n-1]
	waitFor(b, 10*time.Minute, "the 10k-service snapshot to be served", func() bool { return last.Served() != nil })
	variants := [2]string{strings.Replace(m[team], `action: "allow"`, `action: "deny"`, 1), m[team]}
	versions := [2]string{}
	for i, v := range variants {
		next := maps.Clone(m)
		next[team] = v
		versions[i] = versionOf(b, next)
	}
	var lat, leaderLat, lag []time.Duration
	b.ResetTimer()
	for i := range b.N {
		repo.commit(map[string]string{team: variants[i%2]}, "flip one intention", false)
		start := repo.pushed
		var leaderAt time.Time
		waitFor(b, time.Minute, "the push to be served", func() bool {
			if got := leader.Served(); leaderAt.IsZero() && got != nil && got.Version == versions[i%2] {
				leaderAt = time.Now()
			}
			got := last.Served()
			return got != nil && got.Version == versions[i%2]
		})
		lat = append(lat, time.Since(start))
		if leaderAt.IsZero() {
			leaderAt = time.Now()
		}
		leaderLat, lag = append(leaderLat, leaderAt.Sub(start)), append(lag, time.Since(leaderAt))
	}
	b.StopTimer()
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	b.ReportMetric(p50(lat), "p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
	if n > 1 {
		b.ReportMetric(p50(leaderLat), "leader-p50-ms")
		b.ReportMetric(p50(lag), "lag-p50-ms")
	}
}

// repo10k is a repository whose one commit holds a generated 10,000-service mesh in mesh/.
func repo10k(b *testing.B) (*testRepo, map[string]string, meshgen.Stats) {
	files, stats, err := meshgen.Generate(meshgen.Options{Services: 10000, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	repo := newTestRepo(b)
	m := map[string]string{}
	for _, f := range files {
		m["mesh/"+f.Name] = string(f.Data)
	}
	repo.commit(m, "10k services", false)
	return repo, m, stats
}

// BenchmarkSnapshotEntry measures the Raft entry that replicates a new snapshot, for a
// one-intention change and a mesh-wide change (mesh.defaultIntention), on the dense transparent
// mesh of issue 13 (1,000 services that may all reach each other) and on a generated mesh of
// 10,000 services: entry=full is the whole compressed snapshot (what the leader sent before
// deltas, and still sends when there is no head), entry=delta the mesh.Delta against the head.
// It reports the entry's size (entry-bytes), the leader's time to encode it (encode-ms), and
// times a follower's Apply of it (ns/op): decompress, decode and verify the whole snapshot, or
// apply the delta to the head.
//
//	go test -tags hashicorpmetrics -run '^$' -bench BenchmarkSnapshotEntry -benchtime 3x ./reconciler/
func BenchmarkSnapshotEntry(b *testing.B) {
	for _, m := range []struct {
		name                 string
		files                []compiler.File
		intentionFile        string
		intentionOld, intNew string
	}{
		{"dense-transparent/services=1000", denseFiles(1000), "intentions-extra.cue", "", "package mesh\n\nintentions: \"svc-0001\": \"svc-0002\": action: \"deny\"\n"},
		{"services=10000", genFiles(b, 10000), "", `action: "allow"`, `action: "deny"`},
	} {
		cache := compiler.NewCache()
		compile := func(files []compiler.File) *mesh.Snapshot {
			s, _, err := compiler.CompileWithReport(context.Background(), files, compiler.Options{Cache: cache})
			if err != nil {
				b.Fatal(err)
			}
			s.Commit = strings.Repeat("a", 40)
			return s
		}
		base := compile(m.files)
		oneIntention := slices.Clone(m.files)
		if m.intentionFile != "" {
			oneIntention = append(oneIntention, compiler.File{Name: m.intentionFile, Data: []byte(m.intNew)})
		} else {
			for i, f := range oneIntention {
				if strings.HasPrefix(f.Name, "teams/") && bytes.Contains(f.Data, []byte(m.intentionOld)) {
					oneIntention[i].Data = bytes.Replace(f.Data, []byte(m.intentionOld), []byte(m.intNew), 1)
					break
				}
			}
		}
		meshWide := slices.Clone(m.files)
		for i, f := range meshWide {
			if f.Name == "mesh.cue" {
				meshWide[i].Data = bytes.Replace(f.Data, []byte(`defaultIntention: "deny"`), []byte(`defaultIntention: "allow"`), 1)
			}
		}
		changes := map[string]*mesh.Snapshot{"one-intention": compile(oneIntention), "mesh-wide": compile(meshWide)}
		for _, change := range []string{"one-intention", "mesh-wide"} {
			next := changes[change]
			next.Commit = strings.Repeat("b", 40)
			if next.Version == base.Version {
				b.Fatalf("%s: %s changed nothing", m.name, change)
			}
			for _, kind := range []string{"full", "delta"} {
				b.Run(fmt.Sprintf("%s/change=%s/entry=%s", m.name, change, kind), func(b *testing.B) {
					benchEntry(b, base, next, kind == "delta")
				})
			}
		}
	}
}

func benchEntry(b *testing.B, base, next *mesh.Snapshot, delta bool) {
	encode := func(head *mesh.Snapshot) []byte {
		typ, c, blob, err := snapshotEntry(head, next)
		if err != nil {
			b.Fatal(err)
		}
		return cmd(b, typ, c, blob)
	}
	head := base
	if !delta {
		head = nil
	}
	t0 := time.Now()
	entry := encode(head)
	encodeTime := time.Since(t0)
	baseData, err := base.Encode()
	if err != nil {
		b.Fatal(err)
	}
	f := newFSM(20, discardLogger())
	if r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: cmd(b, cmdSnapshot, snapshotCmd{Version: base.Version, Commit: base.Commit}, compress(baseData))}); r != nil {
		b.Fatal(r)
	}
	st := f.state()
	b.ReportAllocs()
	for b.Loop() {
		ns, err := f.apply(st, 2, entry)
		if err != nil {
			b.Fatal(err)
		}
		if ns.head.Version != next.Version {
			b.Fatalf("applied %s, want %s", ns.head.Version, next.Version)
		}
	}
	b.ReportMetric(float64(len(entry)), "entry-bytes")
	b.ReportMetric(float64(encodeTime.Microseconds())/1000, "encode-ms")
	if delta {
		// What a follower adds before serving it: the check that it hashes to its version
		// (verify.go), once, on the publisher's goroutine.
		ns, err := f.apply(st, 2, entry)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err, _ := ns.servedCheck.verify(ns.served); err != nil || ns.servedCheck == nil {
			b.Fatalf("verify: %v (check %v)", err, ns.servedCheck)
		}
		b.ReportMetric(float64(time.Since(t0).Microseconds())/1000, "verify-ms")
	}
}

// BenchmarkServedCache measures the served-snapshot cache (publish.go) on the dense mesh of
// 1,000 services and on 10,000 generated services: op=write encodes and atomically writes one
// snapshot with its history (what the publisher did after each snapshot it served, before it
// could serve the next), op=save is what the publisher does now (hand the state to
// saveCaches, which writes the newest in the background).
//
//	go test -tags hashicorpmetrics -run '^$' -bench BenchmarkServedCache -benchtime 3x ./reconciler/
func BenchmarkServedCache(b *testing.B) {
	for _, m := range []struct {
		name  string
		files []compiler.File
	}{{"dense-transparent/services=1000", denseFiles(1000)}, {"services=10000", genFiles(b, 10000)}} {
		snap, _, err := compiler.CompileWithReport(context.Background(), m.files, compiler.Options{})
		if err != nil {
			b.Fatal(err)
		}
		s := &Server{cfg: Config{DataDir: b.TempDir()}, log: discardLogger()}
		s.pub.init(s)
		st := &state{served: snap, servedIndex: 1, history: []*histEntry{{Entry: Entry{Version: snap.Version, Commit: snap.Commit}, snap: snap}}}
		b.Run(m.name+"/op=write", func(b *testing.B) {
			for b.Loop() {
				s.pub.writeCache(point{st: st, applied: 1}, "")
			}
			if errs := s.storage.errors(); len(errs) > 0 {
				b.Fatal(errs)
			}
			fi, err := os.Stat(s.pub.cacheFile())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(fi.Size()), "file-bytes")
		})
		b.Run(m.name+"/op=save", func(b *testing.B) {
			for b.Loop() {
				s.pub.saveCache(point{st: st, applied: 1})
			}
		})
	}
}

// denseFiles is the dense transparent mesh of issue 13: n services, one file each, in
// transparent mode, with "*" → "*" allowed.
func denseFiles(n int) []compiler.File {
	files := []compiler.File{{Name: "mesh.cue", Data: []byte("package mesh\n\nmesh: {name: \"dense\", trustDomain: \"dense.mesh\", defaultIntention: \"deny\", mode: \"transparent\"}\n\nintentions: \"*\": \"*\": action: \"allow\"\n")}}
	for i := range n {
		files = append(files, compiler.File{Name: fmt.Sprintf("svc-%04d.cue", i), Data: fmt.Appendf(nil,
			"package mesh\n\nservices: \"svc-%04d\": {\n\tprotocol: \"http\"\n\tport: 8080\n\tendpoints: [{address: \"10.%d.%d.1\", port: 21000}]\n}\n", i, i/250, i%250)})
	}
	return files
}

// genFiles is a mesh of n services from internal/meshgen.
func genFiles(b *testing.B, n int) []compiler.File {
	gen, _, err := meshgen.Generate(meshgen.Options{Services: n, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	files := make([]compiler.File, len(gen))
	for i, f := range gen {
		files[i] = compiler.File{Name: f.Name, Data: f.Data}
	}
	return files
}
