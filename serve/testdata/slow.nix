# A package whose build takes 30 s: for the build deadline tests.
{ pkgs }:
{
  packages = [
    (derivation {
      name = "slow-${builtins.toString builtins.currentTime}";
      system = builtins.currentSystem;
      builder = "/bin/sh";
      args = [ "-c" "sleep 30; echo > $out" ];
    })
  ];
}
