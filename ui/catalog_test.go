package ui_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/meshgit/mesh/catalog"
)

// The instances TestBrowser registers through the catalog API: one passing and one critical
// instance of api (declared in Git), and one passing instance of a service Git does not declare.
const (
	undeclaredService = "legacy-billing"
	registerOK        = `{"ID": "api-ok", "Name": "api", "Address": "127.0.0.1", "Port": 18080,
		"Check": {"CheckID": "api-ok-ttl", "Name": "heartbeat", "TTL": "10m", "Status": "passing"}}`
	registerDown = `{"ID": "api-down", "Name": "api", "Address": "127.0.0.1", "Port": 18081,
		"Check": {"CheckID": "api-down-ttl", "Name": "heartbeat", "TTL": "10m"}}`
	registerUndeclared = `{"ID": "legacy-1", "Name": "legacy-billing", "Address": "127.0.0.1", "Port": 18082,
		"Check": {"CheckID": "legacy-1-ttl", "Name": "heartbeat", "TTL": "10m", "Status": "passing"}}`
)

// put sends a PUT with the server token to the server's API and wants 200.
func (m *meshServer) put(t testing.TB, path, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, m.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Consul-Token", testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s: %d %s", path, resp.StatusCode, b)
	}
}

// registerInstances registers the test's three instances on the server's own agent.
func registerInstances(t testing.TB, m *meshServer) {
	t.Helper()
	for _, body := range []string{registerOK, registerDown, registerUndeclared} {
		m.put(t, "/v1/agent/service/register", body)
	}
	waitFor(t, 10*time.Second, "the three instances in the catalog", func() bool {
		st := m.srv.Catalog()
		return len(st.Instances("api")) == 2 && len(st.Instances(undeclaredService)) == 1
	})
}

// catalogCounts counts the instances of the server's catalog by health, from the catalog itself
// (Instance.Status, the health EDS is rendered from).
func catalogCounts(m *meshServer) map[string]int {
	st := m.srv.Catalog()
	out := map[string]int{catalog.StatusPassing: 0, catalog.StatusWarning: 0, catalog.StatusCritical: 0}
	for _, name := range st.ServiceNames() {
		for _, in := range st.Instances(name) {
			out[in.Status(st.Node(in.Node))]++
		}
	}
	return out
}

// overviewCounts reads the catalog health counts shown on the open overview.
func overviewCounts(t testing.TB, b *browser) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, h := range []string{catalog.StatusPassing, catalog.StatusWarning, catalog.StatusCritical} {
		s := textOf(t, b, "#cat-"+h)
		// Shown as a symbol, the word and the count: "✓ passing 2 instances".
		if !strings.Contains(s, h) {
			t.Errorf("the %s count is shown without its word: %q", h, s)
		}
		n, err := strconv.Atoi(eval[string](t, b, `document.getElementById('cat-`+h+`').dataset.count`))
		if err != nil {
			t.Fatalf("count of %s: %v", h, err)
		}
		if !strings.Contains(s, " "+strconv.Itoa(n)+" instance") {
			t.Errorf("the %s count %d is not in its text %q", h, n, s)
		}
		got[h] = n
	}
	return got
}

func sameCounts(a, b map[string]int) bool {
	return a["passing"] == b["passing"] && a["warning"] == b["warning"] && a["critical"] == b["critical"]
}

