package mesh

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// precedenceSnapshot has one intention at each precedence level, so that each level can be seen
// to beat the ones below it:
//
//	0: api ← web     allow (9)     2: * ← metrics  allow (6)
//	1: db  ← *       deny  (8)     3: * ← *        allow (5)
//	4: db  ← api     allow (9)
func precedenceSnapshot(def Action) *Snapshot {
	return newSnapshot(def,
		allow("web", "api"),
		deny(Wildcard, "db"),
		allow("metrics", Wildcard),
		allow(Wildcard, Wildcard),
		allow("api", "db"),
	)
}

func TestAuthorizePrecedence(t *testing.T) {
	s := precedenceSnapshot(Deny)
	tests := []struct {
		src, dst   string
		verdict    Action
		precedence int
		decider    [2]string // source, destination of the deciding intention
		pos        Pos
	}{
		{"web", "api", Allow, 9, [2]string{"web", "api"}, pos(0, -1)},
		{"api", "db", Allow, 9, [2]string{"api", "db"}, pos(4, -1)},
		// db ← * (8) beats * ← metrics (6) and * ← * (5).
		{"metrics", "db", Deny, 8, [2]string{Wildcard, "db"}, pos(1, -1)},
		{"web", "db", Deny, 8, [2]string{Wildcard, "db"}, pos(1, -1)},
		// * ← metrics (6) beats * ← * (5); it is an allow, so is the 5, but the 6 decides.
		{"metrics", "web", Allow, 6, [2]string{"metrics", Wildcard}, pos(2, -1)},
		// Only * ← * applies: it overrides the mesh default.
		{"cart", "web", Allow, 5, [2]string{Wildcard, Wildcard}, pos(3, -1)},
		{"api", "web", Allow, 5, [2]string{Wildcard, Wildcard}, pos(3, -1)},
	}
	for _, tt := range tests {
		t.Run(tt.src+"→"+tt.dst, func(t *testing.T) {
			d := Authorize(s, Request{Source: tt.src, Destination: tt.dst})
			if d.Verdict != tt.verdict {
				t.Errorf("verdict = %s, want %s (%s)", d.Verdict, tt.verdict, d.Reason)
			}
			if d.Intention == nil {
				t.Fatalf("no deciding intention, want %s → %s", tt.decider[0], tt.decider[1])
			}
			if got := [2]string{d.Intention.Source, d.Intention.Destination}; got != tt.decider {
				t.Errorf("decided by %s → %s, want %s → %s", got[0], got[1], tt.decider[0], tt.decider[1])
			}
			if d.Intention.Precedence != tt.precedence {
				t.Errorf("precedence = %d, want %d", d.Intention.Precedence, tt.precedence)
			}
			if d.Permission != -1 {
				t.Errorf("permission = %d, want -1 (the action decided)", d.Permission)
			}
			if d.Pos != tt.pos {
				t.Errorf("pos = %s, want %s", d.Pos, tt.pos)
			}
			if want := fmt.Sprintf("(precedence %d) says %s", tt.precedence, tt.verdict); !strings.Contains(d.Reason, want) {
				t.Errorf("reason %q does not contain %q", d.Reason, want)
			}
			if d.Allowed() != (tt.verdict == Allow) {
				t.Errorf("Allowed() = %v with verdict %s", d.Allowed(), d.Verdict)
			}
		})
	}
}

func TestAuthorizeEachLevelAlone(t *testing.T) {
	// With a default of allow, a lone deny at each level must decide, and vice versa.
	for _, def := range []Action{Allow, Deny} {
		other := Deny
		if def == Deny {
			other = Allow
		}
		for _, in := range []*Intention{
			{Source: "web", Destination: "api"},
			{Source: Wildcard, Destination: "api"},
			{Source: "web", Destination: Wildcard},
			{Source: Wildcard, Destination: Wildcard},
		} {
			in.Action = other
			s := newSnapshot(def, in)
			d := Authorize(s, Request{Source: "web", Destination: "api"})
			if d.Verdict != other || d.Intention != in {
				t.Errorf("default %s, only %s → %s %s: got %s by %v", def, in.Source, in.Destination, other, d.Verdict, d.Intention)
			}
			// A request that the intention does not cover gets the default.
			d = Authorize(s, Request{Source: "cart", Destination: "db"})
			want := def
			if in.Source == Wildcard && in.Destination == Wildcard {
				want = other
			}
			if d.Verdict != want {
				t.Errorf("default %s, only %s → %s %s: cart → db got %s, want %s", def, in.Source, in.Destination, other, d.Verdict, want)
			}
		}
	}
}

