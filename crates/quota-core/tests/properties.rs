//! Property tests over random command sequences.
//!
//! Property: at every step of any sequence of commands (valid or not, with time moving by
//! anything from nothing to weeks, and with retried request ids):
//! - admitted (used + reserved) <= limit + extras + reported for every (plan, key, period),
//!   where the limit is the highest in force during that period (an operator may lower it
//!   later; a plan change that moves a counter to another window keeps its period) and
//!   `reported` is the usage gateways reported as admitted at the safe rate
//!   while the cluster was unreachable (`Command::ReportOffline`, the one documented
//!   exception: added without a quota check); every
//!   other admission leaves used + reserved within the limit in force at that moment;
//! - reserved equals the sum of open leases, and every other structural invariant holds;
//! - a refused command changes nothing, and neither does a report whose items are all refused;
//! - a duplicate request id returns the first response and changes nothing;
//! - replaying the same entries gives an identical state;
//! - snapshot -> restore -> continue equals continue.
//!
//! Set-up: small universes of keys, plans, gateways and leases, so that commands often hit
//! existing records and often miss. Pass criterion: every assertion holds for 256 cases.

mod fixture;

use fixture::START;
use proptest::prelude::*;
use quota_core::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    CreateKey(u8),
    DeleteKey(u8),
    SetEnabled(u8, bool),
    Rotate(u8, u64),
    /// Name, limit, period, offset, whether the plan has a safe rate.
    CreatePlan(u8, Option<u64>, u8, u8, bool),
    /// Plan, limit, period, whether the plan has a safe rate.
    UpdatePlan(u8, Option<u64>, u8, bool),
    DeletePlan(u8),
    Attach(u8, u8, u64),
    Detach(u8, u8),
    IncrementPlan(u8, u8, u64),
    IncrementStage(u8, u64),
    Grant(u8, u8, u8, u64),
    Settle(u8, u8, u64, Option<u64>),
    Expire,
    UsageGrant(u8, u8, u64),
    SetRemaining(u8, u8, u64),
    /// A gateway reports (plan, key, used) admitted at the safe rate.
    ReportOffline(u8, u8, u64),
    Advance(u64),
    Retry(usize),
    /// Two commands in one `Command::Batch` entry.
    Batched(Box<Op>, Box<Op>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        9 => simple_op(),
        1 => (simple_op(), simple_op()).prop_map(|(a, b)| Op::Batched(Box::new(a), Box::new(b))),
    ]
}

fn simple_op() -> impl Strategy<Value = Op> {
    let limit = prop_oneof![Just(None), (1u64..60).prop_map(Some)];
    prop_oneof![
        2 => (0u8..5).prop_map(Op::CreateKey),
        1 => (0u8..6).prop_map(Op::DeleteKey),
        1 => (0u8..6, any::<bool>()).prop_map(|(k, e)| Op::SetEnabled(k, e)),
        1 => (0u8..6, prop_oneof![Just(0u64), Just(2_000)]).prop_map(|(k, g)| Op::Rotate(k, g)),
        2 => (0u8..4, limit.clone(), 0u8..3, 0u8..3, any::<bool>())
            .prop_map(|(n, l, p, o, s)| Op::CreatePlan(n, l, p, o, s)),
        1 => (0u8..5, limit, 0u8..3, any::<bool>()).prop_map(|(p, l, d, s)| Op::UpdatePlan(p, l, d, s)),
        1 => (0u8..5).prop_map(Op::DeletePlan),
        3 => (0u8..5, 0u8..6, 0u64..4).prop_map(|(p, k, x)| Op::Attach(p, k, x)),
        1 => (0u8..5, 0u8..6).prop_map(|(p, k)| Op::Detach(p, k)),
        6 => (0u8..5, 0u8..6, 1u64..8).prop_map(|(p, k, c)| Op::IncrementPlan(p, k, c)),
        4 => (0u8..6, 1u64..8).prop_map(|(k, c)| Op::IncrementStage(k, c)),
        6 => (0u8..3, 0u8..5, 0u8..6, 1u64..30).prop_map(|(g, p, k, w)| Op::Grant(g, p, k, w)),
        6 => (0u8..3, 0u8..40, 0u64..100, prop_oneof![Just(None), (1u64..30).prop_map(Some)])
            .prop_map(|(g, l, s, r)| Op::Settle(g, l, s, r)),
        2 => Just(Op::Expire),
        1 => (0u8..5, 0u8..6, 1u64..10).prop_map(|(p, k, x)| Op::UsageGrant(p, k, x)),
        1 => (0u8..5, 0u8..6, 0u64..20).prop_map(|(p, k, r)| Op::SetRemaining(p, k, r)),
        // Mostly the first plans and keys, which exist in most sequences.
        5 => (0u8..3, 0u8..3, 0u64..25).prop_map(|(p, k, u)| Op::ReportOffline(p, k, u)),
        4 => prop_oneof![
            Just(0u64),
            Just(700),
            Just(5_000),
            Just(3_600_000),
            Just(86_400_000),
            Just(8 * 86_400_000),
            Just(31 * 86_400_000),
        ]
        .prop_map(Op::Advance),
        2 => any::<usize>().prop_map(Op::Retry),
    ]
}

