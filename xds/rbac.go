package xds

import (
	"errors"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	mesh "github.com/meshgit/mesh"
)

// RBAC rendering. The rules come from Snapshot.Inbound(dest), the evaluator's own list of the
// intentions that can decide a request to dest, in evaluation order; the first whose source
// matches decides (mesh.Authorize). Envoy and gRPC RBAC have no order, so the order is encoded
// the way Consul does it:
//
//   - The mesh default picks the engine: default deny renders ALLOW policies (the requests that
//     are allowed), default allow renders DENY policies (the requests that are denied).
//   - Each intention's principals exclude (with NOT) the sources of every intention before it, so
//     a lower-precedence intention never decides for a source that a higher one names. An
//     intention fully shadowed by earlier ones (a second wildcard, or an exact source already
//     named) renders nothing.
//   - An action intention whose action equals the engine's renders one policy with any
//     permission; one whose action differs renders nothing (the engine's default does the job),
//     but still excludes its sources from the intentions after it.
//   - An intention with permissions renders one policy per permission of the engine's action,
//     whose permission is the permission's match AND NOT any earlier permission of the opposite
//     action. When no permission matches, nothing is rendered for the source and, because later
//     intentions exclude it, the engine's default (the mesh default) decides: no fall-through.

// Filter names, as Envoy and gRPC know them.
const (
	httpRBACFilterName    = "envoy.filters.http.rbac"
	networkRBACFilterName = "envoy.filters.network.rbac"
)

// rbacRules renders the rules that enforce the intentions into dest. l7 says whether the
// destination speaks HTTP (permissions may then be rendered); for a tcp destination, an
// intention with permissions cannot be enforced and fails closed: it denies its sources. The
// principal of each source is taken from pr (built once per snapshot, shared by every
// destination); a nil pr builds them afresh.
func rbacRules(snap *mesh.Snapshot, dest string, l7 bool, pr *principals) *rbacv3.RBAC {
	def := snap.Mesh.DefaultIntention
	if def == "" {
		def = mesh.Deny
	}
	engine := mesh.Allow // the action of the rendered policies
	rules := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	if def == mesh.Allow {
		engine = mesh.Deny
		rules.Action = rbacv3.RBAC_DENY
	}
	if pr == nil {
		pr = newPrincipals(snap, nil)
	}
	var earlier []*rbacv3.Principal // sources of every intention so far
	seen := map[string]bool{}
	wildcardSeen := false
	for i, in := range snap.Inbound(dest) {
		if wildcardSeen || seen[in.Source] {
			continue // shadowed: every source it names is decided by an earlier intention
		}
		var p *rbacv3.Principal
		if in.Source == mesh.Wildcard {
			p = pr.wildcard()
			if len(earlier) > 0 {
				p = andIDs(p, notID(orIDs(earlier...)))
			}
			wildcardSeen = true
		} else {
			p = pr.source(in.Source)
			seen[in.Source] = true
			// An exact source can only overlap an earlier wildcard, and none precedes it here.
			// Messages are never modified once built, so both places share p.
			earlier = append(earlier, p)
		}
		name := policyName(i, in)
		switch {
		case in.Action != "":
			if in.Action == engine {
				rules.Policies[name] = newPolicy(p, anyPermission())
			}
		case !l7:
			// Permissions on a tcp destination are rejected by the compiler; if one gets here,
			// deny its sources whatever the engine.
			if engine == mesh.Deny {
				rules.Policies[name] = newPolicy(p, anyPermission())
			}
		default:
			var opposite []*rbacv3.Permission
			for j := range in.Permissions {
				perm := &in.Permissions[j]
				m := matchPermission(perm.HTTP)
				if perm.Action != engine {
					opposite = append(opposite, m)
					continue
				}
				if len(opposite) > 0 {
					m = andRules(m, notRule(orRules(opposite...)))
				}
				rules.Policies[name+"-perm-"+strconv.Itoa(j)] = newPolicy(p, m)
			}
		}
	}
	return rules
}

