package reconciler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
)

func testSnapshot(t testing.TB, name, commit string) (*mesh.Snapshot, []byte) {
	t.Helper()
	s := &mesh.Snapshot{Commit: commit, Mesh: mesh.Config{Name: name}, Services: map[string]*mesh.Service{}}
	if err := s.Seal(); err != nil {
		t.Fatal(err)
	}
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return s, compress(b)
}

func cmd(t testing.TB, typ cmdType, h any, blob []byte) []byte {
	t.Helper()
	b, err := encodeCommand(typ, h, blob)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// applyAll feeds entries to a new FSM and returns it with the responses.
func applyAll(entries [][]byte, keep int) (*fsm, []any) {
	f := newFSM(keep, discardLogger())
	var out []any
	for i, e := range entries {
		out = append(out, f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: e}))
	}
	return f, out
}

func persist(t testing.TB, f *fsm) []byte {
	t.Helper()
	snap, _ := f.Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

type memSink struct{ bytes.Buffer }

func (*memSink) ID() string    { return "mem" }
func (*memSink) Cancel() error { return nil }
func (*memSink) Close() error  { return nil }

func TestFSMDeterministicAndRestorable(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var entries [][]byte
	var versions []string
	for i := range 25 {
		commit := string(rune('a'+i%26)) + "0000000000000000000000000000000000000000"[:39]
		s, blob := testSnapshot(t, "mesh"+string(rune('a'+i)), commit)
		versions = append(versions, s.Version)
		entries = append(entries, cmd(t, cmdSnapshot, snapshotCmd{Version: s.Version, Commit: commit, Time: t0.Add(time.Duration(i) * time.Second)}, blob))
		if i == 3 {
			entries = append(entries, cmd(t, cmdPin, pinCmd{Version: versions[1], Time: t0}, nil))
		}
	}
	entries = append(entries,
		cmd(t, cmdFailure, Failure{Commit: "bad", Time: t0, Errors: []PosError{{Pos: mesh.Pos{File: "a.cue", Line: 1, Col: 2}, Msg: "boom"}}}, nil),
		cmd(t, cmdServer, serverCmd{ID: "n1", HTTP: "127.0.0.1:1"}, nil),
		[]byte{9, 1, 0},                    // unknown format
		[]byte{cmdFormat, 99, 2, '{', '}'}, // unknown type
		cmd(t, cmdPin, pinCmd{Version: "nope"}, nil),
	)
	a, ra := applyAll(entries, 20)
	b, _ := applyAll(entries, 20)
	pa, pb := persist(t, a), persist(t, b)
	if !bytes.Equal(pa, pb) {
		t.Fatal("two FSMs fed the same log persist different states")
	}
	n := len(ra)
	for i, want := range []error{ErrBadCommand, ErrBadCommand, ErrUnknownVersion} {
		if err, _ := ra[n-3+i].(error); !errors.Is(err, want) {
			t.Errorf("entry %d: %v, want %v", n-3+i, ra[n-3+i], want)
		}
	}
	st := a.state()
	// The pinned entry, which fell out of the window, and the 19 newest.
	if len(st.history) != 20 || st.history[0].Version != versions[1] || st.headEntry().Version != versions[24] {
		t.Errorf("history: %d entries, first %s, head %s", len(st.history), st.history[0].Version, st.headEntry().Version)
	}
	if st.served.Version != versions[1] || st.pin != versions[1] || st.lastError == nil {
		t.Errorf("served %s pin %s lastError %v", st.served.Version, st.pin, st.lastError)
	}

	c := newFSM(20, discardLogger())
	if err := c.Restore(io.NopCloser(bytes.NewReader(pa))); err != nil {
		t.Fatal(err)
	}
	if pc := persist(t, c); !bytes.Equal(pc, pa) {
		t.Error("restore then persist changes the state")
	}
	if c.state().served.Version != versions[1] || c.state().head.Version != versions[24] {
		t.Error("restored FSM serves the wrong snapshot")
	}

	// Unpin serves the head again and lets the window trim the old pinned entry.
	d, _ := applyAll(append(entries, cmd(t, cmdUnpin, pinCmd{Time: t0}, nil)), 20)
	if st := d.state(); st.served.Version != versions[24] || len(st.history) != 20 {
		t.Errorf("after unpin: served %s, %d entries", st.served.Version, len(st.history))
	}
}

func TestFSMRejectsMismatchedSnapshot(t *testing.T) {
	s, blob := testSnapshot(t, "x", "c1")
	for _, h := range []snapshotCmd{{Version: "0000000000000000", Commit: "c1"}, {Version: s.Version, Commit: "other"}} {
		_, r := applyAll([][]byte{cmd(t, cmdSnapshot, h, blob)}, 20)
		if err, _ := r[0].(error); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%+v: %v, want ErrBadCommand", h, r[0])
		}
	}
	_, r := applyAll([][]byte{cmd(t, cmdSnapshot, snapshotCmd{Version: s.Version, Commit: "c1"}, []byte("not gzip"))}, 20)
	if r[0] == nil {
		t.Error("garbage snapshot accepted")
	}
}

