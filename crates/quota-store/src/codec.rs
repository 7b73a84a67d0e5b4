//! How values become bytes in sled: log keys, bincode settings, and the size limits that
//! every decoder enforces before it allocates anything.

use crate::error::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest encoded log entry, in bytes. quota-core's own limits keep real commands far
/// below this (the largest, a batch of 1024 lease operations, is a few tens of KiB); the
/// server must refuse to propose anything larger, because a replica cannot store it.
pub const MAX_LOG_ENTRY_BYTES: usize = 16 * 1024 * 1024;

/// Largest small metadata record (vote, committed or purged log id, snapshot meta), in bytes.
/// A membership of a few hundred nodes fits with room to spare.
pub const MAX_META_BYTES: usize = 1024 * 1024;

/// Largest snapshot of the state machine, in bytes. A snapshot is held in memory whole
/// (openraft 0.9 moves it as a `Cursor<Vec<u8>>`), so this bounds that allocation.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Most log entries one read returns from `limited_get_log_entries`, so one replication
/// batch never reads the whole log into memory.
pub const MAX_ENTRIES_PER_READ: u64 = 4096;

/// Most encoded bytes one `limited_get_log_entries` call gathers (it always returns at
/// least one entry).
pub const MAX_BYTES_PER_READ: usize = 32 * 1024 * 1024;

/// The key of log entry `index`: big-endian, so sled's byte order is index order.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index a log key holds.
pub(crate) fn log_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes, not 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Encode `value` with bincode's standard configuration, refusing results over `max` bytes
/// (a value we could write but never read back must not be written).
pub(crate) fn encode<T: Serialize>(
    what: &'static str,
    value: &T,
    max: usize,
) -> Result<Vec<u8>, StoreError> {
    let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|error| StoreError::Encode { what, error })?;
    if bytes.len() > max {
        return Err(StoreError::TooLarge {
            what,
            len: bytes.len() as u64,
            max: max as u64,
        });
    }
    Ok(bytes)
}

/// Decode a value of at most `MAX` bytes written by [`encode`]. The limit is checked on the
/// input length first and then again by bincode, so a corrupt length prefix cannot make it
/// allocate more than `MAX` bytes. Trailing bytes are corruption, not padding.
pub(crate) fn decode<T: DeserializeOwned, const MAX: usize>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    if bytes.len() > MAX {
        return Err(StoreError::TooLarge {
            what,
            len: bytes.len() as u64,
            max: MAX as u64,
        });
    }
    let config = bincode::config::standard().with_limit::<MAX>();
    let (value, read) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|error| StoreError::Decode { what, error })?;
    if read != bytes.len() {
        return Err(StoreError::Corrupt(format!(
            "{what} has {} trailing bytes",
            bytes.len() - read
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: log keys sort like the indexes they encode, and decode back to them.
    // Set-up: a handful of indexes around byte boundaries.
    // Pass: byte order equals numeric order and every key round-trips.
    #[test]
    fn log_keys_sort_by_index() {
        let indexes = [0u64, 1, 255, 256, 65_535, 65_536, u64::MAX - 1, u64::MAX];
        for pair in indexes.windows(2) {
            assert!(log_key(pair[0]) < log_key(pair[1]));
        }
        for i in indexes {
            assert_eq!(log_index(&log_key(i)).unwrap(), i);
        }
        assert!(log_index(&[1, 2, 3]).is_err());
    }

    // Property: a decoder refuses input longer than its limit, and a length prefix that
    // claims more than the limit, without allocating it.
    // Set-up: a 64-byte vector decoded with a 16-byte limit; a forged prefix claiming 2^40
    // bytes in a short input.
    // Pass: both decodes fail; a fitting value round-trips.
    #[test]
    fn decode_refuses_absurd_sizes() {
        let big = encode("test", &vec![7u8; 64], 1024).unwrap();
        assert!(matches!(
            decode::<Vec<u8>, 16>("test", &big),
            Err(StoreError::TooLarge { .. })
        ));

        // bincode varint: 253 announces a u64 length in the next 8 bytes.
        let mut forged = vec![253u8];
        forged.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<Vec<u8>, 1024>("test", &forged).is_err());

        let small = encode("test", &vec![1u8, 2, 3], 1024).unwrap();
        assert_eq!(
            decode::<Vec<u8>, 1024>("test", &small).unwrap(),
            vec![1, 2, 3]
        );
        assert!(encode("test", &vec![0u8; 64], 16).is_err());
    }
}
