package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	mesh "github.com/meshgit/mesh"
)

func init() { register(newIntentionCmd) }

func newIntentionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "intention",
		Short: "Ask what the mesh's intentions decide",
		Example: `  mesh intention check web api --dir repo-example --method GET --path /v1/items
  mesh intention match --destination api --dir repo-example`,
	}
	cmd.AddCommand(newIntentionCheckCmd(), newIntentionMatchCmd())
	return cmd
}

// checkResult is the JSON shape of `intention check` (DESIGN.md).
type checkResult struct {
	Verdict     mesh.Action     `json:"verdict"`
	Reason      string          `json:"reason"`
	Source      string          `json:"source"`
	Destination string          `json:"destination"`
	Intention   *checkIntention `json:"intention"`
	// L7, when the deciding intention's permissions look at request attributes the check did
	// not give, names them and the permissions that would then decide otherwise.
	L7 *l7Hint `json:"l7,omitempty"`
}

type checkIntention struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Precedence  int    `json:"precedence"`
	Position    string `json:"position"`
	Permission  *int   `json:"permission,omitempty"` // 1-based index of the deciding permission
}

func newIntentionCheckCmd() *cobra.Command {
	var (
		src     source
		method  string
		path    string
		headers []string
		format  string
	)
	cmd := &cobra.Command{
		Use:   "check SRC DST",
		Short: "Decide whether SRC may call DST (optionally one HTTP request), and why",
		Long: `Check evaluates the mesh's intentions for a request from service SRC to service DST, with
Consul's precedence (exact 9, wildcard source 8, wildcard destination 6, both 5) and L7
permissions tried in order. Without --method/--path/--header it asks about a request with no
method, path or headers, so only permissions that do not look at them can match; the answer
then names the attributes the deciding intention's permissions look at, and the permissions
that would decide otherwise.
--method is an HTTP method token (case-sensitive: GET, not get); --path starts with /.
Exit status: 0 allow, 1 deny, 2 usage or internal error.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return usageError{fmt.Errorf("--format %q: want text or json", format)}
			}
			req, note, err := checkRequest(args[0], args[1], method, path, headers)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), note)
			}
			snap, err := src.compile(cmd.Context(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			for _, name := range []string{req.Source, req.Destination} {
				if snap.Service(name) == nil {
					return usageError{fmt.Errorf("no service %q in mesh %s", name, snap.Mesh.Name)}
				}
			}
			d := mesh.Authorize(snap, req)
			res := checkResult{Verdict: d.Verdict, Reason: d.Reason, Source: req.Source, Destination: req.Destination}
			if d.Intention != nil {
				res.Intention = &checkIntention{
					Source: d.Intention.Source, Destination: d.Intention.Destination,
					Precedence: d.Intention.Precedence, Position: d.Pos.String(),
				}
				if d.Permission >= 0 {
					n := d.Permission + 1
					res.Intention.Permission = &n
				}
			}
			res.L7 = hintFor(snap, req, d)
			if format == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetEscapeHTML(false)
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printCheck(cmd.OutOrStdout(), res)
			}
			if !d.Allowed() {
				return exitWith(ExitInvalid)
			}
			return nil
		},
	}
	src.addFlags(cmd)
	cmd.Flags().StringVar(&src.dir, "dir", ".", "the mesh directory (with --repo: the directory inside the repository)")
	cmd.Flags().StringVar(&method, "method", "", "HTTP method of the request (case-sensitive, e.g. GET)")
	cmd.Flags().StringVar(&path, "path", "", "HTTP path of the request, optionally with a query string")
	cmd.Flags().StringArrayVar(&headers, "header", nil, "request header name=value (repeatable)")
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

func printCheck(w io.Writer, r checkResult) {
	fmt.Fprintf(w, "%s: %s → %s\n", r.Verdict, r.Source, r.Destination)
	fmt.Fprintf(w, "reason: %s\n", r.Reason)
	if r.Intention != nil {
		fmt.Fprintf(w, "decided by: intention %s → %s (precedence %d) at %s\n",
			r.Intention.Source, r.Intention.Destination, r.Intention.Precedence, r.Intention.Position)
	} else {
		fmt.Fprintln(w, "decided by: the mesh default (no intention applies)")
	}
	if r.L7 != nil {
		r.L7.print(w, r.Verdict)
	}
}

func newIntentionMatchCmd() *cobra.Command {
	var (
		src         source
		source, dst string
		format      string
	)
	cmd := &cobra.Command{
		Use:   "match (--source S | --destination D)",
		Short: "List the intentions that apply to a source or a destination, in evaluation order",
		Example: `  mesh intention match --destination api --dir repo-example
  mesh intention match --source web --repo . --ref main --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (source == "") == (dst == "") {
				return usageError{fmt.Errorf("give exactly one of --source and --destination")}
			}
			if format != "text" && format != "json" {
				return usageError{fmt.Errorf("--format %q: want text or json", format)}
			}
			snap, err := src.compile(cmd.Context(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			var list []*mesh.Intention
			if dst != "" {
				if snap.Service(dst) == nil {
					return usageError{fmt.Errorf("no service %q in mesh %s", dst, snap.Mesh.Name)}
				}
				list = snap.Inbound(dst)
			} else {
				if snap.Service(source) == nil {
					return usageError{fmt.Errorf("no service %q in mesh %s", source, snap.Mesh.Name)}
				}
				list = snap.Outbound(source)
			}
			type row struct {
				Source      string      `json:"source"`
				Destination string      `json:"destination"`
				Precedence  int         `json:"precedence"`
				Action      mesh.Action `json:"action,omitempty"`
				Permissions []string    `json:"permissions,omitempty"`
				Position    string      `json:"position"`
			}
			rows := []row{}
			for _, in := range list {
				r := row{Source: in.Source, Destination: in.Destination, Precedence: in.Precedence, Action: in.Action,
					Position: snap.Pos(mesh.PathIntention(in.Destination, in.Source)).String()}
				for _, p := range in.Permissions {
					r.Permissions = append(r.Permissions, fmt.Sprintf("%s %s", p.Action, p.HTTP.Describe()))
				}
				rows = append(rows, r)
			}
			if format == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetEscapeHTML(false)
				return enc.Encode(rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no intentions apply; the mesh default decides:", snap.Mesh.DefaultIntention)
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SOURCE\tDESTINATION\tPRECEDENCE\tACTION\tPOSITION")
			for _, r := range rows {
				action := string(r.Action)
				if action == "" {
					action = strings.Join(r.Permissions, "; ")
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Source, r.Destination, r.Precedence, action, r.Position)
			}
			return tw.Flush()
		},
	}
	src.addFlags(cmd)
	cmd.Flags().StringVar(&src.dir, "dir", ".", "the mesh directory (with --repo: the directory inside the repository)")
	cmd.Flags().StringVar(&source, "source", "", "list the intentions that can decide requests from this service")
	cmd.Flags().StringVar(&dst, "destination", "", "list the intentions that can decide requests to this service")
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}
