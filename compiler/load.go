package compiler

import (
	"sort"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/schema"
)

// schemaPrefix marks the positions of schema files, so messages can point at the user's files.
const schemaPrefix = "$schema/"

// topLevel are the fields a mesh repository may define.
var topLevel = map[string]bool{
	"mesh": true, "services": true, "intentions": true,
	"routers": true, "splitters": true, "resolvers": true,
}

// loaded is a mesh unified with the schema: its evaluated value (the full path), or its data
// read from the syntax once CUE has validated it (the fast path, fastpath.go).
type loaded struct {
	val  cue.Value
	idx  *posIndex
	fast *fastMesh
}

// root is the node of the whole mesh.
func (l loaded) root() node {
	if l.fast != nil {
		return l.fast.root()
	}
	return node{v: l.val, idx: l.idx}
}

// load parses files, unifies them with the schema and validates the result, adding every error
// CUE finds to errs. A file that cannot be loaded (a syntax error, a wrong package, an import)
// is reported and left out: the others are still checked, with errs.partial set. load returns
// false when nothing can be checked further; after schema errors it returns the value, whose
// sound parts can still be checked.
func load(files []File, errs *errorList, cache *Cache) (loaded, bool) {
	if len(files) == 0 {
		errs.add(mesh.Pos{}, "no .cue files in the mesh directory")
		return loaded{}, false
	}
	userFiles := loadableFiles(files, errs, cache)
	if len(userFiles) == 0 {
		return loaded{}, false
	}
	errs.partial = len(userFiles) < len(files)
	for _, af := range userFiles {
		if !cache.topLevelOK(af) {
			checkTopLevel(af, errs)
		}
	}
	if !hasTopLevel(userFiles, "mesh") && !errs.partial {
		errs.add(mesh.Pos{File: files[0].Name, Line: 1, Col: 1},
			"no mesh settings: one file must define mesh: {name: ..., trustDomain: ...}")
		return loaded{}, false
	}
	if !errs.partial {
		if fm, ok := loadFast(files, userFiles, cache); ok {
			return loaded{fast: fm}, true // see fastpath.go
		}
	}
	// The full path: the files as written, with the schema as written.
	v, ok := evaluate(userFiles, errs)
	if !ok {
		return loaded{}, false
	}
	if err := v.Validate(cue.Concrete(true), cue.All()); err != nil {
		// Keep going: the semantic checks still run on every element that is sound, so that
		// one run reports schema and reference errors together.
		addCUEErrors(errs, err)
		addHiddenErrors(files, userFiles, err, errs)
	}
	return loaded{val: v, idx: buildPositions(userFiles)}, true
}

// evaluate unifies userFiles with the schema as written.
func evaluate(userFiles []*ast.File, errs *errorList) (cue.Value, bool) {
	inst := build.NewContext().NewInstance("mesh", nil)
	inst.PkgName = "mesh"
	for _, sf := range schema.Files() {
		af, err := parser.ParseFile(schemaPrefix+sf.Name, sf.Data)
		if err != nil {
			errs.add(mesh.Pos{}, "internal: schema %s: %v", sf.Name, err)
			return cue.Value{}, false
		}
		if err := inst.AddSyntax(af); err != nil {
			errs.add(mesh.Pos{}, "internal: schema %s: %v", sf.Name, err)
			return cue.Value{}, false
		}
	}
	for _, af := range userFiles {
		if err := inst.AddSyntax(af); err != nil {
			addCUEErrors(errs, err)
			return cue.Value{}, false
		}
	}
	return cuecontext.New().BuildInstance(inst), true
}

