// Command nix2aci turns Nix closures into App Container Images and signs
// them. Each command parses its flags into an options struct, calls one
// library function and prints the result: data on stdout, messages on
// stderr.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		// Builds keep ~20 MiB live; without a limit the collector lets
		// the heap grow to twice that and more with many jobs.
		debug.SetMemoryLimit(40 << 20)
	}
	os.Exit(run(os.Args))
}

// run runs the command line args and returns the exit code.
//
// SIGINT and SIGTERM cancel the command's context: every command stops
// reading, writing and waiting at once, removes what it had half written
// and returns; run then exits with exitInterrupted. Should a command not
// have returned 1.5 s after the signal (or at a second signal), run exits
// anyway: what a killed build leaves, the next build in that directory
// removes.
func run(args []string) int {
	// Before anything else, and so before any child starts.
	takeSecrets()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		s := <-sigs
		cancel(interrupted{s})
		select {
		case <-sigs:
		case <-time.After(time.Duration(interruptGrace.Load())):
		}
		fmt.Fprintf(os.Stderr, "nix2aci: %v; stopped\n", interrupted{s})
		os.Exit(exitInterrupted)
	}()
	app := newApp()
	err := app.RunContext(ctx, interspersed(app, args))
	if errors.Is(err, errStopped) {
		return exitOK // serve, stopped by a signal as asked
	}
	var sig interrupted
	if errors.As(context.Cause(ctx), &sig) {
		if err == nil {
			err = sig
		}
		return reportError(os.Stderr, fmt.Errorf("%w: %w", sig, err))
	}
	return reportError(os.Stderr, err)
}

// interruptGrace is how long a command has to return after a signal
// (nanoseconds); serve raises it to finish requests in flight.
var interruptGrace atomic.Int64

func init() { interruptGrace.Store(int64(1500 * time.Millisecond)) }

// interrupted is the cause of a context cancelled by a signal.
type interrupted struct{ sig os.Signal }

func (i interrupted) Error() string {
	if i.sig == syscall.SIGTERM {
		return "interrupted by SIGTERM"
	}
	return "interrupted by SIGINT"
}

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "nix2aci",
		Usage:                "turn Nix closures into App Container Images (ACIs) and sign them",
		Version:              version(),
		EnableBashCompletion: true,
		Description: `Examples:
  nix2aci build busybox --fat                  # ACIs/busybox-1.35.0-linux-amd64.aci
  nix2aci build ./result --thin                # plus its .rkt-args
  nix2aci sign result.aci --key key.asc
  nix2aci verify result.aci --trust-dir /etc/rkt/trustedkeys

'nix2aci help COMMAND' shows each command's flags, examples and environment.`,
		Commands: []*cli.Command{
			buildCommand(),
			inspectCommand(),
			pkgsCommand(),
			cacheCommand(),
			keyCommand(),
			signCommand(),
			verifyCommand(),
			trustCommand(),
			publishCommand(),
			pushCommand(),
			serveCommand(),
			versionCommand(),
			completionCommand(),
			manCommand(),
		},
		CustomAppHelpTemplate: cli.AppHelpTemplate + exitCodesHelp,
		// A usage error is reported once, by reportError, without the
		// whole help page.
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError{msg: err.Error()} },
		// Errors are printed once, by reportError.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	documentAll(app.Commands, "")
	var setUsage func([]*cli.Command)
	setUsage = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.OnUsageError = app.OnUsageError
			for _, f := range c.Flags {
				// A switch is off unless given: help shows no
				// "(default: false)" (a usage may say more).
				if b, ok := f.(*cli.BoolFlag); ok && !b.Value {
					b.DisableDefaultText = true
				}
			}
			setUsage(c.Subcommands)
		}
	}
	setUsage(app.Commands)
	return app
}

// usageError marks a bad command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}
