package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/catalog"
)

func init() { register(newServicesCmd) }

func newServicesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "services register FILE | deregister ID",
		Short: "Register or deregister service instances on a node, like consul services register",
		Long: `Services sends Consul service definitions to the agent endpoints of --http: a mesh server, or a
mesh agent's --listen address (then the instance belongs to that agent's node, which runs its
checks). FILE holds {"service": {...}} or {"services": [...]}, Consul's JSON format.`,
	}
	cmd.AddCommand(newServicesRegisterCmd(), newServicesDeregisterCmd())
	return cmd
}

func newServicesRegisterCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:     "register FILE",
		Short:   "Register the service instances defined in FILE",
		Example: "  mesh services register web.json\n  mesh services register web.json --http 127.0.0.1:8501",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return usageError{err}
			}
			regs, err := catalog.SplitDefinitions(b)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", args[0], err)
				return exitWith(ExitInvalid)
			}
			return a.catalogCall(cmd, true, "services register", func(ctx context.Context, c *catalog.Client) error {
				for i, reg := range regs {
					if err := c.Register(ctx, reg); err != nil {
						return fmt.Errorf("%s: service %d: %w", args[0], i+1, err)
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "registered %d service instance(s) from %s\n", len(regs), args[0])
				return nil
			})
		},
	}
	a.add(cmd, true, false)
	return cmd
}

func newServicesDeregisterCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:     "deregister ID",
		Short:   "Deregister the service instance ID of the node at --http",
		Example: "  mesh services deregister web-1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.catalogCall(cmd, true, "services deregister", func(ctx context.Context, c *catalog.Client) error {
				if err := c.Deregister(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deregistered %s\n", args[0])
				return nil
			})
		},
	}
	a.add(cmd, true, false)
	return cmd
}
