package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/reconciler"
)

func init() {
	register(newStatusCmd)
	register(newVersionsCmd)
	register(newPinCmd)
	register(newUnpinCmd)
	register(newServersCmd)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newStatusCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:   "status [--http ADDR]",
		Short: "Show what a mesh server serves, its cluster, and the last commit that failed to compile",
		Example: `  mesh status
  mesh status --http 127.0.0.1:8510 --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var st *reconciler.Status
			if err := a.call(cmd, false, "status", func(ctx context.Context, c *reconciler.Client) (err error) {
				st, err = c.Status(ctx)
				return err
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.format == "json" {
				return printJSON(out, st)
			}
			printStatus(out, st)
			return nil
		},
	}
	a.add(cmd, false, true)
	return cmd
}

func printStatus(w io.Writer, st *reconciler.Status) {
	version := st.Version
	if version == "" {
		version = "(nothing served yet)"
	}
	fmt.Fprintf(w, "version:  %s\n", version)
	printHealth(w, st)
	if st.Commit != "" {
		fmt.Fprintf(w, "commit:   %s\n", st.Commit)
	}
	if st.Pin != "" {
		fmt.Fprintf(w, "pinned:   %s (mesh unpin to follow Git again)\n", st.Pin)
		if st.PinnedBy != "" {
			fmt.Fprintf(w, "          by %s at %s\n", st.PinnedBy, st.PinnedAt.Format(time.RFC3339))
		}
		if st.Head != nil {
			fmt.Fprintf(w, "head:     %s %s\n", st.Head.Version, st.Head.Commit)
		}
	}
	leader := st.Leader
	if leader == "" {
		leader = fmt.Sprintf("(none): the cluster has lost quorum or is electing; nothing new is served until %d of the %d servers reach each other", len(st.Servers)/2+1, len(st.Servers))
	} else if st.LeaderAddress != "" {
		leader += " (" + st.LeaderAddress + ")"
	}
	fmt.Fprintf(w, "node:     %s (%s)\n", st.Node, st.RaftState)
	if st.Ready {
		fmt.Fprintf(w, "ready:    yes (serving a snapshot and the CA's trust bundle over xDS)\n")
	} else {
		fmt.Fprintf(w, "ready:    no (no snapshot or no trust bundle served over xDS yet)\n")
	}
	fmt.Fprintf(w, "leader:   %s\n", leader)
	fmt.Fprintf(w, "servers:  %d\n", len(st.Servers))
	for _, s := range st.Servers {
		mark := ""
		if s.Leader {
			mark = " leader"
		}
		fmt.Fprintf(w, "  %s raft=%s http=%s %s%s\n", s.ID, s.RaftAddress, s.HTTPAddress, s.Suffrage, mark)
	}
	printCatalogSummary(w, st.Catalog)
	if st.VerifyError != "" {
		fmt.Fprintf(w, "snapshot check: %s\n", st.VerifyError)
	}
	if st.PublishError != "" {
		fmt.Fprintf(w, "xds refused the newest snapshot: %s\n", st.PublishError)
	}
	if e := st.LastError; e != nil {
		serving := "still serving " + version
		if st.Version == "" {
			serving = "nothing served yet"
		}
		fmt.Fprintf(w, "last error at %s: %s; %s\n", e.Time.Format(time.RFC3339), e.Headline(time.Now()), serving)
		if e.Commit != "" {
			fmt.Fprintf(w, "  commit %s\n", e.Commit)
		}
		for _, pe := range e.Errors {
			if pe.Pos.IsValid() {
				fmt.Fprintf(w, "  %s: %s\n", pe.Pos, pe.Msg)
			} else {
				fmt.Fprintf(w, "  %s\n", pe.Msg)
			}
		}
	}
}

func newVersionsCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:   "versions [--http ADDR]",
		Short: "List the snapshots a mesh server keeps, newest first (the versions mesh pin accepts)",
		Example: `  mesh versions
  mesh versions --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var list []reconciler.SnapshotInfo
			if err := a.call(cmd, false, "versions", func(ctx context.Context, c *reconciler.Client) (err error) {
				list, err = c.Snapshots(ctx)
				return err
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.format == "json" {
				return printJSON(out, list)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tCOMMIT\tAPPLIED\t")
			for _, e := range list {
				flags := ""
				if e.Served {
					flags += " served"
				}
				if e.Pinned {
					flags += " pinned"
				}
				if e.Forced {
					flags += " force-pushed"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Version, shortCommit(e.Commit), e.Time.Format(time.RFC3339), flags)
			}
			return tw.Flush()
		},
	}
	a.add(cmd, false, true)
	return cmd
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

func newPinCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:   "pin VERSION [--http ADDR] [--token-file FILE]",
		Short: "Serve VERSION (from mesh versions) on every server until mesh unpin, whatever Git says",
		Example: `  mesh versions
  mesh pin 3f2a9c0d1e2b4a5c --token-file mesh-data/token`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, true, "pin", func(ctx context.Context, c *reconciler.Client) error {
				return c.Pin(ctx, args[0])
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pinned %s: every server serves it until mesh unpin\n", args[0])
			return nil
		},
	}
	a.add(cmd, true, false)
	return cmd
}

func newUnpinCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:     "unpin [--http ADDR] [--token-file FILE]",
		Short:   "Remove the pin: serve the newest snapshot from Git again",
		Example: `  mesh unpin --token-file mesh-data/token`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, true, "unpin", func(ctx context.Context, c *reconciler.Client) error {
				return c.Unpin(ctx)
			}); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "unpinned: serving the newest snapshot")
			return nil
		},
	}
	a.add(cmd, true, false)
	return cmd
}

func newServersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "servers list|remove",
		Short: "Inspect or shrink the cluster of mesh servers",
		Example: `  mesh servers list
  mesh servers remove node-3 --token-file mesh-data/token`,
	}
	var la apiFlags
	list := &cobra.Command{
		Use:   "list [--http ADDR]",
		Short: "List the servers of the cluster (mesh members also says which are alive)",
		Example: `  mesh servers list
  mesh servers list --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var servers []reconciler.ServerStatus
			if err := la.call(cmd, false, "servers list", func(ctx context.Context, c *reconciler.Client) (err error) {
				servers, err = c.Servers(ctx)
				return err
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if la.format == "json" {
				return printJSON(out, servers)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tRAFT\tHTTP\tSUFFRAGE\tLEADER")
			for _, s := range servers {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", s.ID, s.RaftAddress, s.HTTPAddress, s.Suffrage, s.Leader)
			}
			return tw.Flush()
		},
	}
	la.add(list, false, true)
	var ra apiFlags
	remove := &cobra.Command{
		Use:   "remove ID [--http ADDR] [--token-file FILE]",
		Short: "Remove a server from the cluster",
		Long: `Remove takes server ID (as mesh servers list shows it) out of the Raft configuration and forgets
its HTTP address. An ID that is not in the cluster is an error (exit 2). Needs the write token.`,
		Example: `  mesh servers list
  mesh servers remove node-3 --token-file mesh-data/token`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ra.call(cmd, true, "servers remove", func(ctx context.Context, c *reconciler.Client) error {
				return c.RemoveServer(ctx, args[0])
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
			return nil
		},
	}
	ra.add(remove, true, false)
	cmd.AddCommand(list, remove)
	return cmd
}