// policyName names the policy of the i-th intention into a destination: %03d-<source>-to-<destination>.
func policyName(i int, in *mesh.Intention) string {
	var b strings.Builder
	src, dst := policySource(in.Source), policySource(in.Destination)
	b.Grow(len(src) + len(dst) + 8)
	n := strconv.Itoa(i)
	for k := len(n); k < 3; k++ {
		b.WriteByte('0')
	}
	b.WriteString(n)
	b.WriteByte('-')
	b.WriteString(src)
	b.WriteString("-to-")
	b.WriteString(dst)
	return b.String()
}

// principals are the principals of the sources of one snapshot's intentions, each built once
// and shared, as the same immutable message, by the RBAC of every destination that names it:
// a mesh-wide change renders every destination's rules, and most of their messages are the
// principals of the same few thousand sources. They depend on the trust domain and the
// datacenters alone, so a snapshot that keeps both borrows those of the one before. Safe for
// concurrent use.
type principals struct {
	trustDomain string
	dcs         []string
	bySource    sync.Map // source service → *rbacv3.Principal
	wild        atomic.Pointer[rbacv3.Principal]
	enc         sync.Map // principal or permission message → its encoding (marshalRules)
	valid       sync.Map // *rbacv3.Principal → bool: validPrincipal's answer
	// prev is the previous snapshot's, with the same trust domain and datacenters; nil once a
	// newer one took over, so that they do not chain.
	prev atomic.Pointer[principals]
}

// newPrincipals returns the principals of snap, borrowing prev's if they are of the same trust
// domain and datacenters (prev's own predecessor is not kept: the chain stops there).
func newPrincipals(snap *mesh.Snapshot, prev *principals) *principals {
	pr := &principals{trustDomain: snap.Mesh.TrustDomain, dcs: datacenters(snap)}
	if prev != nil && prev.trustDomain == pr.trustDomain && slices.Equal(prev.dcs, pr.dcs) {
		pr.prev.Store(prev)
		prev.prev.Store(nil)
	}
	return pr
}

// source returns the principal of an exact source service.
func (pr *principals) source(service string) *rbacv3.Principal {
	if v, ok := pr.bySource.Load(service); ok {
		return v.(*rbacv3.Principal)
	}
	var p *rbacv3.Principal
	if prev := pr.prev.Load(); prev != nil {
		if v, ok := prev.bySource.Load(service); ok {
			p = v.(*rbacv3.Principal)
		}
	}
	if p == nil {
		p = sourcePrincipal(pr.trustDomain, pr.dcs, service)
	}
	v, _ := pr.bySource.LoadOrStore(service, p)
	return v.(*rbacv3.Principal)
}

// wildcard returns the principal of any service of the trust domain.
func (pr *principals) wildcard() *rbacv3.Principal {
	if p := pr.wild.Load(); p != nil {
		return p
	}
	pr.wild.CompareAndSwap(nil, wildcardPrincipal(pr.trustDomain))
	return pr.wild.Load()
}

func policySource(s string) string {
	if s == mesh.Wildcard {
		return "any"
	}
	return s
}

// datacenters returns every datacenter a source certificate may name, sorted.
func datacenters(snap *mesh.Snapshot) []string {
	set := map[string]bool{}
	if snap.Mesh.Datacenter != "" {
		set[snap.Mesh.Datacenter] = true
	}
	for _, dc := range snap.Mesh.Datacenters {
		set[dc] = true
	}
	out := make([]string, 0, len(set))
	for dc := range set {
		out = append(out, dc)
	}
	sort.Strings(out)
	return out
}

func authenticated(sm *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
		Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: sm},
	}}
}

// sourcePrincipal matches the SPIFFE ID of service in any of the mesh's datacenters.
func sourcePrincipal(trustDomain string, dcs []string, service string) *rbacv3.Principal {
	if len(dcs) == 0 {
		dcs = []string{""}
	}
	ids := make([]*rbacv3.Principal, len(dcs))
	for i, dc := range dcs {
		ids[i] = authenticated(exactString(mesh.SpiffeID(trustDomain, dc, service)))
	}
	return orIDs(ids...)
}

// wildcardPrincipal matches the SPIFFE ID of any service of the trust domain.
func wildcardPrincipal(trustDomain string) *rbacv3.Principal {
	return authenticated(regexString(`spiffe://` + regexp.QuoteMeta(trustDomain) + `/ns/default/dc/[^/]+/svc/[^/]+`))
}

