# Probes of the fleetnode agent: the option type of one probe, its rendering
# into the agent's TOML, and the assertions that a probe's name is one the
# agent accepts (nix/rules.nix) and that its fields match its kind. Used by
# nix/module.nix.
{
  lib,
  duration,
  rules,
}:

let
  types = lib.types;

  probeFieldsByKind = {
    exec = [ "command" ];
    http = [
      "url"
      "expectStatus"
      "bodyContains"
    ];
    tcp = [ "address" ];
    systemd = [ "unit" ];
  };
  requiredFieldByKind = {
    exec = "command";
    http = "url";
    tcp = "address";
    systemd = "unit";
  };
in
{
  # One probe: the `probes.<name>` submodule of services.fleetnode-agent.
  module =
    {
      options = {
        kind = lib.mkOption {
          type = types.enum [
            "exec"
            "http"
            "tcp"
            "systemd"
          ];
          description = ''
            What the probe checks: `exec` runs a command and passes on exit
            status 0, `http` fetches a URL, `tcp` connects to an address,
            `systemd` checks that a unit is active.
          '';
          example = "http";
        };
        mode = lib.mkOption {
          type = types.enum [
            "enforce"
            "observe"
          ];
          default = "enforce";
          description = ''
            `enforce` probes decide whether a generation is healthy; a
            sustained failure triggers `health.onFailure`. `observe` probes
            are only reported.
          '';
        };
        interval = lib.mkOption {
          type = duration;
          default = "10s";
          description = "Time between two runs of the probe.";
        };
        timeout = lib.mkOption {
          type = duration;
          default = "5s";
          description = "Time after which one run counts as failed (an exec probe's process group is killed).";
        };
        command = lib.mkOption {
          type = types.nullOr (types.nonEmptyListOf types.str);
          default = null;
          description = ''
            For `exec` probes: the program and its arguments, run without a
            shell. Use absolute paths; the command runs inside the agent's
            sandbox (see "What an exec probe may do" in docs/nixos.md).
          '';
          example = lib.literalExpression ''[ "''${pkgs.curl}/bin/curl" "-fsS" "http://127.0.0.1:8080/ready" ]'';
        };
        url = lib.mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "For `http` probes: the URL to fetch.";
          example = "https://localhost/health";
        };
        expectStatus = lib.mkOption {
          type = types.nullOr (types.ints.between 100 599);
          default = null;
          description = "For `http` probes: the status that counts as passing (the agent's default when unset).";
          example = 200;
        };
        bodyContains = lib.mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "For `http` probes: a string the response body must contain.";
          example = "ok";
        };
        address = lib.mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "For `tcp` probes: `host:port` to connect to.";
          example = "127.0.0.1:22";
        };
        unit = lib.mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "For `systemd` probes: the unit that must be active.";
          example = "nginx.service";
        };
      };
    };

  # A probe as the agent's [probes.<name>] table, before nulls are dropped.
  render =
    probe:
    {
      inherit (probe)
        kind
        mode
        interval
        timeout
        command
        url
        address
        unit
        ;
      expect_status = probe.expectStatus;
      body_contains = probe.bodyContains;
    };

  assertions =
    probes:
    rules.probeNameAssertions (lib.attrNames probes)
    ++ lib.concatLists (
      lib.mapAttrsToList (
        name: probe:
        let
          required = requiredFieldByKind.${probe.kind};
          foreign = lib.filter (field: probe.${field} != null) (
            lib.concatLists (lib.attrValues (removeAttrs probeFieldsByKind [ probe.kind ]))
          );
        in
        [
          {
            assertion = probe.${required} != null;
            message = "services.fleetnode-agent.probes.${name}: a probe of kind \"${probe.kind}\" needs `${required}`.";
          }
          {
            assertion = foreign == [ ];
            message = "services.fleetnode-agent.probes.${name}: a probe of kind \"${probe.kind}\" takes none of ${lib.concatMapStringsSep ", " (f: "`${f}`") foreign}; remove them or change `kind`.";
          }
        ]
      ) probes
    );
}
