package reconciler

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/catalog"
)

func consulClient(t testing.TB, addr, token string) *consul.Client {
	t.Helper()
	c, err := consul.NewClient(&consul.Config{Address: addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startCatalogServer(t *testing.T) *Server {
	t.Helper()
	repo := newTestRepo(t)
	repo.commit(meshFiles(0), "v0", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	cfg.CatalogTick = 50 * time.Millisecond
	s := startServer(t, cfg)
	waitFor(t, 10*time.Second, "a served snapshot", func() bool { return s.Served() != nil && s.IsLeader() })
	return s
}

// TestConsulClientAgainstServer runs what a Consul user's code does, with the real
// github.com/hashicorp/consul/api client: register with a TTL check, a blocking query that
// returns when the check passes, updates, the catalog and deregistration.
func TestConsulClientAgainstServer(t *testing.T) {
	s := startCatalogServer(t)
	c := consulClient(t, s.HTTPAddr(), testToken)

	reg := &consul.AgentServiceRegistration{ID: "api-1", Name: "api", Address: "127.0.0.1", Port: 9191,
		Tags: []string{"v1"}, Meta: map[string]string{"version": "v1"},
		Check: &consul.AgentServiceCheck{TTL: "30s"}}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register: %v", err)
	}
	entries, meta, err := c.Health().Service("api", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Service.ID != "api-1" || entries[0].Service.Port != 9191 {
		t.Fatalf("health entries = %+v", entries)
	}
	if got := entries[0].Checks.AggregatedStatus(); got != consul.HealthCritical {
		t.Fatalf("a new TTL check is %s, want critical", got)
	}
	passing, _, err := c.Health().Service("api", "", true, nil)
	if err != nil || len(passing) != 0 {
		t.Fatalf("?passing = %d entries, %v; want none", len(passing), err)
	}

	// A blocking query on the passing instances returns when the TTL check passes.
	type result struct {
		entries []*consul.ServiceEntry
		meta    *consul.QueryMeta
		err     error
		took    time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		e, m, err := c.Health().Service("api", "", true, &consul.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 20 * time.Second})
		done <- result{e, m, err, time.Since(start)}
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("the blocking query returned before any change: %+v", r)
	default:
	}
	if err := c.Agent().UpdateTTL("service:api-1", "all good", consul.HealthPassing); err != nil {
		t.Fatalf("update TTL: %v", err)
	}
	r := <-done
	if r.err != nil || len(r.entries) != 1 || r.meta.LastIndex <= meta.LastIndex || r.took > 10*time.Second {
		t.Fatalf("blocking query: %d entries, index %v (was %d), took %v, err %v", len(r.entries), r.meta, meta.LastIndex, r.took, r.err)
	}
	checks, err := c.Agent().Checks()
	if err != nil || checks["service:api-1"] == nil || checks["service:api-1"].Status != consul.HealthPassing || checks["service:api-1"].Output != "all good" {
		t.Fatalf("agent checks = %+v, %v", checks, err)
	}
	if err := c.Agent().WarnTTL("service:api-1", "slow"); err != nil {
		t.Fatal(err)
	}
	entries, _, _ = c.Health().Service("api", "", false, nil)
	if got := entries[0].Checks.AggregatedStatus(); got != consul.HealthWarning {
		t.Fatalf("after WarnTTL the instance is %s", got)
	}

	services, _, err := c.Catalog().Services(nil)
	if err != nil || len(services["api"]) != 1 || services["api"][0] != "v1" {
		t.Fatalf("catalog services = %v, %v", services, err)
	}
	cs, _, err := c.Catalog().Service("api", "", nil)
	if err != nil || len(cs) != 1 || cs[0].ServiceAddress != "127.0.0.1" || cs[0].ServiceMeta["version"] != "v1" || cs[0].Node != s.NodeID() {
		t.Fatalf("catalog service = %+v, %v", cs, err)
	}
	agentSvcs, err := c.Agent().Services()
	if err != nil || agentSvcs["api-1"] == nil || agentSvcs["api-1"].Service != "api" {
		t.Fatalf("agent services = %v, %v", agentSvcs, err)
	}

	if err := c.Agent().ServiceDeregister("api-1"); err != nil {
		t.Fatal(err)
	}
	entries, _, _ = c.Health().Service("api", "", false, nil)
	if len(entries) != 0 {
		t.Fatalf("after deregistration: %d entries", len(entries))
	}
}

// TestCatalogTokens: a service token writes its own service only, an operator token any, and no
// token nothing.
func TestCatalogTokens(t *testing.T) {
	s := startCatalogServer(t)
	waitFor(t, 10*time.Second, "the CA", func() bool { return s.CA().State() != nil })
	webTok, _, err := s.CA().CreateToken(context.Background(), ca.ScopeService, "web")
	if err != nil {
		t.Fatal(err)
	}
	web := consulClient(t, s.HTTPAddr(), webTok)
	err = web.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-x", Name: "api", Port: 1})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a web token registering api: %v, want 403", err)
	}
	if err := web.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 8000}); err != nil {
		t.Fatalf("a web token registering web: %v", err)
	}
	none := consulClient(t, s.HTTPAddr(), "")
	err = none.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "web-2", Name: "web", Port: 1})
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "X-Consul-Token") {
		t.Fatalf("no token: %v, want a 403 saying how to send one", err)
	}
	if err := none.Agent().ServiceDeregister("web-1"); err == nil {
		t.Fatal("deregistered without a token")
	}
	op := consulClient(t, s.HTTPAddr(), testToken)
	if err := op.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-1", Name: "api", Address: "127.0.0.1", Port: 9000}); err != nil {
		t.Fatalf("operator registering api: %v", err)
	}
	if err := web.Agent().ServiceDeregister("api-1"); err == nil {
		t.Fatal("a web token deregistered api")
	}
	st := s.Catalog()
	if len(st.Instances("api")) != 1 || len(st.Instances("web")) != 1 {
		t.Fatalf("catalog: api %d, web %d instances", len(st.Instances("api")), len(st.Instances("web")))
	}
}

