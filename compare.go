package mesh

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// CompareAccess decides whether two versions of a mesh give the same verdict on every request
// from one source to one destination. It does so without enumerating the product of every
// request attribute the rules mention (which grows exponentially with the number of headers),
// and without a sampling fallback:
//
//   - Each permission's match is split into atoms, one condition on one attribute of the
//     request (the path, the method, one header, one query parameter). An atom's truth on a value
//     is asked of the evaluator's own matcher (HTTPMatch.Matches on a match holding that
//     condition alone), never re-implemented here.
//   - Per attribute, a finite set of representative values realizes every combination of that
//     attribute's atoms that some real value realizes: built from the literal values (see
//     values), or, when a regex takes part, found by a search of the product of the
//     conditions' automata (see regexValues). Should that search not fit its budget, regexes
//     are represented by witnesses only, and a "no difference" that rests on them is undecided.
//   - The search assigns attributes one at a time, simplifying both rule lists after each (a
//     false match drops its permission, a true one ends the list), and stops a branch as soon as
//     both lists are the same or can only say one thing. Equal residual states are decided once
//     (memoized). A difference is found as soon as one branch ends with different verdicts, and
//     its request is confirmed with Authorize.
//
// Deciding equivalence of two such lists is coNP-hard in general, so the search has a budget;
// a pair it cannot decide within it, or whose "no difference" rests on regex samples, is
// returned as undecided with the reason, never as equal.

// DefaultCompareStates is the search budget of CompareAccess when none is given.
const DefaultCompareStates = 200000

// Difference is what CompareAccess found.
type Difference struct {
	// Differs is true when some request gets different verdicts; Example is one.
	Differs bool
	Example Request
	// Undecided says why the question could not be decided ("" when it was).
	Undecided string
}

// CompareAccess decides whether some request from src to dst gets a different verdict from
// Authorize in a and in b. maxStates bounds the search (0: DefaultCompareStates).
func CompareAccess(a, b *Snapshot, src, dst string, maxStates int) Difference {
	if maxStates <= 0 {
		maxStates = DefaultCompareStates
	}
	first := func(s *Snapshot) *Intention {
		if c := s.Candidates(src, dst); len(c) > 0 {
			return c[0]
		}
		return nil
	}
	ai, bi := first(a), first(b)
	if !hasPermissions(ai) && !hasPermissions(bi) {
		// No L7 rule on either side: one request stands for all.
		q := Request{Source: src, Destination: dst}
		if Authorize(a, q).Verdict != Authorize(b, q).Verdict {
			return Difference{Differs: true, Example: q}
		}
		return Difference{}
	}
	return decide(a, b, src, dst, ai, bi, defaultAction(a), defaultAction(b), maxStates)
}

func hasPermissions(in *Intention) bool { return in != nil && len(in.Permissions) > 0 }

// AllowsSome decides whether Authorize allows some request from src to dst: whether s differs
// from a mesh that denies everything.
func AllowsSome(s *Snapshot, src, dst string, maxStates int) Difference {
	return CompareAccess(s, &Snapshot{Mesh: Config{DefaultIntention: Deny}}, src, dst, maxStates)
}

func defaultAction(s *Snapshot) Action {
	if s.Mesh.DefaultIntention == "" {
		return Deny
	}
	return s.Mesh.DefaultIntention
}

// attr is one attribute of a request: the path, the method, a header (lower-case name) or a
// query parameter.
type attr struct {
	kind byte // 'p' path, 'm' method, 'h' header, 'q' query
	name string
}

// value is a value of an attribute; absent headers and query parameters have absent set.
type value struct {
	absent bool
	s      string
}

// atom is one condition of a match.
type atom struct {
	attr  int        // index into decider.attrs
	match *HTTPMatch // a match of this condition alone
	regex bool       // a regex sampled by witnesses (false once regexValues made its values exact)
	truth []bool     // per value of the attribute
}

// entry is a permission with the atoms of its match that are not yet decided.
type entry struct {
	atoms  []int
	action Action
}

// rlist is a rule list: the first entry whose atoms all hold decides, else def.
type rlist struct {
	entries []entry
	def     Action
}

