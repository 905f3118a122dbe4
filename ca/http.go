package ca

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshgit/mesh/internal/httpjson"
)

// jsonReply writes the CA's replies; they carry certificates and tokens, so nothing caches them.
var jsonReply = httpjson.Style{NoStore: true}

// SignRequest is the body of POST /v1/ca/sign.
type SignRequest struct {
	Service string `json:"service"`
	CSR     string `json:"csr"` // PEM CERTIFICATE REQUEST
}

// TokenRequest is the body of POST /v1/tokens: a service token, or an operator token when Scope
// is "operator".
type TokenRequest struct {
	Service string `json:"service,omitempty"`
	Scope   Scope  `json:"scope,omitempty"` // default "service"
}

// TokenResponse answers POST /v1/tokens. Token is shown this once; the CA keeps only its hash.
type TokenResponse struct {
	ID      string `json:"id"`
	Scope   Scope  `json:"scope"`
	Service string `json:"service,omitempty"`
	Token   string `json:"token"`
}

// RotateResponse answers POST /v1/ca/rotate.
type RotateResponse struct {
	Active string  `json:"active"`
	Bundle *Bundle `json:"bundle"`
}

// maxBody bounds request bodies: a CSR is a few KiB.
const maxBody = 64 << 10

// Handler returns the CA's HTTP API, to be mounted on a server's mux as is:
//
//	POST   /v1/ca/sign     service or operator token → Leaf (429 with Retry-After when limited)
//	GET    /v1/ca/roots    no token → Bundle; with ?hash=H (a Bundle's Hash) a blocking query:
//	                       answered when the bundle's hash differs from H, or when ?wait
//	                       (default 5m, at most 10m) ends
//	POST   /v1/ca/rotate   operator token → RotateResponse
//	POST   /v1/tokens      operator token, TokenRequest → TokenResponse (201)
//	GET    /v1/tokens      operator token → {"tokens": [TokenInfo...]} (never a token or its hash)
//	DELETE /v1/tokens/{id} operator token
//
// Tokens come as "Authorization: Bearer TOKEN". A missing or unknown token is 401, a token whose
// scope does not cover the request 403; no token covers mesh.ServerService (see Authorize). Writes (rotate, tokens) go through the Store, so in a
// cluster they must reach the leader; signing and roots work on every server.
func (c *CA) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/ca/sign", c.handleSign)
	mux.HandleFunc("GET /v1/ca/roots", c.handleRoots)
	mux.HandleFunc("POST /v1/ca/rotate", c.operator(func(w http.ResponseWriter, r *http.Request) {
		if err := c.Rotate(r.Context(), nil); err != nil {
			c.writeErr(w, r, err)
			return
		}
		b, err := c.Bundle()
		if err != nil {
			c.writeErr(w, r, err)
			return
		}
		jsonReply.Write(w, http.StatusOK, RotateResponse{Active: c.State().Active().ID, Bundle: b})
	}))
	mux.HandleFunc("POST /v1/tokens", c.operator(func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequest
		if err := decodeBody(w, r, &req); err != nil {
			c.writeErr(w, r, err)
			return
		}
		if req.Scope == "" {
			req.Scope = ScopeService
		}
		tok, rec, err := c.CreateToken(r.Context(), req.Scope, req.Service)
		if err != nil {
			c.writeErr(w, r, err)
			return
		}
		jsonReply.Write(w, http.StatusCreated, TokenResponse{ID: rec.ID, Scope: rec.Scope, Service: rec.Service, Token: tok})
	}))
	mux.HandleFunc("GET /v1/tokens", c.operator(func(w http.ResponseWriter, r *http.Request) {
		jsonReply.Write(w, http.StatusOK, map[string][]TokenInfo{"tokens": c.Tokens()})
	}))
	mux.HandleFunc("DELETE /v1/tokens/{id}", c.operator(func(w http.ResponseWriter, r *http.Request) {
		if err := c.RevokeToken(r.Context(), r.PathValue("id")); err != nil {
			c.writeErr(w, r, err)
			return
		}
		jsonReply.Write(w, http.StatusOK, map[string]string{"status": "revoked"})
	}))
	return mux
}

// BearerToken returns the token of a request to the API, from "Authorization: Bearer TOKEN"
// ("" when there is none). Every handler of the API reads tokens through it.
func BearerToken(r *http.Request) string {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return strings.TrimSpace(tok)
}

func (c *CA) operator(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, err := c.Authorize(BearerToken(r), ""); err != nil {
			c.writeErr(w, r, err)
			return
		}
		h(w, r)
	}
}

func (c *CA) handleSign(w http.ResponseWriter, r *http.Request) {
	tok := BearerToken(r)
	// Unknown tokens are refused before the body is read.
	if _, err := c.Authorize(tok, ""); errors.Is(err, ErrUnauthorized) {
		c.writeErr(w, r, err)
		return
	}
	var req SignRequest
	if err := decodeBody(w, r, &req); err != nil {
		c.writeErr(w, r, err)
		return
	}
	if _, err := c.Authorize(tok, req.Service); err != nil {
		c.writeErr(w, r, err)
		return
	}
	leaf, wait, err := c.SignLimited(r.Context(), req.Service, []byte(req.CSR))
	if err != nil {
		if errors.Is(err, ErrRateLimited) {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		}
		c.writeErr(w, r, err)
		return
	}
	jsonReply.Write(w, http.StatusOK, leaf)
}

// rootsWait is how long GET /v1/ca/roots?hash= waits by default, and at most.
const (
	rootsWait    = 5 * time.Minute
	rootsMaxWait = 10 * time.Minute
)

func (c *CA) handleRoots(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	wait := rootsWait
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			c.writeErr(w, r, fmt.Errorf("%w: wait: not a positive duration", ErrBadRequest))
			return
		}
		wait = min(d, rootsMaxWait)
	}
	var timeout <-chan time.Time
	if q.Has("hash") {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		changed := c.cfg.RootsChanged()
		b, err := c.Bundle()
		if timeout == nil || err == nil && b.Hash != q.Get("hash") || err != nil && !errors.Is(err, ErrNotInitialized) {
			if err != nil {
				c.writeErr(w, r, err)
				return
			}
			jsonReply.Write(w, http.StatusOK, b)
			return
		}
		select {
		case <-changed:
		case <-timeout:
			timeout = nil // answer what there is
		case <-c.cfg.Stopping:
			timeout = nil
		case <-r.Context().Done():
			return
		}
	}
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body: %v", ErrBadRequest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the JSON body", ErrBadRequest)
	}
	return nil
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrBadCSR), errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrNotInitialized):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrRotating):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// writeErr answers with err. Error texts of this package never carry key material; errors from
// the Store (Raft) are passed through.
func (c *CA) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mesh"`)
	}
	if code >= 500 {
		c.log.Warn("ca request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		c.log.Debug("ca request refused", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	}
	jsonReply.Write(w, code, map[string]string{"error": err.Error()})
}

// retryAfter parses a Retry-After of seconds.
func retryAfter(h string) time.Duration {
	n, err := strconv.Atoi(h)
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}
