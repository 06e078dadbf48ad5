package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nix2aci/nix2aci/aci"
)

// Exit codes, documented in the README. They are decided here and only here.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed (build error, missing tool, ...)
	exitUsage   = 2 // the command line is wrong
	exitInvalid = 3 // an input archive is not a valid ACI
)

// exitCodes maps typed errors to exit codes; the first match wins.
var exitCodes = []struct {
	is   func(error) bool
	code int
}{
	{func(err error) bool { var u usageError; return errors.As(err, &u) }, exitUsage},
	{aci.IsInvalid, exitInvalid},
}

// reportError prints err as "nix2aci: cause" (plus any hint lines the error
// carries) and returns the exit code for it.
func reportError(w io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "flag provided but not defined") || strings.HasPrefix(msg, "Required flag") || strings.HasPrefix(msg, "invalid value") {
		// urfave/cli's own flag parsing errors.
		fmt.Fprintf(w, "nix2aci: %s (see 'nix2aci help')\n", msg)
		return exitUsage
	}
	fmt.Fprintf(w, "nix2aci: %s\n", msg)
	for _, m := range exitCodes {
		if m.is(err) {
			return m.code
		}
	}
	return exitFailure
}