/// Turns ops into entries. Secrets are derived from the key index so runs are repeatable.
struct Driver {
    now: u64,
    request: u128,
    rotations: u64,
    entries: Vec<Entry>,
}

impl Driver {
    fn secret(&mut self, k: u8) -> SecretDigest {
        self.rotations += 1;
        let s = Secret::import(&format!("property-test-secret-{k}-{}", self.rotations)).unwrap();
        SecretDigest::of(&s)
    }

    fn plan_spec(n: u8, limit: Option<u64>, period: u8, offset: u8, safe: bool) -> PlanSpec {
        let mut raw = RawPlanSpec::named(Name::new(format!("plan{n}")).unwrap());
        raw.safe_rate = if safe { 2.0 } else { 0.0 };
        raw.stages.insert(ApiStage::new("api", "prod").unwrap());
        raw.quota = limit.map(|limit| {
            QuotaSpec::try_from(RawQuota {
                limit,
                period: [PeriodUnit::Day, PeriodUnit::Week, PeriodUnit::Month][period as usize % 3],
                offset: u64::from(offset).min(limit - 1),
                ..RawQuota::default()
            })
            .unwrap()
        });
        PlanSpec::try_from(raw).unwrap()
    }

    /// The entry for an op, or `None` for ops that only move time or retry.
    fn command(&mut self, op: &Op) -> Option<Command> {
        let key = |k: u8| KeyId(u64::from(k) + 1);
        let plan = |p: u8| PlanId(u64::from(p) + 1);
        let gw = |g: u8| GatewayId::new(format!("gw{g}")).unwrap();
        Some(match op.clone() {
            Op::CreateKey(n) => Command::KeyCreate {
                spec: KeySpec::named(Name::new(format!("key{n}")).unwrap()),
                secret: self.secret(n),
            },
            Op::DeleteKey(k) => Command::KeyDelete { key: key(k) },
            Op::SetEnabled(k, enabled) => Command::KeySetEnabled {
                key: key(k),
                enabled,
            },
            Op::Rotate(k, grace_ms) => Command::KeyRotate {
                key: key(k),
                secret: self.secret(k),
                grace_ms,
            },
            Op::CreatePlan(n, l, p, o, safe) => Command::PlanCreate {
                spec: Self::plan_spec(n, l, p, o, safe),
            },
            Op::UpdatePlan(p, l, d, safe) => Command::PlanUpdate {
                plan: plan(p),
                spec: Self::plan_spec(p + 10, l, d, 0, safe),
            },
            Op::DeletePlan(p) => Command::PlanDelete { plan: plan(p) },
            Op::Attach(p, k, x) => Command::Attach {
                plan: plan(p),
                key: key(k),
                extra_per_period: Extra::new(x).unwrap(),
            },
            Op::Detach(p, k) => Command::Detach {
                plan: plan(p),
                key: key(k),
            },
            Op::IncrementPlan(p, k, c) => Command::Increment {
                key: KeyRef::Id(key(k)),
                target: Target::Plan(plan(p)),
                cost: Cost::new(c).unwrap(),
            },
            Op::IncrementStage(k, c) => Command::Increment {
                key: KeyRef::Id(key(k)),
                target: Target::Stage(ApiStage::new("api", "prod").unwrap()),
                cost: Cost::new(c).unwrap(),
            },
            Op::Grant(g, p, k, want) => Command::Leases {
                gateway: gw(g),
                ops: vec![LeaseOp::Grant {
                    plan: plan(p),
                    key: key(k),
                    want,
                    ttl_ms: 3_000,
                }],
            },
            Op::Settle(g, l, spent_pct, renew) => Command::Leases {
                gateway: gw(g),
                ops: vec![LeaseOp::Settle {
                    lease: LeaseId(u64::from(l) + 1),
                    // Percent of 30 units; above the grant sometimes, to hit that error.
                    spent: spent_pct * 30 / 100,
                    renew,
                    ttl_ms: 3_000,
                }],
            },
            Op::Expire => Command::ExpireLeases,
            Op::UsageGrant(p, k, x) => Command::UsageGrant {
                plan: plan(p),
                key: key(k),
                extra: Extra::new(x).unwrap(),
            },
            Op::SetRemaining(p, k, r) => Command::UsageSetRemaining {
                plan: plan(p),
                key: key(k),
                remaining: r,
            },
            Op::ReportOffline(p, k, used) => Command::ReportOffline {
                gateway: gw(0),
                usage: vec![OfflineUsage {
                    plan: plan(p),
                    key: key(k),
                    used,
                }],
            },
            Op::Batched(a, b) => {
                let mut items = Vec::new();
                for op in [a, b] {
                    if let Some(command) = self.command(&op) {
                        self.request += 1;
                        items.push(BatchItem {
                            request_id: Some(RequestId(self.request)),
                            command,
                        });
                    }
                }
                Command::Batch(items)
            }
            Op::Advance(_) | Op::Retry(_) => return None,
        })
    }
}

