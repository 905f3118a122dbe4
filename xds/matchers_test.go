package xds

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	mesh "github.com/meshgit/mesh"
)

// TestQueryPathRegexMatchesEvaluator: RBAC has no query parameter matcher, so queryParam
// conditions become a regex over :path. gRPC requests have no query string, so the end-to-end
// differential test cannot reach this; compare the regex with mesh.HTTPMatch.Matches directly,
// as Envoy would apply it (whole-string match).
func TestQueryPathRegexMatchesEvaluator(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	keys := []string{"a", "ab", "b", "", "a.b"}
	vals := []string{"", "1", "12", "x", "1.2"}
	pick := func(l []string) string { return l[r.IntN(len(l))] }
	cache := map[mesh.QueryMatch]*regexp.Regexp{}
	for i := 0; i < 5000; i++ {
		var params []string
		for j, n := 0, r.IntN(4); j < n; j++ {
			switch r.IntN(4) {
			case 0:
				params = append(params, pick(keys))
			default:
				params = append(params, pick(keys)+"="+pick(vals))
			}
		}
		path := "/p"
		if len(params) > 0 || r.IntN(3) == 0 {
			path += "?" + strings.Join(params, "&")
		}
		q := mesh.QueryMatch{Name: pick(keys[:3]) + pick([]string{"", "", "b"})}
		switch r.IntN(3) {
		case 0:
			q.Kind = mesh.MatchPresent
		case 1:
			q.Kind, q.Value = mesh.MatchExact, pick(vals)
		default:
			q.Kind, q.Value = mesh.MatchRegex, pick([]string{"1.*", "[0-9]+", "x|1", ""})
		}
		want := (&mesh.HTTPMatch{QueryParam: []mesh.QueryMatch{q}}).Matches(&mesh.Request{Path: path})
		re := cache[q]
		if re == nil {
			var err error
			if re, err = mesh.FullRegexp(queryPathRegex(q)); err != nil {
				t.Fatalf("%+v: %v", q, err)
			}
			cache[q] = re
		}
		if got := re.MatchString(path); got != want {
			t.Fatalf("query %+v on %q: regex says %v, evaluator %v (regex %s)", q, path, got, want, queryPathRegex(q))
		}
	}
}
