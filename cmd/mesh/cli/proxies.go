package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/reconciler"
)

func init() { register(newProxiesCmd) }

// proxyTypeColumns are the columns of mesh proxies: each discovery service and the resource type
// it carries (xds.ProxyStatus.Types keys).
var proxyTypeColumns = []struct{ col, typ string }{
	{"CDS", "clusters"}, {"LDS", "listeners"}, {"EDS", "endpoints"}, {"RDS", "routes"}, {"SDS", "secrets"},
	{"ECDS", "extensions"},
}

func newProxiesCmd() *cobra.Command {
	var (
		a    apiFlags
		wide bool
	)
	cmd := &cobra.Command{
		Use:   "proxies [--http ADDR] [--format text|json] [--wide]",
		Short: "List every proxy connected to any server of the cluster and whether it runs the configuration it should",
		Long: `Proxies lists the xDS nodes of the whole cluster, like istioctl proxy-status: the server asked
collects the proxies of every server. For each node: its service, the server holding its
streams, and per discovery service (CDS, LDS, EDS, RDS, SDS, and ECDS: the filter
configurations, where an Envoy sidecar's inbound RBAC is) its state:

  SYNCED        the proxy ACKed the version it should run
  STALE         sent and not ACKed yet, or the server has newer configuration not sent yet
  NACK          the proxy rejected the latest version; the error is printed below the table
  -             the proxy does not subscribe to that type (proxyless gRPC takes no SDS or ECDS)

VERSION is the configuration the node ACKed for every type (<snapshot version>-<content hash>).
--wide adds each type's ACKed wire version. Servers that do not answer are named on stderr;
their proxies are missing from the list.`,
		Example: `  mesh proxies
  mesh proxies --wide
  mesh proxies --format json | jq '.proxies[] | select(.sync != "SYNCED")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var view *reconciler.ProxiesView
			if err := a.call(cmd, false, "proxies", func(ctx context.Context, c *reconciler.Client) (err error) {
				view, err = c.ClusterProxies(ctx)
				return err
			}); err != nil {
				return err
			}
			for _, e := range view.Unreachable {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: server %s (%s) did not answer, its proxies are not listed: %s\n", e.Server, e.Address, e.Error)
			}
			if a.format == "json" {
				return printJSON(cmd.OutOrStdout(), view)
			}
			return printProxies(cmd.OutOrStdout(), view.Proxies, wide)
		},
	}
	a.add(cmd, false, true)
	cmd.Flags().BoolVar(&wide, "wide", false, "show each type's ACKed wire version beside its state")
	return cmd
}

func printProxies(w io.Writer, proxies []reconciler.ClusterProxy, wide bool) error {
	if len(proxies) == 0 {
		fmt.Fprintln(w, "no proxies connected to any server")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "NODE\tSERVICE\tSERVER\t")
	for _, c := range proxyTypeColumns {
		fmt.Fprint(tw, c.col, "\t")
	}
	fmt.Fprintln(tw, "VERSION")
	var nacks []string
	for _, p := range proxies {
		fmt.Fprintf(tw, "%s\t%s\t%s\t", p.NodeID, p.Service, p.Server)
		for _, c := range proxyTypeColumns {
			ts, ok := p.Types[c.typ]
			cell := "-"
			switch {
			case !p.Connected:
				cell = "DISCONNECTED"
			case ok && wide && ts.Acked != "":
				cell = ts.State + " " + ts.Acked
			case ok:
				cell = ts.State
			}
			fmt.Fprint(tw, cell, "\t")
			if ok && ts.Error != "" {
				nacks = append(nacks, fmt.Sprintf("%s %s NACK of %s: %s", p.NodeID, c.col, ts.Sent, ts.Error))
			}
		}
		version := p.AckedVersion
		if version == "" {
			version = "-"
		}
		fmt.Fprintln(tw, version)
		if p.Error != "" {
			nacks = append(nacks, fmt.Sprintf("%s: %s", p.NodeID, p.Error))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(nacks) > 0 {
		fmt.Fprintf(w, "\n%s\n", strings.Join(nacks, "\n"))
	}
	return nil
}
