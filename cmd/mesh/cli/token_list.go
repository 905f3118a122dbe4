package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/ca"
)

func newTokenListCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:   "list [--http ADDR] [--token-file ADMIN_TOKEN] [--format text|json]",
		Short: "List the tokens the CA knows: ID, kind, service and when each was created (never the token)",
		Long: `List prints every token made with mesh token create: its ID (what mesh token revoke takes), its
kind (service or operator), the service a service token is for, and when it was created. The
server keeps only a hash of each token, and this never prints that either. The server's own
token (serve --token-file) is not listed. Needs an operator token.`,
		Example: `  mesh token list --token-file mesh-data/token
  mesh token list --format json | jq -r '.[] | select(.service == "web") | .id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var list []ca.TokenInfo
			if err := a.caCall(cmd, true, func(ctx context.Context, c *ca.Client) (err error) {
				list, err = c.Tokens(ctx)
				return err
			}); err != nil {
				return fmt.Errorf("token list: %w", err)
			}
			out := cmd.OutOrStdout()
			if a.format == "json" {
				if list == nil {
					list = []ca.TokenInfo{}
				}
				return printJSON(out, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(out, "no tokens (mesh token create makes one)")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tSERVICE\tCREATED")
			for _, t := range list {
				service := t.Service
				if service == "" {
					service = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Scope, service, t.Created.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	a.add(cmd, true, true)
	return cmd
}
