//! Node configuration: one struct, one set of defaults, fed by a TOML file and by flags,
//! validated once with an error that names the bad field.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Environment variable that may hold the admin bearer token.
pub const ADMIN_TOKEN_ENV: &str = "QUOTAD_ADMIN_TOKEN";
/// Environment variable that may hold the gateway bearer token.
pub const GATEWAY_TOKEN_ENV: &str = "QUOTAD_GATEWAY_TOKEN";
/// Longest admin token read from a file or the environment, in bytes.
pub const MAX_ADMIN_TOKEN_LEN: usize = 4096;
/// Shortest admin token accepted, in bytes.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// A node's configuration. Every field has a default (see [`Config::default`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id in the cluster (1 or more), unique among members.
    pub node_id: u64,
    /// Where this node listens for gRPC (public services and node-to-node Raft traffic).
    pub listen: SocketAddr,
    /// The address other nodes and clients reach this node at; defaults to `listen`.
    pub advertise: Option<String>,
    /// Where the node keeps its Raft log, snapshots and state.
    pub data_dir: PathBuf,
    /// The initial members. A node with an empty log whose id is the smallest of these
    /// initialises the cluster with all of them as voters; the others wait to be contacted.
    /// Nodes added later (`AddNode`) start with just themselves listed, or none.
    pub members: Vec<MemberConfig>,
    /// Local dial overrides: node id -> the address this node dials for that peer, instead
    /// of the address in the cluster membership (for proxies and tests). TOML keys are
    /// strings, so the ids are written as `2 = "host:port"` and parsed here.
    #[serde(deserialize_with = "peer_map")]
    pub peers: BTreeMap<u64, String>,
    /// File holding the admin bearer token. The token may also come from the
    /// `QUOTAD_ADMIN_TOKEN` environment variable; never from a flag value, which `ps` shows.
    /// Without a token, admin calls are not authenticated (fine on loopback, for `--dev`).
    pub admin_token_file: Option<PathBuf>,
    /// File holding the token gateways present (`authorization: Bearer ...`) on the Gateway
    /// service; or `QUOTAD_GATEWAY_TOKEN`. Without one, gateways are not authenticated.
    pub gateway_token_file: Option<PathBuf>,
    /// Raft timing and log compaction.
    pub raft: RaftConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// The HTTP management API compatible with AWS API Gateway (off unless `listen` is set).
    pub aws_api: AwsApiConfig,
}

/// The AWS API Gateway-compatible REST API (see `rest`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsApiConfig {
    /// Where to serve it (`host:port`); not served when absent.
    pub listen: Option<SocketAddr>,
    /// File of admin access keys that may sign requests (AWS Signature Version 4): CSV
    /// lines `ACCESS_KEY_ID,SECRET_ACCESS_KEY`, optionally under the header line of the
    /// files IAM hands out (`Access key ID,Secret access key`). The secrets are needed in
    /// clear to check signatures, so keep the file readable by quotad only.
    pub access_keys_file: Option<PathBuf>,
    /// Accept requests without checking any signature. Only for `--dev` on loopback.
    pub allow_unsigned: bool,
}

/// One initial member.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u64,
    /// Its advertised address (`host:port`).
    pub addr: String,
}

/// Raft timing and compaction.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Leader heartbeat interval, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout, in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout, in milliseconds.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries applied since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log after a snapshot (so slow followers can catch up without one).
    pub keep_logs_after_snapshot: u64,
    /// Most entries in one replication message.
    pub max_payload_entries: u64,
}

/// Request limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest public gRPC message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Largest node-to-node Raft message, in bytes.
    pub max_raft_message_bytes: usize,
    /// How long a write may wait for a leader and a commit before failing, in milliseconds.
    pub write_timeout_ms: u64,
    /// Most requests served at once per connection.
    pub max_concurrent_requests_per_connection: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            advertise: None,
            data_dir: PathBuf::from("quotad-data"),
            members: Vec::new(),
            peers: BTreeMap::new(),
            admin_token_file: None,
            gateway_token_file: None,
            raft: RaftConfig::default(),
            limits: LimitsConfig::default(),
            aws_api: AwsApiConfig::default(),
        }
    }
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_every_entries: 20_000,
            keep_logs_after_snapshot: 2_000,
            max_payload_entries: 512,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_request_bytes: 1 << 20,
            max_raft_message_bytes: 64 << 20,
            write_timeout_ms: 10_000,
            max_concurrent_requests_per_connection: 1024,
        }
    }
}

