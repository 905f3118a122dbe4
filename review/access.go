package review

import (
	"fmt"
	"reflect"
	"sort"

	mesh "github.com/meshgit/mesh"
)

// Access is one source → destination pair whose verdict changes, or a summarised group of such
// pairs that are decided by the same rules in base and in head, so that one verdict change
// stands for all of them.
//
// A named pair has Pairs 1 and neither Sources nor Destinations. A group has Source "*" (its
// sources are listed in Sources), Destination "*" (its destinations are listed in
// Destinations), or both; then its pairs are Sources × Destinations without the pairs that have
// an intention of their own (those are reported, if they change, as named pairs). Group says in
// words who the group is. Sources and Destinations list at most MaxListed names each (sorted);
// Truncated says that there are more, and Each enumerates every pair.
type Access struct {
	Source       string   `json:"source"`
	Destination  string   `json:"destination"`
	Before       string   `json:"before"`
	After        string   `json:"after"`
	Detail       string   `json:"detail"`
	Position     string   `json:"position,omitempty"` // where the rule deciding after is written
	Pairs        int      `json:"pairs"`
	Group        string   `json:"group,omitempty"`
	Sources      []string `json:"sources,omitempty"`
	Destinations []string `json:"destinations,omitempty"`
	Truncated    bool     `json:"truncated,omitempty"`
	// Example is a request whose verdict changes, for pairs decided by L7 permissions.
	Example string `json:"example,omitempty"`
	// Undecided, on an entry of Report.Undecided, says why the review could not decide whether
	// the pair's access changes.
	Undecided string `json:"undecided,omitempty"`

	each     func(f func(source, destination string)) // a group's pairs
	nSources int                                      // a group's distinct sources and destinations
	nDests   int
	dsts     []string // every destination of a group with Destination "*"
}

// MaxListed is how many members of a group Access lists by name.
const MaxListed = 1000

// IsGroup reports whether a summarises several pairs.
func (a *Access) IsGroup() bool { return a.Group != "" }

// Each calls f for every pair that a stands for. A two-sided group may stand for very many
// pairs; Each is meant for tests and small meshes.
func (a *Access) Each(f func(source, destination string)) {
	if a.each != nil {
		a.each(f)
		return
	}
	f(a.Source, a.Destination)
}

// capped returns the first MaxListed names of list, and whether there were more.
func capList(list []string) ([]string, bool) {
	if len(list) > MaxListed {
		return list[:MaxListed:MaxListed], true
	}
	return list, false
}

// key names an intention: destination and source, either may be "*".
type key struct{ dst, src string }

// AccessChanges returns every pair of services (of either version) whose Authorize verdict
// differs between base and head for some request, named pairs one by one and pairs decided by
// wildcards or the mesh default summarised in groups. The order is: named pairs, then groups,
// each sorted by destination and source.
func AccessChanges(base, head *mesh.Snapshot) []*Access {
	changed, _ := Accesses(base, head)
	return changed
}

// Accesses returns the access changes (as AccessChanges does) and, apart, the pairs and groups
// for which the review could not decide whether access changes (Undecided says why). Those
// must be checked by hand: a review never reports them as unchanged.
func Accesses(base, head *mesh.Snapshot) (changed, undecided []*Access) {
	d := newDiffer(base, head)
	d.named()
	d.wildcardSources()
	d.fallbacks()
	sort.SliceStable(d.out, func(i, j int) bool {
		a, b := d.out[i], d.out[j]
		if a.IsGroup() != b.IsGroup() {
			return !a.IsGroup()
		}
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		return a.Source < b.Source
	})
	for _, a := range d.out {
		if a.Undecided != "" {
			undecided = append(undecided, a)
		} else {
			changed = append(changed, a)
		}
	}
	return changed, undecided
}

type differ struct {
	base, head *mesh.Snapshot
	defBase    mesh.Action
	defHead    mesh.Action
	services   []string // of both versions, sorted
	exact      []key    // D←S with both named, in either version, sorted
	wildSrc    []string // destinations D with D←* in either version, sorted
	wildDst    map[string]bool
	namedSrc   map[string]map[string]bool // destination → sources with an exact intention (either version)
	out        []*Access
}

