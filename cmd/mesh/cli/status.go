package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// apiFlags are the flags of the commands that talk to a server's HTTP API.
type apiFlags struct {
	http      string
	tokenFile string
	format    string
}

func (a *apiFlags) add(cmd *cobra.Command, write, format bool) {
	def := os.Getenv("MESH_HTTP_ADDR")
	if def == "" {
		def = reconciler.DefaultHTTPAddr
	}
	cmd.Flags().StringVar(&a.http, "http", def, "HTTP address of a mesh server ($MESH_HTTP_ADDR)")
	if write {
		cmd.Flags().StringVar(&a.tokenFile, "token-file", "", "file holding the write token (default: $MESH_TOKEN, else ./"+reconciler.DefaultDataDir+"/token)")
	}
	if format {
		cmd.Flags().StringVar(&a.format, "format", "text", "output format: text or json")
	}
}

func (a *apiFlags) client(write bool) (*reconciler.Client, error) {
	if a.format != "" && a.format != "text" && a.format != "json" {
		return nil, usageError{fmt.Errorf("--format must be text or json, not %q", a.format)}
	}
	c := &reconciler.Client{Addr: a.http}
	if !write {
		return c, nil
	}
	switch {
	case a.tokenFile != "":
		tok, err := readToken(a.tokenFile)
		if err != nil {
			return nil, err
		}
		c.Token = tok
	case os.Getenv("MESH_TOKEN") != "":
		c.Token = os.Getenv("MESH_TOKEN")
	default:
		if tok, err := readToken(filepath.Join(reconciler.DefaultDataDir, "token")); err == nil {
			c.Token = tok
		}
	}
	return c, nil
}

func apiContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), 30*time.Second)
}

// call makes one request to the server with a bounded context; write requests carry the token.
// An error is prefixed with what.
func (a *apiFlags) call(cmd *cobra.Command, write bool, what string, f func(context.Context, *reconciler.Client) error) error {
	return withClient(cmd, func() (*reconciler.Client, error) { return a.client(write) }, what, f)
}

// withClient makes a client, then one request with it under a bounded context. An error of the
// request is prefixed with what, unless what is empty.
func withClient[C any](cmd *cobra.Command, client func() (C, error), what string, f func(context.Context, C) error) error {
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := apiContext(cmd)
	defer cancel()
	if err := f(ctx, c); err != nil {
		if what == "" {
			return err
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
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
		Args:  cobra.NoArgs,
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
		if st.Head != nil {
			fmt.Fprintf(w, "head:     %s %s\n", st.Head.Version, st.Head.Commit)
		}
	}
	leader := st.Leader
	if leader == "" {
		leader = "(none)"
	} else if st.LeaderAddress != "" {
		leader += " (" + st.LeaderAddress + ")"
	}
	fmt.Fprintf(w, "node:     %s (%s)\n", st.Node, st.RaftState)
	fmt.Fprintf(w, "leader:   %s\n", leader)
	fmt.Fprintf(w, "servers:  %d\n", len(st.Servers))
	for _, s := range st.Servers {
		mark := ""
		if s.Leader {
			mark = " leader"
		}
		fmt.Fprintf(w, "  %s raft=%s http=%s %s%s\n", s.ID, s.RaftAddress, s.HTTPAddress, s.Suffrage, mark)
	}
	if st.PublishError != "" {
		fmt.Fprintf(w, "xds refused the newest snapshot: %s\n", st.PublishError)
	}
	if e := st.LastError; e != nil {
		fmt.Fprintf(w, "last error: commit %s does not compile (%s); still serving %s\n", e.Commit, e.Time.Format(time.RFC3339), version)
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
		Args:  cobra.NoArgs,
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
		Args:  cobra.ExactArgs(1),
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
		Use:   "unpin [--http ADDR] [--token-file FILE]",
		Short: "Remove the pin: serve the newest snapshot from Git again",
		Args:  cobra.NoArgs,
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
	}
	var la apiFlags
	list := &cobra.Command{
		Use:   "list [--http ADDR]",
		Short: "List the servers of the cluster",
		Args:  cobra.NoArgs,
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
		Args:  cobra.ExactArgs(1),
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
