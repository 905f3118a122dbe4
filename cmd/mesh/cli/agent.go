package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/reconciler"
	"github.com/meshgit/mesh/xds"
)

func init() { register(newAgentCmd) }

func newAgentCmd() *cobra.Command {
	var service, dir, addr, caFile, tokenFile, logLevel string
	var once, envoy bool
	cmd := &cobra.Command{
		Use:   "agent --service S --dir DIR --token-file F [--http ADDR]",
		Short: "Keep a proxyless gRPC service's certificate files (cert.pem, key.pem, ca.pem) issued and renewed",
		Long: `Agent makes the service's private key in DIR (key.pem, mode 0600; it never leaves the machine),
sends a certificate request to the mesh server with the service token of --token-file, and writes
cert.pem (the leaf and its chain) and ca.pem (the trust bundle) atomically, for gRPC's
file_watcher certificate provider (the "mesh" instance of mesh grpc bootstrap). It renews each
leaf at a random point between 60% and 90% of its life, retries transient errors with backoff,
and stops on SIGINT or SIGTERM, or with an error if the server refuses the token.
With --once it writes the files once and exits (an init container).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if service == "" || dir == "" {
				return usageError{errors.New("agent: --service and --dir are required")}
			}
			if !ca.ValidName(service) {
				return usageError{fmt.Errorf("agent: %q is not a service name", service)}
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("agent: --log-level: %v", err)}
			}
			// explain says where the token came from on a 401, and what to do when no server answers.
			explain := apiFlags{url: serverURL(addr, caFile), tokenFrom: "$" + envToken}
			tok := os.Getenv(envToken)
			if tok == "" {
				tok, explain.tokenFrom = os.Getenv(envTokenOld), "$"+envTokenOld
			}
			if tokenFile == "" && tok == "" {
				tokenFile = os.Getenv(envTokenFile)
				explain.tokenFrom = "$" + envTokenFile + " (" + tokenFile + ")"
			} else if tokenFile != "" {
				explain.tokenFrom = "--token-file " + tokenFile
			}
			if tokenFile != "" {
				var err error
				if tok, err = readToken(tokenFile); err != nil {
					return err
				}
			}
			if tok == "" {
				return usageError{errors.New("agent: --token-file (or $MESH_HTTP_TOKEN) is required")}
			}
			hc, err := apiHTTPClient(caFile)
			if err != nil {
				return err
			}
			a := &ca.Agent{
				Client:  &ca.Client{Addr: serverURL(addr, caFile), Token: tok, HTTP: hc},
				Service: service,
				Dir:     dir,
				Log:     slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})),
			}
			if envoy {
				// Envoy's own xDS connection (mesh serve --xds-tls) reads the agent's files
				// through file-based SDS: write those descriptions too.
				var err error
				if a.ExtraFiles, err = xds.EnvoySDSFiles(dir); err != nil {
					return fmt.Errorf("agent: %w", err)
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if once {
				l, err := a.Issue(ctx)
				if err != nil {
					return explain.explain(fmt.Errorf("agent: %w", err))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s, valid until %s\n", l.SPIFFEID, l.NotAfter.Format("2006-01-02T15:04:05Z07:00"))
				return nil
			}
			if err := a.Run(ctx); err != nil {
				return explain.explain(fmt.Errorf("agent: %w", err))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&service, "service", "", "the service whose identity to obtain (required)")
	f.StringVar(&dir, "dir", "", "directory of cert.pem, key.pem and ca.pem (required; created 0700)")
	f.StringVar(&addr, "http", envOr(envHTTPAddr, reconciler.DefaultHTTPAddr), "HTTP address or URL of a mesh server ($MESH_HTTP_ADDR)")
	f.StringVar(&caFile, "ca-file", os.Getenv(envCACert), "CA certificate to verify the server with; implies https ($MESH_CACERT)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the service's token (default: the token in $MESH_HTTP_TOKEN, else the file $MESH_HTTP_TOKEN_FILE)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.BoolVar(&once, "once", false, "issue once, write the files and exit")
	f.BoolVar(&envoy, "envoy", false, "the agent runs beside an Envoy sidecar: also write the SDS files Envoy's xDS connection reads (mesh envoy bootstrap --xds-tls)")
	return cmd
}
