# nix2aci's Nix entry point without flakes: import ./. to get lib.buildACI
# and lib.buildLayer.
{
  lib.buildACI = import ./nix/build-aci.nix;
  lib.buildLayer = import ./nix/build-layer.nix;
}
