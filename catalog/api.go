package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/internal/httpjson"
)

// API serves the Consul-compatible endpoints:
//
//	PUT /v1/agent/service/register           Registration → registered on the agent's node
//	PUT /v1/agent/service/deregister/{id}
//	PUT /v1/agent/check/{pass,warn,fail}/{id} ?note=
//	PUT /v1/agent/check/update/{id}          {"Status", "Output"}
//	GET /v1/agent/services, /v1/agent/checks, /v1/agent/self
//	GET /v1/catalog/services, /v1/catalog/service/{name}, /v1/catalog/nodes, /v1/health/service/{name}[?passing]
//	PUT /v1/catalog/command                  mesh's own: a Command from an agent
//	GET /v1/catalog/summary                  mesh's own: instances by health, undeclared services
//	GET /v1/catalog/default-check/{service}  mesh's own: the healthCheck Git gives the service
//
// Reads take ?index=N&wait=D (blocking queries) and answer X-Consul-Index. Writes take the
// token as X-Consul-Token or Authorization: Bearer.
type API struct {
	Agent  *Agent  // the agent endpoints; nil: not served
	Server *Server // the catalog, health and command endpoints; nil: not served
	// Watch wakes blocking queries; required with Server.
	Watch *Watch
	Log   *slog.Logger
}

// Register adds the endpoints to mux.
func (a *API) Register(mux *http.ServeMux) {
	if a.Log == nil {
		a.Log = slog.New(slog.DiscardHandler)
	}
	if a.Agent != nil {
		mux.HandleFunc("PUT /v1/agent/service/register", a.handleRegister)
		mux.HandleFunc("PUT /v1/agent/service/deregister/{id}", a.handleDeregister)
		mux.HandleFunc("PUT /v1/agent/check/pass/{id}", a.handleTTL(StatusPassing))
		mux.HandleFunc("PUT /v1/agent/check/warn/{id}", a.handleTTL(StatusWarning))
		mux.HandleFunc("PUT /v1/agent/check/fail/{id}", a.handleTTL(StatusCritical))
		mux.HandleFunc("PUT /v1/agent/check/update/{id}", a.handleUpdate)
		mux.HandleFunc("GET /v1/agent/services", a.handleAgentServices)
		mux.HandleFunc("GET /v1/agent/checks", a.handleAgentChecks)
		mux.HandleFunc("GET /v1/agent/self", func(w http.ResponseWriter, r *http.Request) {
			dc := ""
			if a.Server != nil {
				dc = a.Server.cfg.Datacenter()
			}
			httpjson.Write(w, http.StatusOK, map[string]any{"Config": map[string]string{"NodeName": a.Agent.NodeName(), "Datacenter": dc}})
		})
	}
	if a.Server != nil {
		mux.HandleFunc("GET /v1/catalog/services", a.handleServices)
		mux.HandleFunc("GET /v1/catalog/service/{name}", a.handleCatalogService)
		mux.HandleFunc("GET /v1/catalog/nodes", a.handleNodes)
		mux.HandleFunc("GET /v1/health/service/{name}", a.handleHealthService)
		mux.HandleFunc("PUT /v1/catalog/command", a.handleCommand)
		mux.HandleFunc("GET /v1/catalog/summary", a.handleSummary)
		mux.HandleFunc("GET /v1/catalog/default-check/{service}", func(w http.ResponseWriter, r *http.Request) {
			httpjson.Write(w, http.StatusOK, map[string]any{"HealthCheck": a.Server.cfg.DefaultCheck(r.PathValue("service"))})
		})
	}
}

// Token returns the request's token: X-Consul-Token, else Authorization: Bearer.
func Token(r *http.Request) string {
	if t := strings.TrimSpace(r.Header.Get("X-Consul-Token")); t != "" {
		return t
	}
	return ca.BearerToken(r)
}

func (a *API) handleRegister(w http.ResponseWriter, r *http.Request) {
	in, err := DecodeRegistration(http.MaxBytesReader(w, r.Body, MaxRegistrationBody+1))
	if err != nil {
		a.answer(w, r, err)
		return
	}
	a.answer(w, r, a.Agent.Register(r.Context(), Token(r), in))
}

func (a *API) handleDeregister(w http.ResponseWriter, r *http.Request) {
	a.answer(w, r, a.Agent.Deregister(r.Context(), Token(r), r.PathValue("id")))
}

// handleTTL sets a TTL check to status, with ?note= as its output.
func (a *API) handleTTL(status string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.answer(w, r, a.Agent.UpdateTTL(r.Context(), Token(r), r.PathValue("id"), status, r.URL.Query().Get("note")))
	}
}

func (a *API) handleUpdate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Status string
		Output string
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil {
		err = decodeStrict(b, &body)
	}
	if err != nil {
		a.answer(w, r, err)
		return
	}
	a.answer(w, r, a.Agent.UpdateTTL(r.Context(), Token(r), r.PathValue("id"), body.Status, body.Output))
}

func (a *API) handleCommand(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxRegistrationBody+1))
	if err == nil && len(b) > MaxRegistrationBody {
		err = fmt.Errorf("%w: body: too large", ErrBadRequest)
	}
	var c Command
	if err == nil {
		err = decodeStrict(b, &c)
	}
	if err == nil {
		err = a.Server.Submit(r.Context(), Token(r), c)
	}
	a.answer(w, r, err)
}

