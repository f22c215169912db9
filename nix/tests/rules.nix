# Checks nix/rules.nix with builtins only (CI runs it with Debian's nix, no
# nixpkgs): `nix-instantiate --eval --strict nix/tests/rules.nix` evaluates to
# a summary when everything agrees and throws, listing each disagreement,
# when anything does not.
#
# 1. Every name of the shared table (names.json), as a host id and as a probe
#    name: rules.nix must refuse exactly what the agent refuses, with the
#    agent's reason. tests/tests/module_names.rs checks the same table against
#    the agent itself, so the two rules cannot drift apart unnoticed.
# 2. The assertion messages: each names the option and the rule, and says
#    what to do.
#
# `table` is an argument so that .ci/nix-check.sh can feed a wrong table and
# see this check fail.
{
  table ? builtins.fromJSON (builtins.readFile ./names.json),
}:

let
  rules = import ../rules.nix;
  show = builtins.toJSON;

  contains = needle: haystack: builtins.match ".*${escapeRegex needle}.*" haystack != null;
  escapeRegex =
    builtins.replaceStrings
      [ "\\" "." "*" "+" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" "\n" ]
      [ "\\\\" "\\." "\\*" "\\+" "\\?" "\\(" "\\)" "\\[" "\\]" "\\{" "\\}" "\\|" "\\^" "\\$" "\n" ];

  rowFailures =
    row:
    let
      asHost = rules.labelProblem row.name;
      asProbe = rules.probeNameProblem row.name;
    in
    (if asHost != row.host_id then
      [ "host id ${show row.name}: rules.nix says ${show asHost}, the agent (names.json) ${show row.host_id}" ]
    else
      [ ])
    ++ (
      if asProbe != row.probe then
        [ "probe name ${show row.name}: rules.nix says ${show asProbe}, the agent (names.json) ${show row.probe}" ]
      else
        [ ]
    );

  # An assertion case: `holds` is what `assertion` must be; every string of
  # `says` must be in the message (checked only when the assertion fails).
  case = name: result: holds: says: { inherit name result holds says; };

  hostCases = [
    (case "a valid explicit host id" (rules.hostIdAssertion {
      hostId = "web-01";
      fromHostName = false;
    }) true [ ])
    (case "an explicit host id with upper case" (rules.hostIdAssertion {
      hostId = "Web-01";
      fromHostName = false;
    }) false [ "services.fleetnode-agent.hostId" "\"Web-01\"" "may only contain a-z, 0-9 and '-'" rules.labelRule ])
    (case "a host name with '_' as the default" (rules.hostIdAssertion {
      hostId = "Web_01";
      fromHostName = true;
    }) false [
      "services.fleetnode-agent.hostId defaults to networking.hostName, \"Web_01\""
      "may only contain a-z, 0-9 and '-'"
      rules.labelRule
      "`services.fleetnode-agent.hostId = \"web-01\";`"
      "fleetnode-cp add-host web-01"
    ])
    (case "a dotted host name as the default" (rules.hostIdAssertion {
      hostId = "web.example.org";
      fromHostName = true;
    }) false [ "`services.fleetnode-agent.hostId = \"web-example-org\";`" ])
    (case "an empty host name as the default, nothing to suggest" (rules.hostIdAssertion {
      hostId = "";
      fromHostName = true;
    }) false [ "must not be empty" "for example `services.fleetnode-agent.hostId = \"web-01\";`" ])
  ];

  probeCases =
    let
      byName = builtins.listToAttrs (
        map (a: {
          name = a.name;
          value = a.assertion;
        }) (builtins.genList (i: {
          name = builtins.elemAt names i;
          assertion = builtins.elemAt (rules.probeNameAssertions names) i;
        }) (builtins.length names))
      );
      names = [
        "web"
        "Web_1"
        "control-plane"
      ];
    in
    [
      (case "a valid probe name" byName.web true [ ])
      (case "a probe name with upper case and '_'" byName.Web_1 false [
        "services.fleetnode-agent.probes.\"Web_1\""
        "may only contain a-z, 0-9 and '-'"
        rules.labelRule
      ])
      (case "the reserved probe name" byName.control-plane false [
        "services.fleetnode-agent.probes.\"control-plane\""
        "reserved for the built-in reachability probe"
      ])
    ];

  secret = rules.secretPathAssertion "services.fleetnode-agent.tokenFile" "/etc/fleetnode/token";
  secretCases = [
    (case "no secret" (secret null) true [ ])
    (case "an absolute path as a string" (secret "/etc/fleetnode/token") true [ ])
    # A path literal: evaluating the assertion must not copy it (the file does
    # not even exist), only name it.
    (case "a path literal" (secret ./token) false [
      "services.fleetnode-agent.tokenFile is the path literal"
      "every local user can read"
      "`services.fleetnode-agent.tokenFile = \"/etc/fleetnode/token\";`"
    ])
    (case "a string in the store" (secret "${builtins.storeDir}/abc-token") false [
      "services.fleetnode-agent.tokenFile must be an absolute path outside ${builtins.storeDir}"
    ])
    (case "a relative string" (secret "token") false [ "must be an absolute path" "\"token\"" ])
  ];

  cases = hostCases ++ probeCases ++ secretCases;

  caseFailures =
    c:
    if c.result.assertion != c.holds then
      [ "${c.name}: assertion is ${show c.result.assertion}, expected ${show c.holds}; message: ${c.result.message}" ]
    else if c.holds then
      [ ]
    else
      map (s: "${c.name}: the message lacks ${show s}: ${c.result.message}") (
        builtins.filter (s: !(contains s c.result.message)) c.says
      );

  failures = builtins.concatMap rowFailures table.names ++ builtins.concatMap caseFailures cases;
in
if failures == [ ] then
  "${toString (builtins.length table.names)} names agree with the agent; ${toString (builtins.length cases)} assertion cases hold"
else
  throw "nix/rules.nix disagrees:\n${builtins.concatStringsSep "\n" failures}"
