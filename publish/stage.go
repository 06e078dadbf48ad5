package publish

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"golang.org/x/sync/errgroup"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/sign"
)

// A publish stages its files in a directory of its own inside the site
// (stagePrefix and a random name; lockSite's holder sweeps those a killed
// publish left), each copy held to the bytes checked before, and renames
// them into place once every destination is checked.

func randomName() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// stageImages stages each job's image in dir, as j.staged, in parallel
// (signing is the most of it), and returns the first error in the order
// of the jobs.
func stageImages(ctx context.Context, jobs []*job, key *openpgp.Entity, dir string) error {
	errs := make([]error, len(jobs))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, j := range jobs {
		j.staged = fmt.Sprintf("%d.aci", i)
		g.Go(func() error {
			if ctx.Err() == nil {
				errs[i] = stageImage(ctx, j, key, filepath.Join(dir, j.staged))
			}
			return nil
		})
	}
	g.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("publishing interrupted; nothing was written to the site: %w", context.Cause(ctx))
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// stageImage copies j's image to dst (and its signature, or a new one
// made as it is copied, to dst.asc), and checks that the copies hold the
// bytes checked before: the same SHA-512 as the files had then, so that
// nothing need be read again.
func stageImage(ctx context.Context, j *job, key *openpgp.Entity, dst string) error {
	var sum []byte
	var err error
	if key != nil {
		sum, err = copySigned(ctx, j, key, dst)
	} else {
		sum, err = copyFile(ctx, j.src, dst, -1, nil)
		if err == nil {
			var ascSum []byte
			// As read when checked: a signature file is at most 1 MiB.
			ascSum, err = copyFile(ctx, j.asc, dst+".asc", 1<<20+1, nil)
			if err == nil && !bytes.Equal(ascSum, j.ascSum) {
				return fmt.Errorf("%s changed while it was being published; publish it again", j.asc)
			}
		}
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(sum, j.sum) {
		return fmt.Errorf("%s changed while it was being published; publish it again", j.src)
	}
	return nil
}

// copySigned copies j's image to dst and signs the bytes as they are
// copied into dst.asc; it returns their SHA-512.
func copySigned(ctx context.Context, j *job, key *openpgp.Entity, dst string) ([]byte, error) {
	var sig bytes.Buffer
	sum, err := copyFile(ctx, j.src, dst, -1, func(r io.Reader) error {
		return sign.Detached(&sig, key, r, sign.WithImage(j.p.Name, j.p.ImageID))
	})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(dst+".asc", sig.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("copying %s into the site: %w", j.src, err)
	}
	return sum, nil
}

// copyFile copies src to dst, at most max bytes of it (-1: all), and
// returns the SHA-512 of the bytes copied. With read, the bytes are
// copied as read takes them (the rest after it).
func copyFile(ctx context.Context, src, dst string, max int64, read func(io.Reader) error) ([]byte, error) {
	in, err := safeio.OpenRegular(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	h := sha512.New()
	var r io.Reader = safeio.WithContext(ctx, in)
	if max >= 0 {
		r = io.LimitReader(r, max)
	}
	r = io.TeeReader(r, io.MultiWriter(out, h))
	if read != nil {
		err = read(r)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, r)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("copying %s into the site: %w", src, err)
	}
	return h.Sum(nil), nil
}

// checkDestinations makes sure each file can be renamed to its
// destination: every directory on the way is one, or absent, and the
// destination is not a directory.
func checkDestinations(root *os.Root, dests []string) error {
	for _, rel := range dests {
		segs := strings.Split(rel, "/")
		for i := 1; i < len(segs); i++ {
			p := strings.Join(segs[:i], "/")
			fi, err := root.Stat(p)
			if errors.Is(err, fs.ErrNotExist) {
				break
			}
			if err != nil {
				return fmt.Errorf("the site's %s cannot hold %s (%v): remove it, or publish into another site", safeio.Quote(p), rel, err)
			}
			if !fi.IsDir() {
				return fmt.Errorf("the site holds %s, which is not a directory, where publish must write %s: remove it, or publish into another site", safeio.Quote(p), rel)
			}
		}
		fi, err := root.Lstat(rel)
		if err == nil && fi.IsDir() {
			return fmt.Errorf("the site holds a directory at %s, where publish must write a file: remove it, or publish into another site", safeio.Quote(rel))
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("checking the site's %s: %w", safeio.Quote(rel), err)
		}
	}
	return nil
}
