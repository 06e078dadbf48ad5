package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"
	"github.com/coreos/go-semver/semver"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// ACVersion is the appc spec version written into every manifest.
var ACVersion = semver.Version{Major: 0, Minor: 8, Patch: 11}

// Port is a port the app listens on.
type Port struct {
	Name            string `json:"name"`
	Protocol        string `json:"protocol"`
	Port            uint   `json:"port"`
	Count           uint   `json:"count,omitempty"`
	SocketActivated bool   `json:"socketActivated,omitempty"`
}

// Isolator is an appc isolator: a name such as "resource/memory" and its
// value as JSON.
type Isolator struct {
	Name  string          `json:"name"`
	Value json.RawMessage `json:"value"`
}

// Mount is a mount point the app expects a volume at.
type Mount struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Spec is everything an image manifest is made from. Its JSON form is what
// recipes produce (see package pkgs).
type Spec struct {
	Name             string            `json:"name"`
	Version          string            `json:"version"`
	System           string            `json:"system"` // Nix system, e.g. x86_64-linux
	Exec             []string          `json:"exec"`
	User             string            `json:"user,omitempty"`
	Group            string            `json:"group,omitempty"`
	WorkingDirectory string            `json:"workingDirectory,omitempty"`
	Environment      map[string]string `json:"environment,omitempty"`
	Ports            []Port            `json:"ports,omitempty"`
	Mounts           []Mount           `json:"mountPoints,omitempty"`
	Isolators        []Isolator        `json:"isolators,omitempty"`
	Labels           map[string]string `json:"labels,omitempty"`
	// Kind is written as the label KindLabel ("fat" or "thin"), so that
	// rkt can tell the two images of one target apart.
	Kind        string            `json:"-"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Created is written as the "created" annotation; zero means the Unix
	// epoch, so that output does not depend on when it was built.
	Created time.Time `json:"-"`

	// Users and Groups are written to the image's /etc/passwd and
	// /etc/group, after root and nobody; NoSkeleton leaves out the /etc and
	// /tmp skeleton (see package pipeline). Not part of the manifest.
	Users      []User  `json:"users,omitempty"`
	Groups     []Group `json:"groups,omitempty"`
	NoSkeleton bool    `json:"noSkeleton,omitempty"`
	// Paths give paths in the image a type, mode and owner, applied as
	// the archive is written (see package pipeline). Not part of the
	// manifest.
	Paths []PathRule `json:"paths,omitempty"`
}

// PathRule is a recipe's rule for one path in the image (a recipe's
// paths attribute, keyed by Path).
type PathRule struct {
	Path  string `json:"path"`            // absolute, e.g. "/var/lib/web"
	Type  string `json:"type,omitempty"`  // "directory" (the default) or "file" (empty)
	Mode  string `json:"mode,omitempty"`  // octal, e.g. "0750"; default 0755, a file's 0644
	User  string `json:"user,omitempty"`  // a name the image defines, or a number; default root
	Group string `json:"group,omitempty"` // likewise; default root
}

// User is a user a recipe declares.
type User struct {
	Name  string `json:"name"`
	UID   int    `json:"uid"`
	Group string `json:"group,omitempty"` // default: a group named like the user
	GID   *int   `json:"gid,omitempty"`   // default: the group's, else the uid
	Home  string `json:"home,omitempty"`  // default: /var/empty
	Shell string `json:"shell,omitempty"` // default: /bin/false
}

// Group is a group a recipe declares.
type Group struct {
	Name    string   `json:"name"`
	GID     int      `json:"gid"`
	Members []string `json:"members,omitempty"`
}

// KindLabel is the label that says whether an image holds its store paths
// (fat) or mounts them from the host (thin): with both fetched, rkt picks
// one by image string, e.g. rkt run example.com/app:1.0,kind=thin.
const KindLabel = "kind"

// New builds and validates the manifest for spec.
func New(spec Spec) (*schema.ImageManifest, error) {
	name, err := Identifier(spec.Name)
	if err != nil {
		return nil, err
	}
	osName, arch, err := OSArch(spec.System)
	if err != nil {
		return nil, err
	}
	im := schema.BlankImageManifest()
	im.ACVersion = types.SemVer(ACVersion)
	im.Name = name

	labels := map[string]string{"os": osName, "arch": arch}
	if spec.Version != "" {
		labels["version"] = spec.Version
	}
	for _, k := range sortedKeys(spec.Labels) {
		if err := CheckLabel(k, spec.Labels[k]); err != nil {
			return nil, err
		}
		labels[k] = spec.Labels[k]
	}
	if spec.Kind != "" {
		labels[KindLabel] = spec.Kind
	}
	for _, k := range sortedKeys(labels) {
		id, err := types.NewACIdentifier(k)
		if err != nil {
			return nil, fmt.Errorf("label name %q: %w", k, err)
		}
		im.Labels = append(im.Labels, types.Label{Name: *id, Value: labels[k]})
	}

	created := spec.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	annotations := map[string]string{"created": created.UTC().Format(time.RFC3339)}
	for _, k := range sortedKeys(spec.Annotations) {
		if err := CheckAnnotation(k, spec.Annotations[k]); err != nil {
			return nil, err
		}
		annotations[k] = spec.Annotations[k]
	}
	for _, k := range sortedKeys(annotations) {
		id, err := types.NewACIdentifier(k)
		if err != nil {
			return nil, fmt.Errorf("annotation name %q: %w", k, err)
		}
		im.Annotations.Set(*id, annotations[k])
	}

	if len(spec.Exec) == 0 {
		return nil, fmt.Errorf("image %s has no command: give the recipe an exec list (e.g. exec = [ \"/bin/%s\" ];)", spec.Name, lastComponent(name.String()))
	}
	for _, c := range []struct{ what, v string }{{"user", spec.User}, {"group", spec.Group}} {
		if err := CheckUserGroup(c.what, c.v); err != nil {
			return nil, err
		}
	}
	app := &types.App{
		Exec:             types.Exec(spec.Exec),
		User:             orDefault(spec.User, "0"),
		Group:            orDefault(spec.Group, "0"),
		WorkingDirectory: spec.WorkingDirectory,
	}
	for _, k := range sortedKeys(spec.Environment) {
		if err := CheckEnvName(k); err != nil {
			return nil, err
		}
		app.Environment.Set(k, spec.Environment[k])
	}
	for _, p := range spec.Ports {
		n, err := types.NewACName(p.Name)
		if err != nil || !ValidACName.MatchString(p.Name) {
			return nil, fmt.Errorf("port name %q is not an AC Name (%s)", p.Name, ValidACName)
		}
		app.Ports = append(app.Ports, types.Port{Name: *n, Protocol: orDefault(p.Protocol, "tcp"), Port: p.Port, Count: max(p.Count, 1), SocketActivated: p.SocketActivated})
	}
	for _, m := range spec.Mounts {
		n, err := types.NewACName(m.Name)
		if err != nil || !ValidACName.MatchString(m.Name) {
			return nil, fmt.Errorf("mount point name %q is not an AC Name (%s)", m.Name, ValidACName)
		}
		app.MountPoints = append(app.MountPoints, types.MountPoint{Name: *n, Path: m.Path, ReadOnly: m.ReadOnly})
	}
	for _, is := range spec.Isolators {
		raw, err := json.Marshal(is)
		if err != nil {
			return nil, err
		}
		var iso types.Isolator
		if err := iso.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("isolator %s: %w", is.Name, err)
		}
		app.Isolators = append(app.Isolators, iso)
	}
	im.App = app
	// Marshal once to run appc's validation of the whole manifest, and to
	// know its size.
	if _, err := Marshal(im); err != nil {
		var tl *TooLargeError
		if errors.As(err, &tl) {
			tl.Part, tl.Fix = largestPart(spec)
			return nil, tl
		}
		return nil, fmt.Errorf("manifest for %s is not valid: %w", spec.Name, err)
	}
	return im, nil
}

// Marshal returns the manifest's JSON as written into archives: validated by
// appc, indented, with a final newline. A manifest of more than MaxSize
// bytes is a *TooLargeError: no reader would take it.
func Marshal(im *schema.ImageManifest) ([]byte, error) {
	b, err := im.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var out strings.Builder
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	enc := json.NewEncoder(&out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if out.Len() > MaxSize {
		return nil, &TooLargeError{Size: out.Len()}
	}
	return []byte(out.String()), nil
}

// ValidACName is the AC Name rule of the appc spec.
var ValidACName = regexp.MustCompile(`^[a-z0-9]+([-][a-z0-9]+)*$`)

var (
	nameBad  = regexp.MustCompile(`[^a-z0-9]+`)
	identBad = regexp.MustCompile(`[^a-z0-9._~/-]+`)
	identSep = regexp.MustCompile(`[-._~/]{2,}`)
)

// Identifier makes s a valid AC Identifier: lower case, characters outside
// [a-z0-9-._~/] replaced by "-", separators not doubled or at the ends. A
// name with nothing left to keep is an error quoting the rule.
func Identifier(s string) (types.ACIdentifier, error) {
	t := identBad.ReplaceAllString(strings.ToLower(s), "-")
	t = identSep.ReplaceAllStringFunc(t, func(m string) string { return m[:1] })
	t = strings.Trim(t, "-._~/")
	if !types.ValidACIdentifier.MatchString(t) {
		return "", fmt.Errorf("image name %q cannot be made an AC Identifier (%s); pass --name with lower-case letters, digits and -._~/", s, types.ValidACIdentifier)
	}
	return types.ACIdentifier(t), nil
}

// CheckIdentifier checks a name a user typed (--name, a recipe's name)
// against the AC Identifier grammar, exactly: such a name is what users
// trust with rkt trust --prefix and sign for, so it is never rewritten.
// The error gives the reason and, where there is one, the nearest valid
// identifier.
func CheckIdentifier(s string) error {
	if types.ValidACIdentifier.MatchString(s) {
		return nil
	}
	var why string
	switch {
	case s == "":
		why = "it is empty"
	case strings.ToLower(s) != s:
		why = "it has upper-case letters"
	case identBad.MatchString(s):
		why = "it has characters other than a-z, 0-9 and -._~/"
	case identSep.MatchString(s):
		why = "two separators (-._~/) follow each other"
	default:
		why = "it starts or ends with a separator (-._~/)"
	}
	msg := fmt.Sprintf("%s is not an AC Identifier: %s", quote(s), why)
	if id, err := Identifier(s); err == nil {
		msg += fmt.Sprintf("; did you mean %q?", id)
	}
	return &NameError{Msg: msg}
}

// MountName returns the thin-image mount point name of a store path:
// "nix-<hash>-<name>", the name lower-cased with every run of other
// characters made one "-". The hash makes it unique and stable; the name
// makes it readable in rkt's output.
func MountName(storePath string) string {
	base := storePath[strings.LastIndex(storePath, "/")+1:]
	hash, name, _ := strings.Cut(base, "-")
	name = strings.Trim(nameBad.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if name == "" {
		return "nix-" + hash
	}
	return "nix-" + hash + "-" + name
}

// OSArch maps a Nix system (x86_64-linux) to appc's os and arch labels.
func OSArch(system string) (osName, arch string, err error) {
	cpu, kernel, ok := strings.Cut(system, "-")
	if !ok || kernel != "linux" {
		return "", "", fmt.Errorf("nix system %q has no ACI equivalent: only Linux systems run under rkt (x86_64-linux, aarch64-linux, i686-linux, armv6l-linux, armv7l-linux, powerpc64le-linux)", system)
	}
	a, ok := nixArch[cpu]
	if !ok {
		return "", "", fmt.Errorf("nix system %q has no appc arch label: supported are x86_64, aarch64, i686, armv6l, armv7l, powerpc64le", system)
	}
	return "linux", a, nil
}

// SystemOf is the Nix system of an appc os and arch label (linux,
// aarch64 -> aarch64-linux), the inverse of OSArch.
func SystemOf(osName, arch string) (string, bool) {
	if osName != "linux" {
		return "", false
	}
	for cpu, a := range nixArch {
		if a == arch {
			return cpu + "-linux", true
		}
	}
	return "", false
}

var nixArch = map[string]string{
	"x86_64":      "amd64",
	"aarch64":     "aarch64", // appc's label, not Go's arm64
	"i686":        "i386",
	"armv6l":      "armv6l",
	"armv7l":      "armv7l",
	"powerpc64le": "ppc64le",
}

// NameError reports a name or label that cannot become what it must: a
// file name of one path component, or an AC Identifier.
type NameError struct{ Msg string }

func (e *NameError) Error() string { return e.Msg }

// maxFileName is the longest file name most Linux file systems take
// (NAME_MAX), less room for the ".asc", ".rkt-args" and temporary suffixes
// written beside an image.
const maxFileName = 255 - 24

// FileName returns the conventional ACI file name for a manifest:
// <last name component>-<version>-<os>-<arch>.aci. The name is always one
// path component: a label that would put a "/" into it, or make it too
// long or unprintable, is an error naming the label, never a path that
// leads outside the output directory.
func FileName(im *schema.ImageManifest) (string, error) {
	return fileName(im, lastComponent(im.Name.String()))
}

// FlatFileName is FileName with the whole name, each "/" made "_", in
// place of its last component: <host>_<path>-<version>-<os>-<arch>.aci.
// No AC Identifier holds a "_", so two names never share a flat file
// name; an output directory holding images of several hosts (layers of
// apps under different names) keeps them apart.
func FlatFileName(im *schema.ImageManifest) (string, error) {
	return fileName(im, strings.ReplaceAll(im.Name.String(), "/", "_"))
}

func fileName(im *schema.ImageManifest, first string) (string, error) {
	parts := []string{first}
	for _, l := range []string{"version", "os", "arch"} {
		v, ok := im.Labels.Get(l)
		if !ok || v == "" {
			continue
		}
		if strings.ContainsAny(v, "/\\\x00") || v == "." || v == ".." || strings.IndexFunc(v, unicode.IsControl) >= 0 {
			return "", &NameError{Msg: fmt.Sprintf("the %s label %s cannot be part of a file name (no \"/\", \"\\\", \"..\" or control characters): set a plain version in the recipe (version = \"1.0\";)", l, quote(v))}
		}
		parts = append(parts, v)
	}
	name := strings.Join(parts, "-") + schema.ACIExtension
	if len(name) > maxFileName {
		return "", &NameError{Msg: fmt.Sprintf("the image file name would be %d bytes, more than the %d a file system takes: shorten the name (--name) or the version", len(name), maxFileName)}
	}
	if !filepath.IsLocal(name) || filepath.Base(name) != name || strings.HasPrefix(name, ".") {
		return "", &NameError{Msg: fmt.Sprintf("the image file name %s is not a plain file name", quote(name))}
	}
	return name, nil
}

// quote shows a value from a recipe in an error: quoted and bounded.
var quote = safeio.QuoteAlways

func lastComponent(s string) string { return s[strings.LastIndex(s, "/")+1:] }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
