package mesh

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Pos is a position in the mesh source: a file relative to the mesh directory, and a 1-based line
// and column. The zero Pos means "unknown".
type Pos struct {
	File string
	Line int
	Col  int
}

// IsValid reports whether p names a place in a file.
func (p Pos) IsValid() bool { return p.File != "" }

// String formats p as file:line:col, the form every message of this project uses.
func (p Pos) String() string {
	if !p.IsValid() {
		return "-"
	}
	return p.File + ":" + strconv.Itoa(p.Line) + ":" + strconv.Itoa(p.Col)
}

// MarshalJSON encodes p as its "file:line:col" string.
func (p Pos) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// UnmarshalJSON decodes the "file:line:col" form. The file may itself contain colons.
func (p *Pos) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	q, err := ParsePos(s)
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ParsePos parses "file:line:col"; "-" and "" give the zero Pos.
func ParsePos(s string) (Pos, error) {
	if s == "" || s == "-" {
		return Pos{}, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Pos{}, fmt.Errorf("position %q: want file:line:col", s)
	}
	j := strings.LastIndexByte(s[:i], ':')
	if j < 0 {
		return Pos{}, fmt.Errorf("position %q: want file:line:col", s)
	}
	if j == 0 {
		return Pos{}, fmt.Errorf("position %q: no file name", s)
	}
	line, err1 := strconv.Atoi(s[j+1 : i])
	col, err2 := strconv.Atoi(s[i+1:])
	if err1 != nil || err2 != nil {
		return Pos{}, fmt.Errorf("position %q: want file:line:col", s)
	}
	return Pos{File: s[:j], Line: line, Col: col}, nil
}
