// Package cli implements the mesh command line: one file per subcommand, each registering itself
// with register. Main runs the command and maps errors to the exit statuses of DESIGN.md: 0 ok,
// 1 invalid configuration, failed policy or denied check, 2 usage or internal error.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/compiler"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitInvalid = 1
	ExitError   = 2
)

// errExit carries an exit status without a message of its own (the command has printed it).
type errExit struct{ code int }

func (e errExit) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// exitWith returns an error that makes Main exit with code without printing anything more.
func exitWith(code int) error { return errExit{code} }

var commands []func() *cobra.Command

// register adds a top-level subcommand; each command file calls it from init.
func register(f func() *cobra.Command) { commands = append(commands, f) }

// NewRoot builds the command tree with the given standard streams.
func NewRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "mesh",
		Short:         "A GitOps control plane for a service mesh",
		Long:          "mesh validates and compiles a service mesh kept in Git as CUE, reviews changes to it,\nand serves it over xDS to Envoy sidecars and proxyless gRPC clients.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	// --version prints what mesh version prints (cobra adds the flag when Version is set).
	bv := readBuildVersion()
	root.Version = bv.Version
	root.SetVersionTemplate(bv.text())
	for _, f := range commands {
		root.AddCommand(f())
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{err}
	})
	return root
}

type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Main runs the mesh command with os.Args and returns the process exit status.
func Main() int {
	if len(os.Args) > 1 && oneShot[os.Args[1]] && os.Getenv("GOGC") == "" {
		// A compilation allocates about ten times the memory it keeps, and a fresh process's
		// heap starts small, so the collector runs often: collecting at 200% growth instead
		// of 100% takes about a tenth off a large review for little more peak memory
		// (README, Large meshes). Servers keep the default; GOGC overrides both.
		debug.SetGCPercent(200)
	}
	return Run(os.Args[1:], os.Stdout, os.Stderr)
}

// oneShot are the commands that compile once and exit.
var oneShot = map[string]bool{"validate": true, "compile": true, "review": true, "intention": true, "codeowners": true}

// Run runs the mesh command with args and returns its exit status.
func Run(args []string, stdout, stderr io.Writer) int {
	root := NewRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	var ex errExit
	if errors.As(err, &ex) {
		return ex.code
	}
	fmt.Fprintln(stderr, err.Error())
	if errors.Is(err, compiler.ErrInvalid) {
		return ExitInvalid
	}
	return ExitError
}
