package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// One publish at a time writes into a site: each holds an exclusive flock
// on the site's directory from reading what the tree holds until
// index.html is written. The lock dies with its holder, so a killed
// publish never blocks the next one, which then removes the staging
// directory it left.

const stagePrefix = ".nix2aci-publish-"

// siteLock is a locked site directory and a root opened on it.
type siteLock struct {
	site    string
	dir     *os.File // flocked
	root    *os.Root
	created bool
}

// lockSite creates the site if needed and waits for its lock; ctx ends
// the wait.
func lockSite(ctx context.Context, site string) (*siteLock, error) {
	for attempt := 0; ; attempt++ {
		created := false
		if _, err := os.Lstat(site); err != nil {
			if err := os.MkdirAll(site, 0o755); err != nil {
				return nil, fmt.Errorf("creating the site: %w", err)
			}
			created = true
		}
		d, err := os.Open(site)
		if err != nil {
			return nil, fmt.Errorf("opening the site: %w", err)
		}
		fi, err := d.Stat()
		if err != nil || !fi.IsDir() {
			d.Close()
			return nil, fmt.Errorf("the site %s is not a directory", safeio.Quote(site))
		}
		if err := flock(ctx, d); err != nil {
			d.Close()
			return nil, err
		}
		// A publish that created the directory and failed removes it
		// before it lets go of the lock: the one locked must still be
		// the site.
		now, err := os.Stat(site)
		if err != nil || !os.SameFile(fi, now) {
			d.Close()
			if attempt > 100 {
				return nil, fmt.Errorf("the site %s keeps being replaced while publish waits for it", safeio.Quote(site))
			}
			continue
		}
		root, err := os.OpenRoot(site)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("opening the site: %w", err)
		}
		if rfi, err := root.Stat("."); err != nil || !os.SameFile(fi, rfi) {
			root.Close()
			d.Close()
			continue
		}
		return &siteLock{site: site, dir: d, root: root, created: created}, nil
	}
}

// flock takes the exclusive lock on d, polling so that ctx can end the
// wait.
func flock(ctx context.Context, d *os.File) error {
	for {
		err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("locking the site: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("publishing interrupted while waiting for another publish into the site to end; nothing was written: %w", context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// unlock lets go of the site; a site this publish created and left
// empty is removed first.
func (l *siteLock) unlock() {
	l.root.Close()
	if l.created {
		os.Remove(l.site) // only if empty
	}
	l.dir.Close()
}

// sweep removes the staging directories of publishes that were killed:
// with the lock held, no other publish is running.
func (l *siteLock) sweep() {
	d, err := l.root.Open(".")
	if err != nil {
		return
	}
	defer d.Close()
	var stale []string
	for n := 0; n < maxScanEntries; {
		ents, err := d.ReadDir(1024)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), stagePrefix) {
				stale = append(stale, e.Name())
			}
		}
		n += len(ents)
		if err != nil {
			if err != io.EOF {
				return
			}
			break
		}
	}
	for _, name := range stale {
		l.root.RemoveAll(name)
	}
}
