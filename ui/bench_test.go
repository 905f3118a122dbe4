package ui_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/meshgit/mesh/internal/meshgen"
)

// benchMesh serves a generated 1,000-service mesh and a second version of it that flips one
// intention; it returns the server and the two versions.
func benchMesh(b *testing.B) (m *meshServer, base, head string) {
	b.Helper()
	dir := b.TempDir()
	files, stats, err := meshgen.Generate(meshgen.Options{Services: 1000, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := meshgen.WriteDir(dir, files); err != nil {
		b.Fatal(err)
	}
	b.Logf("mesh: %s", stats)
	m = startMesh(b, dir)
	base = m.srv.Served().Version
	team := filepath.Join(m.repo, "mesh", filepath.FromSlash(files[1].Name))
	data, err := os.ReadFile(team)
	if err != nil {
		b.Fatal(err)
	}
	flipped := strings.Replace(string(data), `action: "allow"`, `action: "deny"`, 1)
	if flipped == string(data) {
		b.Fatalf("%s has no allow intention to flip", files[1].Name)
	}
	m.commit(b, map[string]string{files[1].Name: flipped}, "flip one intention")
	waitFor(b, 2*time.Minute, "the second version", func() bool { return m.srv.Served().Version != base })
	return m, base, m.srv.Served().Version
}

// BenchmarkJSON1k measures each JSON answer the UI's pages read, on a real server holding a
// 1,000-service mesh, over loopback HTTP (the time includes encoding and transfer).
func BenchmarkJSON1k(b *testing.B) {
	m, base, head := benchMesh(b)
	svc := m.srv.Served().ServiceNames()[0]
	for _, r := range []struct{ name, path string }{
		{"status", "/v1/status"},
		{"snapshots", "/v1/snapshots"},
		{"proxies", "/v1/proxies"},
		{"topology", "/ui/api/snapshots/served/topology"},
		{"matrix-window", "/ui/api/snapshots/served/matrix?rows=25&cols=25"},
		{"matrix-window-far", "/ui/api/snapshots/served/matrix?row=975&col=975&rows=25&cols=25"},
		{"service", "/ui/api/snapshots/served/services/" + svc},
		{"diff", "/ui/api/diff?base=" + base + "&head=" + head},
	} {
		b.Run(r.name, func(b *testing.B) {
			var n int64
			for b.Loop() {
				resp, err := http.Get(m.base + r.path)
				if err != nil {
					b.Fatal(err)
				}
				n, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("%s: %d", r.path, resp.StatusCode)
				}
			}
			b.ReportMetric(float64(n), "resp-bytes")
		})
	}
}

// BenchmarkBrowser1k loads each page of the UI of a 1,000-service mesh in headless Chromium and
// reports first contentful paint (fcp-ms) and the time until its data is on the page (ready-ms),
// all from the navigation's start; for the topology also when its JSON arrived (data-ms), how
// long Cytoscape.js took to build and lay the graph out (layout-ms) and when the graph was first
// painted (graph-painted-ms). topology is the default view (a mesh this large starts with one
// owner's services), topology-all the whole mesh. The matrix must render one window, never the
// whole matrix.
func BenchmarkBrowser1k(b *testing.B) {
	m, _, _ := benchMesh(b)
	br := newBrowser(b)
	svc := m.srv.Served().ServiceNames()[0]
	for _, p := range []struct{ name, path, ready string }{
		{"overview", "/ui/", `document.querySelector('#count-synced') !== null`},
		{"topology", "/ui/topology", `window.meshLayoutMs !== undefined`},
		{"topology-all", "/ui/topology?owner=", `window.meshLayoutMs !== undefined`},
		{"service", "/ui/services/" + svc, `document.querySelector('#svc-facts dt') !== null`},
		{"intentions", "/ui/intentions", `document.querySelectorAll('#matrix td.cell').length === 625`},
		{"proxies", "/ui/proxies", `/^\d+ proxies/.test(document.getElementById('p-stats').textContent)`},
		{"versions", "/ui/versions", `document.querySelectorAll('#versions tr').length > 0`},
	} {
		b.Run(p.name, func(b *testing.B) {
			var fcp, ready, layout, data, painted float64
			n := 0
			for b.Loop() {
				br.run(b, 60*time.Second, chromedp.Navigate(m.base+p.path), waitJS(p.ready, 50*time.Second))
				fcp += eval[float64](b, br, `(performance.getEntriesByName('first-contentful-paint')[0] || {startTime: -1}).startTime`)
				ready += eval[float64](b, br, `performance.now()`)
				layout += eval[float64](b, br, `window.meshLayoutMs || 0`)
				data += eval[float64](b, br, `window.meshDataMs || 0`)
				if layout > 0 {
					br.run(b, 60*time.Second, waitJS(`window.meshPaintedMs !== undefined`, 50*time.Second))
					painted += eval[float64](b, br, `window.meshPaintedMs`)
				}
				n++
			}
			if cells := eval[int](b, br, `document.querySelectorAll('td').length`); cells > 1000 {
				b.Fatalf("%s renders %d table cells", p.path, cells)
			}
			if errs := br.takeErrors(); len(errs) > 0 {
				b.Fatalf("%s: console errors %q", p.path, errs)
			}
			b.ReportMetric(fcp/float64(n), "fcp-ms")
			b.ReportMetric(ready/float64(n), "ready-ms")
			if layout > 0 {
				b.ReportMetric(layout/float64(n), "layout-ms")
				b.ReportMetric(data/float64(n), "data-ms")
				b.ReportMetric(painted/float64(n), "graph-painted-ms")
			}
		})
	}
}
