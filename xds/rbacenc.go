package xds

import (
	"bytes"
	"slices"
	"sync"
	"unicode/utf8"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
)

// Writing RBAC rules straight to bytes.
//
// A mesh-wide change renders the rules of every destination again, and most of what they hold
// is the principals of the same few thousand sources. rbacEncoder writes a destination's rules
// as the deterministic encoding proto.MarshalOptions{Deterministic: true} makes of
// rbacRules' message (set fields in field number order, map entries sorted by key), from the
// encoding of each source's principal and of each policy's permission, made and checked once
// and kept for as long as the trust domain and datacenters stay the same (pieceCache): no
// message is built per destination, and a permission only the first time its content is seen.
//
// Validation: the rules pass ValidateAll exactly when every principal and permission they hold
// does. A policy holds one principal and one permission (its min_items); a set of principals
// (the and/or/not that exclude earlier sources) is valid when it has some and they are valid;
// the action is ALLOW or DENY; map keys and the stat prefix ("connect_authz_<service>") have no
// rule they can break. TestRBACEncoderMatchesValidateAll holds the verdict to ValidateAll and
// the bytes to proto's over random meshes, some with permissions ValidateAll rejects, and
// TestRBACAnyMatchesToAny the packed configurations to toAny's.

// Field numbers of the messages the encoder writes (TestRBACEncoderMatchesValidateAll holds
// them to the descriptors).
const (
	rbacActionField      = 1 // RBAC.action
	rbacPoliciesField    = 2 // RBAC.policies (map entries: key 1, value 2)
	policyPermsField     = 1 // Policy.permissions
	policyPrincipalField = 2 // Policy.principals
	principalAndField    = 1 // Principal.and_ids
	principalOrField     = 2 // Principal.or_ids
	principalNotField    = 8 // Principal.not_id
	principalSetIDsField = 1 // Principal.Set.ids
	netStatPrefixField   = 3 // network RBAC.stat_prefix
)

// piece is the deterministic encoding of a principal or permission and whether it passes
// ValidateAll.
type piece struct {
	enc   []byte
	valid bool
}

// newPiece encodes and checks m.
func newPiece(m interface {
	proto.Message
	ValidateAll() error
}) *piece {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return &piece{enc: b, valid: err == nil && m.ValidateAll() == nil}
}

// anyPermPiece is anyPerm's piece.
var anyPermPiece = sync.OnceValue(func() *piece { return newPiece(anyPerm) })

// pieceCache holds pieces by what they are made of: sources' principals by source service,
// policies' permissions by appendPermKey. Safe for concurrent use.
type pieceCache struct {
	mu      sync.RWMutex
	sources map[string]*piece
	perms   map[string]*piece
}

// source returns the piece of a source's principal, or nil.
func (c *pieceCache) source(service string) *piece {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.sources[service]
}

// perm returns the piece of a permission by its key, or nil.
func (c *pieceCache) perm(key []byte) *piece {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.perms[string(key)]
}

// put records pc in *m (c.sources or c.perms) as the piece of key, unless one was recorded
// meanwhile, and returns the recorded one.
func (c *pieceCache) put(m *map[string]*piece, key string, pc *piece) *piece {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := (*m)[key]; old != nil {
		return old
	}
	if *m == nil {
		*m = map[string]*piece{}
	}
	(*m)[key] = pc
	return pc
}

// size is the number of pieces held.
func (c *pieceCache) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.sources) + len(c.perms)
}

// sourcePiece returns the piece of an exact source's principal, made once for as long as the
// trust domain and datacenters stay the same.
func (pr *principals) sourcePiece(service string) *piece {
	if pc := pr.pieces.source(service); pc != nil {
		return pc
	}
	return pr.pieces.put(&pr.pieces.sources, service, newSourcePiece(pr.trustDomain, pr.dcs, service))
}

// Field numbers of a source's principal besides those of the sets above.
const (
	principalAuthenticatedField = 4 // Principal.authenticated
	authenticatedNameField      = 2 // Principal.Authenticated.principal_name
)

