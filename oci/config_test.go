package oci_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/oci"
)

// The config says what the appc manifest says, in OCI's words.
func TestConfigFromManifest(t *testing.T) {
	im, err := manifest.New(manifest.Spec{
		Name: "example.com/web", Version: "1.0", System: "aarch64-linux",
		Exec: []string{"/bin/web", "--port", "8080"},
		User: "web", Group: "web", WorkingDirectory: "/srv",
		Environment: map[string]string{"LANG": "C.UTF-8"},
		Ports:       []manifest.Port{{Name: "http", Port: 8080}, {Name: "dns", Protocol: "udp", Port: 53, Count: 2}},
		Mounts:      append([]manifest.Mount{{Name: "data", Path: "/var/lib/web"}}, manifest.StoreMounts([]string{"/nix/store/00000000000000000000000000000000-x"})...),
		Labels:      map[string]string{"channel": "stable"},
		Kind:        "thin",
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := oci.Config(im, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(cfg)
	want := `{"created":"2023-11-14T22:13:20Z","architecture":"arm64","os":"linux",` +
		`"config":{"User":"web:web","ExposedPorts":{"53/udp":{},"54/udp":{},"8080/tcp":{}},` +
		`"Env":["LANG=C.UTF-8","PATH=` + oci.DefaultPath + `"],"Entrypoint":["/bin/web"],"Cmd":["--port","8080"],` +
		`"Volumes":{"/var/lib/web":{}},"WorkingDir":"/srv","Labels":{"channel":"stable","kind":"thin","version":"1.0"}},` +
		`"rootfs":{"type":"layers","diff_ids":null}}`
	if string(got) != want {
		t.Errorf("config\n got %s\nwant %s", got, want)
	}
}

func TestTag(t *testing.T) {
	for in, want := range map[string]string{"1.36.1": "1.36.1", "1.0+git": "1.0-git", "": "latest", ".hidden": "hidden", strings.Repeat("x", 200): strings.Repeat("x", 128)} {
		if got := oci.Tag(in); got != want {
			t.Errorf("Tag(%q) = %q, want %q", in, got, want)
		}
	}
}

// A store path the shell would expand or split is refused, not written
// into a file that podman run $(cat FILE) would misread.
func TestPodmanArgs(t *testing.T) {
	got, err := oci.PodmanArgs([]string{"/nix/store/00000000000000000000000000000000-a-1.0"})
	if err != nil || got != "--volume=/nix/store/00000000000000000000000000000000-a-1.0:/nix/store/00000000000000000000000000000000-a-1.0:ro\n" {
		t.Errorf("PodmanArgs = %q, %v", got, err)
	}
	if _, err := oci.PodmanArgs([]string{"/nix/store/00000000000000000000000000000000-a?"}); err == nil || !strings.Contains(err.Error(), "--fat or --layered") {
		t.Errorf("a glob character in a store path: %v", err)
	}
}
