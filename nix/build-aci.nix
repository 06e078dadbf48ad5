# buildACI: an ACI as the output of a derivation, so that a remote builder
# or Hydra builds and caches images like any other package and `nix copy`
# moves them. The builder is the nix2aci binary itself (a static one, so
# that it needs nothing else from the store); the closure comes from
# exportReferencesGraph, since there is no nix-store to ask inside a build.
# The image is byte-identical to what `nix2aci build PACKAGE` writes with
# the same options. Keys stay out: sign the output afterwards
# (nix2aci sign result/*.aci).
#
#   buildACI {
#     nix2aci = <a store path with bin/nix2aci>;
#     package = pkgs.hello;          # the app (or builtins.storePath /nix/store/…): the image's name, version and exec default to its
#     kind = "fat";                  # or "thin", "layered"
#     name = "example.com/hello";    # optional, an AC Identifier
#     exec = [ "/bin/hello" "--greeting" "hi" ];   # optional
#     user = "1000"; group = "1000";               # optional
#     environment = { LANG = "C.UTF-8"; };         # optional
#     labels = { }; annotations = { };             # optional
#     extraArgs = [ ];                             # more nix2aci build flags
#     base = libs;                                 # optional: a buildLayer to build on
#   }
#
# The output is a directory holding the image file(s): <name>-<version>-
# <os>-<arch>.aci, and for thin images its .rkt-args, for layered ones the
# layer images and the .deps list. With `base` (see build-layer.nix), the
# app depends on that layer group image by image ID and holds none of its
# store paths; .deps names the base's files where they are in the store.
{ nix2aci
, package
, kind ? "fat"
, name ? null
, exec ? null
, user ? null
, group ? null
, environment ? { }
, labels ? { }
, annotations ? { }
, extraArgs ? [ ]
, base ? null
, system ? package.system or builtins.currentSystem
}:
let
  quote = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";
  kv = flag: set: builtins.concatLists (map (k: [ flag "${k}=${toString set.${k}}" ]) (builtins.attrNames set));
  opt = flag: v: if v == null then [ ] else [ flag (toString v) ];
  # A package given as a store path (builtins.storePath) has no name
  # attribute: its name is the store path's, less the hash.
  storeName = builtins.unsafeDiscardStringContext (builtins.substring 33 (-1) (builtins.baseNameOf (toString package)));
in
assert builtins.elem kind [ "fat" "thin" "layered" ];
assert base == null || kind != "thin";
derivation {
  name = "${package.pname or (builtins.parseDrvName (package.name or storeName)).name}-aci";
  inherit system;
  builder = "${nix2aci}/bin/nix2aci";
  exportReferencesGraph = [ "closure" package ];
  args = [
    "build" "${package}" "--${kind}" "--closure-graph" "closure"
    "--no-link" "--no-cache" "--out" (builtins.placeholder "out")
  ]
  ++ opt "--name" name
  ++ (if exec == null then [ ] else [ "--exec" (builtins.concatStringsSep " " (map quote exec)) ])
  ++ opt "--user" user
  ++ opt "--group" group
  ++ kv "--env" environment
  ++ kv "--label" labels
  ++ kv "--annotation" annotations
  ++ (if base == null then [ ] else [ "--base" "${base}" ])
  ++ extraArgs;
}
