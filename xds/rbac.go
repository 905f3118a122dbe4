package xds

import (
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

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
	if pr == nil {
		pr = newPrincipals(snap, nil)
	}
	rules := &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{}}
	rules.Action = rbacPolicies(snap, dest, l7, nil, func(pol rbacPolicy) {
		var p *rbacv3.Principal
		if pol.in.Source == mesh.Wildcard {
			p = pr.wildcard()
			if len(pol.earlier) > 0 {
				ids := make([]*rbacv3.Principal, len(pol.earlier))
				for k, src := range pol.earlier {
					ids[k] = pr.source(src)
				}
				p = andIDs(p, notID(orIDs(ids...)))
			}
		} else {
			p = pr.source(pol.in.Source)
		}
		rules.Policies[string(pol.appendName(nil))] = newPolicy(p, pol.permission())
	})
	return rules
}

// rbacPolicy is one policy of the rules into a destination: of its index-th intention in, the
// perm-th permission (-1: any request).
type rbacPolicy struct {
	index  int
	in     *mesh.Intention
	perm   int
	engine mesh.Action // the action of the rules' policies
	// earlier are, for a wildcard source, the exact sources of the intentions before it,
	// which its principal excludes.
	earlier []string
}

// appendName appends the policy's name: %03d-<source>-to-<destination>, and -perm-<perm> for
// a permission.
func (p rbacPolicy) appendName(b []byte) []byte {
	if p.index < 100 {
		b = append(b, '0')
		if p.index < 10 {
			b = append(b, '0')
		}
	}
	b = strconv.AppendInt(b, int64(p.index), 10)
	b = append(append(b, '-'), policySource(p.in.Source)...)
	b = append(append(b, "-to-"...), policySource(p.in.Destination)...)
	if p.perm >= 0 {
		b = strconv.AppendInt(append(b, "-perm-"...), int64(p.perm), 10)
	}
	return b
}

// permission builds the policy's permission: any request, or the match of its permission AND
// NOT any earlier permission of the opposite action.
func (p rbacPolicy) permission() *rbacv3.Permission {
	if p.perm < 0 {
		return anyPermission()
	}
	var opposite []*rbacv3.Permission
	for _, q := range p.in.Permissions[:p.perm] {
		if q.Action != p.engine {
			opposite = append(opposite, matchPermission(q.HTTP))
		}
	}
	m := matchPermission(p.in.Permissions[p.perm].HTTP)
	if len(opposite) > 0 {
		m = andRules(m, notRule(orRules(opposite...)))
	}
	return m
}

// rbacPolicies calls visit with each policy of the rules that enforce the intentions into dest
// (see rbacRules), in the evaluator's order, and returns the rules' action. It is the one
// place that decides what the rules are: rbacRules builds them as messages from it, and
// rbacEncoder writes them straight to bytes.
//
// scratch, if not nil, is space reused from destination to destination (a policy's earlier is
// good only until visit returns).
func rbacPolicies(snap *mesh.Snapshot, dest string, l7 bool, scratch *policyScratch, visit func(rbacPolicy)) rbacv3.RBAC_Action {
	engine, action := mesh.Allow, rbacv3.RBAC_ALLOW
	if snap.Mesh.DefaultIntention == mesh.Allow {
		engine, action = mesh.Deny, rbacv3.RBAC_DENY
	}
	if scratch == nil {
		scratch = &policyScratch{}
	}
	inbound := snap.AppendInbound(scratch.inbound[:0], dest)
	earlier := scratch.earlier[:0] // exact sources of every intention so far
	// Kept for the next destination, holding nothing of this snapshot.
	defer func() {
		clear(inbound)
		clear(earlier)
		scratch.inbound, scratch.earlier = inbound[:0], earlier[:0]
	}()
	var seen map[string]bool // the same, once there are many
	for i, in := range inbound {
		if seen == nil && len(earlier) > 16 {
			seen = make(map[string]bool, 2*len(earlier))
			for _, src := range earlier {
				seen[src] = true
			}
		}
		if seen != nil && seen[in.Source] || seen == nil && slices.Contains(earlier, in.Source) {
			continue // shadowed: every source it names is decided by an earlier intention
		}
		if seen != nil {
			seen[in.Source] = true
		}
		pol := rbacPolicy{index: i, in: in, perm: -1, engine: engine}
		if in.Source == mesh.Wildcard {
			// Sources it does not exclude are decided by it: nothing after it can decide.
			pol.earlier = earlier[:len(earlier):len(earlier)]
		} else {
			// An exact source can only overlap an earlier wildcard, and none precedes it here.
			earlier = append(earlier, in.Source)
		}
		switch {
		case in.Action != "":
			if in.Action == engine {
				visit(pol)
			}
		case !l7:
			// Permissions on a tcp destination are rejected by the compiler; if one gets here,
			// deny its sources whatever the engine.
			if engine == mesh.Deny {
				visit(pol)
			}
		default:
			for j := range in.Permissions {
				if in.Permissions[j].Action == engine {
					pol.perm = j
					visit(pol)
				}
			}
		}
		if in.Source == mesh.Wildcard {
			break
		}
	}
	return action
}

// policyScratch is rbacPolicies' space for one destination's intentions and earlier sources.
type policyScratch struct {
	inbound []*mesh.Intention
	earlier []string
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
	// pieces are the principals and permissions encoded and checked (rbacenc.go), shared with
	// the snapshots before and after of the same trust domain and datacenters.
	pieces    *pieceCache
	wildPiece atomic.Pointer[piece]
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
		// What the pieces are keyed by is all they depend on, but for the trust domain and the
		// datacenters: keep them, unless they hold much more than this snapshot can use.
		if prev.pieces.size() <= 2*(len(snap.Services)+len(snap.Intentions))+64 {
			pr.pieces = prev.pieces
		}
	}
	if pr.pieces == nil {
		pr.pieces = &pieceCache{}
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
