package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/sign"
)

func keyCommand() *cli.Command {
	return &cli.Command{
		Name:  "key",
		Usage: "make and export OpenPGP signing keys (kept out of the Nix store)",
		Subcommands: []*cli.Command{{
			Name:  "generate",
			Usage: "make a signing key: RSA 4096 by default, which rkt can verify",
			Description: `The passphrase comes from NIX2ACI_KEY_PASSPHRASE, --passphrase-file or a
prompt on the terminal; --no-passphrase makes an unprotected key for
unattended builds. The private key file is written with mode 0600.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "name", Required: true, Usage: "the key owner's `NAME`"},
				&cli.StringFlag{Name: "email", Required: true, Usage: "the key owner's `EMAIL`"},
				&cli.StringFlag{Name: "out", Value: "signing-key.asc", Usage: "private key `FILE`"},
				&cli.StringFlag{Name: "public", Usage: "also write the public key to `FILE`"},
				&cli.StringFlag{Name: "algo", Value: "rsa4096", Usage: "rsa4096 or ed25519 (rkt cannot verify ed25519)"},
				&cli.StringFlag{Name: "passphrase-file", Usage: "read the passphrase from `FILE`"},
				&cli.BoolFlag{Name: "no-passphrase", Usage: "leave the private key unprotected"},
			},
			Action: runKeyGenerate,
		}, {
			Name:      "export",
			Usage:     "print the armored public key (what rkt trust takes); the fingerprint goes to stderr",
			ArgsUsage: "[KEY.asc]",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "key", Usage: "key `FILE` (public or private; default: the argument, or NIX2ACI_SIGNING_KEY)"},
				&cli.StringFlag{Name: "out", Usage: "write to `FILE` instead of stdout"},
			},
			Action: runKeyExport,
		}},
	}
}

func runKeyGenerate(c *cli.Context) error {
	algo := sign.Algorithm(c.String("algo"))
	if algo != sign.RSA4096 && algo != sign.Ed25519 {
		return usagef("--algo %q: use rsa4096 or ed25519", algo)
	}
	out := c.String("out")
	for _, f := range []string{out, c.String("public")} {
		if f == "" {
			continue
		}
		if _, err := os.Lstat(f); err == nil {
			return usagef("%s exists; not overwriting a key: remove it or choose another --out/--public", f)
		}
	}
	var pass []byte
	if !c.Bool("no-passphrase") {
		var err error
		if pass, err = passphrase(c, true); err != nil {
			return err
		}
	}
	if algo == sign.Ed25519 {
		fmt.Fprintln(c.App.ErrWriter, "nix2aci: warning: rkt cannot verify ed25519 signatures (it uses Go's old x/crypto/openpgp); use the default rsa4096 for images rkt fetches")
	}
	key, err := sign.GenerateKey(sign.KeyOptions{Name: c.String("name"), Email: c.String("email"), Algorithm: algo, Passphrase: pass})
	if err != nil {
		return err
	}
	var priv bytes.Buffer
	if err := sign.WritePrivateKey(&priv, key); err != nil {
		return err
	}
	if err := writeFileAtomic(out, priv.Bytes(), 0o600, false); err != nil {
		return err
	}
	if p := c.String("public"); p != "" {
		var pub bytes.Buffer
		if err := sign.WritePublicKey(&pub, key); err != nil {
			return err
		}
		if err := writeFileAtomic(p, pub.Bytes(), 0o644, false); err != nil {
			return err
		}
	}
	fmt.Fprintln(c.App.Writer, sign.Fingerprint(key))
	fmt.Fprintf(c.App.ErrWriter, "wrote %s (private, mode 0600) for %s\n", out, sign.UserID(key))
	return nil
}

func runKeyExport(c *cli.Context) error {
	file := c.String("key")
	if file == "" {
		file = c.Args().First()
	}
	var data []byte
	var err error
	switch {
	case file != "":
		data, err = readKeyFile(file)
	case secret("NIX2ACI_SIGNING_KEY") != "":
		data = []byte(secret("NIX2ACI_SIGNING_KEY"))
	default:
		return usagef("name the key: nix2aci key export KEY.asc (or set NIX2ACI_SIGNING_KEY)")
	}
	if err != nil {
		return &sign.KeyError{Msg: err.Error()}
	}
	key, err := sign.ReadKey(bytes.NewReader(data))
	if err != nil {
		return err
	}
	var pub bytes.Buffer
	if err := sign.WritePublicKey(&pub, key); err != nil {
		return err
	}
	if out := c.String("out"); out != "" {
		if err := safeToReplace(out, file); err != nil {
			return err
		}
		if err := writeFileAtomic(out, pub.Bytes(), 0o644, true); err != nil {
			return err
		}
	} else {
		c.App.Writer.Write(pub.Bytes())
	}
	fmt.Fprintf(c.App.ErrWriter, "fingerprint %s (%s)\n", sign.Fingerprint(key), sign.UserID(key))
	return nil
}

// signingKeyFlags are the flags that name a private key.
func signingKeyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "key", Usage: "private key `FILE` (default: the armored key in NIX2ACI_SIGNING_KEY)"},
		&cli.StringFlag{Name: "key-id", Usage: "the key to sign with, by `FINGERPRINT` or long key ID, when the key file holds several"},
		&cli.StringFlag{Name: "passphrase-file", Usage: "read the key's passphrase from `FILE` (default: NIX2ACI_KEY_PASSPHRASE, else a prompt)"},
	}
}

// loadSigningKey reads and unlocks the key --key or NIX2ACI_SIGNING_KEY
// names. The key is read here, by the CLI, never by a Nix build.
func loadSigningKey(c *cli.Context) (*openpgp.Entity, error) {
	var data []byte
	source := c.String("key")
	if source != "" {
		var err error
		if data, err = readKeyFile(source); err != nil {
			return nil, &sign.KeyError{Msg: fmt.Sprintf("reading signing key: %v", err)}
		}
		if fi, err := os.Stat(source); err == nil && fi.Mode().Perm()&0o077 != 0 {
			// As ssh warns of a private key others can read.
			fmt.Fprintf(c.App.ErrWriter, "nix2aci: warning: the private key %s can be read by others (mode %04o); chmod 600 %s\n", source, fi.Mode().Perm(), source)
		}
	} else if env := secret("NIX2ACI_SIGNING_KEY"); env != "" {
		data, source = []byte(env), "NIX2ACI_SIGNING_KEY"
	} else {
		return nil, usagef("signing needs a key: --key FILE, or the armored key in NIX2ACI_SIGNING_KEY (make one with nix2aci key generate)")
	}
	key, err := sign.ReadSigningKeyID(bytes.NewReader(data), c.String("key-id"), func() ([]byte, error) { return passphrase(c, false) })
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", source, err)
	}
	fmt.Fprintf(c.App.ErrWriter, "signing with key %s (%s)\n", sign.Fingerprint(key), safeio.Quote(sign.UserID(key)))
	return key, nil
}

// passphrase returns the passphrase from NIX2ACI_KEY_PASSPHRASE,
// --passphrase-file or a terminal prompt (twice when confirm is set).
func passphrase(c *cli.Context, confirm bool) ([]byte, error) {
	if f := c.String("passphrase-file"); f != "" {
		b, err := safeio.ReadFile(f, 64<<10)
		if err != nil {
			return nil, &sign.KeyError{Msg: fmt.Sprintf("reading passphrase: %v", err)}
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return nil, &sign.KeyError{Msg: "the passphrase file " + f + " is empty"}
		}
		return b, nil
	}
	if p, ok := lookupSecret("NIX2ACI_KEY_PASSPHRASE"); ok {
		if p == "" {
			return nil, &sign.KeyError{Msg: "NIX2ACI_KEY_PASSPHRASE is set but empty"}
		}
		return []byte(p), nil
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		hint := "set NIX2ACI_KEY_PASSPHRASE, pass --passphrase-file FILE, or run on a terminal"
		if confirm {
			hint += ", or make an unprotected key with --no-passphrase"
		}
		return nil, usagef("a passphrase is needed and there is no terminal to ask on: %s", hint)
	}
	defer tty.Close()
	ask := func(prompt string) ([]byte, error) {
		fmt.Fprint(tty, prompt)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		return b, err
	}
	p, err := ask("Passphrase: ")
	if err != nil {
		return nil, err
	}
	if confirm {
		again, err := ask("Passphrase again: ")
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(p, again) {
			return nil, &sign.KeyError{Msg: "the passphrases differ"}
		}
	}
	if len(p) == 0 {
		return nil, &sign.KeyError{Msg: "empty passphrase: use --no-passphrase for an unprotected key"}
	}
	return p, nil
}

// maxKeyFile is the largest key file read: an armored RSA 4096 key with
// its subkey is under 8 KiB, a keyring of a few dozen keys fits easily.
const maxKeyFile = 1 << 20

// readKeyFile reads a key file named by the user: a regular file of at
// most maxKeyFile bytes, opened without blocking.
func readKeyFile(path string) ([]byte, error) {
	return safeio.ReadFile(path, maxKeyFile)
}

// safeToReplace refuses an output file that is the input (key export
// k.asc --out k.asc would replace the private key with the public one)
// or that holds a private key: a private key is never overwritten.
func safeToReplace(out, input string) error {
	fi, err := os.Stat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if input != "" {
		if in, err := os.Stat(input); err == nil && os.SameFile(fi, in) {
			return usagef("--out %s is the key file being read; write the public key to another file", out)
		}
	}
	if !fi.Mode().IsRegular() {
		return usagef("--out %s exists and is not a regular file; not replacing it", out)
	}
	if data, err := readKeyFile(out); err == nil && bytes.Contains(data, []byte("PRIVATE KEY BLOCK")) {
		return usagef("--out %s holds a private key; not overwriting it: choose another file", out)
	}
	return nil
}
