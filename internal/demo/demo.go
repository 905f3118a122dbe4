package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/meshgit/mesh/internal/freeport"
)

type options struct {
	example string        // repo-example to copy; found from the working directory when ""
	keep    bool          // keep the temporary directory
	timeout time.Duration // the whole demo
}

// The calls the demo makes: web may charge a card (an L7 permission of repo-example's
// teams/payments.cue), and may not refund one until the demo's commit allows it.
const (
	chargeMethod = "/shop.payments.Payments/Charge"
	refundMethod = "/shop.payments.Payments/Refund"
)

// demo is one run: its temporary directory, the processes it started and its addresses.
type demo struct {
	out   io.Writer
	self  string // this executable, which plays mesh and the services (main.go)
	dir   string
	repo  string // the Git repository the server follows
	procs []*proc
	http  string
	xds   string
}

// proc is a long-running child process, its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func run(ctx context.Context, out io.Writer, o options) (err error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	example := o.example
	if example == "" {
		if example, err = findExample(); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "mesh-demo-")
	if err != nil {
		return err
	}
	d := &demo{out: out, self: self, dir: dir, repo: filepath.Join(dir, "repo")}
	defer func() {
		d.stopAll()
		if o.keep {
			d.say("kept %s", dir)
		} else {
			os.RemoveAll(dir)
		}
		if err != nil {
			d.showLogs()
		}
	}()
	return d.steps(ctx, example)
}