// FuzzFSMApply: no entry, however malformed, panics the FSM or changes state when refused.
func FuzzFSMApply(f *testing.F) {
	s, blob := testSnapshot(f, "x", "c1")
	head := cmd(f, cmdSnapshot, snapshotCmd{Version: s.Version, Commit: "c1"}, blob)
	f.Add(head)
	f.Add(cmd(f, cmdPin, pinCmd{Version: s.Version}, nil))
	f.Add([]byte{cmdFormat, byte(cmdFailure), 2, '{', '}'})
	next, _ := testSnapshot(f, "y", "c2")
	typ, c, delta, err := snapshotEntry(s, next)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cmd(f, typ, c, delta))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Applied to an empty FSM, and to one with a head that deltas apply to.
		for _, first := range [][]byte{nil, head} {
			fs := newFSM(20, discardLogger())
			if first != nil {
				if r := fs.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: first}); r != nil {
					t.Fatal(r)
				}
			}
			before := fs.state()
			if r := fs.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data}); r != nil && fs.state() != before {
				t.Fatal("a refused entry changed the state")
			}
		}
	})
}

// TestFSMLocalSnapshot: the server that replicates a snapshot applies it from memory, any other
// decodes it, and both end up serving the same snapshot; a local snapshot registered for other
// bytes is not taken.
func TestFSMLocalSnapshot(t *testing.T) {
	snap, err := compiler.CompileDir(context.Background(), filepath.Join("..", "repo-example"))
	if err != nil {
		t.Fatal(err)
	}
	snap.Commit = "c1"
	data, err := snap.Encode()
	if err != nil {
		t.Fatal(err)
	}
	blob := compress(data)
	entry := cmd(t, cmdSnapshot, snapshotCmd{Version: snap.Version, Commit: "c1"}, blob)

	leader := newFSM(20, discardLogger())
	leader.local.Store(sha256.Sum256(blob), snap)
	if r := leader.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: entry}); r != nil {
		t.Fatal(r)
	}
	follower, r := applyAll([][]byte{entry}, 20)
	if r[0] != nil {
		t.Fatal(r[0])
	}
	if leader.state().served != snap {
		t.Error("the leader decoded the snapshot it replicated")
	}
	got, want := follower.state().served, leader.state().served
	if got == want {
		t.Fatal("the follower shares the leader's snapshot")
	}
	a, _ := got.Canonical()
	b, _ := want.Canonical()
	if !bytes.Equal(a, b) || got.Version != want.Version || got.Commit != want.Commit || !reflect.DeepEqual(got.Positions, want.Positions) {
		t.Error("leader and follower serve different snapshots")
	}
	if !bytes.Equal(persist(t, leader), persist(t, follower)) {
		t.Error("leader and follower persist different states")
	}

	// Registered for other bytes: decoded, not taken.
	other := newFSM(20, discardLogger())
	other.local.Store(sha256.Sum256([]byte("other bytes")), &mesh.Snapshot{Version: snap.Version, Commit: "c1"})
	if r := other.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: entry}); r != nil {
		t.Fatal(r)
	}
	if s := other.state().served; s == nil || len(s.Services) != len(snap.Services) {
		t.Error("a snapshot registered for other bytes was taken")
	}
}

