# Evaluates one build target to the JSON nix2aci reads: the recipe's
# settings and, for each package, its derivation and output path. Kind
# "value" evaluates a .nix file called as a recipe is to its value, as
# it is (see pkgs.Evaluate).
{ kind # "recipe", "file", "attr" or "value"
, target # recipe file, .nix file, or attribute path
, hostBusybox ? "/bin/busybox"
, hostBusyboxVersion ? ""
}:
let
  hasNixpkgs = builtins.any (e: e.prefix == "nixpkgs") builtins.nixPath;
  pkgs =
    if hasNixpkgs then import <nixpkgs> { }
    else import ./offline.nix { inherit hostBusybox hostBusyboxVersion; };
  call = f: args:
    if builtins.isFunction f
    then f (builtins.intersectAttrs (builtins.functionArgs f) args)
    else f;
  args = { inherit pkgs; lib = pkgs.lib or null; attr = target; };
  isDrv = x: builtins.isAttrs x && (x.type or "") == "derivation";
  recipe =
    if kind == "attr" then call (import ../recipes/generic.nix) args
    else if kind == "recipe" then call (import (/. + target)) args
    else
      let x = call (import (/. + target)) args;
      in if isDrv x then { packages = [ x ]; } else x;
  parsed = p: builtins.parseDrvName p.name;
  pkg = p:
    if !(isDrv p) then throw "a package of ${target} is not a derivation"
    else {
      name = p.name;
      pname = p.pname or (parsed p).name;
      version = p.version or (parsed p).version;
      drvPath = p.drvPath;
      storePath = p.outPath;
      system = p.system or builtins.currentSystem;
    };
  # certs = true: the CA bundle (pkgs.cacert) and SSL_CERT_FILE naming it.
  certs = recipe.certs or false;
  certFile = "/etc/ssl/certs/ca-certificates.crt";
  packages = recipe.packages ++ (if certs then [ pkgs.cacert ] else [ ]);
  mounts = ro: set: map (n: { name = n; path = set.${n}; readOnly = ro; }) (builtins.attrNames set);
  str = s: if s == null then "" else toString s;
  # paths = { "/var/lib/web" = { mode = "0700"; user = "web"; }; }: a list
  # of rules, sorted by path; nix2aci checks and resolves them.
  pathRule = p: v:
    let
      bad = builtins.filter (n: !(builtins.elem n [ "type" "mode" "user" "group" ])) (builtins.attrNames v);
      field = n: let x = v.${n} or null; in
        if x == null || builtins.isString x then str x
        else if n == "mode" then throw "paths.\"${p}\".mode must be a string of octal digits, such as \"0750\" (Nix has no octal numbers)"
        else if builtins.isInt x then toString x
        else throw "paths.\"${p}\".${n} must be a name or a number";
    in
      if !(builtins.isAttrs v) then throw "paths.\"${p}\" must be an attribute set of type, mode, user and group"
      else if bad != [ ] then throw "paths.\"${p}\" has an unknown attribute ${builtins.head bad} (a rule takes type, mode, user and group)"
      else { path = p; type = field "type"; mode = field "mode"; user = field "user"; group = field "group"; };
  paths = let set = recipe.paths or { }; in
    if !(builtins.isAttrs set) then throw "paths must be an attribute set keyed by path in the image, such as { \"/var/lib/web\" = { user = \"web\"; }; }"
    else map (p: pathRule p set.${p}) (builtins.attrNames set);
in
  if kind == "value" then call (import (/. + target)) args
  else if !(builtins.isAttrs recipe) || !(recipe ? packages) then
    throw "${target} is neither a derivation nor a recipe (an attribute set with `packages`)"
  else {
    offline = !hasNixpkgs;
    packages = map pkg packages;
    name = str (recipe.name or null);
    version = str (recipe.version or null);
    exec = recipe.exec or [ ];
    user = str (recipe.user or null);
    group = str (recipe.group or null);
    workingDirectory = str (recipe.workingDirectory or null);
    environment = (if certs then { SSL_CERT_FILE = certFile; NIX_SSL_CERT_FILE = certFile; } else { }) // (recipe.environment or { });
    ports = recipe.ports or [ ];
    mountPoints = mounts false (recipe.mounts or { }) ++ mounts true (recipe.mountsRo or { });
    isolators = recipe.isolators or [ ];
    labels = recipe.labels or { };
    annotations = recipe.annotations or { };
    users = recipe.users or [ ];
    groups = recipe.groups or [ ];
    noSkeleton = !(recipe.skeleton or true);
    layerGroups = map (g: { name = g.name; packages = map pkg g.packages; }) (recipe.layers or [ ]);
    inherit paths;
  }