func (d *demo) steps(ctx context.Context, example string) error {
	ports, err := freeport.Addrs(4)
	if err != nil {
		return err
	}
	d.http, d.xds = ports[0], ports[1]
	raft, paymentsAddr := ports[2], ports[3]

	d.step("1. A Git repository with a copy of repo-example; payments' endpoint is %s", paymentsAddr)
	if err := d.makeRepo(ctx, example, paymentsAddr); err != nil {
		return err
	}
	d.step("2. A mesh server following it")
	data := filepath.Join(d.dir, "data")
	if _, err := d.start(ctx, "mesh-serve", nil, "serve", "--repo", d.repo, "--ref", "main", "--data", data,
		"--http", d.http, "--xds", d.xds, "--raft", raft,
		// Everything the demo runs is on this machine; repo-example's other endpoints are not.
		"--check-allow", "127.0.0.0/8"); err != nil {
		return err
	}
	st, err := d.waitVersion(ctx, "")
	if err != nil {
		return err
	}
	d.say("serving version %s of commit %.12s", st.Version, st.Commit)

	d.step("3. Identities: a token, an agent keeping certificates, and a gRPC bootstrap per service")
	boot := map[string]string{}
	for _, svc := range []string{"payments", "web"} {
		if boot[svc], err = d.identity(ctx, svc, filepath.Join(data, "token")); err != nil {
			return err
		}
	}

	d.step("4. The payments service: a proxyless gRPC server on %s, configured over xDS", paymentsAddr)
	srv, err := d.start(ctx, "payments", []string{roleEnv + "=payments", "GRPC_XDS_BOOTSTRAP=" + boot["payments"]}, "--listen", paymentsAddr)
	if err != nil {
		return err
	}
	if err := d.waitLog(ctx, srv, "serving on", 30*time.Second); err != nil {
		return err
	}
	d.say("payments is serving: its listener, mTLS and RBAC came from the mesh server")

	d.step("5. web calls payments: %s is allowed, %s is not", chargeMethod, refundMethod)
	d.say("$ GRPC_XDS_BOOTSTRAP=%s call xds:///payments METHOD", boot["web"])
	if err := d.expectCall(ctx, boot["web"], chargeMethod, callAllowed); err != nil {
		return err
	}
	if err := d.expectCall(ctx, boot["web"], refundMethod, callDenied); err != nil {
		return err
	}
	if _, err := d.mesh(ctx, 1, "intention", "check", "web", "payments", "--dir", d.repo, "--method", "POST", "--path", refundMethod); err != nil {
		return err
	}

	d.step("6. A commit lets web refund, and the server serves it")
	committed := time.Now()
	if err := d.allowRefund(ctx); err != nil {
		return err
	}
	st2, err := d.waitVersion(ctx, st.Version)
	if err != nil {
		return err
	}
	d.say("serving version %s of commit %.12s, %.1fs after the commit", st2.Version, st2.Commit, time.Since(committed).Seconds())

	d.step("7. The call that was denied goes through")
	start := time.Now()
	for {
		code, text, err := d.call(ctx, boot["web"], refundMethod)
		if err != nil {
			return err
		}
		if code == callAllowed {
			d.say("web → payments %s: allowed (%s), %.1fs after the commit", refundMethod, text, time.Since(committed).Seconds())
			break
		}
		if code != callDenied || time.Since(start) > 30*time.Second {
			return fmt.Errorf("%s still refused %.0fs after the commit was served: %s", refundMethod, time.Since(start).Seconds(), text)
		}
		d.say("web → payments %s: still denied (%s); retrying", refundMethod, text)
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	d.step("Done: stopping the %d processes and removing %s", len(d.procs), d.dir)
	return nil
}

// makeRepo copies example into a new Git repository, with payments' endpoints replaced by one on
// addr (the gRPC server gets its listener for each endpoint of its service), and commits it.
func (d *demo) makeRepo(ctx context.Context, example, addr string) error {
	if err := os.CopyFS(d.repo, os.DirFS(example)); err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	file := filepath.Join(d.repo, "teams", "payments.cue")
	err := editFile(file, regexp.MustCompile(`(?s)endpoints: \[.*?\n\t\]`),
		fmt.Sprintf(`endpoints: [{address: %q, port: %s, datacenter: "dc1"}]`, host, port))
	if err != nil {
		return err
	}
	// The servers check payments' endpoint with its healthCheck, and the demo's server serves
	// only mTLS (its listener comes from the mesh): a plaintext grpc.health.v1 probe could not
	// pass, a TCP connect does.
	err = editFile(file, regexp.MustCompile(`healthCheck: \{grpc: [^}]*\}`), `healthCheck: {tcp: true, interval: "10s", timeout: "2s"}`)
	if err != nil {
		return err
	}
	if err := d.git(ctx, "init", "-q", "-b", "main"); err != nil {
		return err
	}
	return d.commit(ctx, "the shop's mesh, payments on "+addr)
}

// allowRefund changes web's intention into payments to allow refunds too, and commits it.
func (d *demo) allowRefund(ctx context.Context) error {
	file := filepath.Join(d.repo, "teams", "payments.cue")
	charge := `{action: "allow", http: {path: "` + chargeMethod + `", methods: ["POST"]}}`
	refund := `{action: "allow", http: {path: "` + refundMethod + `", methods: ["POST"]}}`
	if err := editFile(file, regexp.MustCompile(regexp.QuoteMeta(`web: permissions: [`+charge+`]`)),
		`web: permissions: [`+charge+`, `+refund+`]`); err != nil {
		return err
	}
	d.say("teams/payments.cue: web: permissions: [%s, %s]", charge, refund)
	return d.commit(ctx, "payments: let web refund")
}

func (d *demo) commit(ctx context.Context, msg string) error {
	if err := d.git(ctx, "add", "-A"); err != nil {
		return err
	}
	if err := d.git(ctx, "commit", "-q", "-m", msg); err != nil {
		return err
	}
	d.say("$ git commit -m %q", msg)
	return nil
}

func (d *demo) git(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = d.repo
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=demo", "GIT_AUTHOR_EMAIL=demo@example.com",
		"GIT_COMMITTER_NAME=demo", "GIT_COMMITTER_EMAIL=demo@example.com")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, b)
	}
	return nil
}

