# End-to-end NixOS VM test: one control plane and two agents.
#
# Each agent boots generation "base" of its own configuration; the same
# configuration carries a specialisation "next" (one extra file in /etc), whose
# toplevel is therefore already valid in the VM's store. The operator points
# both hosts at "next", both converge (activation in a transient unit, soak,
# commit), then agent1 is rolled back by the operator while agent2 stays.
#
# The operator CLI (fleetnode-cp, see docs/control-plane.md) is used through
# the `operator` helper of the test script, so that a change is made in one place:
#   fleetnode-cp <subcommand> ... --url URL --ca-file FILE --admin-token-file FILE
#     talks to a running control plane's admin API with the admin token;
#   add-host ID --token-file FILE     registers a host; the control plane makes
#                                     its bearer token and the CLI writes it to
#                                     FILE (mode 0600), whence the test installs
#                                     it as the agent's token file;
#   set-target CLOSURE --host ID      sets the host's desired toplevel store path;
#   host ID --json                    prints the host's detail (HostDetail of
#                                     docs/protocol.md): `.row.current` is the
#                                     toplevel the agent reports active and
#                                     `.row.phase` its mirrored phase
#                                     ("converged" once the generation passed
#                                     its soak and was committed);
#   rollback ID                       sends the host back to the generation it
#                                     ran before the latest deployment.
{
  pkgs,
  agentModule,
  controlPlaneModule,
}:

let
  # A throw-away CA and a server certificate for the host name "cp", made in
  # the build sandbox. Test keys in the store are fine; real ones never are.
  certs = pkgs.runCommand "fleetnode-test-certs" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    mkdir -p "$out"
    cat > ca.cnf <<'EOF'
    [req]
    distinguished_name = dn
    prompt = no
    [dn]
    CN = fleetnode test CA
    [ext]
    basicConstraints = critical,CA:TRUE
    keyUsage = critical,keyCertSign,cRLSign
    subjectKeyIdentifier = hash
    EOF
    cat > server.cnf <<'EOF'
    [req]
    distinguished_name = dn
    prompt = no
    [dn]
    CN = cp
    [ext]
    basicConstraints = critical,CA:FALSE
    keyUsage = critical,digitalSignature
    extendedKeyUsage = serverAuth
    subjectAltName = DNS:cp
    subjectKeyIdentifier = hash
    authorityKeyIdentifier = keyid
    EOF
    openssl req -x509 -config ca.cnf -extensions ext -newkey ec \
      -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -keyout ca.key -out "$out/ca.pem"
    openssl req -new -config server.cnf -newkey ec \
      -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$out/cp.key" -out cp.csr
    openssl x509 -req -in cp.csr -CA "$out/ca.pem" -CAkey ca.key \
      -CAserial ca.srl -CAcreateserial -days 3650 \
      -extfile server.cnf -extensions ext \
      -out "$out/cp.pem"
    openssl verify -CAfile "$out/ca.pem" "$out/cp.pem"
  '';

  adminToken = pkgs.writeText "admin-token" "test-admin-token-0123456789abcdef";
  hostToken = name: pkgs.writeText "${name}-token" "test-host-token-${name}-0123456789abcdef";

  agentNode =
    name:
    { lib, pkgs, ... }:
    {
      imports = [ agentModule ];

      # In a test the token may come from the store; on a real host it is a
      # root-only file written out of band.
      environment.etc."fleetnode/token" = {
        source = hostToken name;
        mode = "0400";
      };
      environment.etc."fleetnode-generation".text = lib.mkDefault "base";
      specialisation.next.configuration = {
        environment.etc."fleetnode-generation".text = "next";
      };

      services.fleetnode-agent = {
        enable = true;
        controlPlaneUrl = "https://cp:8443";
        tokenFile = "/etc/fleetnode/token";
        tls.caFile = "${certs}/ca.pem";
        heartbeat.interval = "2s";
        health = {
          soak = "10s";
          sustainedFailure = "5s";
        };
        activation.timeout = "5m";
        probes = {
          generation-file = {
            kind = "exec";
            command = [
              "${pkgs.coreutils}/bin/test"
              "-s"
              "/etc/fleetnode-generation"
            ];
          };
          nix-daemon = {
            kind = "systemd";
            unit = "nix-daemon.socket";
          };
        };
      };
    };