// newSourcePiece is newPiece(sourcePrincipal(trustDomain, dcs, service)), written straight to
// bytes (a thousand sources are a thousand pieces when a server starts): the principal whose
// principal_name matches exactly the source's SPIFFE ID in its only datacenter, or an or_ids of
// one such per datacenter, each written as the deterministic marshal writes it. Such a
// principal passes ValidateAll (its identifiers and matchers are set, its set is not empty;
// an exact match has no rule a string can break); one whose IDs are not valid UTF-8, which
// protobuf-go refuses to marshal, is left to newPiece. TestSourcePieceMatchesNewPiece holds
// the two together.
func newSourcePiece(trustDomain string, dcs []string, service string) *piece {
	if len(dcs) == 0 {
		dcs = noDatacenter
	}
	valid := utf8.ValidString(trustDomain) && utf8.ValidString(service)
	for _, dc := range dcs {
		valid = valid && utf8.ValidString(dc)
	}
	if !valid {
		return newPiece(sourcePrincipal(trustDomain, dcs, service))
	}
	if len(dcs) == 1 {
		b := make([]byte, 0, authenticatedIDSize(trustDomain, dcs[0], service))
		return &piece{enc: appendAuthenticatedID(b, trustDomain, dcs[0], service), valid: true}
	}
	set := 0
	for _, dc := range dcs {
		set += protowire.SizeTag(principalSetIDsField) + protowire.SizeBytes(authenticatedIDSize(trustDomain, dc, service))
	}
	b := make([]byte, 0, protowire.SizeTag(principalOrField)+protowire.SizeBytes(set))
	b = protowire.AppendTag(b, principalOrField, protowire.BytesType) // a oneof member
	b = protowire.AppendVarint(b, uint64(set))
	for _, dc := range dcs {
		b = protowire.AppendTag(b, principalSetIDsField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(authenticatedIDSize(trustDomain, dc, service)))
		b = appendAuthenticatedID(b, trustDomain, dc, service)
	}
	return &piece{enc: b, valid: true}
}

// noDatacenter is what sourcePrincipal takes for no datacenters: one, unnamed.
var noDatacenter = []string{""}

// spiffeIDLen is len(mesh.SpiffeID(trustDomain, dc, service)).
func spiffeIDLen(trustDomain, dc, service string) int {
	return len("spiffe://") + len(trustDomain) + len("/ns/default/dc/") + len(dc) + len("/svc/") + len(service)
}

// authenticatedIDSize is the size of the encoding of authenticated(exactString(mesh.SpiffeID(
// trustDomain, dc, service))).
func authenticatedIDSize(trustDomain, dc, service string) int {
	matcher := protowire.SizeTag(stringMatcherExactFld) + protowire.SizeBytes(spiffeIDLen(trustDomain, dc, service))
	auth := protowire.SizeTag(authenticatedNameField) + protowire.SizeBytes(matcher)
	return protowire.SizeTag(principalAuthenticatedField) + protowire.SizeBytes(auth)
}

// appendAuthenticatedID appends the encoding of authenticated(exactString(mesh.SpiffeID(
// trustDomain, dc, service))), the ID written in place.
func appendAuthenticatedID(b []byte, trustDomain, dc, service string) []byte {
	id := spiffeIDLen(trustDomain, dc, service)
	matcher := protowire.SizeTag(stringMatcherExactFld) + protowire.SizeBytes(id)
	b = protowire.AppendTag(b, principalAuthenticatedField, protowire.BytesType) // a oneof member
	b = protowire.AppendVarint(b, uint64(protowire.SizeTag(authenticatedNameField)+protowire.SizeBytes(matcher)))
	b = protowire.AppendTag(b, authenticatedNameField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(matcher))
	b = protowire.AppendTag(b, stringMatcherExactFld, protowire.BytesType) // a oneof member
	b = protowire.AppendVarint(b, uint64(id))
	b = append(b, "spiffe://"...)
	b = append(b, trustDomain...)
	b = append(b, "/ns/default/dc/"...)
	b = append(b, dc...)
	b = append(b, "/svc/"...)
	return append(b, service...)
}

