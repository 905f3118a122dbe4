package cli

import (
	"context"
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
	var co catalogAgentOptions
	cmd := &cobra.Command{
		Use:   "agent [--service S --dir DIR] --token-file F [--http ADDR] [--listen ADDR] [--config-dir DIR] [--data DIR]",
		Short: "The node agent: registers instances and runs their health checks; keeps a service's certificate files issued and renewed",
		Long: `Agent is the node's agent, like a Consul client agent. It serves Consul's agent endpoints on
--listen (default 127.0.0.1:8501: PUT /v1/agent/service/register, /v1/agent/check/...,
GET /v1/agent/services and /v1/agent/checks; other /v1/ requests go to the server), registers the
service definitions of --config-dir (*.json, Consul's {"service": {...}} format) at start, runs
the checks of the instances registered on it (HTTP, TCP, gRPC health, TTL), sends every status
change to the servers and syncs all of it every --sync-interval. The servers mark the node's
instances critical when it stops syncing for 3 intervals. An instance registered without a check
gets its service's healthCheck from Git. Instances registered through the agent's API are kept
in --data (one owner-only file each, written atomically, removed on deregistration) and
registered again when the agent restarts, even after a crash; those of --config-dir are
registered from there.

With --service and --dir it makes the service's private key in DIR (key.pem, mode 0600; it
never leaves the machine), sends a certificate request to the mesh server with the token of
--token-file, and writes cert.pem (the leaf and its chain) and ca.pem (the trust bundle)
atomically, for gRPC's file_watcher certificate provider (the "mesh" instance of mesh grpc
bootstrap). It renews each leaf at a random point between 60% and 90% of its life, retries
transient errors with backoff, and stops on SIGINT or SIGTERM, or with an error if the server
refuses the token. With --once it writes the files once and exits (an init container). With
--service and --dir the agent endpoints are served only when --listen or --config-dir is given,
so that several certificate agents can share a host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (service == "") != (dir == "") || once && service == "" {
				return usageError{errors.New("agent: --service and --dir go together (and --once needs them)")}
			}
			if service != "" && !ca.ValidName(service) {
				return usageError{fmt.Errorf("agent: %q is not a service name", service)}
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("agent: --log-level: %v", err)}
			}
			explain := apiFlags{url: serverURL(addr, caFile)}
			tok, err := agentToken(tokenFile, &explain)
			if err != nil {
				return err
			}
			hc, err := apiHTTPClient(caFile)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			co.data = co.dataDir(dir)
			if service == "" {
				return explain.explain(runCatalogAgent(ctx, co, serverURL(addr, caFile), hc, tok, log, nil))
			}
			a := &ca.Agent{
				Client:  &ca.Client{Addr: serverURL(addr, caFile), Token: tok, HTTP: hc},
				Service: service,
				Dir:     dir,
				Log:     log,
			}
			if envoy {
				// Envoy's own xDS connection (mesh serve --xds-tls) reads the agent's files
				// through file-based SDS: write those descriptions too.
				var err error
				if a.ExtraFiles, err = xds.EnvoySDSFiles(dir); err != nil {
					return fmt.Errorf("agent: %w", err)
				}
			}
			if once {
				l, err := a.Issue(ctx)
				if err != nil {
					return explain.explain(fmt.Errorf("agent: %w", err))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s, valid until %s\n", l.SPIFFEID, l.NotAfter.Format("2006-01-02T15:04:05Z07:00"))
				return nil
			}
			renew := func(ctx context.Context) error {
				if err := a.Run(ctx); err != nil {
					return fmt.Errorf("agent: %w", err)
				}
				return nil
			}
			if !cmd.Flags().Changed("listen") && co.configDir == "" {
				// Certificates only, as before the catalog: several such agents share a host.
				return explain.explain(renew(ctx))
			}
			return explain.explain(runCatalogAgent(ctx, co, serverURL(addr, caFile), hc, tok, log, renew))
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
	co.addFlags(f)
	f.BoolVar(&envoy, "envoy", false, "the agent runs beside an Envoy sidecar: also write the SDS files Envoy's xDS connection reads (mesh envoy bootstrap --xds-tls)")
	return cmd
}

// agentToken finds the agent's token: --token-file, $MESH_HTTP_TOKEN (or the older $MESH_TOKEN),
// else the file of $MESH_HTTP_TOKEN_FILE; explain records where it came from, to say so on a 401.
func agentToken(tokenFile string, explain *apiFlags) (string, error) {
	explain.tokenFrom = "$" + envToken
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
			return "", err
		}
	}
	if tok == "" {
		return "", usageError{errors.New("agent: --token-file (or $MESH_HTTP_TOKEN) is required")}
	}
	return tok, nil
}