func TestAuthorizeDefault(t *testing.T) {
	tests := []struct {
		name string
		def  Action
		want Action
	}{
		{"deny", Deny, Deny},
		{"allow", Allow, Allow},
		{"unset is deny", "", Deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSnapshot(tt.def, allow("web", "api"), l7("web", "cart", perm(Allow, &HTTPMatch{PathPrefix: "/cart/"})))
			d := Authorize(s, Request{Source: "api", Destination: "web", Method: "GET", Path: "/"})
			if d.Verdict != tt.want {
				t.Errorf("verdict = %s, want %s", d.Verdict, tt.want)
			}
			if d.Intention != nil || d.Permission != -1 || d.Pos.IsValid() {
				t.Errorf("decision = %+v, want no intention, permission -1, no position", d)
			}
			if want := "no intention from api to web; the mesh default is " + string(tt.want); d.Reason != want {
				t.Errorf("reason = %q, want %q", d.Reason, want)
			}
		})
	}
}

// l7Snapshot: api ← web has permissions; lower precedences all allow, to show that a request
// that no permission matches does not fall through to them.
//
//	0: api ← web   [0 deny  /v1/admin/...  1 allow GET|HEAD /v1/...  2 deny /v1  3 allow POST /v2/orders]
//	1: api ← *     allow
//	2: * ← web     allow
//	3: * ← *       allow
//	4: cart ← web  [0 allow /cart/]  (positions of permissions not recorded)
func l7Snapshot(def Action) *Snapshot {
	s := newSnapshot(def,
		l7("web", "api",
			perm(Deny, &HTTPMatch{PathPrefix: "/v1/admin/"}),
			perm(Allow, &HTTPMatch{PathPrefix: "/v1/", Methods: []string{"GET", "HEAD"}}),
			perm(Deny, &HTTPMatch{PathPrefix: "/v1"}),
			perm(Allow, &HTTPMatch{Path: "/v2/orders", Methods: []string{"POST"}}),
		),
		allow(Wildcard, "api"),
		allow("web", Wildcard),
		allow(Wildcard, Wildcard),
		l7("web", "cart", perm(Allow, &HTTPMatch{PathPrefix: "/cart/"})),
	)
	delete(s.Positions, PathPermission("cart", "web", 0))
	return s
}

func TestAuthorizeL7(t *testing.T) {
	tests := []struct {
		name         string
		def          Action
		dst          string
		method, path string
		verdict      Action
		permission   int
		pos          Pos
		reason       string
	}{
		{"first match deny", Deny, "api", "GET", "/v1/admin/users", Deny, 0, pos(0, 0), "permission 1 of intention web → api (precedence 9) matches (/v1/admin/*) and says deny"},
		{"first match allow", Deny, "api", "GET", "/v1/items", Allow, 1, pos(0, 1), "permission 2 of intention web → api (precedence 9) matches (GET|HEAD /v1/*) and says allow"},
		{"head", Deny, "api", "HEAD", "/v1/items", Allow, 1, pos(0, 1), ""},
		{"method misses, next permission", Deny, "api", "POST", "/v1/items", Deny, 2, pos(0, 2), "permission 3"},
		{"exact path", Deny, "api", "POST", "/v2/orders", Allow, 3, pos(0, 3), ""},
		{"exact path with query", Deny, "api", "POST", "/v2/orders?id=7", Allow, 3, pos(0, 3), ""},
		{"exact path is not a prefix", Deny, "api", "POST", "/v2/orders/7", Deny, -1, pos(0, -1), ""},
		// No permission matches: the mesh default decides, although api ← *, * ← web and * ← *
		// would all allow. The intention that was consulted is still reported.
		{"no fall-through, default deny", Deny, "api", "GET", "/v3/items", Deny, -1, pos(0, -1),
			"no permission of intention web → api (precedence 9) matches; the mesh default is deny"},
		{"no fall-through, default allow", Allow, "api", "GET", "/v3/items", Allow, -1, pos(0, -1),
			"no permission of intention web → api (precedence 9) matches; the mesh default is allow"},
		{"no method, no path", Deny, "api", "", "", Deny, -1, pos(0, -1), ""},
		// Without a recorded position for the permission, the intention's is reported.
		{"permission position falls back", Deny, "cart", "GET", "/cart/1", Allow, 0, pos(4, -1), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := l7Snapshot(tt.def)
			d := Authorize(s, Request{Source: "web", Destination: tt.dst, Method: tt.method, Path: tt.path})
			if d.Verdict != tt.verdict {
				t.Errorf("verdict = %s, want %s (%s)", d.Verdict, tt.verdict, d.Reason)
			}
			if d.Intention == nil || d.Intention.Source != "web" || d.Intention.Destination != tt.dst {
				t.Fatalf("deciding intention = %+v, want web → %s", d.Intention, tt.dst)
			}
			if d.Permission != tt.permission {
				t.Errorf("permission = %d, want %d", d.Permission, tt.permission)
			}
			if d.Pos != tt.pos {
				t.Errorf("pos = %s, want %s", d.Pos, tt.pos)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("reason = %q, want it to contain %q", d.Reason, tt.reason)
			}
		})
	}
}

