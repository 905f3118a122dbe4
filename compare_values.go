package mesh

import (
	"regexp/syntax"
	"sort"
	"strconv"
	"strings"
)

// values returns the representative values of one attribute for the conditions ms on it (each
// a match holding conditions on this attribute only): for every combination of exact, prefix,
// suffix, present and method conditions that some real value satisfies, one of the values
// satisfies the same combination. Regexes add witnesses, which sample them.
//
//   - paths: "/", every exact path and prefix, and each prefix (and "/") extended by a character
//     no rule mentions. For a canonical path P, the longest prefix it has, so extended,
//     satisfies the same prefixes and no exact path (P itself is listed when it is an exact
//     path or a prefix).
//   - methods: every method named, and one named by no rule.
//   - header and query values: absent, every exact value, and p+c+s for every prefix p and
//     suffix s (or none) and a character c no rule mentions; the argument is the same.
func values(at attr, ms []*HTTPMatch) []value {
	var exact, prefixes, suffixes, samples []string
	var methods []string
	for _, m := range ms {
		switch {
		case m.Path != "":
			exact = append(exact, m.Path)
		case m.PathPrefix != "":
			prefixes = append(prefixes, m.PathPrefix)
		case m.PathRegex != "":
			samples = append(samples, witnesses(m.PathRegex)...)
		}
		methods = append(methods, m.Methods...)
		for _, h := range m.Header {
			switch h.Kind {
			case MatchExact:
				exact = append(exact, h.Value)
			case MatchPrefix:
				prefixes = append(prefixes, h.Value)
			case MatchSuffix:
				suffixes = append(suffixes, h.Value)
			case MatchRegex:
				samples = append(samples, witnesses(h.Value)...)
			}
		}
		for _, q := range m.QueryParam {
			switch q.Kind {
			case MatchExact:
				exact = append(exact, q.Value)
			case MatchRegex:
				samples = append(samples, witnesses(q.Value)...)
			}
		}
	}
	if at.kind == 'm' {
		out := newSet(methods...)
		return present(append(out.list(), unused("OTHER", methods)))
	}
	all := append(append(append(append([]string{}, exact...), prefixes...), suffixes...), samples...)
	c := otherChar(all)
	out := newSet(exact...)
	out.add(prefixes...)
	out.add(samples...)
	if at.kind == 'p' {
		out.add("/", "/"+c)
		for _, p := range prefixes {
			out.add(p + c)
		}
		return present(usable(at, out.list()))
	}
	for _, p := range append([]string{""}, prefixes...) {
		for _, s := range append([]string{""}, suffixes...) {
			out.add(p + c + s)
		}
	}
	return append([]value{{absent: true}}, present(usable(at, out.list()))...)
}

// usable drops the values that a request cannot carry as this attribute: a path with a query
// or fragment in it (it would be another path), a query value holding "&" or "#".
func usable(at attr, l []string) []string {
	var out []string
	for _, v := range l {
		switch {
		case at.kind == 'p' && strings.ContainsAny(v, "?#"):
		case at.kind == 'q' && strings.ContainsAny(v, "&#"):
		default:
			out = append(out, v)
		}
	}
	return out
}

func present(l []string) []value {
	out := make([]value, len(l))
	for i, v := range l {
		out[i] = value{s: v}
	}
	return out
}

// otherChar returns a character that none of the strings contains and that path
// canonicalization leaves alone.
func otherChar(l []string) string {
	for _, c := range []string{"!", "$", "'", "(", ")", "*", "+", ",", ";", "@", "[", "]", ":", "="} {
		used := false
		for _, s := range l {
			if strings.Contains(s, c) {
				used = true
				break
			}
		}
		if !used {
			return c
		}
	}
	return "\x00"
}

// unused returns base, or base followed by digits, such that it is not in l.
func unused(base string, l []string) string {
	in := map[string]bool{}
	for _, s := range l {
		in[s] = true
	}
	v := base
	for i := 0; in[v]; i++ {
		v = base + strconv.Itoa(i)
	}
	return v
}

// witnesses returns a few strings that regex expr matches in full.
func witnesses(expr string) []string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil
	}
	full, err := FullRegexp(expr)
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
