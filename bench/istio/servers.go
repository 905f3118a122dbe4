package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgit/mesh/internal/adsclient"
	"github.com/meshgit/mesh/internal/freeport"
)

// A server under comparison: how to lay out its configuration, start it, name its proxies and
// make the authorization change.
type server interface {
	Name() string
	XDS() adsclient.Options
	// Setup writes the configuration of variant 0 for n services under work.
	Setup(work string, n int) error
	// Start starts the server process, its output going to log.
	Start(log *os.File) (*proc, error)
	XDSAddr() string
	// Node is the node of the proxy of service i's first instance; id tells proxies of the same
	// instance apart (the readiness probe).
	Node(i int, id string) *corev3.Node
	// Change makes the authorization change to variant (the user's action: Istio's file replaced,
	// mesh's commit made) and returns when it began.
	Change(variant int) (time.Time, error)
}

// proc is a running server process.
type proc struct {
	cmd  *exec.Cmd
	done chan error
}

func startProc(log *os.File, dir string, env []string, name string, args ...string) (*proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// exited reports the process's exit if it has ended.
func (p *proc) exited() error {
	select {
	case err := <-p.done:
		p.done <- err
		return fmt.Errorf("server exited: %v", err)
	default:
		return nil
	}
}

// stop ends the process: SIGTERM, then SIGKILL after 15 s.
func (p *proc) stop() {
	if p.exited() != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// memory reads the process's resident set (VmRSS) and its peak (VmHWM) in bytes.
func (p *proc) memory() (rss, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return rss, peak
}

// cpu is the process's user and system CPU time so far (its threads included).
func (p *proc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// istiod is Istio's pilot-discovery without Kubernetes: its configuration from a directory
// (meshConfig configSources fs://), the services from ServiceEntries there.
type istiod struct {
	bin, dir, config string
	n                int
	addrs            []string // http, grpc (plaintext xDS), secure grpc, monitoring, https
	delta            bool
	env              []string // extra settings
}

func (s *istiod) Name() string { return "istiod" }

func (s *istiod) XDS() adsclient.Options {
	return adsclient.Options{Delta: s.delta, Follow: true, Retry: true}
}

func (s *istiod) XDSAddr() string { return s.addrs[1] }

func (s *istiod) Setup(work string, n int) error {
	s.dir, s.config, s.n = work, filepath.Join(work, "config"), n
	if err := writeIstioConfig(s.config, n, 0); err != nil {
		return err
	}
	return writeFile(work, "mesh.yaml", istioMeshConfig(s.config))
}

func (s *istiod) Start(log *os.File) (*proc, error) {
	addrs, err := freeport.Addrs(5)
	if err != nil {
		return nil, err
	}
	s.addrs = addrs
	env := []string{"POD_NAMESPACE=istio-system", "POD_NAME=istiod-bench", "REVISION=default"}
	env = append(env, s.env...)
	return startProc(log, s.dir, env, s.bin, "discovery",
		"--meshConfig", filepath.Join(s.dir, "mesh.yaml"),
		"--networksConfig", filepath.Join(s.dir, "meshNetworks.yaml"),
		"--registries=", "--clusterRegistriesNamespace=istio-system",
		"--httpAddr", addrs[0], "--grpcAddr", addrs[1], "--secureGRPCAddr", addrs[2],
		"--monitoringAddr", addrs[3], "--httpsAddr", addrs[4],
		"--domain", "cluster.local", "--log_output_level", "default:warn")
}

func (s *istiod) Node(i int, id string) *corev3.Node {
	ip := instanceIP(i, 1)
	pod := fmt.Sprintf("%s-%s", serviceName(i), id)
	meta, _ := structpb.NewStruct(map[string]any{
		"NAMESPACE":       namespace,
		"LABELS":          map[string]any{"app": serviceName(i)},
		"INSTANCE_IPS":    ip,
		"ISTIO_VERSION":   "1.31.0",
		"SERVICE_ACCOUNT": serviceName(i),
		"WORKLOAD_NAME":   serviceName(i),
		"CLUSTER_ID":      "Kubernetes",
		"MESH_ID":         trustDomain,
		"POD_PORTS":       fmt.Sprintf(`[{"name":"http","containerPort":%d,"protocol":"TCP"}]`, appPort),
	})
	return &corev3.Node{Id: fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", ip, pod, namespace, namespace),
		Cluster: serviceName(i) + "." + namespace, Metadata: meta, UserAgentName: "envoy"}
}

// Change replaces authz.yaml in one rename, so istiod's watcher sees one change.
func (s *istiod) Change(variant int) (time.Time, error) {
	text, err := istioAuthz(s.n, variant)
	if err != nil {
		return time.Time{}, err
	}
	tmp := filepath.Join(s.dir, "authz.yaml.tmp") // outside the watched directory: same file system
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return time.Time{}, err
	}
	t := time.Now()
	return t, os.Rename(tmp, filepath.Join(s.config, "authz.yaml"))
}

// meshServe is `mesh serve` (built from this repository) following a Git repository.
type meshServe struct {
	bin, dir, repo string
	n              int
	addrs          []string // http, xds, raft
	delta          bool
	memLimit       string // --memory-limit, if not empty
}

func (s *meshServe) Name() string { return "mesh serve" }

func (s *meshServe) XDS() adsclient.Options {
	return adsclient.Options{Delta: s.delta, Follow: true, Retry: true}
}

func (s *meshServe) XDSAddr() string { return s.addrs[1] }

func (s *meshServe) Setup(work string, n int) error {
	s.dir, s.repo, s.n = work, filepath.Join(work, "repo"), n
	if err := writeMeshRepo(s.repo, n, 0); err != nil {
		return err
	}
	if err := s.git("init", "-q", "-b", "main"); err != nil {
		return err
	}
	if err := s.git("add", "-A"); err != nil {
		return err
	}
	return s.git("commit", "-q", "-m", "the dense mesh")
}

func (s *meshServe) git(args ...string) error {
	cmd := exec.Command("git", append([]string{"-C", s.repo}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@example.com",
		"GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+s.dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (s *meshServe) Start(log *os.File) (*proc, error) {
	addrs, err := freeport.Addrs(3)
	if err != nil {
		return nil, err
	}
	s.addrs = addrs
	args := []string{"serve", "--repo", s.repo, "--ref", "main",
		"--data", filepath.Join(s.dir, "data"), "--node-id", "s1",
		"--http", addrs[0], "--xds", addrs[1], "--raft", addrs[2]}
	if s.memLimit != "" {
		args = append(args, "--memory-limit", s.memLimit)
	}
	return startProc(log, s.dir, nil, s.bin, args...)
}

// awaitReady polls GET /v1/status every 10 ms until it says ready: a snapshot and the CA's
// trust bundle are served.
func (s *meshServe) awaitReady(ctx context.Context, p *proc) error {
	hc := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok, err := s.statusReady(ctx, hc); err != nil {
			return err
		} else if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("/v1/status not ready: %w", ctx.Err())
		case <-tick.C:
			if err := p.exited(); err != nil {
				return err
			}
		}
	}
}

func (s *meshServe) statusReady(ctx context.Context, hc *http.Client) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addrs[0]+"/v1/status", nil)
	if err != nil {
		return false, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, nil // not listening yet, or busy: ask again
	}
	defer resp.Body.Close()
	var st struct {
		Ready *bool `json:"ready"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		return false, nil
	}
	if st.Ready == nil {
		return false, errors.New("/v1/status has no ready field: a mesh built before it")
	}
	return *st.Ready, nil
}

// Node is what `mesh envoy bootstrap --service S --proxy-id ID` gives Envoy.
func (s *meshServe) Node(i int, id string) *corev3.Node {
	return &corev3.Node{Id: fmt.Sprintf("%s-%s", serviceName(i), id), Cluster: serviceName(i), UserAgentName: "envoy"}
}

// Change edits intentions.cue and commits it: the clock starts at `git commit`.
func (s *meshServe) Change(variant int) (time.Time, error) {
	if err := os.WriteFile(filepath.Join(s.repo, "intentions.cue"), []byte(meshIntentions(s.n, variant)), 0o644); err != nil {
		return time.Time{}, err
	}
	t := time.Now()
	return t, s.git("commit", "-q", "-a", "-m", fmt.Sprintf("intentions: deny %s", adminPrefixes[variant]))
}

var errTimeout = errors.New("timed out")
