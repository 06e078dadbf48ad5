# A package whose build takes 30 s: for the build deadline tests.
{ pkgs }:
{
  packages = [
    (derivation {
      name = "slow-${builtins.toString builtins.currentTime}";
      system = builtins.currentSystem;
      builder = "${pkgs.busybox}/bin/sh";
      args = [ "-c" "${pkgs.busybox}/bin/sleep 30; ${pkgs.busybox}/bin/mkdir -p $out/bin" ];
    })
  ];
  exec = [ "/bin/true" ];
}
