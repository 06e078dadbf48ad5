# nix2aci's Nix entry point without flakes: import ./. to get lib.buildACI.
{
  lib.buildACI = import ./nix/build-aci.nix;
}
