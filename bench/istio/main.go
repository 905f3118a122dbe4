// Command istio runs the side-by-side comparison of issue 13: `mesh serve` (built from this
// repository) against istiod (Istio's pilot-discovery, built from source into a cache directory
// outside the repository and reused), both on an equivalent dense mesh (1,000 services, every
// proxy able to reach every service, one header route), both driven by the same raw ADS clients
// (internal/adsclient: one stream per proxy, ACKing everything), and prints the medians of its
// runs beside the targets. See README.md in this directory.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// istioModule is the Istio source the comparison builds: the Go module proxy serves Istio only
// as pseudo-versions of its master branch; this one is 1.31 (its VERSION file).
const istioModule = "istio.io/istio@v0.0.0-20260827124520-eed52ebb66ad"

type options struct {
	runs, services int
	proxies        []int
	servers        []string
	istiodSotW     bool
	meshSotW       bool
	istiodEnv      []string
	meshMemLimit   string
	cache, work    string
	keep           bool
	onlyStart      bool // -only start: measure start → ready, nothing else
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/istio:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	home, _ := os.UserHomeDir()
	proxies, servers := "100,500", "istiod,mesh"
	flag.IntVar(&o.runs, "runs", 3, "runs of each server (the table shows medians)")
	flag.IntVar(&o.services, "services", 1000, "services in the mesh")
	flag.StringVar(&proxies, "proxies", proxies, "numbers of proxies to measure the change with, in order; the last one also measures the initial sync")
	flag.StringVar(&servers, "servers", servers, "servers to run, of istiod and mesh")
	flag.BoolVar(&o.istiodSotW, "istiod-sotw", false, "drive istiod with state-of-the-world ADS instead of delta (what its agent uses by default)")
	flag.BoolVar(&o.meshSotW, "mesh-sotw", false, "drive mesh serve with state-of-the-world ADS instead of delta (what mesh envoy bootstrap configures)")
	istiodEnv := ""
	flag.StringVar(&istiodEnv, "istiod-env", "", "comma-separated KEY=VALUE settings for istiod (e.g. PILOT_MAX_REQUESTS_PER_SECOND=1000); default: none, istiod's defaults")
	flag.StringVar(&o.meshMemLimit, "mesh-memory-limit", "", "run mesh serve with --memory-limit this (e.g. 600MiB); default: none, as mesh serve's default")
	flag.StringVar(&o.cache, "cache", filepath.Join(home, ".cache", "mesh-bench"), "where pilot-discovery and mesh are built")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (configurations, Git repository, server logs)")
	only := ""
	flag.StringVar(&only, "only", "", `"start": measure start → ready only (no proxies, no change), a few seconds a run`)
	flag.Parse()
	switch only {
	case "":
	case "start":
		o.onlyStart = true
	default:
		return fmt.Errorf("-only: unknown row %q (start)", only)
	}
	for _, p := range strings.Split(proxies, ",") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > o.services {
			return fmt.Errorf("-proxies: %q is not a number of proxies between 1 and %d", p, o.services)
		}
		o.proxies = append(o.proxies, n)
	}
	o.servers = strings.Split(servers, ",")
	if istiodEnv != "" {
		o.istiodEnv = strings.Split(istiodEnv, ",")
	}

	work, err := os.MkdirTemp("", "mesh-bench-istio-")
	if err != nil {
		return err
	}
	o.work = work
	if o.keep {
		fmt.Println("work directory:", work)
	} else {
		defer os.RemoveAll(work)
	}

	var list []server
	for _, name := range o.servers {
		switch name {
		case "istiod":
			bin, err := buildIstiod(o.cache)
			if err != nil {
				return err
			}
			list = append(list, &istiod{bin: bin, delta: !o.istiodSotW, env: o.istiodEnv})
		case "mesh":
			bin, err := buildMesh(o.cache)
			if err != nil {
				return err
			}
			list = append(list, &meshServe{bin: bin, delta: !o.meshSotW, memLimit: o.meshMemLimit})
		default:
			return fmt.Errorf("-servers: unknown server %q (istiod, mesh)", name)
		}
	}

	results := map[string][]result{}
	for r := 1; r <= o.runs; r++ {
		for _, s := range list {
			dir := filepath.Join(work, fmt.Sprintf("%s-%d", strings.ReplaceAll(s.Name(), " ", "-"), r))
			res, err := measure(context.Background(), s, dir, o)
			if err != nil {
				return fmt.Errorf("%s, run %d: %w (logs in %s)", s.Name(), r, err, dir)
			}
			fmt.Printf("run %d %-10s %s\n", r, s.Name(), res)
			results[s.Name()] = append(results[s.Name()], res)
		}
	}
	printTable(os.Stdout, list, results, o)
	return nil
}

