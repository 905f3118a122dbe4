package reconciler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/apiclient"
)

// Client talks to a server's HTTP API. Writes follow the 307 a follower answers with to the
// leader (internal/apiclient).
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
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrUnknownVersion, ErrUnknownServer:
		return e.Status == http.StatusNotFound
	case ErrNoLeader:
		return e.Status == http.StatusServiceUnavailable
	case ErrPeerRefused:
		return e.Status == http.StatusForbidden
	}
	return false
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	api := apiclient.Client{Addr: c.Addr, Token: c.Token, HTTP: c.HTTP}
	resp, err := api.Do(ctx, method, path, in, 64<<20)
	if err != nil {
		return err
	}
	if resp.Status/100 != 2 {
		return &APIError{Status: resp.Status, Msg: resp.ErrorMessage()}
	}
	return resp.DecodeInto(method, path, out)
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

// Snapshot fetches the snapshot of the given version from the server's history (whole: content,
// commit and positions). The caller checks it against its version if it matters.
func (c *Client) Snapshot(ctx context.Context, version string) (*mesh.Snapshot, error) {
	var s mesh.Snapshot
	if err := c.do(ctx, http.MethodGet, "/v1/snapshots/"+url.PathEscape(version), nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Proxies fetches the proxies connected to the server.
func (c *Client) Proxies(ctx context.Context) ([]ProxyStatus, error) {
	var r struct{ Proxies []ProxyStatus }
	return r.Proxies, c.do(ctx, http.MethodGet, "/v1/proxies", nil, &r)
}

// ClusterProxies fetches the proxies of every server of the cluster (GET /v1/proxies).
func (c *Client) ClusterProxies(ctx context.Context) (*ProxiesView, error) {
	var v ProxiesView
	return &v, c.do(ctx, http.MethodGet, "/v1/proxies", nil, &v)
}

// ProxyConfig fetches what the server holding node's streams set for it; typ ("" for all) is
// one of xds.ShortTypes.
func (c *Client) ProxyConfig(ctx context.Context, node, typ string) (*ProxyConfigView, error) {
	path := "/v1/proxies/" + url.PathEscape(node) + "/config"
	if typ != "" {
		path += "?type=" + url.QueryEscape(typ)
	}
	var v ProxyConfigView
	return &v, c.do(ctx, http.MethodGet, path, nil, &v)
}

// Members fetches every server of the Raft configuration with what it reports of itself.
func (c *Client) Members(ctx context.Context) (*MembersView, error) {
	var v MembersView
	return &v, c.do(ctx, http.MethodGet, "/v1/members", nil, &v)
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
	_, err := c.join(ctx, req)
	return err
}

func (c *Client) join(ctx context.Context, req JoinRequest) (JoinResponse, error) {
	var resp JoinResponse
	err := c.do(ctx, http.MethodPost, "/v1/join", req, &resp)
	return resp, err
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
