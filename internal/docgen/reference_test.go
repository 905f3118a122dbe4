package docgen

import (
	"errors"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

// TestReference renders the reference and checks that every field of the schema is in it, with
// its prose and its constraint.
func TestReference(t *testing.T) {
	out, err := Reference()
	if err != nil {
		t.Fatal(err)
	}
	doc := string(out)
	defs, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	text := prose()
	n := 0
	for _, d := range defs {
		if !strings.Contains(doc, "`"+d.Name) {
			t.Errorf("%s is not in the reference", d.Name)
		}
		for _, f := range d.Fields {
			n++
			if !strings.Contains(doc, "**`"+f.Label+"`** `"+f.Type+"`") {
				t.Errorf("field %s (%s) is not in the reference", f.Path, f.Type)
			}
			if p := text[f.Path]; !strings.Contains(doc, strings.Split(p, "\n")[0]) {
				t.Errorf("the prose of %s is not in the reference", f.Path)
			}
		}
	}
	if n < 50 {
		t.Errorf("only %d fields: the schema walk lost some", n)
	}
	for _, want := range []string{"**`protocol`** `*\"tcp\" | \"http\" | \"http2\" | \"grpc\"` (default `\"tcp\"`)", "**`port`** `#Port` (required)", "| 9 | `intentions[D][S]` |"} {
		if !strings.Contains(doc, want) {
			t.Errorf("reference lacks %q", want)
		}
	}
}

// TestReferenceDrift: a schema field without prose, or prose without a field, fails the
// generation with an error naming it.
func TestReferenceDrift(t *testing.T) {
	saved := proseArchive
	t.Cleanup(func() { proseArchive = saved })
	ar := txtar.Parse(saved)

	drop := *ar
	drop.Files = nil
	for _, f := range ar.Files {
		if f.Name != "#Service.port" {
			drop.Files = append(drop.Files, f)
		}
	}
	proseArchive = txtar.Format(&drop)
	if _, err := Reference(); !errors.Is(err, ErrUndocumented) || !strings.Contains(err.Error(), "#Service.port") {
		t.Errorf("without the prose of #Service.port: %v, want ErrUndocumented naming it", err)
	}

	extra := *ar
	extra.Files = append(append([]txtar.File(nil), ar.Files...), txtar.File{Name: "#Service.colour", Data: []byte("gone\n")})
	proseArchive = txtar.Format(&extra)
	if _, err := Reference(); !errors.Is(err, ErrStaleProse) || !strings.Contains(err.Error(), "#Service.colour") {
		t.Errorf("with prose for #Service.colour: %v, want ErrStaleProse naming it", err)
	}
}