/// What the model knows of one (key, plan) counter since it last started from zero.
#[derive(Debug)]
struct Books {
    /// The counter's window, as last seen.
    window: Window,
    /// The highest limit in force on it (`u64::MAX` for a plan without a quota).
    highest: u64,
    /// Usage accepted from reports of admissions at the safe rate.
    reported: u64,
}

type Model = BTreeMap<(KeyId, PlanId), Books>;

impl Books {
    fn new(window: Window) -> Books {
        Books {
            window,
            highest: 0,
            reported: 0,
        }
    }

    /// Follow the counter to `window`. One that starts at or after the old one's end is a
    /// new period: the counter started from zero. An overlapping one is the same counter
    /// moved by a plan change (usage kept, admitted under the old limits). A new period
    /// that starts earlier (the plan's period grew at the rollover) is taken for a move:
    /// the bound is then looser, never wrong.
    fn follow(&mut self, window: Window) {
        if self.window != window {
            if window.start >= self.window.end {
                self.highest = 0;
                self.reported = 0;
            }
            self.window = window;
        }
    }
}

/// Before a command: the highest limit in force on each counter so far.
fn record_limits(state: &State, model: &mut Model) {
    for (key, plan, counter) in state.counters() {
        // A plan without a quota admits without limit: record that as the highest limit.
        let limit = state.counter_limit(key, plan).unwrap_or(u64::MAX);
        let books = model
            .entry((key, plan))
            .or_insert_with(|| Books::new(counter.window));
        books.follow(counter.window);
        books.highest = books.highest.max(limit);
    }
}

