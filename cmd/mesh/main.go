// Command mesh validates, compiles, reviews and serves a service mesh kept in Git as CUE.
package main

import (
	"os"

	"github.com/meshgit/mesh/cmd/mesh/cli"
)

func main() { os.Exit(cli.Main()) }
