//! A TLS client for the gateway's TLS listener: rustls (ring provider)
//! trusting only the run's pki root CA, so a handshake succeeds only with a
//! certificate Vault issued, valid now, for the name asked. Each call opens
//! a fresh connection, so each one sees the certificate served at that
//! moment. Used by the harness's readiness check and by the e2e tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a connect plus handshake, or a whole request, may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a certificate says about itself (never key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Vault's spelling: lowercase hex pairs joined by `:`.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub subject: String,
    pub issuer: String,
}

/// A certificate as served: its DER and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCert {
    pub der: Vec<u8>,
    pub info: CertInfo,
}

/// Reads serial, validity and names from a DER certificate.
pub fn parse_certificate(der: &[u8]) -> Result<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| anyhow::anyhow!("not an X.509 certificate: {err}"))?;
    Ok(CertInfo {
        serial: crate::vault::pki::vault_serial(cert.tbs_certificate.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
    })
}

/// The DER of the first certificate in a PEM text (e.g. Vault's
/// `data.certificate`).
pub fn first_certificate_der(pem: &str) -> Result<Vec<u8>> {
    let cert = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .context("no PEM certificate in the text")?
        .context("an unreadable PEM certificate")?;
    Ok(cert.as_ref().to_vec())
}

/// An answer over TLS: status line code, headers (lowercase names), body.
#[derive(Debug, Clone)]
pub struct TlsReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl TlsReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Connects to one TLS address, trusting one CA.
#[derive(Clone)]
pub struct TlsProbe {
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: ServerName<'static>,
    host: String,
}

impl std::fmt::Debug for TlsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsProbe")
            .field("addr", &self.addr)
            .field("server_name", &self.host)
            .finish()
    }
}

impl TlsProbe {
    /// `url` is `https://host:port`; `server_name` the name to verify (a
    /// DNS name or an IP address); `ca_file` the PEM CA to trust.
    pub fn new(url: &str, server_name: &str, ca_file: &Path) -> Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .with_context(|| format!("{url:?} is not a URL like https://127.0.0.1:8443"))?;
        if parsed.scheme() != "https" {
            bail!("{url:?} is not an https URL");
        }
        let addr = parsed
            .socket_addrs(|| Some(443))
            .with_context(|| format!("resolving {url}"))?
            .into_iter()
            .next()
            .with_context(|| format!("{url} resolves to no address"))?;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca_file)
            .with_context(|| format!("reading the CA certificate {}", ca_file.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.with_context(|| format!("{} is not PEM", ca_file.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("{} holds an unusable CA", ca_file.display()))?;
        }
        if roots.is_empty() {
            bail!("{} holds no certificate", ca_file.display());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("rustls protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_owned())
            .with_context(|| format!("{server_name:?} is not a DNS name or IP address"))?;
        Ok(Self {
            config: Arc::new(config),
            addr,
            server_name: name,
            host: server_name.to_owned(),
        })
    }

    /// The environment's TLS listener.
    pub fn for_env(tls: &crate::contract::env::TlsEnvironment) -> Result<Self> {
        Self::new(&tls.url, &tls.server_name, &tls.ca_cert_file)
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let handshake = async {
            let tcp = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            connector
                .connect(self.server_name.clone(), tcp)
                .await
                .with_context(|| format!("TLS handshake with {} as {}", self.addr, self.host))
        };
        tokio::time::timeout(TIMEOUT, handshake)
            .await
            .with_context(|| format!("no TLS handshake with {} within {TIMEOUT:?}", self.addr))?
    }

    /// Handshakes and returns the leaf certificate the server presented.
    pub async fn served_certificate(&self) -> Result<ServedCert> {
        let stream = self.connect().await?;
        let (_, session) = stream.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .context("the server presented no certificate")?;
        let der = leaf.as_ref().to_vec();
        let info = parse_certificate(&der)?;
        Ok(ServedCert { der, info })
    }

    /// `GET path` with `headers` over a fresh TLS connection (HTTP/1.1,
    /// `Connection: close`). Header values are sent, never logged.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<TlsReply> {
        let request = async {
            let mut stream = self.connect().await?;
            let mut text = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
                self.host
            );
            for (name, value) in headers {
                text.push_str(&format!("{name}: {value}\r\n"));
            }
            text.push_str("\r\n");
            stream.write_all(text.as_bytes()).await?;
            stream.flush().await?;
            let mut raw = Vec::new();
            match stream.read_to_end(&mut raw).await {
                Ok(_) => {}
                // A server may close without close_notify once it has answered.
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
                Err(err) => return Err(err).context("reading the answer"),
            }
            parse_reply(&raw)
        };
        tokio::time::timeout(TIMEOUT, request)
            .await
            .with_context(|| format!("GET {path} over TLS took over {TIMEOUT:?}"))?
    }
}

fn parse_reply(raw: &[u8]) -> Result<TlsReply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("an answer without the end of its headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(TlsReply {
        status,
        headers,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn replies_parse_status_and_headers() {
        let reply = parse_reply(
            b"HTTP/1.1 401 Unauthorized\r\nX-Keyrig-Reason: unknown\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(reply.status, 401);
        assert_eq!(reply.header("x-keyrig-reason"), Some("unknown"));
        assert_eq!(reply.body, "{}");
        assert!(parse_reply(b"garbage").is_err());
    }

    #[rstest]
    fn a_missing_ca_file_is_named() {
        let err = TlsProbe::new(
            "https://127.0.0.1:1",
            "127.0.0.1",
            Path::new("/nonexistent/ca.crt"),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("reading the CA certificate /nonexistent/ca.crt"),
            "{err:#}"
        );
        let err = TlsProbe::new("http://127.0.0.1:1", "127.0.0.1", Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("not an https URL"), "{err}");
    }
}
