package mesh

import (
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/", "/"},
		{"/v1/items", "/v1/items"},
		{"/v1/../admin/x", "/admin/x"},
		{"/v1/./items/", "/v1/items/"},
		{"//v1///items", "/v1/items"},
		{"/a/b/..", "/a/"},
		{"/a/b/.", "/a/b/"},
		{"/../../x", "/x"},
		{"/%61dmin", "/admin"},
		{"/a%2fb", "/a%2fb"},        // an encoded slash stays encoded, exactly as written
		{"/%2e%2e/admin", "/admin"}, // encoded dots are dots
		{"/a%zz", "/a%zz"},
		{"/a%", "/a%"},
		{"/.hidden/x", "/.hidden/x"},
		// Envoy canonicalizes first and merges slashes after: ".." removes the empty segment.
		{"/public//../admin", "/public/admin"},
		{"/a//b/../../c", "/a/c"},
		{"/a\\..\\b", "/b"},
		{"/a b", "/a%20b"},
	} {
		if got := NormalizePath(c.in); got != c.want {
			t.Errorf("NormalizePath(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestEnvoyPathVectors holds CanonicalPath and MergeSlashes to the test vectors of Envoy's own
// path normalization (test/common/http/path_utility_test.cc: NormalizeValidPaths,
// NormalizeCasePath, InvalidPaths, MergeSlashes), and NormalizePath to Envoy's order.
func TestEnvoyPathVectors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/xyz", "/xyz"},
		{"/x/y/z", "/x/y/z"},
		{"/a/b/../c", "/a/c"},
		{"/a/b/./c", "/a/b/c"},
		{"a/b/../c", "/a/c"},
		{"/a/b/../../../../c", "/c"},
		{"/a/..\\c", "/c"},
		{"/%c0%af", "/%c0%af"},
		{"/%5c%25", "/%5c%25"},
		{"/a/b/%2E%2E/c", "/a/c"},
		{"/a/b/%2E./c", "/a/c"},
		{"/a/b/%2E/c", "/a/b/c"},
		{"..", "/"},
		{"/../a/b", "/a/b"},
		{"/./a/b", "/a/b"},
		{"/A/B/C", "/A/B/C"},
		{"/a/b/%2e%2e/c", "/a/c"},
		{"/a/%2F%2f/c", "/a/%2F%2f/c"},
	} {
		got, ok := CanonicalPath(c.in)
		if !ok || got != c.want {
			t.Errorf("CanonicalPath(%q) = %q, %v; want %q, true", c.in, got, ok, c.want)
		}
	}
	for _, in := range []string{"/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc"} {
		if got, ok := CanonicalPath(in); ok {
			t.Errorf("CanonicalPath(%q) = %q, true; Envoy rejects it", in, got)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"a//b/c", "a/b/c"},
		{"/a//b/c/", "/a/b/c/"},
		{"a//b/c/", "a/b/c/"},
		{"/a", "/a"},
		{"//a/b/c", "/a/b/c"},
		{"/a//b/c", "/a/b/c"},
		{"/a/b/c//", "/a/b/c/"},
		{"/a///b/c", "/a/b/c"},
		{"/a////b/c", "/a/b/c"},
		{"/a//b?a=///c", "/a/b?a=///c"},
		{"/a//b?", "/a/b?"},
		{"//a/?b", "/a/?b"},
	} {
		if got := MergeSlashes(c.in); got != c.want {
			t.Errorf("MergeSlashes(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// Chromium's nested-escape rule: decoding must not create a new valid encoding.
	for _, c := range []struct{ in, want string }{
		{"/%%30%30", "/%2500"},
		{"/%%30", "/%0"},
		{"/%%3041", "/%25041"},
	} {
		if got, _ := CanonicalPath(c.in); got != c.want {
			t.Errorf("CanonicalPath(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestTraversalDoesNotPassPrefix: a request that a normalizing proxy delivers to /admin/x must
// not be authorized by a rule for /v1/.
func TestTraversalDoesNotPassPrefix(t *testing.T) {
	m := &HTTPMatch{PathPrefix: "/v1/"}
	for _, p := range []string{"/v1/../admin/x", "/v1/%2e%2e/admin/x", "//v1/..//admin"} {
		if m.Matches(&Request{Path: p}) {
			t.Errorf("pathPrefix /v1/ matched %q", p)
		}
	}
	if !m.Matches(&Request{Path: "//v1//items?x=1"}) {
		t.Errorf("pathPrefix /v1/ did not match //v1//items")
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "//x//y/", "/%2e/%41", "/a/./b/../../c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		n := NormalizePath(p)
		// One pass, like Envoy: "%7%41" becomes "%7A" and stays so. Without percent-encodings
		// a second pass changes nothing.
		if again := NormalizePath(n); again != n && !strings.Contains(p, "%") {
			t.Fatalf("not idempotent: %q → %q → %q", p, n, again)
		}
		if len(p) > 0 && p[0] == '/' && (len(n) == 0 || n[0] != '/') {
			t.Fatalf("absolute path %q normalized to %q", p, n)
		}
	})
}
