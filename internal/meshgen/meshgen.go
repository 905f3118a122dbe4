// Package meshgen generates synthetic mesh repositories of a realistic shape, the input of the
// compiler's benchmarks and of load tests.
//
// The output is a pure function of Options: the same options give the same files, byte for byte,
// on every machine (math/rand/v2's PCG generator is specified, and no map is iterated). Every
// generated repository is valid: it compiles without errors.
//
// The shape imitates a company's mesh kept in Git: one file per team (teams of uneven size,
// about 50 services each by default) plus mesh.cue; mostly http services, some grpc, http2 and
// tcp; 2–4 endpoints over dc1 and dc2 tagged version v1 or v2; about five intentions per
// destination (mostly exact sources from the same team, some from other teams, some "*" sources,
// L7 permissions on a fifth of the intentions into http and grpc services), each caller listing
// its destinations as upstreams; and on about one service in ten a canary chain: a resolver with
// subsets v1/v2 and failover to dc2, a 90/10 splitter and a router with header and path routes.
// A few intentions are written in the source team's file, so one destination's intentions are
// spread over files as DESIGN.md allows.
package meshgen

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// Options say what to generate.
type Options struct {
	// Services is the number of services, at least 1.
	Services int
	// Seed selects one of the repositories of this size.
	Seed uint64
	// Teams is the number of teams, one file each; 0 means about one per 50 services.
	Teams int
}

// File is one generated file: its slash-separated path relative to the mesh directory.
type File struct {
	Name string
	Data []byte
}

// Stats counts what a generated repository contains.
type Stats struct {
	Files, Teams, Services, Intentions, Permissions int
	Routers, Splitters, Resolvers                   int
}

func (s Stats) String() string {
	return fmt.Sprintf("%d files, %d teams, %d services, %d intentions (%d L7 permissions), %d routers, %d splitters, %d resolvers",
		s.Files, s.Teams, s.Services, s.Intentions, s.Permissions, s.Routers, s.Splitters, s.Resolvers)
}

// Generate returns the files of a synthetic mesh repository: mesh.cue and teams/<team>.cue.
func Generate(opts Options) ([]File, Stats, error) {
	if opts.Services < 1 {
		return nil, Stats{}, fmt.Errorf("meshgen: services must be at least 1, got %d", opts.Services)
	}
	if opts.Teams < 0 {
		return nil, Stats{}, fmt.Errorf("meshgen: teams must not be negative, got %d", opts.Teams)
	}
	g := &generator{
		rnd: rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
	}
	g.plan(opts)
	g.wire()
	files := []File{{Name: "mesh.cue", Data: g.meshFile(opts.Seed)}}
	for _, t := range g.teams {
		files = append(files, File{Name: "teams/" + t.name + ".cue", Data: g.teamFile(t, opts.Seed)})
	}
	g.stats.Files = len(files)
	g.stats.Teams = len(g.teams)
	g.stats.Services = len(g.services)
	return files, g.stats, nil
}

