//! The fixture of the quotactl tests: a real single-node `quotad --dev` on a free port
//! with a temporary data directory, and the real `quotactl` binary run against it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a fresh node may take to elect itself leader.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `quotad`, built once per test process by the cargo running the tests, into the target
/// directory of this test binary (`target/<profile>/deps/<exe>` -> `target/<profile>/quotad`).
pub fn quotad_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let mut dir = exe.parent().expect("test binary directory").to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir = dir.parent().expect("deps parent").to_path_buf();
        }
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile dir")
            .to_owned();
        let target_dir = dir.parent().expect("target dir").to_path_buf();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&workspace)
            .args(["build", "-p", "quota-server", "--bin", "quotad"])
            .env("CARGO_TARGET_DIR", &target_dir);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "building quotad failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = dir.join(format!("quotad{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// What one quotactl run gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    /// Assert the exit status, showing the output when it differs.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit status {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Run quotactl with `args` against `endpoint`, feeding `stdin`.
pub fn quotactl_at(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Run {
    quotactl_env(endpoint, args, stdin, &[])
}

/// Run quotactl with `args` and extra environment variables against `endpoint`.
pub fn quotactl_env(
    endpoint: &str,
    args: &[&str],
    stdin: Option<&str>,
    envs: &[(&str, &str)],
) -> Run {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quotactl"));
    cmd.args(args)
        .env("QUOTA_ENDPOINTS", endpoint)
        .env_remove("QUOTA_TOKEN")
        .env_remove("QUOTA_RETRY_FOR")
        // After the removals, so a test can set QUOTA_TOKEN.
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn quotactl");
    // Dropping stdin closes it, so a command reading standard input sees its end.
    if let Some(mut input) = child.stdin.take()
        && let Some(text) = stdin
    {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    Run::from(child.wait_with_output().expect("wait for quotactl"))
}

/// A running single-node cluster; dropping it kills the node.
pub struct Node {
    child: Child,
    pub endpoint: String,
    pub dir: tempfile::TempDir,
}

impl Node {
    /// Start `quotad --dev --listen 127.0.0.1:PORT --data-dir DIR` and wait for a leader.
    pub fn start() -> Node {
        Node::start_with(None)
    }

    /// Start a node that requires `admin_token` (via QUOTAD_ADMIN_TOKEN) when given.
    pub fn start_with(admin_token: Option<&str>) -> Node {
        let bin = quotad_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("quotad.log")).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--dev",
            "--aws-api-listen",
            "off",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("QUOTAD_ADMIN_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
        if let Some(token) = admin_token {
            cmd.env("QUOTAD_ADMIN_TOKEN", token);
        }
        let child = cmd.spawn().expect("spawn quotad");
        let node = Node {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let started = Instant::now();
        loop {
            let token = admin_token.unwrap_or_default();
            let run = node.q_env(
                &["--json", "--retry-for", "1", "cluster", "status"],
                &[("QUOTA_TOKEN", token)],
            );
            if run.code == 0 && run.json()["leader_id"].as_u64().is_some() {
                return node;
            }
            assert!(
                started.elapsed() < STARTUP_TIMEOUT,
                "quotad did not elect a leader in {STARTUP_TIMEOUT:?}: {run:?}\nlog:\n{}",
                std::fs::read_to_string(node.dir.path().join("quotad.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run quotactl against this node.
    pub fn q(&self, args: &[&str]) -> Run {
        quotactl_at(&self.endpoint, args, None)
    }

    /// Run quotactl against this node with `stdin`.
    pub fn q_in(&self, args: &[&str], stdin: &str) -> Run {
        quotactl_at(&self.endpoint, args, Some(stdin))
    }

    /// Run quotactl against this node with extra environment variables.
    pub fn q_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        quotactl_env(&self.endpoint, args, None, envs)
    }

    /// Write a file into the node's temporary directory and return its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path.display().to_string()
    }

    /// Everything the cluster holds (keys, plans, and each plan's keys) as JSON, to check
    /// that a command changed nothing.
    pub fn snapshot(&self) -> serde_json::Value {
        let keys = self.q(&["--json", "key", "list"]).expect(0).json();
        let plans = self.q(&["--json", "plan", "list"]).expect(0).json();
        let mut plan_keys = Vec::new();
        for p in plans.as_array().expect("plan list") {
            let id = p["id"].as_str().expect("plan id");
            plan_keys.push(self.q(&["--json", "plan", "get", id]).expect(0).json());
        }
        serde_json::json!({ "keys": keys, "plans": plan_keys })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
