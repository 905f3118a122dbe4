package reconciler

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/meshgit/mesh/ca"
)

// A pin records who pinned: the token's kind and, for a token the CA issued, its ID (as mesh
// token list shows it), never the token. Status and the history say it, a Raft snapshot keeps it,
// and unpin forgets it.
func TestPinRecordsWho(t *testing.T) {
	s, v0, _ := serverWithTwoVersions(t)
	ctx := context.Background()
	op, err := (&ca.Client{Addr: s.HTTPAddr(), Token: testToken}).CreateToken(ctx, ca.TokenRequest{Scope: ca.ScopeOperator})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Client{Addr: s.HTTPAddr(), Token: op.Token}).Pin(ctx, v0); err != nil {
		t.Fatal(err)
	}
	want := "operator token " + op.ID
	st := s.Status()
	if st.Pin != v0 || st.PinnedBy != want || time.Since(st.PinnedAt) > time.Minute {
		t.Fatalf("after a pin with an operator token: pin %q by %q at %v, want %s by %q now", st.Pin, st.PinnedBy, st.PinnedAt, v0, want)
	}
	for _, path := range []string{"/v1/status", "/v1/snapshots"} {
		body := get(t, "http://"+s.HTTPAddr()+path)
		if strings.Contains(body, op.Token) || !strings.Contains(body, `"pinnedBy": "`+want+`"`) && !strings.Contains(body, `"pinnedBy":"`+want+`"`) {
			t.Errorf("GET %s: want who pinned (%q) and never the token:\n%s", path, want, body)
		}
	}
	for _, e := range s.Snapshots() {
		if (e.PinnedBy != "") != (e.Version == v0) {
			t.Errorf("history entry %s: pinned by %q", e.Version, e.PinnedBy)
		}
	}

	// A Raft snapshot keeps it.
	g := newFSM(8, discardLogger())
	if err := g.Restore(io.NopCloser(bytes.NewReader(persist(t, s.fsm)))); err != nil {
		t.Fatal(err)
	}
	if r := g.state(); r.pin != v0 || r.pinBy != want || !r.pinTime.Equal(st.PinnedAt) {
		t.Errorf("restored: pin %q by %q at %v, want %s by %q at %v", r.pin, r.pinBy, r.pinTime, v0, want, st.PinnedAt)
	}

	if err := (&Client{Addr: s.HTTPAddr(), Token: testToken}).Unpin(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.Pin != "" || st.PinnedBy != "" || !st.PinnedAt.IsZero() {
		t.Errorf("after unpin: pin %q by %q at %v", st.Pin, st.PinnedBy, st.PinnedAt)
	}
}
