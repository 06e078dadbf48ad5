package manifest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/manifest"
)

// A number as user or group is what rkt's stage1 runs the app as: it
// takes what strconv.Atoi takes, then converts it to a uint32. Only the
// numbers it runs as exactly are accepted; names and paths are left to
// the image's checks.
func TestCheckUserGroup(t *testing.T) {
	for _, ok := range []string{"", "0", "1000", "65534", "2147483646", "web", "root", "/etc/app.conf", " 5", "1000a"} {
		if err := manifest.CheckUserGroup("user", ok); err != nil {
			t.Errorf("CheckUserGroup(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"4294967296", "4294967295", "-1", "-0", "+5", "007", "65535", "2147483647", "99999999999999999999999"} {
		err := manifest.CheckUserGroup("user", bad)
		var ne *manifest.NameError
		if !errors.As(err, &ne) || !strings.Contains(err.Error(), "plain decimal number from 0 to 2147483646") {
			t.Errorf("CheckUserGroup(%q) = %v, want a NameError naming the range", bad, err)
		}
	}
}

// Whatever the source (recipe or flags), a manifest appc would refuse, or
// one that would run as another id, is a NameError naming the form wanted.
func TestNewRejectsBadKeys(t *testing.T) {
	base := manifest.Spec{Name: "x", System: "x86_64-linux", Exec: []string{"/bin/x"}}
	tests := []struct {
		name   string
		change func(*manifest.Spec)
		err    string
	}{
		{"uid wraps to root", func(s *manifest.Spec) { s.User = "4294967296" }, `user "4294967296" is a number rkt would not run the app as exactly`},
		{"gid -1", func(s *manifest.Spec) { s.Group = "-1" }, `group "-1" is a number`},
		{"env name", func(s *manifest.Spec) { s.Environment = map[string]string{"BAD KEY": "1"} }, `environment variable name "BAD KEY" is not valid: a letter or _`},
		{"label name", func(s *manifest.Spec) { s.Labels = map[string]string{"Bad_Label": "x"} }, `label name "Bad_Label" is not an AC Identifier`},
		{"label kind", func(s *manifest.Spec) { s.Labels = map[string]string{"kind": "x"} }, `label "kind" is set by nix2aci`},
		{"label name name", func(s *manifest.Spec) { s.Labels = map[string]string{"name": "x"} }, `label "name" is not allowed`},
		{"annotation name", func(s *manifest.Spec) { s.Annotations = map[string]string{"Bad Anno": "x"} }, `annotation name "Bad Anno" is not an AC Identifier`},
		{"annotation created", func(s *manifest.Spec) { s.Annotations = map[string]string{"created": "yesterday"} }, `is not an RFC 3339 date`},
		{"annotation homepage", func(s *manifest.Spec) { s.Annotations = map[string]string{"homepage": "not a url"} }, `is not a URL`},
	}
	for _, tt := range tests {
		s := base
		tt.change(&s)
		_, err := manifest.New(s)
		var ne *manifest.NameError
		if !errors.As(err, &ne) || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: got %v, want a NameError containing %q", tt.name, err, tt.err)
		}
	}
	s := base
	s.Annotations = map[string]string{"created": "2024-01-02T15:04:05Z", "homepage": "https://example.com/"}
	if _, err := manifest.New(s); err != nil {
		t.Errorf("valid created and homepage annotations: %v", err)
	}
}

// The build writes no manifest its readers refuse: the limit is the
// readers' own, New and Marshal refuse a larger manifest and name what
// takes the room, and one just under the limit is made.
func TestManifestSizeLimit(t *testing.T) {
	if aci.MaxManifestSize != manifest.MaxSize {
		t.Fatalf("aci reads manifests of up to %d bytes, manifest writes up to %d", aci.MaxManifestSize, manifest.MaxSize)
	}
	base := manifest.Spec{Name: "x", System: "x86_64-linux", Exec: []string{"/bin/x"}}
	s := base
	s.Annotations = map[string]string{"big": strings.Repeat("x", manifest.MaxSize)}
	_, err := manifest.New(s)
	var tl *manifest.TooLargeError
	if !errors.As(err, &tl) || !strings.Contains(err.Error(), `its annotations take 4194307 bytes ("big" alone 4194307): shorten the annotations`) {
		t.Errorf("a 4 MiB annotation: got %v", err)
	}
	s.Annotations = map[string]string{"big": strings.Repeat("x", manifest.MaxSize-1024)}
	im, err := manifest.New(s)
	if err != nil {
		t.Fatalf("just under the limit: %v", err)
	}
	if b, err := manifest.Marshal(im); err != nil || len(b) > manifest.MaxSize {
		t.Errorf("Marshal: %d bytes, %v", len(b), err)
	}
	// A thin image of very many store paths: the mount points.
	paths := make([]string, 30000)
	for i := range paths {
		paths[i] = fmt.Sprintf("/nix/store/%032d-some-package-%d", i, i)
	}
	s = base
	s.Mounts = manifest.StoreMounts(paths)
	if _, err := manifest.New(s); !errors.As(err, &tl) || !strings.Contains(err.Error(), "its 30000 mount points take about") || !strings.Contains(err.Error(), "build it --fat or --layered") {
		t.Errorf("30,000 mount points: got %v", err)
	}
	// Layers added to an app image.
	s = base
	s.Annotations = map[string]string{"big": strings.Repeat("x", manifest.MaxSize-1024)}
	im, _ = manifest.New(s)
	deps := make([]manifest.Dependency, 20)
	for i := range deps {
		deps[i] = manifest.Dependency{Name: fmt.Sprintf("example.com/nix/layer-%d", i), ImageID: "sha512-" + strings.Repeat("a", 128), Labels: map[string]string{"version": "1"}}
	}
	if err := manifest.AddDependencies(im, deps); !errors.As(err, &tl) || !strings.Contains(err.Error(), "it lists 20 layers") {
		t.Errorf("dependencies past the limit: got %v", err)
	}
}
