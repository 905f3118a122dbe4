// Command demo runs the whole path of mesh on this machine, printing every step (`make demo`):
// a mesh server following a Git repository made in a temporary directory from a copy of
// repo-example, two proxyless gRPC services (payments, a server, and web, its client), each with
// its `mesh agent` keeping its certificates and a bootstrap from `mesh grpc bootstrap`; a call
// the intentions allow and one they deny, then a commit that changes the intention, and the
// denied call going through. Every part is a real process talking over loopback; all of them
// are stopped and the temporary directory removed at the end, whatever happens, and every wait
// is bounded.
//
// The program is its own helper: run with MESH_DEMO_ROLE=mesh it is the mesh command (cli.Main),
// with "payments" the gRPC server, with "call" a gRPC client making one call. So one build gives
// the demo everything it runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshgit/mesh/cmd/mesh/cli"
)

// roleEnv names the helper role a child process of the demo plays.
const roleEnv = "MESH_DEMO_ROLE"

func main() {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role, os.Args[1:]))
	}
	var opts options
	flag.StringVar(&opts.example, "example", "", "the repo-example directory to copy (default: found from the working directory)")
	flag.BoolVar(&opts.keep, "keep", false, "keep the temporary directory (logs, repository, certificates)")
	flag.DurationVar(&opts.timeout, "timeout", 2*time.Minute, "give up after this long")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, opts); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

// runRole runs one helper role and returns the process's exit status.
func runRole(role string, args []string) int {
	switch role {
	case "mesh":
		os.Args = append([]string{"mesh"}, args...)
		return cli.Main()
	case "payments":
		return servePayments(args)
	case "call":
		return callOnce(args)
	}
	fmt.Fprintf(os.Stderr, "unknown %s %q\n", roleEnv, role)
	return 2
}
