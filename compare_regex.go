package mesh

import (
	"regexp"
	"regexp/syntax"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Exact representative values for attributes with regex conditions.
//
// Every condition on one attribute (exact, prefix, suffix or regex) is a regular language, as
// Envoy and Go evaluate it: a fully anchored RE2 expression. A breadth-first search of the
// product of their automata (Go's own compiled programs, simulated as a Pike VM would) visits
// every combination of states that some string reaches, and so every combination of conditions
// some string satisfies; one shortest string per combination is a complete set of
// representatives. Runes are grouped into the classes no program tells apart, so the search
// steps over one rune per class. For paths the product also holds a small automaton of the
// paths Envoy can deliver after normalization (see NormalizePath): they start with "/", never
// hold "//", "/./" or "/../", never end in "/." or "/..", and use only characters that
// canonicalization leaves alone; so every representative is a path Envoy can deliver.

// maxRegexStates bounds the search of one attribute; beyond it the regexes are only sampled.
const maxRegexStates = 20000

// regexValues returns representative values of attribute at for the conditions in ms, or
// ok false when the search does not fit its budget or a condition cannot be handled (a path
// condition spelling a percent-encoding).
func regexValues(at attr, ms []*HTTPMatch) (vals []string, ok bool) {
	var progs []*syntax.Prog
	for _, m := range ms {
		for _, expr := range conditionRegexes(m) {
			if at.kind == 'p' && strings.Contains(expr, "%") {
				return nil, false
			}
			p, err := compileFull(expr)
			if err != nil {
				return nil, false
			}
			progs = append(progs, p)
		}
	}
	alphabet := runeClasses(at, progs)
	type node struct {
		key     string
		prev    rune // a rune standing for the previous one's kind (for \b, ^ and $)
		canon   int
		pcs     [][]uint32
		witness string
	}
	start := node{prev: -1, canon: canonStart, pcs: make([][]uint32, len(progs))}
	for i, p := range progs {
		start.pcs[i] = []uint32{uint32(p.Start)}
	}
	start.key = nodeKey(start.prev, start.canon, start.pcs)
	seen := map[string]bool{start.key: true}
	vectors := map[string]bool{}
	queue := []node{start}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if at.kind != 'p' || canonAccepts(n.canon) {
			var vec strings.Builder
			for i, p := range progs {
				if accepts(p, n.pcs[i], n.prev) {
					vec.WriteByte('1')
				} else {
					vec.WriteByte('0')
				}
			}
			if !vectors[vec.String()] {
				vectors[vec.String()] = true
				vals = append(vals, n.witness)
			}
		}
		for _, r := range alphabet {
			next := node{prev: kindOf(r), canon: n.canon, pcs: make([][]uint32, len(progs)), witness: n.witness + string(r)}
			if at.kind == 'p' {
				if next.canon = canonStep(n.canon, r); next.canon == canonDead {
					continue
				}
			}
			for i, p := range progs {
				next.pcs[i] = step(p, n.pcs[i], n.prev, r)
			}
			next.key = nodeKey(next.prev, next.canon, next.pcs)
			if seen[next.key] {
				continue
			}
			if len(seen) >= maxRegexStates {
				return nil, false
			}
			seen[next.key] = true
			queue = append(queue, next)
		}
	}
	return vals, true
}

// conditionRegexes returns the value conditions of m as fully anchored regexes (without the
// anchors): exact, prefix and suffix values quoted, regexes as written. Presence conditions
// constrain no value.
func conditionRegexes(m *HTTPMatch) []string {
	var out []string
	lit := func(kind, v string) {
		q := regexp.QuoteMeta(v)
		switch kind {
		case MatchExact:
			out = append(out, q)
		case MatchPrefix:
			out = append(out, q+`(?s:.*)`)
		case MatchSuffix:
			out = append(out, `(?s:.*)`+q)
		case MatchRegex:
			out = append(out, v)
		}
	}
	switch {
	case m.Path != "":
		lit(MatchExact, m.Path)
	case m.PathPrefix != "":
		lit(MatchPrefix, m.PathPrefix)
	case m.PathRegex != "":
		lit(MatchRegex, m.PathRegex)
	}
	for _, h := range m.Header {
		lit(h.Kind, h.Value)
	}
	for _, q := range m.QueryParam {
		lit(q.Kind, q.Value)
	}
	return out
}

// compileFull compiles expr as FullRegexp does, to a program.
func compileFull(expr string) (*syntax.Prog, error) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, err
	}
	full, err := syntax.Parse(`^(?:`+re.String()+`)$`, syntax.Perl)
	if err != nil {
		return nil, err
	}
	return syntax.Compile(full.Simplify())
}

// runeClasses returns one rune of each class of runes that no program tells apart (and that
// the attribute's domain allows).
func runeClasses(at attr, progs []*syntax.Prog) []rune {
	// Besides the programs' own boundaries: newline and word characters (for ^, $ and \b),
	// and "/" and "." (for the automaton of normalized paths).
	points := map[rune]bool{0: true, '\n': true, '\n' + 1: true, '.': true, '/': true, '/' + 1: true}
	for _, c := range "09AZaz__" {
		points[c] = true
		points[c+1] = true
	}
	for _, p := range progs {
		for _, in := range p.Inst {
			switch in.Op {
			case syntax.InstRune, syntax.InstRune1:
				rs := in.Rune
				if len(rs) == 1 {
					rs = []rune{rs[0], rs[0]}
				}
				for i := 0; i+1 < len(rs); i += 2 {
					points[rs[i]], points[rs[i+1]+1] = true, true
				}
				if syntax.Flags(in.Arg)&syntax.FoldCase != 0 && len(in.Rune) == 1 {
					for f := unicode.SimpleFold(in.Rune[0]); f != in.Rune[0]; f = unicode.SimpleFold(f) {
						points[f], points[f+1] = true, true
					}
				}
			}
		}
	}
	bounds := make([]rune, 0, len(points)+1)
	for r := range points {
		if r >= 0 && r <= unicode.MaxRune+1 {
			bounds = append(bounds, r)
		}
	}
	bounds = append(bounds, unicode.MaxRune+1)
	sort.Slice(bounds, func(i, j int) bool { return bounds[i] < bounds[j] })
	var out []rune
	for i := 0; i+1 < len(bounds); i++ {
		if r, ok := classRune(at, bounds[i], bounds[i+1]-1); ok {
			out = append(out, r)
		}
	}
	return out
}

