//! `quotactl`: the operator's command line for quotad. See the crate docs (`lib.rs`).

use clap::{CommandFactory, Parser};
use quota_cli::cli::{Cli, Command};
use quota_cli::client::{Auth, Client};
use quota_cli::error::{CliError, EXIT_OK};
use std::time::Duration;

/// Environment variable holding the admin token.
const TOKEN_ENV: &str = "QUOTA_TOKEN";
/// Longest token file read, in bytes (the server accepts at most 4096).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;
/// Longest retry deadline accepted, in seconds.
const MAX_RETRY_FOR_SECS: f64 = 3600.0;

fn token(cli: &Cli) -> Result<Option<String>, CliError> {
    if let Some(path) = &cli.global.token_file {
        let meta = std::fs::metadata(path).map_err(|source| CliError::Io {
            what: format!("cannot read the token file {}", path.display()),
            source,
        })?;
        if meta.len() > MAX_TOKEN_FILE_BYTES {
            return Err(CliError::usage(format!(
                "the token file {} is {} bytes; a token is at most {MAX_TOKEN_FILE_BYTES}",
                path.display(),
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
            what: format!("cannot read the token file {}", path.display()),
            source,
        })?;
        return Ok(Some(text.trim().to_owned()));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty()))
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let retry = cli.global.retry_for;
    if !(0.0..=MAX_RETRY_FOR_SECS).contains(&retry) {
        return Err(CliError::usage(format!(
            "--retry-for {retry}: give 0 to {MAX_RETRY_FOR_SECS} seconds"
        )));
    }
    let auth = Auth::new(token(&cli)?.as_deref())?;
    let client = Client::new(&cli.global.endpoints, auth, Duration::from_secs_f64(retry))?;
    quota_cli::commands::run(&client, cli.command, cli.global.json).await
}

fn main() {
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "quotactl",
            &mut std::io::stdout(),
        );
        return;
    }
    let json = cli.global.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(quota_cli::error::EXIT_USAGE);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            if json {
                let report = serde_json::json!({
                    "error": { "kind": e.kind(), "exit_code": e.exit_code(), "message": e.to_string() }
                });
                eprintln!("{report}");
            } else if !matches!(e, CliError::Denied { .. }) {
                eprintln!("error: {e}");
            }
            e.exit_code()
        }
    };
    std::process::exit(code);
}
