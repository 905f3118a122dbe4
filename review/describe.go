package review

import (
	"fmt"
	"strings"

	mesh "github.com/meshgit/mesh"
)

// describeRule says in plain words what the rule deciding a pair allows: "allow", "deny", or for
// L7 permissions e.g. "only GET /admin/*" or "allow /v1/*; deny /internal/*; otherwise deny".
func describeRule(in *mesh.Intention, def mesh.Action) string {
	if in == nil {
		return string(def)
	}
	if in.Action != "" {
		return string(in.Action)
	}
	same := true
	for _, p := range in.Permissions {
		if p.Action != in.Permissions[0].Action {
			same = false
		}
	}
	if same && len(in.Permissions) > 0 && in.Permissions[0].Action == def {
		return string(def) // whichever permission matches, the verdict is the default's
	}
	if same && len(in.Permissions) > 0 {
		var parts []string
		for _, p := range in.Permissions {
			parts = append(parts, describeMatch(p.HTTP))
		}
		if in.Permissions[0].Action == mesh.Allow {
			return "only " + strings.Join(parts, " or ")
		}
		return "all but " + strings.Join(parts, " or ")
	}
	var parts []string
	for _, p := range in.Permissions {
		parts = append(parts, fmt.Sprintf("%s %s", p.Action, describeMatch(p.HTTP)))
	}
	parts = append(parts, "otherwise "+string(def))
	return strings.Join(parts, "; ")
}

// describeMatch is mesh.HTTPMatch.Describe: one wording everywhere.
func describeMatch(m *mesh.HTTPMatch) string { return m.Describe() }