// buildIstiod builds pilot-discovery into cache/bin unless it is there: from a copy of Istio's
// module source (cache/istio-src, with its own go.mod: this module's go.mod never names Istio)
// with istioPatch applied.
func buildIstiod(cache string) (string, error) {
	bin := filepath.Join(cache, "bin", "pilot-discovery")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	fmt.Printf("==> building istiod (%s, pilot/cmd/pilot-discovery) into %s: ~15 minutes on 2 cores, once\n", istioModule, bin)
	src := filepath.Join(cache, "istio-src")
	if err := copyIstio(src); err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", bin, "./pilot/cmd/pilot-discovery")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building istiod: %w", err)
	}
	return bin, nil
}

// istioPatch makes this Istio run without Kubernetes at all: its ServiceEntry registry reads
// namespaces through the multicluster controller, which exists only with a Kubernetes client
// (a nil dereference at start otherwise). Without one, the namespaces are an empty collection.
var istioPatch = struct{ file, old, new string }{
	file: "pilot/pkg/serviceregistry/serviceentry/controller.go",
	old:  "\t\ts.inputs.Namespaces = multiclusterController.ConfigCluster().Namespaces()\n",
	new: "\t\tif multiclusterController != nil {\n\t\t\ts.inputs.Namespaces = multiclusterController.ConfigCluster().Namespaces()\n" +
		"\t\t} else { // mesh bench/istio: no Kubernetes\n\t\t\ts.inputs.Namespaces = krt.NewStaticCollection[*v1.Namespace](nil, nil, s.opts.WithName(\"inputs/Namespaces\")...)\n\t\t}\n",
}

// copyIstio downloads Istio's module (go mod download) and copies it, writable, to src with
// istioPatch applied.
func copyIstio(src string) error {
	out, err := exec.Command("go", "mod", "download", "-json", istioModule).Output()
	if err != nil {
		return fmt.Errorf("go mod download %s: %w", istioModule, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("go mod download %s: no directory in %s", istioModule, out)
	}
	if err := os.RemoveAll(src); err != nil {
		return err
	}
	if err := os.CopyFS(src, os.DirFS(mod.Dir)); err != nil {
		return fmt.Errorf("copying Istio's source: %w", err)
	}
	p := filepath.Join(src, istioPatch.file)
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if strings.Count(string(b), istioPatch.old) != 1 {
		return fmt.Errorf("patching %s: the line to patch is not there once (another Istio version?)", istioPatch.file)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(strings.Replace(string(b), istioPatch.old, istioPatch.new, 1)), 0o644)
}

// buildMesh builds this repository's mesh command into cache (every time: it is quick once
// cached, and the comparison must measure the code checked out).
func buildMesh(cache string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run this from the mesh repository (go env GOMOD: %q)", mod)
	}
	bin := filepath.Join(cache, "mesh")
	fmt.Println("==> building mesh into", bin)
	cmd := exec.Command("go", "build", "-tags", "hashicorpmetrics", "-o", bin, "./cmd/mesh")
	cmd.Dir = filepath.Dir(mod)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building mesh: %w", err)
	}
	return bin, nil
}

// median of the values, the mean of the middle two for an even count.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func seconds(d time.Duration) float64 { return d.Seconds() }
