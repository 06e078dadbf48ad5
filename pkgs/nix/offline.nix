# nix2aci's offline package set: used when no <nixpkgs> is in NIX_PATH.
# It imports the host's statically linked busybox (Debian: busybox-static)
# into the store, so that images build on a machine with no nixpkgs and no
# network, and the host's CA certificate bundle as cacert. Anything else
# asks for nixpkgs, by name.
{ hostBusybox, hostBusyboxVersion }:
let
  needNixpkgs = name: throw "${name} is not in nix2aci's offline package set (it has busybox and busybox-static only): put nixpkgs in NIX_PATH (NIX_PATH=nixpkgs=/path/to/nixpkgs) to build it";
  binary =
    if hostBusyboxVersion == ""
    then throw "the offline package set needs a static busybox at ${hostBusybox}: apt-get install busybox-static (or put nixpkgs in NIX_PATH)"
    else builtins.path { path = /. + hostBusybox; name = "busybox-static-binary"; };
  busybox = derivation {
    name = "busybox-${hostBusyboxVersion}";
    pname = "busybox";
    version = hostBusyboxVersion;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    inherit binary;
    args = [ "-c" ''
      set -e
      mkdir -p $out/bin
      cp $binary $out/bin/busybox
      chmod 0555 $out/bin/busybox
      for a in $($out/bin/busybox --list); do
        [ "$a" = busybox ] || ln -s busybox $out/bin/$a
      done
    '' ];
  };
  # CA certificates: the host's bundle (Debian: ca-certificates), laid out
  # as nixpkgs' cacert lays it out.
  hostCerts = /etc/ssl/certs/ca-certificates.crt;
  cacert =
    if !(builtins.pathExists hostCerts)
    then throw "the offline package set's cacert imports the host's /etc/ssl/certs/ca-certificates.crt, which is missing: apt-get install ca-certificates (or put nixpkgs in NIX_PATH)"
    else derivation {
      name = "cacert-host";
      pname = "cacert";
      version = "host";
      system = builtins.currentSystem;
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      bundle = builtins.path { path = hostCerts; name = "ca-certificates.crt"; };
      args = [ "-c" "mkdir -p $out/etc/ssl/certs && cp $bundle $out/etc/ssl/certs/ca-bundle.crt && ln -s ca-bundle.crt $out/etc/ssl/certs/ca-certificates.crt" ];
    };
  lib = {
    splitString = sep: s: builtins.filter builtins.isString (builtins.split "\\${sep}" s);
    attrByPath = path: default: set:
      if path == [ ] then set
      else if builtins.isAttrs set && builtins.hasAttr (builtins.head path) set
      then lib.attrByPath (builtins.tail path) default set.${builtins.head path}
      else default;
  };
in {
  inherit busybox cacert lib;
  busybox-static = busybox;
  pkgsStatic = { inherit busybox; };
  bash = needNixpkgs "bash";
  bashInteractive = needNixpkgs "bashInteractive";
  coreutils = needNixpkgs "coreutils";
  nix2aciOffline = true;
}
