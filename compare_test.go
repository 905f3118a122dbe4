package mesh

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func newTestRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 3)) }

func TestWitnesses(t *testing.T) {
	for _, re := range []string{`/v[0-9]+/.*`, `/(a|b)/x?`, `[a-z]{3}`, `.*\.json`} {
		if len(witnesses(re)) == 0 {
			t.Errorf("no witness for %q", re)
		}
	}
}

// TestAllowsSome: whether some request is allowed comes from Authorize through the rules the
// evaluator applies, mesh default included.
func TestAllowsSome(t *testing.T) {
	snap := func(def Action, perms ...Permission) *Snapshot {
		s := &Snapshot{Mesh: Config{DefaultIntention: def}}
		s.Intentions = []*Intention{{Source: "web", Destination: "api", Precedence: PrecedenceExact, Permissions: perms}}
		return s
	}
	deny := func(m *HTTPMatch) Permission { return Permission{Action: Deny, HTTP: m} }
	allow := func(m *HTTPMatch) Permission { return Permission{Action: Allow, HTTP: m} }
	for _, c := range []struct {
		name      string
		s         *Snapshot
		allows    bool
		undecided string
	}{
		{"deny one path, default allow", snap(Allow, deny(&HTTPMatch{PathPrefix: "/admin/"})), true, ""},
		{"deny one path, default deny", snap(Deny, deny(&HTTPMatch{PathPrefix: "/admin/"})), false, ""},
		{"an allow shadowed by a deny of everything", snap(Deny, deny(nil), allow(&HTTPMatch{Path: "/x"})), false, ""},
		{"an allow shadowed by a wider deny", snap(Deny, deny(&HTTPMatch{PathPrefix: "/a"}), allow(&HTTPMatch{Path: "/a/b"})), false, ""},
		{"an allow partly shadowed", snap(Deny, deny(&HTTPMatch{PathPrefix: "/a/"}), allow(&HTTPMatch{PathPrefix: "/a"})), true, ""},
		{"an allow behind a header deny", snap(Deny, deny(&HTTPMatch{Header: []HeaderMatch{{Name: "x", Kind: MatchPresent}}}), allow(nil)), true, ""},
		{"a regex allow shadowed", snap(Deny, deny(&HTTPMatch{PathPrefix: "/"}), allow(&HTTPMatch{PathRegex: "/a.*"})), false, ""},
		{"a regex deny", snap(Deny, allow(&HTTPMatch{PathRegex: "/a.*"})), true, ""},
		{"an allow behind a regex deny of every path", snap(Deny, deny(&HTTPMatch{PathRegex: "/.*"}), allow(&HTTPMatch{PathPrefix: "/"})), false, ""},
		{"an allow behind a regex deny of most paths", snap(Deny, deny(&HTTPMatch{PathRegex: "/[^x].*"}), allow(&HTTPMatch{PathPrefix: "/"})), true, ""},
		{"header regexes", snap(Deny, deny(&HTTPMatch{Header: []HeaderMatch{{Name: "v", Kind: MatchRegex, Value: "[0-9]+"}}}),
			allow(&HTTPMatch{Header: []HeaderMatch{{Name: "v", Kind: MatchRegex, Value: "[0-9]*"}}})), true, ""},
		{"header regexes, shadowed", snap(Deny, deny(&HTTPMatch{Header: []HeaderMatch{{Name: "v", Kind: MatchRegex, Value: "[0-9]*"}}}),
			allow(&HTTPMatch{Header: []HeaderMatch{{Name: "v", Kind: MatchRegex, Value: "1|2|[3-9][0-9]?"}}})), false, ""},
		{"a path regex spelling a percent-encoding is sampled", snap(Deny, deny(&HTTPMatch{PathRegex: "/a%2F.*"}), allow(&HTTPMatch{PathPrefix: "/a%2F"})), false, "regex"},
	} {
		d := AllowsSome(c.s, "web", "api", 0)
		if d.Differs != c.allows || (c.undecided == "") != (d.Undecided == "") || !strings.Contains(d.Undecided, c.undecided) {
			t.Errorf("%s: AllowsSome = %+v; want allows %v, undecided %q", c.name, d, c.allows, c.undecided)
		}
		if d.Differs {
			q := d.Example
			if got := Authorize(c.s, q); !got.Allowed() {
				t.Errorf("%s: example %s is not allowed: %s", c.name, q.Describe(), got.Reason)
			}
		}
	}
}

