package manifest

import (
	"fmt"
	"path"
	"strings"

	"github.com/appc/spec/schema"
)

// StoreMounts returns one read-only mount point per store path, at the
// path itself, named by MountName.
func StoreMounts(storePaths []string) []Mount {
	out := make([]Mount, len(storePaths))
	for i, p := range storePaths {
		out[i] = Mount{Name: MountName(p), Path: p, ReadOnly: true}
	}
	return out
}

// RktVolumeArgs returns the rkt run arguments that provide the volumes of
// StoreMounts from the host's store, one per line, so that
// `rkt run $(cat X.rkt-args) X.aci` works.
func RktVolumeArgs(storePaths []string) string {
	var b strings.Builder
	for _, p := range storePaths {
		b.WriteString("--volume=" + MountName(p) + ",kind=host,source=" + p + ",readOnly=true\n")
	}
	return b.String()
}

// CheckRktVolumeArgs checks the contents of a thin image's .rkt-args file
// against the image's (verified) manifest. The file must split into the
// same words in every shell (ShellWords: no carriage return, tab,
// non-ASCII space, glob character, quote or backslash), every word must
// be exactly the --volume argument that RktVolumeArgs writes for one of
// the manifest's store mount points (kind host, read-only, source the
// very store path the mount point stands for), each such mount point must
// have its argument once, and nothing else may be in the file. A deploy
// that runs the file as root therefore binds nothing the signed manifest
// did not name.
func CheckRktVolumeArgs(im *schema.ImageManifest, args []byte) error {
	var want []string
	if im.App != nil {
		for _, mp := range im.App.MountPoints {
			if MountName(mp.Path) == mp.Name.String() && mp.ReadOnly && isStorePath(mp.Path) {
				want = append(want, mp.Path)
			}
		}
	}
	order := strings.Fields(RktVolumeArgs(want))
	expected := map[string]bool{}
	for _, w := range order {
		expected[w] = true
	}
	words, err := ShellWords(args)
	if err != nil {
		return &RktArgsError{Msg: fmt.Sprintf("%v; rkt run $(cat FILE) would not get the words the file appears to hold", err)}
	}
	seen := map[string]bool{}
	for _, w := range words {
		switch {
		case seen[w]:
			return &RktArgsError{Msg: "the argument " + quote(w) + " is given twice"}
		case !expected[w]:
			return &RktArgsError{Msg: "the argument " + quote(w) + " is not a read-only host volume for one of the image's store mount points; rkt would run the image with it"}
		}
		seen[w] = true
	}
	for _, w := range order {
		if !seen[w] {
			return &RktArgsError{Msg: fmt.Sprintf("the file has no argument for a store mount point of the image (%d of %d given; first missing: %q)", len(seen), len(expected), w)}
		}
	}
	return nil
}

// RktArgsError reports a .rkt-args file that does not match its image.
type RktArgsError struct{ Msg string }

func (e *RktArgsError) Error() string { return "rkt arguments: " + e.Msg }

// isStorePath reports whether p is a path directly in the Nix store:
// /nix/store/<hash>-<name>, one component, nothing to clean.
func isStorePath(p string) bool {
	base, ok := strings.CutPrefix(p, "/nix/store/")
	return ok && base != "" && !strings.ContainsAny(base, "/\x00") && base != "." && base != ".." && path.Clean(p) == p
}
