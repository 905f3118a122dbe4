package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

func init() { register(newVersionCmd) }

// buildVersion is what mesh version reports, read from the binary's build information.
type buildVersion struct {
	Module  string `json:"module"`
	Version string `json:"version"` // the module version; "(devel)" for a build from a work tree
	// Commit, CommitTime and Modified come from the VCS stamp of go build (-buildvcs); a test
	// binary or a build outside a repository has none.
	Commit         string `json:"commit,omitempty"`
	CommitTime     string `json:"commitTime,omitempty"`
	Modified       bool   `json:"modified,omitempty"`
	Go             string `json:"go"`
	Platform       string `json:"platform"`
	CUE            string `json:"cue"`
	GoControlPlane string `json:"goControlPlane"`
	Raft           string `json:"raft"`
}

// Modules whose versions are reported.
const (
	modCUE            = "cuelang.org/go"
	modGoControlPlane = "github.com/envoyproxy/go-control-plane"
	modRaft           = "github.com/hashicorp/raft"
)

// readBuildVersion reads the running binary's build information; fields it lacks are "unknown"
// (a test binary lists no dependencies).
func readBuildVersion() buildVersion {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		info = nil
	}
	return versionFrom(info)
}

// versionFrom reads a build information (nil: none).
func versionFrom(info *debug.BuildInfo) buildVersion {
	v := buildVersion{Module: "github.com/meshgit/mesh", Version: "unknown", Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, CUE: "unknown", GoControlPlane: "unknown", Raft: "unknown"}
	if info == nil {
		return v
	}
	if info.Main.Version != "" {
		v.Version = info.Main.Version
	}
	if info.GoVersion != "" {
		v.Go = info.GoVersion
	}
	for _, d := range info.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		switch d.Path {
		case modCUE:
			v.CUE = d.Version
		case modGoControlPlane:
			v.GoControlPlane = d.Version
		case modRaft:
			v.Raft = d.Version
		}
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// text renders v for people: the first line is what `mesh --version` prints alone.
func (v buildVersion) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mesh %s\n", v.Version)
	commit := v.Commit
	switch {
	case commit == "":
		commit = "unknown (not stamped: build with go build from a Git work tree)"
	case v.Modified:
		commit += " (with uncommitted changes)"
	}
	fmt.Fprintf(&b, "commit:            %s\n", commit)
	if v.CommitTime != "" {
		fmt.Fprintf(&b, "commit time:       %s\n", v.CommitTime)
	}
	fmt.Fprintf(&b, "go:                %s %s\n", v.Go, v.Platform)
	fmt.Fprintf(&b, "cue:               %s\n", v.CUE)
	fmt.Fprintf(&b, "go-control-plane:  %s\n", v.GoControlPlane)
	fmt.Fprintf(&b, "raft:              %s\n", v.Raft)
	return b.String()
}

func newVersionCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version [--format text|json]",
		Short: "Print the version of mesh, its commit, and the Go, CUE and go-control-plane versions it was built with",
		Long: `Version reads the binary's build information: the module version, the Git commit it was built
from (stamped by go build in a work tree), the Go toolchain, and the versions of CUE,
go-control-plane and Raft compiled in. mesh --version prints the same.`,
		Example: `  mesh version
  mesh version --format json | jq -r .commit`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return printVersion(cmd.OutOrStdout(), format)
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

func printVersion(w io.Writer, format string) error {
	v := readBuildVersion()
	switch format {
	case "json":
		return printJSON(w, v)
	case "text":
		_, err := io.WriteString(w, v.text())
		return err
	}
	return usageError{fmt.Errorf("--format %q: want text or json", format)}
}
