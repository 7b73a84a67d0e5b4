//! The cluster fixture: real `quotad` processes on 127.0.0.1, one TCP proxy per directed
//! node-to-node link, and the waits and faults the tests need.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use quota_proto::v1::ClusterStatus;
use quota_proto::v1::StatusRequest;
use tempfile::TempDir;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::binary::quotad_bin;
use crate::client::NodeClient;
use crate::proxy::{LinkMode, LinkProxy};

/// Attempts at starting a cluster. Ports are picked by binding port 0 and releasing it, so
/// another process may take one before `quotad` binds it; a fresh set of ports usually
/// fixes that.
const START_ATTEMPTS: u32 = 3;
/// How long a node gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one `Cluster.Status` call may take while polling.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Interval between polls of `Cluster.Status`.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Set this to keep every cluster's temp dir (configs, data, logs), not only failed ones.
pub const KEEP_ENV: &str = "QUOTA_BLACKBOX_KEEP";
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Cluster tests of one process run one at a time, whatever `--test-threads` says: a few
/// three-node clusters at once on two cores would turn timing assertions into noise.
static SERIAL: LazyLock<Arc<Mutex<()>>> = LazyLock::new(|| Arc::new(Mutex::new(())));

/// Raft timings written into every node's `[raft]` table.
#[derive(Clone, Debug)]
pub struct RaftTimings {
    /// Leader heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many applied entries.
    pub snapshot_every_entries: u64,
    /// Entries kept after a snapshot; older ones are purged.
    pub keep_logs_after_snapshot: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_every_entries: 5000,
            keep_logs_after_snapshot: 500,
        }
    }
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// Raft timings of every node.
    pub raft: RaftTimings,
    /// When set, nodes require `authorization: Bearer <token>` on Admin and Cluster calls
    /// (written to a token file named by `admin_token_file`), and the fixture's clients send
    /// it on every call.
    pub admin_token: Option<String>,
    /// `RUST_LOG` of the nodes. Defaults to `$QUOTA_BLACKBOX_RUST_LOG`, else "info".
    pub rust_log: String,
    /// How long a fresh cluster may take to elect its first leader.
    pub startup_timeout: Duration,
    /// Deadline of one RPC from the fixture's clients.
    pub request_timeout: Duration,
    /// Write the per-link proxy addresses into the config's `[peers]` table (the default),
    /// or pass them as `--peer ID=ADDR` flags instead (both are quotad interfaces; the flags
    /// were the fixture's only way while quotad could not parse a `[peers]` table, fixed in
    /// 6efe14f).
    pub peers_in_config: bool,
    /// When set, every node also serves the AWS API Gateway-compatible API on a port of its
    /// own, checking signatures against this access keys file text (see [`Cluster::aws_addr`]).
    pub aws_access_keys: Option<String>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        Self {
            raft: RaftTimings::default(),
            admin_token: None,
            rust_log: std::env::var("QUOTA_BLACKBOX_RUST_LOG").unwrap_or_else(|_| "info".into()),
            startup_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            peers_in_config: true,
            aws_access_keys: None,
        }
    }
}

/// One node: its addresses and files, and its process when it runs.
struct Node {
    listen: SocketAddr,
    /// The AWS-compatible API's address, when served.
    aws: Option<SocketAddr>,
    config: PathBuf,
    /// Where this node dials each peer (that link's proxy).
    peers: BTreeMap<u64, SocketAddr>,
    log: PathBuf,
    /// Byte offset in `log` where the output of the current (or last) run starts.
    run_log_start: u64,
    /// How many times the process was started.
    runs: u32,
    child: Option<Child>,
    client: NodeClient,
}

/// A running cluster of `quotad` processes. Dropping it kills every process (also during a
/// panic); a test that fails prints the tail of every node's log and keeps the temp dir.
///
/// Call its methods from the test's own task (the test body), not from spawned tasks: nodes
/// are spawned with a parent-death signal bound to the spawning thread, which is the test
/// thread there and lives as long as the test.
pub struct Cluster {
    dir: Option<TempDir>,
    opts: ClusterOpts,
    bin: PathBuf,
    nodes: BTreeMap<u64, Node>,
    proxies: BTreeMap<(u64, u64), LinkProxy>,
    /// Set once the logs were printed, so a failure prints them once.
    dumped: bool,
    /// Held for the cluster's life; declared last so that it is released last.
    _serial: Option<OwnedMutexGuard<()>>,
}

