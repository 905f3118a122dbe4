package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/internal/meshgen"
)

func init() { register(newGenCmd) }

func newGenCmd() *cobra.Command {
	var (
		opts meshgen.Options
		out  string
	)
	cmd := &cobra.Command{
		Use:   "gen --services N [--seed S] [--teams T] --out DIR",
		Short: "Generate a synthetic mesh repository of a realistic shape, for benchmarks and load tests",
		Long: `Gen writes a valid synthetic mesh of N services into DIR: mesh.cue and one file per team
(teams/<team>.cue, about 50 services per team unless --teams says otherwise), with mixed
protocols, endpoints in dc1 and dc2, about five intentions per service (exact, "*" and L7) and
canary routers, splitters and resolvers on about one service in ten. The same flags always
produce the same files. DIR must not exist or be empty.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError{fmt.Errorf("gen: --out DIR is required")}
			}
			if opts.Services < 1 {
				return usageError{fmt.Errorf("gen: --services must be at least 1")}
			}
			if opts.Teams < 0 {
				return usageError{fmt.Errorf("gen: --teams must not be negative")}
			}
			if entries, err := os.ReadDir(out); err == nil && len(entries) > 0 {
				return usageError{fmt.Errorf("gen: %s is not empty; generate into a new directory", out)}
			}
			files, stats, err := meshgen.Generate(opts)
			if err != nil {
				return err
			}
			if err := meshgen.WriteDir(out, files); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s\n", out, stats)
			return nil
		},
	}
	cmd.Flags().IntVar(&opts.Services, "services", 0, "number of services (required)")
	cmd.Flags().Uint64Var(&opts.Seed, "seed", 1, "seed of the generator: the same seed gives the same files")
	cmd.Flags().IntVar(&opts.Teams, "teams", 0, "number of teams, one file each (default: one per 50 services)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write the mesh into (required)")
	return cmd
}