// identity gives svc a service token, starts its agent and writes its gRPC bootstrap; it returns
// the bootstrap's path once the agent has written the certificates.
func (d *demo) identity(ctx context.Context, svc, adminToken string) (string, error) {
	var tok string
	deadline := time.Now().Add(20 * time.Second)
	for {
		// The CA exists once the leader has applied the first snapshot; until then, 503.
		out, err := d.meshQuiet(ctx, "token", "create", "--service", svc, "--http", d.http, "--token-file", adminToken)
		if err == nil {
			lines := strings.Fields(strings.TrimSpace(out))
			tok = lines[len(lines)-1] // the token is the last line of stdout
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("mesh token create --service %s: %v", svc, err)
		}
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return "", err
		}
	}
	tokFile := filepath.Join(d.dir, svc+".token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	d.say("$ mesh token create --service %s > %s", svc, tokFile)
	certs := filepath.Join(d.dir, "certs", svc)
	if _, err := d.start(ctx, "agent-"+svc, nil, "agent", "--service", svc, "--dir", certs, "--token-file", tokFile, "--http", d.http); err != nil {
		return "", err
	}
	if err := waitFiles(ctx, 20*time.Second, filepath.Join(certs, "cert.pem"), filepath.Join(certs, "key.pem"), filepath.Join(certs, "ca.pem")); err != nil {
		return "", fmt.Errorf("agent of %s: %w", svc, err)
	}
	id, notAfter, err := identityOf(filepath.Join(certs, "cert.pem"))
	if err != nil {
		return "", err
	}
	d.say("%s/{cert,key,ca}.pem written: %s, valid until %s", certs, id, notAfter.Format(time.RFC3339))
	out, err := d.mesh(ctx, 0, "grpc", "bootstrap", "--service", svc, "--cert-dir", certs, "--xds", d.xds)
	if err != nil {
		return "", err
	}
	boot := filepath.Join(d.dir, svc+"-bootstrap.json")
	return boot, os.WriteFile(boot, []byte(out), 0o644)
}

// mesh runs one mesh command, prints it and its output, and checks its exit status.
func (d *demo) mesh(ctx context.Context, wantStatus int, args ...string) (string, error) {
	d.say("$ mesh %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, d.self, args...)
	cmd.Env = append(os.Environ(), roleEnv+"=mesh")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	status := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		status = ee.ExitCode()
	} else if err != nil {
		return "", err
	}
	if args[0] != "grpc" { // the bootstrap is long JSON; it goes to a file
		indent(d.out, stdout.String()+stderr.String())
	}
	if status != wantStatus {
		return "", fmt.Errorf("mesh %s: exit status %d, want %d: %s", args[0], status, wantStatus, stderr.String())
	}
	return stdout.String(), nil
}

// meshQuiet runs one mesh command without printing anything.
func (d *demo) meshQuiet(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.self, args...)
	cmd.Env = append(os.Environ(), roleEnv+"=mesh")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// expectCall makes one call as web and checks the verdict.
func (d *demo) expectCall(ctx context.Context, boot, method string, want int) error {
	code, text, err := d.call(ctx, boot, method)
	if err != nil {
		return err
	}
	verdict := map[int]string{callAllowed: "allowed", callDenied: "denied"}
	if code != want {
		return fmt.Errorf("%s: %s (%s), want %s", method, verdictOf(code), text, verdict[want])
	}
	d.say("web → payments %s: %s (%s)", method, verdict[code], text)
	return nil
}

func verdictOf(code int) string {
	switch code {
	case callAllowed:
		return "allowed"
	case callDenied:
		return "denied"
	}
	return "failed"
}