// wildcardPiece returns the piece of the wildcard principal.
func (pr *principals) wildcardPiece() *piece {
	if pc := pr.wildPiece.Load(); pc != nil {
		return pc
	}
	pr.wildPiece.CompareAndSwap(nil, newPiece(pr.wildcard()))
	return pr.wildPiece.Load()
}

// encodedPolicy is a policy whose name, principal and permission are encoded.
type encodedPolicy struct {
	name, principal, perm []byte
}

// rbacEncoder writes the rules of one destination. Its scratch space is reused from
// destination to destination (rbacEncoders).
type rbacEncoder struct {
	policies []encodedPolicy
	arena    []byte // the encodings of wildcard principals that exclude earlier sources
	names    []byte // the policies' names
	key      []byte // a permission's key (permPiece)
	scratch  policyScratch
}

var rbacEncoders = sync.Pool{New: func() any { return &rbacEncoder{} }}

// encodeRules returns the policies of rbacRules(snap, dest, l7, pr), encoded and sorted by
// name, with the rules' action, and whether every piece they hold is valid. The policies are
// good until e is used again.
func (e *rbacEncoder) encodeRules(snap *mesh.Snapshot, dest string, l7 bool, pr *principals) ([]encodedPolicy, rbacv3.RBAC_Action, bool) {
	e.policies, e.arena, e.names = e.policies[:0], e.arena[:0], e.names[:0]
	valid := true
	action := rbacPolicies(snap, dest, l7, &e.scratch, func(pol rbacPolicy) {
		var principal []byte
		if pol.in.Source == mesh.Wildcard {
			w := pr.wildcardPiece()
			valid = valid && w.valid
			principal = w.enc
			if len(pol.earlier) > 0 {
				var ok bool
				principal, ok = e.excluding(w.enc, pol.earlier, pr)
				valid = valid && ok
			}
		} else {
			pc := pr.sourcePiece(pol.in.Source)
			valid = valid && pc.valid
			principal = pc.enc
		}
		perm := anyPermPiece()
		if pol.perm >= 0 {
			e.key = appendPermKey(e.key[:0], pol.engine, pol.in.Permissions[:pol.perm+1])
			perm = pr.permPiece(e.key, pol.permission)
		}
		valid = valid && perm.valid
		start := len(e.names)
		e.names = pol.appendName(e.names)
		e.policies = append(e.policies, encodedPolicy{name: e.names[start:len(e.names):len(e.names)], principal: principal, perm: perm.enc})
	})
	slices.SortFunc(e.policies, func(a, b encodedPolicy) int { return bytes.Compare(a.name, b.name) })
	return e.policies, action, valid
}

// permPiece returns the piece of the permission whose key (appendPermKey) is key, built with
// build the first time (a permission depends on nothing else).
func (pr *principals) permPiece(key []byte, build func() *rbacv3.Permission) *piece {
	if pc := pr.pieces.perm(key); pc != nil {
		return pc
	}
	return pr.pieces.put(&pr.pieces.perms, string(key), newPiece(build()))
}

// appendPermKey appends what the permission of a policy is made of: the engine and the
// intention's permissions up to the policy's (TestPermKeyCoversEveryField holds it to the
// fields of the types).
func appendPermKey(b []byte, engine mesh.Action, perms []mesh.Permission) []byte {
	str := func(s string) { b = protowire.AppendString(b, s) }
	str(string(engine))
	for _, p := range perms {
		str(string(p.Action))
		if p.HTTP == nil {
			b = append(b, 0)
			continue
		}
		m := p.HTTP
		b = append(b, 1)
		str(m.Path)
		str(m.PathPrefix)
		str(m.PathRegex)
		b = protowire.AppendVarint(b, uint64(len(m.Methods)))
		for _, x := range m.Methods {
			str(x)
		}
		b = protowire.AppendVarint(b, uint64(len(m.Header)))
		for _, h := range m.Header {
			str(h.Name)
			str(h.Kind)
			str(h.Value)
			b = protowire.AppendVarint(b, protowire.EncodeBool(h.Invert))
		}
		b = protowire.AppendVarint(b, uint64(len(m.QueryParam)))
		for _, q := range m.QueryParam {
			str(q.Name)
			str(q.Kind)
			str(q.Value)
		}
	}
	return b
}

