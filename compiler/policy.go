package compiler

// Guardrails: policies (this file) and analysis (analysis.go) run on every compiled snapshot.
// Compile calls guard last; CompileWithReport passes options to it through the context, which
// keeps Compile's signature, and every caller's, as it is.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/parser"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/policies"
)

// PolicyDir is the folder of a mesh directory that holds the mesh's own policies.
const PolicyDir = "policies"

// Options change what a compilation checks beyond the configuration's validity.
type Options struct {
	// PolicyFiles are the mesh's own policies: the CUE files of its policies/ folder, named
	// relative to the mesh directory ("policies/x.cue"). They are always enforced.
	PolicyFiles []File
	// Strict turns analysis warnings into errors.
	Strict bool
	// ReportViolations returns policy violations in the Report instead of failing the
	// compilation with them, for callers that show them next to other results (mesh review).
	ReportViolations bool
	// Cache, when set, carries work over from the previous compilation that used it (cache.go).
	Cache *Cache
}

// Report is what a compilation found besides errors.
type Report struct {
	// Warnings are the analysis warnings (unless Options.Strict made them errors).
	Warnings Errors
	// Violations are the policy violations, with Options.ReportViolations.
	Violations Errors
}

type guardKey struct{}

type guardState struct {
	opts   Options
	report *Report
}

// CompileWithReport compiles like Compile, with options, and returns the warnings and (with
// Options.ReportViolations) policy violations in a Report.
func CompileWithReport(ctx context.Context, files []File, opts Options) (*mesh.Snapshot, *Report, error) {
	st := &guardState{opts: opts, report: &Report{}}
	snap, err := Compile(context.WithValue(ctx, guardKey{}, st), files)
	return snap, st.report, err
}

// CompileDirWithReport compiles the mesh in directory dir, with its own policies from
// dir/policies unless opts names policy files already.
func CompileDirWithReport(ctx context.Context, dir string, opts Options) (*mesh.Snapshot, *Report, error) {
	files, err := ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	if opts.PolicyFiles == nil {
		if opts.PolicyFiles, err = ReadPolicyDir(dir); err != nil {
			return nil, nil, err
		}
	}
	return CompileWithReport(ctx, files, opts)
}

// CompileGitWithReport compiles the mesh in directory dir of the commit ref resolves to, with its
// own policies from that commit's dir/policies.
func CompileGitWithReport(ctx context.Context, repo, ref, dir string, opts Options) (*mesh.Snapshot, *Report, error) {
	r, err := OpenRepo(ctx, repo)
	if err != nil {
		return nil, nil, err
	}
	h, err := Resolve(r, ref)
	if err != nil {
		return nil, nil, err
	}
	return CompileCommitWithReport(ctx, r, h, dir, opts)
}

// CompileCommitWithReport compiles the mesh in directory dir of commit h of an open repository.
func CompileCommitWithReport(ctx context.Context, r *git.Repository, h plumbing.Hash, dir string, opts Options) (*mesh.Snapshot, *Report, error) {
	files, err := ReadCommit(r, h, dir)
	if err != nil {
		return nil, nil, err
	}
	if opts.PolicyFiles == nil {
		if opts.PolicyFiles, err = ReadPolicyCommit(r, h, dir); err != nil {
			return nil, nil, err
		}
	}
	snap, rep, err := CompileWithReport(ctx, files, opts)
	if snap != nil {
		snap.Commit = h.String()
	}
	return snap, rep, err
}

// ReadPolicyDir reads the .cue files of dir/policies; none when it does not exist.
func ReadPolicyDir(dir string) ([]File, error) {
	entries, err := os.ReadDir(filepath.Join(dir, PolicyDir))
	if errors.Is(err, os.ErrNotExist) {
		return []File{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []File{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".cue") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, PolicyDir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, File{Name: PolicyDir + "/" + e.Name(), Data: b})
	}
	return out, nil
}

