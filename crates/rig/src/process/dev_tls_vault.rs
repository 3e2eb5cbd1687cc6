//! A Vault component for tests of the https path: `bao server -dev -dev-tls`
//! on loopback under a `Supervisor`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::base::wait::{Probe, wait_until};
use crate::vault::client::{Secret, VaultClient};

/// `bao server -dev -dev-tls` on loopback, for tests of the https path: a
/// generated CA and serving certificate (for 127.0.0.1 and localhost) in
/// `<run>/bao-tls/`.
pub struct DevTlsVault {
    /// `https://127.0.0.1:<port>`.
    pub addr: String,
    /// `vault-ca.pem`, the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    /// A root client trusting `ca_file`.
    pub root: VaultClient,
}

impl DevTlsVault {
    /// Starts it as component `name` under `supervisor`. The root token is
    /// generated here and reaches bao through its environment, never argv,
    /// as on the local profile; dev mode prints it on stdout, so stdout goes
    /// to a 0600 file under `secrets/`.
    pub async fn start(
        supervisor: &mut crate::process::supervisor::Supervisor,
        run: &crate::base::run::RunDir,
        bao: &Path,
        name: &str,
    ) -> Result<Self> {
        use crate::process::supervisor::{Component, Readiness};
        let port = crate::base::ports::free_port_pair()?;
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let cert_dir = run.path().join(format!("{name}-tls"));
        // bao writes into the directory but does not create it.
        std::fs::create_dir_all(&cert_dir)
            .with_context(|| format!("creating {}", cert_dir.display()))?;
        let root_token = apikey::ApiKey::generate().expose().to_owned();
        crate::base::redact::register_in_run(run.path(), &root_token)?;
        supervisor
            .start(
                Component::new(name, bao)
                    .args(["server", "-dev", "-dev-tls", "-dev-no-store-token"])
                    .arg(format!("-dev-listen-address={listen}"))
                    .arg(format!("-dev-tls-cert-dir={}", cert_dir.display()))
                    .env("BAO_DEV_ROOT_TOKEN_ID", &root_token)
                    .stdout_file(run.secrets_dir().join(format!("{name}-stdout")))
                    .current_dir(run.path()),
                // The supervisor's probe trusts no private CA; the health
                // check below does.
                Readiness::Tcp(listen),
            )
            .await?;
        let addr = format!("https://{listen}");
        let ca_file = cert_dir.join("vault-ca.pem");
        let root = VaultClient::new(&addr)?
            .with_ca_cert_file(&ca_file)?
            .with_token(Secret::new(root_token));
        wait_until(
            &format!("{name} (dev-tls) sys/health"),
            Duration::from_secs(30),
            async || {
                Ok(match root.health().await {
                    Ok(_) => Probe::Ready(()),
                    Err(err) => Probe::seen(err),
                })
            },
        )
        .await?;
        Ok(Self {
            addr,
            ca_file,
            root,
        })
    }
}
