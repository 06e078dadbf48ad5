# A package whose build takes 10 s and succeeds: for the tests of a
# replica killed mid-build.
{ pkgs }:
{
  packages = [
    (derivation {
      name = "slowok-${builtins.toString builtins.currentTime}";
      system = builtins.currentSystem;
      builder = "${pkgs.busybox}/bin/sh";
      args = [ "-c" ''
        ${pkgs.busybox}/bin/sleep 10
        ${pkgs.busybox}/bin/mkdir -p $out/bin
        echo '#!${pkgs.busybox}/bin/sh' > $out/bin/slowok
        echo 'echo slow' >> $out/bin/slowok
        ${pkgs.busybox}/bin/chmod 0555 $out/bin/slowok
      '' ];
    })
  ];
  exec = [ "/bin/slowok" ];
}
