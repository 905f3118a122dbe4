package review

import (
	"regexp/syntax"
	"sort"
	"strings"

	mesh "github.com/meshgit/mesh"
)

// other is a character no rule is expected to mention: a value that contains it differs from
// every exact value, and extends a prefix without reaching a longer one.
const other = "\x00"

// maxProbes bounds the probe set of one pair; beyond it the set is reduced (see probes).
const maxProbes = 4096

// probes returns the requests on which two L7 rule lists must agree for the rules to agree on
// every request, built from the matches of both lists:
//
//   - paths: every exact path, every prefix, and every prefix extended by a character no rule
//     mentions, witnesses of every path regex, and "/" extended likewise. For a path P, the
//     longest prefix it satisfies, extended so, satisfies the same prefixes and no exact path;
//     so every combination of path conditions that a real path can satisfy is represented.
//   - methods: every method named, and one named by no rule.
//   - header and query values: absent, every exact value, prefixes and suffixes extended (and
//     combined), regex witnesses, and a value no rule names; the argument is the same as for
//     paths.
//
// The set is the product of these choices. Regex conditions are represented by witnesses only,
// so for rules with regexes the set is a strong sample rather than a proof. When the product
// exceeds maxProbes, the probes are each dimension varied alone around the first choice of the
// others, plus one request that satisfies each match.
func probes(matches []*mesh.HTTPMatch) []mesh.Request {
	if len(matches) == 0 {
		return []mesh.Request{{}}
	}
	paths := newSet("/", "/"+other)
	methods := newSet(other)
	headers := map[string]*set{}
	queries := map[string]*set{}
	valueChoices := func(m map[string]*set, name string) *set {
		s := m[name]
		if s == nil {
			s = newSet("", other) // "" stands for absent
			m[name] = s
		}
		return s
	}
	for _, m := range matches {
		if m == nil {
			continue
		}
		switch {
		case m.Path != "":
			paths.add(m.Path)
		case m.PathPrefix != "":
			paths.add(m.PathPrefix, m.PathPrefix+other)
		case m.PathRegex != "":
			paths.add(witnesses(m.PathRegex)...)
		}
		methods.add(m.Methods...)
		for _, h := range m.Header {
			addValue(valueChoices(headers, h.Name), h.Kind, h.Value)
		}
		for _, q := range m.QueryParam {
			addValue(valueChoices(queries, q.Name), q.Kind, q.Value)
		}
	}
	// Combine prefixes with suffixes of the same header.
	for _, m := range matches {
		if m == nil {
			continue
		}
		for _, p := range m.Header {
			if p.Kind != mesh.MatchPrefix {
				continue
			}
			for _, m2 := range matches {
				if m2 == nil {
					continue
				}
				for _, s := range m2.Header {
					if s.Kind == mesh.MatchSuffix && s.Name == p.Name {
						headers[p.Name].add(p.Value + other + s.Value)
					}
				}
			}
		}
	}
	hnames, qnames := sortedKeys(headers), sortedKeys(queries)
	dims := [][]string{paths.list(), methods.list()}
	for _, n := range qnames {
		dims = append(dims, queries[n].list())
	}
	for _, n := range hnames {
		dims = append(dims, headers[n].list())
	}
	build := func(choice []string) mesh.Request {
		r := mesh.Request{Path: choice[0], Method: choice[1]}
		var q []string
		for i, n := range qnames {
			if v := choice[2+i]; v != "" {
				q = append(q, n+"="+strings.TrimPrefix(v, "\x01"))
			}
		}
		if len(q) > 0 {
			r.Path += "?" + strings.Join(q, "&")
		}
		for i, n := range hnames {
			if v := choice[2+len(qnames)+i]; v != "" {
				if r.Headers == nil {
					r.Headers = map[string]string{}
				}
				r.Headers[n] = strings.TrimPrefix(v, "\x01")
			}
		}
		return r
	}
	total := 1
	for _, d := range dims {
		total *= len(d)
		if total > maxProbes {
			break
		}
	}
	var out []mesh.Request
	if total <= maxProbes {
		choice := make([]string, len(dims))
		var rec func(i int)
		rec = func(i int) {
			if i == len(dims) {
				out = append(out, build(choice))
				return
			}
			for _, v := range dims[i] {
				choice[i] = v
				rec(i + 1)
			}
		}
		rec(0)
		return out
	}
	first := make([]string, len(dims))
	for i, d := range dims {
		first[i] = d[0]
	}
	for i, d := range dims {
		for _, v := range d {
			choice := append([]string(nil), first...)
			choice[i] = v
			out = append(out, build(choice))
		}
	}
	for _, m := range matches {
		out = append(out, satisfying(m))
	}
	return out
}