func orIDs(ids ...*rbacv3.Principal) *rbacv3.Principal {
	if len(ids) == 1 {
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func andIDs(ids ...*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func notID(p *rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}}
}

// anyPerm is the permission of any request: one message, shared by every policy that has it
// (messages are never modified once built).
var anyPerm = &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}

func anyPermission() *rbacv3.Permission { return anyPerm }

// newPolicy returns the policy of one principal and one permission, in one allocation: a
// mesh-wide change builds every service's policies again.
func newPolicy(p *rbacv3.Principal, perm *rbacv3.Permission) *rbacv3.Policy {
	a := &struct {
		policy      rbacv3.Policy
		principals  [1]*rbacv3.Principal
		permissions [1]*rbacv3.Permission
	}{principals: [1]*rbacv3.Principal{p}, permissions: [1]*rbacv3.Permission{perm}}
	a.policy.Principals, a.policy.Permissions = a.principals[:], a.permissions[:]
	return &a.policy
}

func andRules(rules ...*rbacv3.Permission) *rbacv3.Permission {
	if len(rules) == 1 {
		return rules[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: rules}}}
}

func orRules(rules ...*rbacv3.Permission) *rbacv3.Permission {
	if len(rules) == 1 {
		return rules[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: rules}}}
}

func notRule(r *rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: r}}
}

func headerPermission(h *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

// matchPermission renders an HTTP match as an RBAC permission that holds exactly when
// m.Matches does. A nil or empty match is any request.
func matchPermission(m *mesh.HTTPMatch) *rbacv3.Permission {
	if m == nil {
		return anyPermission()
	}
	var rules []*rbacv3.Permission
	if sm := pathStringMatcher(m); sm != nil {
		rules = append(rules, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{
			UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm}},
		}})
	}
	if len(m.Methods) > 0 {
		rules = append(rules, headerPermission(methodsMatcher(m.Methods)))
	}
	for _, h := range m.Header {
		hm, negate := headerMatcher(h)
		r := headerPermission(hm)
		if negate {
			r = notRule(r)
		} else if hm.InvertMatch {
			rules = append(rules, headerPermission(presenceGuard(hm.Name)))
		}
		rules = append(rules, r)
	}
	for _, q := range m.QueryParam {
		rules = append(rules, headerPermission(&routev3.HeaderMatcher{
			Name:                 ":path",
			HeaderMatchSpecifier: headerRegex(queryPathRegex(q)),
		}))
	}
	if len(rules) == 0 {
		return anyPermission()
	}
	return andRules(rules...)
}

// httpRBACFilter wraps rules as the HTTP filter of a public or gRPC server listener.
func httpRBACFilter(rules *rbacv3.RBAC) (*hcmv3.HttpFilter, error) {
	return typedHTTPFilter(httpRBACFilterName, &rbacfilterv3.RBAC{Rules: rules})
}

// networkRBAC is the configuration of the network RBAC filter of a tcp public listener.
func networkRBAC(service string, rules *rbacv3.RBAC) *netrbacv3.RBAC {
	return &netrbacv3.RBAC{StatPrefix: "connect_authz_" + service, Rules: rules}
}

