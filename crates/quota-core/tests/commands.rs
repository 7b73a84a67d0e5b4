//! Every command's success and each of its refusals, one test per area.
//! Each test: the property, the set-up, and the pass criterion in its leading comment.

mod fixture;

use fixture::*;
use quota_core::*;

fn spec(name: &str) -> KeySpec {
    KeySpec::named(Name::new(name).unwrap())
}

// Property: keys are created and imported with only the hash and prefix of the secret;
// names and secrets are unique. Set-up: create, import, then conflicting creates.
// Pass: records as expected; conflicts are refused and change nothing.
#[test]
fn key_create_and_import() {
    let mut fx = Fx::new();
    let (id, secret) = fx.key("alpha");
    let key = fx.state.get_key(id).unwrap().clone();
    assert_eq!(key.secret.hash, secret.hash());
    assert_eq!(key.secret.prefix, &secret.expose()[..8]);
    assert!(!key.imported && key.spec.enabled);
    assert!(!format!("{key:?}").contains(&secret.expose()[4..]));

    let imported = Secret::import("imported-secret-0123456789").unwrap();
    let out = fx.ok(Command::KeyImport {
        spec: spec("beta"),
        secret: SecretDigest::of(&imported),
    });
    let Outcome::Key(beta) = out else { panic!() };
    assert!(beta.imported);
    assert_eq!(
        fx.state
            .key_by_hash(&imported.hash(), Timestamp(fx.now))
            .unwrap()
            .id,
        beta.id
    );
    assert_eq!(fx.state.key_by_name("beta").unwrap().id, beta.id);

    let e = fx.err(Command::KeyCreate {
        spec: spec("alpha"),
        secret: SecretDigest::of(&Secret::generate().unwrap()),
    });
    assert!(
        matches!(
            e,
            ApplyError::Conflict {
                entity: Entity::Key,
                ..
            }
        ),
        "{e}"
    );
    let e = fx.err(Command::KeyImport {
        spec: spec("gamma"),
        secret: SecretDigest::of(&imported),
    });
    assert!(matches!(e, ApplyError::Conflict { .. }), "{e}");
    assert!(!e.to_string().contains(imported.expose()));
}

// Property: updates change only the fields given; enable/disable toggles; bad references
// are refused. Set-up: two keys. Pass: fields as patched; conflicts and unknown ids refused.
#[test]
fn key_update_enable_disable() {
    let mut fx = Fx::new();
    let (a, _) = fx.key("a");
    fx.key("b");
    let out = fx.ok(Command::KeyUpdate {
        key: a,
        patch: KeyPatch {
            name: Some(Name::new("a2").unwrap()),
            owner: Some(Some(Owner::new("customer-1").unwrap())),
            expires_at: Some(Some(Timestamp(fx.now + DAY_MS))),
            tags: Some(Tags::from_pairs([("team", "x")]).unwrap()),
            ..KeyPatch::default()
        },
    });
    let Outcome::Key(k) = out else { panic!() };
    assert_eq!(k.spec.name.as_str(), "a2");
    assert_eq!(k.spec.owner.as_ref().unwrap().as_str(), "customer-1");
    assert_eq!(k.spec.tags.len(), 1);
    assert!(k.spec.enabled);
    assert!(fx.state.key_by_name("a").is_none());
    assert_eq!(fx.state.key_by_name("a2").unwrap().id, a);

    let e = fx.err(Command::KeyUpdate {
        key: a,
        patch: KeyPatch {
            name: Some(Name::new("b").unwrap()),
            ..KeyPatch::default()
        },
    });
    assert!(matches!(e, ApplyError::Conflict { .. }));
    let e = fx.err(Command::KeyUpdate {
        key: KeyId(99),
        patch: KeyPatch::default(),
    });
    assert_eq!(e, ApplyError::not_found(Entity::Key, "k99"));

    fx.ok(Command::KeySetEnabled {
        key: a,
        enabled: false,
    });
    assert!(!fx.state.get_key(a).unwrap().spec.enabled);
    fx.ok(Command::KeySetEnabled {
        key: a,
        enabled: true,
    });
    assert!(fx.state.get_key(a).unwrap().spec.enabled);
    let e = fx.err(Command::KeySetEnabled {
        key: KeyId(42),
        enabled: true,
    });
    assert!(matches!(e, ApplyError::NotFound { .. }));
}