in
pkgs.testers.runNixOSTest {
  name = "fleetnode";

  nodes = {
    cp =
      { config, pkgs, ... }:
      {
        imports = [ controlPlaneModule ];

        environment.etc = {
          "fleetnode-cp/key.pem" = {
            source = "${certs}/cp.key";
            mode = "0400";
          };
          "fleetnode-cp/admin-token" = {
            source = adminToken;
            mode = "0400";
          };
          "fleetnode-cp/ca.pem".source = "${certs}/ca.pem";
          "fleetnode-cp/tokens/agent1".source = hostToken "agent1";
          "fleetnode-cp/tokens/agent2".source = hostToken "agent2";
        };
        environment.systemPackages = [
          config.services.fleetnode-control-plane.package
          pkgs.jq
        ];

        services.fleetnode-control-plane = {
          enable = true;
          listenAddress = "0.0.0.0:8443";
          tls.certFile = "${certs}/cp.pem";
          tls.keyFile = "/etc/fleetnode-cp/key.pem";
          adminTokenFile = "/etc/fleetnode-cp/admin-token";
          openFirewall = true;
        };
      };
    agent1 = agentNode "agent1";
    agent2 = agentNode "agent2";
  };

  testScript = ''
    import shlex

    CONNECTION = "--url https://cp:8443 --ca-file /etc/fleetnode-cp/ca.pem --admin-token-file /etc/fleetnode-cp/admin-token"


    def operator(*args: str) -> str:
        command = "fleetnode-cp " + " ".join(shlex.quote(a) for a in args) + " " + CONNECTION
        return cp.succeed(command)


    def host_status_is(host: str, current: str, state: str | None = None) -> str:
        """A shell test, run on cp: the host reports `current` (and `state`)."""
        query = f'.row.current == "{current}"'
        if state is not None:
            query += f' and .row.phase == "{state}"'
        return f"fleetnode-cp host {host} --json {CONNECTION} | jq -e {shlex.quote(query)}"


    def on_generation(machine, closure: str, label: str) -> None:
        machine.succeed(f'test "$(readlink -f /run/current-system)" = {closure}')
        machine.succeed(f"grep -qx {label} /etc/fleetnode-generation")
        # Committed: the boot default is the same generation.
        machine.succeed(f'test "$(readlink -f /nix/var/nix/profiles/system)" = {closure}')


    agents = [agent1, agent2]

    cp.start()
    cp.wait_for_unit("fleetnode-control-plane.service")
    cp.wait_for_open_port(8443)
    tokens: dict[str, str] = {}
    for agent in agents:
        token_file = f"/tmp/{agent.name}.token"
        operator("add-host", agent.name, "--token-file", token_file)
        tokens[agent.name] = cp.succeed(f"cat {token_file}").strip()

    base: dict[str, str] = {}
    target: dict[str, str] = {}
    invocation: dict[str, str] = {}
    for agent in agents:
        agent.start()
    for agent in agents:
        agent.wait_for_unit("fleetnode-agent.service")
        # The control plane made this host's token: install it and restart the agent so that
        # it loads the credential.
        agent.succeed(f"printf '%s\\n' {shlex.quote(tokens[agent.name])} > /etc/fleetnode/token")
        agent.succeed("systemctl restart fleetnode-agent.service")
        agent.wait_for_unit("fleetnode-agent.service")
        base[agent.name] = agent.succeed("readlink -f /run/current-system").strip()
        target[agent.name] = agent.succeed("readlink -f /run/current-system/specialisation/next").strip()
        invocation[agent.name] = agent.succeed("systemctl show -P InvocationID fleetnode-agent.service").strip()
        agent.succeed("grep -qx base /etc/fleetnode-generation")

    with subtest("both hosts converge to the next generation"):
        for agent in agents:
            operator("set-target", target[agent.name], "--host", agent.name)
        for agent in agents:
            cp.wait_until_succeeds(host_status_is(agent.name, target[agent.name], "converged"), timeout=600)
            on_generation(agent, target[agent.name], "next")

    with subtest("the switch did not restart the agent that launched it"):
        for agent in agents:
            now = agent.succeed("systemctl show -P InvocationID fleetnode-agent.service").strip()
            assert now == invocation[agent.name], f"{agent.name}: agent was restarted during the switch"

    with subtest("an operator rollback returns agent1 to base and leaves agent2 alone"):
        operator("rollback", "agent1")
        cp.wait_until_succeeds(host_status_is("agent1", base["agent1"]), timeout=600)
        agent1.wait_until_succeeds("grep -qx base /etc/fleetnode-generation", timeout=600)
        agent1.wait_until_succeeds(
            f'test "$(readlink -f /nix/var/nix/profiles/system)" = {base["agent1"]}', timeout=600
        )
        on_generation(agent1, base["agent1"], "base")
        on_generation(agent2, target["agent2"], "next")
  '';
}
