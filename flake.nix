{
  description = "nix2aci: Nix closures as App Container Images (ACIs) for rkt";

  outputs = { self }: {
    # lib.buildACI { nix2aci; package; kind ? "fat"; ... }: see nix/build-aci.nix.
    lib.buildACI = import ./nix/build-aci.nix;
  };
}
