package main

// What a build leaves for its user: the result links in the working
// directory, and what it prints of an OCI image (its path, its digest and
// a podman command that runs it).

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/oci"
	"github.com/nix2aci/nix2aci/pipeline"
)

// The links a build leaves in the working directory, named so that rkt
// reads them: a path is an image file to rkt only if it ends in .aci, and
// its signature is looked for at <path>.asc.
const (
	resultLink = "result.aci"
	resultSig  = "result.aci.asc"
	resultArgs = "result.rkt-args"
)

// The links an OCI build leaves: result.oci (an image layout directory),
// result.oci.tar or result.docker.tar, and result.podman-args.
const resultPodmanArgs = "result.podman-args"

// linkResults points result.aci (and result.aci.asc, result.rkt-args) at
// what the build wrote, and removes a link of the previous build that
// would now lie (a signature or volume list of another image). An OCI
// build points result<extension> and result.podman-args at its files.
func linkResults(out *pipeline.Result) error {
	links := []struct{ link, target string }{{resultLink, out.ACI}, {resultSig, out.Signature}, {resultArgs, out.RktArgs}}
	if out.OCI != "" {
		links = []struct{ link, target string }{{"result" + oci.Extension(out.Format), out.OCI}, {resultPodmanArgs, out.PodmanArgs}}
	}
	for _, l := range links {
		if l.target == "" {
			if fi, err := os.Lstat(l.link); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				os.Remove(l.link)
			}
			continue
		}
		if err := replaceSymlink(l.target, l.link); err != nil {
			return err
		}
	}
	return nil
}

// printOCI says what an OCI build wrote: its path on stdout, its
// manifest digest and how to run it on stderr.
func printOCI(stdout, stderr io.Writer, out *pipeline.Result) {
	fmt.Fprintln(stdout, out.OCI)
	fmt.Fprintln(stderr, out.Digest)
	if len(out.Layers) > 0 {
		fmt.Fprintf(stderr, "%d %s below the app's own\n", len(out.Layers), plural(len(out.Layers), "layer", "layers"))
	}
	if len(out.Base) > 0 {
		fmt.Fprintf(stderr, "on the base %s, its layers linked in lowest\n", out.Base[0])
	}
	if out.Kind == manifest.LayerKind { // a base runs nothing
		fmt.Fprintf(stderr, "build apps on it with: nix2aci build APP --format oci --base %s\n", out.OCI)
		return
	}
	args := ""
	if out.PodmanArgs != "" {
		args = "$(cat " + shellWord(out.PodmanArgs) + ") "
	}
	switch out.Format {
	case oci.LayoutFormat:
		run := podmanRunLayout(out)
		if strings.HasPrefix(run, "skopeo ") {
			fmt.Fprintf(stderr, "podman runs oci:DIR:TAG only where DIR is a lower-case repository name, which neither %s nor its file name is\n", out.OCI)
		}
		fmt.Fprintf(stderr, "run it with: %s\n", run)
	case oci.Archive:
		fmt.Fprintf(stderr, "load it with: podman load -i %s (or run it: podman run %soci-archive:%s)\n", out.OCI, args, out.OCI)
	case oci.DockerArchive:
		fmt.Fprintf(stderr, "load it with: docker load -i %s (or podman load -i)\n", out.OCI)
	}
}

// podmanRepoPath is a repository path as podman parses one: lower-case
// components joined by "/" (docker's reference grammar).
var podmanRepoPath = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)

// podmanRunLayout is the command that runs an OCI build's image layout
// with podman. podman (4.3, as here) names an image it runs from oci:DIR
// after DIR, as the repository localhost/DIR, and refuses a DIR that is
// no repository path (upper case, as in the default output directory
// ACIs, or a leading "./"): such a layout is run from its directory, by
// its file name, and one whose file name is none either is copied into
// podman's storage by skopeo, under its image name.
func podmanRunLayout(out *pipeline.Result) string {
	valid := func(p string) bool {
		p = strings.TrimLeft(p, "/")
		return len("localhost/"+p) <= 255 && podmanRepoPath.MatchString(p)
	}
	dir, base := filepath.Split(out.OCI)
	dir = filepath.Clean(dir)
	args := func(inDir bool) string {
		if out.PodmanArgs == "" {
			return ""
		}
		a := out.PodmanArgs
		if inDir && filepath.Dir(a) == dir {
			a = filepath.Base(a)
		} else if inDir {
			if abs, err := filepath.Abs(a); err == nil {
				a = abs
			}
		}
		return "$(cat " + shellWord(a) + ") "
	}
	switch {
	case valid(out.OCI):
		return fmt.Sprintf("podman run %soci:%s:%s", args(false), out.OCI, out.Tag)
	case valid(base):
		return fmt.Sprintf("(cd %s && podman run %soci:%s:%s)", shellWord(dir), args(true), base, out.Tag)
	}
	name := oci.RepoName(out.Name)
	if first, _, _ := strings.Cut(name, "/"); !strings.ContainsAny(first, ".:") && first != "localhost" {
		name = "localhost/" + name // not a Docker Hub name
	}
	return fmt.Sprintf("skopeo copy %s containers-storage:%s:%s && podman run %s%s:%s",
		shellWord("oci:"+out.OCI+":"+out.Tag), name, out.Tag, args(false), name, out.Tag)
}

// shellWord quotes s for a POSIX shell, if it needs it.
func shellWord(s string) string {
	const safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-"
	if s != "" && strings.IndexFunc(s, func(r rune) bool { return !strings.ContainsRune(safe, r) }) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// replaceSymlink points link at target (relative to link's directory when
// target is relative), replacing an old link but never a real file. The
// new link is made under a unique temporary name and renamed over the
// old one, so concurrent builds never collide.
func replaceSymlink(target, link string) error {
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("%s exists and is not a symlink; not replacing it (use --no-link)", link)
	} else if old, err := os.Readlink(link); err == nil && strings.HasPrefix(old, nixstore.StoreDir+"/") {
		return fmt.Errorf("%s points into the Nix store (%s), like nix-build's result: not replacing it; remove it or use --no-link", link, old)
	}
	for i := 0; ; i++ {
		tmp := fmt.Sprintf("%s.tmp-%d-%d", link, os.Getpid(), rand.Uint32())
		err := os.Symlink(target, tmp)
		if errors.Is(err, fs.ErrExist) && i < 10 {
			continue
		}
		if err != nil {
			return fmt.Errorf("creating %s: %w", link, err)
		}
		if err := os.Rename(tmp, link); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("creating %s: %w", link, err)
		}
		return nil
	}
}
