package xds

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	mesh "github.com/meshgit/mesh"
)

// TestRBACAnyMatchesToAny holds publicRBAC's one-marshal packing (rbacAny) to toAny's
// anypb.MarshalFrom of each filter configuration, byte for byte, over random meshes (both
// defaults, tcp and http services, permissions, wildcards) and meshgen's repositories.
func TestRBACAnyMatchesToAny(t *testing.T) {
	// rbacAny relies on rules being field 1, the lowest, of both configurations.
	for _, m := range []proto.Message{&rbacfilterv3.RBAC{}, networkRBAC("x", nil)} {
		fields := m.ProtoReflect().Descriptor().Fields()
		if f := fields.ByName("rules"); f == nil || f.Number() != rbacRulesField {
			t.Fatalf("%s: rules is not field %d", m.ProtoReflect().Descriptor().FullName(), rbacRulesField)
		}
		for i := range fields.Len() {
			if f := fields.Get(i); f.Name() != "rules" && f.Number() <= protoreflect.FieldNumber(rbacRulesField) {
				t.Fatalf("%s: field %s precedes rules", m.ProtoReflect().Descriptor().FullName(), f.Name())
			}
		}
	}
	var snaps []*mesh.Snapshot
	r := rand.New(rand.NewPCG(3, 11))
	for range 12 {
		snaps = append(snaps, seal(t, randomTransparentMesh(r, 3+r.IntN(8))))
	}
	ms := meshgenSnaps(t, 60, 5)
	snaps = append(snaps, ms[0], ms[1])
	checked := 0
	var prevPr *principals
	for i, snap := range snaps {
		// Without principals (proto marshals the rules), then twice with (marshalRules encodes
		// each principal, then reuses the encodings; the snapshot before lends its own).
		pr := newPrincipals(snap, prevPr)
		prevPr = pr
		for k := range 3 * len(snap.ServiceNames()) {
			names := snap.ServiceNames()
			name := names[k%len(names)]
			svc := snap.Services[name]
			var p *principals
			if k >= len(names) {
				p = pr
			}
			set, err := publicRBAC(snap, svc, p)
			if err != nil {
				t.Fatal(err)
			}
			got := set.xs
			rules := rbacRules(snap, name, mesh.IsHTTP(svc.Protocol), nil)
			h, err := toAny(&rbacfilterv3.RBAC{Rules: rules})
			if err != nil {
				t.Fatal(err)
			}
			n, err := toAny(networkRBAC(name, rules))
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range [2][]byte{h.Value, n.Value} {
				a := got[k].TypedConfig
				if a.TypeUrl != []string{h.TypeUrl, n.TypeUrl}[k] || !bytes.Equal(a.Value, want) {
					t.Fatalf("mesh %d, service %s: %s packs other bytes than anypb.MarshalFrom", i, name, got[k].Name)
				}
			}
			checked++
		}
	}
	if checked < 300 {
		t.Fatalf("only %d services checked", checked)
	}
}

// TestPrincipalsBorrowed: a snapshot borrows the previous one's principals only when the trust
// domain and the datacenters are the same, and then shares the very messages; otherwise the
// principal names the new trust domain.
func TestPrincipalsBorrowed(t *testing.T) {
	a := newSnap(mesh.Deny)
	pa := newPrincipals(a, nil)
	web := pa.source("web")
	b := newSnap(mesh.Allow)
	pb := newPrincipals(b, pa)
	if pb.source("web") != web {
		t.Fatal("same trust domain and datacenters: the principal was built again")
	}
	c := newSnap(mesh.Deny)
	c.Mesh.TrustDomain = "other.example"
	pc := newPrincipals(c, pb)
	got := pc.source("web")
	if got == web || proto.Equal(got, web) {
		t.Fatal("another trust domain borrowed the previous principal")
	}
	if !proto.Equal(got, sourcePrincipal("other.example", datacenters(c), "web")) {
		t.Fatal("principal differs from a fresh one")
	}
	d := newSnap(mesh.Deny)
	d.Mesh.Datacenters = []string{"dc1"}
	if newPrincipals(d, newPrincipals(a, nil)).prev.Load() != nil {
		t.Fatal("other datacenters borrowed the previous principals")
	}
	if pb.prev.Load() != pa {
		t.Fatal("pb does not borrow pa")
	}
	if pe := newPrincipals(newSnap(mesh.Deny), pb); pe.prev.Load() != pb || pb.prev.Load() != nil {
		t.Fatal("principals chain beyond one snapshot")
	}
}