func newDiffer(base, head *mesh.Snapshot) *differ {
	d := &differ{
		base: base, head: head,
		defBase: defaultOf(base), defHead: defaultOf(head),
		wildDst:  map[string]bool{},
		namedSrc: map[string]map[string]bool{},
	}
	names := map[string]bool{}
	for _, s := range []*mesh.Snapshot{base, head} {
		for n := range s.Services {
			names[n] = true
		}
	}
	d.services = sortedSet(names)
	seen := map[key]bool{}
	wildSrc := map[string]bool{}
	for _, s := range []*mesh.Snapshot{base, head} {
		for _, in := range s.Intentions {
			k := key{in.Destination, in.Source}
			if seen[k] {
				continue
			}
			seen[k] = true
			switch {
			case in.Destination != mesh.Wildcard && in.Source != mesh.Wildcard:
				d.exact = append(d.exact, k)
				m := d.namedSrc[k.dst]
				if m == nil {
					m = map[string]bool{}
					d.namedSrc[k.dst] = m
				}
				m[k.src] = true
			case in.Destination != mesh.Wildcard:
				wildSrc[in.Destination] = true
			case in.Source != mesh.Wildcard:
				d.wildDst[in.Source] = true
			}
		}
	}
	sort.Slice(d.exact, func(i, j int) bool {
		if d.exact[i].dst != d.exact[j].dst {
			return d.exact[i].dst < d.exact[j].dst
		}
		return d.exact[i].src < d.exact[j].src
	})
	d.wildSrc = sortedSet(wildSrc)
	return d
}

func defaultOf(s *mesh.Snapshot) mesh.Action {
	if s.Mesh.DefaultIntention == "" {
		return mesh.Deny
	}
	return s.Mesh.DefaultIntention
}

// unchanged reports whether the intention at one key decides identically in both versions, for
// every pair it decides in both: same content, and the mesh default matters to neither.
func (d *differ) unchanged(b, h *mesh.Intention) bool {
	if b == nil || h == nil {
		return b == nil && h == nil && d.defBase == d.defHead
	}
	return sameRule(b, h) && (d.defBase == d.defHead || len(b.Permissions) == 0)
}

func sameRule(a, b *mesh.Intention) bool {
	return a.Action == b.Action && reflect.DeepEqual(a.Permissions, b.Permissions)
}

// named handles the pairs that have an intention of their own in either version.
func (d *differ) named() {
	for _, k := range d.exact {
		if d.unchanged(d.base.Intention(k.src, k.dst), d.head.Intention(k.src, k.dst)) {
			continue
		}
		if a := d.evaluate(k.src, k.dst); a != nil {
			a.Pairs = 1
			d.out = append(d.out, a)
		}
	}
}

// wildcardSources handles, for each destination with an intention from "*" in either version,
// the sources without an intention of their own into it.
func (d *differ) wildcardSources() {
	for _, dst := range d.wildSrc {
		b, h := d.base.Intention(mesh.Wildcard, dst), d.head.Intention(mesh.Wildcard, dst)
		if b != nil && h != nil && d.unchanged(b, h) {
			continue
		}
		// Where D←* exists in one version only, the other falls back to *←S: sources with such
		// an intention there are decided each by their own, the rest alike.
		lacking := d.base
		if b != nil {
			lacking = d.head
		}
		// The rest: sources decided alike, counted and listed (up to MaxListed) in one pass.
		oneSided := b == nil || h == nil
		inRest := func(src string) bool {
			return !d.namedSrc[dst][src] && !(oneSided && lacking.Intention(src, mesh.Wildcard) != nil)
		}
		var rest []string
		count := 0
		for _, src := range d.services {
			if d.namedSrc[dst][src] {
				continue
			}
			if !inRest(src) {
				if a := d.evaluate(src, dst); a != nil {
					a.Pairs = 1
					d.out = append(d.out, a)
				}
				continue
			}
			count++
			if len(rest) <= MaxListed {
				rest = append(rest, src)
			}
		}
		if count == 0 {
			continue
		}
		if a := d.evaluate(rest[0], dst); a != nil {
			if count == 1 {
				a.Pairs = 1
			} else {
				a.Source = mesh.Wildcard
				a.Sources, a.Truncated = capList(rest)
				a.nSources, a.nDests = count, 1
				a.Pairs = count
				a.Group = "sources without their own intention"
				services := d.services
				a.each = func(f func(string, string)) {
					for _, src := range services {
						if inRest(src) {
							f(src, dst)
						}
					}
				}
			}
			d.out = append(d.out, a)
		}
	}
}