// testCatalog: the overview's health counts are the catalog's (and /v1/catalog/summary's), an
// undeclared service is listed flagged, and a check's change shows on the open overview without
// a reload; the service page lists each instance with its health as a word and its checks, and
// the page of an undeclared service says so.
func testCatalog(t *testing.T, m *meshServer, b *browser) {
	want := catalogCounts(m)
	if want["passing"] != 2 || want["critical"] != 1 || want["warning"] != 0 {
		t.Fatalf("the catalog counts %v; the test registered 2 passing and 1 critical instances", want)
	}
	var sum catalog.Summary
	getJSON(t, m.base+"/v1/catalog/summary", 200, &sum)
	api := map[string]int{}
	for _, s := range sum.Services {
		api["passing"] += s.Passing
		api["warning"] += s.Warning
		api["critical"] += s.Critical
	}

	b.run(t, 20*time.Second, chromedp.Navigate(m.base+"/ui/"), waitJS(pages[0].ready, 15*time.Second), js(`window.uiTestMarker = 7`))
	if got := overviewCounts(t, b); !sameCounts(got, want) || !sameCounts(got, api) {
		t.Errorf("overview counts %v; the catalog has %v, /v1/catalog/summary %v", got, want, api)
	}
	flagged := textOf(t, b, `#undeclared-list li[data-service="`+undeclaredService+`"]`)
	if !strings.Contains(flagged, "undeclared") {
		t.Errorf("the undeclared service is listed without the flag: %q", flagged)
	}
	if n := eval[int](t, b, `document.querySelectorAll('#undeclared-list li').length`); n != 1 {
		t.Errorf("%d services listed as undeclared, want 1 (%s)", n, undeclaredService)
	}

	testServiceInstances(t, m, b)
	testUndeclaredPage(t, m, b)

	// Live: the critical instance's check passes while the overview is open.
	b.run(t, 20*time.Second, chromedp.Navigate(m.base+"/ui/"), waitJS(`document.getElementById('cat-critical') && document.getElementById('cat-critical').dataset.count === '1'`, 15*time.Second),
		js(`window.uiTestMarker = 7`))
	m.put(t, "/v1/agent/check/pass/api-down-ttl", "")
	changed := time.Now()
	b.run(t, 10*time.Second, waitJS(`document.getElementById('cat-critical').dataset.count === '0'`, 5*time.Second))
	took := time.Since(changed)
	if took > 2*time.Second {
		t.Errorf("the check's change appeared on the overview after %v, want within 2s", took)
	}
	if marker := eval[int](t, b, `window.uiTestMarker || 0`); marker != 7 {
		t.Errorf("the overview was reloaded")
	}
	if got, want := overviewCounts(t, b), catalogCounts(m); !sameCounts(got, want) || want["passing"] != 3 {
		t.Errorf("after the check passed: overview %v, catalog %v (want 3 passing)", got, want)
	}
	t.Logf("a check's change appeared on the open overview after %v", took)
	m.put(t, "/v1/agent/check/fail/api-down-ttl", "") // back to what the other subtests expect
	if errs := b.takeErrors(); len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
}

// testServiceInstances: api's page lists its two catalog instances, each with its health as a
// word (and a data-health attribute equal to the catalog's), and every check's status.
func testServiceInstances(t *testing.T, m *meshServer, b *browser) {
	b.run(t, 20*time.Second, chromedp.Navigate(m.base+"/ui/services/api"),
		waitJS(`document.querySelectorAll('#svc-catalog tr[data-instance]').length === 2 && document.querySelectorAll('#svc-inst tr[data-endpoint]').length > 0`, 15*time.Second))
	st := m.srv.Catalog()
	for _, in := range st.Instances("api") {
		want := in.Status(st.Node(in.Node))
		row := `#svc-catalog tr[data-instance="` + in.ID + `"]`
		health := textOf(t, b, row+" td.health")
		if attr := eval[string](t, b, `document.querySelector('`+row+`').dataset.health`); attr != want || !strings.Contains(health, want) {
			t.Errorf("instance %s: shown %q (data-health %q), the catalog says %s", in.ID, health, attr, want)
		}
		checks := textOf(t, b, row+` li[data-check="`+in.Checks[0].ID+`"]`)
		if !strings.Contains(checks, in.Checks[0].Status) || !strings.Contains(checks, "heartbeat") {
			t.Errorf("instance %s: its check is shown as %q, want its name and %s", in.ID, checks, in.Checks[0].Status)
		}
	}
	if f := eval[bool](t, b, `document.getElementById('svc-undeclared').hidden`); !f {
		t.Errorf("api, declared in Git, is flagged undeclared")
	}
	// Git's endpoints: those of another datacenter are the servers' there.
	for _, ep := range m.srv.Served().Services["api"].Endpoints {
		if ep.Datacenter == "dc1" {
			continue
		}
		key := net.JoinHostPort(ep.Address, strconv.Itoa(ep.Port))
		if h := textOf(t, b, `#svc-inst tr[data-endpoint="`+key+`"] td.health`); !strings.Contains(h, "elsewhere") {
			t.Errorf("Git endpoint %s in %s: health %q, want elsewhere", key, ep.Datacenter, h)
		}
	}
}

