package mesh

import (
	"fmt"
	"strings"
)

// Request is what Authorize decides on. Method, Path and Headers matter only for L7 permissions;
// Path may carry a query string, which queryParam matches read.
type Request struct {
	Source      string
	Destination string
	Method      string
	Path        string
	Headers     map[string]string // names are matched case-insensitively
}

// header returns the value of the named header. Names are case-insensitive; should Headers hold
// one name in several cases, the lexically smallest spelling wins, so the answer is stable.
func (r *Request) header(name string) (string, bool) {
	if v, ok := r.Headers[name]; ok {
		return v, true
	}
	best, val, found := "", "", false
	for k, v := range r.Headers {
		if strings.EqualFold(k, name) && (!found || k < best) {
			best, val, found = k, v, true
		}
	}
	return val, found
}

// Decision is the verdict of Authorize and why.
type Decision struct {
	Verdict Action
	// Reason explains the verdict in one lower-case sentence.
	Reason string
	// Intention is the intention that decided, or nil when the mesh default did because no
	// intention applies.
	Intention *Intention
	// Permission is the index of the deciding permission of Intention, or -1 when its Action
	// decided or none of its permissions matched.
	Permission int
	// Pos is where the deciding intention (or permission) is written.
	Pos Pos
}

// Allowed reports whether the verdict is allow.
func (d Decision) Allowed() bool { return d.Verdict == Allow }

// Authorize decides whether r.Source may make request r to r.Destination, by the mesh's rules:
// the first existing intention of intentions[D][S] (precedence 9), intentions[D]["*"] (8),
// intentions["*"][S] (6) and intentions["*"]["*"] (5) decides. An action decides alone;
// permissions are tried in order and the first whose match holds decides; if none holds, the
// mesh default decides, without falling through to lower precedences. With no intention, the
// mesh default decides.
//
// This is the only implementation of these rules: checks, reviews, policies and the RBAC rendered
// for proxies all derive from it.
func Authorize(s *Snapshot, r Request) Decision {
	def := s.Mesh.DefaultIntention
	if def == "" {
		def = Deny
	}
	cands := s.Candidates(r.Source, r.Destination)
	if len(cands) == 0 {
		return Decision{
			Verdict:    def,
			Reason:     fmt.Sprintf("no intention from %s to %s; the mesh default is %s", r.Source, r.Destination, def),
			Permission: -1,
		}
	}
	in := cands[0]
	pos := s.Pos(PathIntention(in.Destination, in.Source))
	if in.Action != "" {
		return Decision{
			Verdict:    in.Action,
			Reason:     fmt.Sprintf("intention %s → %s (precedence %d) says %s", in.Source, in.Destination, in.Precedence, in.Action),
			Intention:  in,
			Permission: -1,
			Pos:        pos,
		}
	}
	for i := range in.Permissions {
		p := &in.Permissions[i]
		if p.HTTP.Matches(&r) {
			ppos := s.Pos(PathPermission(in.Destination, in.Source, i))
			if !ppos.IsValid() {
				ppos = pos
			}
			return Decision{
				Verdict: p.Action,
				Reason: fmt.Sprintf("permission %d of intention %s → %s (precedence %d) matches (%s) and says %s",
					i+1, in.Source, in.Destination, in.Precedence, p.HTTP.Describe(), p.Action),
				Intention:  in,
				Permission: i,
				Pos:        ppos,
			}
		}
	}
	return Decision{
		Verdict: def,
		Reason: fmt.Sprintf("no permission of intention %s → %s (precedence %d) matches; the mesh default is %s",
			in.Source, in.Destination, in.Precedence, def),
		Intention:  in,
		Permission: -1,
		Pos:        pos,
	}
}

// Describe renders m compactly in plain words: "GET|HEAD /admin/*", "/v1/users",
// "~/v[0-9]+/.*", with header and query conditions after it ("with header x-canary = \"1\"").
// A nil or empty match is "any request". Reasons, `mesh intention match` and reviews use it.
func (m *HTTPMatch) Describe() string {
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
		conds = append(conds, describeCondition("header", h.Name, h.Kind, h.Value, h.Invert))
	}
	for _, q := range m.QueryParam {
		conds = append(conds, describeCondition("query", q.Name, q.Kind, q.Value, false))
	}
	if len(conds) > 0 {
		parts = append(parts, "with "+strings.Join(conds, " and "))
	}
	if len(parts) == 0 {
		return "any request"
	}
	return strings.Join(parts, " ")
}

func describeCondition(what, name, kind, value string, invert bool) string {
	not := ""
	if invert {
		not = "not "
	}
	switch kind {
	case MatchPresent:
		return fmt.Sprintf("%s %s %spresent", what, name, not)
	case MatchExact:
		if invert {
			return fmt.Sprintf("%s %s != %q", what, name, value)
		}
		return fmt.Sprintf("%s %s = %q", what, name, value)
	}
	return fmt.Sprintf("%s %s %s%s %q", what, name, not, kind, value)
}
