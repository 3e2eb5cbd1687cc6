//! The upstream behind the gateway on the local profile: answers every
//! request with 200 and what it received, so tests can see which headers
//! the gateway added, stripped or passed on.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::Request;
use serde_json::{Value, json};

/// The answer for one request: `{"method", "path", "query", "headers"}`,
/// header names lowercased, repeated headers joined with ", ".
pub fn describe(request: &Request) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "headers": headers,
    })
}

/// Serves until the process is stopped.
pub async fn serve(addr: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    serve_on(listener).await
}

pub async fn serve_on(listener: tokio::net::TcpListener) -> Result<()> {
    if let Ok(addr) = listener.local_addr() {
        // The only line in logs/echo.log: requests are visible in the answers.
        eprintln!("echo upstream listening on http://{addr}");
    }
    let app = axum::Router::new().fallback(async |request: Request| Json(describe(&request)));
    axum::serve(listener, app)
        .await
        .context("serving the echo upstream")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[tokio::test]
    async fn echoes_method_path_and_headers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_on(listener));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = client
            .delete(format!("http://{addr}/billing/invoices/7?x=1"))
            .header("X-Api-Group", "billing-api")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["method"], "DELETE");
        assert_eq!(body["path"], "/billing/invoices/7");
        assert_eq!(body["query"], "x=1");
        assert_eq!(body["headers"]["x-api-group"], "billing-api");
    }
}