// TestCatalogBadBodies: malformed registrations get a 400 naming the field and change nothing.
func TestCatalogBadBodies(t *testing.T) {
	s := startCatalogServer(t)
	before := s.Catalog().Index()
	cases := []struct{ body, want string }{
		{`{"Name":"api","Port":-1}`, "Port"},
		{`{"Name":"api","Port":80,"Check":{"Interval":"10s"}}`, "unknown check type"},
		{`{"Name":"api","Port":80,"Check":{"HTTP":"http://127.0.0.1:1/","Interval":"ten seconds"}}`, "Check.Interval"},
		{`{"Name":"api","Port":80,"Check":{"TTL":"10s","Status":"sick"}}`, "Check.Status"},
		{`{"Name":"api","Port":80,"Checks":[{"TTL":"1s"},{"ScriptArgs":["/bin/true"],"Interval":"1s"}]}`, "Checks[1]"},
		{`{"Name":"API","Port":80}`, "Name"},
		{`{"Name":"api","Port":80,"Weights":{"Passing":0,"Warning":1}}`, "Weights.Passing"},
		{`{"Name":"api","Port":"80"}`, "Port"},
		{`{"Name":"api","Nonsense":1}`, "Nonsense"},
		{`{"Name":"api","Address":"not an ip"}`, "Address"},
		{strings.Repeat("x", 1<<20), "body"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(http.MethodPut, "http://"+s.HTTPAddr()+"/v1/agent/service/register", strings.NewReader(tc.body))
		req.Header.Set("X-Consul-Token", testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tc.want) {
			t.Errorf("body %.60q: %d %q, want 400 naming %q", tc.body, resp.StatusCode, b, tc.want)
		}
	}
	if got := s.Catalog().Index(); got != before {
		t.Fatalf("catalog index moved from %d to %d", before, got)
	}
}

// TestCatalogUndeclaredAndRestart: an instance of a service Git does not declare is listed and
// flagged, not routed; a restarted server has the catalog from disk.
func TestCatalogUndeclaredAndRestart(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(meshFiles(0), "v0", false)
	dir := t.TempDir()
	cfg := testConfig(t, repo.bare, nodeOpts{dir: dir})
	s := startServer(t, cfg)
	waitFor(t, 10*time.Second, "a served snapshot", func() bool { return s.Served() != nil && s.IsLeader() })
	c := consulClient(t, s.HTTPAddr(), testToken)
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "ghost-1", Name: "ghost", Address: "127.0.0.1", Port: 7000}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.HTTPAddr() + "/v1/catalog/summary")
	if err != nil {
		t.Fatal(err)
	}
	var sum catalog.Summary
	json.NewDecoder(resp.Body).Decode(&sum)
	resp.Body.Close()
	if len(sum.Services) != 1 || sum.Services[0].Name != "ghost" || !sum.Services[0].Undeclared || sum.Services[0].Passing != 1 {
		t.Fatalf("summary = %+v", sum)
	}
	if ov := overlay(s.Served(), s.Catalog()); ov.Services["ghost"] != nil {
		t.Fatal("an undeclared service is routed")
	}
	index := s.Catalog().Index()
	s.Close(context.Background())

	cfg.HTTPAddr = "127.0.0.1:0"
	s2 := startServer(t, cfg)
	waitFor(t, 10*time.Second, "the catalog back from disk", func() bool { return s2.Catalog().Instance(s.NodeID(), "ghost-1") != nil })
	if got := s2.Catalog().Index(); got < index {
		t.Fatalf("restored catalog index %d < %d", got, index)
	}
}