// Property: after a rotation the new secret works at once, the old one until the grace
// period ends and never after. Set-up: a key in a plan; rotate with a 60 s grace.
// Pass: increments by hash succeed or are refused as described.
#[test]
fn key_rotate() {
    let mut fx = Fx::new();
    let plan = fx.plan("p", Some(100), PeriodUnit::Day);
    let (key, old) = fx.key("k");
    fx.attach(plan, key);
    let new = Secret::generate().unwrap();
    fx.ok(Command::KeyRotate {
        key,
        secret: SecretDigest::of(&new),
        grace_ms: 60_000,
    });
    assert!(fx.incr_stage(&new, 1).allowed());
    assert!(fx.incr_stage(&old, 1).allowed());
    fx.advance(60_000);
    assert_eq!(fx.incr_stage(&old, 1).denial, Some(Denial::UnknownKey));
    assert!(fx.incr_stage(&new, 1).allowed());

    // Rotating without grace retires the old secret at once.
    let newer = Secret::generate().unwrap();
    fx.ok(Command::KeyRotate {
        key,
        secret: SecretDigest::of(&newer),
        grace_ms: 0,
    });
    assert_eq!(fx.incr_stage(&new, 1).denial, Some(Denial::UnknownKey));

    let e = fx.err(Command::KeyRotate {
        key,
        secret: SecretDigest::of(&Secret::generate().unwrap()),
        grace_ms: limits::MAX_ROTATION_GRACE_MS + 1,
    });
    assert!(e.to_string().contains("grace_ms"), "{e}");
    let e = fx.err(Command::KeyRotate {
        key,
        secret: SecretDigest::of(&newer),
        grace_ms: 0,
    });
    assert!(matches!(e, ApplyError::Conflict { .. }));
    let e = fx.err(Command::KeyRotate {
        key: KeyId(7),
        secret: SecretDigest::of(&Secret::generate().unwrap()),
        grace_ms: 0,
    });
    assert!(matches!(e, ApplyError::NotFound { .. }));
}

// Property: deleting a key removes it with its associations, counters and leases.
// Set-up: a key in a plan with usage and a lease. Pass: all gone; second delete refused.
#[test]
fn key_delete() {
    let mut fx = Fx::new();
    let plan = fx.plan("p", Some(100), PeriodUnit::Day);
    let (key, secret) = fx.key("k");
    fx.attach(plan, key);
    fx.incr(key, plan, 5);
    fx.grant("gw", plan, key, 10);
    fx.ok(Command::KeyDelete { key });
    assert!(fx.state.get_key(key).is_none());
    assert!(fx.state.association(plan, key).is_none());
    assert_eq!(fx.state.open_leases(), 0);
    assert_eq!(fx.state.counters().count(), 0);
    assert!(
        fx.state
            .key_by_hash(&secret.hash(), Timestamp(fx.now))
            .is_none()
    );
    let e = fx.err(Command::KeyDelete { key });
    assert!(matches!(e, ApplyError::NotFound { .. }));
    // The name is free again.
    fx.key("k");
}

// Property: plans are created with unique names, updated in place, deleted with their
// associations. Set-up: two plans and a key. Pass: as described; bad references refused.
#[test]
fn plan_lifecycle() {
    let mut fx = Fx::new();
    let p = fx.plan("basic", Some(10), PeriodUnit::Day);
    fx.plan("gold", None, PeriodUnit::Day);
    let dup = PlanSpec::try_from(RawPlanSpec::named(Name::new("basic").unwrap())).unwrap();
    let e = fx.err(Command::PlanCreate { spec: dup.clone() });
    assert!(matches!(
        e,
        ApplyError::Conflict {
            entity: Entity::Plan,
            ..
        }
    ));

    let mut raw = RawPlanSpec::named(Name::new("basic-v2").unwrap());
    raw.quota = Some(QuotaSpec::new(20, PeriodUnit::Week).unwrap());
    raw.throttle = Some(Throttle::new(5.0, 10).unwrap());
    raw.route_throttles.insert(
        Route::new("GET /users/{id}").unwrap(),
        Throttle::new(1.0, 1).unwrap(),
    );
    let Outcome::Plan(updated) = fx.ok(Command::PlanUpdate {
        plan: p,
        spec: PlanSpec::try_from(raw).unwrap(),
    }) else {
        panic!()
    };
    assert_eq!(updated.spec.quota().unwrap().limit(), 20);
    assert_eq!(fx.state.plan_by_name("basic-v2").unwrap().id, p);
    assert!(fx.state.plan_by_name("basic").is_none());
    let gold = PlanSpec::try_from(RawPlanSpec::named(Name::new("gold").unwrap())).unwrap();
    let e = fx.err(Command::PlanUpdate {
        plan: p,
        spec: gold,
    });
    assert!(matches!(e, ApplyError::Conflict { .. }));
    let e = fx.err(Command::PlanUpdate {
        plan: PlanId(77),
        spec: dup,
    });
    assert!(matches!(
        e,
        ApplyError::NotFound {
            entity: Entity::Plan,
            ..
        }
    ));

    let (k, _) = fx.key("k");
    fx.attach(p, k);
    fx.incr(k, p, 1);
    fx.ok(Command::PlanDelete { plan: p });
    assert!(fx.state.get_plan(p).is_none());
    assert_eq!(fx.state.key_associations(k).count(), 0);
    let e = fx.err(Command::PlanDelete { plan: p });
    assert!(matches!(e, ApplyError::NotFound { .. }));
}

