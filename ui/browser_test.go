package ui_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
)

// pages are the UI's pages and, for each, a JavaScript condition that holds once its data is
// rendered.
var pages = []struct{ path, ready string }{
	{"/ui/", `document.querySelector('#served-version code') && document.querySelector('#count-synced') !== null && document.querySelector('#cat-passing') !== null`},
	{"/ui/topology", `window.meshLayoutMs !== undefined && document.querySelectorAll('#node-list > li').length === 10`},
	{"/ui/services/web", `document.querySelectorAll('#svc-up tr').length > 0 && document.querySelector('#svc-chain ol') !== null`},
	{"/ui/intentions", `document.querySelectorAll('#matrix td.cell').length === 100`},
	{"/ui/proxies", `/^\d+ proxies/.test(document.getElementById('p-stats').textContent)`},
	{"/ui/versions", `document.querySelectorAll('#versions tr').length > 0`},
	{"/ui/services/" + undeclaredService, `document.querySelectorAll('#svc-catalog tr[data-instance]').length === 1`},
}

// TestBrowser drives the UI served by a real server (a one-server Raft cluster following a Git
// repository of repo-example, a real xDS server, instances registered through the catalog API)
// in a real headless Chromium.
func TestBrowser(t *testing.T) {
	m := startMesh(t, filepath.Join("..", "repo-example"))
	registerInstances(t, m)
	m.grpcClient(t, "web", "web-grpc-1", "api")
	waitFor(t, 20*time.Second, "the gRPC xDS client to ACK", func() bool {
		for _, p := range m.xds.Proxies() {
			if p.NodeID == "web-grpc-1" && p.Sync == "SYNCED" {
				return true
			}
		}
		return false
	})
	b := newBrowser(t)

	t.Run("pages load without console errors", func(t *testing.T) {
		for _, p := range pages {
			b.takeErrors()
			b.run(t, 20*time.Second, chromedp.Navigate(m.base+p.path), waitJS(p.ready, 15*time.Second), chromedp.Sleep(200*time.Millisecond))
			shown := eval[string](t, b, `document.getElementById('error').hidden ? '' : document.getElementById('error').textContent`)
			if errs := b.takeErrors(); len(errs) > 0 || shown != "" {
				t.Errorf("%s: console errors %q; page error %q", p.path, errs, shown)
			}
		}
	})

	t.Run("matrix agrees with intention check", func(t *testing.T) { testMatrix(t, m, b) })
	t.Run("proxies page shows a NACK", func(t *testing.T) { testNack(t, m, b) })
	t.Run("overview updates live", func(t *testing.T) { testLive(t, m, b) })
	t.Run("pin needs the token", func(t *testing.T) { testPin(t, m, b) })
	t.Run("diff is mesh review's", func(t *testing.T) { testDiff(t, m, b) })
	t.Run("catalog health", func(t *testing.T) { testCatalog(t, m, b) })
	t.Run("screenshots", func(t *testing.T) { testScreenshots(t, m, b) })
	// These two change the mesh (a service more, then a broken commit): last.
	t.Run("Git endpoints' health", func(t *testing.T) { testGitEndpointHealth(t, m, b) })
	t.Run("overview shows a failed commit's errors", func(t *testing.T) { testLastError(t, m, b) })
}

// testLastError pushes a commit that does not compile while the overview is open, and wants its
// errors, each with file:line:col, on the page (the served version stays).
func testLastError(t *testing.T, m *meshServer, b *browser) {
	served := m.srv.Served().Version
	b.run(t, 20*time.Second, chromedp.Navigate(m.base+"/ui/"), waitJS(pages[0].ready, 15*time.Second))
	m.commit(t, map[string]string{"teams/broken.cue": "package mesh\n\nservices: web: port: \"eighty\"\n"}, "a broken commit")
	b.run(t, 20*time.Second, waitJS(`document.querySelectorAll('#error-list li').length >= 1`, 15*time.Second))
	items := eval[[]string](t, b, `Array.from(document.querySelectorAll('#error-list li')).map(li => li.textContent)`)
	for _, it := range items {
		if !strings.Contains(it, "teams/broken.cue:3:22: ") {
			t.Errorf("error without its position in the broken file: %q", it)
		}
	}
	if got := text(t, b, "#served-version"); got != served {
		t.Errorf("overview shows %s served after a broken commit, want %s", got, served)
	}
	if errs := b.takeErrors(); len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
}

