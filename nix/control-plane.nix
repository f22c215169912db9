# NixOS module for the reference fleetnode control plane:
# services.fleetnode-control-plane.
#
# The server runs as a dynamic, unprivileged user in a tight sandbox. Its TLS
# certificate, key, optional client CA and admin token are handed over with
# LoadCredential=, so they may be root-only files anywhere on the host (the
# dynamic user could not read them otherwise) and the secret ones never enter
# the store.
#
# The store is a redb file in stateDir by default. With `database.url` the
# server keeps everything in PostgreSQL instead (any number of replicas may share
# one database); with `database.createLocally` the module runs PostgreSQL on this
# host and the server reaches it over the Unix socket with peer authentication.
#
# nix/units/fleetnode-cp.service is the same unit for hosts without this
# module; keep the two in step.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  cfg = config.services.fleetnode-control-plane;
  types = lib.types;

  # "0.0.0.0:8443", "127.0.0.1:8443", "[::]:8443": an IP literal and a port,
  # because the server binds a socket address and does not resolve names.
  listenAddressType = types.strMatching "([0-9]{1,3}(\\.[0-9]{1,3}){3}|\\[[0-9A-Fa-f:.]+]):[0-9]{1,5}" // {
    description = "IP address and port, such as \"0.0.0.0:8443\" or \"[::]:8443\"";
  };

  port = lib.toInt (lib.last (lib.splitString ":" cfg.listenAddress));

  # Binding below 1024 needs CAP_NET_BIND_SERVICE, and only then is the
  # capability granted (and user namespacing, which would void it, left off).
  privilegedPort = port < 1024;

  credential = name: "\${CREDENTIALS_DIRECTORY}/${name}";

  rules = import ./rules.nix;

  # A path literal passes the type only so that the assertion
  # (rules.secretPathAssertion) can say why it is refused; the module never
  # interpolates it, which would copy the secret into the store.
  secretPath = types.either types.str types.path // {
    description = "absolute path as a string, outside the store";
  };

  stateDirectory = lib.removePrefix "/var/lib/" cfg.stateDir;

  db = cfg.database;

  # What `--store` names: the local database over its socket, the given URL, or
  # the redb file.
  store =
    if db.createLocally then
      "postgresql:///${db.user}?host=/run/postgresql&user=${db.user}"
    else if db.url != null then
      db.url
    else
      "${cfg.stateDir}/fleetnode-cp.redb";

  # A password inside the URL would land in the world-readable store and in the
  # process's command line.
  urlHasPassword = db.url != null && builtins.match "[a-z]+://[^/@]*:[^/@]*@.*" db.url != null;

  # Options the service always passes. A credential reference must reach
  # systemd unescaped, so that it expands ${CREDENTIALS_DIRECTORY}; every other
  # argument is escaped.
  execStart = lib.concatStringsSep " " (
    [
      (utils.escapeSystemdExecArgs [
        (lib.getExe' cfg.package "fleetnode-cp")
        "serve"
        "--listen"
        cfg.listenAddress
        "--store"
        store
      ])
      "--tls-cert"
      (credential "tls-cert")
      "--tls-key"
      (credential "tls-key")
      "--admin-token-file"
      (credential "admin-token")
    ]
    ++ lib.optionals (cfg.tls.clientCaFile != null) [
      "--client-ca"
      (credential "client-ca")
    ]
    ++ lib.optionals (db.passwordFile != null) [
      "--store-password-file"
      (credential "store-password")
    ]
    ++ lib.optional (cfg.trustedProxies != [ ]) (
      utils.escapeSystemdExecArgs (lib.concatMap (net: [ "--trusted-proxy" net ]) cfg.trustedProxies)
    )
    ++ lib.optionals (cfg.maintenanceWindows != { }) [
      (utils.escapeSystemdExecArgs [
        "--maintenance-windows"
        windowsFile
      ])
    ]
    ++ lib.optional (cfg.extraArgs != [ ]) (utils.escapeSystemdExecArgs cfg.extraArgs)
  );

  # The maintenance windows per tag, as the server reads them (docs/control-plane.md,
  # "Maintenance windows"). Not a secret: it may live in the store.
  windowsFile = (pkgs.formats.toml { }).generate "fleetnode-cp-maintenance-windows.toml" {
    windows = cfg.maintenanceWindows;
  };
in
{
  options.services.fleetnode-control-plane = {
    enable = lib.mkEnableOption "the fleetnode reference control plane";

    package = lib.mkPackageOption pkgs "fleetnode" { };

    listenAddress = lib.mkOption {
      type = listenAddressType;
      default = "0.0.0.0:8443";
      description = "Address and port the HTTPS server listens on.";
      example = "[::]:443";
    };

    tls = {
      certFile = lib.mkOption {
        type = types.path;
        description = "Server certificate chain (PEM). Public; may be in the store.";
        example = "/etc/fleetnode-cp/cert.pem";
      };
      keyFile = lib.mkOption {
        type = secretPath;
        description = "Absolute path of the server's private key (PEM), outside the Nix store, as a string (a path literal is refused: Nix would copy the key into the world-readable store). Passed with LoadCredential=.";
        example = "/etc/fleetnode-cp/key.pem";
      };
      clientCaFile = lib.mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "CA (PEM) that signs agents' client certificates. When set, agents may authenticate with mutual TLS.";
        example = "/etc/fleetnode-cp/client-ca.pem";
      };
    };

    adminTokenFile = lib.mkOption {
      type = secretPath;
      description = "Absolute path of a file holding the operator's admin token, outside the Nix store, as a string (not a path literal). Passed with LoadCredential=.";
      example = "/etc/fleetnode-cp/admin-token";
    };

    stateDir = lib.mkOption {
      type = types.strMatching "/var/lib/[A-Za-z0-9._-]+";
      default = "/var/lib/fleetnode-cp";
      description = ''
        Directory of the control plane's database (`fleetnode-cp.redb`).
        Must be directly under /var/lib: systemd creates it as the
        StateDirectory= of the dynamic service user.
      '';
    };

    database = {
      url = lib.mkOption {
        type = types.nullOr (types.strMatching "postgres(ql)?://.*");
        default = null;
        description = ''
          PostgreSQL URL of the store (`postgres://` or `postgresql://`, as
          libpq reads it; `sslmode=verify-full` and `sslrootcert=` for TLS to
          the database). Every replica of the control plane names the same
          database. Leave the password out: give it with `passwordFile`. When
          null (and `createLocally` is off) the store is the redb file in
          `stateDir`.
        '';
        example = "postgresql://fleetnode@db.example.org/fleetnode?sslmode=verify-full";
      };
      passwordFile = lib.mkOption {
        type = types.nullOr secretPath;
        default = null;
        description = "Absolute path of a file holding the database password, outside the Nix store, as a string (not a path literal). Passed with LoadCredential=.";
        example = "/etc/fleetnode-cp/db-password";
      };
      createLocally = lib.mkOption {
        type = types.bool;
        default = false;
        description = ''
          Run PostgreSQL on this host (`services.postgresql`) with a database
          and a user for the control plane, reached over the Unix socket with
          peer authentication (no password). For one control plane; replicas
          on several machines share a database given with `url`.
        '';
      };
      user = lib.mkOption {
        type = types.strMatching "[a-z_][a-z0-9_-]*";
        default = "fleetnode-cp";
        description = "The service's user name; with `createLocally` also the name of the local database and of its owner, so that peer authentication over the socket matches.";
      };
    };

    openFirewall = lib.mkOption {
      type = types.bool;
      default = false;
      description = "Whether to open the TCP port of `listenAddress` in the firewall.";
    };

    trustedProxies = lib.mkOption {
      # The server parses each value strictly at start (and refuses host bits
      # past the prefix); the type keeps out what is plainly not an address.
      type = types.listOf (
        types.strMatching "[0-9A-Fa-f:.]+(/[0-9]{1,3})?" // {
          description = "IP address or network in CIDR notation";
        }
      );
      default = [ ];
      example = [ "10.0.0.10" "10.0.1.0/24" ];
      description = ''
        Load balancers whose connections begin with a PROXY protocol v2 header
        naming the client (HAProxy's `send-proxy-v2`), passed as
        `--trusted-proxy`: the header is required from them and never read from
        anyone else. See "Running behind a load balancer" in
        docs/control-plane.md.
      '';
    };

    maintenanceWindows = lib.mkOption {
      # The server parses every window strictly at start and refuses to run on
      # one it cannot read; the type keeps out what is plainly not a window.
      type = types.attrsOf (
        types.listOf (
          types.strMatching "[A-Za-z,-]+ [0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2} [A-Za-z0-9_+/-]+" // {
            description = "maintenance window `DAYS HH:MM-HH:MM ZONE`";
          }
        )
      );
      default = { };
      example = {
        web = [ "Sat 02:00-04:00 Europe/Berlin" ];
        db = [ "Sun 03:00-05:00 UTC" "Wed 22:00-23:00 UTC" ];
      };
      description = ''
        Maintenance windows per host tag: a rollout switches a host only inside
        one of its tags' windows, and a host whose tags have none at any time.
        Each window is `DAYS HH:MM-HH:MM ZONE` with an IANA time zone (see
        "Maintenance windows" in docs/control-plane.md). Give every replica the
        same windows.
      '';
    };

    extraArgs = lib.mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra command-line arguments for `fleetnode-cp serve`.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      (rules.secretPathAssertion "services.fleetnode-control-plane.tls.keyFile" "/etc/fleetnode-cp/key.pem" cfg.tls.keyFile)
      (rules.secretPathAssertion "services.fleetnode-control-plane.adminTokenFile" "/etc/fleetnode-cp/admin-token" cfg.adminTokenFile)
      {
        assertion = !(db.createLocally && db.url != null);
        message = "services.fleetnode-control-plane.database: set either `url` (a database elsewhere) or `createLocally` (PostgreSQL on this host), not both.";
      }
      {
        assertion = !urlHasPassword;
        message = "services.fleetnode-control-plane.database.url must not contain a password (it would be copied into the world-readable Nix store and the command line); put it in a file and set database.passwordFile.";
      }
      {
        assertion = db.passwordFile == null || db.url != null;
        message = "services.fleetnode-control-plane.database.passwordFile needs database.url (a local database with createLocally uses peer authentication, without a password).";
      }
      {
        assertion = port >= 1 && port <= 65535;
        message = "services.fleetnode-control-plane: the port in `listenAddress` (\"${cfg.listenAddress}\") must be between 1 and 65535.";
      }
    ]
    ++ lib.optional (db.passwordFile != null) (
      rules.secretPathAssertion "services.fleetnode-control-plane.database.passwordFile" "/etc/fleetnode-cp/db-password" db.passwordFile
    );

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ port ];

    services.postgresql = lib.mkIf db.createLocally {
      enable = true;
      ensureDatabases = [ db.user ];
      ensureUsers = [
        {
          name = db.user;
          ensureDBOwnership = true;
        }
      ];
    };

    systemd.services.fleetnode-control-plane = {
      description = "fleetnode control plane";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ] ++ lib.optional db.createLocally "postgresql.service";
      requires = lib.optional db.createLocally "postgresql.service";

      # Time zones of maintenance windows come from this database.
      environment.TZDIR = "${pkgs.tzdata}/share/zoneinfo";

      serviceConfig = {
        # The server does not send sd_notify readiness; it is started once
        # the process runs.
        Type = "simple";
        ExecStart = execStart;
        Restart = "on-failure";
        RestartSec = "5s";

        # Interpolation copies a path literal of a public certificate into
        # the store, so the credential source exists on the host; secrets use
        # toString, which never copies (the assertions refuse path literals).
        LoadCredential = [
          "tls-cert:${cfg.tls.certFile}"
          "tls-key:${toString cfg.tls.keyFile}"
          "admin-token:${toString cfg.adminTokenFile}"
        ]
        ++ lib.optional (cfg.tls.clientCaFile != null) "client-ca:${cfg.tls.clientCaFile}"
        ++ lib.optional (db.passwordFile != null) "store-password:${toString db.passwordFile}";

        DynamicUser = true;
        # Named, so that peer authentication to a local database matches the user.
        User = db.user;
        StateDirectory = stateDirectory;
        StateDirectoryMode = "0700";
        UMask = "0077";

        # An empty bounding set: no capabilities at all.
        CapabilityBoundingSet = if privilegedPort then "CAP_NET_BIND_SERVICE" else "";
        AmbientCapabilities = lib.mkIf privilegedPort "CAP_NET_BIND_SERVICE";
        PrivateUsers = !privilegedPort;

        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateMounts = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "~@resources"
        ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
