package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/pkgs"
)

// exitCodesHelp ends every help page: the exit codes of errors.go.
const exitCodesHelp = `
EXIT CODES:
   0    success
   1    the operation failed (build error, missing tool, missing store path, ...)
   2    the command line is wrong (a flag, a name, a missing argument)
   3    an input file isn't a valid ACI (or OCI image layout)
   4    verification failed (signature missing, bad, weak, by an untrusted,
        expired or revoked key, or .rkt-args not matching the image)
   5    a key can't be used (unreadable, public where a private key is
        needed, wrong passphrase)
   130  interrupted by SIGINT or SIGTERM; nothing was written
`

// environmentHelp says what each variable the CLI reads is for.
var environmentHelp = map[string]string{
	"NIX_PATH":               "nixpkgs=PATH makes recipes use nixpkgs; without it, the offline package set",
	"NIX2ACI_PKGS":           "a directory of recipes overriding the built-in ones (as --pkgs)",
	"NIX2ACI_SIGNING_KEY":    "the armored private key, when --key is not given (a CI secret; no program nix2aci runs sees it)",
	"NIX2ACI_KEY_PASSPHRASE": "the signing key's passphrase, when --passphrase-file is not given (no program nix2aci runs sees it)",
	"SOURCE_DATE_EPOCH":      "seconds since 1970: the image's created time and non-store mtimes",
	"XDG_CACHE_HOME":         "the cache lives in $XDG_CACHE_HOME/nix2aci (else ~/.cache/nix2aci)",
	"NIX2ACI_CACHE_KEY":      "the path of the cache key's file, as --cache-key (never the key itself)",
	"NIX2ACI_CACHE_KEY_HEX":  "the cache key itself, 64 hex digits (a CI secret), written nowhere; no program nix2aci runs sees it",
	"XDG_CONFIG_HOME":        "the cache key's file is $XDG_CONFIG_HOME/nix2aci/cache-key (else ~/.config/nix2aci/cache-key)",
	// serve --store: the AWS SDK's (config.LoadDefaultConfig), but for
	// the three secrets, which secrets.go takes.
	"AWS_ACCESS_KEY_ID":           "with AWS_SECRET_ACCESS_KEY, the credentials of the --store bucket, over AWS_PROFILE's (no program nix2aci runs sees it)",
	"AWS_SECRET_ACCESS_KEY":       "the secret of AWS_ACCESS_KEY_ID (a CI secret; no program nix2aci runs sees it)",
	"AWS_SESSION_TOKEN":           "with the two above, a temporary session's token (no program nix2aci runs sees it)",
	"AWS_PROFILE":                 "without AWS_ACCESS_KEY_ID, the profile of the AWS config and credentials files whose credentials (and region) --store uses",
	"AWS_CONFIG_FILE":             "the AWS config file (default ~/.aws/config)",
	"AWS_SHARED_CREDENTIALS_FILE": "the AWS credentials file (default ~/.aws/credentials)",
	"AWS_REGION":                  "the --store bucket's region, without --s3-region (else AWS_DEFAULT_REGION, the AWS config's, us-east-1)",
	"AWS_DEFAULT_REGION":          "the --store bucket's region, without --s3-region and AWS_REGION",
	"AWS_ENDPOINT_URL_S3":         "the S3 endpoint, without --s3-endpoint (the bucket addressed as BUCKET.HOST unless --s3-path-style)",
	"AWS_ENDPOINT_URL":            "the endpoint of every AWS service, S3's without --s3-endpoint and AWS_ENDPOINT_URL_S3",
}

