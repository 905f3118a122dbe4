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
		{"/a%2fb", "/a%2Fb"},        // an encoded slash stays encoded, upper-cased
		{"/%2e%2e/admin", "/admin"}, // encoded dots are unreserved: decoded, then removed
		{"/a%zz", "/a%zz"},
		{"/a%", "/a%"},
		{"/.hidden/x", "/.hidden/x"},
	} {
		if got := NormalizePath(c.in); got != c.want {
			t.Errorf("NormalizePath(%q) = %q, want %q", c.in, got, c.want)
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