// loadableFiles parses files and returns those that can be unified, reporting why the others
// cannot: a syntax error, a package other than mesh, an import outside the standard library.
func loadableFiles(files []File, errs *errorList, cache *Cache) []*ast.File {
	var userFiles []*ast.File
	parsed, parseErrs := cache.parseFiles(files)
	for i, f := range files {
		af, err := parsed[i], parseErrs[i]
		if err != nil {
			addCUEErrors(errs, err)
			continue
		}
		switch name := af.PackageName(); name {
		case "mesh":
		case "":
			errs.add(mesh.Pos{File: f.Name, Line: 1, Col: 1}, "missing package clause: every mesh file starts with `package mesh`")
			continue
		default:
			errs.add(posOf(af.Pos()), "package %s: every mesh file belongs to package mesh", name)
			continue
		}
		ok := true
		for imp := range af.ImportSpecs() {
			p := strings.Trim(imp.Path.Value, `"`)
			if strings.Contains(strings.SplitN(p, "/", 2)[0], ".") {
				errs.add(posOf(imp.Pos()), "import %q: a mesh may import only CUE's standard library", p)
				ok = false
			}
		}
		if ok {
			userFiles = append(userFiles, af)
		}
	}
	return userFiles
}

// checkTopLevel reports regular top-level fields that are not part of the format. Definitions,
// hidden fields and let clauses are the user's own helpers.
func checkTopLevel(f *ast.File, errs *errorList) {
	for _, d := range f.Decls {
		field, ok := d.(*ast.Field)
		if !ok {
			continue
		}
		name, isIdent, err := ast.LabelName(field.Label)
		if err != nil || !isIdent && name == "" {
			continue
		}
		if strings.HasPrefix(name, "#") || strings.HasPrefix(name, "_") {
			continue
		}
		if !topLevel[name] {
			errs.add(posOf(field.Label.Pos()), "unknown top-level field %q (want mesh, services, intentions, routers, splitters or resolvers)", name)
		}
	}
}

func hasTopLevel(files []*ast.File, want string) bool {
	for _, f := range files {
		for _, d := range f.Decls {
			if field, ok := d.(*ast.Field); ok {
				if name, _, err := ast.LabelName(field.Label); err == nil && name == want {
					return true
				}
			}
		}
	}
	return false
}

// friendlyPatterns explains the schema's regular expressions in words.
var friendlyPatterns = map[string]string{
	`(ns|us|µs|ms|s|m|h))+$`:               `want a duration such as "250ms", "3s" or "1m30s"`,
	`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`: `want a DNS label (lower-case letters, digits and '-', at most 63)`,
	`=~"^/"`:                               `want a path starting with "/"`,
}

// addCUEErrors converts CUE errors into positioned errors, pointing at the user's files rather
// than the schema, and condensing CUE's verbose forms: the alternatives of an empty disjunction
// become one "x is not one of a, b, c" message.
func addCUEErrors(errs *errorList, err error) {
	addCUEErrorList(errs, cueerrors.Errors(err))
}

func addCUEErrorList(errs *errorList, list []cueerrors.Error) {
	paths := map[string]bool{}
	for _, e := range list {
		paths[strings.Join(e.Path(), ".")] = true
	}
	for i := 0; i < len(list); i++ {
		e := list[i]
		path := strings.Join(e.Path(), ".")
		format, args := e.Msg()
		if errs.partial && (format == "field is required but not present" || strings.HasPrefix(format, "incomplete value")) {
			continue // the files that were not loaded may give it
		}
		if format == "field is required but not present" {
			// The alternatives of a matchN: the matchN error on the parent says it better.
			if j := strings.LastIndexByte(path, '.'); j > 0 && paths[path[:j]] {
				continue
			}
		}
		if strings.HasSuffix(format, "errors in empty disjunction:") {
			var want []string
			var got string
			pos := userPos(e)
			j := i + 1
			for ; j < len(list) && strings.Join(list[j].Path(), ".") == path; j++ {
				f, a := list[j].Msg()
				if f == "conflicting values %s and %s" && len(a) == 2 {
					want = append(want, sprintf("%v", a[0]))
					got = sprintf("%v", a[1])
				}
				if !pos.IsValid() {
					pos = userPos(list[j])
				}
			}
			if structBranchFailed(list[i+1 : j]) {
				// A struct against `"*" | {...}` (upstreams): the struct alternative's own
				// errors, inside it or in a value it refers to, are reported on their own.
				i = j - 1
				continue
			}
			if got != "" && len(want) == j-i-1 {
				sort.Strings(want)
				errs.add(pos, "%s: %s is not one of %s", path, got, strings.Join(want, ", "))
			} else {
				var alts []string
				for _, sub := range list[i+1 : j] {
					f, a := sub.Msg()
					alts = append(alts, cueMessage("", f, a))
				}
				errs.add(pos, "%s: no alternative matches: %s", path, strings.Join(alts, "; "))
			}
			i = j - 1
			continue
		}
		if format == "field not allowed" {
			// CUE reports the first element of a disallowed list or struct; name the field.
			for j := strings.LastIndexByte(path, '.'); j > 0 && isIndex(path[j+1:]); j = strings.LastIndexByte(path, '.') {
				path = path[:j]
			}
		}
		msg := cueMessage(path, format, args)
		pos := userPos(e)
		if others := otherUserPos(e, pos); len(others) > 0 {
			msg += " (also at " + strings.Join(others, ", ") + ")"
		}
		errs.add(pos, "%s", msg)
	}
}

