package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// The whole output of `mesh token create ... > file` is a valid token file: the token is its
// last non-empty line.
func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ content, want string }{
		{"mesh_abc\n", "mesh_abc"},
		{"created token 1 for service web\nit is shown this once:\nmesh_xyz\n\n", "mesh_xyz"},
		{"  mesh_pad  \r\n", "mesh_pad"},
	} {
		p := filepath.Join(dir, "tok")
		os.WriteFile(p, []byte(c.content), 0o600)
		got, err := readToken(p)
		if err != nil || got != c.want {
			t.Errorf("readToken(%q) = %q, %v; want %q", c.content, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "\n\n", "two words\n"} {
		p := filepath.Join(dir, "bad")
		os.WriteFile(p, []byte(bad), 0o600)
		if got, err := readToken(p); err == nil {
			t.Errorf("readToken(%q) = %q, want an error", bad, got)
		}
	}
}
