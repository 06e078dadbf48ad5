import ./common.nix { app = "app2"; }
