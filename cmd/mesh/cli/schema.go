package cli

import (
	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/schema"
)

func init() { register(newSchemaCmd) }

func newSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the CUE schema of the repository format, for editors and cue vet",
		Long: `Schema prints the CUE definitions every mesh file is unified with. To check a repository with
the cue command:  mesh schema > /tmp/mesh-schema.cue && cue vet -c $(find . -name '*.cue') /tmp/mesh-schema.cue`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, f := range schema.Files() {
				if _, err := cmd.OutOrStdout().Write(f.Data); err != nil {
					return err
				}
			}
			return nil
		},
	}
}