// validateNetworkRBAC is nf.ValidateAll, checking each principal message once per snapshot
// (and the previous one's, which this one borrows): a mesh-wide change validates the rules of
// every destination, and most of what they hold is the principals of the same few thousand
// sources. Principals are checked by validPrincipal; the rest of nf is checked by
// ValidateAll itself, on a shallow copy (field by field) whose policies hold, instead of their principals, as
// many of a principal that is valid. When anything is invalid, the error is nf.ValidateAll's
// own. A nil pr runs nf.ValidateAll.
func (pr *principals) validateNetworkRBAC(nf *netrbacv3.RBAC) error {
	rules := nf.GetRules()
	if pr == nil || rules == nil {
		return nf.ValidateAll()
	}
	n := 0
	for _, pol := range rules.GetPolicies() {
		for _, p := range pol.GetPrincipals() {
			if !pr.validPrincipal(p) {
				return nf.ValidateAll()
			}
		}
		n = max(n, len(pol.GetPrincipals()))
	}
	stand := make([]*rbacv3.Principal, n)
	for i := range stand {
		stand[i] = anyPrincipal
	}
	// Copies field by field (TestValidateNetworkRBACMatchesValidateAll holds the lists of
	// fields to the messages' descriptors).
	r := &rbacv3.RBAC{Action: rules.Action, AuditLoggingOptions: rules.AuditLoggingOptions}
	if len(rules.GetPolicies()) > 0 {
		r.Policies = make(map[string]*rbacv3.Policy, len(rules.GetPolicies()))
		for name, pol := range rules.GetPolicies() {
			r.Policies[name] = &rbacv3.Policy{Permissions: pol.Permissions, Principals: stand[:len(pol.GetPrincipals())],
				Condition: pol.Condition, CheckedCondition: pol.CheckedCondition, CelConfig: pol.CelConfig}
		}
	}
	c := &netrbacv3.RBAC{Rules: r, Matcher: nf.Matcher, ShadowRules: nf.ShadowRules, ShadowMatcher: nf.ShadowMatcher,
		ShadowRulesStatPrefix: nf.ShadowRulesStatPrefix, StatPrefix: nf.StatPrefix, EnforcementType: nf.EnforcementType,
		DelayDeny: nf.DelayDeny}
	if c.ValidateAll() != nil {
		return nf.ValidateAll()
	}
	return nil
}

// anyPrincipal is a valid principal, standing in for principals checked already.
var anyPrincipal = &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}

// validPrincipal reports whether p.ValidateAll() passes, remembering it per message
// (principals are never modified once built). A set of principals (and_ids, or_ids) or a
// negation is valid when its principals are, each looked up or checked once; anything else,
// or a composite whose parts are not all valid, is checked by ValidateAll itself.
func (pr *principals) validPrincipal(p *rbacv3.Principal) bool {
	if v, ok := pr.valid.Load(p); ok {
		return v.(bool)
	}
	if prev := pr.prev.Load(); prev != nil {
		if v, ok := prev.valid.Load(p); ok {
			pr.valid.Store(p, v)
			return v.(bool)
		}
	}
	ok := false
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_AndIds:
		ok = id != nil && pr.validSet(id.AndIds)
	case *rbacv3.Principal_OrIds:
		ok = id != nil && pr.validSet(id.OrIds)
	case *rbacv3.Principal_NotId:
		ok = id != nil && id.NotId != nil && pr.validPrincipal(id.NotId)
	}
	if !ok {
		ok = p.ValidateAll() == nil
	}
	pr.valid.Store(p, ok)
	return ok
}

// validSet reports whether a set of principals is valid: it has some, all valid, and nothing
// else set.
func (pr *principals) validSet(s *rbacv3.Principal_Set) bool {
	if s == nil || len(s.GetIds()) == 0 || len(s.ProtoReflect().GetUnknown()) > 0 {
		return false
	}
	for _, p := range s.GetIds() {
		if !pr.validPrincipal(p) {
			return false
		}
	}
	return true
}

