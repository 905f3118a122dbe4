package xds

import (
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	mesh "github.com/meshgit/mesh"
)

// This file turns mesh.HTTPMatch conditions into Envoy matchers. The semantics must equal
// mesh.HTTPMatch.Matches, because that is what `mesh intention check` and reviews promise:
//
//   - regexes match the whole string (Envoy safe_regex and gRPC both full-match);
//   - PathPrefix is a plain string prefix and paths ignore the query string;
//   - methods and header values are case-sensitive; header names are lower-cased, as HTTP/2
//     and gRPC metadata carry them;
//   - an inverted exact/prefix/suffix/regex header match does not hold when the header is
//     absent (Envoy and gRPC agree), while an inverted present match does.
//
// "present" is rendered as a safe_regex ".*" match rather than present_match, because gRPC
// treats a header whose value is empty as absent for present_match, while the mesh (and Envoy)
// call it present.
//
// Header matchers use HeaderMatcher's explicit fields (exact_match, prefix_match, suffix_match,
// safe_regex_match, present_match), not string_match: gRPC C-core 1.51 (Python, C++, Ruby, PHP)
// rejects a whole RouteConfiguration whose header matcher uses string_match ("Invalid route
// header matcher specified"). The explicit fields are deprecated in Envoy's v3 API but still
// accepted by Envoy, grpc-go (xdsresource converts them to the equivalent StringMatcher), grpc-js
// and C-core, and mean exactly what string_match means with ignore_case false, the only form we
// emit. interop/ runs C-core and grpc-js against this configuration.

// presentRegex matches any header value, including the empty one.
const presentRegex = ".*"

func exactString(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefixString(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

// headerRegex is a header matcher specifier matching the whole value against expr.
func headerRegex(expr string) *routev3.HeaderMatcher_SafeRegexMatch {
	return &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: expr}}
}

func regexString(expr string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
		SafeRegex: &matcherv3.RegexMatcher{Regex: expr},
	}}
}

// methodsMatcher matches the :method pseudo-header against any of methods.
func methodsMatcher(methods []string) *routev3.HeaderMatcher {
	if len(methods) == 1 {
		return &routev3.HeaderMatcher{
			Name:                 ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: methods[0]},
		}
	}
	quoted := make([]string, len(methods))
	for i, m := range methods {
		quoted[i] = regexp.QuoteMeta(m)
	}
	return &routev3.HeaderMatcher{
		Name:                 ":method",
		HeaderMatchSpecifier: headerRegex(strings.Join(quoted, "|")),
	}
}

// headerMatcher renders one header condition. For an inverted present match it returns the
// positive matcher and negate=true: the caller wraps it in NOT where it can (RBAC), or uses
// invert_match (routes, where Envoy has no NOT). Any other inverted matcher the caller puts
// beside a presenceGuard.
func headerMatcher(h mesh.HeaderMatch) (m *routev3.HeaderMatcher, negate bool) {
	m = &routev3.HeaderMatcher{Name: strings.ToLower(h.Name)}
	switch h.Kind {
	case mesh.MatchExact:
		m.HeaderMatchSpecifier = &routev3.HeaderMatcher_ExactMatch{ExactMatch: h.Value}
	case mesh.MatchPrefix:
		m.HeaderMatchSpecifier = &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: h.Value}
	case mesh.MatchSuffix:
		m.HeaderMatchSpecifier = &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: h.Value}
	case mesh.MatchRegex:
		m.HeaderMatchSpecifier = headerRegex(h.Value)
	case mesh.MatchPresent:
		m.HeaderMatchSpecifier = headerRegex(presentRegex)
		return m, h.Invert
	default:
		// The compiler rejects unknown kinds; never match rather than match everything.
		m.HeaderMatchSpecifier = headerRegex(`[^\s\S]`)
	}
	m.InvertMatch = h.Invert
	return m, false
}

// presenceGuard is the matcher that accompanies (in a conjunction) every inverted value matcher
// of header name. grpc-js-xds 1.14 applies invert_match to an absent header too, so "x-b not
// regex R" would hold there for a request without x-b, where Envoy, grpc-go, C-core and the
// mesh say it does not. Requiring the header beside the inverted matcher gives every
// implementation the mesh's meaning (TestDifferentialAuthorizeVsGRPCJSRBAC found it).
func presenceGuard(name string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: headerRegex(presentRegex)}
}

// queryPathRegex renders a query parameter condition as a regex over the whole :path header, for
// RBAC, which has no query parameter matcher. It holds when the first parameter named q.Name
// satisfies q, as mesh.QueryMatch does. Keys must not contain regex-special characters beyond
// what QuoteMeta escapes; values of a regex match may not contain '&' or '#'.
func queryPathRegex(q mesh.QueryMatch) string {
	name := regexp.QuoteMeta(q.Name)
	// Parameters before the first one named q.Name: any parameter whose key differs. RE2 has no
	// lookahead, so "key differs" is spelled out: shorter, longer, or differing at some byte.
	other := otherKeyRegex(q.Name)
	prefix := `[^?#]*\?(?:` + other + `(?:=[^&#]*)?&)*`
	var value string
	switch q.Kind {
	case mesh.MatchPresent:
		value = `(?:=[^&#]*)?`
	case mesh.MatchExact:
		if q.Value == "" {
			value = `=?`
		} else {
			value = `=` + regexp.QuoteMeta(q.Value)
		}
	case mesh.MatchRegex:
		value = `=(?:` + q.Value + `)`
		// A parameter without '=' has the empty value.
		if re, err := mesh.FullRegexp(q.Value); err == nil && re.MatchString("") {
			value = `(?:` + value + `)?`
		}
	default:
		return `[^\s\S]`
	}
	return prefix + name + value + `(?:[&#].*)?`
}

// otherKeyRegex matches a query key (no '=', '&', '#') that is not exactly name.
func otherKeyRegex(name string) string {
	const ch = `[^=&#]`
	if name == "" {
		return ch + `+`
	}
	var alts []string
	// Shorter: a proper prefix of name (including empty).
	for i := 0; i < len(name); i++ {
		alts = append(alts, regexp.QuoteMeta(name[:i]))
	}
	// Longer: name followed by at least one more byte.
	alts = append(alts, regexp.QuoteMeta(name)+ch+`+`)
	// Differing at byte i.
	for i := 0; i < len(name); i++ {
		alts = append(alts, regexp.QuoteMeta(name[:i])+`[^=&#`+regexp.QuoteMeta(name[i:i+1])+`]`+ch+`*`)
	}
	return `(?:` + strings.Join(alts, "|") + `)`
}

// pathStringMatcher renders the path condition of m for RBAC's url_path (which ignores the
// query string), or nil when m has none.
func pathStringMatcher(m *mesh.HTTPMatch) *matcherv3.StringMatcher {
	switch {
	case m.Path != "":
		return exactString(m.Path)
	case m.PathPrefix != "":
		return prefixString(m.PathPrefix)
	case m.PathRegex != "":
		return regexString(m.PathRegex)
	}
	return nil
}
