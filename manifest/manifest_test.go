package manifest_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/appc/spec/schema"

	"github.com/nix2aci/nix2aci/manifest"
)

func TestOSArch(t *testing.T) {
	tests := []struct{ system, os, arch, err string }{
		{"x86_64-linux", "linux", "amd64", ""},
		{"aarch64-linux", "linux", "aarch64", ""},
		{"i686-linux", "linux", "i386", ""},
		{"armv6l-linux", "linux", "armv6l", ""},
		{"armv7l-linux", "linux", "armv7l", ""},
		{"powerpc64le-linux", "linux", "ppc64le", ""},
		{"x86_64-darwin", "", "", "only Linux systems"},
		{"riscv64-linux", "", "", "no appc arch label"},
		{"nonsense", "", "", "no ACI equivalent"},
	}
	for _, tt := range tests {
		osName, arch, err := manifest.OSArch(tt.system)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("OSArch(%q): got error %v, want %q", tt.system, err, tt.err)
			}
			continue
		}
		if err != nil || osName != tt.os || arch != tt.arch {
			t.Errorf("OSArch(%q) = %q, %q, %v; want %q, %q", tt.system, osName, arch, err, tt.os, tt.arch)
		}
	}
}

func TestIdentifier(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"busybox", "busybox", ""},
		{"example.com/My_App", "example.com/my_app", ""},
		{"Foo+Bar baz", "foo-bar-baz", ""},
		{"--python3.11--", "python3.11", ""},
		{"a//b", "a/b", ""},
		{"!!!", "", "cannot be made an AC Identifier"},
		{"", "", "cannot be made an AC Identifier"},
	}
	for _, tt := range tests {
		got, err := manifest.Identifier(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "^[a-z0-9]+") {
				t.Errorf("Identifier(%q): got %v, want an error quoting the rule", tt.in, err)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("Identifier(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestMountName(t *testing.T) {
	tests := []struct{ path, want string }{
		{"/nix/store/3si3s18r2nyk606x9y744rnxsd5mpyc3-busybox-static-1.35.0", "nix-3si3s18r2nyk606x9y744rnxsd5mpyc3-busybox-static-1-35-0"},
		{"/nix/store/3si3s18r2nyk606x9y744rnxsd5mpyc3-Foo_Bar+baz--1.0", "nix-3si3s18r2nyk606x9y744rnxsd5mpyc3-foo-bar-baz-1-0"},
		{"/nix/store/3si3s18r2nyk606x9y744rnxsd5mpyc3-+++", "nix-3si3s18r2nyk606x9y744rnxsd5mpyc3"},
	}
	for _, tt := range tests {
		got := manifest.MountName(tt.path)
		if got != tt.want || !manifest.ValidACName.MatchString(got) {
			t.Errorf("MountName(%q) = %q, want %q (a valid AC Name)", tt.path, got, tt.want)
		}
	}
}

func TestNew(t *testing.T) {
	im, err := manifest.New(manifest.Spec{
		Name: "example.com/hello", Version: "2.1", System: "aarch64-linux", Exec: []string{"/bin/hello"},
		Environment: map[string]string{"B": "2", "A": "1"},
		Ports:       []manifest.Port{{Name: "http", Port: 80}},
		Mounts:      []manifest.Mount{{Name: "data", Path: "/data"}},
		Isolators:   []manifest.Isolator{{Name: "resource/memory", Value: []byte(`{"limit":"1G"}`)}},
		Labels:      map[string]string{"channel": "stable"},
		Created:     time.Unix(1700000000, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := manifest.Marshal(im)
	if err != nil {
		t.Fatal(err)
	}
	var back schema.ImageManifest
	if err := back.UnmarshalJSON(b); err != nil {
		t.Fatalf("appc rejects what New made: %v\n%s", err, b)
	}
	for _, want := range []struct{ label, value string }{{"version", "2.1"}, {"os", "linux"}, {"arch", "aarch64"}, {"channel", "stable"}} {
		if got, _ := back.Labels.Get(want.label); got != want.value {
			t.Errorf("label %s = %q, want %q", want.label, got, want.value)
		}
	}
	if got, _ := back.Annotations.Get("created"); got != "2023-11-14T22:13:20Z" {
		t.Errorf("created = %q", got)
	}
	if back.App.User != "0" || back.App.Group != "0" {
		t.Errorf("user/group = %q/%q, want 0/0", back.App.User, back.App.Group)
	}
	if back.App.Environment[0].Name != "A" {
		t.Errorf("environment not sorted: %v", back.App.Environment)
	}
	if got, err := manifest.FileName(&back); got != "hello-2.1-linux-aarch64.aci" || err != nil {
		t.Errorf("FileName = %q, %v", got, err)
	}
	if back.ACVersion.String() != "0.8.11" {
		t.Errorf("acVersion = %s", back.ACVersion)
	}
}

func TestNewRejects(t *testing.T) {
	base := manifest.Spec{Name: "x", System: "x86_64-linux", Exec: []string{"/bin/x"}}
	tests := []struct {
		name   string
		change func(*manifest.Spec)
		err    string
	}{
		{"no exec", func(s *manifest.Spec) { s.Exec = nil }, "no command"},
		{"bad port name", func(s *manifest.Spec) { s.Ports = []manifest.Port{{Name: "Web_1", Port: 1}} }, "not an AC Name"},
		{"os label", func(s *manifest.Spec) { s.Labels = map[string]string{"os": "plan9"} }, "set from the Nix system"},
		{"bad system", func(s *manifest.Spec) { s.System = "x86_64-freebsd" }, "only Linux"},
	}
	for _, tt := range tests {
		s := base
		tt.change(&s)
		if _, err := manifest.New(s); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: got %v, want error containing %q", tt.name, err, tt.err)
		}
	}
}

func TestRktVolumeArgs(t *testing.T) {
	got := manifest.RktVolumeArgs([]string{"/nix/store/3si3s18r2nyk606x9y744rnxsd5mpyc3-a-1"})
	want := "--volume=nix-3si3s18r2nyk606x9y744rnxsd5mpyc3-a-1,kind=host,source=/nix/store/3si3s18r2nyk606x9y744rnxsd5mpyc3-a-1,readOnly=true\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A version from a recipe never makes the image's file name leave the
// output directory.
func TestFileNameIsOneComponent(t *testing.T) {
	for _, tc := range []struct{ version, err string }{
		{"1/../../../../escaped", `the version label "1/../../../../escaped" cannot be part of a file name`},
		{"..\\x", "cannot be part of a file name"},
		{"1.0\x1b[2J", `"1.0\x1b[2J"`},
		{strings.Repeat("9", 300), "more than the 231 a file system takes"},
	} {
		im, err := manifest.New(manifest.Spec{Name: "example.com/app", Version: tc.version, System: "x86_64-linux", Exec: []string{"/bin/app"}})
		if err != nil {
			t.Fatal(err)
		}
		name, err := manifest.FileName(im)
		var ne *manifest.NameError
		if !errors.As(err, &ne) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("version %q: FileName = %q, %v; want error containing %q", tc.version, name, err, tc.err)
		}
	}
}

func TestCheckRktVolumeArgs(t *testing.T) {
	a := "/nix/store/3si3s18r2nyk606x9y744rnxsd5mpyc3-a-1"
	b := "/nix/store/5si3s18r2nyk606x9y744rnxsd5mpyc3-busybox-1.35.0"
	spec := manifest.Spec{Name: "x", System: "x86_64-linux", Exec: []string{"/bin/x"},
		Mounts: append(manifest.StoreMounts([]string{a, b}), manifest.Mount{Name: "data", Path: "/var/data"})}
	im, err := manifest.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	good := manifest.RktVolumeArgs([]string{a, b})
	va := "--volume=" + manifest.MountName(a) + ",kind=host,source=" + a + ",readOnly=true"
	vb := "--volume=" + manifest.MountName(b) + ",kind=host,source=" + b + ",readOnly=true"
	for _, tc := range []struct{ name, args, err string }{
		{"as written", good, ""},
		{"other order, one line", vb + " " + va, ""},
		{"host root bound instead", va + "\n--volume=" + manifest.MountName(b) + ",kind=host,source=/,readOnly=true\n", "not a read-only host volume"},
		{"read-write", va + "\n" + strings.Replace(vb, "readOnly=true", "readOnly=false", 1), "not a read-only host volume"},
		{"extra flag", good + "--insecure-options=all\n", "--insecure-options=all"},
		{"volume for a mount point not from the store", good + "--volume=data,kind=host,source=/etc\n", "not a read-only host volume"},
		{"missing one", va + "\n", "first missing: \"" + vb + "\""},
		{"twice", good + va + "\n", "given twice"},
		{"empty", "", "0 of 2 given"},
	} {
		err := manifest.CheckRktVolumeArgs(im, []byte(tc.args))
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestCheckIdentifier(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"example.com/busybox", ""},
		{"Bad Name", `"Bad Name" is not an AC Identifier: it has upper-case letters; did you mean "bad-name"?`},
		{"bad name", `it has characters other than a-z, 0-9 and -._~/; did you mean "bad-name"?`},
		{"a//b", `two separators (-._~/) follow each other; did you mean "a/b"?`},
		{"a/../../escaped", `two separators`},
		{"/abs", `starts or ends with a separator (-._~/); did you mean "abs"?`},
		{"", "it is empty"},
		{"!!!", "it has characters other than"},
	} {
		err := manifest.CheckIdentifier(tc.in)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("CheckIdentifier(%q) = %v, want %q", tc.in, err, tc.err)
		}
	}
}

// CheckRktVolumeArgs reads a file anyone may have changed: it never
// panics, and what it accepts is exactly the arguments RktVolumeArgs
// writes for the manifest's store mount points.
func FuzzCheckRktVolumeArgs(f *testing.F) {
	a := "/nix/store/3si3s18r2nyk606x9y744rnxsd5mpyc3-a-1"
	im, err := manifest.New(manifest.Spec{Name: "x", System: "x86_64-linux", Exec: []string{"/bin/x"}, Mounts: manifest.StoreMounts([]string{a})})
	if err != nil {
		f.Fatal(err)
	}
	good := manifest.RktVolumeArgs([]string{a})
	f.Add([]byte(good))
	f.Add([]byte(strings.Replace(good, "source="+a, "source=/", 1)))
	f.Add([]byte(good + good))
	f.Add([]byte("--volume=\x00,kind=host"))
	f.Add([]byte(strings.ReplaceAll(good, "\n", "\r\n")))
	f.Add([]byte(strings.ReplaceAll(good, "\n", "\u00a0")))
	f.Fuzz(func(t *testing.T, args []byte) {
		if manifest.CheckRktVolumeArgs(im, args) != nil {
			return
		}
		// What the shell makes of it is the one argument written.
		if words, err := manifest.ShellWords(args); err != nil || strings.Join(words, "\n")+"\n" != good {
			t.Errorf("accepted %q", args)
		}
	})
}
