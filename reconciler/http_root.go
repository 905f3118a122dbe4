package reconciler

import (
	"fmt"
	"html/template"
	"net/http"
	"strings"
)

// rootLinks are the read endpoints the root page points to, in order.
var rootLinks = []struct{ Path, What string }{
	{"/v1/status", "what this server serves, its cluster, the last commit that failed (mesh status)"},
	{"/v1/snapshots", "the snapshots kept, newest first (mesh versions)"},
	{"/v1/proxies", "the proxies connected over xDS and what they acknowledged (mesh proxies)"},
	{"/v1/servers", "the Raft configuration (mesh servers list, mesh members)"},
	{"/v1/ca/roots", "the mesh CA's trust bundle (mesh ca roots)"},
	{"/metrics", "Prometheus metrics"},
}

var rootPage = template.Must(template.New("root").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mesh server {{.Node}}</title></head>
<body>
<h1>mesh server {{.Node}}</h1>
<p>Serving version <code>{{.Version}}</code>{{if .Commit}} (commit <code>{{.Commit}}</code>){{end}}; Raft state {{.RaftState}}.</p>
<ul>
{{range .Links}}<li><a href="{{.Path}}">{{.Path}}</a>: {{.What}}</li>
{{end}}</ul>
<p>The web UI is at <a href="/ui/">/ui/</a>. The CLI reads the same JSON: <code>mesh status --http {{.Addr}}</code>.</p>
</body></html>
`))

// handleRoot answers GET / with a short page that links the API: HTML for browsers, plain text
// for everything else (curl).
func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request) {
	st := s.Status()
	version := st.Version
	if version == "" {
		version = "(nothing served yet)"
	}
	data := struct {
		Node, Version, Commit, RaftState, Addr string
		Links                                  any
	}{st.Node, version, st.Commit, st.RaftState, r.Host, rootLinks}
	w.Header().Set("Cache-Control", "no-store")
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		rootPage.Execute(w, data)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "mesh server %s: serving %s", st.Node, version)
	if st.Commit != "" {
		fmt.Fprintf(w, " (commit %s)", st.Commit)
	}
	fmt.Fprintf(w, ", raft %s\n\n", st.RaftState)
	for _, l := range rootLinks {
		fmt.Fprintf(w, "  %-14s %s\n", l.Path, l.What)
	}
	fmt.Fprintf(w, "\nThe web UI is at /ui/. The CLI reads the same JSON: mesh status --http %s\n", r.Host)
}
