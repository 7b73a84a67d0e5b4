//! The binary against clusters it starts itself (the quota-blackbox fixture builds
//! `quotad`). Run: `cargo test -p quota-loadtest --test run`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The runs start three-node clusters as child processes; one at a time keeps two cores
/// from turning the fault timings into noise.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(dir: &Path, extra: &[&str]) -> (std::process::ExitStatus, Value, String) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let json = dir.join("report.json");
    let svg = dir.join("chart.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_quota-loadtest"))
        .args(["--no-progress", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .args(extra)
        .output()
        .expect("quota-loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report written"))
            .expect("JSON parses");
    let chart = std::fs::read_to_string(&svg).expect("SVG written");
    assert!(
        chart.starts_with("<svg") && chart.contains("polyline"),
        "not a chart"
    );
    (out.status, report, stdout)
}

// Property: a short run against a cluster the harness starts passes its own books: no key
// is admitted past its limit, by the gateways' count and by the cluster's counter, and the
// reports are written.
// Set-up: 3 nodes; 4 gateways x 2 streams; 20 keys with limit 300; Zipf demand (far above
// the limits) for 3 s; no baseline.
// Pass: exit 0; JSON pass = true, over-admission 0 both ways; something was admitted and
// denied for quota; the SVG exists.
#[test]
fn short_run_balances_the_books() {
    let dir = tempfile::tempdir().unwrap();
    let (status, j, _) = run(
        dir.path(),
        &[
            "--gateways",
            "4",
            "--streams",
            "2",
            "--keys",
            "20",
            "--limit",
            "300",
            "--duration",
            "3",
            "--no-redis",
        ],
    );
    assert!(status.success(), "exit {status}");
    assert_eq!(j["pass"], Value::Bool(true));
    let q = &j["quotad"];
    assert_eq!(q["over_admission"], 0);
    assert_eq!(q["cluster_cross_check"]["over_admission"], 0);
    assert!(q["admitted"].as_u64().unwrap() > 0);
    assert!(q["denied"]["quota"].as_u64().unwrap() > 0);
    assert_eq!(q["per_key"].as_array().unwrap().len(), 20);
}

// Property: a leader killed with SIGKILL mid-run (and restarted) and a paused follower do
// not make the cluster over-admit, and the report says what each fault did.
// Set-up: 3 nodes; 2 gateways x 2 streams; one hot key (limit 2,000) and 9 others;
// 7 s; kill -9 the leader at 1 s (restart 2.5 s later), pause a follower at 4.5 s for 1 s.
// Pass: exit 0; over-admission 0 both ways; both faults were applied and undone without
// error, and a leader was seen again after the kill.
#[test]
fn faults_do_not_cause_over_admission() {
    let dir = tempfile::tempdir().unwrap();
    let (status, j, _) = run(
        dir.path(),
        &[
            "--gateways",
            "2",
            "--streams",
            "2",
            "--keys",
            "10",
            "--limit",
            "2000",
            "--shape",
            "hot",
            "--duration",
            "7",
            "--no-redis",
            "--fault",
            "kill-leader@1+2.5",
            "--fault",
            "pause-follower@4.5+1",
        ],
    );
    assert!(status.success(), "exit {status}");
    let q = &j["quotad"];
    assert_eq!(q["over_admission"], 0);
    assert_eq!(q["cluster_cross_check"]["over_admission"], 0);
    let faults = q["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2);
    for f in faults {
        assert!(f["error"].is_null(), "fault failed: {f}");
        assert!(
            f["applied_at_s"].is_number() && f["undone_at_s"].is_number(),
            "{f}"
        );
    }
    assert!(
        faults[0]["new_leader"].is_number(),
        "no leader seen after the kill: {}",
        faults[0]
    );
}

// Property: the Redis baseline runs side by side and is reported.
// Set-up: needs `redis-server` on PATH (Debian/Ubuntu package `redis-server`); skipped with
// a printed reason otherwise. 3 nodes; 2 gateways x 2 streams; 10 keys, limit 200; 2 s
// each; a 1 s Redis window.
// Pass: exit 0 (the baseline's over-admission does not fail the run); the baseline section
// has decisions and latencies, and per window it admitted at most the limit.
#[test]
fn redis_baseline_side_by_side() {
    if quota_loadtest::redis::find_server().is_none() {
        eprintln!(
            "SKIPPED redis_baseline_side_by_side: redis-server not on PATH (apt-get install -y {})",
            quota_loadtest::redis::APT_PACKAGE
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (status, j, stdout) = run(
        dir.path(),
        &[
            "--gateways",
            "2",
            "--streams",
            "2",
            "--keys",
            "10",
            "--limit",
            "200",
            "--duration",
            "2",
            "--redis-window-secs",
            "1",
            "--require-redis",
        ],
    );
    assert!(status.success(), "exit {status}");
    let r = &j["redis_fixed_window"];
    assert!(r["decisions"].as_u64().unwrap() > 0, "{r}");
    assert!(r["check_latency_ns"]["p50"].as_u64().unwrap() > 0);
    assert_eq!(r["over_admission_per_window"], 0);
    assert!(stdout.contains("redis fixed window"));
}
