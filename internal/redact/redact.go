// Package redact removes credentials from repository URLs before they are logged, returned in
// an API answer or printed. It guarantees that the user information of any scheme://user:pass@host
// URL in the text it is given (a password, or a token given as the user name) is replaced by
// REDACTED, whatever formatted the text.
package redact

import (
	"regexp"
	"strings"
)

// userinfo matches the scheme and user information of a URL inside any text.
var userinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@\s"'<>]+@`)

// URL returns u without its user information.
func URL(u string) string { return String(u) }

// String returns s with the user information of every URL in it replaced by REDACTED.
func String(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return userinfo.ReplaceAllString(s, "${1}REDACTED@")
}

// Error returns err with the credentials of URLs removed from its message (nil stays nil);
// errors.Is and errors.As still see the original.
func Error(err error) error {
	if err == nil {
		return nil
	}
	if msg := err.Error(); String(msg) != msg {
		return &redacted{err: err}
	}
	return err
}

type redacted struct{ err error }

func (e *redacted) Error() string { return String(e.err.Error()) }
func (e *redacted) Unwrap() error { return e.err }
