# nix/hardening.nix as the lines NixOS writes into the agent's unit file, one
# `Key=value` a line, sorted: a list gives one line per element, true and
# false are written as "true" and "false". .ci/nix-check.sh compares this
# with the sandbox section of nix/units/fleetnode-agent.service, so the plain
# unit and the module's unit carry the same sandbox.
#
#   nix-instantiate --eval --strict -E 'import ./nix/tests/hardening.nix'
let
  hardening = import ../hardening.nix;

  render =
    value:
    if value == true then
      "true"
    else if value == false then
      "false"
    else
      toString value;

  lines = builtins.concatMap (
    key:
    let
      value = hardening.${key};
    in
    map (item: "${key}=${render item}") (if builtins.isList value then value else [ value ])
  ) (builtins.attrNames hardening);
in
builtins.concatStringsSep "\n" (builtins.sort builtins.lessThan lines)
