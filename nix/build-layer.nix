# buildLayer: one layer group image as a derivation of its own, so that a
# build farm builds a base once for many apps and `nix copy` moves it.
# The image is byte-identical to the layer group of the same name, on the
# same base, that `nix2aci build --layered` writes for a recipe's
# `layers`, and to `nix2aci build PKG… --layer-group NAME [--base FILE]`.
#
#   runtime = buildLayer { nix2aci; name = "runtime"; packages = [ pkgs.glibc ]; prefix = "example.com/nix"; };
#   libs    = buildLayer { nix2aci; name = "libs"; packages = [ pkgs.openssl ]; prefix = "example.com/nix"; base = runtime; };
#   app     = buildACI { nix2aci; package = pkgs.curl; kind = "layered"; base = libs; };
#
# The output is a directory holding the image (<prefix>_<name>-<version>-
# <os>-<arch>.aci, the name's "/" made "_") and layer.json: its name,
# version, image ID and store paths (those below it included). `base` is
# another buildLayer (or a directory holding one layer image and its
# layer.json); the group holds its packages' closure less what the base
# holds, and depends on it by image ID.
{ nix2aci
, name
, packages
, prefix
, base ? null
, compression ? "gzip"
, level ? 6
, system ? (builtins.head packages).system or builtins.currentSystem
}:
let
  graphs = builtins.genList (i: "closure${toString i}") (builtins.length packages);
in
derivation {
  name = "${name}-layer";
  inherit system;
  builder = "${nix2aci}/bin/nix2aci";
  exportReferencesGraph = builtins.concatLists (builtins.genList (i: [ (builtins.elemAt graphs i) (builtins.elemAt packages i) ]) (builtins.length packages));
  args = [ "build" ] ++ map toString packages ++ [
    "--layer-group" name "--layer-prefix" prefix
    "--compression" compression "--level" (toString level)
    "--no-link" "--no-cache" "--out" (builtins.placeholder "out")
    "--describe" "layer.json"
  ]
  ++ builtins.concatLists (map (g: [ "--closure-graph" g ]) graphs)
  ++ (if base == null then [ ] else [ "--base" "${base}" ]);
}
