package reconciler

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/testutil"
)

// Credentials in a repository URL, a password or a token given as the user name, appear in no
// log line and no status field, though the fetch fails and is logged with go-git's error.
func TestRepoCredentialsRedacted(t *testing.T) {
	git := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "go away", http.StatusInternalServerError)
	}))
	defer git.Close()
	for _, tc := range []struct{ name, userinfo, secret string }{
		{"password", "x-access-token:s3cret-pass", "s3cret-pass"},
		{"token as user", "ghp_s3cretToken", "ghp_s3cretToken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, host := range []string{git.Listener.Addr().String(), "127.0.0.1:1"} { // an error answer; a refused connection
				log := &testutil.SyncBuffer{}
				cfg := testConfig(t, "http://"+tc.userinfo+"@"+host+"/org/mesh.git", nodeOpts{})
				cfg.Log = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
				s := startServer(t, cfg)
				waitFor(t, 20*time.Second, "a failed fetch to be logged", func() bool {
					return strings.Contains(log.String(), "reconcile failed")
				})
				resp, err := http.Get("http://" + s.HTTPAddr() + "/v1/status")
				if err != nil {
					t.Fatal(err)
				}
				status, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				s.Close(t.Context())
				if out := log.String() + string(status); strings.Contains(out, tc.secret) {
					t.Errorf("%s: the secret appears in the log or status:\n%s", host, out)
				}
				if !strings.Contains(log.String(), "http://REDACTED@"+host) {
					t.Errorf("%s: the log does not name the repository:\n%s", host, log.String())
				}
			}
		})
	}
}
