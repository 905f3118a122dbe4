package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/ca"
)

func init() {
	register(newCACmd)
	register(newTokenCmd)
}

// caClient returns a client of the CA endpoints with the flags' address and, for writes, token.
func (a *apiFlags) caClient(write bool) (*ca.Client, error) {
	rc, err := a.client(write)
	if err != nil {
		return nil, err
	}
	if write && rc.Token == "" {
		return nil, usageError{fmt.Errorf("no token: give --token-file, or set $%s or $%s", envToken, envTokenFile)}
	}
	return &ca.Client{Addr: rc.Addr, Token: rc.Token, HTTP: rc.HTTP}, nil
}

// caCall makes one request to the CA API (see withClient); its errors say what failed already.
func (a *apiFlags) caCall(cmd *cobra.Command, write bool, f func(context.Context, *ca.Client) error) error {
	return a.explain(withClient(cmd, func() (*ca.Client, error) { return a.caClient(write) }, "", f))
}

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Inspect and rotate the mesh's certificate authority",
		Example: `  mesh ca roots > bundle.pem
  mesh ca rotate --token-file mesh-data/token`,
	}
	cmd.AddCommand(newCARootsCmd(), newCARotateCmd())
	return cmd
}

func newCARootsCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:   "roots [--http ADDR] [--format text|json]",
		Short: "Print the trust bundle: every root not yet retired (PEM, or JSON with their state)",
		Example: `  mesh ca roots > bundle.pem
  mesh ca roots --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var b *ca.Bundle
			if err := a.caCall(cmd, false, func(ctx context.Context, c *ca.Client) (err error) {
				b, err = c.Roots(ctx)
				return err
			}); err != nil {
				return err
			}
			if a.format == "json" {
				return printJSON(cmd.OutOrStdout(), b)
			}
			for _, r := range b.Roots {
				state := "active"
				if !r.Active {
					state = "retiring after " + r.RetireAfter.Format("2006-01-02T15:04:05Z07:00")
				}
				fmt.Fprintf(cmd.OutOrStdout(), "# root %s (%s), trust domain %s, expires %s\n%s", r.ID, state, b.TrustDomain,
					r.NotAfter.Format("2006-01-02"), r.RootPEM)
			}
			return nil
		},
	}
	a.add(cmd, false, true)
	return cmd
}

func newCARotateCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:   "rotate [--http ADDR] [--token-file FILE]",
		Short: "Make a new root, cross-signed by the current one; the old one retires once its leaves expire",
		Long: `Rotate creates a new root and makes it sign every new leaf. The new root is cross-signed by the
current one, so peers that trust only the current root keep accepting new leaves; both stay in
the trust bundle until every leaf the current root signed has expired (leaf TTL plus a grace),
and then the old root is retired. No handshake fails on the way. Needs an operator token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *ca.RotateResponse
			if err := a.caCall(cmd, true, func(ctx context.Context, c *ca.Client) (err error) {
				r, err = c.Rotate(ctx)
				return err
			}); err != nil {
				return err
			}
			if a.format == "json" {
				return printJSON(cmd.OutOrStdout(), r)
			}
			for _, root := range r.Bundle.Roots {
				if root.Active {
					fmt.Fprintf(cmd.OutOrStdout(), "active root: %s\n", root.ID)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "retiring root: %s (after %s)\n", root.ID, root.RetireAfter.Format("2006-01-02T15:04:05Z07:00"))
				}
			}
			return nil
		},
	}
	a.add(cmd, true, true)
	return cmd
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke the tokens that authorize certificate requests and CA operations",
		Example: `  mesh token create --service web --token-file mesh-data/token > web.token
  mesh token list --token-file mesh-data/token
  mesh token revoke 0123456789abcdef --token-file mesh-data/token`,
	}
	cmd.AddCommand(newTokenCreateCmd(), newTokenListCmd(), newTokenRevokeCmd())
	return cmd
}

func newTokenCreateCmd() *cobra.Command {
	var a apiFlags
	var service string
	var operator bool
	cmd := &cobra.Command{
		Use:   "create (--service S | --operator) [--http ADDR] [--token-file ADMIN_TOKEN]",
		Short: "Create a token for one service's certificates (or an operator token); only the token goes to stdout",
		Long: `Create makes a token and prints it, alone, on stdout, so that "> FILE" saves a token file; what
was made (its ID, kind and service) goes to stderr. The server keeps only its SHA-256 hash: the
token cannot be shown again. A service token authorizes certificate requests for that service
only. An operator token (--operator) may do every write the server token may but join a
server: pin and unpin, reconcile, remove a server, create, list and revoke tokens, rotate the CA
and request any service's certificate. Joining takes the server's own --token-file, because a
server that joins receives the CA's key. Needs an operator token or the server's --token-file.`,
		Example: `  mesh token create --service web --token-file mesh-data/token > web.token
  mesh token create --operator --token-file mesh-data/token > ops.token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (service == "") == !operator {
				return usageError{errors.New("token create: give exactly one of --service and --operator")}
			}
			req := ca.TokenRequest{Service: service, Scope: ca.ScopeService}
			if operator {
				req.Scope = ca.ScopeOperator
			}
			var r *ca.TokenResponse
			if err := a.caCall(cmd, true, func(ctx context.Context, c *ca.Client) (err error) {
				r, err = c.CreateToken(ctx, req)
				return err
			}); err != nil {
				return err
			}
			// Only the token on stdout; the prose on stderr.
			errw := cmd.ErrOrStderr()
			if r.Scope == ca.ScopeOperator {
				fmt.Fprintf(errw, "created operator token %s", r.ID)
			} else {
				fmt.Fprintf(errw, "created token %s for service %s", r.ID, r.Service)
			}
			fmt.Fprintln(errw, "; it is shown this once (the server keeps only its hash)")
			_, err := fmt.Fprintln(cmd.OutOrStdout(), r.Token)
			return err
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "the service whose certificates the token may request")
	cmd.Flags().BoolVar(&operator, "operator", false, "create an operator token instead")
	a.add(cmd, true, false)
	return cmd
}

func newTokenRevokeCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:   "revoke ID [--http ADDR] [--token-file ADMIN_TOKEN]",
		Short: "Revoke a token by the ID token create printed",
		Example: `  mesh token list --token-file mesh-data/token
  mesh token revoke 0123456789abcdef --token-file mesh-data/token`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.caCall(cmd, true, func(ctx context.Context, c *ca.Client) error {
				return c.RevokeToken(ctx, args[0])
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s\n", args[0])
			return nil
		},
	}
	a.add(cmd, true, false)
	return cmd
}