type decider struct {
	attrs    []attr
	attrIdx  map[attr]int
	values   [][]value
	atoms    []atom
	atomIdx  map[string]int
	memo     map[string]bool // states known to agree
	states   int
	budget   int
	exceeded bool
	// sampled holds the regex atoms whose (sampled) truth took part in the search; a regex
	// that never did, because the entries holding it were always decided before it, is not a
	// reason for doubt.
	sampled map[int]bool
	choice  []int // value chosen per attribute on the current branch, -1 for none
}

// decide compares the rule lists of base and head for src → dst: the deciding intentions bi, hi
// (either may be nil) and the mesh defaults.
func decide(base, head *Snapshot, src, dst string, bi, hi *Intention, defBase, defHead Action, budget int) Difference {
	d := &decider{attrIdx: map[attr]int{}, atomIdx: map[string]int{}, memo: map[string]bool{}, budget: budget, sampled: map[int]bool{}}
	b := d.compile(bi, defBase)
	h := d.compile(hi, defHead)
	d.computeValues()
	d.choice = make([]int, len(d.attrs))
	for i := range d.choice {
		d.choice[i] = -1
	}
	if d.differ(b, h) {
		q := d.request()
		q.Source, q.Destination = src, dst
		if Authorize(base, q).Verdict == Authorize(head, q).Verdict {
			return Difference{Undecided: "internal error: the request found to differ (" + q.Describe() + ") has the same verdict in both"}
		}
		return Difference{Differs: true, Example: q}
	}
	if d.exceeded {
		return Difference{Undecided: fmt.Sprintf("the rules combine %d conditions on %d request attributes; deciding them needs more than %d search states", len(d.atoms), len(d.attrs), d.budget)}
	}
	var regexes []string
	for i, a := range d.atoms {
		if d.sampled[i] {
			regexes = append(regexes, a.match.Describe())
		}
	}
	if len(regexes) > 0 {
		sort.Strings(regexes)
		return Difference{Undecided: "no difference found, but regex conditions are checked on sample values only: " + strings.Join(regexes, ", ")}
	}
	return Difference{}
}

// compile turns an intention into a rule list over atoms.
func (d *decider) compile(in *Intention, def Action) rlist {
	if in == nil {
		return rlist{def: def}
	}
	if in.Action != "" {
		return rlist{def: in.Action}
	}
	l := rlist{def: def}
	for _, p := range in.Permissions {
		l.entries = append(l.entries, entry{atoms: d.split(p.HTTP), action: p.Action})
	}
	return simplify(l)
}

// split returns the atoms of m, sorted.
func (d *decider) split(m *HTTPMatch) []int {
	if m == nil {
		return nil
	}
	var out []int
	switch {
	case m.Path != "":
		out = append(out, d.atom(attr{kind: 'p'}, &HTTPMatch{Path: m.Path}, false))
	case m.PathPrefix != "":
		out = append(out, d.atom(attr{kind: 'p'}, &HTTPMatch{PathPrefix: m.PathPrefix}, false))
	case m.PathRegex != "":
		out = append(out, d.atom(attr{kind: 'p'}, &HTTPMatch{PathRegex: m.PathRegex}, true))
	}
	if len(m.Methods) > 0 {
		out = append(out, d.atom(attr{kind: 'm'}, &HTTPMatch{Methods: m.Methods}, false))
	}
	for _, h := range m.Header {
		a := attr{kind: 'h', name: strings.ToLower(h.Name)}
		out = append(out, d.atom(a, &HTTPMatch{Header: []HeaderMatch{h}}, h.Kind == MatchRegex))
	}
	for _, q := range m.QueryParam {
		a := attr{kind: 'q', name: q.Name}
		out = append(out, d.atom(a, &HTTPMatch{QueryParam: []QueryMatch{q}}, q.Kind == MatchRegex))
	}
	sort.Ints(out)
	return dedupe(out)
}

