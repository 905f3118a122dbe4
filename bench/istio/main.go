// Command istio runs the side-by-side comparison of issue 13: `mesh serve` (built from this
// repository) against istiod (Istio's pilot-discovery, built from source into a cache directory
// outside the repository and reused), both on an equivalent dense mesh (1,000 services, every
// proxy able to reach every service, one header route), both driven by the same raw ADS clients
// (internal/adsclient: one stream per proxy, ACKing everything), and prints the medians of its
// runs beside the targets. See README.md in this directory.
package main

import (
	"context"
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
	cache, work    string
	keep           bool
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
	flag.StringVar(&o.cache, "cache", filepath.Join(home, ".cache", "mesh-bench"), "where pilot-discovery and mesh are built")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (configurations, Git repository, server logs)")
	flag.Parse()
	for _, p := range strings.Split(proxies, ",") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > o.services {
			return fmt.Errorf("-proxies: %q is not a number of proxies between 1 and %d", p, o.services)
		}
		o.proxies = append(o.proxies, n)
	}
	o.servers = strings.Split(servers, ",")

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
			list = append(list, &istiod{bin: bin, delta: !o.istiodSotW})
		case "mesh":
			bin, err := buildMesh(o.cache)
			if err != nil {
				return err
			}
			list = append(list, &meshServe{bin: bin})
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

// buildIstiod builds pilot-discovery into cache/bin unless it is there. `go install pkg@version`
// builds Istio with its own go.mod, outside this module (whose go.mod never names Istio).
func buildIstiod(cache string) (string, error) {
	bin := filepath.Join(cache, "bin", "pilot-discovery")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	fmt.Printf("==> building istiod (%s/pilot/cmd/pilot-discovery) into %s: ~10+ minutes on 2 cores, once\n", istioModule[:strings.Index(istioModule, "@")], bin)
	pkg := strings.Replace(istioModule, "@", "/pilot/cmd/pilot-discovery@", 1)
	cmd := exec.Command("go", "install", pkg)
	cmd.Dir = os.TempDir() // outside any module
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(bin), "GOFLAGS=-mod=mod", "GOWORK=off")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building istiod: %w", err)
	}
	return bin, nil
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
