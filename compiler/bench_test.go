package compiler_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/meshgen"
	"github.com/meshgit/mesh/schema"
)

// The compiler's benchmarks, on meshes from internal/meshgen (about five intentions per service).
// Run them with `make bench`, or only these:
//
//	go test -tags hashicorpmetrics -run '^$' -bench . -benchmem -count 5 ./compiler/
//
// Besides time and allocations each reports peak-RSS-MiB, the high-water mark of the process's
// resident memory (VmHWM of /proc/self/status) while the benchmark ran, reset before it starts
// through /proc/self/clear_refs, so it is the compiler's peak and not the generator's or an
// earlier benchmark's; and cpu-ms/op, the process's CPU time per operation (all threads, the
// garbage collector's included), which is the number to compare on a machine shared with other
// work. BenchmarkCUEExport runs `cue export` on the same tree as the reference.

var benchSizes = []int{1000, 10000}

// genTree writes a generated mesh of n services under a temporary directory.
func genTree(b testing.TB, n int) (string, meshgen.Stats) {
	b.Helper()
	files, stats, err := meshgen.Generate(meshgen.Options{Services: n, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if err := meshgen.WriteDir(dir, files); err != nil {
		b.Fatal(err)
	}
	return dir, stats
}

// BenchmarkCompile is a cold compile of a whole mesh directory: read, parse, unify with the
// schema, check and build the snapshot.
func BenchmarkCompile(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			dir, stats := genTree(b, n)
			ctx := context.Background()
			peak := startPeakRSS(b)
			b.ReportAllocs()
			for b.Loop() {
				snap, err := compiler.CompileDir(ctx, dir)
				if err != nil {
					b.Fatal(firstLines(err))
				}
				if len(snap.Services) != stats.Services || len(snap.Intentions) != stats.Intentions {
					b.Fatalf("compiled %d services, %d intentions; generated %d, %d",
						len(snap.Services), len(snap.Intentions), stats.Services, stats.Intentions)
				}
			}
			peak.report(b)
		})
	}
}

// BenchmarkCompileOneFileChanged compiles a mesh after one team's file changed (an intention's
// action flips between allow and deny): what a push that touches one file costs the reconciler,
// or a review its head. cache=false is a full recompile; cache=true compiles with the Cache of
// the previous compilation (compiler.Options.Cache), as the reconciler and mesh review do.
func BenchmarkCompileOneFileChanged(b *testing.B) {
	for _, n := range benchSizes {
		for _, cached := range []bool{false, true} {
			b.Run(fmt.Sprintf("services=%d/cache=%v", n, cached), func(b *testing.B) {
				benchOneFileChanged(b, n, cached)
			})
		}
	}
}

func benchOneFileChanged(b *testing.B, n int, cached bool) {
	dir, _ := genTree(b, n)
	name, orig := changeableFile(b, dir)
	benchEdit(b, dir, name, cached, bytes.Replace(orig, []byte(`action: "allow"`), []byte(`action: "deny"`), 1), orig)
}

// benchEdit compiles the mesh in dir once, then times compilations that alternate the content
// of the file name between a and b, with one Cache (cached) or none. It reports, besides
// benchReport's metrics, the elements the last compilation evaluated and reused.
func benchEdit(b *testing.B, dir, name string, cached bool, a, bb []byte) {
	ctx := context.Background()
	var opts compiler.Options
	if cached {
		opts.Cache = compiler.NewCache()
	}
	if _, _, err := compiler.CompileDirWithReport(ctx, dir, opts); err != nil {
		b.Fatal(firstLines(err))
	}
	variants := [2][]byte{a, bb}
	peak := startPeakRSS(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		b.StopTimer()
		if err := os.WriteFile(name, variants[i%2], 0o644); err != nil {
			b.Fatal(err)
		}
		i++
		b.StartTimer()
		if _, _, err := compiler.CompileDirWithReport(ctx, dir, opts); err != nil {
			b.Fatal(firstLines(err))
		}
	}
	peak.report(b)
	if cached {
		st := opts.Cache.Stats()
		b.ReportMetric(float64(st.ElementsEvaluated), "elems-evaluated")
		b.ReportMetric(float64(st.ElementsReused), "elems-reused")
		b.ReportMetric(float64(st.CompiledReused), "compiled-reused")
		b.ReportMetric(float64(st.VerdictsSearched), "verdicts-searched")
	}
}

