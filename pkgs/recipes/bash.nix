# GNU Bash with coreutils, as an interactive shell image.
{ pkgs }:
{
  packages = [ (pkgs.bashInteractive or pkgs.bash) pkgs.coreutils ];
  name = "bash";
  exec = [ "/bin/bash" ];
  environment = { PATH = "/bin"; };
  labels = { "nix2aci.io/recipe" = "bash"; };
}
