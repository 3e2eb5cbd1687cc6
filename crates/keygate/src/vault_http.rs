//! HTTP(S) to Vault: hyper over rustls with the ring provider, configured
//! per client (no process-wide crypto provider). hyper reads no
//! `HTTP(S)_PROXY` / `ALL_PROXY` and follows no redirects, so keygate's token
//! goes only to `vault.address`, never to a proxy or a `Location` elsewhere.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Vault's certificate did not verify; rustls' reason.
    Certificate(String),
    /// Anything else (refused, reset, timeout), the causes joined.
    Other(String),
}

#[derive(Clone)]
pub struct VaultHttp {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl VaultHttp {
    /// `ca_cert_file`: trust only its certificates; `None`: the system's
    /// trust store (read only here, at startup).
    pub fn new(ca_cert_file: Option<&Path>, timeout: Duration) -> Result<Self, String> {
        let roots = match ca_cert_file {
            Some(file) => Arc::new(load_ca_file(file)?),
            None => system_roots(),
        };
        Self::with_roots(roots, timeout)
    }

    /// A client trusting exactly `roots` for https (rig's `VaultClient` uses
    /// this transport too, with its own CA-file handling).
    pub fn with_roots(roots: Arc<RootCertStore>, timeout: Duration) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("rustls (ring) supports no safe TLS version: {err}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new())
                // Idle connections expire (as reqwest's do), so one a
                // restarted Vault closed is not kept around.
                .pool_timer(TokioTimer::new())
                .build(connector),
            timeout,
        })
    }

    /// One exchange within the timeout: status and the whole body as text.
    /// A redirect comes back as its 3xx status; it is not followed.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        json: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, String), Failure> {
        let mut builder = hyper::Request::builder().method(method).uri(url);
        if let Some(map) = builder.headers_mut() {
            map.extend(headers);
            if json.is_some() {
                map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
        }
        let body = json
            .map(|v| serde_json::to_vec(v).expect("a JSON value serializes"))
            .unwrap_or_default();
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| Failure::Other(format!("{url} is not a request URL ({err})")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| classify(&e))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| classify(&e))?;
            Ok((
                status,
                String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            ))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Other(format!(
                    "no answer within {:?} (vault.timeout)",
                    self.timeout
                )))
            })
    }
}

/// The next error down, looking inside `io::Error`s (whose `source` skips
/// the error they wrap, which is where rustls' error sits).
fn next<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        return Some(inner);
    }
    err.source()
}

/// A certificate failure, else every distinct cause joined: hyper's own
/// message says only "client error (Connect)"; the cause (refused, reset)
/// is further down.
pub fn classify(err: &(dyn Error + 'static)) -> Failure {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(tls @ rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>()
        {
            return Failure::Certificate(tls.to_string());
        }
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = next(e);
    }
    Failure::Other(parts.join(": "))
}

/// The operating system's trust store, read once per process: a corporate
/// CA installed there (or named by SSL_CERT_FILE / SSL_CERT_DIR) is trusted,
/// which a compiled-in list such as webpki-roots would not do.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for err in &found.errors {
                tracing::debug!(error = %err, "reading the system's trust store");
            }
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            Arc::new(roots)
        })
        .clone()
}

/// Every certificate of the PEM bundle `vault.ca_cert_file` names, as trust
/// anchors. Errors name the field, the file and the fix.
pub fn load_ca_file(file: &Path) -> Result<RootCertStore, String> {
    let shown = file.display();
    let pem = std::fs::read(file).map_err(|err| {
        format!(
            "vault.ca_cert_file points to {shown}, which cannot be read ({err}): \
             give the PEM file of the CA that signed Vault's certificate"
        )
    })?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|err| {
            format!(
                "vault.ca_cert_file points to {shown}, whose certificate {} is not valid PEM ({err})",
                i + 1
            )
        })?;
        roots.add(cert).map_err(|err| {
            format!(
                "vault.ca_cert_file points to {shown}, whose certificate {} is not a usable CA certificate ({err})",
                i + 1
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "vault.ca_cert_file points to {shown}, which holds no certificate: \
             give a PEM file with at least one -----BEGIN CERTIFICATE----- block"
        ));
    }
    Ok(roots)
}
