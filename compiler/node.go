package compiler

import (
	"sort"

	"cuelang.org/go/cue"

	mesh "github.com/meshgit/mesh"
)

// node is a part of the mesh being compiled, able to say where it and its parts are written.
//
// Where a part is written is the first place the files write its path, in the order of the
// files: the value of a scalar field, the label of any other field, a list element's start.
// The position index of the syntax (positions.go) answers that for every path written
// literally, on both paths; only what the index does not know (fields made by comprehensions,
// for example) is asked of CUE's value. So a mesh's semantic errors have the same positions
// whichever path compiles it.
//
// On the full path a node is also a CUE value. On the fast path (fastpath.go) the evaluated
// values are not kept: CUE only validates the mesh, the compiler reads its data from the syntax,
// and a node is a place in that data.
type node struct {
	v cue.Value // the full path

	idx  *posIndex // where each path is written
	path []pathSel // the node's path
	fast bool      // on the fast path, which has data instead of v
	data any       // the fast path: the data at the node, nil when nothing is written there
}

// namedNode is a field of a struct node.
type namedNode struct {
	name string
	node node
}

// pos is where the node is written in the user's files, or the zero Pos when it is not (a
// default, or nothing at all).
func (n node) pos() mesh.Pos {
	if p, ok := n.idx.pos(n.path); ok {
		return p
	}
	if n.fast {
		return mesh.Pos{}
	}
	return valuePos(n.v)
}

// at is the node at a path of regular fields and list indexes below n.
func (n node) at(sels ...cue.Selector) node {
	out := n
	out.path = n.path[:len(n.path):len(n.path)] // appending copies: n's path stays as it is
	if !n.fast {
		out.v = n.v.LookupPath(cue.MakePath(sels...))
	}
	for _, s := range sels {
		switch s.LabelType() {
		case cue.StringLabel:
			name := s.Unquoted()
			out.path = append(out.path, fieldSel(name))
			if n.fast {
				m, _ := out.data.(map[string]any)
				out.data = m[name]
			}
		case cue.IndexLabel:
			i := s.Index()
			out.path = append(out.path, pathSel{index: i})
			if n.fast {
				l, _ := out.data.([]any)
				out.data = nil
				if i < len(l) {
					out.data = l[i]
				}
			}
		default:
			out.path = append(out.path, pathSel{name: "\x00", index: -1}) // not in the index
			out.data = nil
		}
	}
	return out
}

// fields lists the regular fields of a struct node: in CUE's order on the full path, by name on
// the fast path. A node that does not exist has none.
func (n node) fields() ([]namedNode, error) {
	if !n.fast {
		if !n.v.Exists() {
			return nil, nil
		}
		it, err := n.v.Fields()
		if err != nil {
			return nil, err
		}
		var out []namedNode
		for it.Next() {
			name := it.Selector().Unquoted()
			out = append(out, namedNode{name: name, node: node{v: it.Value(), idx: n.idx, path: n.child(name)}})
		}
		return out, nil
	}
	m, _ := n.data.(map[string]any)
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]namedNode, len(names))
	for i, name := range names {
		out[i] = namedNode{name: name, node: node{idx: n.idx, path: n.child(name), fast: true, data: m[name]}}
	}
	return out, nil
}

// lookup is the position of the part of n at sels, or fallback when that part is not written.
func lookup(n node, fallback mesh.Pos, sels ...cue.Selector) mesh.Pos {
	if p := n.at(sels...).pos(); p.IsValid() {
		return p
	}
	return fallback
}

// child is the path of n's field name.
func (n node) child(name string) []pathSel {
	return append(n.path[:len(n.path):len(n.path)], fieldSel(name))
}
