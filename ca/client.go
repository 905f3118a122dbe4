package ca

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
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
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	var payload []byte
	if in != nil {
		var err error
		if payload, err = json.Marshal(in); err != nil {
			return err
		}
	}
	base := c.Addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	target := strings.TrimSuffix(base, "/") + path
	// A follower answers writes with 307 to the leader: follow it (a few hops, same path only),
	// sending the token again, which Go's client would drop on a change of port.
	noRedirect := *hc
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var resp *http.Response
	var b []byte
	for hop := 0; ; hop++ {
		var body io.Reader
		if in != nil {
			body = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, target, body)
		if err != nil {
			return err
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		if resp, err = noRedirect.Do(req); err != nil {
			return err
		}
		b, err = io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusTemporaryRedirect && hop < 3 {
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || (loc.Scheme != "http" && loc.Scheme != "https") || loc.Path != path {
				return fmt.Errorf("%s %s: bad redirect to %q", method, path, resp.Header.Get("Location"))
			}
			target = loc.String()
			continue
		}
		break
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &APIError{Status: resp.StatusCode, Msg: e.Error, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
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

// RevokeToken removes a token by its ID (operator token).
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tokens/"+id, nil, nil)
}
