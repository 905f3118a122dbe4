package ui_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/catalog"
	"github.com/meshgit/mesh/review"
	"github.com/meshgit/mesh/ui"
)

func TestCommitURL(t *testing.T) {
	for repo, want := range map[string]string{
		"https://github.com/shop/mesh.git":         "https://github.com/shop/mesh/commit/",
		"https://github.com/shop/mesh":             "https://github.com/shop/mesh/commit/",
		"git@github.com:shop/mesh.git":             "https://github.com/shop/mesh/commit/",
		"https://gitlab.com/group/sub/mesh.git":    "https://gitlab.com/group/sub/mesh/-/commit/",
		"ssh://git@codeberg.org/shop/mesh.git":     "https://codeberg.org/shop/mesh/commit/",
		"https://bitbucket.org/shop/mesh":          "https://bitbucket.org/shop/mesh/commits/",
		"https://git.example.com/shop/mesh.git":    "",
		"/srv/git/mesh":                            "",
		".":                                        "",
		"https://github.com/":                      "",
		"https://user:secret@github.com/shop/mesh": "https://github.com/shop/mesh/commit/",
	} {
		if got := ui.CommitURL(repo); got != want {
			t.Errorf("CommitURL(%q) = %q, want %q", repo, got, want)
		}
	}
}

func getJSON(t *testing.T, url string, wantCode int, v any) http.Header {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantCode {
		t.Fatalf("GET %s: %d %s, want %d", url, resp.StatusCode, b, wantCode)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v\n%s", url, err, b)
		}
	}
	return resp.Header
}

// TestJSONViews holds the UI's JSON routes, on a real server of repo-example, against the one
// evaluator and the review package.
func TestJSONViews(t *testing.T) {
	m := startMesh(t, filepath.Join("..", "repo-example"))
	snap := m.srv.Served()

	var topo ui.Topology
	h := getJSON(t, m.base+"/ui/api/snapshots/served/topology", 200, &topo)
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("no CSP restricting the UI to the server: %q", csp)
	}
	if len(topo.Nodes) != len(snap.Services) || topo.Version != snap.Version {
		t.Fatalf("topology has %d nodes of version %s, want %d of %s", len(topo.Nodes), topo.Version, len(snap.Services), snap.Version)
	}
	declared, kinds := 0, map[string]int{}
	for _, svc := range snap.Services {
		declared += len(svc.Upstreams)
	}
	for _, e := range topo.Edges {
		d := mesh.Authorize(snap, mesh.Request{Source: e.Source, Destination: e.Target})
		if e.Verdict.Verdict != d.Verdict || e.Reason != d.Reason {
			t.Errorf("edge %s → %s: %s (%s), Authorize says %s (%s)", e.Source, e.Target, e.Verdict.Verdict, e.Reason, d.Verdict, d.Reason)
		}
		// Drawn as the verdict, or for L7 rules as "l7" when they allow some request, else "deny".
		want := string(d.Verdict)
		if e.L7 {
			want = map[bool]string{true: "l7", false: "deny"}[mesh.AllowsSome(snap, e.Source, e.Target, 0).Differs]
		}
		if e.Reach != want {
			t.Errorf("edge %s → %s drawn %s, want %s", e.Source, e.Target, e.Reach, want)
		}
		kinds[e.Reach]++
	}
	if len(topo.Edges) != declared || kinds["allow"] == 0 || kinds["l7"] == 0 {
		t.Errorf("%d edges (%v), want the %d declared upstreams with allow and L7 among them", len(topo.Edges), kinds, declared)
	}

	// A window of the matrix: its place and size, every cell Authorize's.
	var mx ui.Matrix
	getJSON(t, m.base+"/ui/api/snapshots/"+snap.Version+"/matrix?row=2&col=7&rows=3&cols=5", 200, &mx)
	names := snap.ServiceNames()
	if mx.Sources != len(names) || mx.Row != 2 || mx.Col != 7 || len(mx.Rows) != 3 || len(mx.Cols) != len(names)-7 {
		t.Fatalf("window at 2,7 of 3×5: got %d sources, at %d,%d, %d×%d", mx.Sources, mx.Row, mx.Col, len(mx.Rows), len(mx.Cols))
	}
	for i, r := range mx.Rows {
		for j, c := range mx.Cols {
			if r.ID != names[2+i] || c.ID != names[7+j] {
				t.Fatalf("cell %d,%d is %s → %s, want %s → %s", i, j, r.ID, c.ID, names[2+i], names[7+j])
			}
			if d := mesh.Authorize(snap, mesh.Request{Source: r.ID, Destination: c.ID}); mx.Cells[i][j].Verdict != d.Verdict {
				t.Errorf("%s → %s: %s, Authorize says %s", r.ID, c.ID, mx.Cells[i][j].Verdict, d.Verdict)
			}
		}
	}
	getJSON(t, m.base+"/ui/api/snapshots/served/matrix?rows=100000&cols=100000&src=a&dst=zzz", 200, &mx)
	if len(mx.Cells) > 100 || mx.Destinations != 0 || len(mx.Cols) != 0 {
		t.Errorf("window not bounded or filter not applied: %d rows, %d destinations", len(mx.Cells), mx.Destinations)
	}

	var sv ui.ServiceView
	getJSON(t, m.base+"/ui/api/snapshots/served/services/api", 200, &sv)
	if sv.Service.Name != "api" || sv.Chain == nil || len(sv.Downstreams) == 0 || !strings.Contains(sv.Position, ".cue:") {
		t.Errorf("service api: %+v", sv)
	}
	for _, l := range sv.Downstreams {
		if d := mesh.Authorize(snap, mesh.Request{Source: l.Service, Destination: "api"}); l.Verdict.Verdict != d.Verdict {
			t.Errorf("downstream %s: %s, Authorize says %s", l.Service, l.Verdict.Verdict, d.Verdict)
		}
	}

	// The diff is review.Review's report.
	var diff struct {
		Report   review.Report `json:"report"`
		Markdown string        `json:"markdown"`
	}
	getJSON(t, m.base+"/ui/api/diff?base="+snap.Version+"&head=served", 200, &diff)
	if want := review.Review(snap, snap).Summary; diff.Report.Summary != want || diff.Markdown == "" {
		t.Errorf("diff of a version with itself: %q, want %q", diff.Report.Summary, want)
	}

	var info ui.Info
	getJSON(t, m.base+"/ui/api/info", 200, &info)
	if info.CommitURL != "" || !info.Catalog {
		t.Errorf("info for a local repository (every server has a catalog): %+v", info)
	}
	testInstancesJSON(t, m)

	for path, code := range map[string]int{
		"/ui/api/snapshots/0000000000000000/topology": 404,
		"/ui/api/snapshots/served/services/nope":      404,
		"/ui/api/diff?base=" + snap.Version:           400,
		"/ui/api/diff?base=nope&head=served":          404,
		"/ui/nope":                                    404,
		"/ui/static/cytoscape.LICENSE":                200,
		"/ui/static/cytoscape.min.js":                 200,
		"/ui/services/web":                            200,
		"/ui/api/services/nope/instances":             404,
	} {
		resp, err := http.Get(m.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, code)
		}
	}
	// /ui redirects to /ui/ (http.Get follows it).
	resp, err := http.Get(m.base + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.Path != "/ui/" || resp.StatusCode != 200 {
		t.Errorf("GET /ui ended at %s with %d", resp.Request.URL.Path, resp.StatusCode)
	}

	// An open event stream sends the served version at once, and does not hold the server's
	// shutdown.
	resp, err = http.Get(m.base + "/ui/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewReader(resp.Body)
	if ev, data := readEvent(t, events); ev != "served" || !strings.Contains(data, snap.Version) {
		t.Errorf("first event: %s %s", ev, data)
	}
	// Then the catalog's summary: catalog.Summarize's, as GET /v1/catalog/summary answers it.
	var sum, api catalog.Summary
	if ev, data := readEvent(t, events); ev != "catalog" || json.Unmarshal([]byte(data), &sum) != nil {
		t.Errorf("second event: %s %s, want the catalog's summary", ev, data)
	}
	getJSON(t, m.base+"/v1/catalog/summary", 200, &api)
	sum.Index, api.Index = 0, 0 // the servers' checks of Git's endpoints may have moved it since
	if !reflect.DeepEqual(sum, api) || len(sum.Services) != 1 || !sum.Services[0].Undeclared {
		t.Errorf("the catalog event says %+v; /v1/catalog/summary %+v; want one undeclared service", sum, api)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := m.srv.Shutdown(ctx); err != nil || time.Since(start) > 3*time.Second {
		t.Errorf("shutdown with an open event stream: %v after %v", err, time.Since(start))
	}
}

// readEvent reads one server-sent event: its name and data.
func readEvent(t *testing.T, r *bufio.Reader) (name, data string) {
	t.Helper()
	for range 100 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "" && name != "":
			return name, data
		}
	}
	t.Fatal("no event in 100 lines")
	return "", ""
}