// BenchmarkCompileMeshWideChange compiles a mesh after a mesh-wide setting changed
// (setting=defaultIntention flips between deny and allow, setting=tls mesh.tls.minVersion
// between TLSv1_2 and TLSv1_3), with the Cache of the previous compilation: on the dense
// transparent mesh of issue 13 (1,000 services, each may reach every other) and on a generated
// mesh of 10,000 services. No element depends on the settings, so only the settings are
// evaluated (elems-evaluated 0).
func BenchmarkCompileMeshWideChange(b *testing.B) {
	settings := []struct{ name, a, b string }{
		{"defaultIntention", `defaultIntention: "deny"`, `defaultIntention: "allow"`},
		{"tls", `minVersion:  "TLSv1_2"`, `minVersion:  "TLSv1_3"`},
	}
	for _, set := range settings {
		b.Run("dense-transparent/services=1000/setting="+set.name, func(b *testing.B) {
			dir := b.TempDir()
			writeDenseMesh(b, dir, 1000, true)
			name := filepath.Join(dir, "mesh.cue")
			orig := readFile(b, name)
			a := bytes.Replace(orig, []byte(`trustDomain: "dense.mesh"`), []byte(`trustDomain: "dense.mesh", defaultIntention: "deny", tls: {minVersion:  "TLSv1_2"}`), 1)
			if err := os.WriteFile(name, a, 0o644); err != nil {
				b.Fatal(err)
			}
			benchEdit(b, dir, name, true, bytes.Replace(a, []byte(set.a), []byte(set.b), 1), a)
		})
	}
	for _, set := range settings {
		b.Run("services=10000/setting="+set.name, func(b *testing.B) {
			dir, _ := genTree(b, 10000)
			name := filepath.Join(dir, "mesh.cue")
			orig := readFile(b, name)
			if !bytes.Contains(orig, []byte(set.a)) {
				b.Fatalf("mesh.cue has no %s", set.a)
			}
			benchEdit(b, dir, name, true, bytes.Replace(orig, []byte(set.a), []byte(set.b), 1), orig)
		})
	}
}

// BenchmarkCompileDenseOneFileChanged is BenchmarkCompileOneFileChanged on the dense
// transparent mesh: one service's port changes.
func BenchmarkCompileDenseOneFileChanged(b *testing.B) {
	dir := b.TempDir()
	writeDenseMesh(b, dir, 1000, true)
	name := filepath.Join(dir, "svc-0000.cue")
	orig := readFile(b, name)
	benchEdit(b, dir, name, true, bytes.Replace(orig, []byte("port: 8080"), []byte("port: 8081"), 1), orig)
}

func readFile(b *testing.B, name string) []byte {
	b.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// changeableFile returns the path and content of the first team file with an allow intention.
func changeableFile(b *testing.B, dir string) (string, []byte) {
	b.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "teams", "*.cue"))
	if err != nil {
		b.Fatal(err)
	}
	sort.Strings(names)
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			b.Fatal(err)
		}
		if bytes.Contains(data, []byte(`action: "allow"`)) {
			return name, data
		}
	}
	b.Fatal("no team file with an allow intention")
	return "", nil
}

// BenchmarkCUEExport is the reference: `cue export` of the same tree with the schema `mesh
// schema` prints, run as a process (its startup included). It uses $MESH_CUE, else cue from
// PATH, else /root/go/bin/cue, and skips when none exists. peak-RSS-MiB is the child's maxrss,
// cpu-ms/op its user and system CPU time.
func BenchmarkCUEExport(b *testing.B) {
	cue := cueBinary()
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			if cue == "" {
				b.Skip("no cue binary ($MESH_CUE, PATH or /root/go/bin/cue); skipping the cue export reference")
			}
			dir, _ := genTree(b, n)
			var schemaText bytes.Buffer
			for _, f := range schema.Files() {
				schemaText.Write(f.Data)
			}
			schemaFile := filepath.Join(b.TempDir(), "mesh-schema.cue")
			if err := os.WriteFile(schemaFile, schemaText.Bytes(), 0o644); err != nil {
				b.Fatal(err)
			}
			args := []string{"export", "--out", "json"}
			err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err == nil && strings.HasSuffix(p, ".cue") {
					args = append(args, p)
				}
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			args = append(args, schemaFile)
			var maxRSS int64
			var cpu time.Duration
			for b.Loop() {
				var stderr bytes.Buffer
				cmd := exec.Command(cue, args...)
				cmd.Stdout = io.Discard
				cmd.Stderr = &stderr
				if err := cmd.Run(); err != nil {
					b.Fatalf("cue export: %v\n%s", err, firstLines(fmt.Errorf("%s", stderr.String())))
				}
				if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
					maxRSS = max(maxRSS, int64(ru.Maxrss)) // KiB on Linux
				}
				cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			}
			b.ReportMetric(float64(maxRSS)/1024, "peak-RSS-MiB")
			b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		})
	}
}

