package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/spf13/cobra"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/atomicfile"
	"github.com/meshgit/mesh/review"
)

func init() { register(newReviewCmd) }

func newReviewCmd() *cobra.Command {
	var (
		repo, base, head, format, cache string
		strict                          bool
	)
	cmd := &cobra.Command{
		Use:   "review --base REF --head REF [--repo PATH] [DIR]",
		Short: "Show what a change does: access gained and lost, routing, owners, policy violations",
		Long: `Review compiles the mesh directory DIR (default: the repository's root) at two commits of a
Git repository and reports, for a pull request:

  - every source → destination pair whose verdict changes (allow, deny, or the L7 rules in
    words), with the intention that decides after, its position and a request that shows the
    change; pairs decided by wildcards or the mesh default are summarised in groups;
  - the pairs it could not decide (a search too large; a path regex that spells a
    percent-encoding, which is only sampled), each with the reason, under a warning: they are
    never reported as unchanged;
  - routing changes per service, services added, removed or changed, mesh-wide settings;
  - who must approve: the owners of every destination whose inbound access changes;
  - policy violations and analysis warnings at head.

Verdicts come from the same evaluator as "mesh intention check". --format markdown (the default)
is fit to post as a pull-request comment; --format json is for machines. With --cache DIR, a
commit whose mesh (its Git tree, policies included) was compiled before by the same mesh binary
is not compiled again: in CI, keep DIR between runs so that base is compiled once.
Exit status: 0 ok, 1 head does not compile, violates a policy or has undecided access changes,
2 usage or internal error.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if base == "" || head == "" {
				return usageError{errors.New("review needs --base and --head")}
			}
			if format != "markdown" && format != "json" {
				return usageError{fmt.Errorf("--format %q: want markdown or json", format)}
			}
			dir := ""
			if len(args) > 0 && args[0] != "." {
				dir = args[0]
			}
			return runReview(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), repo, base, head, dir, format, cache, strict)
		},
	}
	cmd.Flags().StringVar(&repo, "repo", ".", "the Git repository (path or URL)")
	cmd.Flags().StringVar(&base, "base", "", "the branch, tag or commit the change starts from")
	cmd.Flags().StringVar(&head, "head", "", "the branch, tag or commit of the change")
	cmd.Flags().StringVar(&format, "format", "markdown", "output format: markdown or json")
	cmd.Flags().BoolVar(&strict, "strict", false, "treat analysis warnings at head as errors")
	cmd.Flags().StringVar(&cache, "cache", "", "keep compiled snapshots in this directory, keyed by the mesh's Git tree and the mesh binary")
	return cmd
}

type reviewSide struct {
	name  string
	key   string // cache key, "" without a cache
	hash  plumbing.Hash
	files []compiler.File
	own   []compiler.File
	snap  *mesh.Snapshot
	rep   *compiler.Report
	err   error
	// loading is closed once a cached entry has been read into snap and rep (nil snap: none).
	loading chan struct{}
}

// read reads the side's mesh files and policies from its commit. A go-git repository is not
// meant for concurrent reads: sides are read one after the other.
func (s *reviewSide) read(r *git.Repository, dir string) error {
	var err error
	if s.files, err = compiler.ReadCommit(r, s.hash, dir); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	if s.own, err = compiler.ReadPolicyCommit(r, s.hash, dir); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

func runReview(ctx context.Context, stdout, stderr io.Writer, repo, baseRef, headRef, dir, format, cache string, strict bool) error {
	r, err := compiler.OpenRepo(ctx, repo)
	if err != nil {
		return err
	}
	sides := []*reviewSide{{name: "base"}, {name: "head"}}
	for i, ref := range []string{baseRef, headRef} {
		s := sides[i]
		if s.hash, err = compiler.Resolve(r, ref); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if cache != "" {
			if s.key, err = cacheKey(r, s.hash, dir, strict && s.name == "head"); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if _, err := os.Stat(cachePath(cache, s.key)); err == nil {
				// Decoded while the other side is read and compiled; an entry that does not
				// load is compiled after all (below).
				s.loading = make(chan struct{})
				go func() {
					defer close(s.loading)
					s.snap, s.rep = loadCached(cache, s.key)
				}()
				continue
			}
		}
		if err := s.read(r, dir); err != nil {
			return err
		}
	}
	// One after the other, with one compiler.Cache: head reuses base's parsed files and the
	// elements it validated, so it costs about what its change touches. With --cache, the
	// elements validated by earlier reviews are known too (elementsFile), and the compiled
	// snapshots are stored while the review goes on.
	cc := compiler.NewCache()
	var stores sync.WaitGroup
	var storeErrs []error
	var storeMu sync.Mutex
	defer func() {
		stores.Wait()
		for _, err := range storeErrs {
			fmt.Fprintf(stderr, "warning: review cache: %v\n", err)
		}
	}()
	compile := func(s *reviewSide) {
		opts := compiler.Options{PolicyFiles: s.own, ReportViolations: true, Strict: strict && s.name == "head", Cache: cc}
		s.snap, s.rep, s.err = compiler.CompileWithReport(ctx, s.files, opts)
		s.files = nil
		if s.snap == nil {
			return
		}
		s.snap.Commit = s.hash.String()
		if s.key != "" {
			stores.Go(func() {
				if err := storeCached(cache, s.key, s.snap, s.rep); err != nil {
					storeMu.Lock()
					storeErrs = append(storeErrs, err)
					storeMu.Unlock()
				}
			})
		}
	}
	compiled := false
	for _, s := range sides {
		if s.loading == nil {
			if !compiled && cache != "" {
				readElements(cache, cc, stderr)
			}
			compile(s)
			compiled = true
		}
	}
	for _, s := range sides {
		if s.loading == nil {
			continue
		}
		<-s.loading
		if s.snap != nil {
			s.snap.Commit = s.hash.String()
			continue
		}
		if err := s.read(r, dir); err != nil {
			return err
		}
		if !compiled && cache != "" {
			readElements(cache, cc, stderr)
		}
		compile(s)
		compiled = true
	}
	if cache != "" && compiled {
		writeElements(cache, cc, stderr)
	}
	baseSide, headSide := sides[0], sides[1]
	var list compiler.Errors
	if errors.As(headSide.err, &list) {
		fmt.Fprintln(stderr, list.Error())
		fmt.Fprintf(stderr, "%d error%s in head %s\n", len(list), plural(len(list)), short(headSide.hash))
		return exitWith(ExitInvalid)
	}
	if headSide.err != nil {
		return fmt.Errorf("head: %w", headSide.err)
	}
	if errors.As(baseSide.err, &list) {
		// A change that repairs a broken base is still reviewed: against an empty mesh.
		fmt.Fprintf(stderr, "base %s does not compile (%d error%s); reviewing head against an empty mesh\n",
			short(baseSide.hash), len(list), plural(len(list)))
		baseSide.snap = nil
	} else if baseSide.err != nil {
		return fmt.Errorf("base: %w", baseSide.err)
	}
	rep := review.Review(baseSide.snap, headSide.snap)
	if baseSide.snap == nil {
		// Said in the report itself, not only here: a PR comment must not pass the empty-base
		// comparison off as the change.
		rep.SetBaseError(short(baseSide.hash), findings(list))
	}
	rep.AddFindings(findings(headSide.rep.Violations), findings(headSide.rep.Warnings))
	switch format {
	case "json":
		err = rep.JSON(stdout)
	default:
		err = rep.Markdown(stdout)
	}
	if err != nil {
		return err
	}
	failed := false
	if len(rep.Undecided) > 0 {
		fmt.Fprintf(stderr, "%d access change%s could not be decided; check them by hand:\n", len(rep.Undecided), plural(len(rep.Undecided)))
		for _, a := range rep.Undecided {
			fmt.Fprintf(stderr, "  %s → %s: %s\n", a.Source, a.Destination, a.Undecided)
		}
		failed = true
	}
	if len(rep.Violations) > 0 {
		fmt.Fprintf(stderr, "%d policy violation%s in head %s\n", len(rep.Violations), plural(len(rep.Violations)), short(headSide.hash))
		failed = true
	}
	if failed {
		return exitWith(ExitInvalid)
	}
	return nil
}

func findings(list compiler.Errors) []review.Finding {
	var out []review.Finding
	for _, e := range list {
		out = append(out, review.Finding{Position: e.Pos.String(), Message: e.Msg})
	}
	return out
}

func short(h plumbing.Hash) string { return strings.TrimSpace(h.String()[:12]) }

// The review cache holds compiled snapshots with their warnings and violations, one file per
// key. The key names everything a compilation depends on: the Git tree of the mesh directory
// (which includes its policies/ folder), --strict, and the mesh binary itself (its SHA-256), so
// a new build of mesh never reads what an old one wrote. Entries are written atomically; one
// that does not decode, or whose content does not match its version, is compiled again.

// An entry is one line of JSON (cacheHeader) and then, in gob, the snapshot with its warnings and
// violations (cacheBody): gob decodes a 10k-service snapshot in less than half the time JSON
// takes. The header's SHA-256 of the body is checked on reading instead of re-deriving the
// snapshot's version, which would cost as much again. Gob leaves out empty maps: decodeBody
// restores the top-level ones, which the compiler always makes (TestReviewCacheFaithful).
type cacheHeader struct {
	Format string `json:"format"`
	SHA256 string `json:"sha256"`
}

type cacheBody struct {
	Snapshot   *mesh.Snapshot
	Warnings   compiler.Errors
	Violations compiler.Errors
}

const cacheFormat = "mesh review cache 3"

// binaryDigest is the SHA-256 of the running mesh binary.
var binaryDigest = sync.OnceValue(func() string {
	sum := sha256.New()
	if exe, err := os.Executable(); err == nil {
		if f, err := os.Open(exe); err == nil {
			io.Copy(sum, f)
			f.Close()
		}
	}
	return hex.EncodeToString(sum.Sum(nil))
})

func cacheKey(r *git.Repository, h plumbing.Hash, dir string, strict bool) (string, error) {
	tree, err := compiler.MeshTree(r, h, dir)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\n%s\n%s\n%v\n", cacheFormat, binaryDigest(), tree.Hash, strict)))
	return hex.EncodeToString(sum[:16]), nil
}

func loadCached(dir, key string) (*mesh.Snapshot, *compiler.Report) {
	b, err := os.ReadFile(cachePath(dir, key))
	if err != nil {
		return nil, nil
	}
	line, body, ok := bytes.Cut(b, []byte("\n"))
	var h cacheHeader
	if !ok || json.Unmarshal(line, &h) != nil || h.Format != cacheFormat {
		return nil, nil
	}
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != h.SHA256 {
		return nil, nil
	}
	e, err := decodeBody(body)
	if err != nil {
		return nil, nil
	}
	return e.Snapshot, &compiler.Report{Warnings: e.Warnings, Violations: e.Violations}
}

func cachePath(dir, key string) string { return filepath.Join(dir, key+".json") }

func storeCached(dir, key string, snap *mesh.Snapshot, rep *compiler.Report) error {
	var body bytes.Buffer
	if err := gob.NewEncoder(&body).Encode(cacheBody{Snapshot: snap, Warnings: rep.Warnings, Violations: rep.Violations}); err != nil {
		return err
	}
	sum := sha256.Sum256(body.Bytes())
	line, err := json.Marshal(cacheHeader{Format: cacheFormat, SHA256: hex.EncodeToString(sum[:])})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return atomicfile.Write(cachePath(dir, key), append(append(line, '\n'), body.Bytes()...), 0o644)
}

func decodeBody(b []byte) (*cacheBody, error) {
	var e cacheBody
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&e); err != nil {
		return nil, err
	}
	snap := e.Snapshot
	if snap == nil || snap.Version == "" {
		return nil, errors.New("no snapshot")
	}
	if snap.Services == nil {
		snap.Services = map[string]*mesh.Service{}
	}
	if snap.Routers == nil {
		snap.Routers = map[string]*mesh.Router{}
	}
	if snap.Splitters == nil {
		snap.Splitters = map[string]*mesh.Splitter{}
	}
	if snap.Resolvers == nil {
		snap.Resolvers = map[string]*mesh.Resolver{}
	}
	if snap.Chains == nil {
		snap.Chains = map[string]*mesh.Chain{}
	}
	if snap.Positions == nil {
		snap.Positions = map[string]mesh.Pos{}
	}
	return &e, nil
}

// The elements file keeps the keys of the mesh elements validated by the latest review
// (compiler.Cache.WriteElements), so that the next review's compilations evaluate only the
// elements their commits changed. It is named by the mesh binary, like the entries.
func elementsFile(dir string) string {
	return filepath.Join(dir, "elements-"+binaryDigest()[:16]+".bin")
}

func readElements(dir string, cc *compiler.Cache, stderr io.Writer) {
	f, err := os.Open(elementsFile(dir))
	if err != nil {
		return // none yet
	}
	defer f.Close()
	if err := cc.ReadElements(f); err != nil {
		fmt.Fprintf(stderr, "warning: review cache: %v\n", err)
	}
}

func writeElements(dir string, cc *compiler.Cache, stderr io.Writer) {
	var buf bytes.Buffer
	err := cc.WriteElements(&buf)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = atomicfile.Write(elementsFile(dir), buf.Bytes(), 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "warning: review cache: %v\n", err)
	}
}
