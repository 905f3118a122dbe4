package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestApplyBatchSameAsOneByOne: a batch gives each command the result it has applied alone, in
// order, at the batch's index (failures included: a check of an instance deregistered earlier
// in the same batch, a bad status, an unknown check), and the same final state; a batch survives
// its encoding.
func TestApplyBatchSameAsOneByOne(t *testing.T) {
	base := mustApply(t, Empty(), 1, reg("n1", "api-1", "api", ttl("c1", StatusPassing)))
	cs := []Command{
		reg("n1", "api-2", "api", ttl("c2", StatusCritical)),
		{Op: OpCheck, NodeName: "n1", ID: "c2", Status: StatusPassing},
		{Op: OpCheck, NodeName: "n1", ID: "c1", Status: "sideways"},
		{Op: OpDeregister, NodeName: "n1", ID: "api-1"},
		{Op: OpCheck, NodeName: "n1", ID: "c1", Status: StatusCritical}, // its instance is gone
		{Op: OpCheck, NodeName: "n9", ID: "nope", Status: StatusCritical},
		reg("n2", "web-1", "web"),
		{Op: OpNodeHealth, NodeName: "n2", Status: StatusCritical},
	}
	b, err := json.Marshal(cs)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := DecodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	batched, errs := base.ApplyBatch(2, decoded)
	one := base
	failures := 0
	for i, c := range cs {
		ns, err := one.Apply(2, c)
		if fmt.Sprint(err) != fmt.Sprint(errs[i]) {
			t.Errorf("command %d (%s): batched %v, alone %v", i, c.Op, errs[i], err)
		}
		if err != nil {
			failures++
			continue
		}
		one = ns
	}
	if failures != 3 {
		t.Fatalf("%d commands failed, want 3 (bad status, check of a removed instance, unknown check)", failures)
	}
	x, _ := json.Marshal(batched)
	y, _ := json.Marshal(one)
	if string(x) != string(y) {
		t.Fatalf("batched state\n%s\nwant\n%s", x, y)
	}
	if _, err := DecodeBatch([]byte(`[]`)); err == nil {
		t.Fatal("empty batch decoded")
	}
}

// TestBatcherCoalesces: commands committed while an entry is in flight go together in the next
// one, in arrival order, and each caller gets its own command's result.
func TestBatcherCoalesces(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var batches [][]Command
	b := NewBatcher(func(_ context.Context, cs []Command) ([]error, error) {
		mu.Lock()
		first := len(batches) == 0
		batches = append(batches, cs)
		mu.Unlock()
		if first {
			<-release // the first entry is slow to commit: the others queue meanwhile
		}
		errs := make([]error, len(cs))
		for i, c := range cs {
			if c.Status == StatusCritical {
				errs[i] = fmt.Errorf("%w: refuse %s", ErrBadCommand, c.ID)
			}
		}
		return errs, nil
	}, 0)
	ctx := context.Background()
	firstDone := make(chan error, 1)
	go func() { firstDone <- b.Commit(ctx, Command{Op: OpCheck, ID: "first", Status: StatusPassing}) }()
	waitUntil(t, 5*time.Second, "the first entry in flight", func() bool { mu.Lock(); defer mu.Unlock(); return len(batches) == 1 })
	const n = 50
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := StatusPassing
			if i%10 == 0 {
				st = StatusCritical
			}
			results[i] = b.Commit(ctx, Command{Op: OpCheck, ID: fmt.Sprint(i), Status: st})
		}()
	}
	waitUntil(t, 5*time.Second, "the others queued", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.queue) == n })
	close(release)
	wg.Wait()
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	if len(batches) != 2 || len(batches[1]) != n {
		t.Fatalf("%d entries (%d commands in the second), want 2 (the first alone, then %d together)", len(batches), len(batches[len(batches)-1]), n)
	}
	for i, err := range results {
		if (err != nil) != (i%10 == 0) {
			t.Errorf("command %d: %v", i, err)
		}
	}
}
