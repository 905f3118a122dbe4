package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestHelpOfEveryCommand walks the command tree: every command has a Short and a Long or an
// Example, no flag description holds a backquote (pflag takes a backquoted word as the flag's
// placeholder: `--cert-dir mesh agent --service S` instead of `--cert-dir string`), and
// `mesh ... --help` exits 0 with the command's own text.
func TestHelpOfEveryCommand(t *testing.T) {
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			walk(sub)
		}
		n++
		path := c.CommandPath()
		if c.Short == "" {
			t.Errorf("%s: no Short", path)
		}
		if c.Long == "" && c.Example == "" {
			t.Errorf("%s: neither Long nor Example", path)
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "`") {
				name, _ := pflag.UnquoteUsage(f)
				t.Errorf("%s --%s: a backquote in its description makes %q its placeholder", path, f.Name, name)
			}
		})
		args := append(strings.Fields(path)[1:], "--help")
		var out, errb bytes.Buffer
		if code := Run(args, &out, &errb); code != 0 || errb.Len() != 0 {
			t.Errorf("mesh %s: exit %d, stderr %q", strings.Join(args, " "), code, errb.String())
		}
		want := c.Long
		if want == "" {
			want = c.Short
		}
		if !strings.Contains(out.String(), strings.TrimSpace(want)) || !strings.Contains(out.String(), "Usage:") {
			t.Errorf("mesh %s: the help does not show the command's text:\n%s", strings.Join(args, " "), out.String())
		}
	}
	walk(NewRoot(&bytes.Buffer{}, &bytes.Buffer{}))
	if n < 25 {
		t.Fatalf("walked %d commands; the tree is not what this test thinks", n)
	}
}
