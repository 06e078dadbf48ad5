# The recipe for a nixpkgs attribute with no recipe of its own: just the
# package. nix2aci takes the name and version from the package and chooses
# exec after the build: bin/<name> if the package has it, else the first
# program in bin/.
{ pkgs, attr }:
let
  missing =
    if pkgs.nix2aciOffline or false
    then "${attr} is not in nix2aci's offline package set (it has busybox and busybox-static only): put nixpkgs in NIX_PATH (NIX_PATH=nixpkgs=/path/to/nixpkgs) to build it"
    else "nixpkgs has no attribute ${attr}";
in
{
  packages = [ (pkgs.lib.attrByPath (pkgs.lib.splitString "." attr) (throw missing) pkgs) ];
}
