package compiler

import (
	"crypto/sha256"
	"sync"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/parser"
)

// Cache carries work from one compilation to the next of a similar mesh: a review's base and
// head, or a server's successive commits, which share all but a few files. It remembers
//
//   - parsed files, by name and content;
//   - for meshes of plain data (fastpath.go), each element CUE has validated (services.api,
//     intentions.web, ...), by its text and the text of the mesh's other settings, with its
//     data and raw form. Plain data has no references, so an element's validity and value
//     depend on nothing else; an element whose text did not change is neither evaluated nor
//     decoded again.
//
// A Cache keeps what the latest compilation used and drops the rest, so it holds about one
// mesh. Compilations sharing a Cache run one at a time. The zero Cache is not usable; a nil
// *Cache caches nothing.
type Cache struct {
	mu    sync.Mutex
	gen   uint64
	files map[fileKey]*cachedFile
	byAST map[*ast.File]*cachedFile
	elems map[[32]byte]*cachedElem

	// What the latest compilation did, for tests and benchmarks.
	last CacheStats
}

// CacheStats counts what one compilation took from a Cache and what it had to do itself.
type CacheStats struct {
	FilesParsed, FilesReused          int
	ElementsEvaluated, ElementsReused int
}

type fileKey struct {
	name string
	sum  [32]byte
}

type cachedFile struct {
	file  *ast.File
	plain bool // isPlainData(file)
	used  uint64
}

// cachedElem is an element of plain data that CUE validated: its data read from the syntax and
// its raw form (rawService, map[string]rawIntention, ...). Both are shared by the compilations
// that use them, which only read them.
type cachedElem struct {
	data any
	raw  any
	used uint64
}

// NewCache returns an empty Cache.
func NewCache() *Cache {
	return &Cache{files: map[fileKey]*cachedFile{}, byAST: map[*ast.File]*cachedFile{}, elems: map[[32]byte]*cachedElem{}}
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
}

// parse parses one file, or returns it from the cache. Syntax errors are not cached.
func (c *Cache) parse(name string, data []byte) (*ast.File, error) {
	if c == nil {
		return parser.ParseFile(name, data)
	}
	k := fileKey{name: name, sum: sha256.Sum256(data)}
	if f, ok := c.files[k]; ok {
		f.used = c.gen
		c.last.FilesReused++
		return f.file, nil
	}
	af, err := parser.ParseFile(name, data)
	if err != nil {
		return nil, err
	}
	c.last.FilesParsed++
	cf := &cachedFile{file: af, plain: isPlainData(af), used: c.gen}
	c.files[k] = cf
	c.byAST[af] = cf
	return af, nil
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

// putElem remembers an element CUE validated.
func (c *Cache) putElem(key [32]byte, data, raw any) {
	if c == nil {
		return
	}
	c.elems[key] = &cachedElem{data: data, raw: raw, used: c.gen}
}