// structBranchFailed reports whether the alternatives' errors of an empty disjunction only say
// that a struct is not one of its scalar alternatives: then the struct alternative failed for
// reasons CUE reports as errors of their own, which say it better.
func structBranchFailed(alts []cueerrors.Error) bool {
	for _, e := range alts {
		f, a := e.Msg()
		if !strings.Contains(cueMessage("", f, a), "(mismatched types struct and ") {
			return false
		}
	}
	return len(alts) > 0
}

// otherUserPos lists the user positions of a conflict other than the one it is reported at, so
// that a conflict between two files names both.
func otherUserPos(e cueerrors.Error, at mesh.Pos) []string {
	var out []string
	seen := map[mesh.Pos]bool{at: true}
	for _, p := range e.InputPositions() {
		mp := posOf(p)
		if !mp.IsValid() || isSchemaPos(mp) || seen[mp] {
			continue
		}
		seen[mp] = true
		out = append(out, mp.String())
	}
	sort.Strings(out)
	return out
}

func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// userPos picks the most useful position of a CUE error: the first one in a user file.
func userPos(e cueerrors.Error) mesh.Pos {
	cands := append([]token.Pos{e.Position()}, e.InputPositions()...)
	for _, p := range cands {
		if p.IsValid() && !strings.HasPrefix(p.Filename(), schemaPrefix) {
			return posOf(p)
		}
	}
	return mesh.Pos{}
}

func posOf(p token.Pos) mesh.Pos {
	if !p.IsValid() {
		return mesh.Pos{}
	}
	return mesh.Pos{File: p.Filename(), Line: p.Line(), Col: p.Column()}
}

// cueMessage turns one CUE error into a lower-case message prefixed with its field path.
func cueMessage(path string, format string, args []any) string {
	msg := format
	if len(args) > 0 {
		msg = sprintf(format, args...)
	}
	switch {
	case strings.Contains(msg, "does not satisfy matchN"):
		msg = matchNMessage(path, msg)
	case strings.HasPrefix(msg, "incomplete value"):
		msg = "missing required field (" + msg + ")"
	case strings.Contains(msg, "field not allowed"):
		msg = "field not allowed"
	case strings.Contains(msg, "(out of bound =~"):
		for pattern, want := range friendlyPatterns {
			if strings.Contains(msg, pattern) {
				val := strings.TrimPrefix(msg[:strings.Index(msg, " (out of bound")], "invalid value ")
				msg = "invalid value " + val + ": " + want
				break
			}
		}
	}
	if path != "" {
		return path + ": " + msg
	}
	return msg
}

func matchNMessage(path, msg string) string {
	last := path[strings.LastIndexByte(path, '.')+1:]
	switch {
	case strings.Contains(path, ".header."):
		return "a header match has exactly one of exact, prefix, suffix, regex and present"
	case strings.Contains(path, ".queryParam."):
		return "a queryParam match has exactly one of exact, regex and present"
	case last == "http":
		return "at most one of path, pathPrefix and pathRegex"
	case last == "healthCheck":
		return "a health check has exactly one of http, tcp and grpc"
	case strings.HasPrefix(path, "intentions."):
		return "an intention has exactly one of action and permissions"
	}
	return msg
}