type cell struct {
	Src     string `json:"src"`
	Dst     string `json:"dst"`
	Verdict string `json:"verdict"`
	L7      string `json:"l7"`
}

// testMatrix reads every cell of the matrix page and holds it against mesh.Authorize on the
// snapshot compiled here from repo-example (what mesh intention check answers), for every pair.
func testMatrix(t *testing.T, m *meshServer, b *browser) {
	files, err := compiler.ReadDir(filepath.Join("..", "repo-example"))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := compiler.Compile(context.Background(), files)
	if err != nil {
		t.Fatal(err)
	}
	b.run(t, 20*time.Second, chromedp.Navigate(m.base+"/ui/intentions"), waitJS(pages[3].ready, 15*time.Second))
	cells := eval[[]cell](t, b, `Array.from(document.querySelectorAll('#matrix td.cell')).map(c => ({src: c.dataset.src, dst: c.dataset.dst, verdict: c.dataset.verdict, l7: c.dataset.l7}))`)
	names := snap.ServiceNames()
	if len(cells) != len(names)*len(names) {
		t.Fatalf("matrix has %d cells, want %d", len(cells), len(names)*len(names))
	}
	seen := map[[2]string]bool{}
	allow, deny, l7 := 0, 0, 0
	for _, c := range cells {
		seen[[2]string{c.Src, c.Dst}] = true
		d := mesh.Authorize(snap, mesh.Request{Source: c.Src, Destination: c.Dst})
		if string(d.Verdict) != c.Verdict {
			t.Errorf("%s → %s: matrix shows %s, intention check says %s (%s)", c.Src, c.Dst, c.Verdict, d.Verdict, d.Reason)
		}
		wantL7 := d.Intention != nil && len(d.Intention.Permissions) > 0
		if (c.L7 == "1") != wantL7 {
			t.Errorf("%s → %s: L7 marker %s, want %v", c.Src, c.Dst, c.L7, wantL7)
		}
		switch {
		case wantL7:
			l7++
		case d.Allowed():
			allow++
		default:
			deny++
		}
	}
	if len(seen) != len(names)*len(names) || allow == 0 || deny == 0 || l7 == 0 {
		t.Fatalf("want every pair once and each kind of cell: %d pairs, %d allow, %d deny, %d L7", len(seen), allow, deny, l7)
	}

	// Keyboard: arrows move the focus between cells, Enter explains the focused one.
	b.run(t, 10*time.Second,
		chromedp.Focus(chromedp.CSS(`#matrix td[data-i="0"][data-j="0"]`)),
		chromedp.KeyEvent(kb.ArrowRight), chromedp.KeyEvent(kb.ArrowDown), chromedp.KeyEvent(kb.Enter),
		waitJS(`document.querySelector('#cell-detail h2') !== null`, 5*time.Second))
	focused := eval[cell](t, b, `(c => ({src: c.dataset.src, dst: c.dataset.dst, verdict: c.dataset.verdict}))(document.activeElement)`)
	detail := text(t, b, "#cell-detail")
	if focused.Src != names[1] || focused.Dst != names[1] {
		t.Errorf("after → ↓ the focus is on %s → %s, want %s → %s", focused.Src, focused.Dst, names[1], names[1])
	}
	d := mesh.Authorize(snap, mesh.Request{Source: names[1], Destination: names[1]})
	if !strings.Contains(detail, d.Reason) {
		t.Errorf("the detail of %s → %s does not give Authorize's reason %q: %q", names[1], names[1], d.Reason, detail)
	}
}

