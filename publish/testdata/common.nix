# Two apps on one library and a base: the layered-publish test's closure.
{ app, version ? "1.0" }:
let
  sh = args: builtins.derivation ({ system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; } // args);
  base = sh { name = "base-1.0"; args = [ "-c" "mkdir -p $out/bin; cp /bin/busybox $out/bin/busybox" ]; };
  libfoo = sh { name = "libfoo-2.0"; inherit base; args = [ "-c" "mkdir -p $out/share; echo foo data > $out/share/foo.txt; echo $base > $out/share/base-path" ]; };
in sh {
  name = "${app}-${version}";
  inherit base libfoo;
  args = [ "-c" "mkdir -p $out/bin; printf '#!%s/bin/busybox sh\\necho ${app} ${version} reads: $(%s/bin/busybox cat %s/share/foo.txt)\\n' $base $base $libfoo > $out/bin/${app}; chmod +x $out/bin/${app}" ];
}
