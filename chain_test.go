package mesh

import (
	"encoding/json"
	"math/rand"
	"testing"
	"time"
)

func TestTargetNames(t *testing.T) {
	if got, want := TargetID("v2", "api", "dc1"), "v2.api.dc1"; got != want {
		t.Errorf("TargetID = %q, want %q", got, want)
	}
	if got, want := TargetID("", "api", "dc2"), "api.dc2"; got != want {
		t.Errorf("TargetID without subset = %q, want %q", got, want)
	}
	// Consul's names, so that operators recognise them.
	if got, want := SNI("v2", "api", "dc1", "shop.mesh"), "v2.api.default.dc1.internal.shop.mesh"; got != want {
		t.Errorf("SNI = %q, want %q", got, want)
	}
	if got, want := SNI("", "api", "dc1", "shop.mesh"), "api.default.dc1.internal.shop.mesh"; got != want {
		t.Errorf("SNI without subset = %q, want %q", got, want)
	}
	if got, want := SpiffeID("shop.mesh", "dc1", "api"), "spiffe://shop.mesh/ns/default/dc/dc1/svc/api"; got != want {
		t.Errorf("SpiffeID = %q, want %q", got, want)
	}
}

func TestEndpointsOfTarget(t *testing.T) {
	s := richSnapshot()
	s.Services["api"].Endpoints = append(s.Services["api"].Endpoints,
		Endpoint{Address: "10.2.20.11", Port: 8080, Datacenter: "dc2", Meta: map[string]string{"version": "v1"}})
	count := func(t *Target) int { return len(s.Endpoints(t)) }
	tests := []struct {
		target *Target
		want   int
	}{
		{s.Chains["api"].Targets["v1.api.dc1"], 2},
		{s.Chains["api"].Targets["v2.api.dc1"], 1},
		{s.Chains["api"].Targets["v1.api.dc2"], 1},
		{s.Chains["api"].Targets["v2.api.dc2"], 0},
		{&Target{Service: "api", Datacenter: "dc1"}, 3}, // no subset: every endpoint in the dc
		{&Target{Service: "ghost", Datacenter: "dc1"}, 0},
	}
	for _, tt := range tests {
		if got := count(tt.target); got != tt.want {
			t.Errorf("endpoints of %s/%s/%s = %d, want %d", tt.target.Subset, tt.target.Service, tt.target.Datacenter, got, tt.want)
		}
	}
	if !SubsetMatches(nil, nil) || !SubsetMatches(map[string]string{}, map[string]string{"a": "b"}) {
		t.Error("an empty filter must match everything")
	}
	if SubsetMatches(map[string]string{"version": ""}, map[string]string{}) {
		t.Error(`filter version="" matches an endpoint without the key`)
	}
}

func TestDurationJSON(t *testing.T) {
	for _, tt := range []struct {
		d    Duration
		want string
	}{
		{Duration(250 * time.Millisecond), `"250ms"`},
		{Duration(time.Minute), `"1m0s"`},
		{0, `"0s"`},
	} {
		b, err := json.Marshal(tt.d)
		if err != nil || string(b) != tt.want {
			t.Errorf("json of %v = %s, %v; want %s", time.Duration(tt.d), b, err, tt.want)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || back != tt.d {
			t.Errorf("round trip of %s = %v, %v", b, back, err)
		}
	}
	// "60s" and "1m" are one duration.
	var a, b Duration
	if err := json.Unmarshal([]byte(`"60s"`), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`"1m"`), &b); err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("60s = %v, 1m = %v", a, b)
	}
	for _, bad := range []string{`"10 seconds"`, `10`, `"s"`} {
		var d Duration
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("Unmarshal(%s) succeeded", bad)
		}
	}
}

// Inbound and Outbound are what RBAC and `mesh intention match` are built from: taking the first
// intention of either list that applies to a request must give the intention Authorize picks.
func TestInboundOutboundAgreeWithAuthorize(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	names := []string{"a", "b", "c", "d", Wildcard}
	for round := 0; round < 300; round++ {
		var ins []*Intention
		seen := map[[2]string]bool{}
		for n := rng.Intn(12); n > 0; n-- {
			src, dst := names[rng.Intn(len(names))], names[rng.Intn(len(names))]
			if seen[[2]string{src, dst}] {
				continue
			}
			seen[[2]string{src, dst}] = true
			if rng.Intn(2) == 0 {
				ins = append(ins, allow(src, dst))
			} else {
				ins = append(ins, deny(src, dst))
			}
		}
		s := newSnapshot(Deny, ins...)
		for _, src := range names[:4] {
			for _, dst := range names[:4] {
				d := Authorize(s, Request{Source: src, Destination: dst})
				var in, out *Intention
				for _, x := range s.Inbound(dst) {
					if x.Source == src || x.Source == Wildcard {
						in = x
						break
					}
				}
				for _, x := range s.Outbound(src) {
					if x.Destination == dst || x.Destination == Wildcard {
						out = x
						break
					}
				}
				if in != d.Intention || out != d.Intention {
					t.Fatalf("round %d, %s → %s: Authorize picks %v, Inbound %v, Outbound %v", round, src, dst, d.Intention, in, out)
				}
			}
		}
	}
}

// AppendInbound is Inbound appended to what a caller reuses: the prefix stays, the rest is
// Inbound's answer whatever the slice held before (one slice reused from destination to
// destination, as RBAC rendering does).
func TestAppendInboundReusesSlice(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	names := []string{"a", "b", "c", "d", Wildcard}
	var scratch []*Intention
	for round := 0; round < 200; round++ {
		var ins []*Intention
		seen := map[[2]string]bool{}
		for n := rng.Intn(14); n > 0; n-- {
			src, dst := names[rng.Intn(len(names))], names[rng.Intn(len(names))]
			if !seen[[2]string{src, dst}] {
				seen[[2]string{src, dst}] = true
				ins = append(ins, allow(src, dst))
			}
		}
		s := newSnapshot(Deny, ins...)
		prefix := allow("x", "y")
		for _, dst := range names {
			want := s.Inbound(dst)
			scratch = s.AppendInbound(append(scratch[:0], prefix), dst)
			if scratch[0] != prefix || len(scratch) != 1+len(want) {
				t.Fatalf("round %d, %s: AppendInbound gives %d intentions after the prefix, want %d", round, dst, len(scratch)-1, len(want))
			}
			for i, in := range want {
				if scratch[1+i] != in {
					t.Fatalf("round %d, %s: AppendInbound[%d] = %v, Inbound %v", round, dst, i, scratch[1+i], in)
				}
			}
		}
	}
}