impl Cluster {
    /// Starts `n` nodes with ids 1..=n, all initial members, and waits for a leader.
    pub async fn start(n: u64, opts: ClusterOpts) -> anyhow::Result<Self> {
        assert!(n >= 1, "a cluster has at least one node");
        let serial = SERIAL.clone().lock_owned().await;
        let bin = tokio::task::spawn_blocking(quotad_bin)
            .await
            .context("building quotad panicked")??;
        let mut errors = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = match Self::launch(n, &opts, &bin).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("attempt {attempt}: {e:#}"));
                    continue;
                }
            };
            match cluster.wait_for_leader(opts.startup_timeout).await {
                Ok(_) => {
                    cluster._serial = Some(serial);
                    return Ok(cluster);
                }
                Err(e) => {
                    errors.push(format!(
                        "attempt {attempt}: {e:#}\n{}",
                        cluster.log_tails(LOG_TAIL_LINES)
                    ));
                    cluster.dumped = true;
                    // Dropping `cluster` kills its processes before the next attempt.
                }
            }
        }
        bail!(
            "no cluster of {n} came up in {START_ATTEMPTS} attempts:\n{}",
            errors.join("\n")
        )
    }

    /// Picks ports, starts the proxies, writes the configs and spawns every node.
    async fn launch(n: u64, opts: &ClusterOpts, bin: &Path) -> anyhow::Result<Self> {
        let dir = TempDir::with_prefix("quota-blackbox-").context("temp dir")?;
        let ids: Vec<u64> = (1..=n).collect();
        // The AWS API's ports, when served, are picked with the others so none repeats.
        let aws_count = if opts.aws_access_keys.is_some() {
            ids.len()
        } else {
            0
        };
        let mut ports = free_ports(ids.len() + aws_count)?;
        let aws_ports = ports.split_off(ids.len());
        let listen: BTreeMap<u64, SocketAddr> = ids
            .iter()
            .zip(ports)
            .map(|(&id, port)| (id, SocketAddr::from(([127, 0, 0, 1], port))))
            .collect();

        let mut proxies = BTreeMap::new();
        for &from in &ids {
            for &to in &ids {
                if from != to {
                    let proxy = LinkProxy::start(listen[&to]).await.context("start proxy")?;
                    proxies.insert((from, to), proxy);
                }
            }
        }

        let token_file = match &opts.admin_token {
            Some(token) => {
                let path = dir.path().join("admin-token");
                std::fs::write(&path, format!("{token}\n")).context("write token file")?;
                Some(path)
            }
            None => None,
        };

        let aws_keys_file = match &opts.aws_access_keys {
            Some(keys) => {
                let path = dir.path().join("aws-access-keys.csv");
                std::fs::write(&path, keys).context("write access keys file")?;
                Some(path)
            }
            None => None,
        };
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let aws = aws_ports
                .get((id - 1) as usize)
                .map(|&port| SocketAddr::from(([127, 0, 0, 1], port)));
            let node_dir = dir.path().join(format!("node{id}"));
            std::fs::create_dir_all(&node_dir)?;
            let data_dir = node_dir.join("data");
            let peers: BTreeMap<u64, SocketAddr> = ids
                .iter()
                .filter(|&&peer| peer != id)
                .map(|&peer| (peer, proxies[&(id, peer)].addr()))
                .collect();
            let config = node_dir.join("quotad.toml");
            let text = node_config(
                id,
                &listen,
                &data_dir,
                token_file.as_deref(),
                &opts.raft,
                opts.peers_in_config.then_some(&peers),
                aws.zip(aws_keys_file.as_deref()),
            );
            std::fs::write(&config, text).context("write config")?;
            let client = NodeClient::new(
                id,
                listen[&id],
                opts.admin_token.as_deref(),
                opts.request_timeout,
            )?;
            nodes.insert(
                id,
                Node {
                    listen: listen[&id],
                    aws,
                    config,
                    peers: if opts.peers_in_config {
                        BTreeMap::new()
                    } else {
                        peers
                    },
                    log: node_dir.join("quotad.log"),
                    run_log_start: 0,
                    runs: 0,
                    child: None,
                    client,
                },
            );
        }

        let mut cluster = Self {
            dir: Some(dir),
            opts: opts.clone(),
            bin: bin.to_path_buf(),
            nodes,
            proxies,
            dumped: false,
            _serial: None,
        };
        for id in ids {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Spawns node `id` with its config; its output goes to its log file.
    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let rust_log = self.opts.rust_log.clone();
        let node = self.node_mut(id)?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        node.runs += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("open {}", node.log.display()))?;
        writeln!(
            log,
            "===== quota-blackbox: run {} of node {id} =====",
            node.runs
        )?;
        node.run_log_start = log.metadata()?.len();
        let mut cmd = Command::new(&bin);
        cmd.arg("--config").arg(&node.config);
        for (peer, addr) in &node.peers {
            cmd.arg("--peer").arg(format!("{peer}={addr}"));
        }
        cmd.env("RUST_LOG", rust_log)
            // The token comes from the config's file only, never from the test's environment.
            .env_remove("QUOTAD_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    fn node(&self, id: u64) -> anyhow::Result<&Node> {
        self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut Node> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// The address of node `id`'s AWS API Gateway-compatible API, when the cluster was
    /// started with [`ClusterOpts::aws_access_keys`].
    pub fn aws_addr(&self, id: u64) -> Option<SocketAddr> {
        self.nodes.get(&id).and_then(|n| n.aws)
    }

    /// Node ids, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Ids of the nodes whose process runs (was started and not stopped or killed).
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.child.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    /// The options the cluster was started with.
    pub fn opts(&self) -> &ClusterOpts {
        &self.opts
    }

    /// The address clients use for node `id` (its `listen`).
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].listen
    }

    /// Admin, Data and Cluster clients of node `id` (cheap to clone; they reconnect by
    /// themselves after the node restarts).
    pub fn client(&self, id: u64) -> NodeClient {
        self.nodes[&id].client.clone()
    }

    /// Clients of every node, in id order.
    pub fn clients(&self) -> Vec<NodeClient> {
        self.nodes.values().map(|n| n.client.clone()).collect()
    }

    /// SIGKILL: the node gets no chance to flush or say goodbye.
    pub fn kill9(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        let mut child = node
            .child
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        child.kill().context("kill")?;
        child.wait().context("wait after kill")?;
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit. A node that does not exit within
    /// STOP_TIMEOUT is killed and the stop fails (a shutdown bug to report).
    pub async fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        self.stop_many(&[id]).await
    }

    /// SIGTERM to every running node at once, then waits for all of them to exit.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        let ids = self.running();
        self.stop_many(&ids).await
    }

    /// SIGTERM to each of `ids` (all first), then waits for each to exit.
    async fn stop_many(&mut self, ids: &[u64]) -> anyhow::Result<()> {
        let mut children = Vec::new();
        for &id in ids {
            let node = self.node_mut(id)?;
            let child = node
                .child
                .take()
                .ok_or_else(|| anyhow!("node {id} is not running"))?;
            let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
            // SAFETY: plain kill(2) on a child we spawned and have not reaped, so the pid
            // cannot have been reused.
            let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
            let err = std::io::Error::last_os_error();
            children.push((id, child));
            if rc != 0 {
                for (_, mut c) in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                bail!("SIGTERM to node {id}: {err}");
            }
        }
        let started = Instant::now();
        let mut failures = Vec::new();
        for (id, mut child) in children {
            loop {
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        eprintln!("quota-blackbox: node {id} exited with {status} after SIGTERM");
                    }
                    break;
                }
                if started.elapsed() > STOP_TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push(id);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if !failures.is_empty() {
            bail!(
                "nodes {failures:?} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed them"
            );
        }
        Ok(())
    }

    /// Starts a stopped or killed node again, with the same config and data dir.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)
    }

    /// Whether node `id`'s process exited by itself (a crash); reaps it if so.
    pub fn exited(&mut self, id: u64) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let node = self.node_mut(id)?;
        match node.child.as_mut() {
            Some(child) => {
                let status = child.try_wait()?;
                if status.is_some() {
                    node.child = None;
                }
                Ok(status)
            }
            None => Ok(None),
        }
    }

    /// Fails if a node that should run has exited by itself.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for id in self.running() {
            if let Some(status) = self.exited(id)? {
                bail!("node {id} exited by itself with {status}");
            }
        }
        Ok(())
    }

    /// Cuts one directed link: connections that `from` opens to `to`.
    pub fn cut_link(&self, from: u64, to: u64) {
        self.proxies[&(from, to)].cut();
    }

    /// Heals one directed link.
    pub fn heal_link(&self, from: u64, to: u64) {
        self.proxies[&(from, to)].heal();
    }

    /// Cuts every link to and from node `id` (new connections are closed at once). Clients
    /// still reach it directly.
    pub fn isolate(&self, id: u64) {
        self.isolate_with(id, LinkMode::Refuse);
    }

    /// Like [`Cluster::isolate`], choosing how the links fail: `Refuse` (peers see their
    /// connections closed) or `Blackhole` (new connections hang silently, like dropped
    /// packets). Existing connections are dropped either way. `Open` heals.
    pub fn isolate_with(&self, id: u64, mode: LinkMode) {
        for ((from, to), proxy) in &self.proxies {
            if *from == id || *to == id {
                match mode {
                    LinkMode::Open => proxy.heal(),
                    LinkMode::Refuse => proxy.cut(),
                    LinkMode::Blackhole => proxy.blackhole(),
                }
            }
        }
    }

    /// Heals every link to and from node `id`.
    pub fn heal(&self, id: u64) {
        for ((from, to), proxy) in &self.proxies {
            if *from == id || *to == id {
                proxy.heal();
            }
        }
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        for proxy in self.proxies.values() {
            proxy.heal();
        }
    }

    /// `Cluster.Status` from node `id`, with a short deadline.
    pub async fn status(&self, id: u64) -> anyhow::Result<ClusterStatus> {
        let mut client = self.client(id).cluster;
        let reply = tokio::time::timeout(STATUS_TIMEOUT, client.status(StatusRequest {}))
            .await
            .map_err(|_| anyhow!("Status from node {id} timed out"))?
            .with_context(|| format!("Status from node {id}"))?;
        reply
            .into_inner()
            .status
            .ok_or_else(|| anyhow!("Status from node {id} has no status"))
    }

    /// The leader, if a majority of all nodes agree on one (same leader id in the same
    /// term). A node cut off from the others may still believe in an old leader; it is
    /// outvoted.
    pub async fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        for id in self.running() {
            if let Ok(s) = self.status(id).await
                && s.leader_id != 0
            {
                *votes.entry((s.leader_id, s.term)).or_default() += 1;
            }
        }
        let majority = self.nodes.len() / 2 + 1;
        votes
            .into_iter()
            .find(|&(_, count)| count >= majority)
            .map(|((leader, _), _)| leader)
    }

    /// Polls until a majority agrees on a leader.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no leader agreed by a majority within {timeout:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The last log index node `id` has applied, as it reports itself.
    pub async fn applied(&self, id: u64) -> anyhow::Result<u64> {
        let status = self.status(id).await?;
        status
            .members
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.last_applied_index)
            .ok_or_else(|| anyhow!("node {id} does not report its own last_applied_index"))
    }

    /// Polls until node `id` has applied `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.applied(id).await {
                Ok(applied) if applied >= index => return Ok(()),
                last => last,
            };
            if Instant::now() > deadline {
                bail!(
                    "node {id} did not apply index {index} within {timeout:?}; last answer: {last:?}"
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until node `id` has applied what the current leader has applied.
    pub async fn wait_caught_up(&mut self, id: u64, timeout: Duration) -> anyhow::Result<u64> {
        let leader = self.wait_for_leader(timeout).await?;
        let target = self.applied(leader).await?;
        self.wait_applied(id, target, timeout).await?;
        Ok(target)
    }

    /// The output of node `id`'s current (or last) run.
    pub fn log_of_last_run(&self, id: u64) -> anyhow::Result<String> {
        let node = self.node(id)?;
        let bytes = std::fs::read(&node.log)?;
        let start = usize::try_from(node.run_log_start)
            .unwrap_or(0)
            .min(bytes.len());
        Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
    }

    /// The last `lines` lines of every node's log, with headers.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (id, node) in &self.nodes {
            out.push_str(&format!(
                "----- node {id}: {} (last {lines} lines) -----\n",
                node.log.display()
            ));
            match std::fs::read(&node.log) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let all: Vec<&str> = text.lines().collect();
                    for line in &all[all.len().saturating_sub(lines)..] {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                Err(e) => out.push_str(&format!("(cannot read: {e})\n")),
            }
        }
        out
    }

    /// Ends a test: on error, prints the nodes' logs, keeps the temp dir and panics.
    #[track_caller]
    pub fn finish(mut self, result: anyhow::Result<()>) {
        if let Err(e) = result {
            self.dump();
            panic!("{e:#}");
        }
    }

    fn dump(&mut self) {
        if self.dumped {
            return;
        }
        self.dumped = true;
        eprintln!("{}", self.log_tails(LOG_TAIL_LINES));
        if let Some(dir) = self.dir.take() {
            let path = dir.keep();
            eprintln!(
                "quota-blackbox: kept the cluster's files in {}",
                path.display()
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            self.dump();
        } else if std::env::var_os(KEEP_ENV).is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "quota-blackbox: {KEEP_ENV} set; kept {}",
                dir.keep().display()
            );
        }
    }
}

