// Package pkgs resolves what `nix2aci build TARGET` names into packages and
// image settings.
//
// A target is, in this order: a flake output (.#app, path:/dir#pkg,
// github:owner/repo#pkg: anything with a "#", built with nix build as it
// resolves it, flakes enabled for the call); a store path (or a link to
// one, like a nix-build "result"); a .nix file; the name of a recipe; or a
// nixpkgs attribute. A recipe is a Nix file, a function of { pkgs } returning an
// attribute set:
//
//	{ pkgs }: {
//	  packages = [ pkgs.busybox ];        # required; the first names the image
//	  exec = [ "/bin/busybox" ];          # else bin/<name>, else first of bin/
//	  name = "busybox"; version = "1.0";  # else the first package's
//	  environment = { PATH = "/bin"; };
//	  ports = [ { name = "http"; protocol = "tcp"; port = 80; } ];
//	  mounts = { data = "/var/lib/app"; };   # read-write mount points
//	  mountsRo = { config = "/etc/app"; };   # read-only mount points
//	  isolators = [ { name = "resource/memory"; value = { limit = "1G"; }; } ];
//	  labels = { }; annotations = { };
//	  user = "0"; group = "0"; workingDirectory = "/";  # names or numbers
//	  users = [ { name = "web"; uid = 1000; group = "web"; home = "/var/lib/web"; } ];
//	  groups = [ { name = "audit"; gid = 2000; members = [ "web" ]; } ];
//	  skeleton = true;                    # false: no /etc and /tmp skeleton
//	  paths = { "/var/lib/web" = { mode = "0700"; user = "web"; group = "web"; }; };  # package pipeline
//	  certs = true;   # pkgs.cacert: /etc/ssl/certs/ca-certificates.crt, SSL_CERT_FILE
//	}
//
// Recipes ship inside the binary (recipes/*.nix) and a user directory of
// recipes overrides them by file name. A .nix file may be a recipe or may
// evaluate to a derivation (or a function whose arguments all have
// defaults, or that takes pkgs), which is then packaged like a nixpkgs
// attribute with no recipe.
//
// # Which package set
//
// With nixpkgs in NIX_PATH, recipes get `import <nixpkgs> {}`. Without it,
// they get a small offline set (nix/offline.nix) that imports the host's
// static busybox into the store, so images build on a machine with neither
// nixpkgs nor network. Everything else in the offline set fails with an
// error asking for nixpkgs.
//
// Resolve evaluates (one nix-instantiate call); Realise builds the packages
// and registers GC roots for them (one nix-store call), so that a garbage
// collection cannot remove what a thin image mounts.
package pkgs
