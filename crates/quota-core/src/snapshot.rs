//! Snapshots: the whole [`State`] as bytes, with a magic number and a format version, so a
//! node refuses a snapshot it does not understand instead of misreading it.

use crate::state::State;

/// Bumped whenever the serialised shape of [`State`] changes.
///
/// - 2: plans have a `safe_rate`.
/// - 3: responses in the deduplication table may hold [`crate::Outcome::OfflineUsage`] (a
///   variant appended after the existing ones). A build that reads only 2 would fail on it,
///   so it must refuse a 3 by its version.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 3;
/// The oldest version this build reads. Every version-2 snapshot is also a valid version-3
/// encoding (3 only added enum variants at the end, and bincode encodes a variant by its
/// position), so a node upgraded from 2 still restores its last snapshot.
pub const OLDEST_READABLE_SNAPSHOT_FORMAT: u32 = 2;
const MAGIC: &[u8; 8] = b"QUOTASNP";

/// A snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a quotad snapshot (bad magic number)")]
    BadMagic,
    #[error(
        "snapshot format version {found} is not supported (this build reads {OLDEST_READABLE_SNAPSHOT_FORMAT} to {SNAPSHOT_FORMAT_VERSION})"
    )]
    UnsupportedVersion { found: u32 },
    #[error("snapshot encoding failed: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("snapshot is corrupt: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("snapshot is corrupt: {0}")]
    Invariant(String),
    #[error("snapshot has {0} trailing bytes")]
    TrailingBytes(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Serialise the state.
pub fn encode(state: &State) -> Result<Vec<u8>, SnapshotError> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    bincode::serde::encode_into_std_write(state, &mut out, config())?;
    Ok(out)
}

/// Restore a state from [`encode`]'s output (of this version or an older readable one),
/// rebuilding its indexes and checking its invariants.
pub fn decode(bytes: &[u8]) -> Result<State, SnapshotError> {
    let header = MAGIC.len() + 4;
    if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[MAGIC.len()..header]);
    let found = u32::from_le_bytes(version);
    if !(OLDEST_READABLE_SNAPSHOT_FORMAT..=SNAPSHOT_FORMAT_VERSION).contains(&found) {
        return Err(SnapshotError::UnsupportedVersion { found });
    }
    let (mut state, read): (State, usize) =
        bincode::serde::decode_from_slice(&bytes[header..], config())?;
    if read != bytes.len() - header {
        return Err(SnapshotError::TrailingBytes(bytes.len() - header - read));
    }
    state.rebuild_indexes();
    state.check_invariants().map_err(SnapshotError::Invariant)?;
    Ok(state)
}
