package catalog

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a Submitter that keeps the commands it is sent.
type recorder struct {
	mu   sync.Mutex
	cmds []Command
}

func (r *recorder) submit(_ context.Context, _ string, c Command) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmds = append(r.cmds, c)
	return nil
}

func (r *recorder) statuses() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.cmds {
		if c.Op == OpCheck {
			out = append(out, c.Status)
		}
	}
	return out
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAgentThresholds: an HTTP check against a real server honours SuccessBeforePassing,
// FailuresBeforeWarning and FailuresBeforeCritical, and sends only transitions, never its output
// (which changes at every probe here).
func TestAgentThresholds(t *testing.T) {
	var code atomic.Int32
	var probes atomic.Int32
	code.Store(200)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(code.Load()))
		fmt.Fprintf(w, "probe %d", probes.Add(1))
	}))
	defer app.Close()
	rec := &recorder{}
	a := NewAgent(AgentConfig{Node: "n1", Address: "127.0.0.1", SyncInterval: time.Hour, Submit: rec.submit,
		Authorize: func(string, string) error { return nil }})
	defer a.Close()
	in, err := (&Registration{Name: "api", Port: 1, Check: &CheckRegistration{HTTP: app.URL, Interval: "100ms",
		SuccessBeforePassing: 2, FailuresBeforeWarning: 1, FailuresBeforeCritical: 3}}).Instance()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Register(context.Background(), "tok", in); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "passing", func() bool { return len(rec.statuses()) == 1 })
	if n := probes.Load(); n < 2 {
		t.Fatalf("passing after %d probes, want 2 successes first", n)
	}
	code.Store(500)
	waitUntil(t, 5*time.Second, "warning then critical", func() bool { return len(rec.statuses()) == 3 })
	time.Sleep(300 * time.Millisecond) // more failing probes, each with a new output
	if got := fmt.Sprint(rec.statuses()); got != "[passing warning critical]" {
		t.Fatalf("transitions sent: %s", got)
	}
	out := a.Services()[0].Checks[0].Output
	if out == "" || probes.Load() < 6 {
		t.Fatalf("output %q after %d probes", out, probes.Load())
	}
}
