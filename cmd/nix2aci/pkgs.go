package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/pkgs"
)

func pkgsCommand() *cli.Command {
	return &cli.Command{
		Name:  "pkgs",
		Usage: "list the recipes build can use",
		Subcommands: []*cli.Command{{
			Name:  "list",
			Usage: "list recipes, built-in and from --pkgs DIR",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "pkgs", EnvVars: []string{"NIX2ACI_PKGS"}, Usage: "`DIR` of recipes overriding the built-in ones"},
				&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			},
			Action: func(c *cli.Context) error {
				var opts []pkgs.Option
				if d := c.String("pkgs"); d != "" {
					opts = append(opts, pkgs.WithUserRecipes(d))
				}
				list, err := pkgs.List(opts...)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, list)
				}
				tw := tabwriter.NewWriter(c.App.Writer, 0, 8, 2, ' ', 0)
				for _, r := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Source, r.Summary)
				}
				return tw.Flush()
			},
		}},
	}
}