func cueBinary() string {
	if p := os.Getenv("MESH_CUE"); p != "" {
		return p
	}
	if p, err := exec.LookPath("cue"); err == nil {
		return p
	}
	if _, err := os.Stat("/root/go/bin/cue"); err == nil {
		return "/root/go/bin/cue"
	}
	return ""
}

// peakRSS measures the process's resident high-water mark and its CPU time (user and system,
// all threads: the garbage collector's work included) while a benchmark runs. CPU time is the
// number to compare on a machine shared with other work, where wall time includes waiting.
type peakRSS struct {
	ok  bool
	cpu time.Duration
}

// startPeakRSS frees what earlier work left behind and resets VmHWM to the current RSS (writing
// 5 to /proc/self/clear_refs, Linux 4.0 and later). Where that is impossible it reports nothing.
func startPeakRSS(b *testing.B) peakRSS {
	runtime.GC()
	debug.FreeOSMemory()
	p := peakRSS{cpu: cpuTime()}
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("peak RSS not measured: %v", err)
		return p
	}
	p.ok = true
	return p
}

func (p peakRSS) report(b *testing.B) {
	if b.N > 0 {
		b.ReportMetric(float64(cpuTime()-p.cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	}
	if !p.ok {
		return
	}
	kib, err := vmHWM()
	if err != nil {
		b.Logf("peak RSS not measured: %v", err)
		return
	}
	b.ReportMetric(float64(kib)/1024, "peak-RSS-MiB")
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmHWM reads the peak resident set size of this process, in KiB.
func vmHWM() (int64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

// firstLines keeps an error message short enough to read in benchmark output.
func firstLines(err error) string {
	lines := strings.SplitN(err.Error(), "\n", 6)
	if len(lines) > 5 {
		lines[5] = "..."
	}
	return strings.Join(lines, "\n")
}

// BenchmarkCompileDense compiles the dense mesh of issue 13 (services that may all call each
// other, "*" → "*" allow) in the two models: "explicit", every service listing every other as
// an upstream with its local port (services² entries), and "transparent", mode "transparent"
// and nothing listed. It reports the size of the CUE each takes. The explicit model stops at
// 300 services (2.7 MB of CUE, about a GiB to compile): at 1,000 it is 30 MB and many GiB.
func BenchmarkCompileDense(b *testing.B) {
	for _, n := range []int{300, 1000} {
		for _, model := range []string{"explicit", "transparent"} {
			if model == "explicit" && n > 300 {
				continue
			}
			b.Run(fmt.Sprintf("services=%d/model=%s", n, model), func(b *testing.B) {
				dir := b.TempDir()
				size := writeDenseMesh(b, dir, n, model == "transparent")
				ctx := context.Background()
				peak := startPeakRSS(b)
				b.ReportAllocs()
				for b.Loop() {
					snap, err := compiler.CompileDir(ctx, dir)
					if err != nil {
						b.Fatal(firstLines(err))
					}
					if len(snap.Services) != n {
						b.Fatalf("%d services, want %d", len(snap.Services), n)
					}
				}
				peak.report(b)
				b.ReportMetric(float64(size)/1024, "cue-KB")
			})
		}
	}
}

// writeDenseMesh writes the dense mesh, one file per service, and returns its size in bytes.
func writeDenseMesh(b testing.TB, dir string, n int, transparent bool) int {
	b.Helper()
	mode := ""
	if transparent {
		mode = `, mode: "transparent"`
	}
	total := 0
	write := func(name, text string) {
		total += len(text)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	write("mesh.cue", fmt.Sprintf("package mesh\n\nmesh: {name: \"dense\", trustDomain: \"dense.mesh\"%s}\n\nintentions: \"*\": \"*\": action: \"allow\"\n", mode))
	for i := range n {
		var t strings.Builder
		fmt.Fprintf(&t, "package mesh\n\nservices: \"svc-%04d\": {\n\tprotocol: \"http\"\n\tport: 8080\n", i)
		fmt.Fprintf(&t, "\tendpoints: [{address: \"10.%d.%d.1\", port: 21000}]\n", i/250, i%250)
		if !transparent {
			t.WriteString("\tupstreams: {\n")
			for j := range n {
				if j != i {
					fmt.Fprintf(&t, "\t\t\"svc-%04d\": localPort: %d\n", j, 10000+j)
				}
			}
			t.WriteString("\t}\n")
		}
		t.WriteString("}\n")
		write(fmt.Sprintf("svc-%04d.cue", i), t.String())
	}
	return total
}