// TestTTLExpires: a TTL check not updated within its TTL turns critical with "TTL expired".
func TestTTLExpires(t *testing.T) {
	s := startCatalogServer(t)
	c := consulClient(t, s.HTTPAddr(), testToken)
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-1", Name: "api", Address: "127.0.0.1", Port: 1,
		Check: &consul.AgentServiceCheck{TTL: "1500ms", Status: consul.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	if in := s.Catalog().Instance(s.NodeID(), "api-1"); in == nil || in.Status(nil) != catalog.StatusPassing {
		t.Fatalf("registered passing: %+v", in)
	}
	waitFor(t, 5*time.Second, "the TTL to expire", func() bool {
		in := s.Catalog().Instance(s.NodeID(), "api-1")
		return in != nil && in.Status(nil) == catalog.StatusCritical
	})
	checks, _ := c.Agent().Checks()
	if checks["service:api-1"].Output != "TTL expired" {
		t.Fatalf("output %q", checks["service:api-1"].Output)
	}
}

// TestCatalogServedFromDisk: a restarted server serves the catalog's instances it served, with
// their health, as soon as it is open: before Raft has replayed anything.
func TestCatalogServedFromDisk(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(healthMesh, "v0", false)
	dir := t.TempDir()
	cfg := testConfig(t, repo.bare, nodeOpts{dir: dir})
	x, _ := attachXDS(t, &cfg)
	s := startServer(t, cfg)
	waitFor(t, 10*time.Second, "a served snapshot", func() bool { return s.Served() != nil && s.IsLeader() })
	c := consulClient(t, s.HTTPAddr(), testToken)
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-1", Name: "api", Address: "127.0.0.1", Port: 9001,
		Check: &consul.AgentServiceCheck{TTL: "1h", Status: consul.HealthWarning}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the instance in xDS", func() bool {
		snap := x.Snapshot()
		return snap != nil && len(snap.Services["api"].Endpoints) == 1
	})
	waitFor(t, 10*time.Second, "the catalog cache on disk", func() bool { // written at most once a second
		st := s.pub.loadCatalog()
		return st != nil && st.Instance(s.NodeID(), "api-1") != nil
	})
	s.Close(context.Background())

	cfg2 := testConfig(t, repo.bare, nodeOpts{dir: dir})
	x2, _ := attachXDS(t, &cfg2)
	startServer(t, cfg2)
	snap := x2.Snapshot()
	if snap == nil || len(snap.Services["api"].Endpoints) != 1 || snap.Services["api"].Endpoints[0].Health != "warning" {
		t.Fatalf("right after the restart xDS serves api's endpoints %+v, want the warning instance", snap.Services["api"])
	}
}

// TestCatalogBatchEntry: commands committed together as one Raft entry each get their own
// result (a bad one refused, the others applied), and a server restarted on the same data
// directory replays the entry to the same catalog.
func TestCatalogBatchEntry(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(meshFiles(0), "v0", false)
	cfg := testConfig(t, repo.bare, nodeOpts{})
	s := startServer(t, cfg)
	waitFor(t, 10*time.Second, "a leader", func() bool { return s.IsLeader() })
	node := &catalog.Node{Name: "host-1", Address: "127.0.0.1"}
	inst := func(id string) *catalog.Instance {
		return &catalog.Instance{Node: "host-1", ID: id, Service: "api", Address: "127.0.0.1", Port: 9000, Weights: catalog.Weights{Passing: 1, Warning: 1},
			Checks: []catalog.Check{{ID: "ttl:" + id, Name: "ttl", Type: catalog.CheckTTL, Status: catalog.StatusCritical, CheckDefinition: catalog.CheckDefinition{TTL: time.Hour}}}}
	}
	errs, err := s.applyCatalogBatch([]catalog.Command{
		{Op: catalog.OpRegister, Node: node, Instance: inst("api-1")},
		{Op: catalog.OpCheck, NodeName: "host-1", ID: "ttl:api-1", Status: "sideways"},
		{Op: catalog.OpRegister, Node: node, Instance: inst("api-2")},
		{Op: catalog.OpCheck, NodeName: "host-1", ID: "ttl:api-2", Status: catalog.StatusPassing},
		{Op: catalog.OpCheck, NodeName: "host-1", ID: "ttl:nope", Status: catalog.StatusPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 5 || errs[0] != nil || errs[1] == nil || errs[2] != nil || errs[3] != nil || errs[4] == nil {
		t.Fatalf("results %v: want the bad status and the unknown check refused, the rest applied", errs)
	}
	check := func(st *catalog.State) {
		t.Helper()
		a1, a2 := st.Instance("host-1", "api-1"), st.Instance("host-1", "api-2")
		if a1 == nil || a2 == nil || a1.Checks[0].Status != catalog.StatusCritical || a2.Checks[0].Status != catalog.StatusPassing {
			t.Fatalf("catalog after the batch: %+v %+v", a1, a2)
		}
	}
	check(s.Catalog())
	before, _ := json.Marshal(s.Catalog())
	s.Close(context.Background())
	s = startServer(t, cfg)
	waitFor(t, 10*time.Second, "the log replayed", func() bool { return s.Catalog().Instance("host-1", "api-2") != nil })
	check(s.Catalog())
	if after, _ := json.Marshal(s.Catalog()); string(after) != string(before) {
		t.Fatalf("replayed catalog\n%s\nwant\n%s", after, before)
	}
}