// commandDocs are each command's examples and the environment variables
// it reads, by full command name.
var commandDocs = map[string]struct {
	examples []string
	env      []string
}{
	"build": {[]string{
		"nix2aci build busybox --fat",
		"nix2aci build hello --thin        # needs nixpkgs in NIX_PATH",
		"nix2aci build ./result --name example.com/tool --sign --key key.asc",
		"nix2aci build ./app.nix --json --out dist",
		"nix2aci build ./app.nix --layered --name example.com/app   # the recipe's layer groups as a chain",
		"nix2aci build ./other.nix --base example.com/nix/libs:8826f97… --trust-dir /etc/rkt/trustedkeys",
		"nix2aci build /nix/store/…-glibc --layer-group runtime --layer-prefix example.com/nix",
		"nix2aci build ./app.nix --format oci --layered --name example.com/app   # (cd ACIs && podman run oci:app-1.0-linux-amd64.oci:1.0)",
	}, []string{"NIX_PATH", "NIX2ACI_PKGS", "NIX2ACI_SIGNING_KEY", "NIX2ACI_KEY_PASSPHRASE", "SOURCE_DATE_EPOCH", "XDG_CACHE_HOME", "NIX2ACI_CACHE_KEY", "NIX2ACI_CACHE_KEY_HEX", "XDG_CONFIG_HOME"}},
	"inspect":      {[]string{"nix2aci inspect result.aci", "nix2aci inspect --json ACIs/busybox-1.35.0-linux-amd64.aci | jq .imageID"}, nil},
	"pkgs":         {[]string{"nix2aci pkgs list"}, []string{"NIX2ACI_PKGS"}},
	"pkgs list":    {[]string{"nix2aci pkgs list", "nix2aci pkgs list --pkgs ./recipes --json"}, []string{"NIX2ACI_PKGS"}},
	"cache":        {[]string{"nix2aci cache dir", "nix2aci cache gc --max-size 2G"}, []string{"XDG_CACHE_HOME"}},
	"cache gc":     {[]string{"nix2aci cache gc                 # empty the cache", "nix2aci cache gc --max-size 2G"}, []string{"XDG_CACHE_HOME"}},
	"cache dir":    {[]string{"du -sh $(nix2aci cache dir)"}, []string{"XDG_CACHE_HOME"}},
	"key":          {[]string{"nix2aci key generate --name 'Build Bot' --email bot@example.com --out key.asc --public pub.asc"}, []string{"NIX2ACI_KEY_PASSPHRASE", "NIX2ACI_SIGNING_KEY"}},
	"key generate": {[]string{"nix2aci key generate --name 'Build Bot' --email bot@example.com --out key.asc --public pub.asc", "nix2aci key generate --name CI --email ci@example.com --no-passphrase --out ci.asc"}, []string{"NIX2ACI_KEY_PASSPHRASE"}},
	"key export":   {[]string{"nix2aci key export key.asc > pub.asc", "nix2aci key export key.asc --out pub.asc"}, []string{"NIX2ACI_SIGNING_KEY"}},
	"sign":         {[]string{"nix2aci sign result.aci --key key.asc", "NIX2ACI_SIGNING_KEY=\"$(cat key.asc)\" nix2aci sign ACIs/app-1.0-linux-amd64.aci", "nix2aci sign ACIs/app-1.0-linux-amd64.oci --key key.asc --identity registry.example.com/app:1.0   # into ACIs/sigstore"}, []string{"NIX2ACI_SIGNING_KEY", "NIX2ACI_KEY_PASSPHRASE"}},
	"verify":       {[]string{"nix2aci verify result.aci --trust-dir /etc/rkt/trustedkeys", "nix2aci verify X.aci --keyring pub.asc --json", "nix2aci verify X.aci --trust-dir trust --rkt-args X.rkt-args", "nix2aci verify ACIs/app-1.0-linux-amd64.aci --trust-dir trust --json   # a layered app, with its layers", "nix2aci verify site/acis/example.com/app-1.0-linux-amd64.aci --trust-dir trust --deps-dir site/acis", "nix2aci verify ACIs/app-1.0-linux-amd64.oci --identity registry.example.com/app:1.0 --keyring pub.asc"}, nil},
	"trust":        {[]string{"nix2aci trust --prefix example.com pub.asc --trust-dir trust", "sudo nix2aci trust --root pub.asc"}, nil},
	"publish": {[]string{
		"nix2aci publish --out site --base-url https://example.com/acis --key key.asc ACIs",
		"nix2aci publish --out site --base-url https://example.com/acis --public-key pub.asc signed/*.aci",
	}, []string{"NIX2ACI_SIGNING_KEY", "NIX2ACI_KEY_PASSPHRASE"}},
	"push": {[]string{
		"nix2aci push result.oci docker://registry.example.com/app:1.0",
		"nix2aci push ACIs/app-1.0-linux-amd64.oci docker://localhost:5000/app:1.0 --key key.asc --sigstore /srv/sigstore",
		"nix2aci push ACIs/app2-1.0-linux-amd64.oci docker://localhost:5000/app2:1.0 --mount-from localhost:5000/app --json",
	}, []string{"NIX2ACI_SIGNING_KEY", "NIX2ACI_KEY_PASSPHRASE"}},
	"serve": {[]string{
		"nix2aci serve --prefix images.example.com --data /srv/acis --key key.asc --listen :8080",
		"nix2aci serve --prefix 127.0.0.1 --base-url http://127.0.0.1:8080/acis --data site --key key.asc --nixpkgs ~/nixpkgs",
	}, []string{"NIX_PATH", "NIX2ACI_PKGS", "NIX2ACI_SIGNING_KEY", "NIX2ACI_KEY_PASSPHRASE",
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
		"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"}},
	"version": {[]string{"nix2aci version", "nix2aci --version"}, nil},
	"completion": {[]string{
		"source <(nix2aci completion bash)            # in ~/.bashrc",
		"nix2aci completion zsh > ~/.zsh/nix2aci.zsh  # source it from ~/.zshrc",
		"nix2aci completion fish > ~/.config/fish/completions/nix2aci.fish",
	}, nil},
	"man": {[]string{"nix2aci man > nix2aci.1 && man ./nix2aci.1", "nix2aci man | gzip > /usr/local/share/man/man1/nix2aci.1.gz"}, nil},
}

