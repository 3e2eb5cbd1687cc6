//! `keyrig-bench-peer upstream|load-generator --listen ADDR`: see the
//! library's docs. Started by `cargo xtask bench` under rig's Supervisor
//! (readiness `GET /healthz`, log under the run, stopped with the run).

use std::net::SocketAddr;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keyrig-bench-peer",
    about = "keyrig's bench: load generator and upstream"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Answers every request 200 `{}`.
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Runs the bursts the bench posts to `/burst`.
    LoadGenerator {
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Two workers: one request in flight per connection needs no more, and
    // the cores belong to what is measured.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.cmd {
            Cmd::Upstream { listen } => bench_peer::upstream::serve(listen).await,
            Cmd::LoadGenerator { listen } => bench_peer::load::serve(listen).await,
        }
    })
}
