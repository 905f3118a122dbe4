package ui

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	mesh "github.com/meshgit/mesh"
)

// Topology is the answer of GET /ui/api/snapshots/{version}/topology: every service (those
// without edges too) and every declared upstream as an edge with its verdict.
type Topology struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Nodes   []Node `json:"nodes"`
	Edges   []Edge `json:"edges"`
}

// Node is a service of the topology.
type Node struct {
	ID          string   `json:"id"`
	Protocol    string   `json:"protocol"`
	Owners      []string `json:"owners"`
	Datacenters []string `json:"datacenters"`
	Instances   int      `json:"instances"`
}

// Edge is a declared upstream: Source calls Target; Verdict is Authorize's for the pair.
type Edge struct {
	Source string `json:"source"`
	Target string `json:"target"`
	// Reach is what the edge is drawn as: "allow" or "deny" when the deciding intention (or the
	// default) decides alone, "l7" when its permissions allow some requests and not others, and
	// "deny" when they allow none (mesh.AllowsSome, which asks Authorize).
	Reach string `json:"reach"`
	Verdict
}

func reach(s *mesh.Snapshot, src, dst string, v Verdict) string {
	if !v.L7 {
		return string(v.Verdict)
	}
	if d := mesh.AllowsSome(s, src, dst, 0); !d.Differs && d.Undecided == "" {
		return string(mesh.Deny)
	}
	return "l7"
}

