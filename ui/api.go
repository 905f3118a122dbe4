package ui

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/review"
)

// Info is the answer of GET /ui/api/info: what the pages need to know about the server beyond
// the API's own JSON.
type Info struct {
	// CommitURL, when the repository is on a known forge, is the URL of a commit's page with
	// the commit's SHA to be appended.
	CommitURL string `json:"commitURL,omitempty"`
	// Catalog says whether the server has a catalog (the overview gets its summary on the
	// event stream, the service page its instances from /ui/api/services/{name}/instances).
	Catalog bool `json:"catalog"`
}

func (u *ui) handleInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Info{CommitURL: CommitURL(u.opts.Repo), Catalog: u.opts.Catalog != nil})
}

var scpLike = regexp.MustCompile(`^[\w.-]+@([\w.-]+):(.+)$`)

// CommitURL returns the prefix of commit pages of repo when it is hosted on GitHub, GitLab,
// Codeberg or Bitbucket ("https://github.com/o/r/commit/"), and "" otherwise.
func CommitURL(repo string) string {
	host, path := "", ""
	if m := scpLike.FindStringSubmatch(repo); m != nil {
		host, path = m[1], m[2]
	} else if u, err := url.Parse(repo); err == nil && u.Host != "" {
		host, path = u.Hostname(), u.Path
	}
	path = strings.TrimSuffix(strings.Trim(path, "/"), ".git")
	if path == "" || strings.Count(path, "/") < 1 {
		return ""
	}
	base := "https://" + host + "/" + path
	switch host {
	case "github.com", "codeberg.org":
		return base + "/commit/"
	case "gitlab.com":
		return base + "/-/commit/"
	case "bitbucket.org":
		return base + "/commits/"
	}
	return ""
}

// handleEvents streams server-sent events: "served" with {"version","commit"} at once and each
// time the snapshot served changes; with a catalog, "catalog" with the catalog's summary
// (catalog.Summary) at once and each time the catalog or the snapshot served changes, at most
// one per catalogEventGap; and a comment every eventKeepalive so that proxies between keep the
// stream open.
func (u *ui) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	keep := time.NewTicker(eventKeepalive)
	defer keep.Stop()
	cat := u.opts.Catalog
	lastServed, lastCatalog := "", ""
	var catalogSent time.Time
	var later <-chan time.Time // a catalog summary held back by catalogEventGap
	for {
		servedCh := u.src.ServedChanged()
		var catCh <-chan struct{}
		if cat != nil {
			catCh = cat.CatalogChanged()
		}
		snap, _ := u.src.SnapshotOf("")
		ev := struct {
			Version string `json:"version"`
			Commit  string `json:"commit"`
		}{}
		if snap != nil {
			ev.Version, ev.Commit = snap.Version, snap.Commit
		}
		if cur := ev.Version + "@" + ev.Commit; cur != lastServed {
			lastServed = cur
			writeEvent(w, "served", ev)
		}
		if cat != nil {
			st := cat.Catalog()
			cur := strconv.FormatUint(st.Index(), 10) + "@" + ev.Version
			// A catalog under churn changes many times a second: one summary per gap at most.
			if wait := time.Until(catalogSent.Add(catalogEventGap)); cur != lastCatalog && wait > 0 {
				if later == nil {
					later = time.After(wait)
				}
			} else if cur != lastCatalog {
				lastCatalog, catalogSent, later = cur, time.Now(), nil
				writeEvent(w, "catalog", summary(snap, st))
			}
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-u.opts.Stop:
			return
		case <-servedCh:
		case <-catCh:
		case <-later:
			later = nil
		case <-keep.C:
			fmt.Fprint(w, ": keepalive\n\n")
			fl.Flush()
		}
	}
}

func writeEvent(w http.ResponseWriter, name string, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b)
}

// catalogEventGap bounds how often one stream sends the catalog's summary.
const catalogEventGap = 200 * time.Millisecond

const eventKeepalive = 15 * time.Second

// Verdict is how a source → destination pair is decided, as the UI shows it.
type Verdict struct {
	// Verdict is Authorize's verdict for a request with no method, path or headers (what mesh
	// intention check SRC DST answers).
	Verdict mesh.Action `json:"verdict"`
	// L7 is set when the deciding intention has permissions: L7 rules decide per request.
	L7     bool   `json:"l7,omitempty"`
	Reason string `json:"reason"`
	// Intention is the deciding intention ("web → api"), Precedence its precedence and
	// Position where it (or its deciding permission) is written; empty when the mesh default
	// decided.
	Intention  string `json:"intention,omitempty"`
	Precedence int    `json:"precedence,omitempty"`
	Position   string `json:"position,omitempty"`
}

func verdict(s *mesh.Snapshot, src, dst string) Verdict {
	d := mesh.Authorize(s, mesh.Request{Source: src, Destination: dst})
	v := Verdict{Verdict: d.Verdict, Reason: d.Reason}
	if in := d.Intention; in != nil {
		v.L7 = len(in.Permissions) > 0
		v.Intention, v.Precedence = in.Source+" → "+in.Destination, in.Precedence
		if d.Pos.IsValid() {
			v.Position = d.Pos.String()
		}
	}
	return v
}

// snapshotOr404 answers the route's {version} snapshot, or writes the error and returns nil.
func (u *ui) snapshotOr404(w http.ResponseWriter, version string) *mesh.Snapshot {
	s, err := u.snapshot(version)
	switch {
	case errors.Is(err, ErrUnknownVersion):
		writeError(w, http.StatusNotFound, "%v", err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%v", err)
	case s == nil:
		writeError(w, http.StatusNotFound, "nothing is served yet")
	}
	return s
}

// handleDiff answers GET /ui/api/diff?base=V&head=V with the report mesh review makes for the
// two versions (review.Review, the same code path) and its Markdown rendering.
func (u *ui) handleDiff(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("base") == "" || q.Get("head") == "" {
		writeError(w, http.StatusBadRequest, "want ?base=VERSION&head=VERSION")
		return
	}
	base := u.snapshotOr404(w, q.Get("base"))
	if base == nil {
		return
	}
	head := u.snapshotOr404(w, q.Get("head"))
	if head == nil {
		return
	}
	rep := review.Review(base, head)
	var js, md bytes.Buffer
	if err := rep.JSON(&js); err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if err := rep.Markdown(&md); err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"report": json.RawMessage(js.Bytes()), "markdown": md.String()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}
