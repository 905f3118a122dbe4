package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/reconciler"
	"github.com/meshgit/mesh/xds"
)

func init() { register(newProxyConfigCmd) }

func newProxyConfigCmd() *cobra.Command {
	var (
		a   apiFlags
		typ string
	)
	cmd := &cobra.Command{
		Use:   "proxy-config NODE [--type clusters|listeners|routes|endpoints|secrets|extensions] [--format json|table]",
		Short: "Print the xDS configuration a proxy was sent, from whichever server holds its streams",
		Long: `Proxy-config prints what the server holding NODE's xDS streams last set for it, like
istioctl proxy-config: every resource of each type (or only --type), as JSON in the xDS
field names (--format json, the default), or one line per resource (--format table). The
server asked finds the node on any server of the cluster. Extensions are the filter
configurations a proxy fetches by name (ECDS): an Envoy sidecar's inbound RBAC rules are there,
not in its listeners. Secrets name the certificate and key files mesh agent writes beside the
proxy; no private key is ever sent or printed.`,
		Example: `  mesh proxy-config web-1
  mesh proxy-config web-1 --type clusters --format table
  mesh proxy-config web-1 --type listeners | jq '.resources.listeners[].name'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if typ != "" && !slices.Contains(xds.ShortTypes, typ) {
				return usageError{fmt.Errorf("--type %q: want one of %s", typ, strings.Join(xds.ShortTypes, ", "))}
			}
			if a.format != "json" && a.format != "table" {
				return usageError{fmt.Errorf("--format %q: want json or table", a.format)}
			}
			format := a.format
			a.format = "" // the client checks text|json; this command has its own formats
			var view *reconciler.ProxyConfigView
			if err := a.call(cmd, false, "proxy-config", func(ctx context.Context, c *reconciler.Client) (err error) {
				view, err = c.ProxyConfig(ctx, args[0], typ)
				return err
			}); err != nil {
				return err
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), view)
			}
			return printProxyConfig(cmd.OutOrStdout(), view)
		},
	}
	a.add(cmd, false, false)
	cmd.Flags().StringVar(&a.format, "format", "json", "output format: json or table")
	cmd.Flags().StringVar(&typ, "type", "", "only this resource type: "+strings.Join(xds.ShortTypes, ", "))
	return cmd
}

func printProxyConfig(w io.Writer, v *reconciler.ProxyConfigView) error {
	fmt.Fprintf(w, "node %s (service %s, %s) on server %s, version %s\n", v.NodeID, v.Service, v.Shape, v.Server, v.Version)
	for _, t := range xds.ShortTypes {
		list, ok := v.Resources[t]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "\n%s (%d)\n", strings.ToUpper(t), len(list))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, raw := range list {
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				return err
			}
			name, detail := describeResource(t, m)
			fmt.Fprintf(tw, "  %s\t%s\n", name, detail)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// describeResource is one table line of a resource: its name and what matters most about it.
func describeResource(typ string, m map[string]any) (string, string) {
	str := func(path ...string) string {
		var cur any = m
		for _, p := range path {
			mm, ok := cur.(map[string]any)
			if !ok {
				return ""
			}
			cur = mm[p]
		}
		if cur == nil {
			return ""
		}
		return fmt.Sprint(cur)
	}
	switch typ {
	case "clusters":
		kind := str("type")
		if kind == "" {
			kind = "EDS"
		}
		return str("name"), fmt.Sprintf("%s connect_timeout=%s", kind, str("connect_timeout"))
	case "listeners":
		if addr := str("address", "socket_address", "address"); addr != "" {
			return str("name"), addr + ":" + str("address", "socket_address", "port_value")
		}
		return str("name"), "api listener"
	case "routes":
		var hosts []string
		vhs, _ := m["virtual_hosts"].([]any)
		for _, vh := range vhs {
			if vm, ok := vh.(map[string]any); ok {
				hosts = append(hosts, fmt.Sprint(vm["name"]))
			}
		}
		return str("name"), "virtual hosts: " + strings.Join(hosts, ", ")
	case "endpoints":
		var eps []string
		locs, _ := m["endpoints"].([]any)
		for _, l := range locs {
			lm, _ := l.(map[string]any)
			lbs, _ := lm["lb_endpoints"].([]any)
			for _, lb := range lbs {
				e, _ := lb.(map[string]any)
				sa, _ := digMap(e, "endpoint", "address", "socket_address")
				s := fmt.Sprintf("%v:%v", sa["address"], sa["port_value"])
				if h, ok := e["health_status"]; ok {
					s += " " + fmt.Sprint(h)
				}
				eps = append(eps, s)
			}
		}
		return str("cluster_name"), strings.Join(eps, ", ")
	case "secrets":
		if f := str("tls_certificate", "certificate_chain", "filename"); f != "" {
			return str("name"), "certificate " + f + ", key " + str("tls_certificate", "private_key", "filename")
		}
		return str("name"), "trusted CA bundle (public certificates)"
	case "extensions":
		return str("name"), describeExtension(m)
	}
	return str("name"), ""
}

// describeExtension summarises an extension configuration: its type and, for RBAC, the
// engine's action and its policies.
func describeExtension(m map[string]any) string {
	tc, _ := m["typed_config"].(map[string]any)
	typ := fmt.Sprint(tc["@type"])
	typ = typ[strings.LastIndex(typ, "/")+1:]
	rules, ok := tc["rules"].(map[string]any)
	if !ok {
		return typ
	}
	action := "ALLOW"
	if a, ok := rules["action"]; ok {
		action = fmt.Sprint(a)
	}
	pols, _ := rules["policies"].(map[string]any)
	names := make([]string, 0, len(pols))
	for n := range pols {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) == 0 {
		names = []string{"none"}
	}
	return fmt.Sprintf("%s %s policies: %s", typ, action, strings.Join(names, ", "))
}

func digMap(m map[string]any, path ...string) (map[string]any, bool) {
	cur := m
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil, false
		}
		cur = next
	}
	return cur, true
}