func TestAuthorizeL7OnWildcardSource(t *testing.T) {
	// Permissions on "*" → catalog apply to every caller without an exact intention; an exact
	// intention (9) replaces them entirely.
	s := newSnapshot(Deny,
		l7(Wildcard, "catalog", perm(Allow, &HTTPMatch{Methods: []string{"GET", "HEAD"}})),
		allow("api", "catalog"),
	)
	tests := []struct {
		src, method string
		want        Action
		precedence  int
	}{
		{"web", "GET", Allow, 8},
		{"web", "DELETE", Deny, 8},
		{"cart", "HEAD", Allow, 8},
		{"api", "DELETE", Allow, 9},
	}
	for _, tt := range tests {
		d := Authorize(s, Request{Source: tt.src, Destination: "catalog", Method: tt.method, Path: "/items"})
		if d.Verdict != tt.want || d.Intention == nil || d.Intention.Precedence != tt.precedence {
			t.Errorf("%s %s → catalog: %s by %+v, want %s at precedence %d", tt.method, tt.src, d.Verdict, d.Intention, tt.want, tt.precedence)
		}
	}
}

func TestAuthorizeNilMatchMatchesAll(t *testing.T) {
	s := newSnapshot(Deny, l7("web", "api", perm(Allow, nil)))
	d := Authorize(s, Request{Source: "web", Destination: "api", Method: "DELETE", Path: "/anything"})
	if d.Verdict != Allow || d.Permission != 0 {
		t.Errorf("got %s by permission %d, want allow by permission 0", d.Verdict, d.Permission)
	}
	if !strings.Contains(d.Reason, "(any request)") {
		t.Errorf("reason = %q, want it to say any request", d.Reason)
	}
}

func TestAuthorizeConcurrent(t *testing.T) {
	// The intention index is built lazily; concurrent first uses must agree (run with -race).
	s := precedenceSnapshot(Deny)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d := Authorize(s, Request{Source: "metrics", Destination: "db"}); d.Verdict != Deny {
				t.Errorf("metrics → db = %s, want deny", d.Verdict)
			}
		}()
	}
	wg.Wait()
}

func TestCandidatesAndInbound(t *testing.T) {
	s := precedenceSnapshot(Deny)
	names := func(l []*Intention) string {
		var parts []string
		for _, in := range l {
			parts = append(parts, fmt.Sprintf("%s→%s", in.Source, in.Destination))
		}
		return strings.Join(parts, " ")
	}
	if got, want := names(s.Candidates("metrics", "db")), "*→db metrics→* *→*"; got != want {
		t.Errorf("Candidates(metrics, db) = %s, want %s", got, want)
	}
	if got, want := names(s.Candidates("api", "db")), "api→db *→db *→*"; got != want {
		t.Errorf("Candidates(api, db) = %s, want %s", got, want)
	}
	if got, want := names(s.Inbound("db")), "api→db *→db metrics→* *→*"; got != want {
		t.Errorf("Inbound(db) = %s, want %s", got, want)
	}
	if got, want := names(s.Intentions), "web→api api→db *→db metrics→* *→*"; got != want {
		t.Errorf("sorted intentions = %s, want %s", got, want)
	}
}

// matchCase is one HTTPMatch case: the request is GET / unless method or path is set.
type matchCase struct {
	name    string
	m       HTTPMatch
	method  string
	path    string
	headers map[string]string
	want    bool
}

func runMatchCases(t *testing.T, tests []matchCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Request{Method: tt.method, Path: tt.path, Headers: tt.headers}
			if r.Method == "" {
				r.Method = "GET"
			}
			if r.Path == "" {
				r.Path = "/"
			}
			if got := tt.m.Matches(&r); got != tt.want {
				t.Errorf("%s matches %s %s %v = %v, want %v", tt.m.Describe(), r.Method, r.Path, r.Headers, got, tt.want)
			}
		})
	}
}

