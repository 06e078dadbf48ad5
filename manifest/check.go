package manifest

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"

	"github.com/appc/spec/schema/types"
)

// MaxSize is the largest manifest an image may have, in bytes: the
// readers (package aci's Inspect and ReadManifest, so inspect, sign and
// verify) refuse a larger one, and Marshal refuses to write one. A thin
// image of 20,000 store paths has a manifest of about 3 MiB.
const MaxSize = 4 << 20

// TooLargeError is a manifest of more than MaxSize bytes.
type TooLargeError struct {
	Size int
	// Part names what takes the most room, when known; Fix says what to
	// change (default: what a recipe or the flags put in).
	Part, Fix string
}

func (e *TooLargeError) Error() string {
	msg := fmt.Sprintf("the manifest would be %d bytes, more than the %d (4 MiB) an image's manifest may be (inspect, sign and verify refuse a larger one)", e.Size, MaxSize)
	if e.Part != "" {
		msg += "; " + e.Part
	}
	fix := e.Fix
	if fix == "" {
		fix = "shorten what the recipe or the flags put into it (annotations, labels, environment, exec), or build a thin image of many store paths --fat or --layered"
	}
	return msg + ": " + fix
}

// largestPart describes what takes the most room in a manifest made from
// spec (the annotations, labels, environment, command or mount points,
// and their largest single entry), and how to make it smaller.
func largestPart(spec Spec) (desc, fix string) {
	type part struct {
		what, biggest string
		size, most    int
	}
	sum := func(what string, m map[string]string) part {
		p := part{what: what}
		for _, k := range sortedKeys(m) {
			n := len(k) + len(m[k])
			p.size += n
			if n > p.most {
				p.most, p.biggest = n, k
			}
		}
		return p
	}
	parts := []part{sum("annotations", spec.Annotations), sum("labels", spec.Labels), sum("environment", spec.Environment)}
	exec := part{what: "exec"}
	for _, w := range spec.Exec {
		exec.size += len(w)
	}
	mounts := part{what: "mount points"}
	for _, m := range spec.Mounts {
		mounts.size += len(m.Name) + len(m.Path) + 40 // the JSON around them
	}
	parts = append(parts, exec, mounts)
	sort.SliceStable(parts, func(i, j int) bool { return parts[i].size > parts[j].size })
	p := parts[0]
	switch {
	case p.size == 0:
		return "", ""
	case p.what == "mount points":
		return fmt.Sprintf("its %d mount points take about %d bytes", len(spec.Mounts), p.size), "build it --fat or --layered (a thin image's manifest lists a mount point for each store path), or mount fewer volumes"
	case p.biggest != "":
		return fmt.Sprintf("its %s take %d bytes (%s alone %d)", p.what, p.size, quote(p.biggest), p.most), fmt.Sprintf("shorten the %s the recipe or the flags set", p.what)
	}
	return fmt.Sprintf("its %s takes %d bytes", p.what, p.size), "shorten the command (exec)"
}

// MaxID is the largest uid or gid an image may name as a number: rkt
// runs the app as exactly that id (stage1 parses it with strconv.Atoi
// and converts it to a uint32, so larger numbers wrap, 4294967296 to
// root; stage1-fly hands -1 and 4294967295 to setresuid, which then
// leaves the ids unchanged, root), and the image's /etc/passwd and
// /etc/group take no larger one either.
const MaxID = 1<<31 - 2

// invalidID is the 16-bit -1, which systemd (the default stage1's) refuses
// as a User= or Group=.
const invalidID = 65535

var (
	numeric   = regexp.MustCompile(`^[+-]?[0-9]+$`)
	plainID   = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)
	envName   = regexp.MustCompile(`^[A-Za-z_][A-Za-z_0-9.-]*$`)
	idRuleMsg = fmt.Sprintf("a uid or gid is a plain decimal number from 0 to %d (not %d, which systemd refuses)", MaxID, invalidID)
)

// CheckUserGroup checks the app's user or group (what is "user" or
// "group") as rkt's stage1 reads it: a value that strconv.Atoi takes is a
// number to rkt, and must then be one rkt runs the app as exactly (a
// plain decimal from 0 to MaxID, not 65535). Names and paths are left to
// the image's checks.
func CheckUserGroup(what, s string) error {
	if !numeric.MatchString(s) {
		return nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if !plainID.MatchString(s) || err != nil || n > MaxID || n == invalidID {
		return &NameError{Msg: fmt.Sprintf("%s %s is a number rkt would not run the app as exactly: %s", what, quote(s), idRuleMsg)}
	}
	return nil
}

// CheckEnvName checks an environment variable's name against appc's rule.
func CheckEnvName(k string) error {
	if !envName.MatchString(k) {
		return &NameError{Msg: fmt.Sprintf("environment variable name %s is not valid: a letter or _, then letters, digits, _, . or - (e.g. APP_PORT=8080)", quote(k))}
	}
	return nil
}

// CheckLabel checks an image label a recipe or a flag sets: its name is
// an AC Identifier, and not one of the labels nix2aci sets itself (os and
// arch from the Nix system, kind) or that appc forbids (name).
func CheckLabel(k, v string) error {
	switch k {
	case "os", "arch":
		return &NameError{Msg: fmt.Sprintf("label %q is set from the Nix system; remove it (build for another system instead)", k)}
	case KindLabel:
		return &NameError{Msg: fmt.Sprintf("label %q is set by nix2aci (fat, thin, layered or layer); remove it", k)}
	case "name":
		return &NameError{Msg: "label \"name\" is not allowed (appc): the image's name is --name"}
	}
	if !types.ValidACIdentifier.MatchString(k) {
		return &NameError{Msg: fmt.Sprintf("label name %s is not an AC Identifier: lower-case letters, digits and -._~/, not starting or ending with a separator (e.g. team=web)", quote(k))}
	}
	return nil
}

// CheckAnnotation checks an annotation a recipe or a flag sets: its name
// is an AC Identifier, and the values appc gives a meaning are of their
// kind (created a date, homepage and documentation URLs).
func CheckAnnotation(k, v string) error {
	if !types.ValidACIdentifier.MatchString(k) {
		return &NameError{Msg: fmt.Sprintf("annotation name %s is not an AC Identifier: lower-case letters, digits and -._~/, not starting or ending with a separator (e.g. example.com/owner=ops)", quote(k))}
	}
	switch k {
	case "created":
		if _, err := types.NewDate(v); err != nil {
			return &NameError{Msg: fmt.Sprintf("annotation created=%s is not an RFC 3339 date (e.g. 2024-01-02T15:04:05Z); or set SOURCE_DATE_EPOCH", quote(v))}
		}
	case "homepage", "documentation":
		if _, err := types.NewURL(v); err != nil {
			return &NameError{Msg: fmt.Sprintf("annotation %s=%s is not a URL (e.g. https://example.com/)", k, quote(v))}
		}
	}
	return nil
}