// TestRegexValuesComplete: for random sets of header conditions (regexes, exact, prefix,
// suffix values), every combination of them that some string of a brute-force set satisfies is
// satisfied by one of the representative values regexValues finds.
func TestRegexValuesComplete(t *testing.T) {
	exprs := []string{"a*", "(ab)+", "a.b", "[ab]?b", ".*b.*", "b|ab|ba", "a{2,3}", `\w+`, "(?i)A", "[^a]*", `a\b.*`, ".+"}
	lits := []string{"a", "b", "ab", "ba", ""}
	kinds := []string{MatchExact, MatchPrefix, MatchSuffix}
	var brute []string
	var gen func(s string, n int)
	gen = func(s string, n int) {
		brute = append(brute, s)
		if n == 0 {
			return
		}
		for _, c := range []string{"a", "b", "A", " ", "é"} {
			gen(s+c, n-1)
		}
	}
	gen("", 4)
	r := newTestRand(1)
	for i := 0; i < 200; i++ {
		var ms []*HTTPMatch
		for j := 0; j < 1+r.IntN(4); j++ {
			h := HeaderMatch{Name: "v", Kind: MatchRegex, Value: exprs[r.IntN(len(exprs))]}
			if r.IntN(3) == 0 {
				h.Kind, h.Value = kinds[r.IntN(len(kinds))], lits[r.IntN(len(lits))]
			}
			ms = append(ms, &HTTPMatch{Header: []HeaderMatch{h}})
		}
		vals, ok := regexValues(attr{kind: 'h', name: "v"}, ms)
		if !ok {
			t.Fatalf("case %d: the search did not fit", i)
		}
		vector := func(v string) string {
			var b strings.Builder
			for _, m := range ms {
				if m.Matches(&Request{Headers: map[string]string{"v": v}}) {
					b.WriteByte('1')
				} else {
					b.WriteByte('0')
				}
			}
			return b.String()
		}
		have := map[string]bool{}
		for _, v := range vals {
			have[vector(v)] = true
		}
		for _, s := range brute {
			if vec := vector(s); !have[vec] {
				var desc []string
				for _, m := range ms {
					desc = append(desc, m.Describe())
				}
				t.Fatalf("case %d: %q satisfies %s of %v; no representative of %q does", i, s, vec, desc, vals)
			}
		}
	}
}

// TestRegexValuesCompletePaths: the same for path conditions, over the paths Envoy can deliver
// (those NormalizePath leaves alone): every representative is such a path, and every
// combination such a path satisfies is represented.
func TestRegexValuesCompletePaths(t *testing.T) {
	regexes := []string{"/a.*", "/[ab]+/?", "/.*/b", `/a\.b`, "/(a|b)/.*", "/..", "/a/[^/]*", ".*b"}
	lits := []string{"/", "/a", "/a/", "/a/b", "/.", "/a.", "/b"}
	var brute []string
	var gen func(s string, n int)
	gen = func(s string, n int) {
		if NormalizePath(s) == s {
			brute = append(brute, s)
		}
		if n == 0 {
			return
		}
		for _, c := range []string{"/", "a", "b", ".", "x"} {
			gen(s+c, n-1)
		}
	}
	gen("/", 5)
	r := newTestRand(2)
	for i := 0; i < 200; i++ {
		var ms []*HTTPMatch
		for j := 0; j < 1+r.IntN(4); j++ {
			m := &HTTPMatch{PathRegex: regexes[r.IntN(len(regexes))]}
			switch r.IntN(3) {
			case 0:
				m = &HTTPMatch{Path: lits[r.IntN(len(lits))]}
			case 1:
				m = &HTTPMatch{PathPrefix: lits[r.IntN(len(lits))]}
			}
			ms = append(ms, m)
		}
		vals, ok := regexValues(attr{kind: 'p'}, ms)
		if !ok {
			t.Fatalf("case %d: the search did not fit", i)
		}
		vector := func(p string) string {
			var b strings.Builder
			for _, m := range ms {
				if m.Matches(&Request{Path: p}) {
					b.WriteByte('1')
				} else {
					b.WriteByte('0')
				}
			}
			return b.String()
		}
		have := map[string]bool{}
		for _, v := range vals {
			if NormalizePath(v) != v {
				t.Fatalf("case %d: representative %q is not a path Envoy delivers", i, v)
			}
			have[vector(v)] = true
		}
		for _, p := range brute {
			if vec := vector(p); !have[vec] {
				var desc []string
				for _, m := range ms {
					desc = append(desc, m.Describe())
				}
				t.Fatalf("case %d: %q satisfies %s of %v; no representative of %q does", i, p, vec, desc, vals)
			}
		}
	}
}

