//! The real, unmodified AWS CLI (`aws apigateway ...`) pointed at a node's AWS API
//! Gateway-compatible API with `--endpoint-url`, signing with a test access key. Used by the
//! tests of that API here and in `quota-server`.
//!
//! Needs the AWS CLI: `aws` on PATH, or `python3 -m awscli` (`pip install awscli`; `.ci/run`
//! and `test.sh` install it). Without it a test panics and says so: never skipped silently.

use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;

/// The test access key id.
pub const AKID: &str = "AKIDQUOTADTEST0000001";
/// Its secret (the AWS documentation's example secret).
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// An access keys file (IAM's CSV) with the test key.
pub fn access_keys() -> String {
    format!("Access key ID,Secret access key\n{AKID},{SECRET}\n")
}

/// The AWS CLI as a command: `aws` if on PATH, else `python3 -m awscli`. Which one is
/// found once per test process (each probe starts Python).
pub fn aws_command() -> Command {
    static ON_PATH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let works = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    let on_path = *ON_PATH.get_or_init(|| {
        if works(Command::new("aws").arg("--version")) {
            return true;
        }
        assert!(
            works(Command::new("python3").args(["-m", "awscli", "--version"])),
            "the AWS CLI is needed for these tests: `python3 -m pip install awscli` (.ci/run and test.sh install it)"
        );
        false
    });
    if on_path {
        return Command::new("aws");
    }
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "awscli"]);
    cmd
}

/// One CLI profile against one endpoint.
pub struct Aws {
    pub endpoint: String,
    pub access_key: String,
    pub secret: String,
    /// Extra arguments for every call (`--no-sign-request`).
    pub extra: Vec<String>,
}

/// A failed CLI call: the error type and message it printed.
#[derive(Debug)]
pub struct CliError {
    /// What the CLI printed on stderr.
    pub stderr: String,
}

impl CliError {
    /// Panics unless the CLI reported `error_type` with a message containing `words`.
    pub fn assert(&self, error_type: &str, words: &str) {
        assert!(
            self.stderr.contains(&format!("({error_type})")),
            "expected {error_type}, got: {}",
            self.stderr
        );
        assert!(
            self.stderr.contains(words),
            "expected `{words}` in: {}",
            self.stderr
        );
    }
}

impl Aws {
    pub fn new(addr: SocketAddr) -> Aws {
        Aws {
            endpoint: format!("http://{addr}"),
            access_key: AKID.into(),
            secret: SECRET.into(),
            extra: Vec::new(),
        }
    }

    /// Run `aws apigateway ARGS`; the JSON it printed, or the error.
    pub fn try_run(&self, args: &[&str]) -> Result<Value, CliError> {
        let home = tempfile::tempdir().unwrap();
        let out = aws_command()
            .arg("apigateway")
            .args(args)
            .args(["--endpoint-url", &self.endpoint, "--region", "us-east-1"])
            .args(["--output", "json"])
            .args(&self.extra)
            .env("HOME", home.path())
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                home.path().join("credentials"),
            )
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_PAGER", "")
            .output()
            .expect("run the AWS CLI");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(CliError {
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}")))
    }

    /// Run and expect success.
    pub fn run(&self, args: &[&str]) -> Value {
        self.try_run(args)
            .unwrap_or_else(|e| panic!("aws apigateway {args:?} failed: {}", e.stderr))
    }

    /// Run and expect failure.
    pub fn fail(&self, args: &[&str]) -> CliError {
        match self.try_run(args) {
            Ok(v) => panic!("aws apigateway {args:?} should have failed, got {v}"),
            Err(e) => e,
        }
    }
}
