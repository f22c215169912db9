# NixOS module for the fleetnode agent: services.fleetnode-agent.
#
# The module renders the agent's TOML configuration into the store and runs
# `fleetnode-agent run --config <file>` as a root service. Secrets (the bearer
# token and the client TLS key) never enter the store: systemd copies them into
# the service's credential directory with LoadCredential=, and the rendered
# configuration names the credential, not the file.
#
# nix/units/fleetnode-agent.service is the same unit for hosts without this
# module; keep the two in step.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  cfg = config.services.fleetnode-agent;
  format = pkgs.formats.toml { };
  types = lib.types;

  duration = types.strMatching "[0-9]+(ms|s|m|h)" // {
    description = "duration such as \"500ms\", \"30s\", \"5m\" or \"1h\"";
  };

  # An absolute path that is read at service start, never copied into the store.
  # A plain string type (not `types.path`) makes Nix reject path literals such as
  # ./token, which would silently put the secret into the world-readable store.
  secretPath = types.nullOr types.str;

  isSecretPathSafe =
    path:
    path == null || (lib.hasPrefix "/" path && !(lib.hasPrefix "${builtins.storeDir}/" path));

  probes = import ./probes.nix { inherit lib duration; };

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
      type = types.str;
      description = "Base URL of the control plane. Must use https:// unless `allowInsecureHttp` is set.";
      example = "https://cp.example.org:8443";
    };

    hostId = lib.mkOption {
      type = types.strMatching "[A-Za-z0-9][A-Za-z0-9._-]*";
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "Identity of this host at the control plane (as registered with `fleetnode-cp add-host`).";
      example = "web-01";
    };

    tokenFile = lib.mkOption {
      type = secretPath;
      default = null;
      description = ''
        Absolute path of a file holding this host's bearer token, outside the
        Nix store. It is read by systemd at service start (LoadCredential=)
        and handed to the agent as the credential `token`.
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
          the Nix store. Passed with LoadCredential= as the credential
          `tls-key`.
        '';
        example = "/etc/fleetnode/host.key";
      };
    };

    probes = lib.mkOption {
      type = types.attrsOf (types.submodule probes.module);
      default = { };
      description = "Health probes run after every activation and continuously afterwards.";
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
        description = "Whether the local admin listener serves Prometheus metrics at /metrics.";
      };
      listenAddress = lib.mkOption {
        type = types.str;
        default = "127.0.0.1:9731";
        description = "Address of the local admin listener (/metrics, /status, pause and resume). Keep it on loopback; the firewall is not opened.";
        example = "[::1]:9731";
      };
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
      {
        assertion = lib.hasPrefix "https://" cfg.controlPlaneUrl || (cfg.allowInsecureHttp && lib.hasPrefix "http://" cfg.controlPlaneUrl);
        message = "services.fleetnode-agent: `controlPlaneUrl` must start with https:// (http:// only with `allowInsecureHttp`, for tests); got \"${cfg.controlPlaneUrl}\".";
      }
      {
        assertion = isSecretPathSafe cfg.tokenFile && isSecretPathSafe cfg.tls.keyFile;
        message = "services.fleetnode-agent: `tokenFile` and `tls.keyFile` must be absolute paths outside ${builtins.storeDir}: secrets in the store are readable by every user.";
      }
      {
        assertion = config.nix.enable;
        message = "services.fleetnode-agent needs the Nix daemon (`nix.enable = true`): it realises closures through it.";
      }
    ]
    ++ probes.assertions cfg.probes;

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

      # nix-store and nix-env for realising and committing generations,
      # systemd-run and systemctl for the transient activation units and
      # systemd probes, and the basic tools switch-to-configuration and the
      # boot loader installer expect when the agent hands its PATH to the
      # transient unit.
      path = [
        config.nix.package
        config.systemd.package
        pkgs.coreutils
        pkgs.findutils
        pkgs.gnugrep
        pkgs.gnused
        pkgs.util-linux
      ];

      environment = {
        # Always go through nix-daemon, even as root. Without this, root's
        # nix-store would open the store directly and run substitutions and
        # builds as children of the agent, inside the agent's seccomp filter
        # (native architecture only, no W+X memory, restricted socket
        # families) and mount namespace, where JIT compilers and 32-bit
        # builders fail. The daemon runs them outside this sandbox.
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

        StateDirectory = "fleetnode";
        StateDirectoryMode = "0700";
        UMask = "0077";

        LoadCredential =
          lib.optional (cfg.tokenFile != null) "token:${cfg.tokenFile}"
          ++ lib.optional (cfg.tls.keyFile != null) "tls-key:${cfg.tls.keyFile}";

        # Hardening. The agent is root on purpose: it sets the system profile
        # and launches switches. Every protection below is inherited by its
        # children (nix-store, nix-env, systemd-run, systemctl and exec probes),
        # but not by the transient activation unit, which systemd starts with
        # default settings outside this sandbox.
        PrivateTmp = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        # AF_UNIX: D-Bus (systemd-run, systemctl), the nix-daemon socket,
        # sd_notify and the journal. AF_INET/AF_INET6: the control plane and
        # the admin listener. AF_NETLINK: glibc's resolver asks the kernel for
        # the host's addresses.
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
          "AF_NETLINK"
        ];
        LockPersonality = true;
        RestrictRealtime = true;
        # Nothing in the agent's tree creates set-user-ID files: the store is
        # written by nix-daemon (NIX_REMOTE above), /run/wrappers by the
        # activation in its own unit.
        RestrictSUIDSGID = true;
        # Already root, so the agent never needs a set-user-ID binary to gain
        # privileges; systemd-run reaches systemd over D-Bus, not through
        # a setuid helper. Exec probes that call a setuid wrapper still work
        # because they already run as root.
        NoNewPrivileges = true;
        SystemCallArchitectures = "native";
        # Exec probes inherit this: a probe written in a language with a JIT
        # (Node.js, Java, LuaJIT) cannot run here. Wrap such a check in
        # `systemd-run --wait --pipe --quiet` or override this setting.
        MemoryDenyWriteExecute = true;

        # Protections this agent cannot use:
        # - ProtectSystem=strict: nix-env --set writes the generation links in
        #   /nix/var/nix/profiles.
        # - ProtectSystem=full/true: /etc would be a read-only bind mount made
        #   when the agent started. With an /etc overlay (system.etc.overlay)
        #   every switch mounts a new /etc, and whether that mount reaches this
        #   namespace depends on mount propagation; an agent reading a stale
        #   resolv.conf or CA bundle after a switch is not a risk worth taking
        #   for a process that is root anyway.
        # - ProtectHome: root's nix client reads ~/.config/nix and may write
        #   ~/.cache/nix and ~/.local/state/nix; exec probes may need home
        #   directories.
        # - PrivateDevices, ProtectClock, DeviceAllow: they restrict device
        #   access for exec probes too (disk, RAID and clock health checks).
        # - ProtectHostname: the agent would keep the host name it started
        #   with, even after a switch changes it.
        # - PrivateNetwork, IPAddressDeny: the agent talks to the control plane.
        # - PrivateUsers, DynamicUser, CapabilityBoundingSet, SystemCallFilter,
        #   RestrictNamespaces: the agent must stay a full root process to set
        #   the system profile, and exec probes inherit every restriction.
        # - ProtectProc=invisible, ProcSubset=pid: systemd probes and exec
        #   probes inspect other processes.
      };
    };
  };
}