// answer writes err the way Consul does (plain text), or true.
func (a *API) answer(w http.ResponseWriter, r *http.Request, err error) {
	if err == nil {
		httpjson.Write(w, http.StatusOK, true)
		return
	}
	code := StatusOf(err)
	if code >= 500 {
		a.Log.Warn("catalog request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, err.Error())
}

// StatusOf is the HTTP status of an error of this package.
func StatusOf(err error) int {
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrBadCommand):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// maxWait bounds a blocking query, as Consul does.
const maxWait = 10 * time.Minute

// block waits, for a blocking query, until indexOf the catalog exceeds ?index or ?wait passes,
// and returns the catalog to answer from with X-Consul-Index set. It reports false when it has
// answered already (a bad parameter).
func (a *API) block(w http.ResponseWriter, r *http.Request, indexOf func(*State) uint64) (*State, bool) {
	q := r.URL.Query()
	var min uint64
	if s := q.Get("index"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			a.answer(w, r, fmt.Errorf("%w: index: %q is not a number", ErrBadRequest, s))
			return nil, false
		}
		min = n
	}
	wait := 5 * time.Minute
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			a.answer(w, r, fmt.Errorf("%w: wait: %q is not a duration", ErrBadRequest, s))
			return nil, false
		}
		wait = min2(d, maxWait)
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	for {
		ch := a.Watch.Changed()
		st := a.Server.State()
		idx := indexOf(st)
		if min == 0 || idx > min {
			return a.answered(w, st, idx), true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return a.answered(w, st, idx), true
		}
	}
}

func min2(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

func (a *API) answered(w http.ResponseWriter, st *State, idx uint64) *State {
	w.Header().Set("X-Consul-Index", strconv.FormatUint(max(idx, 1), 10))
	w.Header().Set("X-Consul-KnownLeader", "true")
	w.Header().Set("X-Consul-LastContact", "0")
	return st
}

func (a *API) handleServices(w http.ResponseWriter, r *http.Request) {
	st, ok := a.block(w, r, (*State).Index)
	if !ok {
		return
	}
	out := map[string][]string{}
	for _, name := range st.ServiceNames() {
		tags := []string{}
		for _, in := range st.Instances(name) {
			for _, t := range in.Tags {
				if !slices.Contains(tags, t) {
					tags = append(tags, t)
				}
			}
		}
		slices.Sort(tags)
		out[name] = tags
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (a *API) handleCatalogService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	st, ok := a.block(w, r, func(st *State) uint64 { return st.ServiceIndex(name) })
	if !ok {
		return
	}
	tag := r.URL.Query().Get("tag")
	out := []CatalogService{}
	for _, in := range st.Instances(name) {
		if tag != "" && !slices.Contains(in.Tags, tag) {
			continue
		}
		out = append(out, a.catalogService(st, in))
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (a *API) handleHealthService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	st, ok := a.block(w, r, func(st *State) uint64 { return st.ServiceIndex(name) })
	if !ok {
		return
	}
	q := r.URL.Query()
	_, passingOnly := q["passing"]
	if v := q.Get("passing"); v == "false" || v == "0" {
		passingOnly = false
	}
	tag := q.Get("tag")
	out := []ServiceEntry{}
	for _, in := range st.Instances(name) {
		if tag != "" && !slices.Contains(in.Tags, tag) {
			continue
		}
		node := st.Node(in.Node)
		if passingOnly && in.Status(node) != StatusPassing {
			continue
		}
		out = append(out, a.serviceEntry(st, in))
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (a *API) handleNodes(w http.ResponseWriter, r *http.Request) {
	st, ok := a.block(w, r, (*State).Index)
	if !ok {
		return
	}
	out := []NodeJSON{}
	for _, n := range st.Nodes() {
		out = append(out, a.nodeJSON(n))
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (a *API) handleAgentServices(w http.ResponseWriter, r *http.Request) {
	out := map[string]AgentService{}
	for _, in := range a.Agent.Services() {
		out[in.ID] = a.agentService(in)
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (a *API) handleAgentChecks(w http.ResponseWriter, r *http.Request) {
	out := map[string]HealthCheck{}
	for _, in := range a.Agent.Services() {
		for _, c := range in.Checks {
			out[c.ID] = healthCheck(in, c)
		}
	}
	httpjson.Write(w, http.StatusOK, out)
}

// Summary is the answer of GET /v1/catalog/summary.
type Summary struct {
	Index    uint64           `json:"index"`
	Nodes    int              `json:"nodes"`
	Critical int              `json:"criticalNodes"`
	Services []ServiceSummary `json:"services"`
}

// ServiceSummary counts a service's instances by health.
type ServiceSummary struct {
	Name       string `json:"name"`
	Undeclared bool   `json:"undeclared,omitempty"`
	Passing    int    `json:"passing"`
	Warning    int    `json:"warning"`
	Critical   int    `json:"critical"`
}

// Summarize counts st's instances by health and flags undeclared services.
func Summarize(st *State, declared func(string) bool) Summary {
	s := Summary{Index: st.Index(), Services: []ServiceSummary{}}
	for _, n := range st.Nodes() {
		s.Nodes++
		if n.Health == StatusCritical {
			s.Critical++
		}
	}
	for _, name := range st.ServiceNames() {
		ss := ServiceSummary{Name: name, Undeclared: !declared(name)}
		for _, in := range st.Instances(name) {
			switch in.Status(st.Node(in.Node)) {
			case StatusPassing:
				ss.Passing++
			case StatusWarning:
				ss.Warning++
			default:
				ss.Critical++
			}
		}
		s.Services = append(s.Services, ss)
	}
	return s
}

func (a *API) handleSummary(w http.ResponseWriter, r *http.Request) {
	st, ok := a.block(w, r, (*State).Index)
	if !ok {
		return
	}
	httpjson.Write(w, http.StatusOK, Summarize(st, a.Server.cfg.Declared))
}
