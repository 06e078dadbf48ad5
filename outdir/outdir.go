package outdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const stagePrefix = ".nix2aci-stage-"

// Stage is a build's private directory inside an output directory.
type Stage struct {
	out, dir   string
	lock       *os.File // the staging directory, flocked
	createdOut bool
}

// Begin creates the output directory if needed, removes the leftovers of
// killed builds in it, and returns a new locked staging directory.
func Begin(out string) (*Stage, error) {
	created := false
	if _, err := os.Stat(out); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return nil, fmt.Errorf("creating output directory: %w", err)
		}
		created = true
	}
	Sweep(out)
	// The directory is made and locked under a name Sweep passes over,
	// then renamed (the lock goes with it): another build's Sweep never
	// sees a staging directory before its build holds it.
	fail := func(err error) (*Stage, error) {
		if created {
			os.Remove(out)
		}
		return nil, err
	}
	tmp, err := os.MkdirTemp(out, newPrefix+"*")
	if err != nil {
		return fail(fmt.Errorf("creating a staging directory in %s: %w", out, err))
	}
	lock, err := lockDir(tmp, false)
	if err != nil {
		os.Remove(tmp)
		return fail(fmt.Errorf("locking %s: %w", tmp, err))
	}
	dir := filepath.Join(out, stagePrefix+strings.TrimPrefix(filepath.Base(tmp), newPrefix))
	if err := os.Rename(tmp, dir); err != nil {
		lock.Close()
		os.Remove(tmp)
		return fail(fmt.Errorf("creating a staging directory in %s: %w", out, err))
	}
	return &Stage{out: out, dir: dir, lock: lock, createdOut: created}, nil
}

// newPrefix names a staging directory being made; one left by a build
// killed in that instant is swept once it is an hour old.
const newPrefix = ".nix2aci-new-"

// Sweep removes the staging directories in out that no running build
// holds: those left by builds that were killed.
func Sweep(out string) {
	ents, err := os.ReadDir(out)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if strings.HasPrefix(e.Name(), newPrefix) {
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < time.Hour {
				continue // a build making its staging directory
			}
		} else if !strings.HasPrefix(e.Name(), stagePrefix) {
			continue
		}
		dir := filepath.Join(out, e.Name())
		lock, err := lockDir(dir, true)
		if err != nil {
			continue // a live build holds it
		}
		os.RemoveAll(dir)
		lock.Close()
	}
}

// lockDir opens dir and takes an exclusive flock on it.
func lockDir(dir string, nonBlocking bool) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_EX
	if nonBlocking {
		how |= syscall.LOCK_NB
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Path returns where the file that will be out/name is written while the
// build runs. name must be one path component.
func (s *Stage) Path(name string) string {
	if filepath.Base(name) != name || !filepath.IsLocal(name) {
		panic("outdir: not a file name: " + name)
	}
	return filepath.Join(s.dir, name)
}

// Final returns the path name will have once committed.
func (s *Stage) Final(name string) string { return filepath.Join(s.out, name) }

// Commit moves the staged files names into the output directory, in
// order, after removing the old files named in stale (files of the
// previous build that this one does not replace, such as a signature the
// new image has not got). It holds the output directory's lock meanwhile,
// and runs then, still holding it, before removing the staging directory
// (to register GC roots for the new files, say); an error from then is
// returned, with the files already in place.
func (s *Stage) Commit(names, stale []string, then func() error) error {
	lock, err := lockDir(s.out, false)
	if err != nil {
		return fmt.Errorf("locking %s: %w", s.out, err)
	}
	defer lock.Close()
	for _, n := range stale {
		if err := os.Remove(s.Final(n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the old %s: %w", s.Final(n), err)
		}
	}
	for _, n := range names {
		if err := rename(s.Path(n), s.Final(n)); err != nil {
			return fmt.Errorf("moving %s into place: %w", s.Final(n), err)
		}
	}
	if then != nil {
		err = then()
	}
	s.removeStage()
	return err
}

// rename moves src to dst. A directory (an OCI image layout) replaces an
// old directory dst as one step too: the two are exchanged, and the old
// one, now in the staging directory, goes with it.
func rename(src, dst string) error {
	err := os.Rename(src, dst)
	if errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY) {
		return unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE)
	}
	return err
}

// Abort removes the staging directory and everything in it, and the
// output directory if Begin created it and it is empty. The files in the
// output directory are as they were.
func (s *Stage) Abort() {
	s.removeStage()
	if s.createdOut {
		os.Remove(s.out) // only if empty
	}
}

func (s *Stage) removeStage() {
	if s.lock == nil {
		return
	}
	os.RemoveAll(s.dir)
	s.lock.Close()
	s.lock = nil
}