func (u *ui) handleTopology(w http.ResponseWriter, r *http.Request) {
	s := u.snapshotOr404(w, r.PathValue("version"))
	if s == nil {
		return
	}
	b, err := u.view("topology", s, func() any { return topology(s) })
	if err != nil {
		jsonReply.Error(w, http.StatusInternalServerError, "%v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func topology(s *mesh.Snapshot) *Topology {
	t := &Topology{Version: s.Version, Commit: s.Commit, Nodes: []Node{}, Edges: []Edge{}}
	for _, name := range s.ServiceNames() {
		svc := s.Services[name]
		t.Nodes = append(t.Nodes, Node{ID: name, Protocol: svc.Protocol, Owners: nonNil(svc.Owners),
			Datacenters: datacenters(s, svc), Instances: len(svc.Endpoints)})
		for _, up := range sortedUpstreams(svc) {
			if s.Services[up.Service] == nil {
				continue
			}
			v := verdict(s, name, up.Service)
			t.Edges = append(t.Edges, Edge{Source: name, Target: up.Service, Reach: reach(s, name, up.Service, v), Verdict: v})
		}
	}
	return t
}

func datacenters(s *mesh.Snapshot, svc *mesh.Service) []string {
	var out []string
	for _, e := range svc.Endpoints {
		if !slices.Contains(out, e.Datacenter) {
			out = append(out, e.Datacenter)
		}
	}
	if len(out) == 0 {
		out = []string{s.Mesh.Datacenter}
	}
	slices.Sort(out)
	return out
}

func sortedUpstreams(svc *mesh.Service) []*mesh.Upstream {
	names := make([]string, 0, len(svc.Upstreams))
	for n := range svc.Upstreams {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]*mesh.Upstream, 0, len(names))
	for _, n := range names {
		out = append(out, svc.Upstreams[n])
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Matrix is the answer of GET /ui/api/snapshots/{version}/matrix: a window of the source ×
// destination matrix. Sources and Destinations count the services that pass the filters; Rows
// and Cols name the window's, Cells[i][j] is Rows[i] → Cols[j].
type Matrix struct {
	Version      string      `json:"version"`
	Default      mesh.Action `json:"default"`
	Sources      int         `json:"sources"`
	Destinations int         `json:"destinations"`
	Row          int         `json:"row"`
	Col          int         `json:"col"`
	Rows         []Node      `json:"rows"`
	Cols         []Node      `json:"cols"`
	Cells        [][]Verdict `json:"cells"`
}

// maxWindow bounds a matrix window's side: the browser never gets more than maxWindow² cells.
const maxWindow = 100

func (u *ui) handleMatrix(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	row, col := atoi(q.Get("row"), 0), atoi(q.Get("col"), 0)
	rows, cols := min(atoi(q.Get("rows"), 30), maxWindow), min(atoi(q.Get("cols"), 30), maxWindow)
	s := u.snapshotOr404(w, r.PathValue("version"))
	if s == nil {
		return
	}
	jsonReply.Write(w, http.StatusOK, matrix(s, q.Get("src"), q.Get("dst"), row, col, rows, cols))
}

func atoi(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return def
	}
	return n
}

// matrix computes the window at (row, col) of rows × cols of the matrix of the services whose
// names contain src (sources) and dst (destinations). Only the window's pairs are evaluated.
func matrix(s *mesh.Snapshot, src, dst string, row, col, rows, cols int) *Matrix {
	srcs, dsts := filterNames(s, src), filterNames(s, dst)
	def := s.Mesh.DefaultIntention
	if def == "" {
		def = mesh.Deny
	}
	m := &Matrix{Version: s.Version, Default: def, Sources: len(srcs), Destinations: len(dsts),
		Row: min(row, max(len(srcs)-1, 0)), Col: min(col, max(len(dsts)-1, 0))}
	srcs = srcs[m.Row:min(m.Row+rows, len(srcs))]
	dsts = dsts[m.Col:min(m.Col+cols, len(dsts))]
	m.Rows, m.Cols, m.Cells = nodes(s, srcs), nodes(s, dsts), make([][]Verdict, len(srcs))
	for i, a := range srcs {
		m.Cells[i] = make([]Verdict, len(dsts))
		for j, b := range dsts {
			m.Cells[i][j] = verdict(s, a, b)
		}
	}
	return m
}

func filterNames(s *mesh.Snapshot, sub string) []string {
	all := s.ServiceNames()
	if sub == "" {
		return all
	}
	out := all[:0:0]
	for _, n := range all {
		if strings.Contains(n, sub) {
			out = append(out, n)
		}
	}
	return out
}

func nodes(s *mesh.Snapshot, names []string) []Node {
	out := make([]Node, len(names))
	for i, n := range names {
		svc := s.Services[n]
		out[i] = Node{ID: n, Protocol: svc.Protocol, Owners: nonNil(svc.Owners), Datacenters: datacenters(s, svc), Instances: len(svc.Endpoints)}
	}
	return out
}

// ServiceView is the answer of GET /ui/api/snapshots/{version}/services/{name}.
type ServiceView struct {
	Version  string        `json:"version"`
	Service  *mesh.Service `json:"service"`
	Position string        `json:"position,omitempty"`
	// Upstreams are the services this one declares it calls; Downstreams the services that
	// declare they call it; Inbound every intention that can decide a call to it.
	Upstreams   []Link        `json:"upstreams"`
	Downstreams []Link        `json:"downstreams"`
	Inbound     []IntentionAt `json:"inbound"`
	Chain       *mesh.Chain   `json:"chain"`
	// Routing names where the service's router, splitter and resolver are written.
	Routing map[string]string `json:"routing"`
}

// Link is an upstream or downstream of a service with the verdict for the call.
type Link struct {
	Service    string `json:"service"`
	LocalPort  int    `json:"localPort,omitempty"`
	Datacenter string `json:"datacenter,omitempty"`
	Verdict
}

// IntentionAt is an intention and where it is written.
type IntentionAt struct {
	*mesh.Intention
	Position string `json:"position,omitempty"`
}

func (u *ui) handleService(w http.ResponseWriter, r *http.Request) {
	s := u.snapshotOr404(w, r.PathValue("version"))
	if s == nil {
		return
	}
	name := r.PathValue("name")
	if s.Services[name] == nil {
		jsonReply.Error(w, http.StatusNotFound, "no service %q in version %s", name, s.Version)
		return
	}
	jsonReply.Write(w, http.StatusOK, serviceView(s, name))
}

func serviceView(s *mesh.Snapshot, name string) *ServiceView {
	svc := s.Services[name]
	v := &ServiceView{Version: s.Version, Service: svc, Upstreams: []Link{}, Downstreams: []Link{}, Inbound: []IntentionAt{},
		Chain: s.Chains[name], Routing: map[string]string{}}
	v.Position = posString(s, mesh.PathService(name))
	for _, up := range sortedUpstreams(svc) {
		v.Upstreams = append(v.Upstreams, Link{Service: up.Service, LocalPort: up.LocalPort, Datacenter: up.Datacenter, Verdict: verdict(s, name, up.Service)})
	}
	for _, other := range s.ServiceNames() {
		for _, up := range sortedUpstreams(s.Services[other]) {
			if up.Service == name {
				v.Downstreams = append(v.Downstreams, Link{Service: other, LocalPort: up.LocalPort, Datacenter: up.Datacenter, Verdict: verdict(s, other, name)})
			}
		}
	}
	for _, in := range s.Inbound(name) {
		v.Inbound = append(v.Inbound, IntentionAt{Intention: in, Position: posString(s, mesh.PathIntention(in.Destination, in.Source))})
	}
	for kind, path := range map[string]string{"router": mesh.PathRouter(name), "splitter": mesh.PathSplitter(name), "resolver": mesh.PathResolver(name)} {
		if p := posString(s, path); p != "" {
			v.Routing[kind] = p
		}
	}
	return v
}

func posString(s *mesh.Snapshot, path string) string {
	if p := s.Pos(path); p.IsValid() {
		return p.String()
	}
	return ""
}
