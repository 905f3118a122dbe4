package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/proxy"
)

func init() { register(newProxyCmd) }

func newProxyCmd() *cobra.Command {
	var cfg proxy.Config
	var xdsTLS bool
	var trustDomain, logLevel, gateway string
	cmd := &cobra.Command{
		Use:   "proxy --service S --proxy-id ID --cert-dir DIR [--xds ADDR]",
		Short: "Run the built-in L4 proxy: a sidecar for hosts without Envoy",
		Example: `  mesh agent --service web --dir /etc/mesh/web --token-file web.token &
  mesh proxy --service web --proxy-id web-1 --cert-dir /etc/mesh/web`,
		Long: `Proxy runs the built-in L4 proxy (Consul's built-in proxy) as the sidecar of a service. It is an
xDS client of the mesh server at --xds and gets the configuration of an Envoy sidecar of the
service: the public listener terminates mTLS with the certificate files mesh agent keeps in
--cert-dir (cert.pem, key.pem, ca.pem), requires a client certificate from the trust bundle,
lets the network RBAC rules the intentions render decide on the caller's SPIFFE ID (they come
over ECDS, as Envoy takes them, so an intention change sends the rules alone; until they arrive a
caller waits, then is refused), and forwards to the application (local_app); each upstream gets a listener on 127.0.0.1:localPort that
connects to a healthy endpoint of the upstream over mTLS with the target's SNI, and accepts only
the SPIFFE IDs the target may present.

It is L4 only: it NACKs, with an error that names what it cannot do, a configuration it cannot
honour exactly (the HTTP connection manager of http, http2 and grpc services, listener filters,
RBAC rules on anything but the caller's identity) and keeps running the last one it accepted.
Use Envoy for L7 services. It stops on SIGINT or SIGTERM.

With --gateway mesh it is a mesh gateway (Consul's -gateway=mesh): register it in the catalog with
Kind "mesh-gateway" and TaggedAddresses lan and wan; it reads the SNI of every connection and
passes it on to the gateways of the datacenter the SNI names, or to the local target it names,
without a certificate of its own and without decrypting.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch gateway {
			case "":
			case "mesh":
				cfg.Kind = mesh.KindMeshGateway
			default:
				return usageError{fmt.Errorf("proxy: --gateway %q: only mesh", gateway)}
			}
			if cfg.Service == "" || cfg.ProxyID == "" || cfg.CertDir == "" && cfg.Kind == "" {
				return usageError{fmt.Errorf("proxy: --service, --proxy-id and --cert-dir are required")}
			}
			if !ca.ValidName(cfg.Service) {
				return usageError{fmt.Errorf("proxy: %q is not a service name", cfg.Service)}
			}
			if cfg.CertDir != "" {
				// The server checks the node's mesh.certDir metadata: an absolute clean path.
				abs, err := filepath.Abs(cfg.CertDir)
				if err != nil {
					return usageError{fmt.Errorf("proxy: --cert-dir: %w", err)}
				}
				cfg.CertDir = abs
			}
			if xdsTLS != (trustDomain != "") {
				return usageError{fmt.Errorf("proxy: --xds-tls and --trust-domain go together")}
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("proxy: --log-level: %v", err)}
			}
			if xdsTLS {
				cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(proxy.XDSCredentials(cfg.CertDir, trustDomain))}
			}
			cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			p, err := proxy.New(cfg)
			if err != nil {
				return usageError{err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			p.Open()
			<-ctx.Done()
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return p.Close(cctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Service, "service", "", "the service this proxy runs as (node.cluster)")
	f.StringVar(&cfg.ProxyID, "proxy-id", "", "the proxy instance id (node.id)")
	f.StringVar(&cfg.XDSAddr, "xds", defaultXDSAddr, "address of the mesh xDS server")
	f.StringVar(&cfg.CertDir, "cert-dir", "", "directory where mesh agent keeps this service's cert.pem, key.pem and ca.pem (its --dir)")
	f.StringVar(&cfg.InboundHost, "inbound-host", "", "bind the public listener on this host instead of the rendered 0.0.0.0 (e.g. 127.0.0.1)")
	f.BoolVar(&xdsTLS, "xds-tls", false, "connect to the xDS server with mTLS (mesh serve --xds-tls) with the files of --cert-dir; needs --trust-domain")
	f.StringVar(&trustDomain, "trust-domain", "", "the mesh's trust domain, to check the xDS server's identity with --xds-tls")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&gateway, "gateway", "", `"mesh": run as a mesh gateway of the service (catalog Kind mesh-gateway): route by SNI without decrypting; no --cert-dir`)
	return cmd
}