// TestRBACExtensionEncoding holds what publicRBAC tells the memo of each RBAC extension
// configuration (the encoding made from the rules' bytes, its hash, its wire) to a fresh
// deterministic marshal of the configuration, over random meshes and meshgen's: the content
// hash, so every version, and the bytes served are what marshalling again would give.
func TestRBACExtensionEncoding(t *testing.T) {
	var snaps []*mesh.Snapshot
	r := rand.New(rand.NewPCG(5, 17))
	for range 12 {
		snaps = append(snaps, seal(t, randomTransparentMesh(r, 3+r.IntN(8))))
	}
	ms := meshgenSnaps(t, 60, 5)
	snaps = append(snaps, ms[0], ms[1])
	checked := 0
	for i, snap := range snaps {
		m := newMemo(snap, nil)
		for _, name := range snap.ServiceNames() {
			xs, err := extensionConfigs(snap, Proxy{Service: name, Shape: ShapeEnvoy}, m)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range xs {
				fresh, err := proto.MarshalOptions{Deterministic: true}.Marshal(proto.Clone(x))
				if err != nil {
					t.Fatal(err)
				}
				v, ok := m.facts.hashes.Load(x)
				if !ok {
					t.Fatalf("mesh %d, service %s: %s: the memo was not told its encoding", i, name, x.Name)
				}
				e := v.(*encoded)
				if got := e.wire.ProtoReflect().GetUnknown(); !bytes.Equal(got, fresh) {
					t.Fatalf("mesh %d, service %s: %s: kept encoding differs from a fresh marshal", i, name, x.Name)
				}
				if !bytes.Equal(e.wire.any.Value, fresh) || e.wire.msg != x || e.wire.name != x.Name {
					t.Fatalf("mesh %d, service %s: %s: wire differs from the configuration", i, name, x.Name)
				}
				var buf []byte
				want, err := (*memo)(nil).resourceHash(x, &buf)
				if err != nil {
					t.Fatal(err)
				}
				if got, err := m.resourceHash(x, &buf); err != nil || got != want || e.hash != want {
					t.Fatalf("mesh %d, service %s: %s: hash %s (%v), fresh marshal hashes to %s", i, name, x.Name, got, err, want)
				}
				checked++
			}
		}
	}
	if checked < 200 {
		t.Fatalf("only %d configurations checked", checked)
	}
}

