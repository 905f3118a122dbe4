package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/reconciler"
)

func init() { register(newMembersCmd) }

func newMembersCmd() *cobra.Command {
	var a apiFlags
	cmd := &cobra.Command{
		Use:   "members [--http ADDR] [--format text|json]",
		Short: "List the servers of the cluster: address, Raft state, last contact, applied index, alive or failed",
		Long: `Members lists every server of the Raft configuration, like consul members and consul operator
raft list-peers together. The server asked reports its configuration and asks each peer about
itself: a peer that answers is alive and reports its Raft state, the leader it follows, how
long ago it last heard from the leader, its applied and last log index and its term; a peer
that does not answer is failed, and a failed voter is shown as such, not as a plain voter.
The last line says whether the voters that answer still make a quorum.

Exit status: 0 when every server answers, 1 when some do not, 2 when the server asked cannot
be reached.`,
		Example: `  mesh members
  mesh members --http 127.0.0.1:8510 --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var view *reconciler.MembersView
			if err := a.call(cmd, false, "members", func(ctx context.Context, c *reconciler.Client) (err error) {
				view, err = c.Members(ctx)
				return err
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.format == "json" {
				if err := printJSON(out, view); err != nil {
					return err
				}
			} else if err := printMembers(out, view); err != nil {
				return err
			}
			for _, m := range view.Members {
				if !m.Alive {
					return exitWith(ExitInvalid)
				}
			}
			return nil
		},
	}
	a.add(cmd, false, true)
	return cmd
}

func printMembers(w io.Writer, v *reconciler.MembersView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tRAFT\tHTTP\tSTATUS\tSTATE\tVOTER\tLAST CONTACT\tAPPLIED\tTERM")
	var failures []string
	for _, m := range v.Members {
		status, state, voter, contact, applied, term := "alive", m.RaftState, "no", m.LastContact, fmt.Sprint(m.AppliedIndex), fmt.Sprint(m.Term)
		if m.Suffrage == "Voter" {
			voter = "yes"
		}
		if !m.Alive {
			status, state, contact, applied, term = "failed", "-", "-", "-", "-"
			if m.Suffrage == "Voter" {
				voter = "yes, failed" // counts against the quorum
			}
			failures = append(failures, fmt.Sprintf("%s: %s", m.ID, m.Error))
		}
		if m.ID == v.Leader && m.Alive && m.RaftState != "Leader" {
			state += " (the leader, as the server asked sees it)"
		}
		httpAddr := m.HTTPAddress
		if httpAddr == "" {
			httpAddr = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.RaftAddress, httpAddr, status, state, voter, contact, applied, term)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range failures {
		fmt.Fprintf(w, "failed %s\n", f)
	}
	switch {
	case v.Voters == 0:
		fmt.Fprintln(w, "no voters known: the server asked has no Raft configuration yet")
	case v.AliveVoters >= v.Quorum:
		fmt.Fprintf(w, "quorum: %d of %d voters alive, %d needed\n", v.AliveVoters, v.Voters, v.Quorum)
	default:
		fmt.Fprintf(w, "QUORUM LOST: %d of %d voters alive, %d needed; no write or new commit can be applied until enough voters return\n",
			v.AliveVoters, v.Voters, v.Quorum)
	}
	return nil
}
