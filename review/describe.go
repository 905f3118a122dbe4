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

// describeMatch renders a match compactly: "GET|HEAD /admin/*", "/v1/users", "~/v[0-9]+/.*",
// with header and query conditions after it.
func describeMatch(m *mesh.HTTPMatch) string {
	if m == nil {
		return "any request"
	}
	var parts []string
	if len(m.Methods) > 0 {
		parts = append(parts, strings.Join(m.Methods, "|"))
	}
	switch {
	case m.Path != "":
		parts = append(parts, m.Path)
	case m.PathPrefix != "":
		parts = append(parts, m.PathPrefix+"*")
	case m.PathRegex != "":
		parts = append(parts, "~"+m.PathRegex)
	}
	var conds []string
	for _, h := range m.Header {
		conds = append(conds, condition("header", h.Name, h.Kind, h.Value, h.Invert))
	}
	for _, q := range m.QueryParam {
		conds = append(conds, condition("query", q.Name, q.Kind, q.Value, false))
	}
	if len(conds) > 0 {
		parts = append(parts, "with "+strings.Join(conds, " and "))
	}
	if len(parts) == 0 {
		return "any request"
	}
	return strings.Join(parts, " ")
}

func condition(what, name, kind, value string, invert bool) string {
	not := ""
	if invert {
		not = "not "
	}
	switch kind {
	case mesh.MatchPresent:
		return fmt.Sprintf("%s %s %spresent", what, name, not)
	case mesh.MatchExact:
		if invert {
			return fmt.Sprintf("%s %s != %q", what, name, value)
		}
		return fmt.Sprintf("%s %s = %q", what, name, value)
	}
	return fmt.Sprintf("%s %s %s%s %q", what, name, not, kind, value)
}