// Property: attach/detach manage memberships within the per-key limit.
// Set-up: plans and a key. Pass: attach is idempotent and updates extras; the 17th plan is
// refused; detaching an absent association is refused; unknown ids refused.
#[test]
fn attach_detach() {
    let mut fx = Fx::new();
    let (k, _) = fx.key("k");
    let plans: Vec<PlanId> = (0..=limits::MAX_PLANS_PER_KEY)
        .map(|i| fx.plan(&format!("p{i}"), Some(10), PeriodUnit::Day))
        .collect();
    for p in &plans[..limits::MAX_PLANS_PER_KEY] {
        fx.attach(*p, k);
    }
    let e = fx.err(Command::Attach {
        plan: plans[limits::MAX_PLANS_PER_KEY],
        key: k,
        extra_per_period: Extra::default(),
    });
    assert!(e.to_string().contains("plans of key"), "{e}");
    fx.ok(Command::Attach {
        plan: plans[0],
        key: k,
        extra_per_period: Extra::new(5).unwrap(),
    });
    assert_eq!(fx.usage(plans[0], k).limit, Some(15));
    fx.ok(Command::Detach {
        plan: plans[0],
        key: k,
    });
    let e = fx.err(Command::Detach {
        plan: plans[0],
        key: k,
    });
    assert!(matches!(
        e,
        ApplyError::NotFound {
            entity: Entity::Association,
            ..
        }
    ));
    let e = fx.err(Command::Attach {
        plan: PlanId(999),
        key: k,
        extra_per_period: Extra::default(),
    });
    assert!(matches!(
        e,
        ApplyError::NotFound {
            entity: Entity::Plan,
            ..
        }
    ));
    let e = fx.err(Command::Attach {
        plan: plans[1],
        key: KeyId(999),
        extra_per_period: Extra::default(),
    });
    assert!(matches!(
        e,
        ApplyError::NotFound {
            entity: Entity::Key,
            ..
        }
    ));
}

// Property: an increment is admitted only if every covering plan has room, and then it is
// counted against all of them; a denial counts nothing. Set-up: a key in two plans covering
// the same stage, limits 10 and 5. Pass: five admitted, the sixth denied by the smaller
// plan with nothing counted in the larger one.
#[test]
fn increment_all_or_nothing() {
    let mut fx = Fx::new();
    let big = fx.plan("big", Some(10), PeriodUnit::Day);
    let small = fx.plan("small", Some(5), PeriodUnit::Day);
    let (k, secret) = fx.key("k");
    fx.attach(big, k);
    fx.attach(small, k);
    for i in 1..=5 {
        let r = fx.incr_stage(&secret, 1);
        assert!(r.allowed(), "request {i}");
        assert_eq!(r.tightest().unwrap().remaining, Some(5 - i));
    }
    let r = fx.incr_stage(&secret, 1);
    let reset = Timestamp(START + DAY_MS);
    assert_eq!(
        r.denial,
        Some(Denial::QuotaExceeded {
            plan: small,
            reset_at: reset
        })
    );
    assert_eq!(fx.usage(big, k).used, 5);
    assert_eq!(fx.usage(small, k).used, 5);
    // The bigger plan alone still admits.
    assert!(fx.incr(k, big, 5).allowed());
    assert!(!fx.incr(k, big, 1).allowed());
    // A new day resets both.
    fx.advance(DAY_MS);
    assert!(fx.incr_stage(&secret, 5).allowed());
}

// Property: every reason to refuse a request is reported as such.
// Set-up: keys unknown, disabled, expired, and not covered. Pass: the matching denial.
#[test]
fn increment_denials() {
    let mut fx = Fx::new();
    let p = fx.plan("p", Some(10), PeriodUnit::Day);
    let (k, secret) = fx.key("k");
    let unknown = Secret::generate().unwrap();
    assert_eq!(fx.incr_stage(&unknown, 1).denial, Some(Denial::UnknownKey));
    assert_eq!(fx.incr_stage(&secret, 1).denial, Some(Denial::NotCovered));
    assert_eq!(fx.incr(k, p, 1).denial, Some(Denial::NotCovered));
    fx.attach(p, k);
    let other_stage = fx.ok(Command::Increment {
        key: KeyRef::Hash(secret.hash()),
        target: Target::Stage(ApiStage::new("api", "dev").unwrap()),
        cost: Cost::ONE,
    });
    let Outcome::Increment(r) = other_stage else {
        panic!()
    };
    assert_eq!(r.denial, Some(Denial::NotCovered));
    fx.ok(Command::KeySetEnabled {
        key: k,
        enabled: false,
    });
    assert_eq!(fx.incr_stage(&secret, 1).denial, Some(Denial::Disabled));
    fx.ok(Command::KeyUpdate {
        key: k,
        patch: KeyPatch {
            enabled: Some(true),
            expires_at: Some(Some(Timestamp(fx.now + 1000))),
            ..KeyPatch::default()
        },
    });
    assert!(fx.incr_stage(&secret, 1).allowed());
    fx.advance(1000);
    assert_eq!(fx.incr_stage(&secret, 1).denial, Some(Denial::Expired));
    let e = fx.err(Command::Increment {
        key: KeyRef::Id(k),
        target: Target::Plan(PlanId(55)),
        cost: Cost::ONE,
    });
    assert!(matches!(
        e,
        ApplyError::NotFound {
            entity: Entity::Plan,
            ..
        }
    ));
    // A plan without a quota admits everything and still counts.
    let free = fx.plan("free", None, PeriodUnit::Day);
    let (k2, _) = fx.key("k2");
    fx.attach(free, k2);
    let r = fx.incr(k2, free, limits::MAX_COST);
    assert!(r.allowed());
    assert_eq!(r.usage[0].used, limits::MAX_COST);
    assert_eq!(r.usage[0].remaining, None);
}