// classRune picks a rune of [lo, hi] that the attribute's domain allows, preferring printable
// ASCII.
func classRune(at attr, lo, hi rune) (rune, bool) {
	for c := max(lo, 0x20); c <= min(hi, 0x7e); c++ {
		if allowedRune(at, c) {
			return c, true
		}
	}
	if at.kind == 'p' {
		return 0, false // canonical paths are ASCII
	}
	for c := lo; c <= hi && c < lo+64; c++ {
		if utf8.ValidRune(c) && allowedRune(at, c) {
			return c, true
		}
	}
	return 0, false
}

// allowedRune reports whether r may appear in a value of the attribute: in a path that
// canonicalization leaves alone, in a header or query value (not a control character; in a
// query value, nothing that ends the parameter).
func allowedRune(at attr, r rune) bool {
	switch at.kind {
	case 'p':
		return r < 0x80 && (r == '/' || r == '.' || pathChar(byte(r)) == 0 || pathChar(byte(r)) == charUnescape)
	case 'q':
		return r != '&' && r != '#' && (r >= 0x20 && r != 0x7f || r == '\t')
	}
	return r >= 0x20 && r != 0x7f || r == '\t' // header values: no control characters
}

// kindOf returns a rune standing for r as far as empty-width assertions care.
func kindOf(r rune) rune {
	switch {
	case r == '\n':
		return '\n'
	case syntax.IsWordChar(r):
		return 'a'
	}
	return ' '
}

// closure follows the empty transitions of p from pcs, in the context between runes before and
// after (-1 at either end), and returns the rune and match instructions reached, sorted.
func closure(p *syntax.Prog, pcs []uint32, before, after rune) []uint32 {
	ctx := syntax.EmptyOpContext(before, after)
	seen := map[uint32]bool{}
	var out []uint32
	var visit func(pc uint32)
	visit = func(pc uint32) {
		if seen[pc] {
			return
		}
		seen[pc] = true
		in := &p.Inst[pc]
		switch in.Op {
		case syntax.InstAlt, syntax.InstAltMatch:
			visit(in.Out)
			visit(in.Arg)
		case syntax.InstCapture, syntax.InstNop:
			visit(in.Out)
		case syntax.InstEmptyWidth:
			if syntax.EmptyOp(in.Arg)&^ctx == 0 {
				visit(in.Out)
			}
		case syntax.InstFail:
		default:
			out = append(out, pc)
		}
	}
	for _, pc := range pcs {
		visit(pc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// step consumes r from the states pcs (before closure) of p, prev being the previous rune's
// kind, and returns the states after it (before closure).
func step(p *syntax.Prog, pcs []uint32, prev, r rune) []uint32 {
	set := map[uint32]bool{}
	for _, pc := range closure(p, pcs, prev, r) {
		in := &p.Inst[pc]
		var ok bool
		switch in.Op {
		case syntax.InstRune, syntax.InstRune1:
			ok = in.MatchRune(r)
		case syntax.InstRuneAny:
			ok = true
		case syntax.InstRuneAnyNotNL:
			ok = r != '\n'
		}
		if ok {
			set[in.Out] = true
		}
	}
	out := make([]uint32, 0, len(set))
	for pc := range set {
		out = append(out, pc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// accepts reports whether p matches when the text ends in the states pcs.
func accepts(p *syntax.Prog, pcs []uint32, prev rune) bool {
	for _, pc := range closure(p, pcs, prev, -1) {
		if p.Inst[pc].Op == syntax.InstMatch {
			return true
		}
	}
	return false
}

func nodeKey(prev rune, canon int, pcs [][]uint32) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(int(prev)))
	b.WriteByte('/')
	b.WriteString(strconv.Itoa(canon))
	for _, l := range pcs {
		b.WriteByte('|')
		for _, pc := range l {
			b.WriteString(strconv.FormatUint(uint64(pc), 36))
			b.WriteByte(',')
		}
	}
	return b.String()
}

// The automaton of normalized paths: where the path is relative to its last segment.
const (
	canonDead  = iota
	canonStart // nothing yet
	canonSlash // just after "/"
	canonDot   // after "/."
	canonDots  // after "/.."
	canonName  // inside any other segment
)

func canonStep(s int, r rune) int {
	switch {
	case s == canonStart:
		if r == '/' {
			return canonSlash
		}
		return canonDead
	case r == '/':
		if s == canonName {
			return canonSlash
		}
		return canonDead // "//", "/./", "/../" do not survive normalization
	case r == '.' && s == canonSlash:
		return canonDot
	case r == '.' && s == canonDot:
		return canonDots
	}
	return canonName
}

func canonAccepts(s int) bool { return s == canonSlash || s == canonName }
