package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshgit/mesh/xds"
)

func init() {
	register(newEnvoyCmd)
	register(newGRPCCmd)
}

const defaultXDSAddr = "127.0.0.1:8502"

func newEnvoyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "envoy", Short: "Envoy sidecar helpers",
		Example: `  mesh envoy bootstrap --service web --proxy-id web-1 --cert-dir /etc/mesh/web > envoy.json`}
	var opts xds.EnvoyBootstrapOptions
	boot := &cobra.Command{
		Use:   "bootstrap --service S --proxy-id ID [--xds ADDR]",
		Short: "Print the bootstrap of an Envoy sidecar (JSON)",
		Example: `  mesh agent --service web --dir /etc/mesh/web --token-file web.token --envoy &
  mesh envoy bootstrap --service web --proxy-id web-1 --cert-dir /etc/mesh/web > envoy.json
  envoy -c envoy.json`,
		Long: `Bootstrap prints an Envoy bootstrap for a sidecar of a service: every listener, route, cluster,
endpoint and secret comes over ADS (delta gRPC, xDS v3: a change sends only what changed) from
the mesh server at --xds; node.id is the proxy id and node.cluster the service; the admin
interface listens on loopback.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Service == "" || opts.ProxyID == "" {
				return usageError{fmt.Errorf("envoy bootstrap: --service and --proxy-id are required")}
			}
			b, err := xds.EnvoyBootstrap(opts)
			if err != nil {
				return usageError{err}
			}
			out, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(b)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), string(out))
			return err
		},
	}
	boot.Flags().StringVar(&opts.Service, "service", "", "the service this sidecar runs as (node.cluster)")
	boot.Flags().StringVar(&opts.ProxyID, "proxy-id", "", "the proxy instance id (node.id)")
	boot.Flags().StringVar(&opts.XDSAddr, "xds", defaultXDSAddr, "address of the mesh xDS server")
	boot.Flags().StringVar(&opts.AdminAddr, "admin", "127.0.0.1:19000", "address of Envoy's admin interface")
	boot.Flags().StringVar(&opts.CertDir, "cert-dir", "", "directory where mesh agent --envoy keeps this sidecar's certificate and key (its --dir); the server sends only these file names, and the key never leaves the host")
	boot.Flags().BoolVar(&opts.XDSTLS, "xds-tls", false, "connect to the xDS server with mTLS (mesh serve --xds-tls); needs --cert-dir and --trust-domain")
	boot.Flags().StringVar(&opts.TrustDomain, "trust-domain", "", "the mesh's trust domain, to check the xDS server's identity with --xds-tls")
	cmd.AddCommand(boot)
	return cmd
}

func newGRPCCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "grpc", Short: "Proxyless gRPC helpers",
		Example: `  mesh grpc bootstrap --service web --cert-dir /etc/mesh/web > bootstrap.json
  GRPC_XDS_BOOTSTRAP=bootstrap.json ./web`}
	var opts xds.GRPCBootstrapOptions
	boot := &cobra.Command{
		Use:   "bootstrap --service S [--xds ADDR] [--cert-dir DIR]",
		Short: "Print the gRPC xDS bootstrap of a proxyless service (JSON)",
		Long: `Bootstrap prints the xDS bootstrap (GRPC_XDS_BOOTSTRAP) of a proxyless gRPC service: the mesh
server at --xds, the node (cluster = the service, locality region = --datacenter), the server
listener name template, and the file_watcher certificate provider "mesh" reading cert.pem,
key.pem and ca.pem from --cert-dir every --refresh-interval. grpc-go, gRPC C-core (Python, C++)
and grpc-js-xds (Node) accept it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Service == "" {
				return usageError{fmt.Errorf("grpc bootstrap: --service is required")}
			}
			b, err := xds.GRPCBootstrap(opts)
			if err != nil {
				return usageError{err}
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), string(b))
			return err
		},
	}
	boot.Flags().StringVar(&opts.Service, "service", "", "the service (node.cluster)")
	boot.Flags().StringVar(&opts.NodeID, "node-id", "", "the node id (default <service>-grpc)")
	boot.Flags().StringVar(&opts.XDSAddr, "xds", defaultXDSAddr, "address of the mesh xDS server")
	boot.Flags().StringVar(&opts.CertDir, "cert-dir", "/etc/mesh/certs", "directory with cert.pem, key.pem and ca.pem")
	boot.Flags().StringVar(&opts.Datacenter, "datacenter", "", "the service's datacenter (node.locality.region)")
	boot.Flags().StringVar(&opts.RefreshInterval, "refresh-interval", "600s", "how often the file_watcher provider rereads the certificate files")
	cmd.AddCommand(boot)
	return cmd
}
