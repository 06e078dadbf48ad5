package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// dryRun runs a set-up script as on a fresh machine (every package taken
// as missing) without installing anything, and returns what it would
// install.
func dryRun(t *testing.T, script string) string {
	t.Helper()
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "SETUP_DRY_RUN=1", "SETUP_ASSUME_MISSING=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

var (
	demoNeeds = []string{"nix-bin", "busybox-static", "bubblewrap", "ca-certificates"}
	testNeeds = []string{"gnupg", "jq", "pigz", "xz-utils", "bzip2", "zsh", "fish", "skopeo", "podman", "umoci", "runc", "docker-registry", "versitygw",
		// what ../shared/bench/make-corpus debian mirrors (the debian chain test)
		"git", "python3", "curl", "gdb", "openssh-client"}
)

func TestDemoSetupInstallsOnlyWhatTheDemoUses(t *testing.T) {
	out := dryRun(t, "setup")
	for _, p := range demoNeeds {
		if !strings.Contains(out, " "+p) {
			t.Errorf("scripts/setup on a fresh machine would not install %s:\n%s", p, out)
		}
	}
	for _, p := range testNeeds {
		if strings.Contains(out, " "+p) {
			t.Errorf("scripts/setup (the demo's) would install %s, which only the tests use:\n%s", p, out)
		}
	}
	if strings.Contains(out, "go install") {
		t.Errorf("scripts/setup would go install something:\n%s", out)
	}
}

func TestTestSetupInstallsTheRest(t *testing.T) {
	out := dryRun(t, "setup-test")
	for _, p := range append(demoNeeds, testNeeds...) {
		if !strings.Contains(out, " "+p) {
			t.Errorf("scripts/setup-test on a fresh machine would not install %s:\n%s", p, out)
		}
	}
}

// TestDemoRunsOnItsSetup runs scripts/demo as a new user would, with its
// set-up in dry-run mode and a go command that records what it is asked
// to do: the demo ends with BusyBox's banner twice (fat and thin) and
// never asks go to install anything.
func TestDemoRunsOnItsSetup(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	wrap := t.TempDir()
	record := filepath.Join(wrap, "go-calls")
	script := "#!/bin/sh\necho \"$*\" >> " + record + "\nexec " + goBin + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(wrap, "go"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "demo")
	cmd.Env = append(os.Environ(), "SETUP_DRY_RUN=1", "SETUP_ASSUME_MISSING=1", "DEMO_DIR="+t.TempDir(),
		"PATH="+wrap+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/demo: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "BusyBox v"); n != 2 {
		t.Errorf("scripts/demo printed BusyBox's banner %d times, want 2 (fat and thin):\n%s", n, out)
	}
	calls, _ := os.ReadFile(record)
	for _, c := range strings.Split(strings.TrimSpace(string(calls)), "\n") {
		if strings.HasPrefix(c, "install") {
			t.Errorf("scripts/demo ran go %s: the demo installs only what it uses", c)
		}
	}
	if strings.Contains(string(out), "versitygw") {
		t.Errorf("scripts/demo mentions versitygw, which only the tests use:\n%s", out)
	}
}
