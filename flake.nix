{
  description = "nix2aci: Nix closures as App Container Images (ACIs) for rkt";

  outputs = { self }: {
    # lib.buildACI { nix2aci; package; kind ? "fat"; base ? null; ... }: see nix/build-aci.nix.
    lib.buildACI = import ./nix/build-aci.nix;
    # lib.buildLayer { nix2aci; name; packages; prefix; base ? null; }: see nix/build-layer.nix.
    lib.buildLayer = import ./nix/build-layer.nix;
  };
}
