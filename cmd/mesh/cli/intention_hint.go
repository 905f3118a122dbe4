package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"

	mesh "github.com/meshgit/mesh"
)

// knownMethods are the methods of RFC 9110 and PATCH; any other RFC 9110 token is accepted too.
var knownMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// checkRequest builds the request of intention check from its flags, refusing what no HTTP
// request can carry; note is for stderr.
func checkRequest(src, dst, method, path string, headers []string) (req mesh.Request, note string, err error) {
	if note, err = checkMethod(method); err != nil {
		return req, "", err
	}
	if err := checkPath(path); err != nil {
		return req, "", err
	}
	req = mesh.Request{Source: src, Destination: dst, Method: method, Path: path}
	if len(headers) > 0 {
		req.Headers = map[string]string{}
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return req, "", usageError{fmt.Errorf("--header %q: want name=value", h)}
		}
		if strings.ContainsFunc(k, func(c rune) bool { return !isTokenChar(c) }) {
			return req, "", usageError{fmt.Errorf("--header %q: %q is not a header name", h, k)}
		}
		req.Headers[strings.ToLower(k)] = v
	}
	return req, note, nil
}

// checkMethod refuses a --method that is not an HTTP token (RFC 9110 section 5.6.2, as RFC 7230
// had it). It returns a note for a known method in the wrong case: methods are case-sensitive,
// so "get" never matches a rule for GET.
func checkMethod(m string) (note string, err error) {
	if m == "" {
		return "", nil
	}
	for _, c := range m {
		if !isTokenChar(c) {
			return "", usageError{fmt.Errorf("--method %q: not an HTTP method (a token of letters, digits and !#$%%&'*+-.^_`|~; e.g. %s)",
				m, strings.Join(knownMethods, ", "))}
		}
	}
	if up := strings.ToUpper(m); up != m && slices.Contains(knownMethods, up) {
		return fmt.Sprintf("note: methods are case-sensitive: %q is not %s, and rules for %s do not match it", m, up, up), nil
	}
	return "", nil
}

func isTokenChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)
}

// checkPath refuses a --path that is not an absolute request path.
func checkPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") {
		if strings.ContainsAny(p, " \t\r\n") {
			return usageError{fmt.Errorf("--path %q: a request path has no spaces or control characters", p)}
		}
		return nil
	}
	return usageError{fmt.Errorf("--path %q: must start with / (e.g. /%s)", p, p)}
}

// l7Hint says, when the deciding intention has L7 permissions that look at request attributes
// the check did not give, which attributes those are and which permissions would then decide
// otherwise.
type l7Hint struct {
	Missing     []string         `json:"missing"` // "method", "path", "header NAME", "query NAME"
	Permissions []hintPermission `json:"permissions"`
}

type hintPermission struct {
	Permission int         `json:"permission"` // 1-based
	Action     mesh.Action `json:"action"`
	Match      string      `json:"match"`
	Position   string      `json:"position"`
}

// hintFor returns the hint for decision d of req, or nil when the attributes given settle it:
// only permissions before the deciding one (or all, when none matched) whose action differs
// from the verdict and that look at a missing attribute could change it.
func hintFor(snap *mesh.Snapshot, req mesh.Request, d mesh.Decision) *l7Hint {
	in := d.Intention
	if in == nil || len(in.Permissions) == 0 {
		return nil
	}
	h := &l7Hint{}
	for i, p := range in.Permissions {
		if d.Permission >= 0 && i >= d.Permission {
			break
		}
		if p.Action == d.Verdict || p.HTTP == nil {
			continue
		}
		missing := missingAttributes(p.HTTP, req)
		if len(missing) == 0 {
			continue
		}
		for _, m := range missing {
			if !slices.Contains(h.Missing, m) {
				h.Missing = append(h.Missing, m)
			}
		}
		h.Permissions = append(h.Permissions, hintPermission{Permission: i + 1, Action: p.Action, Match: p.HTTP.Describe(),
			Position: snap.Pos(mesh.PathPermission(in.Destination, in.Source, i)).String()})
	}
	if len(h.Permissions) == 0 {
		return nil
	}
	return h
}

// missingAttributes lists what m looks at that req does not carry.
func missingAttributes(m *mesh.HTTPMatch, req mesh.Request) []string {
	var out []string
	if len(m.Methods) > 0 && req.Method == "" {
		out = append(out, "method")
	}
	if (m.Path != "" || m.PathPrefix != "" || m.PathRegex != "") && req.Path == "" {
		out = append(out, "path")
	}
	for _, hm := range m.Header {
		if _, ok := req.Headers[strings.ToLower(hm.Name)]; !ok {
			out = append(out, "header "+hm.Name)
		}
	}
	for _, q := range m.QueryParam {
		if !strings.Contains(req.Path, "?") {
			out = append(out, "query "+q.Name)
		}
	}
	return out
}

func (h *l7Hint) print(w io.Writer, verdict mesh.Action) {
	it := "it"
	if len(h.Missing) > 1 {
		it = "them"
	}
	fmt.Fprintf(w, "not given: %s; the intention's L7 permissions look at %s, and with %s the verdict can differ:\n", strings.Join(h.Missing, ", "), it, it)
	for _, p := range h.Permissions {
		fmt.Fprintf(w, "  permission %d: %s %s at %s\n", p.Permission, p.Action, p.Match, p.Position)
	}
	fmt.Fprintf(w, "ask about one request with --method, --path and --header (this answer, %s, is for a request without them)\n", verdict)
}
