# One system generation of the real-host tier, built by the container's own Nix:
#
#   nix-build --no-out-link closure.nix --argstr name NAME --argstr behaviour BEHAVIOUR
#
# The toplevel path references a payload path (what its service serves), so every closure
# has two store paths and a reference between them. BEHAVIOUR says how the generation's
# switch and service act; see switch-to-configuration and build-generation.sh.
{ name, behaviour ? "healthy" }:
let
  system = builtins.currentSystem;
  payload = derivation {
    name = "${name}-payload";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir -p $out/www && echo 'healthy ${name}' > $out/www/health" ];
  };
in
derivation {
  inherit name system behaviour payload;
  builder = "/bin/bash";
  switchScript = builtins.readFile ./switch-to-configuration;
  activateScript = builtins.readFile ./activate;
  args = [ "-c" (builtins.readFile ./build-generation.sh) ];
}
