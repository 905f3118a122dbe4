package cli

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// CLIDocs renders docs/cli.md, the command reference, from the command tree: every command that
// is not hidden, in the order of `mesh help`, with its usage, description and flags, as --help
// shows them. Flag defaults taken from the environment (MESH_HTTP_ADDR...) show as they are in
// the environment it runs in; TestDocs runs it without MESH_ variables.
func CLIDocs() []byte {
	root := NewRoot(nil, nil)
	var b bytes.Buffer
	b.WriteString("# Command reference\n\n")
	b.WriteString("<!-- Generated from the command tree by\n" +
		"     `MESH_UPDATE=1 go test -tags hashicorpmetrics ./cmd/mesh/cli -run TestDocs`; edit the commands' help, not this file. -->\n\n")
	fmt.Fprintf(&b, "%s\n\n", root.Long)
	b.WriteString("Exit statuses: 0 ok (or allowed); 1 the configuration is invalid, a policy fails or a check is\n" +
		"denied; 2 usage or internal error. Errors go to stderr, configuration errors as\n" +
		"`file:line:col: message`, all of them.\n\n")
	var all []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			all = append(all, sub)
			walk(sub)
		}
	}
	walk(root)
	b.WriteString("| command | what it does |\n|---|---|\n")
	for _, c := range all {
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s |\n", c.CommandPath(), anchor(c.CommandPath()), c.Short)
	}
	b.WriteString("\n")
	for _, c := range all {
		writeCommand(&b, c)
	}
	return bytes.TrimRight(b.Bytes(), "\n")
}

func writeCommand(b *bytes.Buffer, c *cobra.Command) {
	fmt.Fprintf(b, "## %s\n\n", c.CommandPath())
	desc := c.Long
	if desc == "" {
		desc = c.Short
	}
	fmt.Fprintf(b, "%s\n\n", strings.TrimSpace(desc))
	if c.Runnable() {
		fmt.Fprintf(b, "```\n%s\n```\n\n", c.UseLine())
	}
	if c.HasAvailableSubCommands() {
		b.WriteString("Subcommands:")
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				fmt.Fprintf(b, " [`%s`](#%s)", sub.Name(), anchor(sub.CommandPath()))
			}
		}
		b.WriteString("\n\n")
	}
	if c.Example != "" {
		fmt.Fprintf(b, "Examples:\n\n```sh\n%s\n```\n\n", strings.TrimRight(c.Example, "\n"))
	}
	if f := flagUsages(c.NonInheritedFlags()); f != "" {
		fmt.Fprintf(b, "Flags:\n\n```\n%s```\n\n", f)
	}
	if f := flagUsages(c.InheritedFlags()); f != "" {
		fmt.Fprintf(b, "Inherited flags:\n\n```\n%s```\n\n", f)
	}
}

// flagUsages is pflag's own text, without the help flag every command has.
func flagUsages(fs *pflag.FlagSet) string {
	out := pflag.NewFlagSet("", pflag.ContinueOnError)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && !f.Hidden {
			out.AddFlag(f)
		}
	})
	return out.FlagUsages()
}

// anchor is GitHub's anchor of a heading.
func anchor(heading string) string {
	return strings.ReplaceAll(strings.ToLower(heading), " ", "-")
}
