//! The bench's upstream: 200 and `{}` for every request, `/healthz`
//! included (its readiness probe). Every variant reaches the same one, so
//! what it costs is the same for all; it costs little, so the gateways'
//! own work is what the ratios compare.

use std::net::SocketAddr;

use anyhow::{Context, Result};

pub async fn serve(listen: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("bench upstream listening on http://{listen}");
    let app = axum::Router::new().fallback(async || {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            "{}",
        )
    });
    axum::serve(listener, app)
        .await
        .context("serving the bench upstream")
}