func hdr(kind, name, value string, invert bool) HTTPMatch {
	return HTTPMatch{Header: []HeaderMatch{{Name: name, Kind: kind, Value: value, Invert: invert}}}
}

func h(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestHeaderMatch(t *testing.T) {
	runMatchCases(t, []matchCase{
		// Names are case-insensitive, values case-sensitive.
		{name: "name case-insensitive", m: hdr(MatchExact, "X-Canary", "1", false), headers: h("x-canary", "1"), want: true},
		{name: "name case-insensitive (request upper)", m: hdr(MatchExact, "x-canary", "1", false), headers: h("X-CANARY", "1"), want: true},
		{name: "value case-sensitive", m: hdr(MatchExact, "x-env", "Beta", false), headers: h("x-env", "beta"), want: false},
		{name: "exact", m: hdr(MatchExact, "x-env", "beta", false), headers: h("x-env", "beta"), want: true},
		{name: "exact is not prefix", m: hdr(MatchExact, "x-env", "beta", false), headers: h("x-env", "beta2"), want: false},
		{name: "exact empty value", m: hdr(MatchExact, "x-env", "", false), headers: h("x-env", ""), want: true},
		{name: "prefix", m: hdr(MatchPrefix, "user-agent", "curl/", false), headers: h("User-Agent", "curl/8.1"), want: true},
		{name: "prefix miss", m: hdr(MatchPrefix, "user-agent", "curl/", false), headers: h("User-Agent", "Curl/8.1"), want: false},
		{name: "suffix", m: hdr(MatchSuffix, "host", ".shop.mesh", false), headers: h("host", "api.shop.mesh"), want: true},
		{name: "suffix miss", m: hdr(MatchSuffix, "host", ".shop.mesh", false), headers: h("host", "api.shop.mesh.evil"), want: false},
		{name: "regex full match", m: hdr(MatchRegex, "x-version", "v[0-9]+", false), headers: h("x-version", "v12"), want: true},
		{name: "regex is anchored at start", m: hdr(MatchRegex, "x-version", "v[0-9]+", false), headers: h("x-version", "xv12"), want: false},
		{name: "regex is anchored at end", m: hdr(MatchRegex, "x-version", "v[0-9]+", false), headers: h("x-version", "v12x"), want: false},
		{name: "regex alternation anchored", m: hdr(MatchRegex, "x-version", "v1|v2", false), headers: h("x-version", "v1x"), want: false},
		{name: "regex alternation", m: hdr(MatchRegex, "x-version", "v1|v2", false), headers: h("x-version", "v2"), want: true},
		{name: "present", m: hdr(MatchPresent, "authorization", "", false), headers: h("Authorization", "Bearer x"), want: true},
		{name: "present with empty value", m: hdr(MatchPresent, "authorization", "", false), headers: h("authorization", ""), want: true},
		{name: "present absent", m: hdr(MatchPresent, "authorization", "", false), headers: h("cookie", "x"), want: false},
		{name: "absent exact", m: hdr(MatchExact, "x-env", "", false), headers: nil, want: false},

		// Inverted: negates when the header is present; an absent header never matches an
		// inverted exact/prefix/suffix/regex, but does match an inverted present.
		{name: "invert exact differs", m: hdr(MatchExact, "x-env", "prod", true), headers: h("x-env", "dev"), want: true},
		{name: "invert exact same", m: hdr(MatchExact, "x-env", "prod", true), headers: h("x-env", "prod"), want: false},
		{name: "invert exact absent", m: hdr(MatchExact, "x-env", "prod", true), headers: nil, want: false},
		{name: "invert prefix absent", m: hdr(MatchPrefix, "x-env", "p", true), headers: h("other", "p"), want: false},
		{name: "invert prefix present", m: hdr(MatchPrefix, "x-env", "p", true), headers: h("x-env", "dev"), want: true},
		{name: "invert suffix absent", m: hdr(MatchSuffix, "x-env", "d", true), headers: nil, want: false},
		{name: "invert suffix present", m: hdr(MatchSuffix, "x-env", "d", true), headers: h("x-env", "prod"), want: false},
		{name: "invert regex absent", m: hdr(MatchRegex, "x-env", ".*", true), headers: nil, want: false},
		{name: "invert regex present no match", m: hdr(MatchRegex, "x-env", "[0-9]{3}", true), headers: h("x-env", "1234"), want: true},
		{name: "invert present absent", m: hdr(MatchPresent, "x-debug", "", true), headers: nil, want: true},
		{name: "invert present present", m: hdr(MatchPresent, "x-debug", "", true), headers: h("X-Debug", ""), want: false},

		// Every header condition must hold.
		{name: "all headers hold", m: HTTPMatch{Header: []HeaderMatch{
			{Name: "a", Kind: MatchExact, Value: "1"}, {Name: "b", Kind: MatchPresent, Invert: true},
		}}, headers: h("a", "1"), want: true},
		{name: "one header fails", m: HTTPMatch{Header: []HeaderMatch{
			{Name: "a", Kind: MatchExact, Value: "1"}, {Name: "b", Kind: MatchPresent, Invert: true},
		}}, headers: h("a", "1", "B", "x"), want: false},
	})
}

func TestPathMatch(t *testing.T) {
	runMatchCases(t, []matchCase{
		{name: "prefix is a plain string prefix", m: HTTPMatch{PathPrefix: "/v1"}, path: "/v1beta/items", want: true},
		{name: "prefix with slash", m: HTTPMatch{PathPrefix: "/v1/"}, path: "/v1beta/items", want: false},
		{name: "prefix equal", m: HTTPMatch{PathPrefix: "/v1/"}, path: "/v1/", want: true},
		{name: "prefix case-sensitive", m: HTTPMatch{PathPrefix: "/v1/"}, path: "/V1/items", want: false},
		{name: "prefix ignores query", m: HTTPMatch{PathPrefix: "/a?x"}, path: "/a?x=1", want: false},
		{name: "exact", m: HTTPMatch{Path: "/healthz"}, path: "/healthz", want: true},
		{name: "exact trailing slash", m: HTTPMatch{Path: "/healthz"}, path: "/healthz/", want: false},
		{name: "exact ignores query", m: HTTPMatch{Path: "/healthz"}, path: "/healthz?verbose=1", want: true},
		{name: "exact ignores empty query", m: HTTPMatch{Path: "/healthz"}, path: "/healthz?", want: true},
		{name: "exact ignores fragment", m: HTTPMatch{Path: "/healthz"}, path: "/healthz#top", want: true},
		{name: "regex full match", m: HTTPMatch{PathRegex: "/items/[0-9]+"}, path: "/items/42", want: true},
		{name: "regex not a search", m: HTTPMatch{PathRegex: "/items/[0-9]+"}, path: "/api/items/42", want: false},
		{name: "regex anchored at end", m: HTTPMatch{PathRegex: "/items/[0-9]+"}, path: "/items/42/reviews", want: false},
		{name: "regex ignores query", m: HTTPMatch{PathRegex: "/items/[0-9]+"}, path: "/items/42?sort=asc", want: true},
		{name: "regex alternation anchored", m: HTTPMatch{PathRegex: "/a|/b"}, path: "/a/x", want: false},
		{name: "invalid regex never matches", m: HTTPMatch{PathRegex: "/items/(["}, path: "/items/([", want: false},
		{name: "grpc method path", m: HTTPMatch{Path: "/shop.payments.Payments/Charge"}, method: "POST", path: "/shop.payments.Payments/Charge", want: true},
		{name: "grpc other method", m: HTTPMatch{Path: "/shop.payments.Payments/Charge"}, method: "POST", path: "/shop.payments.Payments/Refund", want: false},
	})
}

func TestMethodMatch(t *testing.T) {
	runMatchCases(t, []matchCase{
		{name: "listed", m: HTTPMatch{Methods: []string{"GET", "HEAD"}}, method: "HEAD", want: true},
		{name: "not listed", m: HTTPMatch{Methods: []string{"GET", "HEAD"}}, method: "POST", want: false},
		{name: "case-sensitive", m: HTTPMatch{Methods: []string{"GET"}}, method: "get", want: false},
		{name: "none listed is any", m: HTTPMatch{}, method: "PATCH", want: true},
		{name: "methods and path both hold", m: HTTPMatch{Methods: []string{"GET"}, PathPrefix: "/admin/"}, method: "GET", path: "/admin/users", want: true},
		{name: "method holds, path not", m: HTTPMatch{Methods: []string{"GET"}, PathPrefix: "/admin/"}, method: "GET", path: "/users", want: false},
		{name: "path holds, method not", m: HTTPMatch{Methods: []string{"GET"}, PathPrefix: "/admin/"}, method: "DELETE", path: "/admin/users", want: false},
	})
}

func TestQueryParamMatch(t *testing.T) {
	q := func(kind, name, value string) HTTPMatch {
		return HTTPMatch{QueryParam: []QueryMatch{{Name: name, Kind: kind, Value: value}}}
	}
	runMatchCases(t, []matchCase{
		{name: "exact", m: q(MatchExact, "version", "2"), path: "/items?version=2", want: true},
		{name: "exact among others", m: q(MatchExact, "version", "2"), path: "/items?a=1&version=2&b=3", want: true},
		{name: "exact is whole value", m: q(MatchExact, "version", "2"), path: "/items?version=20", want: false},
		{name: "exact case-sensitive value", m: q(MatchExact, "env", "Prod"), path: "/?env=prod", want: false},
		{name: "exact name case-sensitive", m: q(MatchExact, "env", "prod"), path: "/?ENV=prod", want: false},
		{name: "exact no query", m: q(MatchExact, "version", "2"), path: "/items", want: false},
		{name: "exact empty value", m: q(MatchExact, "version", ""), path: "/items?version=", want: true},
		{name: "name is not a prefix", m: q(MatchExact, "ver", "2"), path: "/items?version=2", want: false},
		{name: "regex full match", m: q(MatchRegex, "page", "[0-9]+"), path: "/items?page=12", want: true},
		{name: "regex anchored", m: q(MatchRegex, "page", "[0-9]+"), path: "/items?page=12a", want: false},
		{name: "present with value", m: q(MatchPresent, "debug", ""), path: "/items?debug=1", want: true},
		{name: "present without =", m: q(MatchPresent, "debug", ""), path: "/items?x=1&debug", want: true},
		{name: "present empty", m: q(MatchPresent, "debug", ""), path: "/items?debug=", want: true},
		{name: "present absent", m: q(MatchPresent, "debug", ""), path: "/items?nodebug=1", want: false},
		{name: "first occurrence decides", m: q(MatchExact, "v", "2"), path: "/?v=1&v=2", want: false},
		{name: "path part is not the query", m: q(MatchPresent, "debug", ""), path: "/debug", want: false},
	})
}

// The bugs below are in the root package; see the report of the session that wrote these tests.

// A regular expression that is not valid on its own must never match, as the comment of
// regexCache promises and as Envoy, which rejects it, would have it. FullRegexp wraps expr in
// ^(?:...)$ without checking it first, so "a)|(b" becomes ^(?:a)|(b)$: valid, and a search
// for a leading "a" or a trailing "b".
func TestInvalidRegexNeverMatches(t *testing.T) {
	for _, expr := range []string{"a)|(b", ".*)|(.*", "x)(?:y"} {
		if _, err := FullRegexp(expr); err == nil {
			t.Errorf("FullRegexp(%q) accepted an invalid regular expression", expr)
		}
		for _, v := range []string{"abc", "zzb", "anything", "xy"} {
			hm := HeaderMatch{Name: "x", Kind: MatchRegex, Value: expr}
			if hm.matches(v, true) {
				t.Errorf("header regex %q matches %q", expr, v)
			}
			if (&HTTPMatch{PathRegex: expr}).Matches(&Request{Path: v}) {
				t.Errorf("path regex %q matches %q", expr, v)
			}
		}
	}
}

// The other side of the same bug: a valid RE2 expression that quotes with \Q... to its end
// swallows the ")$" that FullRegexp appends, so it is rejected and never matches, while Envoy
// accepts it and matches.
func TestQuotedRegexMatches(t *testing.T) {
	re, err := FullRegexp(`\Qv1.2`)
	if err != nil {
		t.Fatalf("FullRegexp(`\\Qv1.2`): %v", err)
	}
	for v, want := range map[string]bool{"v1.2": true, "v1x2": false, "v1.2.3": false} {
		if got := re.MatchString(v); got != want {
			t.Errorf("`\\Qv1.2` matches %q = %v, want %v", v, got, want)
		}
	}
}

// A fragment ends the query string as it ends the path: "/a?x=1#top" has query x=1.
func TestQueryIgnoresFragment(t *testing.T) {
	runMatchCases(t, []matchCase{
		{name: "fragment after query", m: HTTPMatch{QueryParam: []QueryMatch{{Name: "x", Kind: MatchExact, Value: "1"}}}, path: "/a?x=1#top", want: true},
		{name: "question mark inside fragment", m: HTTPMatch{QueryParam: []QueryMatch{{Name: "x", Kind: MatchPresent}}}, path: "/a#frag?x", want: false},
	})
}
