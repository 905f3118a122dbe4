package mesh

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

var matchKinds = []string{MatchExact, MatchPrefix, MatchSuffix, MatchRegex, MatchPresent}

// FuzzHTTPMatch matches random specs against random requests. Besides not panicking, the
// results must obey the matching rules of DESIGN.md that can be stated without an oracle.
func FuzzHTTPMatch(f *testing.F) {
	f.Add(uint8(0), "x-canary", "1", false, "X-Canary", "1", true, "/v1/items?page=2", "/v1", "/v1/.*", "GET", "page", "[0-9]+")
	f.Add(uint8(4), "x-debug", "", true, "x-debug", "", false, "/", "", "", "POST", "", "")
	f.Add(uint8(3), "x-version", "v[0-9]+", true, "X-VERSION", "v12", true, "/a#b?c=d", "/a", "(a|b)*", "get", "c", "d")
	f.Add(uint8(1), "user-agent", "curl/", false, "user-agent", "Curl/8", true, "/v1beta", "/v1", "/v1(beta)?", "HEAD", "q", "")
	f.Add(uint8(2), "host", ".mesh", true, "Host", "api.mesh", true, "?x=1&x=2", "?", "[", "", "x", "1|2")
	f.Fuzz(func(t *testing.T, kind uint8, name, value string, invert bool, reqName, reqValue string,
		present bool, path, prefix, pathRegex, method, qName, qValue string) {
		h := HeaderMatch{Name: name, Kind: matchKinds[int(kind)%len(matchKinds)], Value: value, Invert: invert}
		headers := map[string]string{}
		if present {
			headers[reqName] = reqValue
		}
		r := &Request{Method: method, Path: path, Headers: headers}

		// No panics, whatever the combination.
		for _, m := range []*HTTPMatch{
			{Path: prefix, PathPrefix: prefix, PathRegex: pathRegex, Methods: []string{method, value},
				Header:     []HeaderMatch{h, {Name: reqName, Kind: MatchRegex, Value: pathRegex}},
				QueryParam: []QueryMatch{{Name: qName, Kind: matchKinds[int(kind)%len(matchKinds)], Value: qValue}}},
			{PathRegex: pathRegex},
			{QueryParam: []QueryMatch{{Name: qName, Kind: MatchRegex, Value: qValue}, {Name: qName, Kind: MatchPresent}}},
			nil,
		} {
			m.Matches(r)
			_ = m.Describe()
		}

		// A header condition alone.
		got := (&HTTPMatch{Header: []HeaderMatch{h}}).Matches(r)
		v, ok := r.header(name)
		switch {
		case h.Kind == MatchPresent:
			// An inverted present holds exactly when the header is absent.
			if got != (ok != invert) {
				t.Fatalf("present(invert=%v) with header present=%v: got %v", invert, ok, got)
			}
		case !ok:
			// An absent header never matches exact/prefix/suffix/regex, inverted or not.
			if got {
				t.Fatalf("%s(invert=%v) matched an absent header %q", h.Kind, invert, name)
			}
		default:
			// A present header: inverting negates.
			plain := h
			plain.Invert = false
			inv := plain
			inv.Invert = true
			if plain.matches(v, true) == inv.matches(v, true) {
				t.Fatalf("%s %q on %q: inverted and plain agree", h.Kind, value, v)
			}
		}

		// Header names are case-insensitive (for ASCII names, where case is unambiguous).
		if present && isASCII(reqName) {
			for _, n := range []string{strings.ToUpper(reqName), strings.ToLower(reqName)} {
				r2 := &Request{Headers: map[string]string{n: reqValue}}
				hm := HeaderMatch{Name: reqName, Kind: MatchExact, Value: reqValue}
				if !(&HTTPMatch{Header: []HeaderMatch{hm}}).Matches(r2) {
					t.Fatalf("header %q does not match its value under name %q", reqName, n)
				}
			}
		}

		// Methods are compared exactly.
		if got := (&HTTPMatch{Methods: []string{method}}).Matches(r); !got {
			t.Fatalf("method %q does not match itself", method)
		}
		if up := strings.ToUpper(method); up != method {
			if (&HTTPMatch{Methods: []string{up}}).Matches(r) {
				t.Fatalf("method %q matches %q", method, up)
			}
		}

		// A path prefix is a plain string prefix of the normalized path (see NormalizePath), and
		// the query never takes part.
		if !strings.ContainsAny(prefix, "?#") && !strings.ContainsAny(path, "?#") && prefix != "" {
			norm := NormalizePath(prefix + path)
			if got := (&HTTPMatch{PathPrefix: prefix}).Matches(&Request{Path: prefix + path}); got != strings.HasPrefix(norm, prefix) {
				t.Fatalf("prefix %q on %q (normalized %q): match %v", prefix, prefix+path, norm, got)
			}
			if got := (&HTTPMatch{Path: prefix}).Matches(&Request{Path: prefix + "?" + path}); got != (NormalizePath(prefix) == prefix) {
				t.Fatalf("path %q on %q: match %v", prefix, prefix+"?"+path, got)
			}
			for _, m := range []*HTTPMatch{{PathPrefix: prefix}, {Path: prefix}, {PathRegex: pathRegex}} {
				if m.Matches(&Request{Path: path}) != m.Matches(&Request{Path: path + "?" + qName}) {
					t.Fatalf("%s: adding a query to %q changes the result", m.Describe(), path)
				}
			}
		}

		// Regexes match whole strings: compare with Go's leftmost-longest search, which finds a
		// match spanning the whole string whenever one exists.
		if re, err := regexp.Compile(pathRegex); err == nil {
			re.Longest()
			loc := re.FindStringIndex(reqValue)
			want := loc != nil && loc[0] == 0 && loc[1] == len(reqValue)
			hm := HeaderMatch{Name: "x", Kind: MatchRegex, Value: pathRegex}
			if got := hm.matches(reqValue, true); got != want {
				t.Fatalf("regex %q on %q: got %v, want %v", pathRegex, reqValue, got, want)
			}
		} else if (&HTTPMatch{PathRegex: pathRegex}).Matches(&Request{Path: reqValue}) {
			// One that is not valid on its own never matches.
			t.Fatalf("invalid regex %q matches %q", pathRegex, reqValue)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// FuzzParsePos: ParsePos never panics, and what it accepts formats back to the same Pos.
func FuzzParsePos(f *testing.F) {
	for _, s := range []string{"teams/api.cue:12:3", "-", "", "C:/x.cue:1:1", "a:b:c", "a:1", "a:-1:+2", "x::", "a:1:2:3"} {
		f.Add(s, "api.cue", 1, 1)
	}
	f.Fuzz(func(t *testing.T, s, file string, line, col int) {
		if p, err := ParsePos(s); err == nil {
			if q, err := ParsePos(p.String()); err != nil || q != p {
				t.Fatalf("ParsePos(%q) = %#v, which formats as %q and parses back as %#v, %v", s, p, p.String(), q, err)
			}
		}
		// Every Pos with a file survives String and JSON.
		if file == "" {
			return
		}
		p := Pos{File: file, Line: line, Col: col}
		if q, err := ParsePos(p.String()); err != nil || q != p {
			t.Fatalf("ParsePos(%q) = %#v, %v; want %#v", p.String(), q, err, p)
		}
		if !utf8.ValidString(file) {
			return // JSON cannot carry it
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var q Pos
		if err := json.Unmarshal(b, &q); err != nil || q != p {
			t.Fatalf("json round trip of %#v: %#v, %v", p, q, err)
		}
	})
}
