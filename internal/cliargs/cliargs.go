package cliargs

import "strings"

// Command is what Interspersed needs to know about one command.
type Command struct {
	Names       []string // its name, then its aliases
	Flags       []Flag   // in the order they are declared
	Subcommands []*Command
}

// Flag is one flag of a Command.
type Flag struct {
	Names      []string // without dashes: "out", "o"
	TakesValue bool     // false for a switch such as --fat
}

// completionFlag is the flag a shell's completion script adds last.
const completionFlag = "--generate-bash-completion"

// Interspersed returns args (the program's name first, then a command
// path such as "pkgs list") with the flags given after the command path
// moved ahead of its positional arguments. Flags and positional arguments
// each keep their order, and a flag keeps its value: the next argument,
// for a flag of the command that takes one, unless given as --flag=value.
// A "--" that is not a flag's value ends the flags: it and everything
// after it stay where they are. Only the last command's flags are known;
// any other flag is taken for a switch. args itself is returned if
// args[1] names none of commands, or if args ends with the flag a shell's
// completion adds.
func Interspersed(commands []*Command, args []string) []string {
	if len(args) < 2 || args[len(args)-1] == completionFlag {
		return args // completion wants its flag last, as typed
	}
	out := []string{args[0]}
	rest := args[1:]
	var cmd *Command
	// Follow the command path down from the top; flags before it are
	// not looked for.
	for len(rest) > 0 {
		next := lookup(commands, rest[0])
		if next == nil {
			break
		}
		out = append(out, rest[0])
		rest = rest[1:]
		cmd, commands = next, next.Subcommands
	}
	if cmd == nil {
		return args
	}
	var flags, positional []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if cmd.takesValue(name) && i+1 < len(rest) {
			i++
			flags = append(flags, rest[i])
		}
	}
	out = append(out, flags...)
	return append(out, positional...)
}

// lookup returns the first of commands answering to name, or nil.
func lookup(commands []*Command, name string) *Command {
	for _, c := range commands {
		for _, n := range c.Names {
			if n == name {
				return c
			}
		}
	}
	return nil
}

// takesValue reports whether the first of c's flags named name takes a
// value; false if c has no such flag.
func (c *Command) takesValue(name string) bool {
	for _, f := range c.Flags {
		for _, n := range f.Names {
			if n == name {
				return f.TakesValue
			}
		}
	}
	return false
}