// documentAll documents every command and subcommand from commandDocs.
func documentAll(cmds []*cli.Command, prefix string) {
	for _, c := range cmds {
		name := strings.TrimSpace(prefix + " " + c.Name)
		d := commandDocs[name]
		document(c, d.examples, d.env...)
		documentAll(c.Subcommands, name)
	}
}

// document adds examples and the environment variables a command reads
// to its description, and the exit codes to its help page, for it and
// its subcommands.
func document(c *cli.Command, examples []string, env ...string) *cli.Command {
	var b strings.Builder
	b.WriteString(strings.TrimSpace(c.Description))
	if len(examples) > 0 {
		if b.Len() > 0 {
			b.WriteString("\n\n")
		}
		b.WriteString("Examples:\n")
		for _, e := range examples {
			b.WriteString("  " + e + "\n")
		}
	}
	if len(env) > 0 {
		b.WriteString("\nEnvironment:\n")
		width := 23
		for _, v := range env {
			width = max(width, len(v))
		}
		for _, v := range env {
			fmt.Fprintf(&b, "  %-*s %s\n", width, v, environmentHelp[v])
		}
	}
	c.Description = strings.TrimRight(b.String(), "\n")
	if len(c.Subcommands) > 0 {
		c.CustomHelpTemplate = cli.SubcommandHelpTemplate + exitCodesHelp
	} else {
		c.CustomHelpTemplate = cli.CommandHelpTemplate + exitCodesHelp
	}
	return c
}

// version describes this build: module version, VCS revision and whether
// the tree was modified, Go version. A bug report names the exact build.
func version() string {
	v, rev, dirty := "(unknown)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	out := v
	if rev != "" {
		out += ", revision " + rev
		if dirty {
			out += " (modified)"
		}
	}
	return out + ", " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print nix2aci's version, VCS revision and Go version",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "nix2aci %s\n", version())
			return nil
		},
	}
}

func manCommand() *cli.Command {
	return &cli.Command{
		Name:  "man",
		Usage: "print nix2aci's manual page (roff), made from the same command definitions",
		Action: func(c *cli.Context) error {
			page, err := c.App.ToManWithSection(1)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(c.App.Writer, page)
			return err
		},
	}
}

// Completion scripts: bash and zsh ask the program itself for candidates
// (urfave/cli's --generate-bash-completion); fish gets a static script
// from the command definitions plus the same dynamic candidates.
const bashCompletion = `# nix2aci completion for bash; for zsh, run bashcompinit first.
_nix2aci() {
	local cur=${COMP_WORDS[COMP_CWORD]} opts
	opts=$("${COMP_WORDS[0]}" "${COMP_WORDS[@]:1:$((COMP_CWORD - 1))}" --generate-bash-completion 2>/dev/null)
	COMPREPLY=($(compgen -W "$opts" -- "$cur"))
	[ ${#COMPREPLY[@]} -eq 0 ] && COMPREPLY=($(compgen -f -- "$cur"))
	return 0
}
complete -F _nix2aci nix2aci
`

const zshCompletion = `# nix2aci completion for zsh
autoload -U +X bashcompinit && bashcompinit
` + bashCompletion

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: `Completes commands, flags, recipe names (nix2aci pkgs list) after build,
and .aci files where a command takes an image.`,
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, zshCompletion)
			case "fish":
				script, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				fmt.Fprint(c.App.Writer, script)
				fmt.Fprintln(c.App.Writer, "complete -c nix2aci -n '__fish_seen_subcommand_from build inspect sign verify' -f -a '(nix2aci (commandline -opc)[2..-1] --generate-bash-completion)'")
			default:
				return usagef("completion takes bash, zsh or fish (got %q)", c.Args().First())
			}
			return nil
		},
	}
}

// completeRecipes offers recipe names (the user's, from NIX2ACI_PKGS,
// and the built-in ones) and the command's flags.
func completeRecipes(c *cli.Context) {
	var opts []pkgs.Option
	if d := os.Getenv("NIX2ACI_PKGS"); d != "" {
		opts = append(opts, pkgs.WithUserRecipes(d))
	}
	if rs, err := pkgs.List(opts...); err == nil {
		for _, r := range rs {
			fmt.Fprintln(c.App.Writer, r.Name)
		}
	}
	completeFlags(c)
}

// completeImages offers the .aci files here and one directory down
// (ACIs/...), and the command's flags.
func completeImages(c *cli.Context) {
	var files []string
	for _, pattern := range []string{"*.aci", "*/*.aci"} {
		m, _ := filepath.Glob(pattern)
		files = append(files, m...)
	}
	sort.Strings(files)
	for _, f := range files {
		fmt.Fprintln(c.App.Writer, f)
	}
	completeFlags(c)
}

func completeFlags(c *cli.Context) {
	if c.Command == nil {
		return
	}
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			if len(n) > 1 {
				fmt.Fprintln(c.App.Writer, "--"+n)
			}
		}
	}
}
