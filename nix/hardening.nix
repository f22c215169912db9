# The agent's sandbox: the systemd directives that nix/module.nix puts into
# the agent's serviceConfig, and that nix/units/fleetnode-agent.service
# repeats for hosts without the module. Builtins only, so that
# .ci/nix-check.sh can check with a bare nix-instantiate that the plain unit
# carries exactly these directives, and score that unit with
# `systemd-analyze security` (docs/nixos.md has the figure).
#
# The agent needs little, because the switch itself runs in a transient unit
# (fleetnode-activate-<id>) that systemd starts with default settings outside
# this sandbox, and every write to the Nix store and its GC roots goes
# through nix-daemon (NIX_REMOTE=daemon). What is left for the agent:
# - its state directory /var/lib/fleetnode: the redb store, the switch logs
#   (written by systemd for the transient unit, read by the agent) and the GC
#   root `gcroots/target`, a symlink that `nix-store --realise --add-root`
#   creates there; nix-daemon, not the agent, registers it under
#   /nix/var/nix/gcroots/auto;
# - the nix-daemon socket, to realise closures and check their signatures;
# - systemd's private socket or D-Bus (systemd-run, systemctl);
# - reading /run (the current and booted system, the switch lock), the store,
#   /etc (TLS roots, resolver) and /proc/sys/kernel/random/boot_id;
# - its runtime directory /run/fleetnode: the boot marker and the admin socket
#   (status, pause, resume), which only root and the optional admin group may
#   reach;
# - the network, to reach the control plane, and its loopback metrics listener.
#
# Exec probes are children of the agent and live under all of this; see
# "What an exec probe may do" in docs/nixos.md.
{
  # The agent's own directories and who may reach into them. The state
  # directory is the agent's alone. The runtime directory holds the boot
  # marker (0600; a fresh /run means a reboot, so the directory is kept across
  # agent restarts) and the admin socket. 0750 lets the agent's group in:
  # root's own, or the admin group when the unit runs with Group=<admin.group>
  # (the module does so), whose members may then connect to the socket (0660;
  # 0600 without admin.group). UMask=0077 keeps every file the agent writes
  # its own, whatever its group.
  StateDirectory = "fleetnode";
  StateDirectoryMode = "0700";
  RuntimeDirectory = "fleetnode";
  RuntimeDirectoryMode = "0750";
  RuntimeDirectoryPreserve = true;
  UMask = "0077";

  # Root, but without a single capability. The agent is uid 0 only so that
  # systemd and nix-daemon trust it: both decide by the caller's uid (systemd
  # cannot see the capabilities of a peer on its sockets and then trusts uid
  # 0; nix-daemon trusts `root` in trusted-users). Everything it does needs
  # no capability: its files are root's own, sockets are world-connectable,
  # and the admin socket gets the admin group as the group of the process
  # that binds it (Group=), with no chown (which ~@privileged refuses).
  CapabilityBoundingSet = "";
  AmbientCapabilities = "";
  NoNewPrivileges = true;

  # The whole tree read-only but the state and runtime directories (both
  # writable under strict) and the private /tmp and /var/tmp; ProtectHome
  # gives empty private home directories. Nothing else is written: the
  # profile is set by nix-env in the transient unit, /nix/var by nix-daemon.
  ProtectSystem = "strict";
  # With ProtectKernelTunables= or ProtectControlGroups=, systemd 252 leaves
  # /run writable under ProtectSystem=strict (seen in a Debian 12 container);
  # the agent only reads it, so say so explicitly.
  ReadOnlyPaths = "/run";
  # `tmpfs`, not `yes`: with `yes` the home directories are inaccessible, and
  # root without CAP_DAC_OVERRIDE gets "Permission denied" on
  # /root/.nix-defexpr/channels, which Nix's client treats as fatal at start.
  # An empty home is simply one without channels or user configuration.
  ProtectHome = "tmpfs";
  PrivateTmp = true;
  PrivateDevices = true;
  PrivateMounts = true;
  ProtectClock = true;
  # The agent does not use the host name (its identity is `hostId`); exec
  # probes see the host name the agent started with.
  ProtectHostname = true;
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  RestrictNamespaces = true;
  # AF_UNIX: systemd, D-Bus, the nix-daemon socket, sd_notify, the journal and
  # the admin socket. AF_INET/AF_INET6: the control plane and the metrics
  # listener. AF_NETLINK:
  # glibc's resolver asks the kernel for the host's addresses.
  RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6 AF_NETLINK";
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  LockPersonality = true;
  # Exec probes inherit this: a probe written in a language with a JIT
  # (Node.js, Java, LuaJIT) cannot run here; see docs/nixos.md.
  MemoryDenyWriteExecute = true;
  SystemCallArchitectures = "native";
  # Denied calls fail with EPERM instead of killing the process, so a tool
  # that probes for an optional call keeps working.
  SystemCallFilter = [
    "@system-service"
    "~@privileged"
  ];
  SystemCallErrorNumber = "EPERM";

  # Not taken, and why:
  # - User=/DynamicUser=: systemd and nix-daemon trust the agent because it
  #   is uid 0 (see above); another user would need polkit rules and a
  #   trusted-users entry, which grant the same power less visibly.
  # - SystemCallFilter=~@resources: Nix's client raises its own stack limit
  #   with setrlimit at start and prints an error on every call when it
  #   cannot.
  # - ProtectProc=invisible: exec probes look at other services' processes
  #   (pgrep, /proc/<pid>) which run as other users.
  # - ProcSubset=pid: the agent reads /proc/sys/kernel/random/boot_id to tell
  #   a reboot from a restart.
  # - PrivateUsers=: without capabilities there is nothing left for a user
  #   namespace to confine; it would only show other users' files as owned by
  #   `nobody` to exec probes.
  # - PrivateNetwork=, IPAddressDeny=: the agent talks to the control plane,
  #   whose addresses are known only when its name is resolved.
  # - RootDirectory=/RootImage=: the agent works on the host's own system.
}
