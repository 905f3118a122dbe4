package xds

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protowire"
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
		// Without principals (publicRBAC makes fresh ones), then twice with (the encoder
		// encodes each principal, then reuses the encodings; the snapshot before lends its own).
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
	// The encoded pieces are shared along, but for another trust domain, and dropped once they
	// hold far more than a snapshot can use.
	wp := pa.sourcePiece("web")
	if pb.pieces != pa.pieces || pb.sourcePiece("web") != wp {
		t.Fatal("same trust domain and datacenters: the pieces are not shared")
	}
	if pc.pieces == pb.pieces || bytes.Equal(pc.sourcePiece("web").enc, wp.enc) {
		t.Fatal("another trust domain shares the pieces")
	}
	for i := range 100 {
		pb.sourcePiece(fmt.Sprintf("gone-%d", i))
	}
	if pf := newPrincipals(newSnap(mesh.Allow), pb); pf.pieces == pb.pieces || pf.sourcePiece("web").enc == nil {
		t.Fatal("pieces of a hundred services that are gone are kept")
	}
}

// TestRBACExtensionEncoding holds what publicRBAC tells the memo of each RBAC extension
// configuration (the encoding made from the rules' bytes, its hash, its wire) to a fresh
// deterministic marshal of the configuration, over random meshes and meshgen's: the content
// hash, so every version, and the bytes served are what marshalling again would give.
func TestRBACExtensionEncoding(t *testing.T) {
	checked := 0
	for i, snap := range encoderSnaps(t, 5) {
		m := newMemo(snap, nil)
		for _, name := range snap.ServiceNames() {
			xs, err := extensionConfigs(snap, Proxy{Service: name, Shape: ShapeEnvoy}, m)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range xs {
				checkWritten(t, m, x, x.Name, "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
					fmt.Sprintf("mesh %d, service %s: %s", i, name, x.Name))
				e := learnt(m, x, encOf)
				if !bytes.Equal(e.wire.any.Value, e.wire.ProtoReflect().GetUnknown()) {
					t.Fatalf("mesh %d, service %s: %s: the wire's Any holds other bytes than its encoding", i, name, x.Name)
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

// TestRBACEncoderMatchesValidateAll holds publicRBAC, which writes the rules straight to bytes
// and checks each principal and permission once (rbacenc.go), to building the rules as
// messages: over random meshes (both defaults, tcp and http services, permissions, wildcards),
// some with header names that ValidateAll rejects in random permissions, and meshgen's, it
// fails exactly when the network filter's ValidateAll does, with the same error, and otherwise
// writes proto's bytes; twice over one principals, so that the second pass answers from what
// the first remembered.
func TestRBACEncoderMatchesValidateAll(t *testing.T) {
	// The field numbers the encoder writes.
	for _, c := range []struct {
		m     proto.Message
		field string
		num   int
	}{
		{&rbacv3.RBAC{}, "action", rbacActionField}, {&rbacv3.RBAC{}, "policies", rbacPoliciesField},
		{&rbacv3.Policy{}, "permissions", policyPermsField}, {&rbacv3.Policy{}, "principals", policyPrincipalField},
		{&rbacv3.Principal{}, "and_ids", principalAndField}, {&rbacv3.Principal{}, "or_ids", principalOrField},
		{&rbacv3.Principal{}, "not_id", principalNotField}, {&rbacv3.Principal_Set{}, "ids", principalSetIDsField},
		{&netrbacv3.RBAC{}, "stat_prefix", netStatPrefixField},
	} {
		f := c.m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(c.field))
		if f == nil || int(f.Number()) != c.num {
			t.Fatalf("%s.%s is not field %d", c.m.ProtoReflect().Descriptor().FullName(), c.field, c.num)
		}
	}
	// The encoder's verdict relies on these messages having no rule of their own beyond their
	// parts' (a principal is its identifier, a set its ids): a new field may bring one.
	for m, known := range map[proto.Message][]string{
		&rbacv3.RBAC{}:   {"action", "policies", "audit_logging_options"},
		&rbacv3.Policy{}: {"permissions", "principals", "condition", "checked_condition", "cel_config"},
		&netrbacv3.RBAC{}: {"rules", "matcher", "shadow_rules", "shadow_matcher", "shadow_rules_stat_prefix",
			"stat_prefix", "enforcement_type", "delay_deny"},
		&rbacv3.Principal_Set{}: {"ids"},
	} {
		fields := m.ProtoReflect().Descriptor().Fields()
		for i := range fields.Len() {
			if !slices.Contains(known, string(fields.Get(i).Name())) {
				t.Fatalf("%s has field %s, which the encoder does not know", m.ProtoReflect().Descriptor().FullName(), fields.Get(i).Name())
			}
		}
	}
	fields := (&rbacv3.Principal{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		if o := fields.Get(i).ContainingOneof(); o == nil || o.Name() != "identifier" {
			t.Fatalf("rbac Principal has field %s besides its identifier", fields.Get(i).Name())
		}
	}
	var snaps []*mesh.Snapshot
	r := rand.New(rand.NewPCG(7, 23))
	for k := range 40 {
		s := randomTransparentMesh(r, 3+r.IntN(8))
		if k%2 == 1 {
			breakHeaderNames(r, s)
		}
		snaps = append(snaps, seal(t, s))
	}
	ms := meshgenSnaps(t, 60, 5)
	snaps = append(snaps, ms[0], ms[1])
	valid, invalid := 0, 0
	for i, snap := range snaps {
		pr := newPrincipals(snap, nil)
		for pass := range 2 {
			for _, name := range snap.ServiceNames() {
				svc := snap.Services[name]
				rules := rbacRules(snap, name, mesh.IsHTTP(svc.Protocol), nil)
				want := networkRBAC(name, rules).ValidateAll()
				set, got := publicRBAC(snap, svc, pr)
				if (got == nil) != (want == nil) || got != nil && !strings.HasSuffix(got.Error(), want.Error()) {
					t.Fatalf("mesh %d, service %s: publicRBAC: %v; ValidateAll: %v", i, name, got, want)
				}
				if got != nil {
					invalid++
					continue
				}
				b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rules)
				if err != nil {
					t.Fatal(err)
				}
				field := protowire.AppendBytes(protowire.AppendTag(nil, rbacRulesField, protowire.BytesType), b)
				if !bytes.Equal(set.xs[0].TypedConfig.Value, field) {
					t.Fatalf("mesh %d, service %s (pass %d): the rules' bytes differ from proto's", i, name, pass)
				}
				valid++
			}
		}
	}
	t.Logf("%d valid, %d invalid", valid, invalid)
	if valid < 300 || invalid < 20 {
		t.Fatalf("only %d valid and %d invalid rules checked", valid, invalid)
	}
}

// breakHeaderNames gives a random half of the permissions in s a header match whose name
// ValidateAll rejects (empty, or with a line feed).
func breakHeaderNames(r *rand.Rand, s *mesh.Snapshot) {
	for _, in := range s.Intentions {
		for j := range in.Permissions {
			if r.IntN(2) > 0 {
				continue
			}
			p := &in.Permissions[j]
			if p.HTTP == nil {
				p.HTTP = &mesh.HTTPMatch{}
			}
			p.HTTP.Header = append(p.HTTP.Header, mesh.HeaderMatch{Name: []string{"", "x-bad\nname"}[r.IntN(2)], Kind: mesh.MatchExact, Value: "v"})
		}
	}
}

// TestPermKeyCoversEveryField fails when a field is added to a type appendPermKey reads (a
// permission's encoding is shared by every policy with the same key, across snapshots): add it
// to the key, then the count here.
func TestPermKeyCoversEveryField(t *testing.T) {
	for _, c := range []struct {
		v    any
		want int
	}{{mesh.Permission{}, 2}, {mesh.HTTPMatch{}, 6}, {mesh.HeaderMatch{}, 4}, {mesh.QueryMatch{}, 3}} {
		if got := reflect.TypeOf(c.v).NumField(); got != c.want {
			t.Errorf("%T has %d fields, appendPermKey knows %d", c.v, got, c.want)
		}
	}
	// Permissions that differ in any one thing have other keys.
	base := mesh.Permission{Action: mesh.Allow, HTTP: &mesh.HTTPMatch{Path: "/a", Methods: []string{"GET"},
		Header: []mesh.HeaderMatch{{Name: "x", Kind: mesh.MatchExact, Value: "1"}}, QueryParam: []mesh.QueryMatch{{Name: "q", Kind: mesh.MatchExact, Value: "v"}}}}
	variants := []func(p *mesh.Permission){
		func(p *mesh.Permission) { p.Action = mesh.Deny },
		func(p *mesh.Permission) { p.HTTP = nil },
		func(p *mesh.Permission) { p.HTTP.Path, p.HTTP.PathPrefix = "", "/a" },
		func(p *mesh.Permission) { p.HTTP.Path, p.HTTP.PathRegex = "", "/a" },
		func(p *mesh.Permission) { p.HTTP.Methods = []string{"GE", "T"} },
		func(p *mesh.Permission) { p.HTTP.Header[0].Invert = true },
		func(p *mesh.Permission) { p.HTTP.Header[0].Kind = mesh.MatchPrefix },
		func(p *mesh.Permission) { p.HTTP.Header[0].Name = "y" },
		func(p *mesh.Permission) { p.HTTP.Header[0].Value = "2" },
		func(p *mesh.Permission) { p.HTTP.QueryParam[0].Name = "r" },
		func(p *mesh.Permission) { p.HTTP.QueryParam[0].Kind = mesh.MatchRegex },
		func(p *mesh.Permission) { p.HTTP.QueryParam[0].Value = "w" },
	}
	want := appendPermKey(nil, mesh.Allow, []mesh.Permission{base})
	if bytes.Equal(want, appendPermKey(nil, mesh.Deny, []mesh.Permission{base})) {
		t.Fatal("the engine is not in the key")
	}
	for i, v := range variants {
		p := base
		m := *base.HTTP
		m.Header, m.QueryParam = slices.Clone(m.Header), slices.Clone(m.QueryParam)
		p.HTTP = &m
		v(&p)
		if bytes.Equal(want, appendPermKey(nil, mesh.Allow, []mesh.Permission{p})) {
			t.Fatalf("variant %d has the same key", i)
		}
	}
}

// TestPresetRBACIsWhatRenderBuilds holds what extensionConfigs presets in the memo's cache
// (presetRBAC) to what a group's render would build of the same extension configurations: the
// content hash and version map hashByType computes without a memo, and cache resources at the
// version render gives them, indexing the wires the memo learnt.
func TestPresetRBACIsWhatRenderBuilds(t *testing.T) {
	ms := meshgenSnaps(t, 60, 3)
	r := rand.New(rand.NewPCG(3, 9))
	snaps := []*mesh.Snapshot{ms[0], ms[1], seal(t, richMesh()), seal(t, randomTransparentMesh(r, 6))}
	ext := resourcev3.ExtensionConfigType
	checked := 0
	for i, snap := range snaps {
		m := newMemo(snap, nil)
		for _, name := range snap.ServiceNames() {
			xs, err := extensionConfigs(snap, Proxy{Service: name, Shape: ShapeEnvoy}, m)
			if err != nil {
				t.Fatal(err)
			}
			if len(xs) == 0 {
				continue
			}
			fresh := &Resources{Extensions: xs}
			hashes, _, versions, err := fresh.hashTypes(nil)
			if err != nil {
				t.Fatal(err)
			}
			hash, version := hashes.get(ext), snap.Version+"-"+hashes.get(ext)[:8]
			gotVersions := m.versionMap(ext, hash, func() map[string]string { t.Fatalf("mesh %d, %s: no version map preset", i, name); return nil })
			if !maps.Equal(gotVersions, versions[ext]) {
				t.Fatalf("mesh %d, %s: preset version map %v, render's %v", i, name, gotVersions, versions[ext])
			}
			res, _ := m.sharedResources(ext, hash, version, nil, nil, nil)
			if res.Version != version || len(res.Items) != len(xs) {
				t.Fatalf("mesh %d, %s: preset resources at %q with %d items, want %q with %d", i, name, res.Version, len(res.Items), version, len(xs))
			}
			for _, x := range xs {
				if got := res.Items[x.Name]; got.Resource != m.wired(x) || got.TTL != nil {
					t.Fatalf("mesh %d, %s: preset item %s is not the wire the memo learnt", i, name, x.Name)
				}
			}
			checked++
		}
	}
	if checked < 60 {
		t.Fatalf("checked %d services, want at least 60", checked)
	}
}

// TestSourcePieceMatchesNewPiece holds a source's principal written straight to bytes
// (newSourcePiece) to newPiece of the message sourcePrincipal builds, encoding and ValidateAll
// verdict both, over one and several datacenters, none, empty and long names (two-byte
// lengths) and strings that are not valid UTF-8 (which protobuf-go refuses to marshal), and
// holds the field numbers it writes to the descriptors.
func TestSourcePieceMatchesNewPiece(t *testing.T) {
	for _, c := range []struct {
		m     proto.Message
		field string
		num   int
	}{
		{&rbacv3.Principal{}, "authenticated", principalAuthenticatedField},
		{&rbacv3.Principal_Authenticated{}, "principal_name", authenticatedNameField},
		{&matcherv3.StringMatcher{}, "exact", stringMatcherExactFld},
	} {
		if f := c.m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(c.field)); f == nil || int(f.Number()) != c.num {
			t.Fatalf("%s.%s is not field %d", c.m.ProtoReflect().Descriptor().FullName(), c.field, c.num)
		}
	}
	long := strings.Repeat("s", 130)
	tds := []string{"shop.mesh", "", long, "bad\xff"}
	dcss := [][]string{nil, {"dc1"}, {"dc1", "dc2"}, {"", long, "dc3"}, {"dc\xc3"}}
	services := []string{"api", "", long, "x\xff"}
	checked := 0
	for _, td := range tds {
		for _, dcs := range dcss {
			for _, svc := range services {
				want, got := newPiece(sourcePrincipal(td, dcs, svc)), newSourcePiece(td, dcs, svc)
				if !bytes.Equal(got.enc, want.enc) || got.valid != want.valid {
					t.Fatalf("td %q, dcs %q, service %q: got %x (valid %v)\nwant %x (valid %v)", td, dcs, svc, got.enc, got.valid, want.enc, want.valid)
				}
				checked++
			}
		}
	}
	if newSourcePiece("td", nil, "a\xff").valid {
		t.Fatal("a principal that does not marshal is valid")
	}
	t.Logf("%d principals", checked)
}
