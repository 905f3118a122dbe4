// Package ui is the web UI that mesh serve serves at /ui/: an overview of what the cluster serves,
// the topology graph, a page per service, the intentions matrix, the proxies' sync status and the
// version history with pin, unpin and diff.
//
// Guarantees:
//   - Everything the browser loads (templates, scripts, styles, Cytoscape.js and its licence) is
//     embedded in the binary: the UI works with no network beyond the server itself, and its
//     Content-Security-Policy lets a page load nothing from anywhere else.
//   - The pages read the same JSON as the CLI (/v1/status, /v1/snapshots, /v1/proxies); the few
//     views the API does not have are JSON routes under /ui/api/, computed from the snapshots
//     the server keeps: every verdict comes from mesh.Authorize (the one evaluator), and a diff
//     between two versions is review.Review's report, the same code path as mesh review.
//   - Catalog health is the catalog's own: the overview's counts are catalog.Summarize's (the
//     code of GET /v1/catalog/summary) over the catalog the server holds, pushed on the event
//     stream at each change of the catalog or of the snapshot served; an instance's health word
//     is catalog.Instance.Status, the one EDS is rendered from. Health is always written as a
//     word with a symbol, never as a colour alone.
//   - The UI holds no credentials of its own: writes (pin, unpin) go to the API's write routes
//     with the token the user typed, kept in the browser's sessionStorage; without one the UI
//     refuses to send the write, and the server refuses it too.
//   - The cost of a view does not grow with services × services: the matrix answers a window of
//     it (the browser renders at most that window), the topology and service views are linear in
//     services and upstreams.
package ui

import (
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"

	mesh "github.com/meshgit/mesh"
)

// Source is what the UI reads from the server that serves it. Implementations must be safe for
// concurrent use; the snapshots they return are shared and must not be modified.
type Source interface {
	// SnapshotOf returns the snapshot of version from the history the server keeps, or the
	// snapshot served now when version is "". An unknown version is an error wrapping
	// ErrUnknownVersion; nothing served yet, nil and no error.
	SnapshotOf(version string) (*mesh.Snapshot, error)
	// ServedChanged returns a channel closed the next time the snapshot served changes.
	ServedChanged() <-chan struct{}
}

// Options configures the UI.
type Options struct {
	// Repo is the repository the server follows; when it is on a known forge, commits link there.
	Repo string
	// Catalog is the server's live catalog. Nil: the server has none, and the pages say so.
	Catalog Catalog
	// Stop, when closed, ends the event streams (GET /ui/api/events), so that the HTTP server
	// can shut down without waiting for the browsers to go away.
	Stop <-chan struct{}
	Log  *slog.Logger
}

// ErrUnknownVersion is wrapped by Source.SnapshotOf for a version the server does not keep.
var ErrUnknownVersion = errors.New("unknown version")

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

var pages = template.Must(template.ParseFS(templateFS, "templates/*.html"))

type ui struct {
	src  Source
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	cache map[string]*mesh.Snapshot // recently asked versions (decoding a big one is not free)
	order []string
	// views holds encoded views of recent snapshots (a snapshot never changes, so neither do
	// they), by kind, version and commit.
	views     map[string][]byte
	viewOrder []string
}

// view returns the JSON encoding of build(), computed once per kind and snapshot.
func (u *ui) view(kind string, s *mesh.Snapshot, build func() any) ([]byte, error) {
	key := kind + "/" + s.Version + "@" + s.Commit
	u.mu.Lock()
	b, ok := u.views[key]
	u.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := json.Marshal(build())
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.views[key]; !ok {
		u.views[key] = b
		u.viewOrder = append(u.viewOrder, key)
		if len(u.viewOrder) > cachedVersions {
			delete(u.views, u.viewOrder[0])
			u.viewOrder = u.viewOrder[1:]
		}
	}
	return b, nil
}

// Handler returns the UI: its pages and static files, and its JSON routes under /ui/api/.
// Mount it at "/ui/".
func Handler(src Source, opts Options) http.Handler {
	u := &ui{src: src, opts: opts, log: opts.Log, cache: map[string]*mesh.Snapshot{}, views: map[string][]byte{}}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/{$}", u.page("overview", "Overview"))
	mux.HandleFunc("GET /ui/topology", u.page("topology", "Topology"))
	mux.HandleFunc("GET /ui/services/{name}", u.page("service", "Service"))
	mux.HandleFunc("GET /ui/intentions", u.page("intentions", "Intentions"))
	mux.HandleFunc("GET /ui/proxies", u.page("proxies", "Proxies"))
	mux.HandleFunc("GET /ui/versions", u.page("versions", "Versions"))
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /ui/api/info", u.handleInfo)
	mux.HandleFunc("GET /ui/api/events", u.handleEvents)
	mux.HandleFunc("GET /ui/api/snapshots/{version}/topology", u.handleTopology)
	mux.HandleFunc("GET /ui/api/snapshots/{version}/matrix", u.handleMatrix)
	mux.HandleFunc("GET /ui/api/snapshots/{version}/services/{name}", u.handleService)
	mux.HandleFunc("GET /ui/api/diff", u.handleDiff)
	mux.HandleFunc("GET /ui/api/services/{name}/instances", u.handleInstances)
	return secure(mux)
}

// secure sets the headers every UI answer carries: nothing is loaded from elsewhere, no page is
// framed, types are not sniffed.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		// style-src allows inline styles: Cytoscape.js sets some on the elements it creates.
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// pageData is what the page templates get: which page, and the service of a service page.
type pageData struct {
	Page, Title, Name string
}

func (u *ui) page(name, title string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d := pageData{Page: name, Title: title, Name: r.PathValue("name")}
		if d.Name != "" {
			d.Title = d.Name
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := pages.ExecuteTemplate(w, name+".html", d); err != nil {
			u.log.Warn("render ui page", "page", name, "err", err)
		}
	}
}

// snapshot returns the snapshot a /ui/api/snapshots/{version}/ route names: "served" is the one
// served now.
func (u *ui) snapshot(version string) (*mesh.Snapshot, error) {
	if version == "served" {
		return u.src.SnapshotOf("")
	}
	u.mu.Lock()
	s := u.cache[version]
	u.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := u.src.SnapshotOf(version)
	if err != nil || s == nil {
		return s, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.cache[version]; !ok {
		u.cache[version] = s
		u.order = append(u.order, version)
		if len(u.order) > cachedVersions {
			delete(u.cache, u.order[0])
			u.order = u.order[1:]
		}
	}
	return s, nil
}

// cachedVersions bounds the decoded snapshots kept for the history views.
const cachedVersions = 4
