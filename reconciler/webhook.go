package reconciler

import (
	"container/list"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/meshgit/mesh/internal/httpjson"
)

// handleWebhook accepts a push notification from GitHub (X-Hub-Signature-256: the HMAC-SHA256
// of the body with the shared secret) or GitLab (X-Gitlab-Token: the secret itself). Anything
// unauthenticated, or an exact replay of an accepted delivery, is 401 and triggers nothing.
func (s *Server) handleWebhook(w http.ResponseWriter, r *http.Request) {
	secret := s.cfg.WebhookSecret
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxWebhookBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.metrics.webhooks.WithLabelValues("too_large").Inc()
			httpjson.Error(w, http.StatusRequestEntityTooLarge, "webhook body exceeds %d bytes", s.cfg.MaxWebhookBody)
			return
		}
		httpjson.Error(w, http.StatusBadRequest, "read body: %v", err)
		return
	}
	if len(secret) == 0 {
		s.metrics.webhooks.WithLabelValues("unauthorized").Inc()
		httpjson.Error(w, http.StatusUnauthorized, "webhook secret not configured on this server")
		return
	}
	var ok bool
	if sig := r.Header.Get("X-Hub-Signature-256"); sig != "" {
		ok = verifyGitHub(secret, body, sig)
	} else if tok := r.Header.Get("X-Gitlab-Token"); tok != "" {
		ok = equalSecret([]byte(tok), secret)
	}
	if !ok {
		s.metrics.webhooks.WithLabelValues("unauthorized").Inc()
		httpjson.Error(w, http.StatusUnauthorized, "missing or invalid webhook signature")
		return
	}
	sum := sha256.Sum256(body)
	if !s.webhooks.add(hex.EncodeToString(sum[:])) {
		s.metrics.webhooks.WithLabelValues("replayed").Inc()
		httpjson.Error(w, http.StatusUnauthorized, "replayed webhook delivery")
		return
	}
	if r.Header.Get("X-GitHub-Event") == "ping" {
		s.metrics.webhooks.WithLabelValues("ping").Inc()
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "pong"})
		return
	}
	s.metrics.webhooks.WithLabelValues("accepted").Inc()
	s.trigger()
	httpjson.Write(w, http.StatusAccepted, map[string]string{"status": "fetch scheduled"})
}

// trigger makes the leader look at Git now: directly here, or by asking the leader.
func (s *Server) trigger() {
	if s.IsLeader() {
		s.Kick()
		return
	}
	addr := s.leaderHTTP()
	if addr == "" {
		return // the next leader reconciles when it takes over
	}
	go func() {
		c := &Client{Addr: addr, Token: s.cfg.Token}
		ctx, cancel := contextWithTimeout(applyTimeout)
		defer cancel()
		if err := c.Reconcile(ctx); err != nil {
			s.log.Warn("forward webhook to leader", "leader", addr, "err", err)
		}
	}()
}

func verifyGitHub(secret, body []byte, header string) bool {
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// equalSecret compares in constant time, also with respect to the secrets' lengths.
func equalSecret(a, b []byte) bool {
	ha, hb := sha256.Sum256(a), sha256.Sum256(b)
	return hmac.Equal(ha[:], hb[:])
}

// replayCache remembers the digests of recently accepted deliveries. Distinct pushes always have
// distinct bodies (their before/after commits differ), so only a replay is refused.
type replayCache struct {
	mu   sync.Mutex
	max  int
	ll   *list.List
	seen map[string]*list.Element
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, ll: list.New(), seen: map[string]*list.Element{}}
}

// add records key and reports whether it was new.
func (c *replayCache) add(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[key]; ok {
		return false
	}
	c.seen[key] = c.ll.PushFront(key)
	if c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.seen, old.Value.(string))
	}
	return true
}