// excluding returns the encoding of andIDs(wildcard, notID(orIDs(earlier...))), appended to
// e.arena, and whether the sources' principals are valid.
func (e *rbacEncoder) excluding(wildcard []byte, earlier []string, pr *principals) ([]byte, bool) {
	valid := true
	var or []byte // orIDs(earlier...): the one principal, or or_ids of them all
	if len(earlier) == 1 {
		pc := pr.sourcePiece(earlier[0])
		or, valid = pc.enc, pc.valid
	} else {
		n := 0
		for _, src := range earlier {
			n += protowire.SizeTag(principalSetIDsField) + protowire.SizeBytes(len(pr.sourcePiece(src).enc))
		}
		start := len(e.arena)
		e.arena = protowire.AppendTag(e.arena, principalOrField, protowire.BytesType)
		e.arena = protowire.AppendVarint(e.arena, uint64(n))
		for _, src := range earlier {
			pc := pr.sourcePiece(src)
			valid = valid && pc.valid
			e.arena = protowire.AppendTag(e.arena, principalSetIDsField, protowire.BytesType)
			e.arena = protowire.AppendBytes(e.arena, pc.enc)
		}
		or = e.arena[start:len(e.arena):len(e.arena)]
	}
	notLen := protowire.SizeTag(principalNotField) + protowire.SizeBytes(len(or))
	setLen := protowire.SizeTag(principalSetIDsField) + protowire.SizeBytes(len(wildcard)) +
		protowire.SizeTag(principalSetIDsField) + protowire.SizeBytes(notLen)
	start := len(e.arena)
	e.arena = protowire.AppendTag(e.arena, principalAndField, protowire.BytesType)
	e.arena = protowire.AppendVarint(e.arena, uint64(setLen))
	e.arena = protowire.AppendTag(e.arena, principalSetIDsField, protowire.BytesType)
	e.arena = protowire.AppendBytes(e.arena, wildcard)
	e.arena = protowire.AppendTag(e.arena, principalSetIDsField, protowire.BytesType)
	e.arena = protowire.AppendVarint(e.arena, uint64(notLen))
	e.arena = protowire.AppendTag(e.arena, principalNotField, protowire.BytesType)
	e.arena = protowire.AppendBytes(e.arena, or)
	return e.arena[start:len(e.arena):len(e.arena)], valid
}

// rulesSize is the size of the encoding of rules with action and policies.
func rulesSize(action rbacv3.RBAC_Action, policies []encodedPolicy) int {
	n := 0
	if action != 0 {
		n = protowire.SizeTag(rbacActionField) + protowire.SizeVarint(uint64(action))
	}
	for _, p := range policies {
		n += protowire.SizeTag(rbacPoliciesField) + protowire.SizeBytes(entrySize(len(p.name), policySize(p)))
	}
	return n
}

// policySize is the size of the encoding of a policy {permissions: [perm], principals: [principal]}.
func policySize(p encodedPolicy) int {
	return protowire.SizeTag(policyPermsField) + protowire.SizeBytes(len(p.perm)) +
		protowire.SizeTag(policyPrincipalField) + protowire.SizeBytes(len(p.principal))
}

// entrySize is the size of a map entry {key: a name of nameLen bytes, value: a message of
// size bytes}.
func entrySize(nameLen, size int) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(nameLen) + protowire.SizeTag(2) + protowire.SizeBytes(size)
}

// appendRules appends the encoding of rules with action and policies (sorted by name).
func appendRules(b []byte, action rbacv3.RBAC_Action, policies []encodedPolicy) []byte {
	if action != 0 {
		b = protowire.AppendTag(b, rbacActionField, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(action))
	}
	for _, p := range policies {
		size := policySize(p)
		b = protowire.AppendTag(b, rbacPoliciesField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entrySize(len(p.name), size)))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, p.name)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
		b = protowire.AppendTag(b, policyPermsField, protowire.BytesType)
		b = protowire.AppendBytes(b, p.perm)
		b = protowire.AppendTag(b, policyPrincipalField, protowire.BytesType)
		b = protowire.AppendBytes(b, p.principal)
	}
	return b
}
