package oci

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/appc/spec/schema"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultPath is the PATH an app gets when its manifest sets none: the
// one the appc spec has executors (rkt) give it.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config returns the OCI image configuration of the app whose appc
// manifest is im, created at created, without its layers (WriteImage adds
// them).
func Config(im *schema.ImageManifest, created time.Time) (*ocispec.Image, error) {
	if im.App == nil || len(im.App.Exec) == 0 {
		return nil, fmt.Errorf("image %s has no app to run: an OCI image needs a command", im.Name)
	}
	osName, _ := im.Labels.Get("os")
	arch, _ := im.Labels.Get("arch")
	plat, err := Platform(osName, arch)
	if err != nil {
		return nil, err
	}
	created = created.UTC()
	img := &ocispec.Image{Created: &created, Platform: plat}
	img.RootFS.Type = "layers"
	app := im.App
	c := &img.Config
	c.Entrypoint = []string{app.Exec[0]}
	if len(app.Exec) > 1 {
		c.Cmd = append([]string(nil), app.Exec[1:]...)
	}
	hasPath := false
	for _, e := range app.Environment {
		c.Env = append(c.Env, e.Name+"="+e.Value)
		hasPath = hasPath || e.Name == "PATH"
	}
	if !hasPath {
		c.Env = append(c.Env, "PATH="+DefaultPath)
	}
	c.User = app.User
	if app.Group != "" {
		c.User += ":" + app.Group
	}
	c.WorkingDir = app.WorkingDirectory
	for _, p := range app.Ports {
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		for i := uint(0); i < max(p.Count, 1); i++ {
			c.ExposedPorts[fmt.Sprintf("%d/%s", p.Port+i, p.Protocol)] = struct{}{}
		}
	}
	for _, m := range app.MountPoints {
		if isStorePath(m.Path) {
			continue // a thin image's store path: bound by .podman-args, never a volume
		}
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		c.Volumes[m.Path] = struct{}{}
	}
	for _, l := range im.Labels {
		if n := l.Name.String(); n != "os" && n != "arch" {
			if c.Labels == nil {
				c.Labels = map[string]string{}
			}
			c.Labels[n] = l.Value
		}
	}
	return img, nil
}

// Platform maps appc's os and arch labels to an OCI platform.
func Platform(osName, arch string) (ocispec.Platform, error) {
	if osName != "linux" {
		return ocispec.Platform{}, fmt.Errorf("os %q: only linux images are written as OCI images", osName)
	}
	p := ocispec.Platform{OS: osName}
	switch arch {
	case "amd64", "ppc64le":
		p.Architecture = arch
	case "aarch64":
		p.Architecture = "arm64"
	case "i386":
		p.Architecture = "386"
	case "armv6l":
		p.Architecture, p.Variant = "arm", "v6"
	case "armv7l":
		p.Architecture, p.Variant = "arm", "v7"
	default:
		return ocispec.Platform{}, fmt.Errorf("arch %q has no OCI equivalent", arch)
	}
	return p, nil
}

var tagBad = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// Tag is the tag an image of version is written under: the version with
// every run of characters a tag cannot hold made one "-" (1.0+git becomes
// 1.0-git), at most 128 characters, and not starting with "." or "-";
// "latest" when nothing is left.
func Tag(version string) string {
	t := tagBad.ReplaceAllString(version, "-")
	t = strings.TrimLeft(t, ".-")
	if len(t) > 128 {
		t = t[:128]
	}
	if t == "" {
		return "latest"
	}
	return t
}

// RepoName is the repository an appc name is given in a docker-archive's
// RepoTags: the name with "~", which a repository name cannot hold, made
// "-".
func RepoName(name string) string { return strings.ReplaceAll(name, "~", "-") }

// isStorePath reports whether p is directly in the Nix store.
func isStorePath(p string) bool {
	base, ok := strings.CutPrefix(p, "/nix/store/")
	return ok && base != "" && !strings.Contains(base, "/")
}

// PodmanArgs returns the podman run arguments that bind each store path
// read-only from the host's store at the same path, one per line, so
// that `podman run $(cat X.podman-args) oci:X.oci:TAG` runs a thin image.
// A store path with a character the shell would split or expand the word
// at is an error: the file must mean the same words in every shell.
func PodmanArgs(storePaths []string) (string, error) {
	var b strings.Builder
	for _, p := range storePaths {
		if !isStorePath(p) || strings.IndexFunc(p, unsafeRune) >= 0 {
			return "", fmt.Errorf("the store path %q holds a character that $(cat FILE) would not pass to podman as it is (only letters, digits and +-._=/ are safe): build this closure --fat or --layered", p)
		}
		b.WriteString("--volume=" + p + ":" + p + ":ro\n")
	}
	return b.String(), nil
}

func unsafeRune(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return false
	}
	return !strings.ContainsRune("+-._=/", r)
}

// BaseConfig returns the configuration of an image that runs nothing on
// its own: a base whose layers apps are built on.
func BaseConfig(osName, arch string, created time.Time) (*ocispec.Image, error) {
	plat, err := Platform(osName, arch)
	if err != nil {
		return nil, err
	}
	created = created.UTC()
	img := &ocispec.Image{Created: &created, Platform: plat}
	img.RootFS.Type = "layers"
	return img, nil
}
