package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/internal/tlsutil"
	"github.com/meshgit/mesh/reconciler"
)

// The environment of the commands that talk to a server's HTTP API, like Consul's CONSUL_HTTP_*.
const (
	envHTTPAddr  = "MESH_HTTP_ADDR"       // --http
	envCACert    = "MESH_CACERT"          // --ca-file
	envToken     = "MESH_HTTP_TOKEN"      // the token itself
	envTokenFile = "MESH_HTTP_TOKEN_FILE" // --token-file
	envTokenOld  = "MESH_TOKEN"           // the older name of MESH_HTTP_TOKEN, still read
)

// apiEnvHelp is the part of --help that says where the API commands find the server and token.
const apiEnvHelp = `
The server is found at --http ($MESH_HTTP_ADDR, default 127.0.0.1:8500): host:port, or a URL.
With --ca-file ($MESH_CACERT) the server is reached over HTTPS and verified against that CA
(mesh-ca.pem of mesh tls ca create). Write commands send a token from, in order: --token-file,
$MESH_HTTP_TOKEN, $MESH_HTTP_TOKEN_FILE, or ./mesh-data/token when --http is a loopback address
(never to another host).`

// apiFlags are the flags of the commands that talk to a server's HTTP API.
type apiFlags struct {
	http      string
	tokenFile string
	caFile    string
	format    string

	tokenFrom string // where the token sent came from ("" for none), for error messages
	url       string // the server's URL, for error messages
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (a *apiFlags) add(cmd *cobra.Command, write, format bool) {
	cmd.Flags().StringVar(&a.http, "http", envOr(envHTTPAddr, reconciler.DefaultHTTPAddr), "HTTP address or URL of a mesh server ($"+envHTTPAddr+")")
	cmd.Flags().StringVar(&a.caFile, "ca-file", os.Getenv(envCACert), "CA certificate to verify the server with; implies https ($"+envCACert+")")
	if write {
		cmd.Flags().StringVar(&a.tokenFile, "token-file", "", "file holding the write token (default: $"+envToken+", $"+envTokenFile+", else ./"+reconciler.DefaultDataDir+"/token for a loopback --http)")
	}
	if format {
		cmd.Flags().StringVar(&a.format, "format", "text", "output format: text or json")
	}
	if !strings.Contains(cmd.Long, "$"+envHTTPAddr) {
		if cmd.Long == "" {
			cmd.Long = cmd.Short + "."
		}
		cmd.Long += "\n" + apiEnvHelp
	}
}

// serverURL returns addr as a URL: https when a CA file is given, else http, unless addr has a scheme.
func serverURL(addr, caFile string) string {
	if strings.Contains(addr, "://") {
		return addr
	}
	if caFile != "" {
		return "https://" + addr
	}
	return "http://" + addr
}

// apiHTTPClient returns the HTTP client of the API commands: verifying the server with caFile if given.
func apiHTTPClient(caFile string) (*http.Client, error) {
	c := &http.Client{Timeout: 30 * time.Second}
	if caFile == "" {
		return c, nil
	}
	pool, err := tlsutil.LoadCAFile(caFile)
	if err != nil {
		return nil, usageError{fmt.Errorf("--ca-file: %w", err)}
	}
	c.Transport = &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, ForceAttemptHTTP2: true}
	return c, nil
}

// isLoopback reports whether the URL's host is a loopback address (or localhost).
func isLoopback(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// token finds the write token (see apiEnvHelp) and records where it came from.
func (a *apiFlags) token() (string, error) {
	read := func(file, from string) (string, error) {
		tok, err := readToken(file)
		if err == nil {
			a.tokenFrom = from
		}
		return tok, err
	}
	switch {
	case a.tokenFile != "":
		return read(a.tokenFile, "--token-file "+a.tokenFile)
	case os.Getenv(envToken) != "":
		a.tokenFrom = "$" + envToken
		return os.Getenv(envToken), nil
	case os.Getenv(envTokenFile) != "":
		f := os.Getenv(envTokenFile)
		return read(f, "$"+envTokenFile+" ("+f+")")
	case os.Getenv(envTokenOld) != "":
		a.tokenFrom = "$" + envTokenOld
		return os.Getenv(envTokenOld), nil
	case isLoopback(a.url):
		// The local server's token, only ever sent to this host.
		f := filepath.Join(reconciler.DefaultDataDir, "token")
		if tok, err := read(f, "./"+reconciler.DefaultDataDir+"/token"); err == nil {
			return tok, nil
		}
	}
	return "", nil
}

func (a *apiFlags) client(write bool) (*reconciler.Client, error) {
	if a.format != "" && a.format != "text" && a.format != "json" {
		return nil, usageError{fmt.Errorf("--format must be text or json, not %q", a.format)}
	}
	a.url = serverURL(a.http, a.caFile)
	hc, err := apiHTTPClient(a.caFile)
	if err != nil {
		return nil, err
	}
	c := &reconciler.Client{Addr: a.url, HTTP: hc}
	if write {
		if c.Token, err = a.token(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// explain adds to err what to do about it: where the token came from on a 401, how to point the
// command at a server when none answers, how to trust or reach an HTTPS server.
func (a *apiFlags) explain(err error) error {
	if err == nil {
		return nil
	}
	status, msg := 0, ""
	var re *reconciler.APIError
	var ce *ca.APIError
	switch {
	case errors.As(err, &re):
		status, msg = re.Status, re.Msg
	case errors.As(err, &ce):
		status, msg = ce.Status, ce.Msg
	}
	switch {
	case status == http.StatusUnauthorized && a.tokenFrom == "":
		return fmt.Errorf("%w\nno token was sent: give --token-file FILE, or set $%s or $%s (./%s/token is sent only to a loopback --http)",
			err, envToken, envTokenFile, reconciler.DefaultDataDir)
	case status == http.StatusUnauthorized:
		return fmt.Errorf("%w\nthe token sent came from %s; the server accepts its own --token-file token (default DATA/token), an operator token (mesh token create --operator), and for a service's certificates that service's token (mesh token create --service)", err, a.tokenFrom)
	case status == http.StatusBadRequest && strings.Contains(msg, "HTTPS server"):
		return fmt.Errorf("%w\nthe server at %s speaks HTTPS: give --ca-file (or $%s) with its CA, or --http https://...", err, a.url, envCACert)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w\nno mesh server answers at %s: start one (mesh serve), or point --http or $%s at one", err, a.url, envHTTPAddr)
	case isCertError(err):
		return fmt.Errorf("%w\nthe certificate of %s is not trusted: give the cluster's CA with --ca-file or $%s (mesh-ca.pem of mesh tls ca create)", err, a.url, envCACert)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w\nthe server at %s speaks plain HTTP: use --http http://... without --ca-file", err, a.url)
	}
	return err
}

func isCertError(err error) bool {
	var verify *tls.CertificateVerificationError
	return errors.As(err, &verify)
}

func apiContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), 30*time.Second)
}

// call makes one request to the server with a bounded context; write requests carry the token.
// An error is prefixed with what.
func (a *apiFlags) call(cmd *cobra.Command, write bool, what string, f func(context.Context, *reconciler.Client) error) error {
	return a.explain(withClient(cmd, func() (*reconciler.Client, error) { return a.client(write) }, what, f))
}

// withClient makes a client, then one request with it under a bounded context. An error of the
// request is prefixed with what, unless what is empty.
func withClient[C any](cmd *cobra.Command, client func() (C, error), what string, f func(context.Context, C) error) error {
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := apiContext(cmd)
	defer cancel()
	if err := f(ctx, c); err != nil {
		if what == "" {
			return err
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
