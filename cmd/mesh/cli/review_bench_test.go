package cli_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"testing"

	"github.com/meshgit/mesh/cmd/mesh/cli"
	"github.com/meshgit/mesh/internal/meshgen"
)

// BenchmarkReviewEndToEnd runs `mesh review --base main --head change` on a Git repository
// (made with the git CLI) whose two commits differ by one intention, as CI runs it on a pull
// request: read both commits, compile both (head with base's compiler.Cache), compare, render.
//
//   - cold: nothing cached.
//   - base-cached: --cache DIR holds base's snapshot and the keys of the elements validated
//     with it, as when CI keeps the directory between runs and reviewed main before; head is
//     compiled, evaluating only the elements its commit changed.
//   - both-cached: --cache DIR holds both snapshots (the pull request was reviewed before).
func BenchmarkReviewEndToEnd(b *testing.B) {
	if _, err := exec.LookPath("git"); err != nil {
		b.Fatal("the git CLI is needed")
	}
	// As Main sets it for one-shot commands (cli.Run, called here, does not).
	defer debug.SetGCPercent(debug.SetGCPercent(200))
	for _, n := range []int{1000, 10000} {
		repo := reviewRepo(b, n)
		for _, mode := range []string{"cold", "base-cached", "both-cached"} {
			b.Run(fmt.Sprintf("services=%d/%s", n, mode), func(b *testing.B) {
				args := []string{"review", "--repo", repo, "--base", "main", "--head", "change", "--format", "json", "mesh"}
				cacheDir, baseEntry := "", ""
				if mode != "cold" {
					cacheDir = b.TempDir()
					// Fill the cache with base's snapshot: review base against itself once.
					var stderr bytes.Buffer
					if code := cli.Run([]string{"review", "--repo", repo, "--base", "main", "--head", "main", "--cache", cacheDir, "mesh"}, io.Discard, &stderr); code != 0 {
						b.Fatalf("exit %d: %s", code, stderr.String())
					}
					entries, err := filepath.Glob(filepath.Join(cacheDir, "*.json"))
					if err != nil || len(entries) != 1 {
						b.Fatalf("want base's snapshot alone in the cache, have %v (%v)", entries, err)
					}
					baseEntry = filepath.Base(entries[0])
				}
				for b.Loop() {
					a := args
					if cacheDir != "" {
						a = append(append([]string(nil), args...), "--cache", cacheDir)
					}
					if mode == "base-cached" {
						// Only base may come from the cache: drop head's entry.
						b.StopTimer()
						dropEntries(b, cacheDir, baseEntry)
						b.StartTimer()
					}
					var stdout, stderr bytes.Buffer
					if code := cli.Run(a, &stdout, &stderr); code != 0 && code != 1 {
						b.Fatalf("exit %d: %s", code, stderr.String())
					}
					if !bytes.Contains(stdout.Bytes(), []byte(`"access"`)) {
						b.Fatalf("no access changes in %.300s", stdout.String())
					}
				}
			})
		}
	}
}

// reviewRepo makes a repository with a generated mesh of n services in mesh/ on main, and a
// branch change that flips one intention.
func reviewRepo(b *testing.B, n int) string {
	b.Helper()
	dir := b.TempDir()
	files, _, err := meshgen.Generate(meshgen.Options{Services: n, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := meshgen.WriteDir(filepath.Join(dir, "mesh"), files); err != nil {
		b.Fatal(err)
	}
	git := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-c", "user.name=bench", "-c", "user.email=bench@example.com"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q", "-b", "main")
	git("add", ".")
	git("commit", "-q", "-m", "base")
	git("checkout", "-q", "-b", "change")
	names, _ := filepath.Glob(filepath.Join(dir, "mesh", "teams", "*.cue"))
	sort.Strings(names)
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			b.Fatal(err)
		}
		if i := bytes.Index(data, []byte(`action: "deny"`)); i >= 0 {
			data = append(append(append([]byte(nil), data[:i]...), `action: "allow"`...), data[i+len(`action: "deny"`):]...)
			if err := os.WriteFile(name, data, 0o644); err != nil {
				b.Fatal(err)
			}
			git("commit", "-q", "-am", "open one pair")
			return dir
		}
	}
	b.Fatal("no deny intention to flip")
	return ""
}

// dropEntries removes the snapshots of dir but keep.
func dropEntries(b *testing.B, dir, keep string) {
	b.Helper()
	entries, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		if filepath.Base(e) != keep {
			if err := os.Remove(e); err != nil {
				b.Fatal(err)
			}
		}
	}
}
