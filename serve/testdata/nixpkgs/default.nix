# A stand-in for nixpkgs in tests: a package set that imports for any
# system, as nixpkgs does (import pkgs.path { system = …; }). Its
# builders are the host's /bin/sh, which Nix runs for any system in
# extra-platforms: the images say that system, and still run here.
{ system ? builtins.currentSystem, ... }:
let
  mk = name: script: derivation {
    inherit name system;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  };
in {
  path = ./.;
  busybox = mk "busybox-1.0" ''
    mkdir -p $out/bin && cp /bin/busybox $out/bin/busybox
    for a in sh echo cat ls; do ln -s busybox $out/bin/$a; done
  '';
  hello = mk "hello-1.0" ''
    mkdir -p $out/bin
    printf '#!/bin/sh\necho hello for ${system}\n' > $out/bin/hello
    chmod 0555 $out/bin/hello
  '';
  cacert = mk "cacert-test" ''
    mkdir -p $out/etc/ssl/certs
    echo "TEST CERTIFICATE for ${system}" > $out/etc/ssl/certs/ca-bundle.crt
    ln -s ca-bundle.crt $out/etc/ssl/certs/ca-certificates.crt
  '';
}
