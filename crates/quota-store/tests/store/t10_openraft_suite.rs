use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use quota_store::{LogStore, NodeId, StateMachineStore, TypeConfig};
use tempfile::TempDir;

/// Opens a fresh store in a new temporary directory; the directory lives as long as the
/// test that uses the store.
struct FreshStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for FreshStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = TempDir::new()
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let (log, sm) = quota_store::open(dir.path()).await?;
        Ok((dir, log, sm))
    }
}

// Property: our log store and state machine meet openraft's storage contract (log reads,
// appends, truncation, purge, vote, committed, applied state, membership, snapshots).
// Set-up: openraft 0.9.25's own `testing::Suite`, each case on a fresh temporary store.
// Pass: every case of the suite returns Ok (a failed case panics or returns an error).
#[test]
fn openraft_storage_suite() {
    Suite::test_all(FreshStore).expect("openraft's storage suite");
}