// FuzzCompareAccess: two one-permission rule lists over a header and a path, and a request.
// When CompareAccess decides that no request tells them apart, Authorize must agree on the
// fuzzed request; when it finds a difference, its example must show it.
func FuzzCompareAccess(f *testing.F) {
	f.Add(uint8(0), "a", uint8(3), "a.*", "/x/", "/x/.*", "a", "/x/y")
	f.Add(uint8(1), "ab", uint8(2), "b", "/", "/[^/]*", "ab", "/abc")
	f.Add(uint8(3), "[0-9]+", uint8(3), "[0-9]*", "/v1", `/v\d`, "", "/v1/..")
	f.Fuzz(func(t *testing.T, k1 uint8, v1 string, k2 uint8, v2, prefix, pathRegex, hv, path string) {
		kinds := []string{MatchExact, MatchPrefix, MatchSuffix, MatchRegex, MatchPresent}
		mk := func(k uint8, v string, m *HTTPMatch) *Snapshot {
			m.Header = []HeaderMatch{{Name: "x", Kind: kinds[int(k)%len(kinds)], Value: v, Invert: k >= 128}}
			if _, err := FullRegexp(v); err != nil && m.Header[0].Kind == MatchRegex {
				m.Header[0].Kind = MatchExact
			}
			return &Snapshot{Mesh: Config{DefaultIntention: Deny}, Intentions: []*Intention{{
				Source: "s", Destination: "d", Precedence: PrecedenceExact,
				Permissions: []Permission{{Action: Allow, HTTP: m}}}}}
		}
		// CompareAccess speaks of requests a proxy delivers: their path starts with "/" (an HTTP
		// request-target in origin form; a ":path" in HTTP/2). "#" alone would reach Authorize
		// as the empty path, which no proxy delivers.
		if _, err := FullRegexp(pathRegex); err != nil || len(v1)+len(v2)+len(pathRegex) > 40 || !strings.HasPrefix(path, "/") {
			return
		}
		a := mk(k1, v1, &HTTPMatch{PathPrefix: prefix})
		b := mk(k2, v2, &HTTPMatch{PathRegex: pathRegex})
		d := CompareAccess(a, b, "s", "d", 20000)
		q := Request{Source: "s", Destination: "d", Method: "GET", Path: path, Headers: map[string]string{"x": hv}}
		switch {
		case d.Differs:
			if Authorize(a, d.Example).Verdict == Authorize(b, d.Example).Verdict {
				t.Fatalf("example %s shows no difference", d.Example.Describe())
			}
		case d.Undecided == "":
			if Authorize(a, q).Verdict != Authorize(b, q).Verdict {
				t.Fatalf("decided equal, but %s differs (%s vs %s)", q.Describe(), Authorize(a, q).Reason, Authorize(b, q).Reason)
			}
		}
	})
}
