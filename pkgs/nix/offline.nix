# nix2aci's offline package set: used when no <nixpkgs> is in NIX_PATH.
# It imports the host's statically linked busybox (Debian: busybox-static)
# into the store, so that images build on a machine with no nixpkgs and no
# network. Anything else asks for nixpkgs, by name.
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
  lib = {
    splitString = sep: s: builtins.filter builtins.isString (builtins.split "\\${sep}" s);
    attrByPath = path: default: set:
      if path == [ ] then set
      else if builtins.isAttrs set && builtins.hasAttr (builtins.head path) set
      then lib.attrByPath (builtins.tail path) default set.${builtins.head path}
      else default;
  };
in {
  inherit busybox lib;
  busybox-static = busybox;
  pkgsStatic = { inherit busybox; };
  bash = needNixpkgs "bash";
  bashInteractive = needNixpkgs "bashInteractive";
  coreutils = needNixpkgs "coreutils";
  nix2aciOffline = true;
}
