//go:build unix

package cli_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshgit/mesh/internal/testutil"
	"github.com/meshgit/mesh/reconciler"
)

// noCrash fails the test if out shows a Go panic.
func noCrash(t *testing.T, out string) {
	t.Helper()
	for _, s := range []string{"panic:", "goroutine ", "SIGSEGV", "fatal error"} {
		if strings.Contains(out, s) {
			t.Fatalf("mesh serve crashed (%q):\n%s", s, out)
		}
	}
}

// mesh serve whose Raft address cannot be used exits with status 2 and one clear line.
func TestServeRaftAddressErrors(t *testing.T) {
	repo, _ := gitRepo(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for name, c := range map[string]struct {
		raft, advertise, want string
	}{
		"port taken":             {taken.Addr().String(), "", "serve: raft listen on " + taken.Addr().String()},
		"advertise without port": {"127.0.0.1:0", "127.0.0.1", `serve: raft advertise address "127.0.0.1"`},
		"unspecified advertise":  {"127.0.0.1:0", "0.0.0.0:8300", `serve: raft advertise address "0.0.0.0:8300": not an address`},
	} {
		t.Run(name, func(t *testing.T) {
			a := newServeArgs(t, repo)
			a.raft = c.raft
			if c.advertise != "" {
				a.extra = []string{"--raft-advertise", c.advertise}
			}
			p := startMesh(t, a.args()...)
			code, ok := p.exited(30 * time.Second)
			if !ok {
				t.Fatal("mesh serve did not exit")
			}
			out := p.out.String()
			noCrash(t, out)
			if code != 2 || !strings.HasPrefix(lastLine(out), c.want) {
				t.Errorf("exit %d, last line %q; want 2 and %q", code, lastLine(out), c.want)
			}
		})
	}
}

// A second mesh serve on a data directory in use fails at once, naming the pid that holds it.
func TestServeDataDirInUse(t *testing.T) {
	repo, _ := gitRepo(t)
	a := newServeArgs(t, repo)
	first := startMesh(t, a.args()...)
	if !first.waitOutput("mesh server started", 30*time.Second) {
		t.Fatal("the first server did not start")
	}
	b := newServeArgs(t, repo)
	b.data = a.data
	second := startMesh(t, b.args()...)
	code, ok := second.exited(10 * time.Second)
	if !ok {
		t.Fatal("the second mesh serve on the same data directory did not exit")
	}
	want := fmt.Sprintf("data directory %s is in use by another mesh serve (pid %d)", a.data, first.pid())
	if out := second.out.String(); code != 2 || !strings.Contains(lastLine(out), want) {
		t.Errorf("exit %d, output:\n%s\nwant 2 and %q", code, out, want)
	}
	if !first.running() {
		t.Error("the first server stopped")
	}
}

// Raft's store locked by some other process (not a mesh serve holding DATA/LOCK) makes mesh
// serve fail after a bounded wait, not hang.
func TestServeRaftStoreLocked(t *testing.T) {
	repo, _ := gitRepo(t)
	a := newServeArgs(t, repo)
	p := startMesh(t, a.args()...)
	if !p.waitOutput("mesh server started", 30*time.Second) {
		t.Fatal("mesh serve did not start")
	}
	p.signal(syscall.SIGTERM)
	if _, ok := p.exited(20 * time.Second); !ok {
		t.Fatal("mesh serve did not stop")
	}
	f, err := os.OpenFile(filepath.Join(a.data, "raft.db"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	p = startMesh(t, a.args()...)
	code, ok := p.exited(20 * time.Second)
	if !ok {
		t.Fatal("mesh serve hangs on a locked raft.db")
	}
	if out := p.out.String(); code != 2 || !strings.Contains(lastLine(out), "raft.db: locked by another process") {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
}

// Every blocking start-up step honours SIGINT and SIGTERM: here, joining a cluster that does not
// answer.
func TestServeStartupHonoursSignals(t *testing.T) {
	repo, _ := gitRepo(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		a := newServeArgs(t, repo)
		a.join = testutil.FreeAddr(t)
		p := startMesh(t, a.args()...)
		if !p.waitOutput("join failed, retrying", 30*time.Second) {
			t.Fatal("mesh serve does not try to join")
		}
		start := time.Now()
		p.signal(sig)
		code, ok := p.exited(10 * time.Second)
		if !ok {
			t.Fatalf("%v: mesh serve did not exit", sig)
		}
		noCrash(t, p.out.String())
		t.Logf("%v: exit %d after %v", sig, code, time.Since(start))
	}
}

// A truncated raft.db is refused with its name and the recovery step, never a crash.
func TestServeTruncatedRaftDB(t *testing.T) {
	repo, _ := gitRepo(t)
	a := newServeArgs(t, repo)
	p := startMesh(t, a.args()...)
	if !p.waitOutput("serving snapshot", 30*time.Second) {
		t.Fatal("mesh serve serves nothing")
	}
	p.signal(syscall.SIGTERM)
	if _, ok := p.exited(20 * time.Second); !ok {
		t.Fatal("mesh serve did not stop")
	}
	db := filepath.Join(a.data, "raft.db")
	if err := os.Truncate(db, 4096+100); err != nil { // the first meta page and a bit
		t.Fatal(err)
	}
	refusesDamaged(t, a, db)
}

// SIGKILL at any moment of the very first start leaves a data directory that starts and serves.
func TestServeKilledDuringFirstStart(t *testing.T) {
	repo, _ := gitRepo(t)
	for i, delay := range []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		a := newServeArgs(t, repo)
		p := startMesh(t, a.args()...)
		time.Sleep(delay)
		p.signal(syscall.SIGKILL)
		p.exited(10 * time.Second)
		p = startMesh(t, a.args()...)
		served := false
		for deadline := time.Now().Add(30 * time.Second); !served && time.Now().Before(deadline) && p.running(); time.Sleep(50 * time.Millisecond) {
			var st reconciler.Status
			served = getJSON(a.http, "/v1/status", &st) == nil && st.Version != "" && st.RaftState == "Leader"
		}
		if !served {
			t.Fatalf("kill %d after %v: the next start serves nothing:\n%s", i, delay, p.out.String())
		}
		noCrash(t, p.out.String())
		p.signal(syscall.SIGTERM)
		p.exited(20 * time.Second)
	}
}

// A bit-flipped Raft snapshot is refused with its file's name and the recovery step, never a
// crash.
func TestServeBitFlippedSnapshot(t *testing.T) {
	repo, _ := gitRepo(t)
	a := newServeArgs(t, repo)
	p := startMesh(t, a.args()...)
	if !p.waitOutput("serving snapshot", 30*time.Second) {
		t.Fatal("mesh serve serves nothing")
	}
	p.signal(syscall.SIGTERM)
	if _, ok := p.exited(20 * time.Second); !ok {
		t.Fatal("mesh serve did not stop")
	}
	// A snapshot as Raft writes it (its checksum in meta.json), then one bit flipped.
	store, err := raft.NewFileSnapshotStore(a.data, 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := store.Create(raft.SnapshotVersionMax, 5, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink.Write([]byte(`{"format":1,"history":[],"servedIndex":0}`))
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(a.data, "snapshots", sink.ID(), "state.bin")
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	b[3] ^= 0x01
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	refusesDamaged(t, a, state)
}

// refusesDamaged starts mesh serve on a's data directory, in which file is damaged: it must exit
// 2 without a crash, its last line naming the file and the recovery step (--join).
func refusesDamaged(t *testing.T, a serveArgs, file string) {
	t.Helper()
	p := startMesh(t, a.args()...)
	code, ok := p.exited(20 * time.Second)
	if !ok {
		t.Fatal("mesh serve did not exit")
	}
	out := p.out.String()
	noCrash(t, out)
	if line := lastLine(out); code != 2 || !strings.Contains(line, file) || !strings.Contains(line, "--join") {
		t.Errorf("exit %d, last line %q; want 2, the file's name and the recovery step", code, line)
	}
}
