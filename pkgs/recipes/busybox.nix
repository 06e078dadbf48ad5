# BusyBox: one binary with the usual Unix tools as applets.
# exec is busybox itself, so `rkt run busybox.aci -- ls /` runs an applet
# and `rkt run --interactive busybox.aci -- sh` gives a shell.
{ pkgs }:
{
  packages = [ pkgs.busybox ];
  exec = [ "/bin/busybox" ];
  labels = { "nix2aci.io/recipe" = "busybox"; };
}
