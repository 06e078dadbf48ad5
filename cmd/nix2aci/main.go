// Command nix2aci turns Nix closures into App Container Images and signs
// them. Each command parses its flags into an options struct, calls one
// library function and prints the result: data on stdout, messages on
// stderr.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

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
func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp()
	return reportError(os.Stderr, app.RunContext(ctx, interspersed(app, args)))
}

func newApp() *cli.App {
	return &cli.App{
		Name:                 "nix2aci",
		Usage:                "turn Nix closures into App Container Images (ACIs) and sign them",
		HideHelpCommand:      true,
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			buildCommand(),
			inspectCommand(),
			pkgsCommand(),
			cacheCommand(),
			keyCommand(),
			signCommand(),
			verifyCommand(),
			trustCommand(),
		},
		// Errors are printed once, by reportError.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

// usageError marks a bad command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}
