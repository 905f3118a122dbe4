package compiler

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"strings"
	"sync"
	"sync/atomic"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/token"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/schema"
)

// loadFast validates userFiles (the parsed files, known to be package mesh) with the one-ofs
// checked here instead of by CUE, in chunks (chunks.go), and reads the mesh from the syntax. It
// reports false when the mesh is not plain data, or has any error: the full path says which.
// Evaluating the files again on the full path is safe: CUE's build does not change their syntax
// trees, and resolving the identifiers of plain data again changes nothing.
//
// Each element (services.api, intentions.web, ...) is keyed by what it depends on (see
// elementDeps); with a Cache, an element validated before under the same key is taken from it
// (cache.go) and only the others are read and evaluated. The shared declarations are the
// settings element, keyed by their text: a change to mesh.defaultIntention or mesh.tls
// evaluates them alone.
func loadFast(files []File, userFiles []*ast.File, cache *Cache) (*fastMesh, bool) {
	if !fastPath {
		return nil, false
	}
	for _, f := range userFiles {
		if !cache.isPlain(f) {
			return nil, false
		}
	}
	var shared []ast.Decl
	var keyed []keyedDecl
	for i, f := range userFiles {
		fs, ok := cache.split(f, files[i].Data) // without dropped files, files[i] is f's
		if !ok {
			return nil, false
		}
		shared, keyed = append(shared, fs.shared...), append(keyed, fs.keyed...)
	}
	text := sourceText(files, userFiles)
	// sharedKey identifies all the shared declarations (the settings element); elemBase what of
	// them an element's validity and value can depend on (see elementDeps).
	sharedHash, elemHash := sha256.New(), sha256.New()
	sharedHash.Write(schemaSum())
	elemHash.Write(schemaSum())
	sharedData := map[string]any{}
	for _, d := range shared {
		t, ok := text(d)
		if !ok {
			return nil, false
		}
		writeText(sharedHash, t)
		if !isMeshSettings(d) {
			writeText(elemHash, t)
		}
		if f, isField := d.(*ast.Field); isField && !mergeField(sharedData, f) {
			return nil, false
		}
	}
	var sharedKey, elemBase [32]byte
	sharedHash.Sum(sharedKey[:0])
	elemHash.Sum(elemBase[:0])

	// The declarations of each element, in the order of the files.
	var elems []*element
	byKey := map[string]*element{}
	for _, kd := range keyed {
		e := byKey[kd.key]
		if e == nil {
			section, name, _ := strings.Cut(kd.key, ".")
			e = &element{section: section, name: name}
			byKey[kd.key] = e
			elems = append(elems, e)
		}
		e.decls = append(e.decls, kd)
	}

	// Elements the cache knows are done; the others are read from the syntax (on every core),
	// checked for the one-ofs and evaluated, unless an earlier process validated them.
	var toRead []*element
	h, dh := sha256.New(), sha256.New()
	dkeys := make(map[elemKey][32]byte, len(elems))
	for _, e := range elems {
		h.Reset()
		h.Write(elemBase[:])
		writeText(h, []byte(e.section+"."+e.name))
		for _, kd := range e.decls {
			h.Write(kd.sum[:])
		}
		h.Sum(e.key[:0])
		dkeys[elemKey{e.section, e.name}] = derivedKey(dh, e)
		ce, known := cache.elem(e.key)
		if known && ce.data != nil {
			e.data, e.raw = ce.data, ce.raw
			continue
		}
		e.validated = known
		toRead = append(toRead, e)
	}
	var unreadable atomic.Bool
	parallel(len(toRead), unreadable.Load, func(i int) {
		e := toRead[i]
		m := map[string]any{}
		for _, kd := range e.decls {
			if !mergeField(m, kd.sub) {
				unreadable.Store(true)
				return
			}
		}
		e.data = m[e.name]
		var ok bool
		if e.raw, ok = decodeElement(e.section, e.data); !ok {
			unreadable.Store(true)
		}
	})
	if unreadable.Load() {
		return nil, false
	}
	var fresh []*element
	var freshDecls []keyedDecl
	freshData := map[string]any{"mesh": sharedData["mesh"]}
	for _, e := range toRead {
		if e.validated {
			cache.putElem(e.key, e.data, e.raw) // validated by an earlier process (ReadElements)
			continue
		}
		sec, _ := freshData[e.section].(map[string]any)
		if sec == nil {
			sec = map[string]any{}
			freshData[e.section] = sec
		}
		sec[e.name] = e.data
		fresh = append(fresh, e)
		freshDecls = append(freshDecls, e.decls...)
	}
	// The one-ofs the stripped schema no longer checks are checked on the data read from the
	// syntax (plaindata.go).
	if !oneOfsHoldData(freshData) {
		return nil, false
	}
	// The shared declarations are validated with every chunk; alone when nothing else is new.
	if _, known := cache.settingsKnown(sharedKey); !known || len(freshDecls) > 0 {
		if _, ok := validChunks(shared, freshDecls); !ok {
			return nil, false
		}
		if !known {
			cache.settings()
		}
		cache.putElem(sharedKey, nil, nil)
	}
	for _, e := range fresh {
		cache.putElem(e.key, e.data, e.raw)
	}
	cache.evaluated(len(fresh))

	fm := &fastMesh{
		data:       sharedData,
		dkeys:      dkeys,
		services:   map[string]rawService{},
		intentions: map[string]map[string]rawIntention{},
		routers:    map[string]rawRouter{},
		splitters:  map[string]rawSplitter{},
		resolvers:  map[string]rawResolver{},
	}
	var ok bool
	if fm.mesh, ok = decodeValue[rawMesh](sharedData["mesh"]); !ok {
		return nil, false
	}
	if fm.mesh.DefaultIntention == "" {
		fm.mesh.DefaultIntention = string(mesh.Deny) // the schema's default (schemaDefaults)
	}
	for _, e := range elems {
		sec, _ := sharedData[e.section].(map[string]any)
		if sec == nil {
			sec = map[string]any{}
			sharedData[e.section] = sec
		}
		sec[e.name] = e.data
		switch raw := e.raw.(type) {
		case rawService:
			fm.services[e.name] = raw
		case map[string]rawIntention:
			fm.intentions[e.name] = raw
		case rawRouter:
			fm.routers[e.name] = raw
		case rawSplitter:
			fm.splitters[e.name] = raw
		case rawResolver:
			fm.resolvers[e.name] = raw
		}
	}
	fm.idx = buildPositionsCached(userFiles, cache)
	return fm, true
}

