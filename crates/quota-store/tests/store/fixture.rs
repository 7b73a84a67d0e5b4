//! Shared helpers: log entries, a realistic command sequence, and store opening.

use openraft::{CommittedLeaderId, EntryPayload};
use quota_core::{
    ApiStage, Command, Cost, Entry, Extra, KeyId, KeyRef, KeySpec, Name, Outcome, PeriodUnit,
    PlanId, PlanSpec, QuotaSpec, RawPlanSpec, RequestId, SecretDigest, SecretHash, State, Target,
    Timestamp,
};
use quota_store::{LogEntry, LogId, LogStore, Membership, StateMachineStore};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// 2024-03-05T12:00:00Z, in milliseconds.
pub const NOON: Timestamp = Timestamp(1_709_640_000_000);

pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

pub fn normal(term: u64, index: u64, entry: Entry) -> LogEntry {
    LogEntry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(entry),
    }
}

pub fn blank(term: u64, index: u64) -> LogEntry {
    LogEntry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

pub fn membership(term: u64, index: u64, voters: &[u64]) -> LogEntry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    let nodes: BTreeMap<u64, openraft::BasicNode> = voters
        .iter()
        .map(|&id| {
            (
                id,
                openraft::BasicNode::new(format!("127.0.0.1:{}", 7000 + id)),
            )
        })
        .collect();
    LogEntry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    }
}

/// The ids a [`commands`] sequence creates.
pub struct Ids {
    pub plan: PlanId,
    pub key: KeyId,
}

/// A realistic sequence of commands: a plan with a daily quota of 100 on `api/prod`, a
/// key, an attachment, and `increments` increments of cost 3 (one repeated with the same
/// request id, to exercise deduplication). Ids are learned by applying to a scratch state,
/// as the leader's clients would learn them from responses.
pub fn commands(increments: u64) -> (Vec<Entry>, Ids) {
    let mut scratch = State::new();
    let mut entries = Vec::new();
    let mut push = |command: Command, request: u128, at: Timestamp| {
        let entry = Entry {
            request_id: Some(RequestId(request)),
            at,
            command,
        };
        let response = scratch.apply(&entry);
        entries.push(entry);
        response
    };

    let mut raw = RawPlanSpec::named(Name::new("gold").expect("valid name"));
    raw.quota = Some(QuotaSpec::new(100, PeriodUnit::Day).expect("valid quota"));
    raw.stages
        .insert(ApiStage::new("orders", "prod").expect("valid stage"));
    let spec = PlanSpec::try_from(raw).expect("valid plan");
    let plan = match push(Command::PlanCreate { spec }, 1, NOON) {
        Ok(Outcome::Plan(p)) => p.id,
        other => panic!("plan create answered {other:?}"),
    };

    let secret = SecretDigest {
        hash: SecretHash::of(b"qdk_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"),
        prefix: "qdk_0123".into(),
    };
    let key_spec = KeySpec::named(Name::new("checkout-service").expect("valid name"));
    let key = match push(
        Command::KeyCreate {
            spec: key_spec,
            secret,
        },
        2,
        NOON.plus_millis(1),
    ) {
        Ok(Outcome::Key(k)) => k.id,
        other => panic!("key create answered {other:?}"),
    };

    let attach = Command::Attach {
        plan,
        key,
        extra_per_period: Extra::new(0).expect("valid extra"),
    };
    assert!(push(attach, 3, NOON.plus_millis(2)).is_ok());

    for i in 0..increments {
        let increment = Command::Increment {
            key: KeyRef::Id(key),
            target: Target::Plan(plan),
            cost: Cost::new(3).expect("valid cost"),
        };
        // The last increment reuses the previous request id: a retry, applied once.
        let request = if i + 1 == increments && i > 0 {
            100 + u128::from(i) - 1
        } else {
            100 + u128::from(i)
        };
        assert!(push(increment, request, NOON.plus_millis(10 + i)).is_ok());
    }
    (entries, Ids { plan, key })
}

/// The state reached by applying `entries` to an empty state.
pub fn state_after(entries: &[Entry]) -> State {
    let mut state = State::new();
    for e in entries {
        let _ = state.apply(e);
    }
    state
}

pub async fn open(path: &Path) -> (LogStore, StateMachineStore) {
    quota_store::open(path).await.expect("open the store")
}