/// A configuration that cannot work, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl Config {
    /// Read a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// The single-node development configuration behind `quotad --dev`.
    pub fn dev() -> Config {
        let listen = SocketAddr::from(([127, 0, 0, 1], 7070));
        Config {
            node_id: 1,
            listen,
            data_dir: PathBuf::from(".quotad-dev"),
            members: vec![MemberConfig {
                id: 1,
                addr: listen.to_string(),
            }],
            aws_api: AwsApiConfig {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 7080))),
                access_keys_file: None,
                allow_unsigned: true,
            },
            ..Config::default()
        }
    }

    /// The address others reach this node at.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid("node_id", "must be 1 or more"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if let Some(addr) = &self.advertise {
            check_addr("advertise", addr)?;
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            let field = format!("members[{i}]");
            if m.id == 0 {
                return Err(invalid(&format!("{field}.id"), "must be 1 or more"));
            }
            if !ids.insert(m.id) {
                return Err(invalid(
                    &format!("{field}.id"),
                    format!("node {} is listed twice", m.id),
                ));
            }
            check_addr(&format!("{field}.addr"), &m.addr)?;
        }
        if !self.members.is_empty() && !ids.contains(&self.node_id) {
            return Err(invalid(
                "members",
                format!("does not list this node (node_id = {})", self.node_id),
            ));
        }
        for (id, addr) in &self.peers {
            check_addr(&format!("peers.{id}"), addr)?;
        }
        if let Some(addr) = self.aws_api.listen
            && addr == self.listen
        {
            return Err(invalid("aws_api.listen", "must differ from listen"));
        }
        if self.aws_api.listen.is_some()
            && self.aws_api.access_keys_file.is_none()
            && !self.aws_api.allow_unsigned
        {
            return Err(invalid(
                "aws_api.access_keys_file",
                "is needed to serve aws_api.listen (or set aws_api.allow_unsigned, for development only)",
            ));
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 {
            return Err(invalid("raft.heartbeat_interval_ms", "must be more than 0"));
        }
        if r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                "must be more than raft.heartbeat_interval_ms",
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                "must be more than raft.election_timeout_min_ms",
            ));
        }
        if r.snapshot_every_entries == 0 {
            return Err(invalid(
                "raft.snapshot_every_entries",
                "must be more than 0",
            ));
        }
        if r.max_payload_entries == 0 {
            return Err(invalid("raft.max_payload_entries", "must be more than 0"));
        }
        let l = &self.limits;
        if l.max_request_bytes < 1024 {
            return Err(invalid("limits.max_request_bytes", "must be at least 1024"));
        }
        if l.max_raft_message_bytes < l.max_request_bytes {
            return Err(invalid(
                "limits.max_raft_message_bytes",
                "must be at least limits.max_request_bytes",
            ));
        }
        if l.write_timeout_ms < 100 {
            return Err(invalid("limits.write_timeout_ms", "must be at least 100"));
        }
        if l.max_concurrent_requests_per_connection == 0 {
            return Err(invalid(
                "limits.max_concurrent_requests_per_connection",
                "must be more than 0",
            ));
        }
        Ok(())
    }

    /// The openraft configuration derived from ours.
    pub fn openraft(&self) -> Result<openraft::Config, ConfigError> {
        let r = &self.raft;
        let config = openraft::Config {
            cluster_name: "quotad".into(),
            heartbeat_interval: r.heartbeat_interval_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            max_payload_entries: r.max_payload_entries,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_every_entries),
            max_in_snapshot_log_to_keep: r.keep_logs_after_snapshot,
            install_snapshot_timeout: 2_000,
            ..openraft::Config::default()
        };
        config
            .validate()
            .map_err(|e| invalid("raft", e.to_string()))
    }

    /// The admin token, from `admin_token_file` or the environment; `None` if neither.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        read_token(
            self.admin_token_file.as_deref(),
            ADMIN_TOKEN_ENV,
            "admin_token",
        )
    }

    /// The gateway token, from `gateway_token_file` or the environment; `None` if neither.
    pub fn gateway_token(&self) -> Result<Option<String>, ConfigError> {
        read_token(
            self.gateway_token_file.as_deref(),
            GATEWAY_TOKEN_ENV,
            "gateway_token",
        )
    }
}