// ReadPolicyCommit reads the .cue files of dir/policies in commit h; none when it does not exist.
func ReadPolicyCommit(r *git.Repository, h plumbing.Hash, dir string) ([]File, error) {
	c, err := r.CommitObject(h)
	if err != nil {
		return nil, fmt.Errorf("%w: commit %s: %v", ErrRef, h, err)
	}
	tree, err := c.Tree()
	if err != nil {
		return nil, err
	}
	sub, err := tree.Tree(strings.Trim(path.Join(repoPath(dir), PolicyDir), "/"))
	if errors.Is(err, object.ErrDirectoryNotFound) {
		return []File{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []File{}
	for _, e := range sub.Entries {
		if !e.Mode.IsFile() || !strings.HasSuffix(e.Name, ".cue") {
			continue
		}
		b, err := readEntry(sub, &e)
		if err != nil {
			return nil, err
		}
		out = append(out, File{Name: PolicyDir + "/" + e.Name, Data: b})
	}
	return out, nil
}

// guard runs the analysis and the policies on a compiled snapshot. It returns the errors that
// fail the compilation: policy violations (unless reported instead), and with Strict the
// warnings.
func guard(ctx context.Context, snap *mesh.Snapshot) error {
	st, _ := ctx.Value(guardKey{}).(*guardState)
	var fail Errors
	var warnings Errors
	if st == nil {
		// Plain Compile: nobody reads warnings, so the analysis is not run; policies are.
		st = &guardState{report: &Report{}}
	} else {
		warnings = analyzeCached(snap, st.opts.Cache)
	}
	if st.opts.Strict {
		for _, w := range warnings {
			fail = append(fail, &Error{Pos: w.Pos, Msg: w.Msg + " (--strict)"})
		}
	} else {
		st.report.Warnings = warnings
	}
	violations, err := evalPolicies(snap, st.opts.PolicyFiles)
	if err != nil {
		return err
	}
	if st.opts.ReportViolations {
		st.report.Violations = violations
	} else {
		fail = append(fail, violations...)
	}
	if len(fail) == 0 {
		return nil
	}
	fail.sort()
	return fail
}

// policyPrefix marks the positions of the built-in policy files.
const policyPrefix = "$policies/"

// evalPolicies evaluates the policies the mesh enables, and its own, against snap. Problems with
// the policies themselves (an unknown name, a custom policy that does not evaluate) are errors of
// the compilation too.
func evalPolicies(snap *mesh.Snapshot, own []File) (Errors, error) {
	if len(snap.Mesh.Policies) == 0 && len(own) == 0 {
		return nil, nil
	}
	var errs errorList
	builtin := map[string]bool{}
	for _, n := range policies.Names() {
		builtin[n] = true
	}
	inst := build.NewContext().NewInstance("policies", nil)
	inst.PkgName = "policies"
	for _, f := range policies.Files() {
		af, err := parser.ParseFile(policyPrefix+f.Name, f.Data)
		if err != nil {
			return nil, fmt.Errorf("internal: policy %s: %v", f.Name, err)
		}
		if err := inst.AddSyntax(af); err != nil {
			return nil, fmt.Errorf("internal: policy %s: %v", f.Name, err)
		}
	}
	ok := true
	for _, f := range own {
		af, err := parser.ParseFile(f.Name, f.Data)
		if err != nil {
			addCUEErrors(&errs, err)
			ok = false
			continue
		}
		if name := af.PackageName(); name != "policies" {
			errs.add(mesh.Pos{File: f.Name, Line: 1, Col: 1}, "policy files belong to package policies, not %q", name)
			ok = false
			continue
		}
		if err := inst.AddSyntax(af); err != nil {
			addCUEErrors(&errs, err)
			ok = false
		}
	}
	if !ok {
		return errs.list, nil
	}
	ctx := cuecontext.New()
	pv := ctx.BuildInstance(inst)
	if err := pv.Err(); err != nil {
		addCUEErrors(&errs, err)
		return errs.list, nil
	}
	// Which policies run: those the mesh names, and every one of its own.
	enabled := map[string]bool{}
	meshPos := snap.Pos("mesh")
	for _, n := range snap.Mesh.Policies {
		if !pv.LookupPath(cue.MakePath(cue.Str("policy"), cue.Str(n))).Exists() {
			errs.add(meshPos, "mesh.policies: unknown policy %q (built-in: %s)", n, strings.Join(policies.Names(), ", "))
			continue
		}
		enabled[n] = true
	}
	iter, err := pv.LookupPath(cue.ParsePath("policy")).Fields()
	if err == nil {
		for iter.Next() {
			n := iter.Selector().Unquoted()
			if !builtin[n] {
				enabled[n] = true
			}
		}
	}
	if len(enabled) == 0 {
		return errs.list, nil
	}
	raw, err := json.Marshal(policyView(snap))
	if err != nil {
		return nil, fmt.Errorf("internal: policy input: %w", err)
	}
	input := ctx.CompileBytes(raw)
	if err := input.Err(); err != nil {
		return nil, fmt.Errorf("internal: policy input: %w", err)
	}
	v := pv.FillPath(cue.ParsePath("input"), input)
	names := make([]string, 0, len(enabled))
	for n := range enabled {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		lv := v.LookupPath(cue.MakePath(cue.Str("policy"), cue.Str(n), cue.Str("violations")))
		var list []struct {
			Path    string `json:"path"`
			Message string `json:"message"`
		}
		err := lv.Validate(cue.Concrete(true), cue.Final())
		if err == nil {
			err = lv.Decode(&list)
		}
		if err != nil {
			var sub errorList
			addCUEErrors(&sub, err)
			for _, e := range sub.list {
				errs.add(e.Pos, "policy %s does not evaluate: %s", n, e.Msg)
			}
			continue
		}
		for _, viol := range list {
			errs.add(elementPos(snap, viol.Path), "policy %s: %s", n, viol.Message)
		}
	}
	return errs.list, nil
}

// elementPos returns the position of the element at path p, or of its closest enclosing element
// that has one.
func elementPos(snap *mesh.Snapshot, p string) mesh.Pos {
	for p != "" {
		if pos := snap.Pos(p); pos.IsValid() {
			return pos
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return snap.Pos("mesh")
}

// The view of a snapshot that policies read (policies/input.cue declares it).
type (
	viewInput struct {
		Mesh       viewMesh                            `json:"mesh"`
		Services   map[string]viewService              `json:"services"`
		Intentions map[string]map[string]viewIntention `json:"intentions"`
		Access     map[string]map[string]viewAccess    `json:"access"`
		Routes     []viewRoute                         `json:"routes"`
	}
	// viewAccess is what mesh.Authorize says of the requests from one source (or from any
	// source that no intention names, "*") into one service.
	viewAccess struct {
		Allows    bool     `json:"allows"`
		DecidedBy *viewRef `json:"decidedBy,omitempty"`
	}
	viewRef struct {
		Source      string `json:"source"`
		Destination string `json:"destination"`
		Precedence  int    `json:"precedence"`
		Path        string `json:"path"`
	}
	viewMesh struct {
		Name             string   `json:"name"`
		DefaultIntention string   `json:"defaultIntention"`
		Datacenters      []string `json:"datacenters"`
		Path             string   `json:"path"`
	}
	viewService struct {
		Name      string            `json:"name"`
		Protocol  string            `json:"protocol"`
		Port      int               `json:"port"`
		Owners    []string          `json:"owners"`
		Meta      map[string]string `json:"meta"`
		Upstreams []string          `json:"upstreams"`
		Path      string            `json:"path"`
	}
	viewIntention struct {
		Source      string           `json:"source"`
		Destination string           `json:"destination"`
		Precedence  int              `json:"precedence"`
		Action      string           `json:"action"`
		Allows      bool             `json:"allows"`
		Permissions []viewPermission `json:"permissions"`
		Path        string           `json:"path"`
	}
	viewPermission struct {
		Action string `json:"action"`
		Path   string `json:"path"`
	}
	viewRoute struct {
		Service        string   `json:"service"`
		Index          int      `json:"index"`
		Destination    string   `json:"destination"`
		NumRetries     int      `json:"numRetries"`
		RequestTimeout string   `json:"requestTimeout"`
		RetryOn        []string `json:"retryOn"`
		Path           string   `json:"path"`
	}
)

func policyView(s *mesh.Snapshot) *viewInput {
	v := &viewInput{
		Mesh: viewMesh{
			Name: s.Mesh.Name, DefaultIntention: string(s.Mesh.DefaultIntention),
			Datacenters: nonNil(s.Mesh.Datacenters), Path: "mesh",
		},
		Services:   map[string]viewService{},
		Intentions: map[string]map[string]viewIntention{},
		Routes:     []viewRoute{},
	}
	for name, svc := range s.Services {
		ups := []string{}
		for u := range svc.Upstreams {
			ups = append(ups, u)
		}
		sort.Strings(ups)
		meta := svc.Meta
		if meta == nil {
			meta = map[string]string{}
		}
		v.Services[name] = viewService{
			Name: name, Protocol: svc.Protocol, Port: svc.Port, Owners: nonNil(svc.Owners), Meta: meta,
			Upstreams: ups, Path: mesh.PathService(name),
		}
	}
	anyone := unnamed(s)
	allowsBy := map[*mesh.Intention]bool{}
	for _, in := range s.Intentions {
		allowsBy[in] = intentionAllows(s, in, anyone)
		vi := viewIntention{
			Source: in.Source, Destination: in.Destination, Precedence: in.Precedence,
			Action: string(in.Action), Allows: allowsBy[in],
			Permissions: []viewPermission{}, Path: mesh.PathIntention(in.Destination, in.Source),
		}
		for i, p := range in.Permissions {
			vi.Permissions = append(vi.Permissions, viewPermission{
				Action: string(p.Action), Path: mesh.PathPermission(in.Destination, in.Source, i),
			})
		}
		m := v.Intentions[in.Destination]
		if m == nil {
			m = map[string]viewIntention{}
			v.Intentions[in.Destination] = m
		}
		m[in.Source] = vi
	}
	v.Access = accessView(s, anyone, allowsBy)
	for _, name := range sortedKeys(s.Routers) {
		for i, r := range s.Routers[name].Routes {
			rt := viewRoute{
				Service: name, Index: i, Destination: r.Destination.Service,
				NumRetries: r.Destination.NumRetries, RetryOn: nonNil(r.Destination.RetryOn),
				Path: mesh.PathRoute(name, i),
			}
			if r.Destination.RequestTimeout != 0 {
				rt.RequestTimeout = r.Destination.RequestTimeout.String()
			}
			v.Routes = append(v.Routes, rt)
		}
	}
	return v
}

// The facts about verdicts that policies read come from the one evaluator, mesh.Authorize
// (through mesh.AllowsSome, which searches the requests Authorize decides on): policies never
// re-encode precedence or the meaning of permissions. A pair whose answer cannot be decided
// exactly (regex conditions) counts as allowing: a guardrail errs on the side of flagging.

// unnamed returns a service name that no intention names, to stand for "any source (or
// destination) without an intention of its own".
func unnamed(s *mesh.Snapshot) string {
	name := "\x00unnamed"
	for i := 0; ; i++ {
		used := false
		for _, in := range s.Intentions {
			if in.Source == name || in.Destination == name {
				used = true
				break
			}
		}
		if !used {
			return name
		}
		name = fmt.Sprintf("\x00unnamed%d", i)
	}
}

// allows reports whether Authorize allows some request from src to dst.
func allows(s *mesh.Snapshot, src, dst string) bool {
	d := mesh.AllowsSome(s, src, dst, 0)
	return d.Differs || d.Undecided != ""
}

// intentionAllows reports whether in allows some request of a pair it decides: with a "*"
// side standing for a service that no intention names, Authorize's first candidate is in.
func intentionAllows(s *mesh.Snapshot, in *mesh.Intention, anyone string) bool {
	src, dst := in.Source, in.Destination
	if src == mesh.Wildcard {
		src = anyone
	}
	if dst == mesh.Wildcard {
		dst = anyone
	}
	return allows(s, src, dst)
}

// accessView returns, per service, what Authorize decides for the sources that no intention
// into that service names: any such source ("*"), and each source with an intention into "*"
// (unless an intention from "*" into the service decides for all of them alike). A source with
// an intention of its own into the service is decided by it; its facts are in intentions.
// allowsBy holds each intention's allows: the verdicts of the pairs an intention decides depend
// on its rules and the mesh default only, so they are searched once per intention.
func accessView(s *mesh.Snapshot, anyone string, allowsBy map[*mesh.Intention]bool) map[string]map[string]viewAccess {
	var wildFrom []string // sources with *←S
	for _, in := range s.Intentions {
		if in.Destination == mesh.Wildcard && in.Source != mesh.Wildcard {
			wildFrom = append(wildFrom, in.Source)
		}
	}
	var byDefault *bool // whether the mesh default allows, asked once of a pair it decides
	access := func(src, dst string) viewAccess {
		in := mesh.Authorize(s, mesh.Request{Source: src, Destination: dst}).Intention
		if in == nil {
			if byDefault == nil {
				a := allows(s, src, dst)
				byDefault = &a
			}
			return viewAccess{Allows: *byDefault}
		}
		return viewAccess{Allows: allowsBy[in], DecidedBy: &viewRef{
			Source: in.Source, Destination: in.Destination, Precedence: in.Precedence,
			Path: mesh.PathIntention(in.Destination, in.Source),
		}}
	}
	out := map[string]map[string]viewAccess{}
	for _, dst := range s.ServiceNames() {
		m := map[string]viewAccess{mesh.Wildcard: access(anyone, dst)}
		if s.Intention(mesh.Wildcard, dst) == nil {
			for _, src := range wildFrom {
				if s.Intention(src, dst) == nil {
					m[src] = access(src, dst)
				}
			}
		}
		out[dst] = m
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
