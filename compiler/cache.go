package compiler

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"sync"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/parser"
)

// Cache carries work from one compilation to the next of a similar mesh: a review's base and
// head, or a server's successive commits, which share all but a few files. It remembers
//
//   - parsed files, by name and content;
//   - for meshes of plain data (fastpath.go), each element CUE has validated (services.api,
//     intentions.web, ...), by its text, the schema and the user's top-level declarations other
//     than `mesh` (elementDeps in elements.go), with its data and raw form. Plain data has no
//     references, so an element's validity and value depend on nothing else; an element whose
//     text did not change is neither evaluated nor decoded again, and a change to the mesh
//     settings (defaultIntention, tls) evaluates the settings alone;
//   - for each cached file, its declarations split by element with their text hashes, its
//     position index entries and its top-level check;
//   - what the latest successful compilation derived from each element (incremental.go): the
//     compiled service or intentions with their positions, the service's chain, their canonical
//     JSON (the snapshot's Version is hashed from it, the same hash as Snapshot.Seal), and the
//     analysis's warnings on them, reused for the elements that did not change and do not
//     depend on what did.
//
// Snapshots compiled with a Cache share maps (service and endpoint meta, subset filters) and
// compiled elements (services, intentions, chains) with it and with each other: like every
// sealed snapshot, they must not be modified.
//
// A Cache keeps what the latest compilation used (the analysis's verdicts: the latest two) and
// drops the rest, so it holds about one mesh: at 10k services about 340 MiB live (290 MiB of
// syntax trees and data, 12 MiB of split declarations and position entries, 38 MiB of compiled
// elements and their JSON), against 70 MiB for the snapshot. Compilations sharing a Cache run
// one at a time. The zero Cache is not usable; a nil *Cache caches nothing.
//
// WriteElements and ReadElements carry the keys of the validated elements from one process to
// the next (mesh review --cache): an element read back is known valid, so CUE does not evaluate
// it again, but its data is read from the syntax again. Element keys include the schema, so
// another version of the schema never trusts them. Whoever can write that file can make an
// invalid element pass: keep it where only the mesh's own CI writes.
type Cache struct {
	mu    sync.Mutex
	gen   uint64
	files map[fileKey]*cachedFile
	byAST map[*ast.File]*cachedFile
	elems map[[32]byte]*cachedElem
	// verdicts of the analysis's L7 questions, by what they depend on (analysis.go).
	verdicts map[string]*cachedVerdict
	// memo is what the compilations derived from the elements (incremental.go).
	memo *memo

	// What the latest compilation did, for tests and benchmarks.
	last CacheStats
}

// CacheStats counts what one compilation took from a Cache and what it had to do itself.
type CacheStats struct {
	FilesParsed, FilesReused          int
	ElementsEvaluated, ElementsReused int
	// SettingsEvaluated is set when the mesh settings (the shared declarations: mesh, and the
	// user's top-level definitions) were new and CUE evaluated them; they are not counted in
	// ElementsEvaluated or ElementsReused.
	SettingsEvaluated bool
	// VerdictsSearched and VerdictsReused count the analysis's L7 verdicts (analysis.go) that
	// needed a search and that the Cache answered.
	VerdictsSearched, VerdictsReused int
	// CompiledReused counts the services and intention destinations whose compiled form an
	// earlier compilation made (incremental.go).
	CompiledReused int
}

type fileKey struct {
	name string
	sum  [32]byte
}

type cachedFile struct {
	file  *ast.File
	plain bool // isPlainData(file)
	used  uint64
	split *fileSplit // made on first use
	// topLevelOK is set when checkTopLevel finds nothing wrong with file.
	topLevelOK bool
	pos        *posFragment // made on first use
}

// positions is filePositions(f), kept with f.
func (c *Cache) positions(f *ast.File) *posFragment {
	var cf *cachedFile
	if c != nil {
		if cf = c.byAST[f]; cf != nil && cf.pos != nil {
			return cf.pos
		}
	}
	fr := filePositions(f)
	if cf != nil {
		cf.pos = fr
	}
	return fr
}

