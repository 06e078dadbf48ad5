package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/testsupport/ocitest"
	"github.com/nix2aci/nix2aci/manifest"
)

func TestMain(m *testing.M) {
	// Fixtures are built locally: no test waits on a binary cache. Set for
	// the whole process (not per test) so that tests can run in parallel.
	os.Setenv("NIX_CONFIG", os.Getenv("NIX_CONFIG")+"\nsubstituters =")
	code := testscript.RunMain(m, map[string]func() int{
		"nix2aci": func() int { return run(os.Args) },
	})
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// toolDir holds actool, built once from the pinned appc/spec tool
// dependency, and the repository's scripts.
func toolDir(t *testing.T) string {
	dir := filepath.Join(os.TempDir(), "nix2aci-test-tools")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "actool"), "github.com/appc/spec/actool")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building actool: %v\n%s", err, out)
	}
	return dir
}

// TestScripts runs the end-to-end scripts in testdata/script: the real CLI
// against real Nix, actool, bubblewrap and gpg, the way the README and the
// guides in docs/ use it.
func TestScripts(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"nix-build", "bwrap", "jq", "gpg", "podman", "skopeo", "umoci", "runc", "docker-registry"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run the tests with scripts/test, which installs what they need", tool)
		}
	}
	tools := toolDir(t)
	_, self, _, _ := runtime.Caller(0)
	scripts, _ := filepath.Abs(filepath.Join(filepath.Dir(self), "..", "..", "scripts"))
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", tools+":"+scripts+":"+os.Getenv("PATH"))
			env.Setenv("HOME", env.WorkDir+"/home")
			env.Setenv("XDG_CACHE_HOME", env.WorkDir+"/cache")
			env.Setenv("GNUPGHOME", env.WorkDir+"/gnupg")
			env.Setenv("NIX_CONFIG", "substituters =")
			env.Setenv("NIX_PATH", "")
			env.Setenv("SOURCE_DATE_EPOCH", "")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"acnames":  checkMountNames,
			"exitcode": checkExitCode,
			"keygen":   cachedKeyGenerate,
			"registry": startRegistry,
		},
		RequireExplicitExec: true,
	})
}

var (
	keysMu sync.Mutex
	keys   = map[string][2][]byte{} // private, public key files by keygen's other arguments
)

// keygen ARGS... is `exec nix2aci key generate ARGS...` (with --out and
// --public) run once per test process for each set of other arguments:
// later scripts get a copy of the key it made. A 4096-bit RSA key takes
// seconds to make, and most scripts need a key, not its making (sign.txtar
// and exitcodes.txtar make theirs with key generate itself).
func cachedKeyGenerate(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("keygen: no negation")
	}
	var out, pub string
	var rest []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--out", "--public":
			if i+1 == len(args) {
				ts.Fatalf("keygen: %s needs a file", args[i])
			}
			if args[i] == "--out" {
				out = args[i+1]
			} else {
				pub = args[i+1]
			}
			i++
		default:
			rest = append(rest, args[i])
		}
	}
	if out == "" || pub == "" {
		ts.Fatalf("usage: keygen [key generate's flags] --out KEY --public PUB")
	}
	id := strings.Join(rest, "\x00")
	keysMu.Lock()
	defer keysMu.Unlock()
	k, ok := keys[id]
	if !ok {
		ts.Check(ts.Exec("nix2aci", append([]string{"key", "generate"}, args...)...))
		k[0] = []byte(ts.ReadFile(out))
		k[1] = []byte(ts.ReadFile(pub))
		keys[id] = k
		return
	}
	ts.Check(os.WriteFile(ts.MkAbs(out), k[0], 0o600))
	ts.Check(os.WriteFile(ts.MkAbs(pub), k[1], 0o644))
}

// acnames IMAGE.aci checks that every mount point of the image has a valid
// AC Name and that the names are unique.
func checkMountNames(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: acnames IMAGE.aci")
	}
	info, err := aci.InspectFile(ts.MkAbs(args[0]))
	ts.Check(err)
	seen := map[string]bool{}
	var bad []string
	for _, mp := range info.Manifest.App.MountPoints {
		n := mp.Name.String()
		if !manifest.ValidACName.MatchString(n) || seen[n] {
			bad = append(bad, n)
		}
		seen[n] = true
	}
	if len(info.Manifest.App.MountPoints) == 0 {
		bad = append(bad, "(no mount points)")
	}
	if (len(bad) > 0) != neg {
		ts.Fatalf("mount point names: bad %v", bad)
	}
	fmt.Fprintf(ts.Stdout(), "%d valid mount names\n", len(seen))
}

// registry starts a docker-registry on a loopback port for the rest of
// the script and sets $REGISTRY to its HOST:PORT.
func startRegistry(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: registry")
	}
	dir := ts.MkAbs("registry")
	ts.Check(os.MkdirAll(dir, 0o755))
	r, err := ocitest.Start(dir)
	ts.Check(err)
	ts.Defer(r.Stop)
	ts.Setenv("REGISTRY", r.Host)
}

// exitcode N CMD ARGS... runs CMD and checks that it exits with N.
func checkExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: exitcode N CMD [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	if ee, ok := err.(*exec.ExitError); ok {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("%v", err)
	}
	if (got == want) == neg {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}

// The manual page is made from the command definitions: every command,
// subcommand and flag is in it.
func TestManPageHasEveryCommandAndFlag(t *testing.T) {
	app := newApp()
	page, err := app.ToManWithSection(1)
	if err != nil {
		t.Fatal(err)
	}
	var walk func(cmds []*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			if !strings.Contains(page, c.Name) {
				t.Errorf("command %s is not in the man page", c.Name)
			}
			for _, f := range c.Flags {
				for _, n := range f.Names() {
					if !strings.Contains(page, "-"+n) {
						t.Errorf("flag --%s of %s is not in the man page", n, c.Name)
					}
				}
			}
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
}
