package cli

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/internal/atomicfile"
)

func init() { register(newCompileCmd) }

func newCompileCmd() *cobra.Command {
	var (
		src source
		out string
	)
	cmd := &cobra.Command{
		Use:   "compile [DIR]",
		Short: "Compile a mesh into its versioned snapshot (JSON)",
		Long: `Compile validates the mesh like validate does and prints the compiled snapshot as JSON: its
"version" (a hash of the content alone) and "commit" (with --repo) next to the compiled content
and the source positions of its elements.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src.dir = dirArg(args)
			snap, err := src.compile(cmd.Context(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			raw, err := snap.Encode()
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			if err := json.Indent(&buf, raw, "", "  "); err != nil {
				return err
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(buf.Bytes())
				return err
			}
			if err := atomicfile.Write(out, buf.Bytes(), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: version %s\n", out, snap.Version)
			return nil
		},
	}
	src.addFlags(cmd)
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the snapshot to this file instead of stdout")
	return cmd
}
