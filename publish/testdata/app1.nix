import ./common.nix { app = "app1"; }