// elementDeps: what an element's validity and value depend on.
//
// An element's value is the unification of its own declarations with the schema's constraint
// for its section (`services: [#Name]: #Service`, ...): plain data has no references, so
// nothing else in the user's files reaches it, and no definition of the schema refers to the
// mesh settings (`mesh: #Mesh` is a field beside the sections, not a value they use). What
// could reach it is the schema itself and a user's top-level declaration of the same package
// that unifies with a definition the sections use (`#Service: port: 80`, `#Name: =~"^a"`):
// plain data may write those. So an element's key is the schema, every shared declaration
// except the `mesh` field, the element's name and the text of each of its declarations, in
// order. Defaults that depend on mesh settings (a service's mode) are applied by the
// compilation after the cache, never to an element's cached data or raw form.
// TestCacheKeyDependencies holds this against a cold compile over random edits.

// isMeshSettings reports whether d is a regular field `mesh: ...`, which no element depends on.
func isMeshSettings(d ast.Decl) bool {
	f, ok := d.(*ast.Field)
	if !ok || f.Constraint != token.ILLEGAL {
		return false
	}
	name, _, err := ast.LabelName(f.Label)
	return err == nil && name == "mesh"
}

// derivedKey is what an element's compiled form (incremental.go) depends on besides the mesh
// settings and other elements: its key, and where each of its declarations starts. The text
// (in the key) and the start of each declaration give the position of everything in it.
func derivedKey(h hash.Hash, e *element) [32]byte {
	h.Reset()
	h.Write(e.key[:])
	var b [16]byte
	for _, kd := range e.decls {
		writeText(h, []byte(kd.file))
		binary.BigEndian.PutUint64(b[:8], uint64(kd.line))
		binary.BigEndian.PutUint64(b[8:], uint64(kd.col))
		h.Write(b[:])
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// element is one key of a top-level map, with every declaration of it.
type element struct {
	section, name string
	decls         []keyedDecl
	key           [32]byte // its cache key
	validated     bool     // known valid without its data (Cache.ReadElements)
	data, raw     any
}

// decodeElement decodes the data of an element of section into its raw form.
func decodeElement(section string, data any) (any, bool) {
	switch section {
	case "services":
		return decodeValue[rawService](data)
	case "intentions":
		return decodeValue[map[string]rawIntention](data)
	case "routers":
		return decodeValue[rawRouter](data)
	case "splitters":
		return decodeValue[rawSplitter](data)
	case "resolvers":
		return decodeValue[rawResolver](data)
	}
	return nil, false
}

// sourceText returns a function giving the text of a node of userFiles, parsed from files.
func sourceText(files []File, userFiles []*ast.File) func(ast.Node) ([]byte, bool) {
	src := make(map[string][]byte, len(files))
	for i, f := range userFiles {
		src[f.Filename] = files[i].Data
	}
	return func(n ast.Node) ([]byte, bool) {
		start, end := n.Pos(), n.End()
		if !start.IsValid() || !end.IsValid() || start.Filename() != end.Filename() {
			return nil, false
		}
		data, ok := src[start.Filename()]
		i, j := start.Offset(), end.Offset()
		if !ok || i < 0 || j > len(data) || i > j {
			return nil, false
		}
		return data[i:j], true
	}
}

// writeText writes b to h, preceded by its length.
func writeText(h hash.Hash, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}

// schemaSum identifies the schema and the fast path's reading of it, for element keys.
var schemaSum = sync.OnceValue(func() []byte {
	h := sha256.New()
	writeText(h, []byte("fast path 3"))
	for _, f := range schema.Files() {
		writeText(h, []byte(f.Name))
		writeText(h, f.Data)
	}
	return h.Sum(nil)
})