// addValue adds the choices of one header or query condition. A value may legitimately be
// empty; it is marked with a leading \x01 so that it is not taken for "absent".
func addValue(s *set, kind, value string) {
	mark := func(v string) string {
		if v == "" {
			return "\x01"
		}
		return v
	}
	switch kind {
	case mesh.MatchExact:
		s.add(mark(value))
	case mesh.MatchPrefix:
		s.add(mark(value), value+other)
	case mesh.MatchSuffix:
		s.add(mark(value), other+value)
	case mesh.MatchRegex:
		for _, w := range witnesses(value) {
			s.add(mark(w))
		}
	}
}

// satisfying returns a request that satisfies m where it can.
func satisfying(m *mesh.HTTPMatch) mesh.Request {
	r := mesh.Request{Path: "/", Method: other}
	if m == nil {
		return r
	}
	switch {
	case m.Path != "":
		r.Path = m.Path
	case m.PathPrefix != "":
		r.Path = m.PathPrefix
	case m.PathRegex != "":
		if w := witnesses(m.PathRegex); len(w) > 0 {
			r.Path = w[0]
		}
	}
	if len(m.Methods) > 0 {
		r.Method = m.Methods[0]
	}
	value := func(kind, v string, invert bool) (string, bool) {
		if invert {
			return other, kind != mesh.MatchPresent
		}
		switch kind {
		case mesh.MatchRegex:
			if w := witnesses(v); len(w) > 0 {
				return w[0], true
			}
		case mesh.MatchPresent:
			return other, true
		}
		return v, true
	}
	for _, h := range m.Header {
		if v, ok := value(h.Kind, h.Value, h.Invert); ok {
			if r.Headers == nil {
				r.Headers = map[string]string{}
			}
			r.Headers[h.Name] = v
		}
	}
	var q []string
	for _, p := range m.QueryParam {
		v, _ := value(p.Kind, p.Value, false)
		q = append(q, p.Name+"="+v)
	}
	if len(q) > 0 {
		r.Path += "?" + strings.Join(q, "&")
	}
	return r
}

// witnesses returns a few strings that regex expr matches in full.
func witnesses(expr string) []string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil
	}
	full, err := mesh.FullRegexp(expr)
	if err != nil {
		return nil
	}
	var out []string
	for _, w := range gen(re.Simplify(), 0) {
		if full.MatchString(w) {
			out = append(out, w)
		}
	}
	return out
}

const maxWitnesses = 6

func gen(re *syntax.Regexp, depth int) []string {
	if depth > 20 {
		return []string{""}
	}
	switch re.Op {
	case syntax.OpLiteral:
		return []string{string(re.Rune)}
	case syntax.OpCharClass:
		if len(re.Rune) == 0 {
			return nil
		}
		out := []string{string(re.Rune[0])}
		if last := re.Rune[len(re.Rune)-1]; last != re.Rune[0] && last < 0x10FFFF {
			out = append(out, string(last))
		}
		return out
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return []string{"a"}
	case syntax.OpCapture:
		return gen(re.Sub[0], depth+1)
	case syntax.OpStar, syntax.OpQuest:
		return capped(append([]string{""}, gen(re.Sub[0], depth+1)...))
	case syntax.OpPlus:
		return gen(re.Sub[0], depth+1)
	case syntax.OpRepeat:
		sub := gen(re.Sub[0], depth+1)
		if len(sub) == 0 {
			return nil
		}
		return []string{strings.Repeat(sub[0], re.Min)}
	case syntax.OpConcat:
		acc := []string{""}
		for _, s := range re.Sub {
			parts := gen(s, depth+1)
			var next []string
			for _, a := range acc {
				for _, p := range parts {
					next = append(next, a+p)
				}
			}
			acc = capped(next)
		}
		return acc
	case syntax.OpAlternate:
		var out []string
		for _, s := range re.Sub {
			out = append(out, gen(s, depth+1)...)
		}
		return capped(out)
	case syntax.OpNoMatch:
		return nil
	}
	return []string{""} // empty-width assertions and empty matches
}

func capped(l []string) []string {
	if len(l) > maxWitnesses {
		return l[:maxWitnesses]
	}
	return l
}

// set is a small ordered set of strings.
type set struct {
	seen map[string]bool
	l    []string
}

func newSet(v ...string) *set {
	s := &set{seen: map[string]bool{}}
	s.add(v...)
	return s
}

func (s *set) add(v ...string) {
	for _, x := range v {
		if !s.seen[x] {
			s.seen[x] = true
			s.l = append(s.l, x)
		}
	}
}

func (s *set) list() []string { return s.l }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
