package reconciler

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/catalog"
	"github.com/meshgit/mesh/internal/notify"
)

// Entry is one snapshot in a server's history.
type Entry struct {
	Version string    `json:"version"`
	Commit  string    `json:"commit"`
	Time    time.Time `json:"time"` // when the leader applied it
	// Forced is set when the commit does not descend from the previous one (a force-push).
	Forced bool `json:"forced,omitempty"`
}

// Failure records why the newest commit is not served: it did not verify, compile or pass the
// cluster's checks, or the repository could not be read at all (Commit is then ""). The snapshot
// served did not change.
type Failure struct {
	Commit string    `json:"commit"`
	Time   time.Time `json:"time"`
	// Step is the step that failed (fetch, resolve, verify, read, compile, check); "" in entries
	// written before it was recorded, which were all compile failures.
	Step   Step       `json:"step,omitempty"`
	Errors []PosError `json:"errors"`
	// RetryAt is set when the leader tries again by itself (the repository could not be read, the
	// compiler failed): when it will, after Backoff (a Go duration). Attempts counts the failed
	// attempts in a row. Once the backoff is at its cap, the same failure is not recorded again
	// (Raft would grow by an entry per retry): the leader then retries every Backoff.
	RetryAt  time.Time `json:"retryAt,omitzero"`
	Backoff  string    `json:"backoff,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
}

// Headline says in one line what went wrong and what happens next, for mesh status and logs.
func (f *Failure) Headline(now time.Time) string {
	c := shortSHA(f.Commit)
	var b strings.Builder
	switch f.Step {
	case StepFetch:
		b.WriteString("the repository cannot be read")
	case StepResolve:
		b.WriteString("the ref cannot be resolved")
	case StepVerify:
		fmt.Fprintf(&b, "commit %s is refused: its signature does not verify", c)
	case StepCheck:
		fmt.Fprintf(&b, "commit %s is held", c)
	case StepCompile:
		if !f.RetryAt.IsZero() {
			fmt.Fprintf(&b, "commit %s: the compiler failed", c)
			break
		}
		fallthrough
	default:
		fmt.Fprintf(&b, "commit %s does not compile", c)
	}
	switch d := f.RetryAt.Sub(now); {
	case f.RetryAt.IsZero():
	case d > 0:
		fmt.Fprintf(&b, "; retrying in %s", max(d.Round(time.Second), time.Second))
		if f.Attempts > 1 {
			fmt.Fprintf(&b, " (%d attempts so far)", f.Attempts)
		}
	case f.Backoff != "":
		fmt.Fprintf(&b, "; retrying every %s (%d attempts and more)", f.Backoff, f.Attempts)
	default:
		b.WriteString("; retrying")
	}
	return b.String()
}

// PosError is one positioned compile error, as the compiler reported it.
type PosError struct {
	Pos mesh.Pos `json:"pos"`
	Msg string   `json:"msg"`
}

// serverMeta is what the FSM knows about a server beyond Raft's configuration.
type serverMeta struct {
	HTTP string `json:"http"`
}

// Command encoding: a format byte, a type byte, a uvarint-prefixed JSON header and, for
// snapshots, the gzip-compressed snapshot JSON (cmdSnapshot) or mesh.Delta JSON
// (cmdSnapshotDelta) as the rest. A server that meets a format it does not know refuses the
// entry (deterministically, on every server) instead of guessing.
//
// The leader replicates a new snapshot as a delta against the head every server holds (a
// one-intention or mesh-wide change is a few hundred bytes where the whole snapshot is
// megabytes), and whole only when there is no head yet. Log entries and Raft snapshots written
// before deltas existed are read unchanged: cmdSnapshot entries are still applied, and the Raft
// snapshot format (persisted, whole snapshots) did not change. A server of an older version
// refuses cmdSnapshotDelta entries as of an unknown type: upgrade every server before the
// leader.
const cmdFormat byte = 1

type cmdType byte

const (
	cmdSnapshot     cmdType = 1 // header snapshotCmd, blob gzip(Snapshot.Encode())
	cmdFailure      cmdType = 2 // header Failure
	cmdPin          cmdType = 3 // header pinCmd
	cmdUnpin        cmdType = 4 // header pinCmd (Version empty)
	cmdServer       cmdType = 5 // header serverCmd
	cmdRemoveServer cmdType = 6 // header serverCmd
	cmdCA           cmdType = 7 // header ca.Command
	cmdCluster      cmdType = 8 // header clusterCmd
	cmdCatalog      cmdType = 9 // header catalog.Command
	// header []catalog.Command: commands committed together (catalog.Batcher), applied in
	// order, each with its own result; the response is a catalogBatchResult.
	cmdCatalogBatch cmdType = 10
	// header snapshotCmd with Base, blob gzip(mesh.Delta JSON): the snapshot that the delta
	// makes of the head, which must have version Base (else the entry is refused everywhere and
	// the leader sends it again against the head it then has).
	cmdSnapshotDelta cmdType = 11
)

// catalogBatchResult is the FSM's response to a cmdCatalogBatch entry: one error (or nil) per
// command.
type catalogBatchResult []error

type clusterCmd struct {
	ID string `json:"id"`
}

type snapshotCmd struct {
	Version string    `json:"version"`
	Commit  string    `json:"commit"`
	Time    time.Time `json:"time"`
	Forced  bool      `json:"forced,omitempty"`
	// Base is the version of the head a cmdSnapshotDelta applies to.
	Base string `json:"base,omitempty"`
}

type pinCmd struct {
	Version string    `json:"version,omitempty"`
	Time    time.Time `json:"time"`
	// By names who pinned by the token's kind and ID (Server.writer), never the token.
	By string `json:"by,omitempty"`
}

type serverCmd struct {
	ID   string `json:"id"`
	HTTP string `json:"http,omitempty"`
}

func encodeCommand(t cmdType, header any, blob []byte) ([]byte, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 2+binary.MaxVarintLen64+len(h)+len(blob))
	b = append(b, cmdFormat, byte(t))
	b = binary.AppendUvarint(b, uint64(len(h)))
	b = append(b, h...)
	return append(b, blob...), nil
}

func decodeCommand(b []byte) (cmdType, []byte, []byte, error) {
	if len(b) < 2 {
		return 0, nil, nil, fmt.Errorf("%w: %d bytes", ErrBadCommand, len(b))
	}
	if b[0] != cmdFormat {
		return 0, nil, nil, fmt.Errorf("%w: format %d, this server knows %d", ErrBadCommand, b[0], cmdFormat)
	}
	n, k := binary.Uvarint(b[2:])
	if k <= 0 || n > uint64(len(b)-2-k) {
		return 0, nil, nil, fmt.Errorf("%w: bad header length", ErrBadCommand)
	}
	h := b[2+k : 2+k+int(n)]
	return cmdType(b[1]), h, b[2+k+int(n):], nil
}

// compress and decompress the snapshot JSON carried in Raft entries and snapshots.
func compress(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// maxSnapshotJSON bounds decompression, so that a corrupt entry cannot exhaust memory.
const maxSnapshotJSON = 1 << 30

func decodeSnapshot(data []byte) (*mesh.Snapshot, error) {
	b, err := decompress(data)
	if err != nil {
		return nil, fmt.Errorf("decompress snapshot: %w", err)
	}
	return mesh.Decode(b)
}

func decompress(data []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(zr, maxSnapshotJSON))
}

// encodeDelta and decodeDelta are the blob of a cmdSnapshotDelta entry.
func encodeDelta(d *mesh.Delta) ([]byte, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	return compress(b), nil
}

func decodeDelta(blob []byte) (*mesh.Delta, error) {
	b, err := decompress(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: decompress delta: %v", ErrBadCommand, err)
	}
	var d mesh.Delta
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%w: decode delta: %v", ErrBadCommand, err)
	}
	return &d, nil
}

// histEntry is an Entry with its snapshot: compressed (data), decoded (snap), or both. An entry
// applied whole has data; one made by a delta has snap, sharing the elements it did not change
// with the entry before it, and data only once something needs it (blob: a Raft snapshot, the
// HTTP API). The head's snap is kept; an older entry with data drops its snap.
type histEntry struct {
	Entry
	mu      sync.Mutex
	data    []byte
	snap    *mesh.Snapshot
	retired bool // no longer the head: snap is dropped once data exists
	// check is set when snap was built by applying a delta on this server: its version is not
	// recomputed on the apply path (0.2 s at 10k services), so the publisher verifies it before
	// serving it (snapCheck). nil when snap is the leader's own or was decoded whole (Decode
	// checks the version).
	check *snapCheck
}

// snapCheck is the verification, done once and off the FSM's apply goroutine, that a snapshot
// built from a delta hashes to the version the leader gave it. A mismatch means Diff/Apply or
// an encoding is not deterministic, or this server's memory is corrupt: the snapshot is then
// never served (publisher.check) and is repaired from a peer (publisher.repair).
type snapCheck struct {
	mu   sync.Mutex
	done bool
	err  error
}

// verify checks snap once; later calls return the first result (first is set for the call that
// made the check). A nil check always passes.
func (c *snapCheck) verify(snap *mesh.Snapshot) (err error, first bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return c.err, false
	}
	c.done = true
	v, err := snap.ComputeVersion()
	switch {
	case err != nil:
		c.err = fmt.Errorf("%w: snapshot %s (commit %s) built from a delta: %w", ErrSnapshotMismatch, snap.Version, shortSHA(snap.Commit), err)
	case v != snap.Version:
		c.err = fmt.Errorf("%w: snapshot %s (commit %s) built from a delta hashes to %s", ErrSnapshotMismatch, snap.Version, shortSHA(snap.Commit), v)
	}
	return c.err, true
}

// failed reports whether the check was made and failed.
func (c *snapCheck) failed() bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// blob returns the entry's compressed snapshot JSON, encoding it once if need be.
func (e *histEntry) blob() ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.data == nil {
		b, err := e.snap.Encode()
		if err != nil {
			return nil, err
		}
		e.data = compress(b)
		if e.retired {
			e.snap = nil
		}
	}
	return e.data, nil
}

// snapshot returns the entry's snapshot, decoding it if need be.
func (e *histEntry) snapshot() (*mesh.Snapshot, error) {
	e.mu.Lock()
	snap, data := e.snap, e.data
	e.mu.Unlock()
	if snap != nil {
		return snap, nil
	}
	return decodeSnapshot(data)
}

// retire drops the decoded snapshot of an entry that is no longer the head, when it has data.
func (e *histEntry) retire() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.retired = true
	if e.data != nil {
		e.snap = nil
	}
}

// state is the FSM's state. It is never modified once published: Apply builds a new one, so
// readers (HTTP, the publisher, Raft snapshots) take the pointer and need no lock.
type state struct {
	history    []*histEntry // oldest first; the last is the newest applied snapshot (the head)
	pin        string
	pinBy      string    // who pinned (pinCmd.By); "" in entries written before it was recorded
	pinTime    time.Time // when
	lastError  *Failure
	lastCommit string // the last commit applied or recorded as failed
	servers    map[string]serverMeta
	ca         *ca.State      // the CA: roots, signing key, token hashes (nil until the leader creates it)
	clusterID  string         // the cluster's identity, set once by its first leader
	catalog    *catalog.State // live instances and their health (never nil)

	head        *mesh.Snapshot // decoded head of history
	served      *mesh.Snapshot // head, or the pinned snapshot
	servedIndex uint64         // the Raft index at which served last changed
	servedCheck *snapCheck     // served's entry's check: nil when served needs none
}

func (s *state) clone() *state {
	c := *s
	return &c
}

func (s *state) headEntry() *histEntry {
	if len(s.history) == 0 {
		return nil
	}
	return s.history[len(s.history)-1]
}

// find returns the newest entry with version v.
func (s *state) find(v string) *histEntry {
	for i := len(s.history) - 1; i >= 0; i-- {
		if s.history[i].Version == v {
			return s.history[i]
		}
	}
	return nil
}

// fsm is the replicated state machine. Apply is deterministic: it depends only on the entry's
// bytes and the previous state (times come from the leader, inside the entry).
type fsm struct {
	cur     atomic.Pointer[point]
	keep    int            // history length
	changed chan struct{}  // capacity 1: "the state changed", coalesced
	watch   *catalog.Watch // notified when the catalog changed
	roots   *notify.Watch  // notified when the CA's state changed, or a federated peer's roots
	log     *slog.Logger
	// local holds the snapshots this server is replicating, by the SHA-256 of their command's
	// blob: applying such an entry takes the snapshot the blob was encoded from instead of
	// decompressing, decoding and re-verifying 30 MB at 10k services. The hash proves the entry
	// carries exactly that encoding; every other server decodes it (TestEncodeDecodeRoundTrip
	// shows decoding gives back the same snapshot).
	local sync.Map // [32]byte → *mesh.Snapshot
	// mu orders Apply and Restore with repair, the one change to the state made outside Raft.
	mu sync.Mutex
}

// testCorruptDelta, set only by tests, changes the delta f is about to apply: how a test makes
// one server build a snapshot other than the leader's, as a bug in Diff or Apply would.
var testCorruptDelta func(f *fsm, d *mesh.Delta)

// point is the FSM's state with the Raft index of the last command applied (refused ones
// included), published together so that a reader waiting for an index sees the state that has it.
type point struct {
	st      *state
	applied uint64
}

func newFSM(keep int, log *slog.Logger) *fsm {
	f := &fsm{keep: keep, changed: make(chan struct{}, 1), watch: catalog.NewWatch(), roots: notify.New(), log: log}
	f.cur.Store(&point{st: &state{servers: map[string]serverMeta{}, catalog: catalog.Empty()}})
	return f
}

func (f *fsm) state() *state { return f.cur.Load().st }

// at returns the state and the index of the last command applied to it.
func (f *fsm) at() point { return *f.cur.Load() }

// setAt publishes s, at index applied, and wakes the publisher (and, when the catalog changed,
// the catalog's blocking queries). Only Apply and Restore call it.
func (f *fsm) setAt(s *state, applied uint64) {
	old := f.cur.Swap(&point{st: s, applied: applied})
	if old == nil || old.st.catalog != s.catalog {
		f.watch.Notify()
	}
	if old == nil || old.st.ca != s.ca {
		f.roots.Notify()
	}
	f.poke()
}

// poke wakes the publisher without changing anything.
func (f *fsm) poke() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// Apply applies one committed entry. It returns nil or an error (the entry changed nothing).
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.state()
	if t, h, _, err := decodeCommand(l.Data); err == nil && t == cmdCatalogBatch {
		return f.applyCatalogBatch(old, l.Index, h)
	}
	ns, err := f.apply(old, l.Index, l.Data)
	if err != nil {
		f.setAt(old, l.Index) // the state is unchanged, the index moves
		return err
	}
	f.setAt(ns, l.Index)
	return nil
}

// applyCatalogBatch applies a cmdCatalogBatch entry: its commands in order, each with its own
// result, as catalog.State.ApplyBatch does.
func (f *fsm) applyCatalogBatch(old *state, index uint64, h []byte) any {
	cs, err := catalog.DecodeBatch(h)
	if err != nil {
		f.setAt(old, index)
		return fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	cat, errs := old.catalog.ApplyBatch(index, cs)
	if cat == old.catalog {
		f.setAt(old, index)
	} else {
		s := old.clone()
		s.catalog = cat
		f.setAt(s, index)
	}
	return catalogBatchResult(errs)
}

func (f *fsm) apply(old *state, index uint64, data []byte) (*state, error) {
	t, h, blob, err := decodeCommand(data)
	if err != nil {
		return nil, err
	}
	s := old.clone()
	switch t {
	case cmdSnapshot, cmdSnapshotDelta:
		if err := f.applySnapshot(old, s, t, index, h, blob); err != nil {
			return nil, err
		}
	case cmdFailure:
		var c Failure
		if err := json.Unmarshal(h, &c); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
		s.lastError = &c
		if c.Commit != "" { // a source failure names no commit: the last one stays the last one
			s.lastCommit = c.Commit
		}
	case cmdPin:
		var c pinCmd
		if err := json.Unmarshal(h, &c); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
		e := old.find(c.Version)
		if e == nil {
			return nil, fmt.Errorf("%w: %s", ErrUnknownVersion, c.Version)
		}
		snap, err := e.snapshot()
		if err != nil {
			return nil, err
		}
		s.pin, s.pinBy, s.pinTime = c.Version, c.By, c.Time
		s.served, s.servedIndex, s.servedCheck = snap, index, e.check
	case cmdUnpin:
		if old.pin == "" {
			return old, nil
		}
		s.pin, s.pinBy, s.pinTime = "", "", time.Time{}
		s.served, s.servedIndex, s.servedCheck = s.head, index, nil
		if h := s.headEntry(); h != nil {
			s.servedCheck = h.check
		}
		s.history = trim(s.history, f.keep, "")
	case cmdServer, cmdRemoveServer:
		var c serverCmd
		if err := json.Unmarshal(h, &c); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
		s.servers = maps.Clone(old.servers)
		if t == cmdServer {
			s.servers[c.ID] = serverMeta{HTTP: c.HTTP}
		} else {
			delete(s.servers, c.ID)
		}
	case cmdCA:
		c, err := ca.DecodeCommand(h)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
		if s.ca, err = old.ca.Apply(c); err != nil {
			return nil, err
		}
	case cmdCatalog:
		c, err := catalog.DecodeCommand(h)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
		if s.catalog, err = old.catalog.Apply(index, c); err != nil {
			return nil, err
		}
		if s.catalog == old.catalog {
			return old, nil
		}
	case cmdCluster:
		var c clusterCmd
		if err := json.Unmarshal(h, &c); err != nil || c.ID == "" {
			return nil, fmt.Errorf("%w: cluster id: %v", ErrBadCommand, err)
		}
		if old.clusterID != "" && old.clusterID != c.ID {
			return nil, fmt.Errorf("%w: entry for cluster %s in the log of cluster %s", ErrClusterMismatch, c.ID, old.clusterID)
		}
		s.clusterID = c.ID
	default:
		return nil, fmt.Errorf("%w: unknown type %d", ErrBadCommand, t)
	}
	return s, nil
}

// applySnapshot applies a cmdSnapshot or cmdSnapshotDelta entry to s, a clone of old.
func (f *fsm) applySnapshot(old, s *state, t cmdType, index uint64, h, blob []byte) error {
	var c snapshotCmd
	if err := json.Unmarshal(h, &c); err != nil {
		return fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	if t == cmdSnapshotDelta && (old.head == nil || old.head.Version != c.Base) {
		have := "none"
		if old.head != nil {
			have = old.head.Version
		}
		return fmt.Errorf("%w: %w: delta to %s is for %s, the head is %s", ErrBadCommand, mesh.ErrDeltaBase, c.Version, c.Base, have)
	}
	e := &histEntry{Entry: Entry{Version: c.Version, Commit: c.Commit, Time: c.Time, Forced: c.Forced}}
	var snap *mesh.Snapshot
	if v, ok := f.local.Load(sha256.Sum256(blob)); ok {
		snap = v.(*mesh.Snapshot) // the leader's own snapshot: the entry was encoded from it
	} else if t == cmdSnapshot {
		var err error
		if snap, err = decodeSnapshot(blob); err != nil {
			return err
		}
	} else {
		d, err := decodeDelta(blob)
		if err != nil {
			return err
		}
		if testCorruptDelta != nil {
			testCorruptDelta(f, d)
		}
		if snap, err = d.Apply(old.head); err != nil {
			return fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
		e.check = &snapCheck{} // the publisher verifies it before serving it
	}
	if snap.Version != c.Version || snap.Commit != c.Commit {
		return fmt.Errorf("%w: entry says %s@%s, snapshot is %s@%s", ErrBadCommand, c.Version, shortSHA(c.Commit), snap.Version, shortSHA(snap.Commit))
	}
	e.snap = snap
	if t == cmdSnapshot {
		e.data = blob
	}
	hist := append([]*histEntry(nil), old.history...)
	if n := len(hist); n > 0 && hist[n-1].Version == e.Version {
		hist[n-1] = e // same content, new commit: one entry, the newest commit
	} else {
		if n > 0 {
			hist[n-1].retire()
		}
		hist = append(hist, e)
	}
	s.history = trim(hist, f.keep, s.pin)
	s.head = snap
	s.lastCommit = c.Commit
	s.lastError = nil
	if s.pin == "" {
		s.served, s.servedIndex, s.servedCheck = snap, index, e.check
	}
	return nil
}

// repair replaces the snapshot bad, built from a delta that failed its check, with good, the
// same version fetched whole from a peer and verified, wherever the current state holds it (its
// history entry, the head, the served snapshot), so that this server serves it and applies the
// next deltas to it. It is the one change to the state not made by a Raft entry: it makes the
// state what applying the log should have made it. It reports whether anything was replaced.
func (f *fsm) repair(bad, good *mesh.Snapshot) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.at()
	s := p.st.clone()
	s.history = append([]*histEntry(nil), p.st.history...)
	n := 0
	for i, e := range s.history {
		e.mu.Lock()
		held := e.snap == bad || e.snap == nil && e.check.failed()
		e.mu.Unlock()
		if e.Version == good.Version && e.Commit == good.Commit && e.check.failed() && held {
			s.history[i] = &histEntry{Entry: e.Entry, snap: good, retired: e.retired}
			n++
		}
	}
	if s.head == bad {
		s.head, n = good, n+1
	}
	if s.served == bad {
		s.served, s.servedCheck, n = good, nil, n+1
	}
	if n == 0 {
		return false
	}
	f.setAt(s, p.applied)
	return true
}

// trim keeps the newest keep entries, and the newest entry of the pinned version wherever it is.
func trim(hist []*histEntry, keep int, pin string) []*histEntry {
	if len(hist) <= keep {
		return hist
	}
	out := hist[len(hist)-keep:]
	if pin == "" {
		return out
	}
	for _, e := range out {
		if e.Version == pin {
			return out
		}
	}
	for i := len(hist) - keep - 1; i >= 0; i-- {
		if hist[i].Version == pin {
			return append([]*histEntry{hist[i]}, hist[len(hist)-keep+1:]...)
		}
	}
	return out
}

// persisted is the Raft snapshot format of the FSM.
type persisted struct {
	Format      int                   `json:"format"`
	History     []persistedEntry      `json:"history"`
	Pin         string                `json:"pin,omitempty"`
	PinBy       string                `json:"pinBy,omitempty"`
	PinTime     time.Time             `json:"pinTime,omitzero"`
	LastError   *Failure              `json:"lastError,omitempty"`
	LastCommit  string                `json:"lastCommit,omitempty"`
	Servers     map[string]serverMeta `json:"servers,omitempty"`
	ServedIndex uint64                `json:"servedIndex"`
	Index       uint64                `json:"index,omitempty"` // the last command applied
	CA          *ca.State             `json:"ca,omitempty"`
	ClusterID   string                `json:"clusterId,omitempty"`
	Catalog     *catalog.State        `json:"catalog,omitempty"`
}

type persistedEntry struct {
	Entry
	Data []byte `json:"data"`
}

// Snapshot captures the current state; Persist does the I/O later, concurrently with Apply.
// Raft calls it between two Applies, so applied is the index of the last command it covers.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	p := f.at()
	return fsmSnapshot{st: p.st, applied: p.applied}, nil
}

type fsmSnapshot struct {
	st      *state
	applied uint64
}

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	p := persisted{Format: 1, Pin: s.st.pin, PinBy: s.st.pinBy, PinTime: s.st.pinTime, LastError: s.st.lastError, LastCommit: s.st.lastCommit,
		Servers: s.st.servers, ServedIndex: s.st.servedIndex, CA: s.st.ca, ClusterID: s.st.clusterID, Index: s.applied,
		Catalog: s.st.catalog}
	for _, e := range s.st.history {
		// Entries made by deltas are written whole: a restored server needs no earlier entry.
		data, err := e.blob()
		if err != nil {
			sink.Cancel()
			return fmt.Errorf("persist fsm: %s: %w", e.Version, err)
		}
		p.History = append(p.History, persistedEntry{Entry: e.Entry, Data: data})
	}
	if err := json.NewEncoder(sink).Encode(&p); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist fsm: %w", err)
	}
	return sink.Close()
}

func (fsmSnapshot) Release() {}

// Restore replaces the state with a persisted one.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	var p persisted
	if err := json.NewDecoder(rc).Decode(&p); err != nil {
		return fmt.Errorf("restore fsm: %w", err)
	}
	if p.Format != 1 {
		return fmt.Errorf("restore fsm: unknown format %d", p.Format)
	}
	s := &state{pin: p.Pin, pinBy: p.PinBy, pinTime: p.PinTime, lastError: p.LastError, lastCommit: p.LastCommit, servers: p.Servers, servedIndex: p.ServedIndex, ca: p.CA,
		clusterID: p.ClusterID, catalog: p.Catalog}
	if s.catalog == nil {
		s.catalog = catalog.Empty()
	}
	if s.servers == nil {
		s.servers = map[string]serverMeta{}
	}
	for _, e := range p.History {
		s.history = append(s.history, &histEntry{Entry: e.Entry, data: e.Data})
	}
	if h := s.headEntry(); h != nil {
		snap, err := decodeSnapshot(h.data)
		if err != nil {
			return fmt.Errorf("restore fsm: head: %w", err)
		}
		h.snap = snap
		s.head, s.served = snap, snap
	}
	if s.pin != "" {
		e := s.find(s.pin)
		if e == nil {
			return fmt.Errorf("restore fsm: pinned version %s not in history", s.pin)
		}
		snap, err := e.snapshot()
		if err != nil {
			return fmt.Errorf("restore fsm: pinned: %w", err)
		}
		s.served = snap
	}
	f.setAt(s, p.Index)
	return nil
}
