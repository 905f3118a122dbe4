package review

import (
	"fmt"
	"strings"
)

// BaseError records that base does not compile. The review then compares head with an empty
// mesh, so everything head holds shows as added: that is what head contains, not the change
// under review, and the report says so in its summary, its headings and its JSON.
type BaseError struct {
	Commit string    `json:"commit"`
	Errors []Finding `json:"errors"`
	// Note is the sentence the Markdown report opens with.
	Note string `json:"note"`
}

// SetBaseError records that base (commit) does not compile, with its errors, and updates the
// summary. Call it on a report made by Review(nil, head).
func (r *Report) SetBaseError(commit string, errs []Finding) {
	r.Base = commit
	r.BaseError = &BaseError{Commit: commit, Errors: errs, Note: fmt.Sprintf(
		"base %s does not compile (%d error%s), so this is not the change under review: head is compared with an empty mesh, and everything it holds shows as added",
		commit, len(errs), plural(len(errs)))}
	r.Summary = summary(r)
}

// baseBrokenPrefix starts the summary of a report whose base does not compile.
const baseBrokenPrefix = "base does not compile, head against an empty mesh: "

// heading returns a section heading, marked when base does not compile.
func (r *Report) heading(h string) string {
	if r.BaseError == nil {
		return h
	}
	return strings.Replace(h, " changes", "", 1) + " at head (against an empty mesh: base does not compile)"
}

// writeBaseError writes the warning and base's errors at the top of the Markdown report.
func (r *Report) writeBaseError(b *strings.Builder) {
	e := r.BaseError
	if e == nil {
		return
	}
	fmt.Fprintf(b, "\n> [!WARNING]\n> %s. Fix base, or review head on its own.\n>\n> Errors at base `%s`:\n", e.Note, e.Commit)
	for _, f := range e.Errors {
		if f.Position != "" {
			fmt.Fprintf(b, "> - `%s`: %s\n", f.Position, f.Message)
		} else {
			fmt.Fprintf(b, "> - %s\n", f.Message)
		}
	}
}
