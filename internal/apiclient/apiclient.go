// Package apiclient is the one HTTP client of a mesh server's API, under the typed clients of
// reconciler (status, pins, servers) and ca (certificates, tokens): JSON in and out, a bearer
// token, a bounded answer, and the 307 Temporary Redirect a follower answers writes with,
// followed to the leader.
package apiclient

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

// Client is one server's API.
type Client struct {
	Addr  string // host:port or http(s)://host:port
	Token string // sent as a bearer token; "" for none
	HTTP  *http.Client
}

// Response is an answer of the API, of any status.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// ErrorMessage is the message of an error answer: its JSON "error" field, else its text.
func (r *Response) ErrorMessage() string {
	var e struct{ Error string }
	if json.Unmarshal(r.Body, &e) != nil || e.Error == "" {
		return strings.TrimSpace(string(r.Body))
	}
	return e.Error
}

// maxHops bounds the redirects followed: a follower names the leader, which answers.
const maxHops = 3

// Do sends in (nil: no body) as JSON to path and returns the answer, read up to limit bytes.
//
// A 307 is followed (a few hops) when it keeps the method's path and does not go from https to
// plain http, sending the body and the token again: Go's client would drop the token on a change
// of port, and followers name the leader on another one. The token goes only where the server
// that received it sends it; use https where the network between servers is not trusted.
func (c *Client) Do(ctx context.Context, method, path string, in any, limit int64) (*Response, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	noRedirect := *hc
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var payload []byte
	if in != nil {
		var err error
		if payload, err = json.Marshal(in); err != nil {
			return nil, err
		}
	}
	base := c.Addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	target := strings.TrimSuffix(base, "/") + path
	for hop := 0; ; hop++ {
		var body io.Reader
		if in != nil {
			body = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, target, body)
		if err != nil {
			return nil, err
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusTemporaryRedirect && hop < maxHops {
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || (loc.Scheme != "http" && loc.Scheme != "https") || loc.Path != path ||
				req.URL.Scheme == "https" && loc.Scheme != "https" {
				return nil, fmt.Errorf("%s %s: bad redirect to %q", method, path, resp.Header.Get("Location"))
			}
			target = loc.String()
			continue
		}
		return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
	}
}

// DecodeInto decodes a successful answer's body into out (nil: ignored).
func (r *Response) DecodeInto(method, path string, out any) error {
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(r.Body, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}
