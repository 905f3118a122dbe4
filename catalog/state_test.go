package catalog

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func reg(node, id, service string, checks ...Check) Command {
	return Command{Op: OpRegister, Node: &Node{Name: node, Address: "127.0.0.1", SyncInterval: time.Second},
		Instance: &Instance{Node: node, ID: id, Service: service, Address: "127.0.0.1", Port: 8080, Weights: Weights{1, 1}, Checks: checks}}
}

func ttl(id, status string) Check {
	return Check{ID: id, Name: id, Type: CheckTTL, Status: status, CheckDefinition: CheckDefinition{TTL: time.Minute}}
}

func mustApply(t *testing.T, s *State, index uint64, c Command) *State {
	t.Helper()
	ns, err := s.Apply(index, c)
	if err != nil {
		t.Fatalf("apply %s: %v", c.Op, err)
	}
	return ns
}

// TestStateIndexes: every change moves the indexes of what it changed, and only those; a
// command that changes nothing returns the same state.
func TestStateIndexes(t *testing.T) {
	s := Empty()
	s = mustApply(t, s, 1, reg("n1", "api-1", "api", ttl("c1", StatusCritical)))
	s = mustApply(t, s, 2, reg("n1", "web-1", "web"))
	if s.Index() != 2 || s.ServiceIndex("api") != 1 || s.ServiceIndex("web") != 2 {
		t.Fatalf("indexes %d api %d web %d", s.Index(), s.ServiceIndex("api"), s.ServiceIndex("web"))
	}
	if got := s.Instances("api")[0].Status(s.Node("n1")); got != StatusCritical {
		t.Fatalf("status %s", got)
	}
	same := mustApply(t, s, 3, reg("n1", "api-1", "api", ttl("c1", StatusCritical)))
	if same != s {
		t.Fatal("re-registering the same instance made a new state")
	}
	s = mustApply(t, s, 4, Command{Op: OpCheck, NodeName: "n1", ID: "c1", Status: StatusPassing})
	if s.ServiceIndex("api") != 4 || s.ServiceIndex("web") != 2 || s.Instances("api")[0].Status(s.Node("n1")) != StatusPassing {
		t.Fatalf("after the check passed: api %d web %d", s.ServiceIndex("api"), s.ServiceIndex("web"))
	}
	s = mustApply(t, s, 5, Command{Op: OpNodeHealth, NodeName: "n1", Status: StatusCritical})
	if s.ServiceIndex("api") != 5 || s.ServiceIndex("web") != 5 || s.Instances("web")[0].Status(s.Node("n1")) != StatusCritical {
		t.Fatal("a critical node did not make its instances critical")
	}
	if _, err := s.Apply(6, Command{Op: OpCheck, NodeName: "n1", ID: "nope", Status: StatusPassing}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown check: %v", err)
	}
	if _, err := s.Apply(6, Command{Op: "explode"}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("unknown op: %v", err)
	}
	s = mustApply(t, s, 7, Command{Op: OpDeregister, NodeName: "n1", ID: "api-1"})
	if len(s.Instances("api")) != 0 || s.ServiceIndex("api") != 7 || len(s.ServiceNames()) != 1 {
		t.Fatalf("after deregistration: %v", s.ServiceNames())
	}
	s = mustApply(t, s, 8, Command{Op: OpDeregisterNode, NodeName: "n1"})
	if len(s.Nodes()) != 0 || len(s.ServiceNames()) != 0 {
		t.Fatal("node not removed")
	}
}

// TestStatePersistRoundTrip: the JSON of a state restores to one that answers the same and
// encodes to the same bytes (deterministic snapshots).
func TestStatePersistRoundTrip(t *testing.T) {
	s := Empty()
	s = mustApply(t, s, 1, reg("n1", "api-1", "api", ttl("c1", StatusCritical), ttl("c2", StatusWarning)))
	s = mustApply(t, s, 2, reg("n2", "api-2", "api"))
	s = mustApply(t, s, 3, reg("n2", "web-1", "web"))
	s = mustApply(t, s, 4, Command{Op: OpDeregister, NodeName: "n2", ID: "web-1"})
	s = mustApply(t, s, 5, reg("n2", "db-1", "db"))
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var r State
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(&r)
	if string(b) != string(b2) {
		t.Fatalf("re-encoding differs:\n%s\n%s", b, b2)
	}
	if r.Index() != 5 || r.ServiceIndex("api") != 2 || !reflect.DeepEqual(r.Instances("api"), s.Instances("api")) {
		t.Fatalf("restored: index %d api %d", r.Index(), r.ServiceIndex("api"))
	}
	if err := json.Unmarshal([]byte(`{"instances":[{"ID":"x","Service":"y","Node":"ghost"}]}`), &r); err == nil {
		t.Fatal("an instance of an unknown node was restored")
	}
}

func TestDecodeRegistrationIDs(t *testing.T) {
	in, err := DecodeRegistration(strings.NewReader(`{"Name":"api","Port":80,"Checks":[{"TTL":"5s"},{"TCP":"127.0.0.1:80","Interval":"1s","Status":"passing"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if in.ID != "api" || len(in.Checks) != 2 || in.Checks[0].ID != "service:api:1" || in.Checks[1].ID != "service:api:2" ||
		in.Checks[0].Status != StatusCritical || in.Checks[1].Status != StatusPassing || in.Checks[1].Timeout != time.Second {
		t.Fatalf("%+v", in)
	}
	in, err = DecodeRegistration(strings.NewReader(`{"ID":"a1","Name":"api","Check":{"HTTP":"http://127.0.0.1/h","Interval":"10s"}}`))
	if err != nil || in.Checks[0].ID != "service:a1" || in.Checks[0].Timeout != 10*time.Second {
		t.Fatalf("%+v %v", in, err)
	}
}

// TestCheckIDsUniqueOnNode: a check ID names one check of a node, so that a check command is
// deterministic; a registration reusing another instance's check ID is refused.
func TestCheckIDsUniqueOnNode(t *testing.T) {
	s := mustApply(t, Empty(), 1, reg("n1", "api-1", "api", ttl("c1", StatusPassing)))
	if _, err := s.Apply(2, reg("n1", "api-2", "api", ttl("c1", StatusPassing))); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("a reused check ID: %v", err)
	}
	s = mustApply(t, s, 2, reg("n2", "api-2", "api", ttl("c1", StatusPassing)))  // another node: fine
	s = mustApply(t, s, 3, reg("n1", "api-1", "api", ttl("c1", StatusCritical))) // the same instance: fine
	if s.CheckOwner("n1", "c1").ID != "api-1" || s.CheckOwner("n2", "c1").ID != "api-2" {
		t.Fatal("check owners")
	}
}