// fallbacks handles the pairs into destinations without an intention from "*" in either
// version: each is decided by its source's intention into "*", else by "*"→"*", else by the
// mesh default, whatever the destination.
func (d *differ) fallbacks() {
	var open []string // destinations without D←* in either version
	wild := map[string]bool{}
	for _, dst := range d.wildSrc {
		wild[dst] = true
	}
	for _, s := range d.services {
		if !wild[s] {
			open = append(open, s)
		}
	}
	if len(open) == 0 {
		return
	}
	var plain []string // sources without *←S in either version
	for _, src := range d.services {
		if !d.wildDst[src] {
			plain = append(plain, src)
			continue
		}
		if d.unchanged(d.base.Intention(src, mesh.Wildcard), d.head.Intention(src, mesh.Wildcard)) {
			continue
		}
		var dsts []string
		count := 0
		for _, dst := range open {
			if !d.namedSrc[dst][src] {
				count++
				if len(dsts) <= MaxListed {
					dsts = append(dsts, dst)
				}
			}
		}
		if count == 0 {
			continue
		}
		if a := d.evaluate(src, dsts[0]); a != nil {
			if count == 1 {
				a.Pairs = 1
			} else {
				a.Destination = mesh.Wildcard
				a.Destinations, a.Truncated = capList(dsts)
				a.nSources, a.nDests = 1, count
				a.dsts = filter(open, func(dst string) bool { return !d.namedSrc[dst][src] })
				a.Pairs = count
				a.Group = "destinations without their own intention"
				namedSrc := d.namedSrc
				a.each = func(f func(string, string)) {
					for _, dst := range open {
						if !namedSrc[dst][src] {
							f(src, dst)
						}
					}
				}
			}
			d.out = append(d.out, a)
		}
	}
	if len(plain) == 0 || d.unchanged(d.base.Intention(mesh.Wildcard, mesh.Wildcard), d.head.Intention(mesh.Wildcard, mesh.Wildcard)) {
		return
	}
	// The pairs of plain × open without an intention of their own: count them and find one.
	isPlain := map[string]bool{}
	for _, s := range plain {
		isPlain[s] = true
	}
	named := map[key]bool{}
	for _, k := range d.exact {
		if !wild[k.dst] && isPlain[k.src] {
			named[key{k.dst, k.src}] = true
		}
	}
	total := len(plain)*len(open) - len(named)
	if total == 0 {
		return
	}
	var rs, rd string
	for _, dst := range open {
		if len(d.namedSrc[dst]) >= len(plain) && countIn(d.namedSrc[dst], isPlain) == len(plain) {
			continue
		}
		for _, src := range plain {
			if !named[key{dst, src}] {
				rs, rd = src, dst
				break
			}
		}
		break
	}
	a := d.evaluate(rs, rd)
	if a == nil {
		return
	}
	if total == 1 {
		a.Pairs = 1
		d.out = append(d.out, a)
		return
	}
	if len(plain) > 1 {
		a.Source = mesh.Wildcard
		a.Sources, a.Truncated = capList(plain)
	}
	if len(open) > 1 {
		var t bool
		a.Destination = mesh.Wildcard
		a.Destinations, t = capList(open)
		a.Truncated = a.Truncated || t
	}
	a.Pairs = total
	a.nSources, a.nDests, a.dsts = len(plain), len(open), open
	a.Group = "pairs without an intention of their own"
	a.each = func(f func(string, string)) {
		for _, dst := range open {
			for _, src := range plain {
				if !named[key{dst, src}] {
					f(src, dst)
				}
			}
		}
	}
	d.out = append(d.out, a)
}

func filter(list []string, keep func(string) bool) []string {
	var out []string
	for _, x := range list {
		if keep(x) {
			out = append(out, x)
		}
	}
	return out
}

func countIn(m map[string]bool, in map[string]bool) int {
	n := 0
	for k := range m {
		if in[k] {
			n++
		}
	}
	return n
}

// maxStates is the search budget of one pair (0: mesh.DefaultCompareStates); tests lower it.
var maxStates = 0

// evaluate decides whether src → dst gets a different verdict in base and head for some
// request (mesh.CompareAccess), and returns the change, or nil when every verdict is the same. An
// Access with Undecided set says that the question could not be decided, and why.
func (d *differ) evaluate(src, dst string) *Access {
	bc, hc := d.base.Candidates(src, dst), d.head.Candidates(src, dst)
	var bi, hi *mesh.Intention
	if len(bc) > 0 {
		bi = bc[0]
	}
	if len(hc) > 0 {
		hi = hc[0]
	}
	o := mesh.CompareAccess(d.base, d.head, src, dst, maxStates)
	if !o.Differs && o.Undecided == "" {
		return nil
	}
	a := &Access{
		Source: src, Destination: dst,
		Before: describeRule(bi, d.defBase),
		After:  describeRule(hi, d.defHead),
	}
	a.Detail = "now " + deciderOf(hi, d.defHead) + "; before " + deciderOf(bi, d.defBase)
	if o.Differs && (hasPermissions(bi) || hasPermissions(hi)) {
		a.Example = o.Example.Describe()
	}
	a.Undecided = o.Undecided
	if hi != nil {
		a.Position = d.head.Pos(mesh.PathIntention(hi.Destination, hi.Source)).String()
	} else if p := d.head.Pos("mesh"); p.IsValid() {
		a.Position = p.String()
	}
	return a
}

func hasPermissions(in *mesh.Intention) bool { return in != nil && len(in.Permissions) > 0 }

func deciderOf(in *mesh.Intention, def mesh.Action) string {
	if in == nil {
		return fmt.Sprintf("the mesh default (%s)", def)
	}
	return fmt.Sprintf("intention %s → %s (precedence %d)", in.Source, in.Destination, in.Precedence)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