/// Asks the kernel to SIGKILL the child when the spawning thread dies, so that no node
/// outlives a test process that was itself killed (a nextest timeout, ^C).
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// `count` distinct free ports of 127.0.0.1: all are held until every one is picked, then
/// released for `quotad` to bind.
///
/// They come from below the kernel's ephemeral range, never from it (as port 0 would
/// give): between the pick and `quotad`'s bind, any outgoing connection on the machine may
/// take an ephemeral port as its source, and a proxy connecting to a node's port before
/// the node listens can even connect to itself on it (TCP simultaneous open). Both were
/// seen: the node failed with "address in use" and the link looped back to its sender.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    const LOWEST: u16 = 10_000;
    let below = ephemeral_port_floor().max(LOWEST + 1_000);
    let mut held: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    for _ in 0..10_000 {
        if ports.len() == count {
            return Ok(ports);
        }
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
        let port = LOWEST + u16::from_le_bytes(r) % (below - LOWEST);
        if ports.contains(&port) {
            continue;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            ports.push(port);
        }
    }
    if ports.len() == count {
        return Ok(ports);
    }
    anyhow::bail!("no {count} free ports of 127.0.0.1 in {LOWEST}..{below}")
}

/// The lowest ephemeral port (`/proc/sys/net/ipv4/ip_local_port_range`; Linux's default
/// 32768 where it cannot be read).
fn ephemeral_port_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The config file of node `id`.
fn node_config(
    id: u64,
    listen: &BTreeMap<u64, SocketAddr>,
    data_dir: &Path,
    admin_token_file: Option<&Path>,
    raft: &RaftTimings,
    peers: Option<&BTreeMap<u64, SocketAddr>>,
    aws: Option<(SocketAddr, &Path)>,
) -> String {
    let addr = listen[&id].to_string();
    let mut t = String::new();
    t.push_str(&format!("node_id = {id}\n"));
    t.push_str(&format!("listen = {}\n", toml_str(&addr)));
    t.push_str(&format!("advertise = {}\n", toml_str(&addr)));
    t.push_str(&format!(
        "data_dir = {}\n",
        toml_str(&data_dir.to_string_lossy())
    ));
    if let Some(path) = admin_token_file {
        t.push_str(&format!(
            "admin_token_file = {}\n",
            toml_str(&path.to_string_lossy())
        ));
    }
    t.push_str("\n[raft]\n");
    t.push_str(&format!(
        "heartbeat_interval_ms = {}\n",
        raft.heartbeat_interval_ms
    ));
    t.push_str(&format!(
        "election_timeout_min_ms = {}\n",
        raft.election_timeout_min_ms
    ));
    t.push_str(&format!(
        "election_timeout_max_ms = {}\n",
        raft.election_timeout_max_ms
    ));
    t.push_str(&format!(
        "snapshot_every_entries = {}\n",
        raft.snapshot_every_entries
    ));
    t.push_str(&format!(
        "keep_logs_after_snapshot = {}\n",
        raft.keep_logs_after_snapshot
    ));
    if let Some((addr, keys)) = aws {
        t.push_str("\n[aws_api]\n");
        t.push_str(&format!("listen = {}\n", toml_str(&addr.to_string())));
        t.push_str(&format!(
            "access_keys_file = {}\n",
            toml_str(&keys.to_string_lossy())
        ));
    }
    if let Some(peers) = peers {
        t.push_str("\n[peers]\n");
        for (peer, addr) in peers {
            t.push_str(&format!("{peer} = {}\n", toml_str(&addr.to_string())));
        }
    }
    for (member, addr) in listen {
        t.push_str(&format!(
            "\n[[members]]\nid = {member}\naddr = {}\n",
            toml_str(&addr.to_string())
        ));
    }
    t
}
