package main

import (
	"os"
	"sync"
)

// Secrets that may come in the environment. run takes every one of them
// out of the process's environment before a command starts, so that no
// child inherits them: Nix code evaluated by nix-instantiate, nix-build
// or nix (nixpkgs, a recipe, a flake's non-flake import) can read its
// environment with builtins.getEnv and write what it reads into a store
// path, and so into an image. nix2aci reads them from here instead.
//
// The AWS key ID travels with its secret: the bucket's client gets the
// three as static credentials (serve --store), not from the environment.
var secretNames = []string{
	"NIX2ACI_SIGNING_KEY",
	"NIX2ACI_KEY_PASSPHRASE",
	"NIX2ACI_CACHE_KEY_HEX",
	"AWS_ACCESS_KEY_ID",
	"AWS_SECRET_ACCESS_KEY",
	"AWS_SESSION_TOKEN",
}

var (
	secretsMu sync.Mutex
	secrets   = map[string]string{}
)

// takeSecrets moves the secrets in secretNames from the environment into
// nix2aci's memory (a variable set but empty stays known as set).
func takeSecrets() {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	for _, n := range secretNames {
		if v, ok := os.LookupEnv(n); ok {
			secrets[n] = v
			os.Unsetenv(n)
		}
	}
}

// lookupSecret is os.LookupEnv for the secrets takeSecrets took.
func lookupSecret(name string) (string, bool) {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	v, ok := secrets[name]
	return v, ok
}

// secret is os.Getenv for the secrets takeSecrets took.
func secret(name string) string {
	v, _ := lookupSecret(name)
	return v
}
