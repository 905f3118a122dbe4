package redact

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pass@github.com/org/repo.git":                       "https://REDACTED@github.com/org/repo.git",
		"https://ghp_token@github.com/org/repo.git":                       "https://REDACTED@github.com/org/repo.git",
		`Get "http://x-access-token:s%40cret@127.0.0.1:1/r.git/info": no`: `Get "http://REDACTED@127.0.0.1:1/r.git/info": no`,
		"ssh://git:secret@host:22/r.git and https://a@b/c":                "ssh://REDACTED@host:22/r.git and https://REDACTED@b/c",
		"https://github.com/org/repo.git":                                 "https://github.com/org/repo.git",
		"git@github.com:org/repo.git":                                     "git@github.com:org/repo.git",
		"/srv/git/mesh.git":                                               "/srv/git/mesh.git",
		"https://github.com/org/repo.git?ref=a@b":                         "https://github.com/org/repo.git?ref=a@b",
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestError(t *testing.T) {
	err := Error(fmt.Errorf("fetch https://tok@host/r.git: %w", io.EOF))
	if got := err.Error(); got != "fetch https://REDACTED@host/r.git: EOF" {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(err, io.EOF) {
		t.Errorf("errors.Is lost the cause")
	}
	if Error(nil) != nil || Error(io.EOF) != io.EOF {
		t.Errorf("errors without credentials are changed")
	}
}
