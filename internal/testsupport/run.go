package testsupport

import (
	"errors"
	"os"
	"os/exec"
	"testing"
)

// Run runs the program name with args, env added to the environment, and
// returns its combined output and whether it exited 0. A program that
// cannot be started at all is fatal; one that fails is for the test to
// judge.
func Run(t testing.TB, env []string, name string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", name, err)
	}
	return string(out), err == nil
}