/// A bearer token from a file or an environment variable, checked for length and
/// characters. Errors never show the value.
fn read_token(
    file: Option<&std::path::Path>,
    env: &str,
    field: &str,
) -> Result<Option<String>, ConfigError> {
    let token = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        None => std::env::var(env).ok().map(|t| t.trim().to_owned()),
    };
    match token {
        Some(t) if t.len() < MIN_ADMIN_TOKEN_LEN || t.len() > MAX_ADMIN_TOKEN_LEN => Err(invalid(
            field,
            format!(
                "must be {MIN_ADMIN_TOKEN_LEN} to {MAX_ADMIN_TOKEN_LEN} bytes long (the value is not shown)"
            ),
        )),
        Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => Err(invalid(
            field,
            "must be printable ASCII without spaces (the value is not shown)",
        )),
        other => Ok(other),
    }
}

/// Read `[peers]`, whose keys TOML gives as strings, into node ids.
fn peer_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, String>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    raw.into_iter()
        .map(|(id, addr)| {
            id.parse::<u64>()
                .map(|id| (id, addr))
                .map_err(|_| serde::de::Error::custom(format!("peers: `{id}` is not a node id")))
        })
        .collect()
}

fn check_addr(field: &str, addr: &str) -> Result<(), ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(invalid(
            field,
            format!("`{addr}` is not a host:port address"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: defaults and the dev config are valid; each bad field is named.
    // Set-up: one broken field at a time. Pass: validate() names that field.
    #[test]
    fn validation_names_the_field() {
        Config::default().validate().unwrap();
        Config::dev().validate().unwrap();
        Config::dev().openraft().unwrap();
        type Breaker = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(Breaker, &str)> = vec![
            (Box::new(|c| c.node_id = 0), "node_id"),
            (
                Box::new(|c| c.members[0].addr = "nowhere".into()),
                "members[0].addr",
            ),
            (
                Box::new(|c| c.members.push(c.members[0].clone())),
                "members[1].id",
            ),
            (Box::new(|c| c.members[0].id = 9), "members"),
            (
                Box::new(|c| c.raft.election_timeout_max_ms = 1),
                "raft.election_timeout_max_ms",
            ),
            (
                Box::new(|c| c.raft.heartbeat_interval_ms = 0),
                "raft.heartbeat_interval_ms",
            ),
            (
                Box::new(|c| c.limits.max_request_bytes = 1),
                "limits.max_request_bytes",
            ),
            (
                Box::new(|c| {
                    c.peers.insert(2, ":1".into());
                }),
                "peers.2",
            ),
        ];
        for (break_it, field) in cases {
            let mut c = Config::dev();
            break_it(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected {field} to be named, got {other:?}"),
            }
        }
    }

    #[test]
    fn toml_round_trip_and_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(
            &path,
            "node_id = 2\nlisten = \"127.0.0.1:7002\"\ndata_dir = \"d\"\n[[members]]\nid = 2\naddr = \"127.0.0.1:7002\"\n[raft]\nsnapshot_every_entries = 10\n[peers]\n3 = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.raft.snapshot_every_entries, 10);
        assert_eq!(
            c.raft.heartbeat_interval_ms,
            RaftConfig::default().heartbeat_interval_ms
        );
        assert_eq!(c.peers[&3], "127.0.0.1:9");
        c.validate().unwrap();
        std::fs::write(&path, "node_idd = 2\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("node_idd"), "{err}");
    }
}