// testInstancesJSON: /ui/api/services/{name}/instances of a declared service lists Git's
// endpoints (with the servers' health, or "elsewhere" for another datacenter's) and the catalog's
// instances with the catalog's status; an undeclared service's, its instance, flagged.
func testInstancesJSON(t *testing.T, m *meshServer) {
	m.put(t, "/v1/agent/service/register", registerUndeclared)
	var v ui.InstancesView
	getJSON(t, m.base+"/ui/api/services/"+undeclaredService+"/instances", 200, &v)
	if v.Declared || len(v.Instances) != 1 || v.Instances[0].Status != catalog.StatusPassing || len(v.Instances[0].Checks) != 1 ||
		v.Instances[0].Checks[0].Status != catalog.StatusPassing || len(v.Endpoints) != 0 {
		t.Errorf("instances of the undeclared service: %+v", v)
	}
	snap := m.srv.Served()
	getJSON(t, m.base+"/ui/api/services/api/instances", 200, &v)
	eps := snap.Services["api"].Endpoints
	if !v.Declared || v.Version != snap.Version || len(v.Instances) != 0 || len(v.Endpoints) != len(eps) {
		t.Fatalf("instances of api: %+v, want its %d Git endpoints", v, len(eps))
	}
	for i, e := range v.Endpoints {
		want := []string{ui.HealthElsewhere}
		if eps[i].Datacenter == snap.Mesh.Datacenter {
			want = []string{ui.HealthPending, catalog.StatusPassing, catalog.StatusWarning, catalog.StatusCritical}
		}
		if e.Address != eps[i].Address || e.Port != eps[i].Port || !slices.Contains(want, e.Health) {
			t.Errorf("Git endpoint %d of api: %+v, want %s:%d with health in %v", i, e, eps[i].Address, eps[i].Port, want)
		}
	}
}