// testUndeclaredPage: the page of a service only the catalog knows lists its instance and says
// that Git does not declare it.
func testUndeclaredPage(t *testing.T, m *meshServer, b *browser) {
	b.takeErrors()
	b.run(t, 20*time.Second, chromedp.Navigate(m.base+"/ui/services/"+undeclaredService),
		waitJS(`document.querySelector('#svc-catalog tr[data-instance="legacy-1"]') && !document.getElementById('svc-undeclared').hidden`, 15*time.Second))
	flag := textOf(t, b, "#svc-undeclared")
	row := textOf(t, b, `#svc-catalog tr[data-instance="legacy-1"]`)
	if !strings.Contains(flag, "undeclared") || !strings.Contains(flag, "routed to nobody") {
		t.Errorf("the undeclared service's page does not flag it: %q", flag)
	}
	if !strings.Contains(row, "passing") || !strings.Contains(row, "127.0.0.1:18082") {
		t.Errorf("the undeclared service's instance is shown as %q", row)
	}
	if shown := eval[string](t, b, `document.getElementById('error').hidden ? '' : document.getElementById('error').textContent`); shown != "" {
		t.Errorf("page error: %q", shown)
	}
	if errs := b.takeErrors(); len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
}

// testGitEndpointHealth commits a service whose two Git endpoints are on loopback, one answering
// its health check and one refusing connections, and wants the service page to show the health
// the servers' checks recorded: passing and critical, as words.
func testGitEndpointHealth(t *testing.T, m *meshServer, b *browser) {
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer healthy.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().(*net.TCPAddr).Port
	l.Close()
	up := healthy.Listener.Addr().(*net.TCPAddr).Port
	before := m.srv.Served().Version
	m.commit(t, map[string]string{"teams/ledger.cue": `package mesh

services: ledger: {
	protocol: "http"
	port:     8080
	owners: ["@shop/platform"]
	endpoints: [
		{address: "127.0.0.1", port: ` + strconv.Itoa(up) + `, datacenter: "dc1"},
		{address: "127.0.0.1", port: ` + strconv.Itoa(refused) + `, datacenter: "dc1"},
	]
	healthCheck: {http: "/healthz", interval: "1s", timeout: "500ms"}
}
`}, "the ledger, on loopback")
	waitFor(t, 20*time.Second, "the ledger to be served", func() bool {
		s := m.srv.Served()
		return s.Version != before && s.Services["ledger"] != nil
	})
	upKey, downKey := "127.0.0.1:"+strconv.Itoa(up), "127.0.0.1:"+strconv.Itoa(refused)
	// The page is open before the first checks are recorded: it follows the catalog live.
	b.run(t, 30*time.Second, chromedp.Navigate(m.base+"/ui/services/ledger"),
		waitJS(`(r => r && r.dataset.health === 'passing')(document.querySelector('#svc-inst tr[data-endpoint="`+upKey+`"]')) &&
			(r => r && r.dataset.health === 'critical')(document.querySelector('#svc-inst tr[data-endpoint="`+downKey+`"]'))`, 20*time.Second))
	st := m.srv.Catalog()
	for key, want := range map[string]string{upKey: "passing", downKey: "critical"} {
		if got := st.StaticHealth(catalog.StaticKey("ledger", "127.0.0.1", mustPort(t, key))); got != want {
			t.Errorf("the catalog records %s for %s, want %s", got, key, want)
		}
		if h := textOf(t, b, `#svc-inst tr[data-endpoint="`+key+`"] td.health`); !strings.Contains(h, want) {
			t.Errorf("Git endpoint %s: shown %q, want the word %s", key, h, want)
		}
	}
	if errs := b.takeErrors(); len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
}

// textOf returns the text of the first element matching sel, read in one evaluation (the pages
// re-render their tables on catalog events: a node looked up first may be gone when read).
func textOf(t testing.TB, b *browser, sel string) string {
	t.Helper()
	q, _ := json.Marshal(sel)
	return eval[string](t, b, `(e => e ? e.textContent : 'no element matches '+`+string(q)+`)(document.querySelector(`+string(q)+`))`)
}

func mustPort(t testing.TB, hostport string) int {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
