# BusyBox linked statically: no libc in the closure, one store path.
{ pkgs }:
{
  packages = [ (pkgs.pkgsStatic.busybox or pkgs.busybox-static or pkgs.busybox) ];
  name = "busybox-static";
  exec = [ "/bin/busybox" ];
  labels = { "nix2aci.io/recipe" = "busybox-static"; };
}