// TestValidateNetworkRBACMatchesValidateAll holds validateNetworkRBAC, which checks each
// shared principal once, to ValidateAll: the same verdict and the same error, on the rules of
// random meshes and meshgen's (twice over one principals, so that the second pass answers
// from what the first remembered) and on rules made invalid in each place validation looks.
func TestValidateNetworkRBACMatchesValidateAll(t *testing.T) {
	// validPrincipal relies on a principal being its identifier alone and a set its ids alone.
	for _, m := range []proto.Message{&rbacv3.Principal{}, &rbacv3.Principal_Set{}} {
		fields := m.ProtoReflect().Descriptor().Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			if o := f.ContainingOneof(); (o == nil || o.Name() != "identifier") && f.Name() != "ids" {
				t.Fatalf("%s has field %s besides its identifier or ids", m.ProtoReflect().Descriptor().FullName(), f.Name())
			}
		}
	}
	// marshalRules relies on the rules and their policies having no other fields than these
	// (it leaves rules with any of them set to proto), validateNetworkRBAC's copies on all
	// three.
	for m, known := range map[proto.Message][]string{
		&rbacv3.RBAC{}:   {"action", "policies", "audit_logging_options"},
		&rbacv3.Policy{}: {"permissions", "principals", "condition", "checked_condition", "cel_config"},
		&netrbacv3.RBAC{}: {"rules", "matcher", "shadow_rules", "shadow_matcher", "shadow_rules_stat_prefix",
			"stat_prefix", "enforcement_type", "delay_deny"},
	} {
		fields := m.ProtoReflect().Descriptor().Fields()
		for i := range fields.Len() {
			if !slices.Contains(known, string(fields.Get(i).Name())) {
				t.Fatalf("%s has field %s, which marshalRules does not know", m.ProtoReflect().Descriptor().FullName(), fields.Get(i).Name())
			}
		}
	}
	same := func(t *testing.T, pr *principals, nf *netrbacv3.RBAC) error {
		t.Helper()
		want := nf.ValidateAll()
		got := pr.validateNetworkRBAC(nf)
		if (got == nil) != (want == nil) || got != nil && got.Error() != want.Error() {
			t.Fatalf("validateNetworkRBAC: %v; ValidateAll: %v", got, want)
		}
		return got
	}
	var snaps []*mesh.Snapshot
	r := rand.New(rand.NewPCG(7, 23))
	for range 12 {
		snaps = append(snaps, seal(t, randomTransparentMesh(r, 3+r.IntN(8))))
	}
	ms := meshgenSnaps(t, 60, 5)
	snaps = append(snaps, ms[0], ms[1])
	var sample *rbacv3.RBAC
	var samplePr *principals
	for _, snap := range snaps {
		pr := newPrincipals(snap, nil)
		for range 2 {
			for _, name := range snap.ServiceNames() {
				rules := rbacRules(snap, name, mesh.IsHTTP(snap.Services[name].Protocol), pr)
				if err := same(t, pr, networkRBAC(name, rules)); err != nil {
					t.Fatalf("valid rules rejected: %v", err)
				}
				if sample == nil || len(rules.Policies) > len(sample.Policies) {
					sample, samplePr = rules, pr
				}
			}
		}
	}
	if len(sample.Policies) < 2 {
		t.Fatalf("no rules with policies to break")
	}
	// Each breaks a copy of sample (whose principals samplePr has seen, valid) in one place.
	var shared *rbacv3.Principal
	for _, pol := range sample.Policies {
		shared = pol.Principals[0]
		break
	}
	breaks := map[string]func(r *rbacv3.RBAC){
		"empty set under not": func(r *rbacv3.RBAC) {
			for _, pol := range r.Policies {
				pol.Principals = append(pol.Principals, andIDs(shared, notID(&rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{}}})))
				return
			}
		},
		"principal without identifier": func(r *rbacv3.RBAC) {
			for _, pol := range r.Policies {
				pol.Principals = []*rbacv3.Principal{orIDs(shared, &rbacv3.Principal{})}
				return
			}
		},
		"matcher without pattern": func(r *rbacv3.RBAC) {
			for _, pol := range r.Policies {
				pol.Principals[0] = andIDs(shared, authenticated(&matcherv3.StringMatcher{}))
			}
		},
		"no principals": func(r *rbacv3.RBAC) {
			for _, pol := range r.Policies {
				pol.Principals = nil
				return
			}
		},
		"no permissions": func(r *rbacv3.RBAC) {
			for _, pol := range r.Policies {
				pol.Permissions = nil
			}
		},
		"bad permission": func(r *rbacv3.RBAC) {
			for _, pol := range r.Policies {
				pol.Permissions = append(pol.Permissions, &rbacv3.Permission{})
				return
			}
		},
		"bad action": func(r *rbacv3.RBAC) { r.Action = 99 },
	}
	for name, brk := range breaks {
		t.Run(name, func(t *testing.T) {
			r := proto.Clone(sample).(*rbacv3.RBAC)
			// The clone's principals are new messages: keep the shared ones shared.
			for k, pol := range r.Policies {
				pol.Principals = slices.Clone(sample.Policies[k].Principals)
			}
			brk(r)
			if same(t, samplePr, networkRBAC("web", r)) == nil {
				t.Fatal("broken rules accepted")
			}
			// marshalRules writes what proto writes of these too.
			got, err := samplePr.marshalRules(r)
			want, werr := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
				t.Fatalf("marshalRules: %x, %v; proto: %x, %v", got, err, want, werr)
			}
		})
	}
	t.Run("bad shadow rules", func(t *testing.T) {
		nf := networkRBAC("web", sample)
		nf.ShadowRules = &rbacv3.RBAC{Action: 99}
		if same(t, samplePr, nf) == nil {
			t.Fatal("bad shadow rules accepted")
		}
	})
	t.Run("empty stat prefix", func(t *testing.T) {
		if same(t, samplePr, &netrbacv3.RBAC{Rules: sample}) == nil {
			t.Fatal("empty stat prefix accepted")
		}
	})
}
