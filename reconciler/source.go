package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/meshgit/mesh/compiler"
	"github.com/meshgit/mesh/internal/redact"
)

// source is where the leader reads commits from.
type source interface {
	// open brings the local view of the repository up to date (fetching, for a remote) and
	// returns it opened afresh, so that new packs and refs are seen.
	open(ctx context.Context) (*git.Repository, error)
	// ref returns the ref to resolve in the opened repository.
	ref() string
	// watch calls kick whenever the tracked ref may have changed, until ctx ends.
	watch(ctx context.Context, kick func())
}

func newSource(cfg *Config) (source, error) {
	if compiler.IsRemote(cfg.Repo) {
		return &remoteSource{url: cfg.Repo, branch: cfg.Ref, mirror: filepath.Join(cfg.DataDir, "mirror.git"),
			auth: cfg.GitAuth, poll: cfg.Poll, log: cfg.Log}, nil
	}
	abs, err := filepath.Abs(cfg.Repo)
	if err != nil {
		return nil, err
	}
	return &localSource{path: abs, branch: cfg.Ref, poll: cfg.Poll, log: cfg.Log}, nil
}

// localSource is a repository on this machine, bare or not. It watches the ref files with
// fsnotify (a push renames refs/heads/<branch>.lock onto refs/heads/<branch>, or rewrites
// packed-refs) and polls as a safety net, since file events can be lost.
type localSource struct {
	path   string
	branch string
	poll   time.Duration
	log    *slog.Logger
}

func (l *localSource) ref() string { return l.branch }

func (l *localSource) open(ctx context.Context) (*git.Repository, error) {
	return compiler.OpenRepo(ctx, l.path)
}

// gitDir finds the directory holding HEAD and refs: path/.git, path itself (bare), or a parent's .git.
func gitDir(path string) (string, error) {
	for p := path; ; {
		if fi, err := os.Stat(filepath.Join(p, ".git")); err == nil && fi.IsDir() {
			return filepath.Join(p, ".git"), nil
		}
		if _, err := os.Stat(filepath.Join(p, "HEAD")); err == nil {
			if fi, err := os.Stat(filepath.Join(p, "refs")); err == nil && fi.IsDir() {
				return p, nil
			}
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "", fmt.Errorf("%s: not a git repository", path)
		}
		p = parent
	}
}

func (l *localSource) watch(ctx context.Context, kick func()) {
	poll := time.NewTicker(min(l.poll, 30*time.Second))
	defer poll.Stop()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if dir, err := gitDir(l.path); err != nil {
		l.log.Warn("not watching refs, polling only", "err", err)
	} else if w, err := fsnotify.NewWatcher(); err != nil {
		l.log.Warn("not watching refs, polling only", "err", err)
	} else {
		defer w.Close()
		// HEAD and packed-refs live in the git directory; loose refs under refs/.
		watched := 0
		for _, d := range refDirs(dir, l.branch) {
			if err := w.Add(d); err == nil {
				watched++
			}
		}
		if watched == 0 {
			l.log.Warn("not watching refs, polling only", "dir", dir)
		}
		events, errs = w.Events, w.Errors
		l.log.Debug("watching refs", "dir", dir, "dirs", watched)
		// New directories under refs/ (a branch named a/b) are watched as they appear.
		addDir := func(name string) {
			if fi, err := os.Stat(name); err == nil && fi.IsDir() {
				w.Add(name)
			}
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-poll.C:
				kick()
			case ev := <-events:
				if relevantRefEvent(dir, ev.Name) {
					if ev.Has(fsnotify.Create) {
						addDir(ev.Name)
					}
					kick()
				}
			case err := <-errs:
				l.log.Warn("ref watcher", "err", err)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			kick()
		}
	}
}

// refDirs lists the directories whose entries change when ref (or HEAD, or packed-refs) moves.
func refDirs(dir, ref string) []string {
	dirs := []string{dir, filepath.Join(dir, "refs"), filepath.Join(dir, "refs", "heads"), filepath.Join(dir, "refs", "tags")}
	name := ref
	switch {
	case ref == "":
	case strings.HasPrefix(ref, "refs/"):
	default:
		name = "refs/heads/" + ref
	}
	if name != "" {
		for d := filepath.Dir(filepath.Join(dir, filepath.FromSlash(name))); len(d) > len(dir); d = filepath.Dir(d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func relevantRefEvent(dir, name string) bool {
	if strings.HasSuffix(name, ".lock") {
		return false
	}
	rel, err := filepath.Rel(dir, name)
	if err != nil {
		return false
	}
	rel = filepath.ToSlash(rel)
	return rel == "HEAD" || rel == "packed-refs" || strings.HasPrefix(rel, "refs/")
}

// remoteSource is a repository behind a URL, fetched into a bare mirror under the data directory
// every poll interval and whenever a webhook (or Kick) says so.
type remoteSource struct {
	url    string
	branch string
	mirror string
	auth   transport.AuthMethod
	poll   time.Duration
	log    *slog.Logger
}

func (r *remoteSource) ref() string { return r.branch }

func (r *remoteSource) watch(ctx context.Context, kick func()) {
	t := time.NewTicker(r.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			kick()
		}
	}
}

func (r *remoteSource) open(ctx context.Context) (_ *git.Repository, err error) {
	// Errors end up in logs and in status: whatever go-git put in them, no credentials.
	defer func() { err = redact.Error(err) }()
	repo, err := git.PlainOpen(r.mirror)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.PlainInit(r.mirror, true)
	}
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", r.mirror, err)
	}
	rem, err := repo.Remote("origin")
	if err == nil && (len(rem.Config().URLs) != 1 || rem.Config().URLs[0] != r.url) {
		if err := repo.DeleteRemote("origin"); err != nil {
			return nil, err
		}
		err = git.ErrRemoteNotFound
	}
	if errors.Is(err, git.ErrRemoteNotFound) {
		rem, err = repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{r.url}})
	}
	if err != nil {
		return nil, fmt.Errorf("mirror remote: %w", err)
	}
	// The mirror's branches are the remote's branches, force-pushes included.
	err = rem.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"},
		Auth:     r.auth,
		Tags:     git.NoTags,
		Force:    true,
		Prune:    true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, fmt.Errorf("fetch %s: %w", redactURL(r.url), err)
	}
	if r.branch == "" {
		// Follow the remote's default branch: point the mirror's HEAD where the remote's points.
		refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: r.auth})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", redactURL(r.url), err)
		}
		for _, ref := range refs {
			if ref.Name() == plumbing.HEAD && ref.Type() == plumbing.SymbolicReference {
				if err := repo.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, ref.Target())); err != nil {
					return nil, err
				}
			}
		}
	}
	return repo, nil
}

// redactURL drops credentials from a URL before it is logged or returned.
func redactURL(u string) string { return redact.URL(u) }
