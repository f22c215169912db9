{
  description = "fleetnode: converge NixOS hosts to the generation a control plane assigns";

  # nixos-unstable: the workspace needs a recent Rust (edition 2024,
  # rust-version in Cargo.toml), which a stable release may not carry yet.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The modules default `package` to this flake's build for the host's
      # platform, so a host that imports a module needs no overlay. The `key`
      # lets a configuration import both nixosModules.default and
      # nixosModules.agent without declaring the options twice.
      withPackage = name: service: module: {
        key = "fleetnode-flake#nixosModules.${name}";
        _file = "${toString ./flake.nix}#nixosModules.${name}";
        imports = [
          module
          (
            { lib, pkgs, ... }:
            {
              services.${service}.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
            }
          )
        ];
      };

      agentModule = withPackage "agent" "fleetnode-agent" ./nix/module.nix;
      controlPlaneModule = withPackage "control-plane" "fleetnode-control-plane" ./nix/control-plane.nix;
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
        fleetnode = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      });

      overlays.default = final: _prev: {
        fleetnode = final.callPackage ./nix/package.nix { };
      };

      nixosModules = {
        default = agentModule;
        agent = agentModule;
        control-plane = controlPlaneModule;
      };

      apps = forAllSystems (
        pkgs:
        let
          demo = {
            type = "app";
            program = lib.getExe' self.packages.${pkgs.stdenv.hostPlatform.system}.default "fleetnode-demo";
            meta.description = "Run the fleetnode demo: a control plane and simulated agents on this machine";
          };
        in
        {
          default = demo;
          inherit demo;
        }
      );

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        vm = import ./nix/tests/vm.nix {
          inherit pkgs;
          agentModule = self.nixosModules.agent;
          controlPlaneModule = self.nixosModules.control-plane;
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