/// After a command: the limits its answers show in force (a batch may create a counter and
/// change its plan in one entry, unseen by [`record_limits`]), and the usage it accepted
/// from reports of admissions at the safe rate.
fn account_response(command: &Command, response: &Response, model: &mut Model) {
    fn books<'a>(model: &'a mut Model, u: &Usage) -> &'a mut Books {
        let books = model
            .entry((u.key, u.plan))
            .or_insert_with(|| Books::new(u.window));
        books.follow(u.window);
        books.highest = books.highest.max(u.limit.unwrap_or(u64::MAX));
        books
    }
    match (command, response) {
        (Command::Batch(items), Ok(Outcome::Batch(responses))) => {
            for (item, response) in items.iter().zip(responses) {
                account_response(&item.command, response, model);
            }
        }
        (Command::ReportOffline { usage, .. }, Ok(Outcome::OfflineUsage(results))) => {
            for (item, result) in usage.iter().zip(results) {
                if let Ok(u) = result {
                    books(model, u).reported += item.used;
                }
            }
        }
        (_, Ok(Outcome::Increment(r))) if r.allowed() => {
            for u in &r.usage {
                books(model, u);
            }
        }
        (_, Ok(Outcome::Leases(results))) => {
            for r in results {
                if let LeaseResult::Granted { usage, .. } = r {
                    books(model, usage);
                }
            }
        }
        (_, Ok(Outcome::Usage(u))) => {
            books(model, u);
        }
        _ => {}
    }
}

/// After a command: follow every counter to its window, and forget removed ones.
fn follow_counters(state: &State, model: &mut Model) {
    let windows: BTreeMap<(KeyId, PlanId), Window> = state
        .counters()
        .map(|(k, p, c)| ((k, p), c.window))
        .collect();
    model.retain(|pair, books| match windows.get(pair) {
        Some(window) => {
            books.follow(*window);
            true
        }
        None => false,
    });
}

fn check_admissions(state: &State, model: &Model) -> Result<(), TestCaseError> {
    for (key, plan, counter) in state.counters() {
        let Some(limit) = state.counter_limit(key, plan) else {
            continue;
        };
        let (highest, reported) = model
            .get(&(key, plan))
            .map_or((limit, 0), |b| (b.highest.max(limit), b.reported));
        prop_assert!(
            counter.committed() <= highest.saturating_add(reported),
            "{plan}/{key}: used {} + reserved {} > limit {highest} + reported {reported}",
            counter.used,
            counter.reserved
        );
    }
    Ok(())
}

/// Every admission in a response left used + reserved within the limit of that moment.
fn check_response(response: &Response) -> Result<(), TestCaseError> {
    let mut usages = Vec::new();
    match response {
        Ok(Outcome::Batch(responses)) => {
            for r in responses {
                check_response(r)?;
            }
        }
        Ok(Outcome::Increment(r)) if r.allowed() => usages.extend(r.usage.iter().copied()),
        Ok(Outcome::Leases(results)) => {
            for r in results {
                if let LeaseResult::Granted { usage, lease } = r {
                    prop_assert!(lease.granted > 0);
                    prop_assert!(lease.expires_at <= lease.window.end);
                    usages.push(*usage);
                }
            }
        }
        _ => {}
    }
    for u in usages {
        if let Some(limit) = u.limit {
            prop_assert!(
                u.used + u.reserved <= limit,
                "admitted past the limit: {u:?}"
            );
        }
    }
    Ok(())
}

