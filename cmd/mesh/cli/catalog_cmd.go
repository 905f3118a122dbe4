package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/catalog"
)

func init() { register(newCatalogCmd) }

func newCatalogCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "catalog services|nodes|instances SERVICE",
		Short: "List the live catalog: services with instance counts by health, nodes, a service's instances",
		Long: `Catalog lists what instances registered at runtime (mesh agent, the Consul-compatible API, mesh
services register), with their health as the servers see it. A service Git does not declare is
listed as undeclared: nobody routes to it until a commit declares it.`,
	}
	cmd.AddCommand(newCatalogServicesCmd(), newCatalogNodesCmd(), newCatalogInstancesCmd())
	return cmd
}

// catalogClient is a client of the catalog of --http.
func (a *apiFlags) catalogClient(write bool) (*catalog.Client, error) {
	c, err := a.client(write)
	if err != nil {
		return nil, err
	}
	return &catalog.Client{Addr: c.Addr, Token: c.Token, HTTP: c.HTTP}, nil
}

func (a *apiFlags) catalogCall(cmd *cobra.Command, write bool, what string, f func(context.Context, *catalog.Client) error) error {
	return a.explain(withClient(cmd, func() (*catalog.Client, error) { return a.catalogClient(write) }, what, f))
}

func newCatalogServicesCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:     "services",
		Short:   "List the services with live instances, counted by health",
		Example: "  mesh catalog services\n  mesh catalog services --format json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var sum *catalog.Summary
			if err := a.catalogCall(cmd, false, "catalog services", func(ctx context.Context, c *catalog.Client) (err error) {
				sum, err = c.Summary(ctx)
				return err
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.format == "json" {
				return printJSON(out, sum.Services)
			}
			col := colorsFor(out)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tPASSING\tWARNING\tCRITICAL\t")
			for _, s := range sum.Services {
				note := ""
				if s.Undeclared {
					note = "undeclared: routed to nobody"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, col.count(s.Passing, catalog.StatusPassing),
					col.count(s.Warning, catalog.StatusWarning), col.count(s.Critical, catalog.StatusCritical), note)
			}
			return tw.Flush()
		},
	}
	a.add(cmd, false, true)
	return cmd
}

func newCatalogNodesCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:     "nodes",
		Short:   "List the nodes (servers and agents) with instances, and whether they sync",
		Example: "  mesh catalog nodes\n  mesh catalog nodes --format json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var nodes []catalog.NodeJSON
			if err := a.catalogCall(cmd, false, "catalog nodes", func(ctx context.Context, c *catalog.Client) (err error) {
				nodes, err = c.Nodes(ctx)
				return err
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.format == "json" {
				return printJSON(out, nodes)
			}
			col := colorsFor(out)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tADDRESS\tHEALTH\t")
			for _, n := range nodes {
				fmt.Fprintf(tw, "%s\t%s\t%s\t\n", n.Node, n.Address, col.status(n.Health))
			}
			return tw.Flush()
		},
	}
	a.add(cmd, false, true)
	return cmd
}

func newCatalogInstancesCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:     "instances SERVICE",
		Short:   "List a service's live instances with their health and checks",
		Example: "  mesh catalog instances api\n  mesh catalog instances api --format json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var entries []catalog.ServiceEntry
			if err := a.catalogCall(cmd, false, "catalog instances", func(ctx context.Context, c *catalog.Client) (err error) {
				entries, err = c.Health(ctx, args[0])
				return err
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.format == "json" {
				return printJSON(out, entries)
			}
			if len(entries) == 0 {
				fmt.Fprintf(out, "no instances of %s\n", args[0])
				return nil
			}
			printInstances(out, entries)
			return nil
		},
	}
	a.add(cmd, false, true)
	return cmd
}

func printInstances(out io.Writer, entries []catalog.ServiceEntry) {
	col := colorsFor(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNODE\tADDRESS\tHEALTH\tCHECKS\t")
	for _, e := range entries {
		status := catalog.StatusPassing
		var checks []string
		for _, c := range e.Checks {
			switch {
			case c.Status == catalog.StatusCritical:
				status = c.Status
			case c.Status == catalog.StatusWarning && status == catalog.StatusPassing:
				status = c.Status
			}
			checks = append(checks, c.CheckID+"="+c.Status)
		}
		note := ""
		if e.Service.Undeclared {
			note = " (undeclared)"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s:%d\t%s\t%s\t\n", e.Service.ID, note, e.Node.Node, e.Service.Address, e.Service.Port,
			col.status(status), strings.Join(checks, " "))
	}
	tw.Flush()
}

// printCatalogSummary is mesh status's part about the live catalog.
func printCatalogSummary(w io.Writer, sum *catalog.Summary) {
	if sum == nil || len(sum.Services) == 0 {
		return
	}
	var p, wa, c int
	var undeclared []string
	for _, s := range sum.Services {
		p, wa, c = p+s.Passing, wa+s.Warning, c+s.Critical
		if s.Undeclared {
			undeclared = append(undeclared, s.Name)
		}
	}
	fmt.Fprintf(w, "catalog:  %d instances of %d services on %d nodes: %d passing, %d warning, %d critical\n",
		p+wa+c, len(sum.Services), sum.Nodes, p, wa, c)
	if sum.Critical > 0 {
		fmt.Fprintf(w, "  %d nodes stopped syncing: their instances are critical\n", sum.Critical)
	}
	if len(undeclared) > 0 {
		fmt.Fprintf(w, "  undeclared services (routed to nobody until Git declares them): %s\n", strings.Join(undeclared, ", "))
	}
}

// colors colours health words on a terminal (not with $NO_COLOR).
type colors bool

func colorsFor(w io.Writer) colors {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (c colors) paint(s, status string) string {
	if !c {
		return s
	}
	code := map[string]string{catalog.StatusPassing: "32", catalog.StatusWarning: "33", catalog.StatusCritical: "31"}[status]
	if code == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (c colors) status(s string) string { return c.paint(s, s) }

func (c colors) count(n int, status string) string {
	if n == 0 {
		return "0"
	}
	return c.paint(fmt.Sprint(n), status)
}
