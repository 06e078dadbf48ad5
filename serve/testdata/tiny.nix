# A package of one small script, quick to build: a layer of its own.
{ pkgs }:
{
  packages = [
    (derivation {
      name = "tiny-1";
      system = builtins.currentSystem;
      builder = "${pkgs.busybox}/bin/sh";
      args = [ "-c" ''
        ${pkgs.busybox}/bin/mkdir -p $out/bin
        echo '#!${pkgs.busybox}/bin/sh' > $out/bin/tiny
        echo 'echo tiny' >> $out/bin/tiny
        ${pkgs.busybox}/bin/chmod 0555 $out/bin/tiny
      '' ];
    })
  ];
  exec = [ "/bin/tiny" ];
}
