package nixstore

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Command is exec.CommandContext for Nix's tools: a cancelled ctx sends
// SIGTERM (Nix cleans up its temporary roots and locks on it) and waits
// a second before killing, instead of killing at once.
func Command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Second
	return cmd
}

// Limits on what of Nix's stderr goes into an error.
const (
	maxErrorLines    = 40
	maxErrorLineSize = 500
)

// ErrorMessage returns what matters of a Nix tool's stderr: everything
// from its first "error:" on (all of it if there is none), blank lines
// and the --show-trace hint dropped, lines indented, cut to a size a
// terminal can show. A non-root user without a running nix-daemon gets a
// hint naming the fix.
func ErrorMessage(stderr string) string {
	if i := strings.Index(stderr, "error:"); i >= 0 {
		stderr = stderr[i+len("error:"):]
	}
	var lines []string
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimRight(l, " \t\r")
		if strings.TrimSpace(l) == "" || strings.Contains(l, "use '--show-trace'") {
			continue
		}
		if len(l) > maxErrorLineSize {
			l = l[:maxErrorLineSize] + "…"
		}
		lines = append(lines, l)
	}
	if len(lines) > maxErrorLines {
		lines = append(lines[:maxErrorLines], "… (more in nix's own output)")
	}
	msg := strings.TrimSpace(strings.Join(lines, "\n  "))
	if hint := daemonHint(stderr); hint != "" {
		msg += "\n  " + hint
	}
	return msg
}

// daemonHint recognises a user who may not write the store and has no
// nix-daemon to ask.
func daemonHint(stderr string) string {
	if os.Geteuid() == 0 {
		return ""
	}
	for _, s := range []string{"daemon-socket", "Permission denied", "not writable", "cannot open connection"} {
		if strings.Contains(stderr, s) {
			return "hint: as a user other than root, Nix needs its daemon: sudo systemctl enable --now nix-daemon (or run nix2aci as the store's owner)"
		}
	}
	return ""
}
