package review

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// AddFindings records the policy violations and analysis warnings at head and updates the
// summary.
func (r *Report) AddFindings(violations, warnings []Finding) {
	r.Violations = append(r.Violations, violations...)
	r.Warnings = append(r.Warnings, warnings...)
	r.Summary = summary(r)
}

// JSON writes the report as indented JSON; empty lists are written as [].
func (r *Report) JSON(w io.Writer) error {
	c := *r
	if c.Access == nil {
		c.Access = []*Access{}
	}
	if c.Undecided == nil {
		c.Undecided = []*Access{}
	}
	if c.Routing == nil {
		c.Routing = []*RoutingChange{}
	}
	if c.Services == nil {
		c.Services = []*ServiceChange{}
	}
	if c.Mesh == nil {
		c.Mesh = []FieldChange{}
	}
	if c.Owners == nil {
		c.Owners = []Owner{}
	}
	if c.Violations == nil {
		c.Violations = []Finding{}
	}
	if c.Warnings == nil {
		c.Warnings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(&c)
}

// maxNames is how many members of a group the Markdown report names.
const maxNames = 10

// Markdown writes the report as a pull-request comment: a one-line summary, then a table per
// kind of change, who must approve, and the findings at head.
func (r *Report) Markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "**mesh review** `%s` → `%s`: %s\n", r.Base, r.Head, r.Summary)
	r.writeBaseError(&b)
	if len(r.Access) > 0 {
		b.WriteString("\n### " + r.heading("Access changes") + "\n\n| Source | Destination | Before | After | Decided by (head) |\n|---|---|---|---|---|\n")
		for _, a := range r.Access {
			src, dst := pairCells(a)
			at := ""
			if a.Position != "" {
				at = " at `" + a.Position + "`"
			}
			after := a.Detail
			if i := strings.Index(after, "; before "); i >= 0 {
				after = after[:i]
			}
			after = strings.TrimPrefix(after, "now ")
			if a.Example != "" {
				at += "; e.g. `" + a.Example + "`"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s%s |\n", src, dst, cell(a.Before), cell(a.After), cell(after), escape(at))
		}
	}
	if len(r.Undecided) > 0 {
		b.WriteString("\n### ⚠ Access the review could not decide\n\n")
		b.WriteString("Check these by hand: the review could not prove whether their access changes.\n\n")
		b.WriteString("| Source | Destination | Before | After | Why |\n|---|---|---|---|---|\n")
		for _, a := range r.Undecided {
			src, dst := pairCells(a)
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", src, dst, cell(a.Before), cell(a.After), cell(a.Undecided))
		}
	}
	if len(r.Routing) > 0 {
		b.WriteString("\n### " + r.heading("Routing changes") + "\n\n| Service | Entry | Field | Before | After |\n|---|---|---|---|---|\n")
		for _, c := range r.Routing {
			fieldRows(&b, c.Service, c.Kind+" "+c.Change, c.Position, c.Fields)
		}
	}
	if len(r.Services) > 0 {
		b.WriteString("\n### " + r.heading("Services") + "\n\n| Service | Change | Field | Before | After |\n|---|---|---|---|---|\n")
		for _, c := range r.Services {
			fieldRows(&b, c.Service, c.Change, c.Position, c.Fields)
		}
	}
	if len(r.Mesh) > 0 {
		b.WriteString("\n### " + r.heading("Mesh settings") + "\n\n| Setting | Before | After |\n|---|---|---|\n")
		for _, f := range r.Mesh {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", cell(f.Field), cell(f.Before), cell(f.After))
		}
	}
	if len(r.Owners) > 0 {
		b.WriteString("\n### " + r.heading("Who must approve") + "\n\n")
		for _, o := range r.Owners {
			who := o.Owner
			if who == "" {
				who = "(no owners listed)"
			}
			fmt.Fprintf(&b, "- %s: %s\n", who, names(o.Services, len(o.Services), ""))
		}
	}
	if len(r.Violations) > 0 {
		b.WriteString("\n### Policy violations\n\n")
		for _, f := range r.Violations {
			fmt.Fprintf(&b, "- `%s`: %s\n", f.Position, f.Message)
		}
	}
	if len(r.Warnings) > 0 {
		b.WriteString("\n### Warnings\n\n")
		for _, f := range r.Warnings {
			fmt.Fprintf(&b, "- `%s`: %s\n", f.Position, f.Message)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// pairCells returns the Source and Destination cells of a pair or group.
func pairCells(a *Access) (src, dst string) {
	src, dst = cell(a.Source), cell(a.Destination)
	switch {
	case a.Source == "*" && a.Destination == "*":
		src = names(a.Sources, a.nSources, "source")
		dst = names(a.Destinations, a.nDests, "destination") + fmt.Sprintf(" (%d pairs without an intention of their own)", a.Pairs)
	case a.Source == "*":
		src = "all " + names(a.Sources, a.nSources, "source") + " without their own intention"
	case a.Destination == "*":
		dst = "all " + names(a.Destinations, a.nDests, "destination") + " without their own intention"
	}
	return src, dst
}

// names lists up to maxNames of the n names that list starts: "3 sources (a, b, c)" or, with
// noun "", just "a, b, c".
func names(list []string, n int, noun string) string {
	shown := list
	if len(shown) > maxNames {
		shown = shown[:maxNames]
	}
	s := strings.Join(shown, ", ")
	if n > len(shown) {
		s += fmt.Sprintf(", … %d more", n-len(shown))
	}
	if noun == "" {
		return s
	}
	return fmt.Sprintf("%d %ss (%s)", n, noun, s)
}

// cell escapes a table cell.
func cell(s string) string {
	if s == "" {
		return "—"
	}
	return escape(s)
}

// escape escapes text for a table cell.
func escape(s string) string { return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s) }

// fieldRows writes the rows of one changed element: one per changed field, or one alone.
func fieldRows(b *strings.Builder, service, change, position string, fields []FieldChange) {
	if position != "" {
		change += " (`" + position + "`)"
	}
	if len(fields) == 0 {
		fmt.Fprintf(b, "| %s | %s | | | |\n", service, change)
	}
	for _, f := range fields {
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", service, change, cell(f.Field), cell(f.Before), cell(f.After))
	}
}