// call runs the call role once with web's bootstrap: a new process, so a new connection that
// meets the server's current RBAC.
func (d *demo) call(ctx context.Context, boot, method string) (int, string, error) {
	cmd := exec.CommandContext(ctx, d.self, "--method", method)
	cmd.Env = append(os.Environ(), roleEnv+"=call", "GRPC_XDS_BOOTSTRAP="+boot)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return callAllowed, strings.TrimSpace(out.String()), nil
	case errors.As(err, &ee) && ee.ExitCode() == callDenied:
		return callDenied, strings.TrimSpace(out.String()), nil
	case errors.As(err, &ee):
		return callFailed, "", fmt.Errorf("call %s: %s", method, strings.TrimSpace(out.String()))
	}
	return callFailed, "", err
}

// start starts a long-running child: mesh with args (env nil), or a role of env.
func (d *demo) start(ctx context.Context, name string, env []string, args ...string) (*proc, error) {
	if env == nil {
		env = []string{roleEnv + "=mesh"}
		d.say("$ mesh %s &", strings.Join(args, " "))
	} else {
		d.say("$ %s %s %s &", strings.Join(env[1:], " "), name, strings.Join(args, " "))
	}
	if err := os.MkdirAll(filepath.Join(d.dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	p := &proc{name: name, log: filepath.Join(d.dir, "logs", name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(d.self, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = childAttr()
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	d.procs = append(d.procs, p)
	go func() {
		p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// stopAll stops the children, newest first: SIGTERM, then SIGKILL after 5s.
func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			d.say("%s did not stop in 5s; killing it", p.name)
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	d.procs = nil
}

// showLogs prints the end of every child's log, to explain a failure.
func (d *demo) showLogs() {
	entries, _ := os.ReadDir(filepath.Join(d.dir, "logs"))
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(d.dir, "logs", e.Name()))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(d.out, "--- %s (last lines)\n%s\n", e.Name(), strings.Join(lines, "\n"))
	}
}

type serverStatus struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
}

// waitVersion polls /v1/status until the server serves a version other than old.
func (d *demo) waitVersion(ctx context.Context, old string) (serverStatus, error) {
	deadline := time.Now().Add(30 * time.Second)
	var st serverStatus
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + d.http + "/v1/status"); err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil && st.Version != "" && st.Version != old {
				return st, nil
			}
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return st, err
		}
	}
	return st, fmt.Errorf("the server served no new version in 30s (still %q)", st.Version)
}

// waitLog waits until p's log has a line containing want.
func (d *demo) waitLog(ctx context.Context, p *proc, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(p.log)
		if bytes.Contains(b, []byte(want)) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited", p.name)
		default:
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: no %q in %s", p.name, want, timeout)
}

func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n==> "+format+"\n", args...)
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "    "+format+"\n", args...)
}

func indent(w io.Writer, text string) {
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if line != "" {
			fmt.Fprintf(w, "      %s\n", line)
		}
	}
}

// identityOf returns the URI SAN (the SPIFFE ID) of the first certificate of a PEM file.
func identityOf(file string) (string, time.Time, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", time.Time{}, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", time.Time{}, fmt.Errorf("%s: no PEM block", file)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%s: %w", file, err)
	}
	if len(cert.URIs) != 1 {
		return "", time.Time{}, fmt.Errorf("%s: %d URI SANs, want one SPIFFE ID", file, len(cert.URIs))
	}
	return cert.URIs[0].String(), cert.NotAfter, nil
}

func editFile(file string, re *regexp.Regexp, repl string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if !re.Match(b) {
		return fmt.Errorf("%s: no match for %s (has repo-example changed?)", file, re)
	}
	return os.WriteFile(file, re.ReplaceAll(b, []byte(repl)), 0o644)
}

func waitFiles(ctx context.Context, timeout time.Duration, files ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := ""
		for _, f := range files {
			if _, err := os.Stat(f); err != nil {
				missing = f
				break
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %s", missing, timeout)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// findExample finds repo-example in the working directory or above it (the module's root).
func findExample() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 10 {
		p := filepath.Join(dir, "repo-example")
		if _, err := os.Stat(filepath.Join(p, "mesh.cue")); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("repo-example not found from the working directory; pass -example DIR")
}