// WriteDir writes files under dir, creating directories as needed.
func WriteDir(dir string, files []File) error {
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

type team struct {
	name     string
	services []*service
	// foreign are intentions this team writes into other teams' destinations.
	foreign []*intention
}

type service struct {
	name      string
	team      *team
	protocol  string
	port      int
	tier      string
	sre       bool // also owned by the SRE team
	endpoints int
	canary    bool // has a v2 endpoint; chain entries use subsets v1/v2
	chain     bool // resolver + splitter (+ router) with subsets v1/v2
	router    bool
	failover  bool // resolver without subsets: failover to dc2 only
	slowCheck bool
	// intentions into this service written in its own team's file, in order.
	intentions []*intention
	upstreams  []*service
	// rpc is the gRPC service name of a grpc service, used in paths.
	rpc string
	// index is the position of the service in the whole mesh, for unique addresses.
	index int
}

type intention struct {
	src         string // service name or "*"
	dst         *service
	action      string // "allow" or "deny"; empty when perms is set
	perms       []permission
	description string
}

type permission struct {
	action     string
	path       string // "pathPrefix" or "pathRegex" or ""
	pathValue  string
	methods    []string
	header     string // rendered header match, or ""
	headerName string
}

type generator struct {
	rnd      *rand.Rand
	teams    []*team
	services []*service
	stats    Stats
}

var teamWords = []string{
	"platform", "checkout", "search", "identity", "payments", "catalog", "inventory", "shipping",
	"notifications", "analytics", "ads", "media", "messaging", "fraud", "pricing", "reviews",
	"loyalty", "support", "recommendations", "orders", "billing", "accounts", "content", "growth",
	"logistics", "marketplace", "partners", "risk", "storefront", "mobile",
}

var appWords = []string{
	"api", "web", "gateway", "worker", "events", "indexer", "scheduler", "auth", "ledger", "router",
	"sync", "export", "import", "reports", "notifier", "admin", "profile", "session", "quota",
	"audit", "render", "upload", "feed", "graph", "config", "jobs", "query", "writer", "reader",
}

var dataWords = []string{"db", "cache", "queue", "kv", "store"}

var dataPorts = map[string]int{"db": 5432, "cache": 6379, "queue": 5672, "kv": 2379, "store": 9000}

// plan decides the teams and their services.
func (g *generator) plan(opts Options) {
	n := opts.Services
	nt := opts.Teams
	if nt == 0 {
		nt = max(1, (n+25)/50)
	}
	nt = min(nt, n)
	// Uneven team sizes: weights between 0.5 and 2, each team at least one service.
	weights := make([]float64, nt)
	total := 0.0
	for i := range weights {
		weights[i] = 0.5 + 1.5*g.rnd.Float64()
		total += weights[i]
	}
	sizes := make([]int, nt)
	rest := n - nt
	assigned := 0
	for i := range sizes {
		sizes[i] = 1 + int(float64(rest)*weights[i]/total)
		assigned += sizes[i]
	}
	for i := 0; assigned < n; i = (i + 1) % nt {
		sizes[i]++
		assigned++
	}
	for k := 0; k < nt; k++ {
		name := teamWords[k%len(teamWords)]
		if k >= len(teamWords) {
			name = fmt.Sprintf("%s-%d", name, k/len(teamWords)+1)
		}
		t := &team{name: name}
		g.teams = append(g.teams, t)
		used := map[string]int{}
		for j := 0; j < sizes[k]; j++ {
			s := &service{team: t, index: len(g.services)}
			var word string
			switch p := g.rnd.Float64(); {
			case k == 0 && j == 0:
				word, s.protocol, s.tier = "metrics", "http", "observability"
			case p < 0.10:
				word = pick(g.rnd, dataWords)
				s.protocol, s.tier, s.port = "tcp", "data", dataPorts[word]
			case p < 0.25:
				word, s.protocol, s.tier = pick(g.rnd, appWords), "grpc", "backend"
			case p < 0.30:
				word, s.protocol, s.tier = pick(g.rnd, appWords), "http2", "backend"
			default:
				word, s.protocol, s.tier = pick(g.rnd, appWords), "http", "backend"
				if word == "web" || word == "gateway" {
					s.tier = "frontend"
				}
			}
			used[word]++
			s.name = t.name + "-" + word
			if used[word] > 1 {
				s.name = fmt.Sprintf("%s-%d", s.name, used[word])
			}
			switch s.protocol {
			case "http", "http2":
				s.port = 8080
			case "grpc":
				s.port = 50051
				s.rpc = strings.ReplaceAll(t.name, "-", "") + "." + strings.ToUpper(word[:1]) + word[1:]
			}
			s.endpoints = 2 + g.rnd.IntN(3)
			s.sre = g.rnd.Float64() < 0.2
			s.slowCheck = g.rnd.Float64() < 0.25
			httpish := s.protocol != "tcp"
			switch p := g.rnd.Float64(); {
			case httpish && p < 0.11 && !(k == 0 && j == 0):
				s.chain, s.canary = true, true
				s.router = g.rnd.Float64() < 0.7
			case p < 0.16 && !(k == 0 && j == 0):
				s.failover = true // not on metrics, which nothing calls (a resolver there is dead)
			case p < 0.40:
				s.canary = true
			}
			t.services = append(t.services, s)
			g.services = append(g.services, s)
		}
	}
}

// wire draws the intentions and the upstreams they imply.
func (g *generator) wire() {
	for _, d := range g.services {
		if d == g.services[0] {
			continue // the metrics service: only its scrape intention into "*"
		}
		want := 3 + g.rnd.IntN(5) // 3..7, five on average
		srcs := map[string]bool{d.name: true}
		if g.rnd.Float64() < 0.10 {
			d.intentions = append(d.intentions, g.wildcard(d))
			srcs["*"] = true
		}
		for tries := 0; len(srcs)-1 < want && tries < 4*want; tries++ {
			var s *service
			if len(d.team.services) > 1 && g.rnd.Float64() < 0.7 {
				s = pick(g.rnd, d.team.services)
			} else {
				s = pick(g.rnd, g.services)
			}
			if srcs[s.name] || s == g.services[0] {
				continue
			}
			srcs[s.name] = true
			in := g.exact(s, d)
			if s.team != d.team && g.rnd.Float64() < 0.25 {
				s.team.foreign = append(s.team.foreign, in)
			} else {
				d.intentions = append(d.intentions, in)
			}
			if in.action != "deny" {
				s.upstreams = append(s.upstreams, d)
			}
		}
	}
}

func (g *generator) wildcard(d *service) *intention {
	in := &intention{src: "*", dst: d}
	g.stats.Intentions++
	if d.protocol == "tcp" || g.rnd.Float64() < 0.5 {
		in.action = "deny"
		in.description = "only the services listed here may call " + d.name
		return in
	}
	p := permission{action: "allow", path: "pathPrefix", pathValue: "/public/", methods: []string{"GET", "HEAD"}}
	if d.protocol == "grpc" {
		p = permission{action: "allow", path: "pathPrefix", pathValue: "/" + d.rpc + "/Get"}
	}
	in.perms = []permission{p}
	g.stats.Permissions++
	return in
}

func (g *generator) exact(s, d *service) *intention {
	in := &intention{src: s.name, dst: d}
	g.stats.Intentions++
	if d.protocol != "tcp" && g.rnd.Float64() < 0.2 {
		in.perms = g.permissions(d)
		g.stats.Permissions += len(in.perms)
		return in
	}
	in.action = "allow"
	if g.rnd.Float64() < 0.05 {
		in.action = "deny"
		in.description = "blocked pending security review"
	}
	return in
}

func (g *generator) permissions(d *service) []permission {
	if d.protocol == "grpc" {
		ps := []permission{{action: "allow", path: "pathPrefix", pathValue: "/" + d.rpc + "/"}}
		if g.rnd.Float64() < 0.3 {
			ps = append([]permission{{action: "deny", path: "pathPrefix", pathValue: "/" + d.rpc + "/Delete"}}, ps...)
		}
		if g.rnd.Float64() < 0.3 {
			ps[len(ps)-1].header = `{name: "x-client-id", present: true}`
		}
		return ps
	}
	var ps []permission
	if g.rnd.Float64() < 0.4 {
		ps = append(ps, permission{action: "deny", path: "pathPrefix", pathValue: "/internal/"})
	}
	switch p := g.rnd.Float64(); {
	case p < 0.15:
		ps = append(ps, permission{action: "allow", path: "pathRegex", pathValue: `/v[12]/items/[0-9]+`, methods: []string{"GET"}})
	case p < 0.4:
		ps = append(ps, permission{action: "allow", path: "pathPrefix", pathValue: "/v1/", methods: []string{"GET", "POST", "PUT"},
			header: `{name: "x-tenant", exact: "acme"}`})
	default:
		ps = append(ps, permission{action: "allow", path: "pathPrefix", pathValue: "/v1/", methods: []string{"GET", "HEAD"}})
	}
	if g.rnd.Float64() < 0.3 {
		ps = append(ps, permission{action: "allow", header: `{name: "x-debug", prefix: "trace-"}`, methods: []string{"GET"}})
	}
	return ps
}

func (g *generator) meshFile(seed uint64) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "// Mesh-wide settings of a synthetic mesh generated by `mesh gen` (seed %d).\n", seed)
	b.WriteString(`package mesh

mesh: {
	name:             "synthetic"
	trustDomain:      "synthetic.mesh"
	datacenter:       "dc1"
	datacenters:      ["dc1", "dc2"]
	defaultIntention: "deny"
	tls: minVersion:  "TLSv1_2"
	policies: []
}
`)
	return []byte(b.String())
}