// testNack has a raw ADS client (real gRPC on loopback) reject its clusters, and waits for the
// proxies page to show that NACK's error text.
func testNack(t *testing.T, m *meshServer, b *browser) {
	cc, err := grpc.NewClient(m.xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-nack-1", Cluster: "api", UserAgentName: "envoy"}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	const why = "cluster local_app: rejected by the UI test (bad tls context)"
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: why}}); err != nil {
		t.Fatal(err)
	}
	b.run(t, 20*time.Second, chromedp.Navigate(m.base+"/ui/proxies"),
		waitJS(`(r => r && r.querySelector('td.nack') && r.querySelector('td.sync').textContent.includes('NACK'))(document.querySelector('tr[data-node="envoy-nack-1"]'))`, 15*time.Second))
	row := text(t, b, `tr[data-node="envoy-nack-1"]`)
	synced := text(t, b, `tr[data-node="web-grpc-1"] td.sync`)
	if !strings.Contains(row, why) || !strings.Contains(row, "NACK") {
		t.Errorf("the NACKing proxy's row does not show the NACK and its error: %q", row)
	}
	if !strings.Contains(synced, "SYNCED") {
		t.Errorf("the gRPC client that ACKed shows %q, want SYNCED", synced)
	}
	// Envoy sidecars take their inbound RBAC over ECDS: the table has its column.
	if head := text(t, b, "thead"); !strings.Contains(head, "ECDS") {
		t.Errorf("the proxies table has no ECDS column: %q", head)
	}
	if errs := b.takeErrors(); len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
}

// testLive keeps the overview open, pushes a commit and wants the new version on the page within
// 2 s, without a reload (a marker set on the page's window survives).
func testLive(t *testing.T, m *meshServer, b *browser) {
	old := m.srv.Served().Version
	b.run(t, 20*time.Second, chromedp.Navigate(m.base+"/ui/"),
		waitJS(`document.querySelector('#served-version code') && document.getElementById('live').textContent === 'connected'`, 15*time.Second),
		js(`window.uiTestMarker = 42`))
	shown := text(t, b, "#served-version")
	if shown != old {
		t.Fatalf("overview shows %q, the server serves %q", shown, old)
	}
	platform, err := os.ReadFile(filepath.Join(m.repo, "mesh", "teams", "platform.cue"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(platform), `meta: {tier: "tool"}`, `meta: {tier: "tools"}`, 1)
	if changed == string(platform) {
		t.Fatal("repo-example's platform.cue changed: the test's edit does not apply")
	}
	sha := m.commit(t, map[string]string{"teams/platform.cue": changed}, "admin is a tool among tools")
	pushed := time.Now()
	b.run(t, 10*time.Second, waitJS(`(c => c && c.title === '`+sha+`')(document.querySelector('#served-commit code'))`, 5*time.Second))
	took := time.Since(pushed)
	marker := eval[int](t, b, `window.uiTestMarker || 0`)
	shown = text(t, b, "#served-version")
	if took > 2*time.Second {
		t.Errorf("the new commit appeared after %v, want within 2s", took)
	}
	if marker != 42 {
		t.Errorf("the page was reloaded")
	}
	if shown == old || shown != m.srv.Served().Version {
		t.Errorf("overview shows version %q after the commit; the server serves %q (before: %q)", shown, m.srv.Served().Version, old)
	}
	t.Logf("the pushed commit appeared on the open overview after %v", took)
}

// ensureTwoVersions makes a second version when the history has only one.
func ensureTwoVersions(t *testing.T, m *meshServer) {
	if len(m.srv.Snapshots()) >= 2 {
		return
	}
	before := m.srv.Served().Version
	m.commit(t, map[string]string{"teams/zz.cue": "package mesh\n\nservices: admin: meta: owner: \"zz\"\n"}, "a second version")
	waitFor(t, 20*time.Second, "the second version", func() bool { return m.srv.Served().Version != before })
}

// testPin: without a token the UI refuses to pin (and nothing is pinned); with the token typed
// once into the UI, the pin goes through and the server serves the pinned version; unpin too.
func testPin(t *testing.T, m *meshServer, b *browser) {
	ensureTwoVersions(t, m)
	older := m.srv.Snapshots()[1].Version
	sel := `button.pin[data-version="` + older + `"]`
	b.run(t, 20*time.Second, chromedp.Navigate(m.base+"/ui/versions"),
		js(`sessionStorage.clear()`), chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)),
		waitJS(`document.getElementById('write-result').textContent !== ''`, 5*time.Second))
	result := text(t, b, "#write-result")
	if !strings.Contains(result, "refused") {
		t.Errorf("pin without a token: %q, want a refusal", result)
	}
	if st := m.srv.Status(); st.Pin != "" {
		t.Fatalf("pinned %s without a token", st.Pin)
	}

	b.run(t, 20*time.Second,
		chromedp.SendKeys(chromedp.CSS("#token-input"), testToken), chromedp.Click(chromedp.CSS("#token-save")),
		waitJS(`sessionStorage.getItem('mesh.token') !== null`, 5*time.Second),
		chromedp.Click(chromedp.CSS(sel)),
		waitJS(`document.getElementById('write-result').textContent.startsWith('✓')`, 10*time.Second),
		waitJS(`(r => r && r.querySelector('.state').textContent.includes('pinned'))(document.querySelector('tr[data-version="`+older+`"]'))`, 5*time.Second))
	result = text(t, b, "#write-result")
	if st := m.srv.Status(); st.Pin != older || st.Version != older || st.PinnedBy != "server token" {
		t.Fatalf("after pin in the UI (%q): pin %q by %q serving %q, want %s by the server token", result, st.Pin, st.PinnedBy, st.Version, older)
	}
	// Who pinned: the token's kind, never the token.
	if state := text(t, b, `tr[data-version="`+older+`"] .state`); !strings.Contains(state, "pinned by server token") || strings.Contains(state, testToken) {
		t.Errorf("the pinned version's state: %q, want who pinned it", state)
	}
	// The token is kept for the tab: a reload still writes.
	b.run(t, 20*time.Second, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("button.unpin")), chromedp.Click(chromedp.CSS("button.unpin")),
		waitJS(`document.getElementById('write-result').textContent.startsWith('✓')`, 10*time.Second))
	if st := m.srv.Status(); st.Pin != "" {
		t.Fatalf("after unpin in the UI: still pinned to %s", st.Pin)
	}
	// A wrong token is refused by the server.
	b.run(t, 20*time.Second, js(`sessionStorage.setItem('mesh.token', 'wrong')`), chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)),
		waitJS(`document.getElementById('write-result').textContent !== ''`, 5*time.Second))
	result = text(t, b, "#write-result")
	b.run(t, 5*time.Second, js(`sessionStorage.clear()`))
	if !strings.Contains(result, "401") || m.srv.Status().Pin != "" {
		t.Errorf("pin with a wrong token: %q (pin %q), want the server's 401", result, m.srv.Status().Pin)
	}
	b.takeErrors() // the 401 is logged by the browser as a failed load, as it should be
}

