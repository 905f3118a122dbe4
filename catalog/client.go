package catalog

import (
	"context"
	"fmt"
	"net/http"

	"github.com/meshgit/mesh/internal/apiclient"
)

// HTTPSubmitter returns a Submitter that sends commands to PUT /v1/catalog/command of the
// server at addr (following a follower's redirect to the leader), with the caller's token.
func HTTPSubmitter(addr string, hc *http.Client) Submitter {
	return func(ctx context.Context, token string, c Command) error {
		api := apiclient.Client{Addr: addr, Token: token, HTTP: hc}
		resp, err := api.Do(ctx, http.MethodPut, "/v1/catalog/command", c, 64<<10)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return ErrorOf(resp.Status, resp.ErrorMessage())
	}
}

// ErrorOf turns an answer of the catalog's API back into this package's errors, keeping the
// server's message.
func ErrorOf(status int, msg string) error {
	var sentinel error
	switch {
	case status/100 == 2:
		return nil
	case status == http.StatusBadRequest:
		sentinel = ErrBadRequest
	case status == http.StatusUnauthorized:
		sentinel = ErrUnauthorized
	case status == http.StatusForbidden:
		sentinel = ErrForbidden
	case status == http.StatusNotFound:
		sentinel = ErrNotFound
	default:
		return fmt.Errorf("%w: HTTP %d: %s", ErrUnavailable, status, msg)
	}
	return remoteError{sentinel, msg}
}

// remoteError is a server's refusal: its message, matching the sentinel.
type remoteError struct {
	sentinel error
	msg      string
}

func (e remoteError) Error() string { return e.msg }
func (e remoteError) Unwrap() error { return e.sentinel }