// fileSplit is a file's declarations split by element (splitFile), with the SHA-256 of each
// element declaration's text.
type fileSplit struct {
	shared []ast.Decl
	keyed  []keyedDecl
}

// split returns f's declarations split by element; data is f's text. It reports false when
// they cannot be split (the fast path does not apply).
func (c *Cache) split(f *ast.File, data []byte) (*fileSplit, bool) {
	var cf *cachedFile
	if c != nil {
		if cf = c.byAST[f]; cf != nil && cf.split != nil {
			return cf.split, true
		}
	}
	shared, keyed, ok := splitFile(f)
	if !ok {
		return nil, false
	}
	for i := range keyed {
		start, end := keyed[i].sub.Pos(), keyed[i].sub.End()
		if !start.IsValid() || !end.IsValid() || start.Filename() != f.Filename || end.Filename() != f.Filename {
			return nil, false
		}
		a, b := start.Offset(), end.Offset()
		if a < 0 || b > len(data) || a > b {
			return nil, false
		}
		keyed[i].sum = sha256.Sum256(data[a:b])
		keyed[i].file, keyed[i].line, keyed[i].col = f.Filename, start.Line(), start.Column()
	}
	fs := &fileSplit{shared: shared, keyed: keyed}
	if cf != nil {
		cf.split = fs
	}
	return fs, true
}

// cachedElem is an element of plain data that CUE validated: its data read from the syntax and
// its raw form (rawService, map[string]rawIntention, ...), both nil for an element read by
// ReadElements. They are shared by the compilations that use them, which only read them.
type cachedElem struct {
	data any
	raw  any
	used uint64
}

// NewCache returns an empty Cache.
func NewCache() *Cache {
	return &Cache{files: map[fileKey]*cachedFile{}, byAST: map[*ast.File]*cachedFile{}, elems: map[[32]byte]*cachedElem{},
		verdicts: map[string]*cachedVerdict{}}
}