func (g *generator) teamFile(t *team, seed uint64) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "// The %s team (@synthetic/%s): %d services. Generated by `mesh gen` (seed %d).\npackage mesh\n",
		t.name, t.name, len(t.services), seed)
	for _, s := range t.services {
		g.writeService(&b, s)
		if s == g.services[0] {
			b.WriteString("\n// The metrics service scrapes every service.\nintentions: \"*\": \"" + s.name + "\": action: \"allow\"\n")
			g.stats.Intentions++
		}
		if len(s.intentions) > 0 {
			fmt.Fprintf(&b, "\nintentions: %q: {\n", s.name)
			for _, in := range s.intentions {
				writeIntention(&b, "\t", fmt.Sprintf("%q", in.src), in)
			}
			b.WriteString("}\n")
		}
		g.writeChain(&b, s)
	}
	if len(t.foreign) > 0 {
		fmt.Fprintf(&b, "\n// Calls from %s into other teams' services, approved by their owners.\n", t.name)
		for _, in := range t.foreign {
			writeIntention(&b, "", fmt.Sprintf("intentions: %q: %q", in.dst.name, in.src), in)
		}
	}
	return []byte(b.String())
}

func (g *generator) writeService(b *strings.Builder, s *service) {
	fmt.Fprintf(b, "\nservices: %q: {\n", s.name)
	fmt.Fprintf(b, "\tprotocol: %q\n\tport:     %d\n", s.protocol, s.port)
	if s.sre {
		fmt.Fprintf(b, "\towners: [\"@synthetic/%s\", \"@synthetic/sre\"]\n", s.team.name)
	} else {
		fmt.Fprintf(b, "\towners: [\"@synthetic/%s\"]\n", s.team.name)
	}
	fmt.Fprintf(b, "\tmeta: {tier: %q, team: %q}\n", s.tier, s.team.name)
	if len(s.upstreams) > 0 {
		b.WriteString("\tupstreams: {\n")
		for i, u := range s.upstreams {
			fmt.Fprintf(b, "\t\t%q: localPort: %d\n", u.name, 9001+i)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("\tendpoints: [\n")
	idx := s.index
	dc1 := (s.endpoints + 1) / 2
	for j := 0; j < s.endpoints; j++ {
		dc, k := 1, j
		if j >= dc1 {
			dc, k = 2, j-dc1
		}
		version := "v1"
		if s.canary && (k == 1 || j == s.endpoints-1) {
			version = "v2"
		}
		a := idx*4 + j
		fmt.Fprintf(b, "\t\t{address: \"10.%d.%d.%d\", port: %d, datacenter: \"dc%d\", meta: {version: %q}},\n",
			dc, a>>8&0xff, a&0xff, s.port, dc, version)
	}
	b.WriteString("\t]\n")
	interval, timeout := "10s", "2s"
	if s.slowCheck {
		interval, timeout = "30s", "5s"
	}
	switch s.protocol {
	case "tcp":
		fmt.Fprintf(b, "\thealthCheck: {tcp: true, interval: %q, timeout: %q}\n", interval, timeout)
	case "grpc":
		fmt.Fprintf(b, "\thealthCheck: {grpc: %q, interval: %q, timeout: %q}\n", s.rpc, interval, timeout)
	default:
		fmt.Fprintf(b, "\thealthCheck: {http: \"/healthz\", interval: %q, timeout: %q}\n", interval, timeout)
	}
	b.WriteString("}\n")
}

// writeIntention writes one intention as `label: ...` at indent.
func writeIntention(b *strings.Builder, indent, label string, in *intention) {
	if in.action != "" {
		if in.description != "" {
			fmt.Fprintf(b, "%s%s: {action: %q, description: %q}\n", indent, label, in.action, in.description)
		} else {
			fmt.Fprintf(b, "%s%s: action: %q\n", indent, label, in.action)
		}
		return
	}
	fmt.Fprintf(b, "%s%s: permissions: [\n", indent, label)
	for _, p := range in.perms {
		var parts []string
		if p.path != "" {
			if p.path == "pathRegex" {
				parts = append(parts, fmt.Sprintf("pathRegex: %s", "#\""+p.pathValue+"\"#"))
			} else {
				parts = append(parts, fmt.Sprintf("%s: %q", p.path, p.pathValue))
			}
		}
		if len(p.methods) > 0 {
			parts = append(parts, "methods: ["+quoteAll(p.methods)+"]")
		}
		if p.header != "" {
			parts = append(parts, "header: ["+p.header+"]")
		}
		fmt.Fprintf(b, "%s\t{action: %q, http: {%s}},\n", indent, p.action, strings.Join(parts, ", "))
	}
	fmt.Fprintf(b, "%s]\n", indent)
}

func (g *generator) writeChain(b *strings.Builder, s *service) {
	if s.failover {
		g.stats.Resolvers++
		fmt.Fprintf(b, "\nresolvers: %q: {\n\tconnectTimeout: \"2s\"\n\tfailover: \"*\": datacenters: [\"dc2\"]\n}\n", s.name)
		return
	}
	if !s.chain {
		return
	}
	g.stats.Resolvers++
	g.stats.Splitters++
	lb := "round_robin"
	if g.rnd.Float64() < 0.4 {
		lb = "least_request"
	}
	fmt.Fprintf(b, `
resolvers: %q: {
	defaultSubset: "v1"
	subsets: {
		v1: filter: {version: "v1"}
		v2: filter: {version: "v2"}
	}
	connectTimeout: "5s"
	failover: "*": datacenters: ["dc2"]
	loadBalancer: policy: %q
}
`, s.name, lb)
	canary := []int{10, 10, 10, 5, 20}[g.rnd.IntN(5)]
	fmt.Fprintf(b, "\nsplitters: %q: splits: [\n\t{weight: %d, subset: \"v1\"},\n\t{weight: %d, subset: \"v2\"},\n]\n",
		s.name, 100-canary, canary)
	if !s.router {
		return
	}
	g.stats.Routers++
	prefix := "/v2/"
	if s.protocol == "grpc" {
		prefix = "/" + s.rpc + "V2/"
	}
	fmt.Fprintf(b, `
routers: %q: routes: [
	{
		match: http: header: [{name: "x-canary", exact: "1"}]
		destination: {service: %q, subset: "v2"}
	},
	{
		match: http: pathPrefix: %q
		destination: {service: %q, subset: "v2", requestTimeout: "3s", numRetries: 2, retryOn: ["5xx", "reset"]}
	},
]
`, s.name, s.name, prefix, s.name)
}

func quoteAll(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func pick[T any](r *rand.Rand, list []T) T { return list[r.IntN(len(list))] }
