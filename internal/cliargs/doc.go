// Package cliargs moves the flags of a command line ahead of its
// positional arguments, so that `nix2aci build busybox --fat` parses like
// `nix2aci build --fat busybox`: urfave/cli v2 stops reading flags at the
// first positional argument.
//
// The CLI describes its commands to Interspersed as plain data (Command
// and Flag) rather than as urfave/cli values. That keeps this package a
// leaf that imports only the standard library, so its fuzz target is
// compiled with coverage instrumentation on its own instead of with
// everything cmd/nix2aci links.
package cliargs
