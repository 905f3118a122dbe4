package mesh

import (
	"regexp"
	"regexp/syntax"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Action is the verdict of an intention or permission.
type Action string

// Actions.
const (
	Allow Action = "allow"
	Deny  Action = "deny"
)

// Intention precedences, as in Consul: an exact source and destination beat a wildcard source,
// which beats a wildcard destination, which beats both wildcards.
const (
	PrecedenceExact          = 9 // D ← S
	PrecedenceWildcardSource = 8 // D ← *
	PrecedenceWildcardDest   = 6 // * ← S
	PrecedenceWildcardBoth   = 5 // * ← *
)

// Precedence returns the precedence of an intention from source to destination.
func Precedence(source, destination string) int {
	switch {
	case destination != Wildcard && source != Wildcard:
		return PrecedenceExact
	case destination != Wildcard:
		return PrecedenceWildcardSource
	case source != Wildcard:
		return PrecedenceWildcardDest
	default:
		return PrecedenceWildcardBoth
	}
}

// Intention says whether Source may call Destination: either Action alone decides, or the first
// of Permissions whose match holds decides.
type Intention struct {
	Source      string       `json:"source"`
	Destination string       `json:"destination"`
	Precedence  int          `json:"precedence"`
	Action      Action       `json:"action,omitempty"`
	Permissions []Permission `json:"permissions,omitempty"`
	Description string       `json:"description,omitempty"`
}

// Permission is an L7 rule of an intention.
type Permission struct {
	Action Action     `json:"action"`
	HTTP   *HTTPMatch `json:"http,omitempty"`
}

// HTTPMatch matches an HTTP request. Every field that is set must hold. At most one of Path,
// PathPrefix and PathRegex is set. Matching follows Envoy: regexes match the whole string,
// PathPrefix is a plain string prefix, methods and header values are case-sensitive.
type HTTPMatch struct {
	Path       string        `json:"path,omitempty"`
	PathPrefix string        `json:"pathPrefix,omitempty"`
	PathRegex  string        `json:"pathRegex,omitempty"`
	Methods    []string      `json:"methods,omitempty"`
	Header     []HeaderMatch `json:"header,omitempty"`
	QueryParam []QueryMatch  `json:"queryParam,omitempty"`
}

// Header and query match kinds.
const (
	MatchExact   = "exact"
	MatchPrefix  = "prefix"
	MatchSuffix  = "suffix"
	MatchRegex   = "regex"
	MatchPresent = "present"
)

// HeaderMatch matches one request header (names are case-insensitive). Kind is one of the Match*
// constants; Value is unused for MatchPresent. Invert negates the match, except that an inverted
// exact, prefix, suffix or regex match still does not hold when the header is absent.
type HeaderMatch struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Value  string `json:"value,omitempty"`
	Invert bool   `json:"invert,omitempty"`
}

// QueryMatch matches one query parameter: Kind is MatchExact, MatchRegex or MatchPresent.
type QueryMatch struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Value string `json:"value,omitempty"`
}

// regexCache holds compiled, fully anchored regexes. Regexes in a Snapshot are validated by the
// compiler; one that still fails to compile never matches.
var regexCache sync.Map // string → *regexp.Regexp (nil when invalid)

// FullRegexp compiles expr (RE2 syntax) so that it must match a whole string, as Envoy's
// safe_regex does. expr is parsed on its own first, so that an expression like "a)|(b" is
// rejected rather than changing the meaning of the anchors around it.
func FullRegexp(expr string) (*regexp.Regexp, error) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, err
	}
	return regexp.Compile(`^(?:` + re.String() + `)$`)
}

func fullMatch(expr, s string) bool {
	v, ok := regexCache.Load(expr)
	if !ok {
		re, err := FullRegexp(expr)
		if err != nil {
			re = nil
		}
		v, _ = regexCache.LoadOrStore(expr, re)
	}
	re := v.(*regexp.Regexp)
	return re != nil && re.MatchString(s)
}

