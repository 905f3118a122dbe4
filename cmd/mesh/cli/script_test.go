package cli_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/meshgit/mesh/cmd/mesh/cli"
)

// TestMain lets the test binary act as the mesh command inside scripts.
func TestMain(m *testing.M) {
	// Servers and agents started by these tests (in process or as processes) health-check only
	// loopback addresses: the meshes' Git endpoints are often 10.x, and tests stay on loopback.
	os.Setenv("MESH_CHECK_ALLOW", "127.0.0.0/8,::1/128")
	testscript.Main(m, map[string]func(){
		"mesh": func() { os.Exit(cli.Main()) },
	})
}

// TestScripts runs the scripts in cmd/mesh/testdata/script: each carries its mesh files and the
// expected output of the mesh command, errors and their positions included. Every script's
// work directory also holds a copy of repo-example. MESH_UPDATE=1 rewrites the expected output
// that `cmp` compares with.
//
// Besides testscript's own commands, scripts may use
//
//	status CODE PROGRAM [ARGS...]
//
// which runs PROGRAM like exec and fails unless it exits with status CODE.
func TestScripts(t *testing.T) {
	example, err := filepath.Abs(filepath.Join("..", "..", "..", "repo-example"))
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join("..", "testdata", "script"),
		RequireExplicitExec: true,
		UpdateScripts:       os.Getenv("MESH_UPDATE") != "",
		Cmds:                map[string]func(ts *testscript.TestScript, neg bool, args []string){"status": cmdStatus},
		Setup: func(env *testscript.Env) error {
			return os.CopyFS(filepath.Join(env.WorkDir, "repo-example"), os.DirFS(example))
		},
	})
}

func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("usage: status CODE PROGRAM [ARGS...] (no !)")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: status CODE PROGRAM [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status: bad exit code %q", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("%s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}