// A source failure (no commit) is shown but keeps the last commit; a commit's failure moves it;
// a snapshot clears the error. The retry fields survive a Raft snapshot.
func TestFSMSourceFailureKeepsLastCommit(t *testing.T) {
	_, blob := testSnapshot(t, "a", "c1")
	snap, _ := testSnapshot(t, "a", "c1")
	retry := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f, out := applyAll([][]byte{
		cmd(t, cmdSnapshot, snapshotCmd{Version: snap.Version, Commit: "c1"}, blob),
		cmd(t, cmdFailure, Failure{Step: StepResolve, Errors: []PosError{{Msg: "no ref"}}, RetryAt: retry, Attempts: 3}, nil),
	}, 5)
	for _, r := range out {
		if r != nil {
			t.Fatal(r)
		}
	}
	st := f.state()
	if st.lastCommit != "c1" || st.lastError == nil || st.lastError.Step != StepResolve || !st.lastError.RetryAt.Equal(retry) {
		t.Fatalf("lastCommit %q lastError %+v", st.lastCommit, st.lastError)
	}
	g := newFSM(5, discardLogger())
	if err := g.Restore(io.NopCloser(bytes.NewReader(persist(t, f)))); err != nil {
		t.Fatal(err)
	}
	if got := g.state().lastError; got == nil || !reflect.DeepEqual(*got, *st.lastError) {
		t.Errorf("restored lastError %+v, want %+v", got, st.lastError)
	}
	f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: cmd(t, cmdFailure, Failure{Commit: "c2", Step: StepVerify, Errors: []PosError{{Msg: "unsigned"}}}, nil)})
	if st := f.state(); st.lastCommit != "c2" || st.lastError.Commit != "c2" {
		t.Errorf("after a commit's failure: lastCommit %q", st.lastCommit)
	}
}

