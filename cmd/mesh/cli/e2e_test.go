//go:build unix

package cli_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/testutil"
	"github.com/meshgit/mesh/reconciler"
)

// TestFaultSuite runs a cluster of three real mesh serve processes under a stream of Git
// commits, and kills (SIGKILL), pauses (SIGSTOP) and wipes its leader (rejoining with --join,
// and restarted as it was, without --join, before it is rejoined). After each scenario it
// checks that no committed version was lost, that no server served a version older than one
// it had served or one that was never the head, and that every server agrees on the cluster,
// its CA roots and its snapshot history.
//
// `make test` runs a short form; `make e2e` (MESH_E2E=1) the full one: more pushes, a pause
// longer than the election timeout many times over, each scenario three times.
func TestFaultSuite(t *testing.T) {
	full := os.Getenv("MESH_E2E") != ""
	pushes, pause, rounds := 4, 3*time.Second, 1
	if full {
		pushes, pause, rounds = 15, 15*time.Second, 3
	}
	c := newFaultCluster(t)
	c.push(1)
	c.converge()
	c.check("start")
	for r := range rounds {
		for _, sc := range []struct {
			name string
			run  func(i int)
		}{
			{"kill", func(i int) {
				c.procs[i].signal(syscall.SIGKILL)
				c.procs[i].exited(10 * time.Second)
				c.push(pushes)
				c.start(i, "")
			}},
			{"pause", func(i int) {
				c.procs[i].signal(syscall.SIGSTOP)
				c.push(pushes)
				time.Sleep(pause)
				c.procs[i].signal(syscall.SIGCONT)
			}},
			{"wipe", func(i int) {
				c.procs[i].signal(syscall.SIGKILL)
				c.procs[i].exited(10 * time.Second)
				if err := os.RemoveAll(c.args[i].data); err != nil {
					t.Fatal(err)
				}
				c.push(pushes)
				c.start(i, c.args[(i+1)%3].http)
			}},
			{"lost", func(i int) {
				// Wiped and restarted without --join, it bootstraps a cluster of its own: the
				// others must not absorb it, and it must say so and serve nothing.
				c.procs[i].signal(syscall.SIGKILL)
				c.procs[i].exited(10 * time.Second)
				if err := os.RemoveAll(c.args[i].data); err != nil {
					t.Fatal(err)
				}
				c.start(i, "")
				c.push(pushes)
				c.waitStatus(i, "to refuse to serve for another cluster", func(st reconciler.Status) bool {
					return strings.Contains(st.NotServing, "another cluster")
				})
				c.procs[i].signal(syscall.SIGTERM)
				c.procs[i].exited(20 * time.Second)
				if err := os.RemoveAll(c.args[i].data); err != nil {
					t.Fatal(err)
				}
				c.start(i, c.args[(i+1)%3].http)
			}},
		} {
			name := fmt.Sprintf("%s#%d", sc.name, r+1)
			i := c.leader()
			t.Logf("%s: the leader is server %d", name, i)
			sc.run(i)
			c.push(pushes)
			c.converge()
			c.check(name)
		}
	}
	c.stopMonitor()
	for _, e := range c.violations() {
		t.Error(e)
	}
}

// faultCluster is three mesh serve processes, a repository they follow, and a monitor that
// records what every server serves.
type faultCluster struct {
	t      *testing.T
	commit func(int) string
	procs  [3]*meshProc
	args   [3]serveArgs

	cluster string // the cluster's id

	mu     sync.Mutex
	order  map[string]int // commit → push number
	last   string         // the last commit pushed
	pushed int
	served [3]int // the newest push number each server was seen serving as a member
	// servedAlone is the same while a server runs a cluster of its own ("lost").
	servedAlone [3]int
	seen        map[string]bool // every commit some server served
	errs        []string        // violations
	stopMon     chan struct{}
	monDone     chan struct{}
}

