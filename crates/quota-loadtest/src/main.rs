//! `quota-loadtest`: see the crate doc of the library.

use clap::Parser;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    let args = quota_loadtest::Args::parse();
    match quota_loadtest::main_with(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("quota-loadtest: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
