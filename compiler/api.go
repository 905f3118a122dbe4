// Package compiler turns a mesh repository written in CUE into a mesh.Snapshot: it loads every
// .cue file of a mesh directory (from the working tree, or from a Git commit without a checkout),
// unifies them with the embedded schema, runs the semantic checks CUE cannot express, and builds
// the IR. Every problem is reported, each with its file:line:col, never just the first.
package compiler

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	mesh "github.com/meshgit/mesh"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrInvalid wraps every error that means the configuration is wrong (exit status 1),
	// as opposed to an internal or usage error.
	ErrInvalid = errors.New("invalid mesh configuration")
	// ErrRef means a Git ref or commit could not be resolved.
	ErrRef = errors.New("git ref not found")
	// ErrInternal means the compiler itself failed (a bug), not the configuration.
	ErrInternal = errors.New("compiler failure")
	// ErrDatacenter is a datacenter the mesh does not list (ForDatacenter).
	ErrDatacenter = errors.New("unknown datacenter")
)

// Error is one problem with the configuration, at a position.
type Error struct {
	Pos mesh.Pos
	Msg string
}

func (e *Error) Error() string {
	if !e.Pos.IsValid() {
		return e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

// Errors is every problem found in one compilation, sorted by position. It is an ErrInvalid.
type Errors []*Error

func (l Errors) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true for a list of configuration errors.
func (l Errors) Is(target error) bool { return target == ErrInvalid }

func (l Errors) sort() {
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i].Pos, l[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Col != b.Col {
			return a.Col < b.Col
		}
		return l[i].Msg < l[j].Msg
	})
}

// errorList collects errors during a compilation.
type errorList struct {
	list Errors
	// partial is set when some files could not be loaded (a syntax error, a wrong package): the
	// others are still checked, without the errors that the missing files might resolve.
	partial bool
}

func (l *errorList) add(pos mesh.Pos, format string, args ...any) {
	l.list = append(l.list, &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

func (l *errorList) err() error {
	if len(l.list) == 0 {
		return nil
	}
	l.list.sort()
	// Drop exact duplicates: CUE may report one conflict through several paths.
	out := l.list[:0]
	for i, e := range l.list {
		if i > 0 && e.Pos == l.list[i-1].Pos && e.Msg == l.list[i-1].Msg {
			continue
		}
		out = append(out, e)
	}
	return out
}
