package proxy

import (
	"fmt"
	"regexp"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// rbac is a compiled network RBAC rule set: it decides on the caller's SPIFFE ID (the URI SAN of
// the verified client certificate), as Envoy's network RBAC filter does on principal_name.
type rbac struct {
	allow    bool // ALLOW engine (else DENY)
	policies []func(id string) bool
}

// allowed says whether a caller with SPIFFE ID id may connect. nil rules allow everyone.
func (r *rbac) allowed(id string) bool {
	if r == nil {
		return true
	}
	for _, p := range r.policies {
		if p(id) {
			return r.allow
		}
	}
	return !r.allow
}

// compileRBAC compiles rules; what a network filter on a TLS connection cannot decide alone
// (headers, paths, ports, addresses, metadata) is refused rather than guessed.
func compileRBAC(rules *rbacv3.RBAC) (*rbac, error) {
	if rules == nil {
		return nil, nil
	}
	r := &rbac{}
	switch rules.GetAction() {
	case rbacv3.RBAC_ALLOW:
		r.allow = true
	case rbacv3.RBAC_DENY:
	default:
		return nil, fmt.Errorf("%w: RBAC action %s", ErrUnsupported, rules.GetAction())
	}
	for _, name := range sortedKeys(rules.GetPolicies()) {
		pol := rules.GetPolicies()[name]
		if pol.GetCondition() != nil || pol.GetCheckedCondition() != nil {
			return nil, fmt.Errorf("%w: RBAC policy %s has a condition", ErrUnsupported, name)
		}
		for _, perm := range pol.GetPermissions() {
			if err := anyPermission(perm); err != nil {
				return nil, fmt.Errorf("RBAC policy %s: %w", name, err)
			}
		}
		var ps []func(string) bool
		for _, pr := range pol.GetPrincipals() {
			f, err := compilePrincipal(pr)
			if err != nil {
				return nil, fmt.Errorf("RBAC policy %s: %w", name, err)
			}
			ps = append(ps, f)
		}
		if len(pol.GetPermissions()) == 0 {
			continue // a policy without permissions matches nothing
		}
		r.policies = append(r.policies, func(id string) bool {
			for _, f := range ps {
				if f(id) {
					return true
				}
			}
			return false
		})
	}
	return r, nil
}

// anyPermission accepts only permissions that hold for every connection (any, and their
// combinations that reduce to it): an L4 proxy has no request to match.
func anyPermission(p *rbacv3.Permission) error {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if r.Any {
			return nil
		}
	case *rbacv3.Permission_AndRules:
		for _, s := range r.AndRules.GetRules() {
			if err := anyPermission(s); err != nil {
				return err
			}
		}
		return nil
	case *rbacv3.Permission_OrRules:
		for _, s := range r.OrRules.GetRules() {
			if anyPermission(s) == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: RBAC permission %v (only any)", ErrUnsupported, p)
}

func compilePrincipal(p *rbacv3.Principal) (func(string) bool, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return func(string) bool { return id.Any }, nil
	case *rbacv3.Principal_Authenticated_:
		if id.Authenticated.GetPrincipalName() == nil {
			return func(s string) bool { return s != "" }, nil
		}
		return compileString(id.Authenticated.GetPrincipalName())
	case *rbacv3.Principal_OrIds, *rbacv3.Principal_AndIds:
		set, and := p.GetOrIds(), false
		if a, ok := id.(*rbacv3.Principal_AndIds); ok {
			set, and = a.AndIds, true
		}
		var fs []func(string) bool
		for _, s := range set.GetIds() {
			f, err := compilePrincipal(s)
			if err != nil {
				return nil, err
			}
			fs = append(fs, f)
		}
		return func(s string) bool {
			for _, f := range fs {
				if f(s) != and {
					return !and
				}
			}
			return and
		}, nil
	case *rbacv3.Principal_NotId:
		f, err := compilePrincipal(id.NotId)
		if err != nil {
			return nil, err
		}
		return func(s string) bool { return !f(s) }, nil
	}
	return nil, fmt.Errorf("%w: RBAC principal %v (only any, authenticated, and_ids, or_ids, not_id)", ErrUnsupported, p)
}

// compileString compiles a StringMatcher with Envoy's semantics (a regex matches the whole string).
func compileString(m *matcherv3.StringMatcher) (func(string) bool, error) {
	fold := func(s string) string { return s }
	if m.GetIgnoreCase() {
		fold = strings.ToLower
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := fold(p.Exact)
		return func(s string) bool { return fold(s) == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := fold(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(fold(s), want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := fold(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(fold(s), want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := fold(p.Contains)
		return func(s string) bool { return strings.Contains(fold(s), want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return nil, fmt.Errorf("%w: regex %q: %v", ErrUnsupported, p.SafeRegex.GetRegex(), err)
		}
		return re.MatchString, nil
	}
	return nil, fmt.Errorf("%w: string matcher %v", ErrUnsupported, m)
}
