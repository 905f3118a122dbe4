package reconciler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to a server's HTTP API. Writes follow the 307 a follower answers with to the
// leader, carrying the token only to the addresses the cluster names.
type Client struct {
	Addr  string // host:port or http://host:port
	Token string
	HTTP  *http.Client // default: a client with a 30s timeout
}

// APIError is an error answer of the API.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Msg, e.Status) }

// Is maps answers to the package's sentinel errors.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrUnknownVersion:
		return e.Status == http.StatusNotFound
	case ErrNoLeader:
		return e.Status == http.StatusServiceUnavailable
	}
	return false
}

func baseURL(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimSuffix(addr, "/")
	}
	return "http://" + addr
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	noRedirect := *hc
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	target := baseURL(c.Addr) + path
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
		if err != nil {
			return err
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusTemporaryRedirect && hop < 3 {
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || loc.Scheme != "http" || loc.Path != path {
				return fmt.Errorf("%s %s: bad redirect to %q", method, path, resp.Header.Get("Location"))
			}
			target = loc.String()
			continue
		}
		if resp.StatusCode/100 != 2 {
			var e struct{ Error string }
			if json.Unmarshal(b, &e) != nil || e.Error == "" {
				e.Error = strings.TrimSpace(string(b))
			}
			return &APIError{Status: resp.StatusCode, Msg: e.Error}
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				return fmt.Errorf("%s %s: %w", method, path, err)
			}
		}
		return nil
	}
}

// Status fetches GET /v1/status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Snapshots fetches the history, newest first.
func (c *Client) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	var r struct{ Snapshots []SnapshotInfo }
	return r.Snapshots, c.do(ctx, http.MethodGet, "/v1/snapshots", nil, &r)
}

// Proxies fetches the proxies connected to the server.
func (c *Client) Proxies(ctx context.Context) ([]ProxyStatus, error) {
	var r struct{ Proxies []ProxyStatus }
	return r.Proxies, c.do(ctx, http.MethodGet, "/v1/proxies", nil, &r)
}

// Servers fetches the Raft configuration.
func (c *Client) Servers(ctx context.Context) ([]ServerStatus, error) {
	var r struct{ Servers []ServerStatus }
	return r.Servers, c.do(ctx, http.MethodGet, "/v1/servers", nil, &r)
}

// Pin makes the cluster serve version (from its history) until Unpin.
func (c *Client) Pin(ctx context.Context, version string) error {
	return c.do(ctx, http.MethodPost, "/v1/pin", PinRequest{Version: version}, nil)
}

// Unpin makes the cluster serve the newest snapshot again.
func (c *Client) Unpin(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/unpin", struct{}{}, nil)
}

// Join adds a server to the cluster.
func (c *Client) Join(ctx context.Context, req JoinRequest) error {
	return c.do(ctx, http.MethodPost, "/v1/join", req, nil)
}

// RemoveServer removes a server from the cluster.
func (c *Client) RemoveServer(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("no server id")
	}
	return c.do(ctx, http.MethodDelete, "/v1/servers/"+url.PathEscape(id), nil, nil)
}

// Reconcile asks the leader to look at Git now.
func (c *Client) Reconcile(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/reconcile", struct{}{}, nil)
}
