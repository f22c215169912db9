# The agent's own rules for what the NixOS modules hand it, so that a
# configuration the agent would refuse fails at evaluation, with a message
# naming the option and the rule, instead of at the agent's start.
#
# Builtins only (no nixpkgs `lib`), so that CI evaluates it with a bare
# `nix-instantiate`: nix/tests/rules.nix checks it against the table in
# nix/tests/names.json, and tests/tests/module_names.rs checks the same table
# against the agent itself (`fleetnode-agent check-config`). When the agent's
# rule changes, one of the two fails until this file follows.
#
# The rule (wire's HostId, the state machine's ProbeId, both `check_label`):
# 1 to 63 bytes of a-z, 0-9 and '-', not starting or ending with '-'; probe
# names also may not be `control-plane`, the agent's built-in probe.
let
  maxLabelLength = 63;

  labelRule = "1 to ${toString maxLabelLength} characters of a-z, 0-9 and '-', not starting or ending with '-'";

  # Why the agent refuses `name` as a DNS label, in the agent's words, or null
  # when it accepts it. The checks run in the agent's order, so the first
  # reason is the one the agent would print. Lengths are in bytes on both
  # sides (Rust's `str::len`, Nix's `stringLength`).
  labelProblem =
    name:
    if name == "" then
      "must not be empty"
    else if builtins.stringLength name > maxLabelLength then
      "must be at most ${toString maxLabelLength} characters"
    else if builtins.match "[a-z0-9-]*" name == null then
      "may only contain a-z, 0-9 and '-'"
    else if builtins.match "-.*|.*-" name != null then
      "must not start or end with '-'"
    else
      null;

  reservedProbeName = "control-plane";

  probeNameProblem =
    name:
    let
      label = labelProblem name;
    in
    if label != null then
      label
    else if name == reservedProbeName then
      "the name ${reservedProbeName} is reserved for the built-in reachability probe"
    else
      null;

  # A host id the agent would accept, made from a host name it refuses, or
  # null when none is close enough to suggest: lower case, '_' and '.' as '-'.
  suggestLabel =
    name:
    let
      lowered = builtins.replaceStrings upper lower name;
      upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" "_" "." ];
      lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" "-" "-" ];
    in
    if labelProblem lowered == null then lowered else null;

  quote = builtins.toJSON;
in
{
  inherit
    labelRule
    labelProblem
    probeNameProblem
    reservedProbeName
    suggestLabel
    ;

  # The assertion on services.fleetnode-agent.hostId. `fromHostName`: the
  # value is the option's default, networking.hostName, so the fix is to set
  # hostId itself rather than to rename the host.
  hostIdAssertion =
    { hostId, fromHostName }:
    let
      why = labelProblem hostId;
      suggested = suggestLabel hostId;
      example = if suggested != null then suggested else "web-01";
    in
    {
      assertion = why == null;
      message =
        if fromHostName then
          "services.fleetnode-agent.hostId defaults to networking.hostName, ${quote hostId}, "
          + "which the agent refuses as a host id: ${toString why}. A host id is ${labelRule}. "
          + "Set it explicitly, for example `services.fleetnode-agent.hostId = ${quote example};`, "
          + "and register the host at the control plane under that id (`fleetnode-cp add-host ${example}`)."
        else
          "services.fleetnode-agent.hostId: the agent refuses ${quote hostId} as a host id: ${toString why}. "
          + "A host id is ${labelRule}.";
    };

  # One assertion per probe name (services.fleetnode-agent.probes.<name>).
  probeNameAssertions =
    names:
    map (
      name:
      let
        why = probeNameProblem name;
      in
      {
        assertion = why == null;
        message =
          "services.fleetnode-agent.probes.${quote name}: the agent refuses this probe name: ${toString why}. "
          + "A probe name is ${labelRule}, and not ${quote reservedProbeName}.";
      }
    ) names;

  # The assertion on an option holding the path of a secret file (`option`
  # is its full name, `example` a fitting path for the message). A path
  # literal such as ./token is refused with the reason: it makes Nix copy the
  # file into the store, which every local user can read (with flakes the
  # whole source tree is there already). A string naming the store, or a
  # relative one, is refused too.
  secretPathAssertion =
    option: example: value:
    let
      text = toString value;
    in
    {
      assertion =
        value == null
        || (
          builtins.isString value
          && builtins.substring 0 1 value == "/"
          && builtins.substring 0 (builtins.stringLength builtins.storeDir + 1) value
            != "${builtins.storeDir}/"
        );
      message =
        if builtins.isPath value then
          "${option} is the path literal ${text}: a path literal makes Nix copy the file into "
          + "${builtins.storeDir}, which every local user can read (with flakes the whole source is "
          + "there already). Give the secret's location on the host as a string instead, for example "
          + "`${option} = ${quote example};`, and put the file there out of band (root-only)."
        else
          "${option} must be an absolute path outside ${builtins.storeDir}, as a string "
          + "(got ${quote text}): secrets in the store are readable by every local user.";
    };
}
