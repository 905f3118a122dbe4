package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

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

// Client reads the catalog of a server (or an agent) for the CLI.
type Client struct {
	Addr  string // host:port or a URL
	Token string
	HTTP  *http.Client
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	api := apiclient.Client{Addr: c.Addr, Token: c.Token, HTTP: c.HTTP}
	resp, err := api.Do(ctx, method, path, in, 64<<20)
	if err != nil {
		return err
	}
	if err := ErrorOf(resp.Status, resp.ErrorMessage()); err != nil {
		return err
	}
	return resp.DecodeInto(method, path, out)
}

// Summary fetches GET /v1/catalog/summary.
func (c *Client) Summary(ctx context.Context) (*Summary, error) {
	var s Summary
	return &s, c.get(ctx, "/v1/catalog/summary", &s)
}

// Nodes fetches GET /v1/catalog/nodes.
func (c *Client) Nodes(ctx context.Context) ([]NodeJSON, error) {
	var out []NodeJSON
	return out, c.get(ctx, "/v1/catalog/nodes", &out)
}

// Health fetches GET /v1/health/service/{service}.
func (c *Client) Health(ctx context.Context, service string) ([]ServiceEntry, error) {
	var out []ServiceEntry
	return out, c.get(ctx, "/v1/health/service/"+url.PathEscape(service), &out)
}

// Register sends one registration (Consul's JSON) to PUT /v1/agent/service/register.
func (c *Client) Register(ctx context.Context, reg json.RawMessage) error {
	return c.do(ctx, http.MethodPut, "/v1/agent/service/register", reg, nil)
}

// Deregister sends PUT /v1/agent/service/deregister/{id}.
func (c *Client) Deregister(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPut, "/v1/agent/service/deregister/"+url.PathEscape(id), struct{}{}, nil)
}
