//! `quota-gateway`: the binary. Reads the config file, applies the flags over it, reads
//! the cluster token from `QUOTA_GATEWAY_TOKEN` or `--token-file`, and serves until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quota_gateway::{GatewayConfig, serve};

/// An HTTP authorizer and reverse proxy: API keys, throttles and quotas from a quotad
/// cluster in front of any HTTP upstream.
#[derive(Parser, Debug)]
#[command(name = "quota-gateway", version)]
struct Args {
    /// A TOML config file (every field has a default; see the crate doc).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Upstream `http://host:port` (overrides `upstream`).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Cluster nodes, comma-separated `http://host:port` (overrides `endpoints`).
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// The API name plans cover (overrides `api`).
    #[arg(long)]
    api: Option<String>,
    /// The API stage plans cover (overrides `stage` and a serverless.yml's
    /// `provider.stage`).
    #[arg(long)]
    stage: Option<String>,
    /// Routes from a serverless.yml (overrides `serverless`).
    #[arg(long, value_name = "FILE")]
    serverless: Option<PathBuf>,
    /// This gateway's identity towards the cluster (overrides `gateway_id`).
    #[arg(long)]
    gateway_id: Option<String>,
    /// A file holding the cluster's bearer token (used when `QUOTA_GATEWAY_TOKEN` is
    /// not set).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

fn config(args: Args) -> anyhow::Result<GatewayConfig> {
    let mut c = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            GatewayConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => GatewayConfig::default(),
    };
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if let Some(v) = args.upstream {
        c.upstream = v;
    }
    if !args.endpoints.is_empty() {
        c.endpoints = args.endpoints;
    }
    if let Some(v) = args.api {
        c.api = v;
    }
    if let Some(v) = args.stage {
        c.stage = v;
    }
    if let Some(v) = args.serverless {
        c.serverless = Some(v);
    }
    if let Some(v) = args.gateway_id {
        c.gateway_id = v;
    }
    c.token = match std::env::var("QUOTA_GATEWAY_TOKEN") {
        Ok(t) if !t.is_empty() => Some(t),
        _ => match &args.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the token file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        },
    };
    c.load_serverless()?;
    c.validate()?;
    Ok(c)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = config(Args::parse())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    // The bound address (useful with port 0), for scripts and tests.
    println!("listening on {}", listener.local_addr()?);
    serve(config, listener, shutdown_signal()).await?;
    Ok(())
}
