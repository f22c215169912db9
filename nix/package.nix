# The fleetnode workspace as one Nix package: the agent, the reference control
# plane and the demo driver.
#
# Called with `callPackage ./nix/package.nix { }` (the flake and its overlay do
# exactly that).
{
  lib,
  rustPlatform,
}:

let
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;

  # Everything cargo may read (sources, tests, golden files, proptest
  # regressions, docs pulled in with include_str!), minus the files that only
  # describe how to package or check the project. Editing the NixOS module or the
  # CI scripts therefore does not rebuild the binaries.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.difference ../. (
      lib.fileset.unions [
        ./.
        ../flake.nix
        (lib.fileset.maybeMissing ../flake.lock)
        (lib.fileset.maybeMissing ../.ci)
        (lib.fileset.maybeMissing ../.git)
        (lib.fileset.maybeMissing ../target)
        (lib.fileset.maybeMissing ../result)
      ]
    );
  };
in
rustPlatform.buildRustPackage {
  pname = "fleetnode";
  inherit (workspace) version;
  inherit src;

  cargoLock.lockFile = ../Cargo.lock;

  # The crates speak TLS through rustls with its own crypto provider: no OpenSSL,
  # no pkg-config, no native build inputs at all.

  # The test suite runs in the build sandbox. The sandbox has its own network
  # namespace with a working loopback interface, so the tests that start real
  # HTTPS servers on 127.0.0.1 run as they do in CI. Nothing is skipped: a test
  # that needs the outside network is a defect in the test, not something to
  # hide here.
  doCheck = true;

  # A virtual workspace: build and test every member, then install every binary
  # target (fleetnode-agent, fleetnode-cp, fleetnode-demo).
  cargoBuildFlags = [ "--workspace" ];
  cargoTestFlags = [ "--workspace" ];

  postInstall = ''
    for bin in fleetnode-agent fleetnode-cp fleetnode-demo; do
      if [ ! -x "$out/bin/$bin" ]; then
        echo "expected binary $bin was not built by the workspace" >&2
        exit 1
      fi
    done
  '';

  meta = {
    description = "Fleet-node agent that converges NixOS hosts to the generation a control plane assigns, with health checks and rollback";
    homepage = workspace.repository;
    license = lib.licenses.asl20;
    mainProgram = "fleetnode-agent";
    platforms = lib.platforms.linux;
  };
}
