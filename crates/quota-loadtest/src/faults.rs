//! Faults at chosen moments of a run: kill -9 the leader (and restart it), pause a
//! follower (SIGSTOP, then SIGCONT). Only for clusters the harness started itself.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL the leader; restart it after the fault's duration.
    KillLeader,
    /// SIGSTOP a follower; SIGCONT it after the fault's duration.
    PauseFollower,
}

/// A fault: `kill-leader@5` or `pause-follower@3+2` (seconds from the start of the run,
/// then how long until the node is restarted or resumed; 2 s when left out).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpec {
    /// What.
    pub kind: FaultKind,
    /// When, from the start of the run.
    pub at: Duration,
    /// How long until it is undone.
    pub length: Duration,
}

/// Undo delay when the spec gives none.
const DEFAULT_LENGTH: Duration = Duration::from_secs(2);

impl FromStr for FaultSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<FaultSpec> {
        let (kind, when) = s
            .split_once('@')
            .ok_or_else(|| anyhow!("fault {s:?}: expected KIND@SECONDS[+SECONDS]"))?;
        let kind = match kind {
            "kill-leader" => FaultKind::KillLeader,
            "pause-follower" => FaultKind::PauseFollower,
            other => bail!("unknown fault {other:?} (kill-leader, pause-follower)"),
        };
        let (at, length) = match when.split_once('+') {
            Some((a, l)) => (a, Some(l)),
            None => (when, None),
        };
        let secs = |t: &str| -> anyhow::Result<Duration> {
            let v: f64 = t
                .parse()
                .with_context(|| format!("fault {s:?}: bad seconds {t:?}"))?;
            if !(0.0..=86_400.0).contains(&v) {
                bail!("fault {s:?}: {v} s is out of range");
            }
            Ok(Duration::from_secs_f64(v))
        };
        Ok(FaultSpec {
            kind,
            at: secs(at)?,
            length: length.map(secs).transpose()?.unwrap_or(DEFAULT_LENGTH),
        })
    }
}

/// The pid of our child `quotad` for node `id` of the fixture's cluster: its command line
/// names `.../node{id}/quotad.toml` and its parent is this process. The fixture keeps the
/// `Child` private, so it is found through /proc.
pub fn node_pid(id: u64) -> anyhow::Result<libc::pid_t> {
    let me = std::process::id();
    let needle = format!("node{id}/quotad.toml");
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(me) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            return Ok(pid);
        }
    }
    bail!("no child quotad process for node {id}")
}

/// Sends `sig` to `pid`.
pub fn signal(pid: libc::pid_t, sig: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill(2) on a child of this process that the fixture has not reaped (it still
    // runs), so the pid is not reused.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}
