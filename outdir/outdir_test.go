package outdir_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/outdir"
)

func TestCommitReplacesTogetherAndAbortKeepsTheOld(t *testing.T) {
	out := filepath.Join(t.TempDir(), "ACIs")
	write := func(s *outdir.Stage, name, body string) {
		if err := os.WriteFile(s.Path(name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := outdir.Begin(out)
	if err != nil {
		t.Fatal(err)
	}
	write(s, "x.aci", "old image")
	write(s, "x.aci.asc", "old signature")
	if err := s.Commit([]string{"x.aci", "x.aci.asc"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	// A second build that fails changes nothing.
	s, _ = outdir.Begin(out)
	write(s, "x.aci", "half a new image")
	s.Abort()
	assertFiles(t, out, "x.aci=old image", "x.aci.asc=old signature")
	// A new unsigned image takes the old signature with it.
	s, _ = outdir.Begin(out)
	write(s, "x.aci", "new image")
	ran := false
	if err := s.Commit([]string{"x.aci"}, []string{"x.aci.asc", "x.rkt-args"}, func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Commit: %v, then ran: %v", err, ran)
	}
	assertFiles(t, out, "x.aci=new image")
}

func TestAbortRemovesTheOutputDirectoryItMade(t *testing.T) {
	out := filepath.Join(t.TempDir(), "ACIs")
	s, err := outdir.Begin(out)
	if err != nil {
		t.Fatal(err)
	}
	s.Abort()
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output directory left behind: %v", err)
	}
}

// A build killed with SIGKILL leaves its staging directory; the next
// build removes it, but not the one of a build still running.
func TestBeginSweepsTheStagesOfKilledBuilds(t *testing.T) {
	out := t.TempDir()
	live, err := outdir.Begin(out)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Abort()
	os.WriteFile(live.Path("live.aci"), []byte("x"), 0o644)
	// A stage whose owner died: made by a child process that exits.
	cmd := exec.Command(os.Args[0], "-test.run=TestHelperLeavesAStage")
	cmd.Env = append(os.Environ(), "OUTDIR_HELPER="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, b)
	}
	if n := stages(t, out); n != 2 {
		t.Fatalf("%d staging directories before the sweep, want 2", n)
	}
	next, err := outdir.Begin(out)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Abort()
	if n := stages(t, out); n != 2 { // the live one and next's
		t.Errorf("%d staging directories after the sweep, want 2", n)
	}
	if _, err := os.Stat(live.Path("live.aci")); err != nil {
		t.Errorf("the sweep removed a running build's file: %v", err)
	}
}

func TestHelperLeavesAStage(t *testing.T) {
	out := os.Getenv("OUTDIR_HELPER")
	if out == "" {
		t.Skip("run by TestBeginSweepsTheStagesOfKilledBuilds")
	}
	s, err := outdir.Begin(out)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(s.Path("dead.aci"), []byte("half"), 0o644)
	os.Exit(0) // dies holding the stage, as a killed build would
}

func stages(t *testing.T, dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".nix2aci-stage-") {
			n++
		}
	}
	return n
}

func assertFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		got = append(got, e.Name()+"="+string(b))
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("files: got %v, want %v", got, want)
	}
}

// Builds starting at once in one directory never sweep each other's new
// staging directory away (each Begin sweeps the leftovers of killed
// builds first).
func TestBeginsAtOnceDoNotSweepEachOther(t *testing.T) {
	out := t.TempDir()
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 40; i++ {
				st, err := outdir.Begin(out)
				if err != nil {
					errs <- err
					return
				}
				if _, err := os.Stat(filepath.Dir(st.Path("x"))); err != nil {
					errs <- fmt.Errorf("a new staging directory was swept away: %v", err)
					return
				}
				st.Abort()
			}
			errs <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// A directory (an OCI image layout) replaces the previous build's
// directory of that name whole, with none of its old files left inside.
func TestCommitReplacesADirectory(t *testing.T) {
	out := t.TempDir()
	for i, files := range [][]string{{"index.json", "old-blob"}, {"index.json", "new-blob"}} {
		s, err := outdir.Begin(out)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(s.Path("x.oci"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			os.WriteFile(filepath.Join(s.Path("x.oci"), f), []byte(fmt.Sprint(i)), 0o644)
		}
		if err := s.Commit([]string{"x.oci"}, nil, nil); err != nil {
			t.Fatalf("build %d: %v", i, err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(out, "x.oci"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "index.json new-blob" {
		t.Errorf("x.oci holds %s, want index.json new-blob", got)
	}
	if n := stages(t, out); n != 0 {
		t.Errorf("%d staging directories left", n)
	}
}
