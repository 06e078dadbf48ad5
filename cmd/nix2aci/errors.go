package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fetch"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/oci"
	"github.com/nix2aci/nix2aci/ocisign"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/publish"
	"github.com/nix2aci/nix2aci/push"
	"github.com/nix2aci/nix2aci/sign"
)

// Exit codes, documented in docs/cli.md (TestExitCodeTable holds the table
// to this list). They are decided here and only here.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed (build error, missing tool, ...)
	exitUsage   = 2 // the command line is wrong
	exitInvalid = 3 // an input archive is not a valid ACI (or OCI image layout)
	exitVerify  = 4 // a signature is missing, bad, or not trusted for the image
	exitKey     = 5 // a key cannot be used (unreadable, wrong passphrase, ...)

	exitInterrupted = 130 // SIGINT or SIGTERM stopped the command
)

// exitCodes maps typed errors to exit codes; the first match wins.
var exitCodes = []struct {
	is   func(error) bool
	code int
}{
	{func(err error) bool { var i interrupted; return errors.As(err, &i) }, exitInterrupted},
	{func(err error) bool { var u usageError; return errors.As(err, &u) }, exitUsage},
	{func(err error) bool { var n *manifest.NameError; return errors.As(err, &n) }, exitUsage},
	{func(err error) bool { var u *pipeline.UsageError; return errors.As(err, &u) }, exitUsage},
	{func(err error) bool { var u *publish.UsageError; return errors.As(err, &u) }, exitUsage},
	{func(err error) bool { var r *manifest.RktArgsError; return errors.As(err, &r) }, exitVerify},
	{func(err error) bool { var p *sign.PrefixError; return errors.As(err, &p) }, exitUsage},
	{func(err error) bool { var r *ocisign.ReferenceError; return errors.As(err, &r) }, exitUsage},
	{func(err error) bool { var v *sign.VerifyError; return errors.As(err, &v) }, exitVerify},
	{func(err error) bool { var u *fetch.UsageError; return errors.As(err, &u) }, exitUsage},
	{func(err error) bool { var m *fetch.MismatchError; return errors.As(err, &m) }, exitVerify},
	{aci.IsInvalid, exitInvalid},
	{func(err error) bool { var u *push.UsageError; return errors.As(err, &u) }, exitUsage},
	{func(err error) bool { var l *push.LayoutError; return errors.As(err, &l) }, exitInvalid},
	{func(err error) bool { var m *push.MissingSignatureError; return errors.As(err, &m) }, exitVerify},
	{func(err error) bool { var i *oci.InvalidError; return errors.As(err, &i) }, exitInvalid},
	{func(err error) bool { var k *sign.KeyError; return errors.As(err, &k) }, exitKey},
}

// Messages are cut to these sizes, whatever a library or Nix put into
// them: an error never floods a terminal or a CI log.
const (
	maxMessageLine = 1000
	maxMessage     = 8000
)

// reportError prints err as "nix2aci: cause" (plus any hint lines the error
// carries), with control characters escaped and its size bounded, and
// returns the exit code for it.
func reportError(w io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	msg := safeio.Terminal(err.Error(), maxMessageLine, maxMessage)
	for _, p := range []string{"flag provided but not defined", "Required flag", "invalid value", "No help topic for"} {
		if strings.HasPrefix(msg, p) {
			// urfave/cli's own command-line errors.
			fmt.Fprintf(w, "nix2aci: %s (see 'nix2aci help')\n", msg)
			return exitUsage
		}
	}
	fmt.Fprintf(w, "nix2aci: %s\n", msg)
	for _, m := range exitCodes {
		if m.is(err) {
			return m.code
		}
	}
	return exitFailure
}