// Stats reports what the latest compilation that used c took from it.
func (c *Cache) Stats() CacheStats {
	if c == nil {
		return CacheStats{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// begin starts a compilation with c; end finishes it, dropping what it did not use.
func (c *Cache) begin() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.gen++
	c.last = CacheStats{}
}

func (c *Cache) end() {
	if c == nil {
		return
	}
	defer c.mu.Unlock()
	for k, f := range c.files {
		if f.used != c.gen {
			delete(c.files, k)
			delete(c.byAST, f.file)
		}
	}
	for k, e := range c.elems {
		if e.used != c.gen {
			delete(c.elems, k)
		}
	}
	for k, v := range c.verdicts {
		// Verdicts stay for one more compilation: a defaultIntention flipped back (or a
		// review's base after its head) decides none of them again.
		if v.used+1 < c.gen {
			delete(c.verdicts, k)
		}
	}
}

type cachedVerdict struct {
	allows bool
	used   uint64
}

// verdict returns the answer kept under key, if any.
func (c *Cache) verdict(key string) (bool, bool) {
	if c == nil {
		return false, false
	}
	v, ok := c.verdicts[key]
	if !ok {
		return false, false
	}
	v.used = c.gen
	c.last.VerdictsReused++
	return v.allows, true
}

// putVerdict keeps an answer the analysis searched for.
func (c *Cache) putVerdict(key string, allows bool) {
	if c == nil {
		return
	}
	c.last.VerdictsSearched++
	c.verdicts[key] = &cachedVerdict{allows: allows, used: c.gen}
}

// parseFiles parses files on every core, taking those it has from c (nil: none). Syntax
// errors are not cached.
func (c *Cache) parseFiles(files []File) ([]*ast.File, []error) {
	out := make([]*ast.File, len(files))
	errs := make([]error, len(files))
	keys := make([]fileKey, len(files))
	plain := make([]bool, len(files))
	var todo []int
	for i, f := range files {
		if c != nil {
			keys[i] = fileKey{name: f.Name, sum: sha256.Sum256(f.Data)}
			if cf, ok := c.files[keys[i]]; ok {
				cf.used = c.gen
				c.last.FilesReused++
				out[i] = cf.file
				continue
			}
		}
		todo = append(todo, i)
	}
	topOK := make([]bool, len(files))
	parallel(len(todo), nil, func(j int) {
		i := todo[j]
		out[i], errs[i] = parser.ParseFile(files[i].Name, files[i].Data)
		if errs[i] == nil && c != nil {
			plain[i] = isPlainData(out[i])
			var top errorList
			checkTopLevel(out[i], &top)
			topOK[i] = len(top.list) == 0
		}
	})
	if c != nil {
		for _, i := range todo {
			if errs[i] == nil {
				c.last.FilesParsed++
				cf := &cachedFile{file: out[i], plain: plain[i], topLevelOK: topOK[i], used: c.gen}
				c.files[keys[i]] = cf
				c.byAST[out[i]] = cf
			}
		}
	}
	return out, errs
}

// isPlain is isPlainData(f), remembered for parsed files.
func (c *Cache) isPlain(f *ast.File) bool {
	if c != nil {
		if cf, ok := c.byAST[f]; ok {
			return cf.plain
		}
	}
	return isPlainData(f)
}

// topLevelOK reports whether checkTopLevel is known to find nothing wrong with f.
func (c *Cache) topLevelOK(f *ast.File) bool {
	if c != nil {
		if cf, ok := c.byAST[f]; ok {
			return cf.topLevelOK
		}
	}
	return false
}

// evaluated counts elements CUE evaluated.
func (c *Cache) evaluated(n int) {
	if c != nil {
		c.last.ElementsEvaluated += n
	}
}

// elem returns the element validated under key, if any.
func (c *Cache) elem(key [32]byte) (*cachedElem, bool) {
	if c == nil {
		return nil, false
	}
	e, ok := c.elems[key]
	if ok {
		e.used = c.gen
		c.last.ElementsReused++
	}
	return e, ok
}

// settings records that the shared declarations were evaluated.
func (c *Cache) settings() {
	if c != nil {
		c.last.SettingsEvaluated = true
	}
}

// settingsKnown is elem for the key of the shared declarations, which is not counted as an
// element reused.
func (c *Cache) settingsKnown(key [32]byte) (*cachedElem, bool) {
	if c == nil {
		return nil, false
	}
	e, ok := c.elems[key]
	if ok {
		e.used = c.gen
	}
	return e, ok
}

// putElem remembers an element CUE validated.
func (c *Cache) putElem(key [32]byte, data, raw any) {
	if c == nil {
		return
	}
	c.elems[key] = &cachedElem{data: data, raw: raw, used: c.gen}
}

// elementsMagic starts the file WriteElements writes.
const elementsMagic = "mesh compiler elements 1\n"

// WriteElements writes the keys of the elements the latest compilation validated or reused.
func (c *Cache) WriteElements(w io.Writer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	bw := bufio.NewWriter(w)
	bw.WriteString(elementsMagic)
	for k, e := range c.elems {
		if e.used == c.gen {
			bw.Write(k[:])
		}
	}
	return bw.Flush()
}

// ReadElements adds the element keys WriteElements wrote to c. They stay until a compilation
// does not use them.
func (c *Cache) ReadElements(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	rest, ok := bytes.CutPrefix(b, []byte(elementsMagic))
	if !ok || len(rest)%32 != 0 {
		return errors.New("compiler cache: not an elements file of this version")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for ; len(rest) > 0; rest = rest[32:] {
		k := [32]byte(rest[:32])
		if _, ok := c.elems[k]; !ok {
			c.elems[k] = &cachedElem{used: c.gen}
		}
	}
	return nil
}
