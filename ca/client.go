package ca

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/meshgit/mesh/internal/apiclient"
)

// Client talks to the CA endpoints of a server's HTTP API.
type Client struct {
	Addr  string // host:port or http(s)://host:port
	Token string
	HTTP  *http.Client // default: a client with a 30s timeout
}

// APIError is an error answer of the API. errors.Is maps it to the package's sentinel errors.
type APIError struct {
	Status     int
	Msg        string
	RetryAfter time.Duration
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Msg, e.Status) }

// Is maps the answer's status to a sentinel error.
func (e *APIError) Is(target error) bool {
	return target != nil && statusOf(target) == e.Status && e.Status != 500
}

// Temporary reports whether repeating the request later may succeed.
func (e *APIError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.doWith(ctx, c.HTTP, method, path, in, out)
}

func (c *Client) doWith(ctx context.Context, hc *http.Client, method, path string, in, out any) error {
	api := apiclient.Client{Addr: c.Addr, Token: c.Token, HTTP: hc}
	resp, err := api.Do(ctx, method, path, in, 4<<20)
	if err != nil {
		return err
	}
	if resp.Status/100 != 2 {
		return &APIError{Status: resp.Status, Msg: resp.ErrorMessage(), RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return resp.DecodeInto(method, path, out)
}

// Sign asks for a leaf for service.
func (c *Client) Sign(ctx context.Context, service string, csrPEM []byte) (*Leaf, error) {
	var l Leaf
	if err := c.do(ctx, http.MethodPost, "/v1/ca/sign", SignRequest{Service: service, CSR: string(csrPEM)}, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Roots returns the trust bundle.
func (c *Client) Roots(ctx context.Context) (*Bundle, error) {
	var b Bundle
	if err := c.do(ctx, http.MethodGet, "/v1/ca/roots", nil, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// RootsAfter is a blocking query for the trust bundle: it returns once the bundle's Hash
// differs from hash, or when wait ends (then possibly the same bundle). The request's timeout
// is wait and 10s more, whatever the Client's HTTP timeout.
func (c *Client) RootsAfter(ctx context.Context, hash string, wait time.Duration) (*Bundle, error) {
	hc := &http.Client{}
	if c.HTTP != nil {
		*hc = *c.HTTP
	}
	hc.Timeout = wait + 10*time.Second
	var b Bundle
	q := url.Values{"hash": {hash}, "wait": {wait.String()}}
	if err := c.doWith(ctx, hc, http.MethodGet, "/v1/ca/roots?"+q.Encode(), nil, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// Rotate makes a new root (operator token).
func (c *Client) Rotate(ctx context.Context) (*RotateResponse, error) {
	var r RotateResponse
	if err := c.do(ctx, http.MethodPost, "/v1/ca/rotate", struct{}{}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// CreateToken makes a token (operator token).
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (*TokenResponse, error) {
	var r TokenResponse
	if err := c.do(ctx, http.MethodPost, "/v1/tokens", req, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Tokens lists the tokens (operator token); never a token itself.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var r struct{ Tokens []TokenInfo }
	if err := c.do(ctx, http.MethodGet, "/v1/tokens", nil, &r); err != nil {
		return nil, err
	}
	return r.Tokens, nil
}

// RevokeToken removes a token by its ID (operator token).
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tokens/"+id, nil, nil)
}
