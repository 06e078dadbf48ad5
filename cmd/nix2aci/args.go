package main

import (
	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/internal/cliargs"
)

// interspersed rewrites args so that flags given after positional arguments
// (`nix2aci build busybox --fat`) come before them, where urfave/cli v2
// looks for them. Everything after "--" is left alone. See
// cliargs.Interspersed.
func interspersed(app *cli.App, args []string) []string {
	return cliargs.Interspersed(commandTable(app.Commands), args)
}

// commandTable describes cmds and their subcommands to cliargs: their
// names and aliases, and which of their flags take a value (all but
// *cli.BoolFlag).
func commandTable(cmds []*cli.Command) []*cliargs.Command {
	table := make([]*cliargs.Command, len(cmds))
	for i, c := range cmds {
		flags := make([]cliargs.Flag, len(c.Flags))
		for j, f := range c.Flags {
			_, isBool := f.(*cli.BoolFlag)
			flags[j] = cliargs.Flag{Names: f.Names(), TakesValue: !isBool}
		}
		table[i] = &cliargs.Command{Names: c.Names(), Flags: flags, Subcommands: commandTable(c.Subcommands)}
	}
	return table
}