// Property: the offset is subtracted from the limit in the plan's first period only.
// Set-up: a daily plan of 10 with offset 4. Pass: 6 admitted today, 10 tomorrow.
#[test]
fn offset_in_initial_period() {
    let mut fx = Fx::new();
    let raw = RawQuota {
        limit: 10,
        offset: 4,
        ..RawQuota::default()
    };
    let mut spec = RawPlanSpec::named(Name::new("p").unwrap());
    spec.quota = Some(QuotaSpec::try_from(raw).unwrap());
    let Outcome::Plan(plan) = fx.ok(Command::PlanCreate {
        spec: PlanSpec::try_from(spec).unwrap(),
    }) else {
        panic!()
    };
    let (k, _) = fx.key("k");
    fx.attach(plan.id, k);
    assert!(fx.incr(k, plan.id, 6).allowed());
    assert!(!fx.incr(k, plan.id, 1).allowed());
    fx.advance(DAY_MS);
    assert!(fx.incr(k, plan.id, 10).allowed());
}

// Property: leases reserve quota before it is spent; settling returns the unspent part;
// renewal grants a fresh lease; expiry counts the whole lease as used; the tail is shared
// in small leases. Set-up: a plan of 100 and two gateways. Pass: the numbers below.
#[test]
fn leases_reserve_settle_expire() {
    let mut fx = Fx::new();
    let p = fx.plan("p", Some(100), PeriodUnit::Day);
    let (k, _) = fx.key("k");
    fx.attach(p, k);
    let LeaseResult::Granted { lease: l1, usage } = fx.grant("gw1", p, k, 60) else {
        panic!()
    };
    assert_eq!(l1.granted, 60);
    assert_eq!(usage.reserved, 60);
    assert_eq!(usage.remaining, Some(40));
    // Fair share: 40 remain, one other lease open, so at most 20.
    let LeaseResult::Granted { lease: l2, .. } = fx.grant("gw2", p, k, 60) else {
        panic!()
    };
    assert_eq!(l2.granted, 20);
    // Direct increments see the reservation.
    assert!(!fx.incr(k, p, 21).allowed());
    // Settle l1 having spent 10, and renew for 5.
    let r = fx.leases(
        "gw1",
        vec![LeaseOp::Settle {
            lease: l1.id,
            spent: 10,
            renew: Some(5),
            ttl_ms: 10_000,
        }],
    );
    let LeaseResult::Granted { lease: l3, usage } = &r[0] else {
        panic!("{r:?}")
    };
    assert_eq!(l3.granted, 5);
    assert_eq!(usage.used, 10);
    assert_eq!(usage.reserved, 25);
    // Settle errors: another gateway's lease, spending more than granted, unknown lease.
    let r = fx.leases(
        "gw1",
        vec![
            LeaseOp::Settle {
                lease: l2.id,
                spent: 1,
                renew: None,
                ttl_ms: 10_000,
            },
            LeaseOp::Settle {
                lease: l3.id,
                spent: 6,
                renew: None,
                ttl_ms: 10_000,
            },
            LeaseOp::Settle {
                lease: LeaseId(999),
                spent: 0,
                renew: None,
                ttl_ms: 10_000,
            },
            LeaseOp::Grant {
                plan: p,
                key: k,
                want: 0,
                ttl_ms: 10_000,
            },
            LeaseOp::Grant {
                plan: p,
                key: k,
                want: 1,
                ttl_ms: 1,
            },
        ],
    );
    assert!(
        r.iter().all(|x| matches!(x, LeaseResult::Failed { .. })),
        "{r:?}"
    );
    assert_eq!(fx.usage(p, k).reserved, 25);
    // Expiry counts both open leases as used.
    fx.advance(10_000);
    let Outcome::Expired { leases } = fx.ok(Command::ExpireLeases) else {
        panic!()
    };
    assert_eq!(leases, 2);
    let u = fx.usage(p, k);
    assert_eq!((u.used, u.reserved, u.remaining), (35, 0, Some(65)));
    // A lease settled after its expiry counts in full, and renewal still works.
    let LeaseResult::Granted { lease: l4, .. } = fx.grant("gw1", p, k, 10) else {
        panic!()
    };
    fx.advance(10_000);
    let r = fx.leases(
        "gw1",
        vec![LeaseOp::Settle {
            lease: l4.id,
            spent: 0,
            renew: Some(1),
            ttl_ms: 10_000,
        }],
    );
    assert!(matches!(r[0], LeaseResult::Granted { .. }), "{r:?}");
    assert_eq!(fx.usage(p, k).used, 45);
    // The tail: with few units left, leases shrink to single units.
    let rest = fx.usage(p, k).remaining.unwrap();
    let mut granted = 0;
    for i in 0..200 {
        match fx.grant(&format!("g{}", i % 8), p, k, 50) {
            LeaseResult::Granted { lease, .. } => granted += lease.granted,
            LeaseResult::Denied { denial } => {
                assert!(matches!(denial, Denial::QuotaExceeded { .. }));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(granted, rest);
    assert_eq!(fx.usage(p, k).remaining, Some(0));
    let e = fx.err(Command::Leases {
        gateway: GatewayId::new("gw").unwrap(),
        ops: vec![
            LeaseOp::Grant {
                plan: p,
                key: k,
                want: 1,
                ttl_ms: 1000
            };
            limits::MAX_LEASE_OPS_PER_BATCH + 1
        ],
    });
    assert!(e.to_string().contains("ops"), "{e}");
}

// Property: leases never outlive their period, and a period rollover expires the old
// period's leases before the new period counts anything. Set-up: a daily plan, a lease
// granted one second before midnight. Pass: the lease ends at midnight; the next day starts
// with nothing reserved.
#[test]
fn leases_end_with_their_period() {
    let mut fx = Fx::new();
    let p = fx.plan("p", Some(100), PeriodUnit::Day);
    let (k, _) = fx.key("k");
    fx.attach(p, k);
    fx.advance(DAY_MS - 1000);
    let LeaseResult::Granted { lease, .. } = fx.grant("gw", p, k, 50) else {
        panic!()
    };
    assert_eq!(lease.expires_at, Timestamp(START + DAY_MS));
    fx.advance(1000);
    assert!(fx.incr(k, p, 100).allowed());
    assert_eq!(fx.state.open_leases(), 0);
    let report = fx
        .state
        .usage_report(
            p,
            k,
            Timestamp(START).date(),
            Timestamp(START + DAY_MS).date(),
        )
        .unwrap();
    assert_eq!(report[0].used, 50);
    assert_eq!(report[1].used, 100);
    assert_eq!(report[1].remaining, Some(0));
}

// Property: grants and "set remaining" change this period's limit only.
// Set-up: a plan of 10, 4 used. Pass: grant 5 -> 11 remaining; set remaining 2 -> 2; next
// period back to 10; plans without quota and absent associations refused.
#[test]
fn usage_updates() {
    let mut fx = Fx::new();
    let p = fx.plan("p", Some(10), PeriodUnit::Day);
    let (k, _) = fx.key("k");
    fx.attach(p, k);
    fx.incr(k, p, 4);
    let Outcome::Usage(u) = fx.ok(Command::UsageGrant {
        plan: p,
        key: k,
        extra: Extra::new(5).unwrap(),
    }) else {
        panic!()
    };
    assert_eq!(u.remaining, Some(11));
    let Outcome::Usage(u) = fx.ok(Command::UsageSetRemaining {
        plan: p,
        key: k,
        remaining: 2,
    }) else {
        panic!()
    };
    assert_eq!((u.remaining, u.limit), (Some(2), Some(6)));
    assert!(fx.incr(k, p, 2).allowed());
    assert!(!fx.incr(k, p, 1).allowed());
    fx.advance(DAY_MS);
    assert_eq!(fx.usage(p, k).remaining, Some(10));

    let free = fx.plan("free", None, PeriodUnit::Day);
    fx.attach(free, k);
    let e = fx.err(Command::UsageGrant {
        plan: free,
        key: k,
        extra: Extra::new(1).unwrap(),
    });
    assert!(matches!(e, ApplyError::Invalid(_)), "{e}");
    let (k2, _) = fx.key("k2");
    let e = fx.err(Command::UsageSetRemaining {
        plan: p,
        key: k2,
        remaining: 1,
    });
    assert!(matches!(
        e,
        ApplyError::NotFound {
            entity: Entity::Association,
            ..
        }
    ));
    let e = fx.err(Command::UsageSetRemaining {
        plan: p,
        key: k,
        remaining: limits::MAX_QUOTA_LIMIT + 1,
    });
    assert!(matches!(e, ApplyError::Invalid(_)));
}

// Property: usage a gateway admitted at the safe rate while the cluster was unreachable is
// added to (plan, key)'s `used` in the current period without a quota check (the documented
// exception to the invariant), on today's daily bucket; the counter then admits nothing more
// this period, and the next period starts from zero.
// Set-up: a daily plan of 10 with safe_rate 2 and a key with 8 used; reports of 5, then of
// 3 after a day; one report mixing a good item, a refused one and another good one.
// Pass: used 13 of 10 (remaining 0), increments and leases denied; the daily buckets show
// 8 + 5 and then 3; the mixed report applies its good items only; invariants hold.
#[test]
fn report_offline_usage() {
    let mut fx = Fx::new();
    let p = fx.plan_with_safe_rate("safe", Some(10), PeriodUnit::Day, 2.0);
    let (k, _) = fx.key("k");
    fx.attach(p, k);
    fx.incr(k, p, 8);
    let item = |used| OfflineUsage {
        plan: p,
        key: k,
        used,
    };
    let results = fx.report_offline(vec![item(5)]);
    let Ok(u) = &results[0] else {
        panic!("{results:?}")
    };
    assert_eq!(
        (u.used, u.reserved, u.limit, u.remaining),
        (13, 0, Some(10), Some(0))
    );
    assert_eq!(fx.usage(p, k).used, 13);
    let denied = fx.incr(k, p, 1);
    assert!(matches!(denied.denial, Some(Denial::QuotaExceeded { .. })));
    assert!(matches!(
        fx.grant("gw", p, k, 5),
        LeaseResult::Denied {
            denial: Denial::QuotaExceeded { .. }
        }
    ));
    // A new period starts from zero; the report lands on the day it is applied.
    fx.advance(DAY_MS);
    let results = fx.report_offline(vec![item(3)]);
    assert!(matches!(&results[0], Ok(u) if u.used == 3 && u.remaining == Some(7)));
    let first: Date = "2026-12-04".parse().unwrap();
    let second: Date = "2026-12-05".parse().unwrap();
    let rows: Vec<(u64, Option<u64>)> = fx
        .state
        .usage_report(p, k, first, second)
        .unwrap()
        .iter()
        .map(|d| (d.used, d.remaining))
        .collect();
    assert_eq!(rows, vec![(13, Some(0)), (3, Some(7))]);

    // Each item stands alone: the refused one changes nothing, the others apply.
    let (other, _) = fx.key("not-attached");
    let results = fx.report_offline(vec![
        item(1),
        OfflineUsage {
            plan: p,
            key: other,
            used: 4,
        },
        item(2),
    ]);
    assert!(matches!(&results[0], Ok(u) if u.used == 4));
    assert!(matches!(
        &results[1],
        Err(ApplyError::NotFound {
            entity: Entity::Association,
            ..
        })
    ));
    assert!(matches!(&results[2], Ok(u) if u.used == 6));
    assert_eq!(fx.usage(p, k).used, 6);

    // A plan without a quota counts reported usage too (for reports).
    let open = fx.plan_with_safe_rate("open", None, PeriodUnit::Day, 1.0);
    fx.attach(open, k);
    let results = fx.report_offline(vec![OfflineUsage {
        plan: open,
        key: k,
        used: 9,
    }]);
    assert!(matches!(&results[0], Ok(u) if u.used == 9 && u.limit.is_none()));
}

// Property: every refusal of a reported item is typed and changes nothing: an unknown plan,
// key or association, a usage of 0 or above the per-item limit, a total past the per-period
// cap, and a report of too many items. A plan whose safe_rate is 0 still records what a
// gateway admitted at its own default rate.
// Set-up: a plan with safe_rate 0 and one with safe_rate 1, a key attached to both.
// Pass: the documented error for each case, and the state unchanged (compared whole); the
// report on the safe_rate-0 plan is recorded.
#[test]
fn report_offline_refusals() {
    let mut fx = Fx::new();
    let strict = fx.plan("strict", Some(10), PeriodUnit::Day);
    let safe = fx.plan_with_safe_rate("safe", Some(10), PeriodUnit::Day, 1.0);
    let (k, _) = fx.key("k");
    let (lonely, _) = fx.key("lonely");
    fx.attach(strict, k);
    fx.attach(safe, k);
    let item = |plan, key, used| OfflineUsage { plan, key, used };

    assert!(fx.report_offline(vec![item(strict, k, 1)])[0].is_ok());
    assert_eq!(fx.usage(strict, k).used, 1);
    let e = fx.report_offline_refused(item(PlanId(99), k, 1));
    assert_eq!(e, ApplyError::not_found(Entity::Plan, "p99"));
    let e = fx.report_offline_refused(item(safe, KeyId(99), 1));
    assert_eq!(e, ApplyError::not_found(Entity::Key, "k99"));
    let e = fx.report_offline_refused(item(safe, lonely, 1));
    assert!(matches!(
        e,
        ApplyError::NotFound {
            entity: Entity::Association,
            ..
        }
    ));
    let e = fx.report_offline_refused(item(safe, k, 0));
    assert!(
        matches!(e, ApplyError::Invalid(ref v) if v.field() == "used"),
        "{e}"
    );
    let e = fx.report_offline_refused(item(safe, k, limits::MAX_OFFLINE_USAGE_PER_ITEM + 1));
    assert!(
        matches!(e, ApplyError::Invalid(ref v) if v.field() == "used"),
        "{e}"
    );

    // The per-period cap: fill it exactly (1024 items of the largest size), then one more.
    let full = vec![
        item(safe, k, limits::MAX_OFFLINE_USAGE_PER_ITEM);
        limits::MAX_OFFLINE_ITEMS_PER_REPORT
    ];
    assert!(fx.report_offline(full).iter().all(Result::is_ok));
    assert_eq!(fx.usage(safe, k).used, limits::MAX_USED_PER_PERIOD);
    let e = fx.report_offline_refused(item(safe, k, 1));
    assert!(
        matches!(e, ApplyError::Invalid(ref v) if v.field() == "used"),
        "{e}"
    );

    let e = fx.err(Command::ReportOffline {
        gateway: GatewayId::new("gw").unwrap(),
        usage: vec![item(safe, k, 1); limits::MAX_OFFLINE_ITEMS_PER_REPORT + 1],
    });
    assert!(
        matches!(e, ApplyError::Invalid(ValidationError::TooMany { ref field, .. }) if field == "usage"),
        "{e}"
    );
}

// Property: a retried report (same request id) answers its first response and counts once,
// even after a later report and a day's rollover; only a new id counts again.
// Set-up: a report of 4 applied, then retried; then a different report; then the first
// retried again a day later.
// Pass: identical responses, unchanged state on each retry, used 4 then 4 + 2.
#[test]
fn report_offline_retries_count_once() {
    let mut fx = Fx::new();
    let p = fx.plan_with_safe_rate("safe", Some(100), PeriodUnit::Month, 5.0);
    let (k, _) = fx.key("k");
    fx.attach(p, k);
    let report = |used| Command::ReportOffline {
        gateway: GatewayId::new("gw").unwrap(),
        usage: vec![OfflineUsage {
            plan: p,
            key: k,
            used,
        }],
    };
    let entry = fx.entry(report(4));
    let first = fx.state.apply(&entry);
    assert!(
        matches!(&first, Ok(Outcome::OfflineUsage(r)) if matches!(&r[0], Ok(u) if u.used == 4))
    );
    let after = fx.state.clone();
    fx.advance(1_000);
    let retry = Entry {
        at: Timestamp(fx.now),
        ..entry.clone()
    };
    assert_eq!(fx.state.apply(&retry), first);
    assert_eq!(fx.state, after);
    fx.ok(report(2));
    assert_eq!(fx.usage(p, k).used, 6);
    let before = fx.state.clone();
    fx.advance(DAY_MS);
    let late = Entry {
        at: Timestamp(fx.now),
        ..entry
    };
    assert_eq!(fx.state.apply(&late), first);
    assert_eq!(fx.state, before, "a late retry changed the state");
    assert_eq!(fx.usage(p, k).used, 6);
}

// Property: a retried request id returns the first response and changes nothing, even when
// retried later; the table is bounded. Set-up: one increment applied twice, then more ids
// than the table holds. Pass: same response, same state; the oldest id is forgotten.
#[test]
fn duplicate_request_ids() {
    let mut fx = Fx::new();
    let p = fx.plan("p", Some(10), PeriodUnit::Day);
    let (k, _) = fx.key("k");
    fx.attach(p, k);
    let entry = fx.entry(Command::Increment {
        key: KeyRef::Id(k),
        target: Target::Plan(p),
        cost: Cost::new(3).unwrap(),
    });
    let first = fx.state.apply(&entry);
    let after = fx.state.clone();
    let retry = Entry {
        at: Timestamp(fx.now + 5000),
        ..entry.clone()
    };
    assert_eq!(fx.state.apply(&retry), first);
    assert_eq!(fx.state, after);
    assert_eq!(fx.usage(p, k).used, 3);
    for _ in 0..limits::DEDUP_TABLE_CAPACITY {
        // Applied directly: checking invariants after each would make this quadratic.
        let noop = fx.entry(Command::Noop);
        assert_eq!(fx.state.apply(&noop), Ok(Outcome::Done));
    }
    fx.state.check_invariants().unwrap();
    // Forgotten now: the same id counts again.
    let again = fx.state.apply(&retry);
    assert!(matches!(again, Ok(Outcome::Increment(ref r)) if r.allowed()));
    assert_eq!(fx.usage(p, k).used, 6);
}

// Property: the usage report lists every day in the range with used and remaining,
// carrying remaining over quiet days of the same period. Set-up: a weekly plan used on two
// days. Pass: the expected rows.
#[test]
fn usage_report() {
    let mut fx = Fx::new();
    let p = fx.plan("p", Some(100), PeriodUnit::Week);
    let (k, _) = fx.key("k");
    fx.attach(p, k);
    fx.incr(k, p, 10); // Friday
    fx.advance(2 * DAY_MS);
    fx.incr(k, p, 5); // Sunday
    fx.advance(DAY_MS);
    fx.incr(k, p, 1); // Monday: a new week
    let from: Date = "2026-12-03".parse().unwrap();
    let to: Date = "2026-12-08".parse().unwrap();
    let rows: Vec<(u64, Option<u64>)> = fx
        .state
        .usage_report(p, k, from, to)
        .unwrap()
        .iter()
        .map(|d| (d.used, d.remaining))
        .collect();
    assert_eq!(
        rows,
        vec![
            (0, Some(100)),
            (10, Some(90)),
            (0, Some(90)),
            (5, Some(85)),
            (1, Some(99)),
            (0, Some(99)),
        ]
    );
    assert!(fx.state.usage_report(p, KeyId(99), from, to).is_none());
}

// Property: snapshots round-trip and reject what they cannot read.
#[test]
fn snapshot_round_trip() {
    let mut fx = Fx::new();
    let p = fx.plan("p", Some(100), PeriodUnit::Month);
    let (k, _) = fx.key("k");
    fx.attach(p, k);
    fx.incr(k, p, 10);
    fx.grant("gw", p, k, 10);
    let bytes = snapshot::encode(&fx.state).unwrap();
    let restored = snapshot::decode(&bytes).unwrap();
    assert_eq!(restored, fx.state);
    assert!(matches!(
        snapshot::decode(b"nonsense"),
        Err(snapshot::SnapshotError::BadMagic)
    ));
    let mut wrong_version = bytes.clone();
    wrong_version[8] = 99;
    assert!(matches!(
        snapshot::decode(&wrong_version),
        Err(snapshot::SnapshotError::UnsupportedVersion { found: 99 })
    ));
    assert!(snapshot::decode(&bytes[..bytes.len() - 3]).is_err());
}

// Property: snapshot format 3 still reads format 2 (3 only appended enum variants, so a
// version-2 encoding decodes unchanged), refuses 1 and anything newer than 3, and carries
// the new outcome and refusal in its deduplication table.
// Set-up: a state with an accepted and a refused offline report (both with request ids);
// its encoding relabelled as versions 1, 2 and 4; a state without them labelled 2.
// Pass: the state round-trips; 2 decodes to the same state; 1 and 4 are refused by version.
#[test]
fn snapshot_versions() {
    let mut fx = Fx::new();
    let safe = fx.plan_with_safe_rate("safe", Some(100), PeriodUnit::Month, 1.0);
    let (k, _) = fx.key("k");
    fx.attach(safe, k);
    fx.incr(k, safe, 3);
    let old = snapshot::encode(&fx.state).unwrap();
    assert_eq!(
        &old[8..12],
        &snapshot::SNAPSHOT_FORMAT_VERSION.to_le_bytes()
    );
    let mut as_v2 = old.clone();
    as_v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(snapshot::decode(&as_v2).unwrap(), fx.state);

    let strict = fx.plan("strict", Some(100), PeriodUnit::Month);
    fx.attach(strict, k);
    let results = fx.report_offline(vec![
        OfflineUsage {
            plan: safe,
            key: k,
            used: 2,
        },
        OfflineUsage {
            plan: strict,
            key: k,
            used: 2,
        },
    ]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let bytes = snapshot::encode(&fx.state).unwrap();
    assert_eq!(snapshot::decode(&bytes).unwrap(), fx.state);
    for version in [1u32, snapshot::SNAPSHOT_FORMAT_VERSION + 1] {
        let mut relabelled = bytes.clone();
        relabelled[8..12].copy_from_slice(&version.to_le_bytes());
        assert!(matches!(
            snapshot::decode(&relabelled),
            Err(snapshot::SnapshotError::UnsupportedVersion { found }) if found == version
        ));
    }
}

// Property: a batch applies its items in order, each with its own deduplication, and a
// refused item changes nothing while the others apply. Set-up: a batch of three items, one
// a retry of an earlier request id, one refused, plus a nested batch. Pass: responses as
// described; counters count each admitted increment once.
#[test]
fn batches() {
    let mut fx = Fx::new();
    let p = fx.plan("p", Some(10), PeriodUnit::Day);
    let (k, _) = fx.key("k");
    fx.attach(p, k);
    let incr = Command::Increment {
        key: KeyRef::Id(k),
        target: Target::Plan(p),
        cost: Cost::new(2).unwrap(),
    };
    let first = fx.entry(incr.clone());
    assert!(fx.state.apply(&first).is_ok());
    let Outcome::Batch(responses) = fx.ok(Command::Batch(vec![
        BatchItem {
            request_id: first.request_id,
            command: incr.clone(),
        },
        BatchItem {
            request_id: Some(RequestId(9_000)),
            command: Command::KeyDelete { key: KeyId(77) },
        },
        BatchItem {
            request_id: Some(RequestId(9_001)),
            command: incr.clone(),
        },
        BatchItem {
            request_id: Some(RequestId(9_002)),
            command: Command::Batch(vec![]),
        },
    ])) else {
        panic!()
    };
    assert!(matches!(responses[0], Ok(Outcome::Increment(ref r)) if r.usage[0].used == 2));
    assert!(matches!(responses[1], Err(ApplyError::NotFound { .. })));
    assert!(matches!(responses[2], Ok(Outcome::Increment(ref r)) if r.usage[0].used == 4));
    assert!(matches!(responses[3], Err(ApplyError::Invalid(_))));
    assert_eq!(fx.usage(p, k).used, 4);
    let items = (0..=limits::MAX_COMMANDS_PER_BATCH)
        .map(|_| BatchItem {
            request_id: None,
            command: Command::Noop,
        })
        .collect();
    let e = fx.err(Command::Batch(items));
    assert!(e.to_string().contains("batch"), "{e}");
}
