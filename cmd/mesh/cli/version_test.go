package cli

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionFrom reads the build information of a binary built from a Git work tree: the
// module version, the VCS stamp, and the versions of CUE, go-control-plane and Raft (a
// replacement's version when the module is replaced).
func TestVersionFrom(t *testing.T) {
	info := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/meshgit/mesh", Version: "v0.3.0"},
		Deps: []*debug.Module{
			{Path: "cuelang.org/go", Version: "v0.17.1"},
			{Path: "github.com/envoyproxy/go-control-plane", Version: "v0.14.0"},
			{Path: "github.com/envoyproxy/go-control-plane/envoy", Version: "v1.40.0"},
			{Path: "github.com/hashicorp/raft", Version: "v1.7.0", Replace: &debug.Module{Path: "github.com/hashicorp/raft", Version: "v1.8.0"}},
		},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "3b5a1d2c0ffee"},
			{Key: "vcs.time", Value: "2026-12-07T00:00:00Z"}, {Key: "vcs.modified", Value: "true"},
		},
	}
	v := versionFrom(info)
	if v.Version != "v0.3.0" || v.Go != "go1.26.8" || v.CUE != "v0.17.1" || v.GoControlPlane != "v0.14.0" || v.Raft != "v1.8.0" ||
		v.Commit != "3b5a1d2c0ffee" || v.CommitTime != "2026-12-07T00:00:00Z" || !v.Modified {
		t.Fatalf("versionFrom: %+v", v)
	}
	text := v.text()
	for _, want := range []string{"mesh v0.3.0\n", "commit:            3b5a1d2c0ffee (with uncommitted changes)\n", "cue:               v0.17.1\n",
		"go-control-plane:  v0.14.0\n", "raft:              v1.8.0\n", "commit time:       2026-12-07T00:00:00Z\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	if v := versionFrom(nil); v.Version != "unknown" || v.CUE != "unknown" || v.Go == "" {
		t.Errorf("no build information: %+v", v)
	}
}