fn run(ops: &[Op], split: usize) -> Result<(), TestCaseError> {
    let mut driver = Driver {
        now: START,
        request: 0,
        rotations: 0,
        entries: Vec::new(),
    };
    let mut state = State::new();
    let mut responses: Vec<Response> = Vec::new();
    let mut model = Model::new();
    for op in ops {
        record_limits(&state, &mut model);
        let entry = match op {
            Op::Advance(ms) => {
                driver.now += ms;
                continue;
            }
            Op::Retry(i) => {
                if driver.entries.is_empty() {
                    continue;
                }
                let i = i % driver.entries.len();
                let first = responses[i].clone();
                let retry = Entry {
                    at: Timestamp(driver.now),
                    ..driver.entries[i].clone()
                };
                let before = state.clone();
                let again = state.apply(&retry);
                prop_assert_eq!(&again, &first, "a retry answered differently");
                prop_assert_eq!(&state, &before, "a retry changed the state");
                driver.entries.push(retry);
                responses.push(again);
                continue;
            }
            op => {
                let command = driver.command(op).expect("an op with a command");
                driver.request += 1;
                Entry {
                    request_id: Some(RequestId(driver.request)),
                    at: Timestamp(driver.now),
                    command,
                }
            }
        };
        // What the same command does without a request id, against a copy: if refused, the
        // copy must equal the old state with only the clock moved.
        let mut probe = state.clone();
        let probe_response = probe.apply(&Entry {
            request_id: None,
            ..entry.clone()
        });
        let all_items_refused = matches!(
            &probe_response,
            Ok(Outcome::OfflineUsage(results)) if results.iter().all(Result::is_err)
        );
        if probe_response.is_err() || all_items_refused {
            let mut clock_only = state.clone();
            let _ = clock_only.apply(&Entry {
                request_id: None,
                at: entry.at,
                command: Command::Noop,
            });
            prop_assert_eq!(&probe, &clock_only, "a refused command changed the state");
        }
        let response = state.apply(&entry);
        prop_assert_eq!(&response, &probe_response);
        state.check_invariants().map_err(TestCaseError::fail)?;
        check_response(&response)?;
        account_response(&entry.command, &response, &mut model);
        follow_counters(&state, &mut model);
        check_admissions(&state, &model)?;
        driver.entries.push(entry);
        responses.push(response);
    }

    // Replay gives an identical state.
    let mut replayed = State::new();
    for (entry, response) in driver.entries.iter().zip(&responses) {
        prop_assert_eq!(&replayed.apply(entry), response);
    }
    prop_assert_eq!(&replayed, &state);
    prop_assert_eq!(
        snapshot::encode(&replayed).unwrap(),
        snapshot::encode(&state).unwrap()
    );

    // Snapshot -> restore -> continue equals continue.
    let split = split % (driver.entries.len() + 1);
    let mut continued = State::new();
    for entry in &driver.entries[..split] {
        let _ = continued.apply(entry);
    }
    let mut restored = snapshot::decode(&snapshot::encode(&continued).unwrap()).unwrap();
    prop_assert_eq!(&restored, &continued);
    for entry in &driver.entries[split..] {
        prop_assert_eq!(restored.apply(entry), continued.apply(entry));
    }
    prop_assert_eq!(&restored, &state);
    Ok(())
}

/// Two plans (p1 daily, limit 20, with a safe rate; p2 weekly, limit 30, without) and two
/// keys (k1, k2) attached to both: a start where most reports and increments hit existing
/// records, so reports often push a counter past its limit.
fn populated() -> Vec<Op> {
    vec![
        Op::CreatePlan(0, Some(20), 0, 0, true),
        Op::CreatePlan(1, Some(30), 1, 0, false),
        Op::CreateKey(0),
        Op::CreateKey(1),
        Op::Attach(0, 0, 0),
        Op::Attach(0, 1, 0),
        Op::Attach(1, 0, 0),
        Op::Attach(1, 1, 0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences(ops in prop::collection::vec(op(), 1..160), split in any::<usize>()) {
        run(&ops, split)?;
    }

    // The same properties from a populated start, where reports of usage admitted at the
    // safe rate are mostly accepted and often exceed the limit.
    #[test]
    fn random_command_sequences_from_a_populated_start(
        ops in prop::collection::vec(op(), 1..120),
        split in any::<usize>(),
    ) {
        let mut all = populated();
        all.extend(ops);
        run(&all, split)?;
    }
}
