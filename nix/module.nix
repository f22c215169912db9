# NixOS module for the fleetnode agent: services.fleetnode-agent.
#
# The module renders the agent's TOML configuration into the store and runs
# `fleetnode-agent run --config <file>` as root without capabilities, in the
# sandbox of nix/hardening.nix. Secrets (the bearer token and the client TLS
# key) never enter the store: systemd copies them into the service's
# credential directory with LoadCredential=, and the rendered configuration
# names the credential, not the file. Host ids, probe names and secret paths
# are checked at evaluation with the agent's own rules (nix/rules.nix).
#
# nix/units/fleetnode-agent.service is the same unit for hosts without this
# module; keep the two in step (CI checks that their sandboxes are the same).
{
  config,
  options,
  lib,
  pkgs,
  utils,
  ...
}:

let
  cfg = config.services.fleetnode-agent;
  # One URL or several: the agent's file takes either form; the checks look at each.
  controlPlaneUrls = lib.toList cfg.controlPlaneUrl;
  format = pkgs.formats.toml { };
  types = lib.types;

  duration = types.strMatching "[0-9]+(ms|s|m|h)" // {
    description = "duration such as \"500ms\", \"30s\", \"5m\" or \"1h\"";
  };

  rules = import ./rules.nix;

  # An absolute path that systemd reads at service start; never copied into
  # the store. Path literals such as ./token pass the type only so that the
  # assertion (rules.secretPathAssertion) can say why they are refused: the
  # module never interpolates them, which would copy the secret.
  secretPath = types.nullOr (types.either types.str types.path) // {
    description = "null or absolute path as a string, outside the store";
  };

  probes = import ./probes.nix { inherit lib duration rules; };

  # The host id is the option's default, networking.hostName, rather than a
  # value set for the agent (mkOptionDefault's priority is 1500).
  hostIdFromHostName = options.services.fleetnode-agent.hostId.highestPrio >= 1500;

  # TOML has no null: every unset optional key is dropped, and so is a table
  # that ends up empty (for example [tls] on a host that uses a token only).
  dropNulls = lib.filterAttrsRecursive (_: value: value != null);
  dropEmptyTables = lib.filterAttrs (_: value: !(lib.isAttrs value && value == { }));

  rendered = dropEmptyTables (dropNulls {
    control_plane_url = cfg.controlPlaneUrl;
    host_id = cfg.hostId;
    token_credential = if cfg.tokenFile != null then "token" else null;
    state_dir = "/var/lib/fleetnode";
    log_format = cfg.logFormat;
    allow_insecure_http = cfg.allowInsecureHttp;

    # Interpolation, not toString: a path literal such as ./ca.pem must be
    # copied into the store (these files are public), not name a file on the
    # machine that evaluated the configuration.
    tls = {
      ca_file = if cfg.tls.caFile != null then "${cfg.tls.caFile}" else null;
      cert_file = if cfg.tls.certFile != null then "${cfg.tls.certFile}" else null;
      key_credential = if cfg.tls.keyFile != null then "tls-key" else null;
    };

    activation = {
      inherit (cfg.activation) mode timeout;
      rollback_timeout = cfg.activation.rollbackTimeout;
    };

    health = {
      inherit (cfg.health) soak;
      sustained_failure = cfg.health.sustainedFailure;
      on_failure = cfg.health.onFailure;
    };

    reboot.allow = cfg.reboot.allow;

    heartbeat.interval = cfg.heartbeat.interval;

    admin = {
      listen = cfg.metrics.listenAddress;
      metrics = cfg.metrics.enable;
      inherit (cfg.admin) group;
    };

    # Absolute paths, so the agent does not depend on PATH to find the tools
    # it drives (the unit's PATH carries them as well, for the transient units).
    system = {
      root = "/";
      profile = "/nix/var/nix/profiles/system";
      nix_store = "${config.nix.package}/bin/nix-store";
      nix_env = "${config.nix.package}/bin/nix-env";
      systemd_run = "${config.systemd.package}/bin/systemd-run";
      systemctl = "${config.systemd.package}/bin/systemctl";
      require_signatures = cfg.signatures.require;
      trusted_public_keys = cfg.signatures.trustedPublicKeys;
    };

    probes = lib.mapAttrs (_: probes.render) cfg.probes;
  });

  renderedConfig = format.generate "fleetnode-agent.toml" (lib.recursiveUpdate rendered cfg.settings);

  # The agent refuses unknown keys and bad values, so a typo in `settings` would leave the host
  # with an agent that cannot start. Check the rendered file with the agent itself at build
  # time instead: the error (naming the key) then fails the rebuild. Skipped when the build
  # machine cannot run the host's binary (cross builds) or when turned off.
  canRunAgent = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
  configFile =
    if cfg.checkConfig && canRunAgent then
      pkgs.runCommand "fleetnode-agent.toml" { } ''
        ${lib.getExe' cfg.package "fleetnode-agent"} check-config ${renderedConfig}
        cp ${renderedConfig} $out
      ''
    else
      renderedConfig;

in
{
  options.services.fleetnode-agent = {
    enable = lib.mkEnableOption "the fleetnode agent, which converges this host to the generation its control plane assigns";

    package = lib.mkPackageOption pkgs "fleetnode" { };

    controlPlaneUrl = lib.mkOption {
      type = types.either types.str (types.nonEmptyListOf types.str);
      description = ''
        Base URL of the control plane, or a list of them (replicas, or load
        balancers in front of them): the agent uses one at a time and moves to
        the next when it does not answer. Each must use https:// unless
        `allowInsecureHttp` is set.
      '';
      example = [
        "https://cp-1.example.org:8443"
        "https://cp-2.example.org:8443"
      ];
    };

    hostId = lib.mkOption {
      # Checked by an assertion rather than by the type, so that a host name
      # the agent refuses gets a message saying how to set hostId instead.
      type = types.str // {
        description = "host id: ${rules.labelRule}";
      };
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = ''
        Identity of this host at the control plane (as registered with
        `fleetnode-cp add-host`): ${rules.labelRule}. Set it when
        `networking.hostName` has upper case, `_` or `.` in it.
      '';
      example = "web-01";
    };

    tokenFile = lib.mkOption {
      type = secretPath;
      default = null;
      description = ''
        Absolute path of a file holding this host's bearer token, outside the
        Nix store, as a string (a path literal such as `./token` is refused:
        Nix would copy the secret into the world-readable store). It is read
        by systemd at service start (LoadCredential=) and handed to the agent
        as the credential `token`.
      '';
      example = "/etc/fleetnode/token";
    };

    tls = {
      caFile = lib.mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "CA certificate (PEM) that signed the control plane's certificate, when it is not in the system trust store. Public; may be in the store.";
        example = "/etc/fleetnode/ca.pem";
      };
      certFile = lib.mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "Client certificate (PEM) for mutual TLS. Public; may be in the store. Requires `tls.keyFile`.";
        example = "/etc/fleetnode/host.pem";
      };
      keyFile = lib.mkOption {
        type = secretPath;
        default = null;
        description = ''
          Absolute path of the client certificate's private key (PEM), outside
          the Nix store, as a string (not a path literal). Passed with
          LoadCredential= as the credential `tls-key`.
        '';
        example = "/etc/fleetnode/host.key";
      };
    };

    probes = lib.mkOption {
      type = types.attrsOf (types.submodule probes.module);
      default = { };
      description = ''
        Health probes run after every activation and continuously afterwards.
        Names follow the agent's rule (${rules.labelRule}); `control-plane` is
        the agent's built-in probe and cannot be defined here.
      '';
      example = lib.literalExpression ''
        {
          nginx = { kind = "systemd"; unit = "nginx.service"; };
          web = { kind = "http"; url = "https://localhost/health"; expectStatus = 200; };
          ssh = { kind = "tcp"; address = "127.0.0.1:22"; mode = "observe"; };
        }
      '';
    };

    activation = {
      mode = lib.mkOption {
        type = types.enum [
          "test-then-commit"
          "switch"
          "boot"
        ];
        default = "test-then-commit";
        description = ''
          How a new generation is activated when the control plane does not
          say: `test-then-commit` activates it without touching the boot entry
          and makes it the boot default only once it proved healthy; `switch`
          activates it and sets the boot entry at once; `boot` only sets the
          boot entry (the generation goes live at the next reboot).
        '';
      };
      timeout = lib.mkOption {
        type = duration;
        default = "15m";
        description = "Longest time one activation (the transient switch unit) may run.";
      };
      rollbackTimeout = lib.mkOption {
        type = duration;
        default = "15m";
        description = "Longest time a rollback activation may run.";
      };
    };

    health = {
      soak = lib.mkOption {
        type = duration;
        default = "5m";
        description = "How long every enforce probe must keep passing before a new generation counts as healthy.";
      };
      sustainedFailure = lib.mkOption {
        type = duration;
        default = "1m";
        description = "How long an enforce probe must fail without interruption before the generation counts as failed.";
      };
      onFailure = lib.mkOption {
        type = types.enum [
          "rollback"
          "halt"
        ];
        default = "rollback";
        description = "What to do with a failed generation: roll back to the previous one, or stop and wait for an operator.";
      };
    };

    reboot.allow = lib.mkOption {
      type = types.bool;
      default = false;
      description = "Whether the agent may reboot the host itself to bring a boot-mode generation (new kernel, systemd, ...) live.";
    };

    heartbeat.interval = lib.mkOption {
      type = duration;
      default = "30s";
      description = "Time between two status reports to the control plane.";
    };

    metrics = {
      enable = lib.mkOption {
        type = types.bool;
        default = true;
        description = "Whether the agent serves Prometheus metrics at /metrics on `metrics.listenAddress` (loopback; read-only).";
      };
      listenAddress = lib.mkOption {
        type = types.str;
        default = "127.0.0.1:9731";
        description = "Loopback address of the metrics listener, which serves /metrics and nothing else (status, pause and resume are on the admin socket). A non-loopback address is refused; the firewall is not opened.";
        example = "[::1]:9731";
      };
    };

    admin.group = lib.mkOption {
      type = types.nullOr types.str;
      default = null;
      description = ''
        Group whose members may use the agent's admin socket
        (`/run/fleetnode/admin.sock`: `fleetnode-agent status`, `pause`,
        `resume`) besides root. The module creates the group; add operators to
        it with `users.users.<name>.extraGroups`. Without it, only root may.
        Holding the agent blocks every update of the host, so grant it as you
        would root.
      '';
      example = "fleetnode-admin";
    };

    signatures = {
      require = lib.mkOption {
        type = types.bool;
        default = false;
        description = "Whether the agent refuses closures that are not signed by one of `signatures.trustedPublicKeys`.";
      };
      trustedPublicKeys = lib.mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Nix signing keys (`name:base64`) whose signatures the agent accepts.";
        example = [ "fleet-1:AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExample=" ];
      };
    };

    logFormat = lib.mkOption {
      type = types.enum [
        "text"
        "json"
      ];
      default = "text";
      description = "Format of the agent's log lines on stderr (the journal).";
    };

    settings = lib.mkOption {
      type = format.type;
      default = { };
      description = ''
        Extra configuration merged over the rendered agent configuration
        (recursively; values here win). An escape hatch for keys this module
        does not know yet. Never put secrets here: the result is in the store.
      '';
      example = lib.literalExpression ''{ heartbeat.interval = "10s"; }'';
    };

    checkConfig = lib.mkOption {
      type = types.bool;
      default = true;
      description = ''
        Check the rendered configuration with `fleetnode-agent check-config` at build time, so a
        mistake (for example an unknown key in `settings`) fails the rebuild with the offending
        key named, instead of leaving the host with an agent that refuses to start.
      '';
    };

    extraArgs = lib.mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra command-line arguments for `fleetnode-agent run`.";
      example = [
        "--log-format"
        "json"
      ];
    };

    allowInsecureHttp = lib.mkOption {
      type = types.bool;
      default = false;
      description = "Allow a plain http:// control plane URL. For tests on loopback only; the token travels in clear text.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.tokenFile != null || (cfg.tls.certFile != null && cfg.tls.keyFile != null);
        message = "services.fleetnode-agent: configure authentication: set `tokenFile`, or both `tls.certFile` and `tls.keyFile`.";
      }
      {
        assertion = (cfg.tls.certFile == null) == (cfg.tls.keyFile == null);
        message = "services.fleetnode-agent: `tls.certFile` and `tls.keyFile` must be set together.";
      }
    ]
    ++ map (url: {
      assertion = lib.hasPrefix "https://" url || (cfg.allowInsecureHttp && lib.hasPrefix "http://" url);
      message = "services.fleetnode-agent: `controlPlaneUrl` must start with https:// (http:// only with `allowInsecureHttp`, for tests); got \"${url}\".";
    }) controlPlaneUrls
    ++ [
      (rules.secretPathAssertion "services.fleetnode-agent.tokenFile" "/etc/fleetnode/token" cfg.tokenFile)
      (rules.secretPathAssertion "services.fleetnode-agent.tls.keyFile" "/etc/fleetnode/host.key" cfg.tls.keyFile)
      (rules.hostIdAssertion {
        inherit (cfg) hostId;
        fromHostName = hostIdFromHostName;
      })
      {
        assertion = config.nix.enable;
        message = "services.fleetnode-agent needs the Nix daemon (`nix.enable = true`): it realises closures through it.";
      }
    ]
    ++ probes.assertions cfg.probes;

    users.groups = lib.mkIf (cfg.admin.group != null) { ${cfg.admin.group} = { }; };

    warnings = lib.optional cfg.allowInsecureHttp "services.fleetnode-agent.allowInsecureHttp is set: the agent's token is sent without TLS. Use this for tests only.";

    systemd.services.fleetnode-agent = {
      description = "fleetnode agent";

      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [
        "network-online.target"
        "nix-daemon.socket"
        "nix-daemon.service"
      ];

      # The agent hands its PATH to the transient switch unit. NixOS already
      # puts coreutils, findutils, gnugrep, gnused and systemd (systemd-run,
      # systemctl) on every service's PATH; add nix (nix-store, nix-env) and
      # util-linux (mount, flock, ...), which switch-to-configuration and the
      # boot loader installers call.
      path = [
        config.nix.package
        pkgs.util-linux
      ];

      environment = {
        # Always go through nix-daemon, even as root. Without this, root's
        # nix-store would open the store directly: it would have to write
        # /nix/store and /nix/var, which the sandbox keeps read-only, and run
        # substitutions and builds inside the agent's seccomp filter. The
        # daemon writes the store and registers the agent's GC root outside
        # the sandbox.
        NIX_REMOTE = "daemon";
      };

      # The agent launches switch-to-configuration in a transient unit
      # (fleetnode-activate-<id>) and follows it from outside. That switch must
      # not stop or restart the agent that launched it, even when the new
      # generation changes this unit or the agent binary: the switch only
      # reloads systemd and leaves this unit running. After the generation has
      # been committed, the agent notices that its own unit or binary changed,
      # exits cleanly, and Restart=always brings it back with the new
      # definition.
      restartIfChanged = false;
      stopIfChanged = false;

      unitConfig = {
        # A generation without this module must not stop the agent in the
        # middle of the switch that removes it; the agent finishes the
        # activation, reports, and is gone at the next boot.
        "X-StopOnRemoval" = false;
        # Never give up restarting: an agent that stays down strands the host.
        StartLimitIntervalSec = 0;
      };

      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = utils.escapeSystemdExecArgs (
          [
            (lib.getExe' cfg.package "fleetnode-agent")
            "run"
            "--config"
            configFile
          ]
          ++ cfg.extraArgs
        );
        WatchdogSec = "60s";
        Restart = "always";
        RestartSec = "5s";
        # Stopping the agent never stops an activation: the transient unit
        # lives in its own cgroup. Only the agent and its probes are killed.
        KillMode = "control-group";

        # With an admin group the agent runs as root with that group, so that its runtime
        # directory (0750) and the admin socket it binds there (0660) have it: the system
        # call filter refuses chown. The group grants nothing to the agent itself.
        Group = lib.mkIf (cfg.admin.group != null) cfg.admin.group;

        # toString, not interpolation: should a path literal get here (the
        # assertions refuse it), it must not be copied into the store.
        LoadCredential =
          lib.optional (cfg.tokenFile != null) "token:${toString cfg.tokenFile}"
          ++ lib.optional (cfg.tls.keyFile != null) "tls-key:${toString cfg.tls.keyFile}";
      }
      # The sandbox and the agent's directories (state, and the runtime
      # directory with the boot marker and the admin socket), shared with
      # nix/units/fleetnode-agent.service; each directive and each protection
      # the agent cannot take is explained there. Override one with
      # lib.mkForce.
      // import ./hardening.nix;
    };
  };
}