// testDiff compares the two newest versions in the UI and wants mesh review's summary.
func testDiff(t *testing.T, m *meshServer, b *browser) {
	ensureTwoVersions(t, m)
	b.run(t, 20*time.Second, chromedp.Navigate(m.base+"/ui/versions"),
		waitJS(`document.querySelectorAll('#diff-head option').length >= 2`, 10*time.Second),
		chromedp.Click(chromedp.CSS(`#diff-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#diff-summary")))
	summary, md := text(t, b, "#diff-summary"), text(t, b, "#diff-markdown")
	if summary == "" || !strings.Contains(md, "admin") {
		t.Errorf("diff of the two newest versions: summary %q, markdown %q; want the change of service admin", summary, md)
	}
	if errs := b.takeErrors(); len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
}

// testScreenshots captures the overview, topology and matrix; with MESH_SCREENSHOTS=DIR (make
// screenshots) it writes them there as PNGs.
func testScreenshots(t *testing.T, m *meshServer, b *browser) {
	dir := os.Getenv("MESH_SCREENSHOTS")
	for _, s := range []struct{ name, path, ready string }{
		{"overview", "/ui/", pages[0].ready},
		{"topology", "/ui/topology", pages[1].ready},
		{"matrix", "/ui/intentions", pages[3].ready},
	} {
		b.run(t, 20*time.Second, chromedp.Navigate(m.base+s.path), waitJS(s.ready, 15*time.Second), chromedp.Sleep(300*time.Millisecond))
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(png) < 1000 || string(png[1:4]) != "PNG" {
			t.Fatalf("%s: not a PNG screenshot (%d bytes)", s.name, len(png))
		}
		if dir != "" {
			if err := os.WriteFile(filepath.Join(dir, s.name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