// compileFiles compiles files as versionOf does and returns the snapshot with commit set.
func compileFiles(t testing.TB, files map[string]string, commit string) *mesh.Snapshot {
	t.Helper()
	var list []compiler.File
	for n, data := range files {
		if data != "" && strings.HasPrefix(n, "mesh/") {
			list = append(list, compiler.File{Name: strings.TrimPrefix(n, "mesh/"), Data: []byte(data)})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	s, err := compiler.Compile(context.Background(), list)
	if err != nil {
		t.Fatalf("compile fixture: %v", err)
	}
	s.Commit = commit
	return s
}

// TestFSMSnapshotDeltas replicates snapshots as the leader does (the first whole, the next as
// deltas against the head): a follower that applies the deltas serves and persists exactly what
// the leader does; a delta for another head is refused everywhere and changes nothing; pins
// work across delta-made entries; and a server restored from a Raft snapshot, as one catching
// up from it, or from the Raft snapshot of the previous version (whole snapshots, the same
// format), applies the deltas that follow.
func TestFSMSnapshotDeltas(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	var snaps []*mesh.Snapshot
	for i := range 5 {
		files := meshFiles(i % 4) // the fifth has the content of the first: a new commit only
		if i == 2 {
			files["mesh/mesh.cue"] = strings.Replace(files["mesh/mesh.cue"], `"deny"`, `"allow"`, 1) // mesh-wide
		}
		snaps = append(snaps, compileFiles(t, files, fmt.Sprintf("%040d", i+1)))
	}
	leader := newFSM(20, discardLogger())
	var entries [][]byte
	var head *mesh.Snapshot
	for i, s := range snaps {
		typ, c, blob, err := snapshotEntry(head, s)
		if err != nil {
			t.Fatal(err)
		}
		if want := cmdSnapshotDelta; i > 0 && typ != want {
			t.Fatalf("snapshot %d replicated as type %d, want a delta", i, typ)
		}
		c.Time = t0.Add(time.Duration(i) * time.Second)
		e := cmd(t, typ, c, blob)
		if i > 0 && len(e) > 2048 {
			t.Errorf("delta %d is %d bytes", i, len(e))
		}
		entries = append(entries, e)
		leader.local.Store(sha256.Sum256(blob), s)
		if i == 3 {
			// Sent again after a leader change: its base is no longer the head.
			entries = append(entries, e)
			entries = append(entries, cmd(t, cmdPin, pinCmd{Version: snaps[1].Version, Time: t0}, nil))
		}
		head = s
	}
	for i, e := range entries {
		leader.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: e})
	}
	follower, rs := applyAll(entries, 20)
	for i, r := range rs {
		if wantErr := i == 4; (r != nil) != wantErr || wantErr && (!errors.Is(r.(error), ErrBadCommand) || !errors.Is(r.(error), mesh.ErrDeltaBase)) {
			t.Errorf("entry %d: %v", i, r)
		}
	}
	encode := func(s *mesh.Snapshot) string {
		b, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	check := func(name string, f *fsm) {
		t.Helper()
		st := f.state()
		if st.head == nil || encode(st.head) != encode(snaps[4]) {
			t.Fatalf("%s: head is not the last snapshot", name)
		}
		if st.served == nil || encode(st.served) != encode(snaps[1]) {
			t.Errorf("%s: does not serve the pinned snapshot", name)
		}
		if len(st.history) != len(snaps) {
			t.Errorf("%s: %d history entries, want %d", name, len(st.history), len(snaps))
		}
		for _, e := range st.history {
			s, err := e.snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if s.Version != e.Version || s.Commit != e.Commit {
				t.Errorf("%s: history entry %s@%s holds %s@%s", name, e.Version, e.Commit, s.Version, s.Commit)
			}
		}
	}
	check("leader", leader)
	check("follower", follower)
	if !bytes.Equal(persist(t, leader), persist(t, follower)) {
		t.Error("leader and follower persist different states")
	}

	// Restored from the follower's Raft snapshot, then the next delta.
	restored := newFSM(20, discardLogger())
	if err := restored.Restore(io.NopCloser(bytes.NewReader(persist(t, follower)))); err != nil {
		t.Fatal(err)
	}
	check("restored", restored)
	next := compileFiles(t, meshFiles(7), fmt.Sprintf("%040d", 9))
	typ, c, blob, err := snapshotEntry(snaps[4], next)
	if err != nil {
		t.Fatal(err)
	}
	if r := restored.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: cmd(t, typ, c, blob)}); r != nil {
		t.Fatal(r)
	}
	if got := restored.state().head; got == nil || encode(got) != encode(next) {
		t.Error("a restored server applied the next delta wrongly")
	}

	// The previous version's Raft snapshot: whole snapshots in format 1, no head decoded yet.
	old := persisted{Format: 1, Index: 7, ServedIndex: 7, LastCommit: snaps[4].Commit}
	for _, s := range snaps[3:] {
		data, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		old.History = append(old.History, persistedEntry{Entry: Entry{Version: s.Version, Commit: s.Commit, Time: t0}, Data: compress(data)})
	}
	oldBytes, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	upgraded := newFSM(20, discardLogger())
	if err := upgraded.Restore(io.NopCloser(bytes.NewReader(oldBytes))); err != nil {
		t.Fatal(err)
	}
	if r := upgraded.Apply(&raft.Log{Index: 8, Type: raft.LogCommand, Data: cmd(t, typ, c, blob)}); r != nil {
		t.Fatal(r)
	}
	if got := upgraded.state().served; got == nil || encode(got) != encode(next) {
		t.Error("a server restored from the previous version's Raft snapshot applied the next delta wrongly")
	}
}