// Matches reports whether the request holds every condition of m.
func (m *HTTPMatch) Matches(r *Request) bool {
	if m == nil {
		return true
	}
	path, query := splitPath(r.Path)
	switch {
	case m.Path != "" && path != m.Path:
		return false
	case m.PathPrefix != "" && !strings.HasPrefix(path, m.PathPrefix):
		return false
	case m.PathRegex != "" && !fullMatch(m.PathRegex, path):
		return false
	}
	if len(m.Methods) > 0 {
		found := false
		for _, meth := range m.Methods {
			if meth == r.Method {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for i := range m.Header {
		v, ok := r.header(m.Header[i].Name)
		if !m.Header[i].matches(v, ok) {
			return false
		}
	}
	for i := range m.QueryParam {
		if !m.QueryParam[i].matches(query) {
			return false
		}
	}
	return true
}

func (h *HeaderMatch) matches(v string, present bool) bool {
	if h.Kind == MatchPresent {
		return present != h.Invert
	}
	if !present {
		return false
	}
	var ok bool
	switch h.Kind {
	case MatchExact:
		ok = v == h.Value
	case MatchPrefix:
		ok = strings.HasPrefix(v, h.Value)
	case MatchSuffix:
		ok = strings.HasSuffix(v, h.Value)
	case MatchRegex:
		ok = fullMatch(h.Value, v)
	}
	return ok != h.Invert
}

func (q *QueryMatch) matches(query string) bool {
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != q.Name {
			continue
		}
		switch q.Kind {
		case MatchPresent:
			return true
		case MatchExact:
			return v == q.Value
		case MatchRegex:
			return fullMatch(q.Value, v)
		}
		return false
	}
	return false
}

// splitPath separates a request path from its query string and fragment, and normalizes it (see
// NormalizePath). Path matches ignore the query, as Envoy's route and RBAC path matchers do.
func splitPath(p string) (path, query string) {
	p, _, _ = strings.Cut(p, "#")
	path, query, _ = strings.Cut(p, "?")
	return NormalizePath(path), query
}

// buildIndex indexes intentions by destination and source.
func (s *Snapshot) buildIndex() {
	s.index = make(map[string]map[string]*Intention)
	for _, in := range s.Intentions {
		m := s.index[in.Destination]
		if m == nil {
			m = make(map[string]*Intention)
			s.index[in.Destination] = m
		}
		m[in.Source] = in
	}
}

// Intention returns the intention written for exactly this source and destination (either may be
// "*"), or nil.
func (s *Snapshot) Intention(source, destination string) *Intention {
	s.indexOnce.Do(s.buildIndex)
	return s.index[destination][source]
}

// Candidates returns the intentions that may decide a request from source to destination,
// highest precedence first. The first one decides.
func (s *Snapshot) Candidates(source, destination string) []*Intention {
	var out []*Intention
	for _, k := range candidateKeys(source, destination) {
		if in := s.Intention(k[1], k[0]); in != nil && !contains(out, in) {
			out = append(out, in)
		}
	}
	return out
}

// candidateKeys are the (destination, source) keys of the candidates, highest precedence first.
func candidateKeys(source, destination string) [4][2]string {
	return [4][2]string{{destination, source}, {destination, Wildcard}, {Wildcard, source}, {Wildcard, Wildcard}}
}

// Deciding returns the intention that decides requests from source to destination (the first
// of Candidates), or nil when the mesh default does, without allocating.
func (s *Snapshot) Deciding(source, destination string) *Intention {
	return s.deciding(source, destination)
}

// deciding returns the first of Candidates(source, destination), or nil, without allocating.
func (s *Snapshot) deciding(source, destination string) *Intention {
	s.indexOnce.Do(s.buildIndex)
	for _, k := range candidateKeys(source, destination) {
		if in := s.index[k[0]][k[1]]; in != nil {
			return in
		}
	}
	return nil
}

func contains(list []*Intention, in *Intention) bool {
	for _, x := range list {
		if x == in {
			return true
		}
	}
	return false
}

// Inbound returns every intention that can decide a request to destination, in evaluation order:
// exact sources first (sorted by name), then "*" into destination, then each source's intention
// into "*", then "*" into "*". It is what a destination's RBAC is rendered from.
func (s *Snapshot) Inbound(destination string) []*Intention {
	s.indexOnce.Do(s.buildIndex)
	// One slice for the whole answer: the exact sources, the wildcard source, the intentions
	// into every destination, the wildcard pair.
	return s.AppendInbound(make([]*Intention, 0, len(s.index[destination])+len(s.index[Wildcard])+1), destination)
}

// AppendInbound appends Inbound(destination) to out: a caller that renders every destination
// in turn reuses one slice.
func (s *Snapshot) AppendInbound(out []*Intention, destination string) []*Intention {
	s.indexOnce.Do(s.buildIndex)
	// Sources are distinct within each part: the order is total.
	bySource := func(a, b *Intention) int { return strings.Compare(a.Source, b.Source) }
	start := len(out)
	for src, in := range s.index[destination] {
		if src != Wildcard {
			out = append(out, in)
		}
	}
	slices.SortFunc(out[start:], bySource)
	if in := s.index[destination][Wildcard]; in != nil {
		out = append(out, in)
	}
	start = len(out)
	for src, in := range s.index[Wildcard] {
		if src != Wildcard {
			out = append(out, in)
		}
	}
	slices.SortFunc(out[start:], bySource)
	if in := s.index[Wildcard][Wildcard]; in != nil {
		out = append(out, in)
	}
	return out
}

// Outbound returns every intention that can decide a request from source, in precedence order.
func (s *Snapshot) Outbound(source string) []*Intention {
	var out []*Intention
	for _, in := range s.Intentions {
		if in.Source == source || in.Source == Wildcard {
			out = append(out, in)
		}
	}
	return out
}

// SortIntentions orders intentions by precedence (highest first), then destination, then source:
// the canonical order of Snapshot.Intentions.
func SortIntentions(list []*Intention) {
	sort.Slice(list, func(i, j int) bool { return intentionLess(list[i], list[j]) })
}

// intentionLess is the canonical order of intentions (SortIntentions).
func intentionLess(a, b *Intention) bool {
	if a.Precedence != b.Precedence {
		return a.Precedence > b.Precedence
	}
	if a.Destination != b.Destination {
		return a.Destination < b.Destination
	}
	return a.Source < b.Source
}