func (d *decider) atom(a attr, m *HTTPMatch, regex bool) int {
	key := string(a.kind) + a.name + "\x00" + fmt.Sprintf("%#v", *m)
	if i, ok := d.atomIdx[key]; ok {
		return i
	}
	ai, ok := d.attrIdx[a]
	if !ok {
		ai = len(d.attrs)
		d.attrs = append(d.attrs, a)
		d.attrIdx[a] = ai
	}
	d.atoms = append(d.atoms, atom{attr: ai, match: m, regex: regex})
	d.atomIdx[key] = len(d.atoms) - 1
	return len(d.atoms) - 1
}

// computeValues finds the representative values of every attribute and each atom's truth on
// them, asking HTTPMatch.Matches.
func (d *decider) computeValues() {
	byAttr := make([][]*HTTPMatch, len(d.attrs))
	for _, a := range d.atoms {
		byAttr[a.attr] = append(byAttr[a.attr], a.match)
	}
	d.values = make([][]value, len(d.attrs))
	for i, a := range d.attrs {
		d.values[i] = d.attrValues(i, a, byAttr[i])
	}
	for i := range d.atoms {
		a := &d.atoms[i]
		at := d.attrs[a.attr]
		for _, v := range d.values[a.attr] {
			q := requestOf(at, v)
			a.truth = append(a.truth, a.match.Matches(&q))
		}
	}
}

// attrValues returns the representative values of attribute i. With a regex condition they
// come from the search of regexValues, which makes them exact (the regexes are then not
// sampled); should it not fit its budget, from values, with witnesses of the regexes.
func (d *decider) attrValues(i int, a attr, ms []*HTTPMatch) []value {
	hasRegex := false
	for _, at := range d.atoms {
		hasRegex = hasRegex || (at.attr == i && at.regex)
	}
	if !hasRegex {
		return values(a, ms)
	}
	vals, ok := regexValues(a, ms)
	if !ok {
		return values(a, ms)
	}
	for j := range d.atoms {
		if d.atoms[j].attr == i {
			d.atoms[j].regex = false
		}
	}
	out := present(usable(a, vals))
	if a.kind != 'p' {
		out = append([]value{{absent: true}}, out...)
	}
	return out
}

// requestOf returns a request whose attribute at has value v and that holds nothing else.
func requestOf(at attr, v value) Request {
	q := Request{Path: "/"}
	setValue(&q, at, v)
	return q
}

func setValue(q *Request, at attr, v value) {
	if v.absent {
		return
	}
	switch at.kind {
	case 'p':
		path, query, hasQuery := strings.Cut(q.Path, "?")
		_ = path
		q.Path = v.s
		if hasQuery {
			q.Path += "?" + query
		}
	case 'm':
		q.Method = v.s
	case 'h':
		if q.Headers == nil {
			q.Headers = map[string]string{}
		}
		q.Headers[at.name] = v.s
	case 'q':
		sep := "?"
		if strings.Contains(q.Path, "?") {
			sep = "&"
		}
		q.Path += sep + at.name + "=" + v.s
	}
}

// request builds the request of the current branch: the chosen value of every attribute,
// and for the others a value no rule cares about on this branch.
func (d *decider) request() Request {
	q := Request{Path: "/", Method: "GET"}
	// The path first, so that query parameters are appended to it.
	order := make([]int, 0, len(d.attrs))
	for i, a := range d.attrs {
		if a.kind == 'p' {
			order = append([]int{i}, order...)
		} else {
			order = append(order, i)
		}
	}
	for _, i := range order {
		if c := d.choice[i]; c >= 0 {
			setValue(&q, d.attrs[i], d.values[i][c])
		}
	}
	return q
}

// differ reports whether some request gets different verdicts from b and h, leaving the
// attribute values of that request in d.choice.
func (d *decider) differ(b, h rlist) bool {
	if len(b.entries) == 0 && len(h.entries) == 0 {
		return b.def != h.def
	}
	if sameList(b, h) || singleVerdict(b, h) {
		return false
	}
	key := b.key() + "|" + h.key()
	if d.memo[key] {
		return false
	}
	if d.states++; d.states > d.budget {
		d.exceeded = true
		return false
	}
	next := d.nextAttr(b, h)
	for vi := range d.values[next] {
		d.choice[next] = vi
		if d.differ(d.assign(b, next, vi), d.assign(h, next, vi)) {
			return true
		}
		if d.exceeded {
			return false
		}
	}
	d.choice[next] = -1
	d.memo[key] = true
	return false
}