func newFaultCluster(t *testing.T) *faultCluster {
	repo, commit := gitRepo(t)
	// The repository's first commit is push 0: a one-server cluster elects itself at once, and
	// may serve it before the first push.
	first := testutil.Git(t, repo, "rev-parse", "HEAD")
	c := &faultCluster{t: t, commit: commit, order: map[string]int{first: 0}, last: first, seen: map[string]bool{},
		stopMon: make(chan struct{}), monDone: make(chan struct{})}
	token := t.TempDir() + "/token"
	if err := os.WriteFile(token, []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range c.args {
		c.args[i] = newServeArgs(t, repo)
		c.args[i].token = token
		c.args[i].extra = []string{"--history", "1000"}
	}
	c.start(0, "")
	var st reconciler.Status
	if err := getJSON(c.args[0].http, "/v1/status", &st); err != nil || st.ClusterID == "" {
		t.Fatalf("the first server has no cluster id: %+v, %v", st, err)
	}
	c.cluster = st.ClusterID
	for i := 1; i < 3; i++ {
		c.start(i, c.args[0].http)
	}
	go c.monitor()
	t.Cleanup(c.stopMonitor)
	return c
}

// start (re)starts server i, joining through join if set, and waits for its HTTP API.
func (c *faultCluster) start(i int, join string) {
	c.t.Helper()
	a := c.args[i]
	a.join = join
	c.procs[i] = startMesh(c.t, a.args()...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st reconciler.Status
		if getJSON(a.http, "/v1/status", &st) == nil {
			return
		}
		if !c.procs[i].running() || time.Now().After(deadline) {
			c.t.Fatalf("server %d did not start:\n%s", i, c.procs[i].out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// push commits n new versions, 150ms apart.
func (c *faultCluster) push(n int) {
	for range n {
		// The monitor waits while a commit is made, so that it never sees an unrecorded one.
		c.mu.Lock()
		c.pushed++
		sha := c.commit(c.pushed)
		c.order[sha], c.last = c.pushed, sha
		c.mu.Unlock()
		time.Sleep(150 * time.Millisecond)
	}
}

// waitStatus waits until server i's status satisfies cond.
func (c *faultCluster) waitStatus(i int, what string, cond func(reconciler.Status) bool) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st reconciler.Status
		if getJSON(c.args[i].http, "/v1/status", &st) == nil && cond(st) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("server %d did not come %s: %+v", i, what, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leader returns the index of the server that leads, waiting for one.
func (c *faultCluster) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i, a := range c.args {
			var st reconciler.Status
			if getJSON(a.http, "/v1/status", &st) == nil && st.RaftState == "Leader" {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatal("no leader")
	return -1
}

// monitor polls every server's status until stopped, recording violations.
func (c *faultCluster) monitor() {
	defer close(c.monDone)
	for {
		select {
		case <-c.stopMon:
			return
		case <-time.After(30 * time.Millisecond):
		}
		for i, a := range c.args {
			var st reconciler.Status
			if getJSON(a.http, "/v1/status", &st) != nil || st.Commit == "" {
				continue
			}
			c.observe(i, st.Commit, st.ClusterID == c.cluster)
		}
	}
}

// observe records that server i serves commit. What a server serves while it is in a cluster of
// its own (wiped and restarted without --join, before its old cluster contacts it) counts for
// its own order, not as committed in the cluster.
func (c *faultCluster) observe(i int, commit string, member bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.order[commit]
	if !ok {
		c.errs = append(c.errs, fmt.Sprintf("server %d serves commit %s, which was never pushed", i, commit))
		return
	}
	served := &c.served[i]
	if !member {
		// Its own cluster follows Git on its own and may run ahead of the real one, whose
		// state it serves once it has been wiped and has joined again.
		served = &c.servedAlone[i]
	}
	if k < *served {
		c.errs = append(c.errs, fmt.Sprintf("server %d served push %d after push %d (member of the cluster: %v)", i, k, *served, member))
	}
	*served = max(*served, k)
	if member {
		c.seen[commit] = true
	}
}

func (c *faultCluster) stopMonitor() {
	select {
	case <-c.stopMon:
	default:
		close(c.stopMon)
	}
	<-c.monDone
}

func (c *faultCluster) violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.errs)
}

// converge waits until every server serves the last commit pushed.
func (c *faultCluster) converge() {
	c.t.Helper()
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := 0
		for _, a := range c.args {
			var st reconciler.Status
			if getJSON(a.http, "/v1/status", &st) == nil && st.Commit == last && st.NotServing == "" {
				n++
			}
		}
		if n == 3 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the servers do not all serve the last commit %s", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// check compares the servers' cluster ids, CA roots and histories, and looks for every commit
// served so far in them.
func (c *faultCluster) check(scenario string) {
	c.t.Helper()
	type view struct {
		cluster, roots string
		history        []string
	}
	var views [3]view
	for i, a := range c.args {
		var st reconciler.Status
		var roots struct {
			BundlePEM string `json:"bundlePEM"`
		}
		var snaps struct{ Snapshots []reconciler.SnapshotInfo }
		// The leader makes the CA once it serves a snapshot: give it a moment.
		rootsErr := getJSON(a.http, "/v1/ca/roots", &roots)
		for deadline := time.Now().Add(15 * time.Second); rootsErr != nil && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			rootsErr = getJSON(a.http, "/v1/ca/roots", &roots)
		}
		for _, err := range []error{getJSON(a.http, "/v1/status", &st), rootsErr, getJSON(a.http, "/v1/snapshots", &snaps)} {
			if err != nil {
				c.t.Fatalf("%s: server %d: %v", scenario, i, err)
			}
		}
		views[i] = view{cluster: st.ClusterID, roots: roots.BundlePEM}
		for _, s := range snaps.Snapshots {
			views[i].history = append(views[i].history, s.Commit)
		}
	}
	for i := range 3 {
		if views[i].cluster != c.cluster {
			c.t.Errorf("%s: server %d is in cluster %q, want %q", scenario, i, views[i].cluster, c.cluster)
		}
		if i == 0 {
			continue
		}
		if views[i].roots != views[0].roots || views[i].roots == "" {
			c.t.Errorf("%s: server %d has other CA roots than server 0", scenario, i)
		}
		if !slices.Equal(views[i].history, views[0].history) {
			c.t.Errorf("%s: server %d history\n%s\nserver 0 history\n%s", scenario, i, strings.Join(views[i].history, "\n"), strings.Join(views[0].history, "\n"))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The history keeps --history entries: what is older than its oldest entry was trimmed.
	oldest := c.pushed + 1
	for _, h := range views[0].history {
		if k, ok := c.order[h]; ok {
			oldest = min(oldest, k)
		}
	}
	for commit := range c.seen {
		if c.order[commit] >= oldest && !slices.Contains(views[0].history, commit) {
			c.t.Errorf("%s: commit %s (push %d) was served but is not in the history: lost", scenario, commit, c.order[commit])
		}
	}
}