// marshalRules returns the deterministic encoding of rules, as proto.MarshalOptions{
// Deterministic: true} writes it, with the encoding of each principal and permission message
// made once per snapshot (and the previous one's, which this one borrows): the rules of every
// destination hold the principals of the same sources. The encoding is protobuf's: set fields
// in field number order, map entries sorted by key (TestRBACAnyMatchesToAny holds the bytes
// to anypb.MarshalFrom's). Rules holding anything rbacRules does not set are marshalled by
// proto; so is everything for a nil pr.
func (pr *principals) marshalRules(rules *rbacv3.RBAC) ([]byte, error) {
	opts := proto.MarshalOptions{Deterministic: true}
	if pr == nil || rules.GetAuditLoggingOptions() != nil || len(rules.ProtoReflect().GetUnknown()) > 0 {
		return opts.Marshal(rules)
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for name, pol := range rules.GetPolicies() {
		if pol == nil || pol.GetCondition() != nil || pol.GetCheckedCondition() != nil || pol.GetCelConfig() != nil ||
			len(pol.ProtoReflect().GetUnknown()) > 0 {
			return opts.Marshal(rules)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	// First the encodings of every permission and principal, in order, and the size of each
	// policy; then the bytes, into one slice of the size they add up to.
	var encs [][]byte
	sizes := make([]int, len(names))
	total := 0
	if rules.GetAction() != 0 {
		total = protowire.SizeTag(1) + protowire.SizeVarint(uint64(rules.GetAction()))
	}
	for i, name := range names {
		p := rules.Policies[name]
		for _, perm := range p.GetPermissions() {
			e, err := pr.encoding(perm)
			if err != nil {
				return opts.Marshal(rules) // proto's own error, or its bytes
			}
			encs = append(encs, e)
			sizes[i] += protowire.SizeTag(1) + protowire.SizeBytes(len(e))
		}
		for _, id := range p.GetPrincipals() {
			e, err := pr.encoding(id)
			if err != nil {
				return opts.Marshal(rules)
			}
			encs = append(encs, e)
			sizes[i] += protowire.SizeTag(2) + protowire.SizeBytes(len(e))
		}
		total += protowire.SizeTag(2) + protowire.SizeBytes(entrySize(name, sizes[i]))
	}
	b := make([]byte, 0, total)
	if rules.GetAction() != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(rules.GetAction()))
	}
	k := 0
	for i, name := range names {
		p := rules.Policies[name]
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entrySize(name, sizes[i])))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, name)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizes[i]))
		for range p.GetPermissions() {
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendBytes(b, encs[k])
			k++
		}
		for range p.GetPrincipals() {
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendBytes(b, encs[k])
			k++
		}
	}
	return b, nil
}

// entrySize is the size of a map entry {key: name, value: a message of size bytes}.
func entrySize(name string, size int) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(len(name)) + protowire.SizeTag(2) + protowire.SizeBytes(size)
}

// encoding returns the deterministic encoding of a principal or permission message,
// remembered per message (never modified once built). A set of principals (and_ids, or_ids)
// or a negation is encoded from the encodings of its principals; anything else by proto.
func (pr *principals) encoding(m proto.Message) ([]byte, error) {
	if !m.ProtoReflect().IsValid() {
		return nil, errNilRBACMessage
	}
	if v, ok := pr.enc.Load(m); ok {
		return v.([]byte), nil
	}
	if prev := pr.prev.Load(); prev != nil {
		if v, ok := prev.enc.Load(m); ok {
			pr.enc.Store(m, v)
			return v.([]byte), nil
		}
	}
	var b []byte
	var err error
	if p, ok := m.(*rbacv3.Principal); ok && len(p.ProtoReflect().GetUnknown()) == 0 {
		switch id := p.GetIdentifier().(type) {
		case *rbacv3.Principal_AndIds:
			if id != nil {
				b, err = pr.appendSet(1, id.AndIds)
			}
		case *rbacv3.Principal_OrIds:
			if id != nil {
				b, err = pr.appendSet(2, id.OrIds)
			}
		case *rbacv3.Principal_NotId:
			if id != nil && id.NotId != nil {
				var e []byte
				if e, err = pr.encoding(id.NotId); err == nil {
					b = protowire.AppendTag(nil, 8, protowire.BytesType)
					b = protowire.AppendBytes(b, e)
				}
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if b == nil {
		if b, err = (proto.MarshalOptions{Deterministic: true}).Marshal(m); err != nil {
			return nil, err
		}
	}
	pr.enc.Store(m, b)
	return b, nil
}

// appendSet returns the encoding of a principal whose identifier is set, as field num (and_ids
// or or_ids), or nil for proto to marshal it (a nil set, unknown fields).
func (pr *principals) appendSet(num protowire.Number, set *rbacv3.Principal_Set) ([]byte, error) {
	if set == nil || len(set.ProtoReflect().GetUnknown()) > 0 {
		return nil, nil
	}
	var s []byte
	for _, p := range set.GetIds() {
		e, err := pr.encoding(p)
		if err != nil {
			return nil, err
		}
		s = protowire.AppendTag(s, 1, protowire.BytesType)
		s = protowire.AppendBytes(s, e)
	}
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, s), nil
}

// errNilRBACMessage is why encoding leaves a nil message to proto (which rejects it in a list).
var errNilRBACMessage = errors.New("nil message in RBAC rules")