// nextAttr is the lowest attribute an undecided atom of b or h is about.
func (d *decider) nextAttr(lists ...rlist) int {
	next := len(d.attrs)
	for _, l := range lists {
		for _, e := range l.entries {
			for _, a := range e.atoms {
				if at := d.atoms[a].attr; at < next {
					next = at
				}
			}
		}
	}
	return next
}

// assign simplifies l for attribute at having its value vi.
func (d *decider) assign(l rlist, at, vi int) rlist {
	out := rlist{def: l.def, entries: make([]entry, 0, len(l.entries))}
	for _, e := range l.entries {
		keep := true
		var rest []int
		for _, a := range e.atoms {
			switch {
			case d.atoms[a].attr != at:
				rest = append(rest, a)
			default:
				if d.atoms[a].regex {
					d.sampled[a] = true
				}
				if !d.atoms[a].truth[vi] {
					keep = false
				}
			}
		}
		if keep {
			out.entries = append(out.entries, entry{atoms: rest, action: e.action})
			if len(rest) == 0 {
				break // it always holds from here: the entries after it never decide
			}
		}
	}
	return simplify(out)
}

// simplify ends l at its first entry that always holds, drops entries that repeat an earlier
// one's atoms (they never decide), and drops trailing entries that say what the default says.
func simplify(l rlist) rlist {
	seen := map[string]bool{}
	out := rlist{def: l.def}
	for _, e := range l.entries {
		if len(e.atoms) == 0 {
			out.def = e.action
			break
		}
		k := intsKey(e.atoms)
		if seen[k] {
			continue
		}
		seen[k] = true
		out.entries = append(out.entries, e)
	}
	for len(out.entries) > 0 && out.entries[len(out.entries)-1].action == out.def {
		out.entries = out.entries[:len(out.entries)-1]
	}
	// Consecutive entries with the same action decide alike in any order: sort each run, so
	// that lists differing only so are seen to be the same.
	for i := 0; i < len(out.entries); {
		j := i + 1
		for j < len(out.entries) && out.entries[j].action == out.entries[i].action {
			j++
		}
		run := out.entries[i:j]
		sort.SliceStable(run, func(a, b int) bool { return intsKey(run[a].atoms) < intsKey(run[b].atoms) })
		i = j
	}
	return out
}

func sameList(a, b rlist) bool { return a.key() == b.key() }

// singleVerdict reports whether every verdict either list can give is one and the same.
func singleVerdict(lists ...rlist) bool {
	v := lists[0].def
	for _, l := range lists {
		if l.def != v {
			return false
		}
		for _, e := range l.entries {
			if e.action != v {
				return false
			}
		}
	}
	return true
}

func (l rlist) key() string {
	var b strings.Builder
	for _, e := range l.entries {
		b.WriteString(string(e.action))
		b.WriteByte(':')
		b.WriteString(intsKey(e.atoms))
		b.WriteByte(';')
	}
	b.WriteString(string(l.def))
	return b.String()
}

func intsKey(l []int) string {
	var b strings.Builder
	for _, x := range l {
		b.WriteString(strconv.Itoa(x))
		b.WriteByte(',')
	}
	return b.String()
}

func dedupe(l []int) []int {
	out := l[:0]
	for i, x := range l {
		if i == 0 || x != l[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// Describe renders q for a report: "GET /admin?x=1 with h1: a, h2: b".
func (q Request) Describe() string {
	method := q.Method
	if method == "" {
		method = "GET"
	}
	s := method + " " + q.Path
	if len(q.Headers) > 0 {
		var hs []string
		for _, k := range sortedKeys(q.Headers) {
			hs = append(hs, fmt.Sprintf("%s: %s", k, q.Headers[k]))
		}
		s += " with " + strings.Join(hs, ", ")
	}
	return s
}
