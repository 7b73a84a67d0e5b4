//! `quotad`: run one node of a quotad cluster.

use anyhow::Context;
use clap::Parser;
use quota_server::config::{Config, MemberConfig};
use std::path::PathBuf;

/// A replicated service for API keys, usage plans and quota counters.
///
/// Run `quotad --dev` for a single-node cluster with embedded defaults (data in
/// `./.quotad-dev`), or `quotad --config node.toml` for a cluster member. Flags override
/// the file. The admin token comes from `admin_token_file` or QUOTAD_ADMIN_TOKEN, never
/// from a flag.
#[derive(Debug, Parser)]
#[command(name = "quotad", version)]
struct Args {
    /// Run a single-node development cluster with embedded defaults.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// A TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// This node's id.
    #[arg(long)]
    node_id: Option<u64>,
    /// Address to listen on for gRPC (host:port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Address others reach this node at (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// An initial member, `ID=HOST:PORT` (repeat for each; replaces the file's list).
    #[arg(long = "member", value_parser = parse_pair)]
    members: Vec<(u64, String)>,
    /// A local dial override for a peer, `ID=HOST:PORT` (repeatable).
    #[arg(long = "peer", value_parser = parse_pair)]
    peers: Vec<(u64, String)>,
    /// File holding the admin bearer token.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Address of the AWS API Gateway-compatible REST API (host:port), or `off`.
    /// `--dev` serves it on 127.0.0.1:7080 without signature checks.
    #[arg(long, value_parser = parse_aws_listen)]
    aws_api_listen: Option<AwsListen>,
    /// File of admin access keys (`ACCESS_KEY_ID,SECRET`) that may sign AWS API requests.
    #[arg(long)]
    aws_access_keys_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
enum AwsListen {
    Off,
    At(std::net::SocketAddr),
}

fn parse_aws_listen(s: &str) -> Result<AwsListen, String> {
    if s == "off" {
        return Ok(AwsListen::Off);
    }
    s.parse()
        .map(AwsListen::At)
        .map_err(|_| format!("`{s}` is neither HOST:PORT nor `off`"))
}

fn parse_pair(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not ID=HOST:PORT"))?;
    let id = id.parse().map_err(|_| format!("`{id}` is not a node id"))?;
    Ok((id, addr.to_owned()))
}

fn config(args: Args) -> anyhow::Result<Config> {
    let mut config = match (&args.config, args.dev) {
        (Some(path), _) => Config::from_file(path)?,
        (None, true) => Config::dev(),
        (None, false) => Config::default(),
    };
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
        if args.dev {
            config.members = vec![MemberConfig {
                id: config.node_id,
                addr: listen.to_string(),
            }];
        }
    }
    if args.advertise.is_some() {
        config.advertise = args.advertise;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if !args.members.is_empty() {
        config.members = args
            .members
            .into_iter()
            .map(|(id, addr)| MemberConfig { id, addr })
            .collect();
    }
    config.peers.extend(args.peers);
    if args.admin_token_file.is_some() {
        config.admin_token_file = args.admin_token_file;
    }
    match args.aws_api_listen {
        Some(AwsListen::Off) => config.aws_api.listen = None,
        Some(AwsListen::At(addr)) => config.aws_api.listen = Some(addr),
        None => {}
    }
    if let Some(file) = args.aws_access_keys_file {
        config.aws_api.access_keys_file = Some(file);
        config.aws_api.allow_unsigned = false;
    }
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let dev = args.dev;
    let config = config(args)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    if dev {
        eprintln!(
            "quotad --dev: a single-node cluster on {addr} (gRPC, plaintext), data in {dir}\n  \
             status:  quotactl --endpoints http://{addr} cluster status\n  \
             admin calls need no token in this mode unless {env} is set",
            addr = config.listen,
            dir = config.data_dir.display(),
            env = quota_server::config::ADMIN_TOKEN_ENV,
        );
        if let Some(aws) = config.aws_api.listen {
            eprintln!(
                "  AWS API Gateway-compatible API on http://{aws}{unsigned}\n  \
                 try:     aws apigateway get-api-keys --endpoint-url http://{aws} --region us-east-1{sign}",
                unsigned = if config.aws_api.allow_unsigned {
                    " (requests NOT authenticated in this mode)"
                } else {
                    ""
                },
                sign = if config.aws_api.allow_unsigned {
                    " --no-sign-request"
                } else {
                    ""
                },
            );
        }
    }
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::mem::drop(ctrl_c.await),
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    };
    quota_server::server::serve(config, listener, shutdown).await?;
    Ok(())
}
