package reconciler

import (
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/meshgit/mesh/catalog"
)

// TestCatalogThreeServers: an instance registered through a follower is served by every server;
// the leader is killed and the catalog survives, the dead server's own instances turning
// critical within 3 sync intervals; the dead server restarts with the catalog from disk and the
// instances registered on it (its agent's data directory).
func TestCatalogThreeServers(t *testing.T) {
	repo := newTestRepo(t)
	repo.commit(meshFiles(0), "v0", false)
	const sync = 200 * time.Millisecond
	var opts [3]nodeOpts
	var nodes [3]*Server
	cfgOf := func(i int) Config {
		cfg := testConfig(t, repo.bare, opts[i])
		cfg.CatalogSync, cfg.CatalogTick = sync, 50*time.Millisecond
		return cfg
	}
	for i := range nodes {
		opts[i].dir = t.TempDir()
		if i > 0 {
			opts[i].join = nodes[0].HTTPAddr()
		}
		nodes[i] = startServer(t, cfgOf(i))
		opts[i].httpAddr, opts[i].raftAddr = nodes[i].HTTPAddr(), nodes[i].RaftAddr()
	}
	li := leaderIndex(t, nodes[:])
	fi := (li + 1) % 3
	waitFor(t, 10*time.Second, "the follower to know the leader", func() bool { return nodes[fi].leaderHTTP() != "" })

	viaFollower := consulClient(t, nodes[fi].HTTPAddr(), testToken)
	if err := viaFollower.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-f", Name: "api", Address: "127.0.0.1", Port: 9001,
		Check: &consul.AgentServiceCheck{TTL: "1h", Status: consul.HealthPassing}}); err != nil {
		t.Fatalf("register through a follower: %v", err)
	}
	viaLeader := consulClient(t, nodes[li].HTTPAddr(), testToken)
	if err := viaLeader.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-l", Name: "api", Address: "127.0.0.1", Port: 9002}); err != nil {
		t.Fatalf("register on the leader: %v", err)
	}
	for _, n := range nodes {
		waitFor(t, 5*time.Second, n.NodeID()+" to hold both instances", func() bool { return len(n.Catalog().Instances("api")) == 2 })
	}
	if in := nodes[li].Catalog().Instance(nodes[fi].NodeID(), "api-f"); in == nil || in.Status(nodes[li].Catalog().Node(in.Node)) != catalog.StatusPassing {
		t.Fatalf("the follower's instance on the leader: %+v", in)
	}

	deadID := nodes[li].NodeID()
	nodes[li].kill()
	killed := time.Now()
	survivors := []*Server{nodes[(li+1)%3], nodes[(li+2)%3]}
	nl := leaderIndex(t, survivors)
	waitFor(t, 10*time.Second, "the dead server's instance to turn critical", func() bool {
		st := survivors[nl].Catalog()
		in := st.Instance(deadID, "api-l")
		return in != nil && in.Status(st.Node(deadID)) == catalog.StatusCritical
	})
	t.Logf("the dead server's instance turned critical %v after the kill (sync interval %v, plus an election)", time.Since(killed).Round(time.Millisecond), sync)
	for _, n := range survivors {
		st := n.Catalog()
		if in := st.Instance(nodes[fi].NodeID(), "api-f"); in == nil || in.Status(st.Node(in.Node)) != catalog.StatusPassing {
			t.Fatalf("%s lost the live instance or its health: %+v", n.NodeID(), in)
		}
	}

	opts[li].join, opts[li].httpAddr = "", "127.0.0.1:0"
	nodes[li] = startServer(t, cfgOf(li))
	waitFor(t, 10*time.Second, "the restarted server's catalog", func() bool {
		return nodes[li].Catalog().Instance(nodes[fi].NodeID(), "api-f") != nil
	})
	// Its node syncs again; its agent is authoritative for it and kept what was registered on
	// it in its data directory (as a Consul agent does): that instance is passing again, and
	// stays through the following syncs.
	restored := func() bool {
		st := survivors[nl].Catalog()
		in := st.Instance(deadID, "api-l")
		return st.Node(deadID) != nil && st.Node(deadID).Health == catalog.StatusPassing && in != nil && in.Status(st.Node(deadID)) == catalog.StatusPassing
	}
	waitFor(t, 10*time.Second, "the restarted node to be passing again, with the instance registered on it", restored)
	time.Sleep(3 * sync)
	if !restored() {
		t.Fatal("the restarted server's syncs removed the instance registered on it")
	}
}
