# A flake without inputs, for serve --flake in tests: packages built by
# the host's /bin/sh.
{
  outputs = { self }:
    let
      forSystem = system:
        let
          mk = name: script: derivation {
            inherit name system;
            builder = "/bin/sh";
            PATH = "/usr/bin:/bin";
            args = [ "-c" script ];
          };
        in {
          busybox = mk "busybox-flake-1.0" ''
            mkdir -p $out/bin && cp /bin/busybox $out/bin/busybox
            for a in sh echo cat; do ln -s busybox $out/bin/$a; done
          '';
          greet = mk "greet-2.0" ''
            mkdir -p $out/bin
            printf '#!/bin/sh\necho greetings from a flake\n' > $out/bin/greet
            chmod 0555 $out/bin/greet
          '';
        };
    in {
      packages = builtins.listToAttrs (map (system: { name = system; value = forSystem system; }) [ "x86_64-linux" "aarch64-linux" ]);
    };
}
