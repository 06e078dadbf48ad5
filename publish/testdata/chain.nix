# app1's closure as a chain: the base group, the library group on it, the app on top.
let
  drv = import ./common.nix { app = "chain"; };
in {
  packages = [ drv ];
  layers = [
    { name = "runtime"; packages = [ drv.base ]; }
    { name = "libs"; packages = [ drv.libfoo ]; }
  ];
}
