package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
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
	baseJSON, _ := json.Marshal(base)
	batched, errs := base.ApplyBatch(2, decoded)
	if after, _ := json.Marshal(base); string(after) != string(baseJSON) {
		t.Fatalf("the batch changed the state it started from")
	}
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

// TestApplyBatchRandom: random batches (registrations, deregistrations, check flips, node health
// and syncs over a few nodes and services, many touching the same instance) give the same
// results and state as their commands applied one by one, and leave every earlier state as it
// was (a batch changes in place only what it made).
func TestApplyBatchRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	nodes, services := []string{"n1", "n2", "n3"}, []string{"api", "web"}
	random := func() Command {
		node := nodes[rng.IntN(len(nodes))]
		id := fmt.Sprintf("%s-%d", services[rng.IntN(len(services))], rng.IntN(4))
		svc, _, _ := strings.Cut(id, "-")
		check := "c:" + node + ":" + id
		switch rng.IntN(7) {
		case 0, 1:
			return reg(node, id, svc, ttl(check, []string{StatusPassing, StatusCritical}[rng.IntN(2)]))
		case 2:
			return Command{Op: OpDeregister, NodeName: node, ID: id}
		case 3:
			return Command{Op: OpNodeHealth, NodeName: node, Status: []string{StatusPassing, StatusCritical}[rng.IntN(2)]}
		case 4:
			return Command{Op: OpSyncNode, Node: &Node{Name: node, Address: "127.0.0.1", SyncInterval: time.Second}, Keep: []string{id}}
		}
		return Command{Op: OpCheck, NodeName: node, ID: check, Status: []string{StatusPassing, StatusWarning, StatusCritical, "bogus"}[rng.IntN(4)]}
	}
	batched, one := Empty(), Empty()
	var history [][2]any // earlier states and their JSON
	for round := range 200 {
		index := uint64(round + 1)
		cs := make([]Command, 1+rng.IntN(12))
		for i := range cs {
			cs[i] = random()
		}
		next, errs := batched.ApplyBatch(index, cs)
		for i, c := range cs {
			ns, err := one.Apply(index, c)
			if fmt.Sprint(err) != fmt.Sprint(errs[i]) {
				t.Fatalf("round %d command %d (%+v): batched %v, alone %v", round, i, c, errs[i], err)
			}
			if err == nil {
				one = ns
			}
		}
		x, _ := json.Marshal(next)
		y, _ := json.Marshal(one)
		if string(x) != string(y) {
			t.Fatalf("round %d: batched state\n%s\nwant\n%s", round, x, y)
		}
		for _, h := range history {
			if b, _ := json.Marshal(h[0]); string(b) != h[1].(string) {
				t.Fatalf("round %d changed an earlier state", round)
			}
		}
		history = append(history, [2]any{next, string(x)})
		batched = next
	}
}

// TestChangesAgreesWithApply: Changes says what Apply does (changed or not, and its error) for
// every kind of command, the cheap path of check commands included.
func TestChangesAgreesWithApply(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	st := Empty()
	for i := range 300 {
		node := fmt.Sprintf("n%d", rng.IntN(3))
		id := fmt.Sprintf("api-%d", rng.IntN(4))
		check := "c:" + node + ":" + id
		var c Command
		switch rng.IntN(4) {
		case 0:
			c = reg(node, id, "api", ttl(check, StatusPassing))
		case 1:
			c = Command{Op: OpDeregister, NodeName: node, ID: id}
		default:
			c = Command{Op: OpCheck, NodeName: node, ID: check, Status: []string{StatusPassing, StatusWarning, StatusCritical, "bogus"}[rng.IntN(4)]}
		}
		changes, err := st.Changes(c)
		ns, aerr := st.Apply(st.Index()+1, c)
		if fmt.Sprint(err) != fmt.Sprint(aerr) || changes != (aerr == nil && ns != st) {
			t.Fatalf("command %d %+v: Changes %v %v, Apply changed %v, %v", i, c, changes, err, ns != st, aerr)
		}
		if aerr == nil {
			st = ns
		}
	}
}
