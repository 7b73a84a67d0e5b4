//! The public API of one node, served in-process on a real socket (port 0) over real sled
//! storage: every admin call, the direct increment, and how bad input is answered.

use quota_proto::v1::cluster_client::ClusterClient;
use quota_proto::v1::gateway_client::GatewayClient;
use quota_proto::v1::*;
use std::time::Duration;
use tonic::Code;

mod common;
use common::Node;

fn plan_sel(id: &str) -> Option<PlanSelector> {
    Some(PlanSelector {
        by: Some(plan_selector::By::Id(id.into())),
    })
}

fn key_sel(id: &str) -> Option<KeySelector> {
    Some(KeySelector {
        by: Some(key_selector::By::Id(id.into())),
    })
}

fn key_named(name: &str) -> Option<KeySelector> {
    Some(KeySelector {
        by: Some(key_selector::By::Name(name.into())),
    })
}

fn plan_spec(name: &str, limit: u64) -> PlanSpec {
    PlanSpec {
        name: name.into(),
        quota: Some(Quota {
            limit,
            period: Period::Day as i32,
            ..Default::default()
        }),
        stages: vec![ApiStage {
            api: "orders".into(),
            stage: "prod".into(),
        }],
        ..Default::default()
    }
}

fn expect<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    word: &str,
) {
    let e = r.expect_err("should have been refused");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().contains(word),
        "message {:?} should name {word}",
        e.message()
    );
}

fn incr_by_secret(secret: &str, cost: u64) -> IncrementRequest {
    IncrementRequest {
        key: Some(increment_request::Key::Secret(secret.into())),
        target: Some(increment_request::Target::Route(RouteTarget {
            api: "orders".into(),
            stage: "prod".into(),
            route: "GET /orders".into(),
        })),
        cost,
        request_id: vec![],
    }
}

// Property: the admin API manages keys, plans, associations and usage end to end, and a
// direct increment is admitted exactly up to the quota. Set-up: one node; a plan of 5 per
// day; a generated key attached to it. Pass: five increments admitted with falling
// `remaining`, the sixth denied with a reset time; the usage report and get/list calls agree;
// a disabled key is refused; a rotated key's new secret works; deleting works.
#[tokio::test]
async fn admin_and_increment_flow() {
    let node = Node::start(None).await;
    let mut admin = node.admin();
    let mut data = node.data();
    let plan = node.plan(plan_spec("basic", 5)).await;
    let created = admin
        .create_key(CreateKeyRequest {
            request_id: vec![],
            spec: Some(KeySpec {
                name: "alice".into(),
                owner: Some("customer-1".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let key = created.key.unwrap();
    assert!(created.secret.starts_with("qdk_"));
    assert!(created.secret.starts_with(&key.prefix));
    node.attach(plan_sel(&plan.id), key_named("alice")).await;
    for i in 1..=5u64 {
        let r = data
            .increment(incr_by_secret(&created.secret, 1))
            .await
            .unwrap()
            .into_inner();
        assert!(r.allowed, "increment {i}");
        assert_eq!(r.remaining, Some(5 - i));
    }
    let denied = data
        .increment(incr_by_secret(&created.secret, 1))
        .await
        .unwrap()
        .into_inner();
    assert!(!denied.allowed);
    assert_eq!(denied.reason, DenialReason::QuotaExceeded as i32);
    assert!(denied.reset_at > 0);

    let today = quota_core::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
    .date()
    .to_string();
    let usage = admin
        .get_usage(GetUsageRequest {
            plan: plan_sel(&plan.id),
            start_date: today.clone(),
            end_date: today,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.keys.len(), 1);
    assert_eq!(usage.keys[0].days[0].used, 5);
    assert_eq!(usage.keys[0].days[0].remaining, Some(0));

    let got = admin
        .get_key(GetKeyRequest {
            key: key_sel(&key.id),
            allow_stale: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.plans.len(), 1);
    assert_eq!(got.key.unwrap().owner.as_deref(), Some("customer-1"));

    // A grant reopens the quota for this period only.
    let granted = admin
        .grant_usage(GrantUsageRequest {
            request_id: vec![],
            plan: plan_sel(&plan.id),
            key: key_sel(&key.id),
            extra: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.usage.unwrap().remaining, Some(2));

    admin
        .set_key_enabled(SetKeyEnabledRequest {
            request_id: vec![],
            key: key_sel(&key.id),
            enabled: false,
        })
        .await
        .unwrap();
    let r = data
        .increment(incr_by_secret(&created.secret, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.reason, DenialReason::Disabled as i32);
    admin
        .set_key_enabled(SetKeyEnabledRequest {
            request_id: vec![],
            key: key_sel(&key.id),
            enabled: true,
        })
        .await
        .unwrap();

    let rotated = admin
        .rotate_key(RotateKeyRequest {
            request_id: vec![],
            key: key_sel(&key.id),
            grace_period_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.secret, created.secret);
    assert!(
        data.increment(incr_by_secret(&rotated.secret, 1))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    let old = data
        .increment(incr_by_secret(&created.secret, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.reason, DenialReason::UnknownKey as i32);

    admin
        .delete_key(DeleteKeyRequest {
            request_id: vec![],
            key: key_sel(&key.id),
        })
        .await
        .unwrap();
    let gone = admin
        .get_key(GetKeyRequest {
            key: key_sel(&key.id),
            allow_stale: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    node.stop().await;
}

// Property: listings page through every key exactly once. Set-up: 25 keys, pages of 10.
// Pass: three pages of 10, 10 and 5, then an empty token; names in creation order.
#[tokio::test]
async fn list_keys_pages() {
    let node = Node::start(None).await;
    let mut admin = node.admin();
    for i in 0..25 {
        admin
            .create_key(CreateKeyRequest {
                request_id: vec![],
                spec: Some(KeySpec {
                    name: format!("key-{i:02}"),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let mut token = String::new();
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_keys(ListKeysRequest {
                page_token: token.clone(),
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        names.extend(page.keys.into_iter().map(|k| k.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("key-{i:02}")).collect();
    assert_eq!(names, expected);
    node.stop().await;
}

// Property: bad input gets a clear error naming what was wrong, changes nothing, and the
// node stays up. Set-up: one node with a plan; a series of bad requests. Pass: each gets
// the expected code and a message naming the field; afterwards the state is unchanged and
// a good request still succeeds.
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let node = Node::start(None).await;
    let mut admin = node.admin();
    let mut data = node.data();
    let plan = node.plan(plan_spec("basic", 5)).await;

    // An invalid plan: zero quota, a bad route, a duplicate name.
    let mut bad = plan_spec("other", 0);
    expect(
        admin
            .create_plan(CreatePlanRequest {
                request_id: vec![],
                spec: Some(bad.clone()),
            })
            .await,
        Code::InvalidArgument,
        "spec.quota.limit",
    );
    bad.quota = None;
    bad.route_throttles.insert(
        "FETCH /x".into(),
        Throttle {
            rate_limit: 1.0,
            burst_limit: 1,
        },
    );
    expect(
        admin
            .create_plan(CreatePlanRequest {
                request_id: vec![],
                spec: Some(bad),
            })
            .await,
        Code::InvalidArgument,
        "route",
    );
    expect(
        admin
            .create_plan(CreatePlanRequest {
                request_id: vec![],
                spec: Some(plan_spec("basic", 5)),
            })
            .await,
        Code::AlreadyExists,
        "basic",
    );
    // Unknown ids, malformed ids and request ids.
    expect(
        admin
            .get_plan(GetPlanRequest {
                plan: plan_sel("p999"),
                allow_stale: false,
            })
            .await,
        Code::NotFound,
        "p999",
    );
    expect(
        admin
            .delete_key(DeleteKeyRequest {
                request_id: vec![],
                key: key_sel("k42"),
            })
            .await,
        Code::NotFound,
        "k42",
    );
    expect(
        admin
            .delete_key(DeleteKeyRequest {
                request_id: vec![],
                key: key_sel("not-an-id"),
            })
            .await,
        Code::InvalidArgument,
        "key",
    );
    expect(
        admin
            .delete_plan(DeletePlanRequest {
                request_id: vec![1, 2, 3],
                plan: plan_sel(&plan.id),
            })
            .await,
        Code::InvalidArgument,
        "request_id",
    );
    // Out-of-range cost, missing key.
    let mut req = incr_by_secret("qdk_nobody", quota_core::limits::MAX_COST + 1);
    expect(
        data.increment(req.clone()).await,
        Code::InvalidArgument,
        "cost",
    );
    req.cost = 1;
    req.key = None;
    expect(data.increment(req).await, Code::InvalidArgument, "key");
    // A message over the size limit.
    let huge = KeySpec {
        name: "x".repeat(2 << 20),
        ..Default::default()
    };
    let e = admin
        .create_key(CreateKeyRequest {
            request_id: vec![],
            spec: Some(huge),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    // Nothing changed: still one plan, no keys; and the node still serves.
    let plans = admin
        .list_plans(ListPlansRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plans.plans.len(), 1);
    let keys = admin
        .list_keys(ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(keys.keys.is_empty());
    admin
        .create_key(CreateKeyRequest {
            request_id: vec![],
            spec: Some(KeySpec {
                name: "fine".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    node.stop().await;
}

// Property: a retried write (same request id) is applied once and answered the same; a
// create retried after success does not reveal a new secret. Set-up: one plan and key.
// Pass: the counter counts one increment; the retried create is refused as already used.
#[tokio::test]
async fn retries_are_applied_once() {
    let node = Node::start(None).await;
    let mut admin = node.admin();
    let mut data = node.data();
    let plan = node.plan(plan_spec("basic", 100)).await;
    let create = CreateKeyRequest {
        request_id: vec![7; 16],
        spec: Some(KeySpec {
            name: "k".into(),
            ..Default::default()
        }),
    };
    let created = admin.create_key(create.clone()).await.unwrap().into_inner();
    let again = admin.create_key(create).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    assert!(!again.message().contains(&created.secret));
    node.attach(plan_sel(&plan.id), key_named("k")).await;
    let mut req = incr_by_secret(&created.secret, 3);
    req.request_id = vec![9; 16];
    let first = data.increment(req.clone()).await.unwrap().into_inner();
    let second = data.increment(req).await.unwrap().into_inner();
    assert_eq!(first, second);
    assert_eq!(first.used, 3);
    node.stop().await;
}

// Property: with an admin token configured, admin and cluster calls need it; the data API
// does not. Set-up: a node with a token file. Pass: no token and a wrong token are
// UNAUTHENTICATED without echoing the token; the right token works.
#[tokio::test]
async fn admin_token_is_required_when_configured() {
    let token = "a-long-admin-token-0123456789";
    let node = Node::start(Some(token)).await;
    let mut admin = node.admin();
    let e = admin
        .list_plans(ListPlansRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(ListPlansRequest::default());
    req.metadata_mut().insert(
        "authorization",
        "Bearer wrong-token-wrong-token".parse().unwrap(),
    );
    let e = admin.list_plans(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!e.message().contains(token));
    let mut req = tonic::Request::new(ListPlansRequest::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    admin.list_plans(req).await.unwrap();
    let mut cluster = ClusterClient::new(node.channel.clone());
    assert_eq!(
        cluster.status(StatusRequest {}).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // The data API is authenticated by API keys, not by the admin token.
    let r = node
        .data()
        .increment(incr_by_secret("qdk_unknown_key_value", 1))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed);
    node.stop().await;
}

// Property: the gateway service grants and settles leases against the quota, looks keys up
// by secret hash, and streams key changes. Set-up: one node, a plan of 100, an attached key,
// a watch stream. Pass: the stream starts with the plan and `synced`; disabling the key
// arrives as an upsert with enabled = false; a lookup finds the key and its plan, a random
// hash finds nothing; a lease of 10 settled with 3 spent leaves used = 3.
#[tokio::test]
async fn gateway_leases_lookup_and_watch() {
    use sha2::{Digest, Sha256};
    let node = Node::start(None).await;
    let mut admin = node.admin();
    let mut gateway = GatewayClient::new(node.channel.clone());
    let plan = node.plan(plan_spec("basic", 100)).await;
    let created = admin
        .create_key(CreateKeyRequest {
            request_id: vec![],
            spec: Some(KeySpec {
                name: "gw-key".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let key = created.key.unwrap();
    node.attach(plan_sel(&plan.id), key_sel(&key.id)).await;

    let mut stream = gateway
        .watch(WatchRequest {
            gateway_id: "gw-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(watch_event::Event::PlanUpserted(ref p)) if p.id == plan.id)
    );
    let synced = stream.message().await.unwrap().unwrap();
    assert!(matches!(synced.event, Some(watch_event::Event::Synced(_))));
    admin
        .set_key_enabled(SetKeyEnabledRequest {
            request_id: vec![],
            key: key_sel(&key.id),
            enabled: false,
        })
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("a change within one second")
        .unwrap()
        .unwrap();
    assert!(change.revision > synced.revision);
    match change.event {
        Some(watch_event::Event::KeyUpserted(k)) => assert!(!k.enabled && k.id == key.id),
        other => panic!("{other:?}"),
    }
    admin
        .set_key_enabled(SetKeyEnabledRequest {
            request_id: vec![],
            key: key_sel(&key.id),
            enabled: true,
        })
        .await
        .unwrap();

    let hash = Sha256::digest(created.secret.as_bytes()).to_vec();
    let found = gateway
        .lookup_key(LookupKeyRequest {
            secret_hash: hash,
            allow_stale: false,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(found.key.unwrap().id, key.id);
    assert_eq!(found.plans.len(), 1);
    let missing = gateway
        .lookup_key(LookupKeyRequest {
            secret_hash: vec![0; 32],
            allow_stale: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(missing.key.is_none());
    let bad = gateway
        .lookup_key(LookupKeyRequest {
            secret_hash: vec![0; 3],
            allow_stale: false,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let granted = gateway
        .leases(LeasesRequest {
            request_id: vec![],
            gateway_id: "gw-1".into(),
            ops: vec![LeaseOp {
                op: Some(lease_op::Op::Grant(LeaseGrant {
                    plan_id: plan.id.clone(),
                    key_id: key.id.clone(),
                    want: 10,
                    ttl_ms: 5_000,
                })),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let lease = match &granted.results[0].result {
        Some(lease_result::Result::Granted(g)) => g.lease.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(lease.granted, 10);
    let settled = gateway
        .leases(LeasesRequest {
            request_id: vec![],
            gateway_id: "gw-1".into(),
            ops: vec![LeaseOp {
                op: Some(lease_op::Op::Settle(LeaseSettle {
                    lease_id: lease.lease_id.clone(),
                    spent: 3,
                    renew: None,
                    ttl_ms: 0,
                })),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    match &settled.results[0].result {
        Some(lease_result::Result::Settled(s)) => {
            let u = s.usage.clone().unwrap();
            assert_eq!((u.used, u.reserved, u.remaining), (3, 0, Some(97)));
        }
        other => panic!("{other:?}"),
    }
    node.stop().await;
}

// Property: a gateway's report of usage admitted at the safe rate is added to the key's
// usage without a quota check (whatever the plan's own safe rate: the gateway may have
// admitted at its default); each item stands alone with
// its own status code; a retry with the same request id counts nothing again; a malformed
// report names its field.
// Set-up: one node; plan "safe" (limit 5 per day, safe_rate 2) and "strict" (safe_rate 0),
// one key attached to both. One report of 7 on safe, 1 on strict, 1 on an unknown plan;
// then the same report again; then a report with no gateway id.
// Pass: used 7 of 5 (remaining 0) on safe; used 1 on strict; NOT_FOUND for p99; the retry
// answers the same results and GetUsage still says 7; INVALID_ARGUMENT naming gateway_id.
#[tokio::test]
async fn gateway_offline_usage_reports() {
    let node = Node::start(None).await;
    let mut admin = node.admin();
    let mut gateway = GatewayClient::new(node.channel.clone());
    let safe = node
        .plan(PlanSpec {
            safe_rate: 2.0,
            ..plan_spec("safe", 5)
        })
        .await;
    let strict = node.plan(plan_spec("strict", 5)).await;
    let key = admin
        .create_key(CreateKeyRequest {
            request_id: vec![],
            spec: Some(KeySpec {
                name: "offline-key".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    node.attach(plan_sel(&safe.id), key_sel(&key.id)).await;
    node.attach(plan_sel(&strict.id), key_sel(&key.id)).await;

    let item = |plan: &str, used| OfflineUsage {
        plan_id: plan.into(),
        key_id: key.id.clone(),
        used,
    };
    let report = ReportOfflineUsageRequest {
        request_id: vec![42; 16],
        gateway_id: "gw-1".into(),
        usage: vec![item(&safe.id, 7), item(&strict.id, 1), item("p99", 1)],
    };
    let first = gateway
        .report_offline_usage(report.clone())
        .await
        .unwrap()
        .into_inner();
    use offline_usage_result::Result as R;
    match &first.results[0].result {
        Some(R::Usage(u)) => {
            assert_eq!((u.used, u.limit, u.remaining), (7, Some(5), Some(0)));
        }
        other => panic!("{other:?}"),
    }
    match &first.results[1].result {
        Some(R::Usage(u)) => assert_eq!(u.used, 1),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &first.results[2].result,
        Some(R::Failed(f)) if f.code == Code::NotFound as i32
    ));

    let again = gateway
        .report_offline_usage(report.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first, "a retry answers the first response");
    let today = quota_core::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
    .date()
    .to_string();
    let usage = admin
        .get_usage(GetUsageRequest {
            plan: plan_sel(&safe.id),
            start_date: today.clone(),
            end_date: today,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.keys[0].days[0].used, 7, "counted once");
    assert_eq!(usage.keys[0].current.as_ref().map(|u| u.used), Some(7));

    expect(
        gateway
            .report_offline_usage(ReportOfflineUsageRequest {
                gateway_id: String::new(),
                ..report
            })
            .await,
        Code::InvalidArgument,
        "gateway_id",
    );
    node.stop().await;
}

// Property: throttle tokens come from the leader's bucket: the burst at once, then nothing
// until the rate refills it; a plan without a throttle is unlimited; bad wants are named.
// Set-up: one node, a plan throttled at 10/s with a burst of 5, and one without.
// Pass: 5 granted, then 0 with a retry-after of at most 100 ms; unlimited; errors.
#[tokio::test]
async fn gateway_throttle_tokens() {
    let node = Node::start(None).await;
    let mut gateway = GatewayClient::new(node.channel.clone());
    let mut spec = plan_spec("throttled", 1000);
    spec.throttle = Some(Throttle {
        rate_limit: 10.0,
        burst_limit: 5,
    });
    let throttled = node.plan(spec).await;
    let free = node.plan(plan_spec("free", 1000)).await;
    let want = |plan: &str, n: u64| ThrottleWant {
        plan_id: plan.into(),
        key_id: "k1".into(),
        route: String::new(),
        want: n,
    };
    let r = gateway
        .throttle(ThrottleRequest {
            gateway_id: "gw".into(),
            wants: vec![
                want(&throttled.id, 100),
                want(&throttled.id, 1),
                want(&free.id, 50),
                want("p99", 1),
                want(&free.id, 0),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.grants[0].granted, 5);
    assert_eq!((r.grants[0].rate_limit, r.grants[0].burst_limit), (10.0, 5));
    assert_eq!(r.grants[1].granted, 0);
    assert!(
        r.grants[1].retry_after_ms > 0 && r.grants[1].retry_after_ms <= 100,
        "{:?}",
        r.grants[1]
    );
    assert!(r.grants[2].unlimited && r.grants[2].granted == 50);
    assert!(r.grants[3].error.contains("p99"));
    assert!(r.grants[4].error.contains("want"));
    node.stop().await;
}

/// A plan named `name` (orders/prod, `limit` per day) and a key of the same name attached
/// to it; answers the key's secret.
async fn plan_and_key(node: &Node, name: &str, limit: u64) -> String {
    let plan = node.plan(plan_spec(name, limit)).await;
    let created = node
        .admin()
        .create_key(CreateKeyRequest {
            request_id: vec![],
            spec: Some(KeySpec {
                name: name.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    node.attach(plan_sel(&plan.id), key_named(name)).await;
    created.secret
}

/// Read a stream's answers until it ends, by tag; panics on a repeated tag or after 20 s.
async fn stream_answers(
    answers: &mut tonic::Streaming<IncrementStreamResponse>,
) -> std::collections::BTreeMap<u64, increment_stream_response::Result> {
    let mut by_tag = std::collections::BTreeMap::new();
    while let Some(answer) = tokio::time::timeout(Duration::from_secs(20), answers.message())
        .await
        .expect("the stream should end")
        .unwrap()
    {
        let previous = by_tag.insert(answer.tag, answer.result.expect("a result"));
        assert!(previous.is_none(), "tag {} answered twice", answer.tag);
    }
    by_tag
}

fn stream_item(tag: u64, increment: IncrementRequest) -> IncrementStreamRequest {
    IncrementStreamRequest {
        tag,
        increment: Some(increment),
    }
}

fn failed_code(result: &increment_stream_response::Result) -> Code {
    match result {
        increment_stream_response::Result::Failed(f) => Code::from_i32(f.code),
        other => panic!("expected a failure, got {other:?}"),
    }
}

// Property: increments on one stream follow the same rules as calls of their own: counted
// exactly up to the quota however many are in flight at once, each answered once under its
// tag, a failed item answered with the status its call would get while the stream goes on,
// a repeated request id applied once (also across a stream and a call), a key named by id
// only with the admin token in the stream's metadata. Set-up: one node with an admin token,
// a plan of 50 per day, an attached key; 60 increments sent before any answer is read, plus
// bad items. Pass: 50 admitted with distinct `used` 1..50 and 10 quota denials, every bad
// item failed with its code, the usage is 50 and the repeated id answers as first.
#[tokio::test]
async fn increment_stream_counts_like_calls() {
    let token = "a-long-admin-token-0123456789";
    let node = Node::start(Some(token)).await;
    let mut admin_req = tonic::Request::new(CreatePlanRequest {
        request_id: vec![],
        spec: Some(plan_spec("streamed", 50)),
    });
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    admin_req
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let plan = node
        .admin()
        .create_plan(admin_req)
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    let mut key_req = tonic::Request::new(CreateKeyRequest {
        request_id: vec![],
        spec: Some(KeySpec {
            name: "s".into(),
            ..Default::default()
        }),
    });
    key_req
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let created = node.admin().create_key(key_req).await.unwrap().into_inner();
    let key = created.key.unwrap();
    let mut attach = tonic::Request::new(AttachRequest {
        request_id: vec![],
        plan: plan_sel(&plan.id),
        key: key_sel(&key.id),
        extra_per_period: 0,
    });
    attach
        .metadata_mut()
        .insert("authorization", bearer.clone());
    node.admin().attach(attach).await.unwrap();

    let by_id = IncrementRequest {
        key: Some(increment_request::Key::KeyId(key.id.clone())),
        target: Some(increment_request::Target::Plan(PlanSelector {
            by: Some(plan_selector::By::Id(plan.id.clone())),
        })),
        cost: 1,
        request_id: vec![],
    };
    let mut items = Vec::new();
    for tag in 1..=60u64 {
        let mut req = incr_by_secret(&created.secret, 1);
        req.request_id = tag.to_be_bytes().repeat(2);
        items.push(stream_item(tag, req));
    }
    items.push(IncrementStreamRequest {
        tag: 100,
        increment: None,
    });
    items.push(stream_item(101, by_id.clone()));
    let mut by_unknown_plan = incr_by_secret(&created.secret, 1);
    by_unknown_plan.target = Some(increment_request::Target::Plan(PlanSelector {
        by: Some(plan_selector::By::Name("no-such-plan".into())),
    }));
    items.push(stream_item(102, by_unknown_plan));
    items.push(stream_item(103, incr_by_secret(&created.secret, 2_000_000)));

    let mut answers = node
        .data()
        .increment_stream(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    let by_tag = stream_answers(&mut answers).await;
    assert_eq!(by_tag.len(), 64);
    let mut used = Vec::new();
    let mut denied = 0;
    for tag in 1..=60u64 {
        match &by_tag[&tag] {
            increment_stream_response::Result::Response(r) if r.allowed => used.push(r.used),
            increment_stream_response::Result::Response(r) => {
                assert_eq!(r.reason, DenialReason::QuotaExceeded as i32);
                denied += 1;
            }
            other => panic!("tag {tag}: {other:?}"),
        }
    }
    used.sort_unstable();
    assert_eq!(used, (1..=50).collect::<Vec<u64>>());
    assert_eq!(denied, 10);
    assert_eq!(failed_code(&by_tag[&100]), Code::InvalidArgument);
    assert_eq!(failed_code(&by_tag[&101]), Code::Unauthenticated);
    assert_eq!(failed_code(&by_tag[&102]), Code::NotFound);
    assert_eq!(failed_code(&by_tag[&103]), Code::InvalidArgument);

    // A repeated request id answers as the first time and counts nothing, across APIs.
    let mut again = incr_by_secret(&created.secret, 1);
    again.request_id = 7u64.to_be_bytes().repeat(2);
    let first = match &by_tag[&7] {
        increment_stream_response::Result::Response(r) => r.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        node.data().increment(again).await.unwrap().into_inner(),
        first
    );

    // With the admin token in the stream's metadata a key may be named by id.
    let mut with_token = tonic::Request::new(tokio_stream::iter(vec![stream_item(1, by_id)]));
    with_token.metadata_mut().insert("authorization", bearer);
    let mut answers = node
        .data()
        .increment_stream(with_token)
        .await
        .unwrap()
        .into_inner();
    let by_tag = stream_answers(&mut answers).await;
    match &by_tag[&1] {
        // The quota is spent: a denial (an answer), not an authentication failure.
        increment_stream_response::Result::Response(r) => {
            assert!(!r.allowed);
            assert_eq!(r.used, 50);
        }
        other => panic!("{other:?}"),
    }
    node.stop().await;
}

// Property: a stream with more increments than may be in flight at once is slowed down,
// not broken: every increment is answered and counted once. And a stopping node ends its
// open streams. Set-up: one node, a plan of 10,000; 3,000 increments (nearly three times
// the per-stream limit) written before any answer is read; then an idle open stream while
// the node stops. Pass: 3,000 answers, all admitted, usage 3,000; the idle stream ends.
#[tokio::test]
async fn increment_stream_backpressure_and_stop() {
    let node = Node::start(None).await;
    let secret = plan_and_key(&node, "many", 10_000).await;
    let items: Vec<_> = (0..3_000u64)
        .map(|tag| stream_item(tag, incr_by_secret(&secret, 1)))
        .collect();
    let mut answers = node
        .data()
        .increment_stream(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    let by_tag = stream_answers(&mut answers).await;
    assert_eq!(by_tag.len(), 3_000);
    let mut used: Vec<u64> = by_tag
        .values()
        .map(|r| match r {
            increment_stream_response::Result::Response(r) if r.allowed => r.used,
            other => panic!("{other:?}"),
        })
        .collect();
    used.sort_unstable();
    assert_eq!(used, (1..=3_000).collect::<Vec<u64>>());

    // An open stream with nothing in flight ends when the node stops.
    let (tx, rx) = tokio::sync::mpsc::channel::<IncrementStreamRequest>(1);
    let mut idle = node
        .data()
        .increment_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(stream_item(1, incr_by_secret(&secret, 1)))
        .await
        .unwrap();
    let answer = idle.message().await.unwrap().unwrap();
    assert_eq!(answer.tag, 1);
    let stopping = tokio::spawn(node.stop());
    let ended = tokio::time::timeout(Duration::from_secs(4), idle.message())
        .await
        .expect("the stream should end when the node stops");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    stopping.await.unwrap();
    drop(tx);
}

// Property: a message over the size limit on a stream is bad input like any other: the
// increments taken before it are answered, then the stream ends with an error that says
// what was too large; nothing of the bad message is counted and the node stays up.
// Set-up: one node, a plan of 100, a key; a stream of one increment, then one whose secret
// is 2 MiB (the limit is 1 MiB). Pass: tag 1 admitted (used 1); the stream then ends with
// OUT_OF_RANGE naming the message length; a call afterwards is admitted with used 2.
#[tokio::test]
async fn increment_stream_oversized_message_ends_the_stream() {
    let node = Node::start(None).await;
    let secret = plan_and_key(&node, "sized", 100).await;
    let huge = "x".repeat(2 << 20);
    let items = vec![
        stream_item(1, incr_by_secret(&secret, 1)),
        stream_item(2, incr_by_secret(&huge, 1)),
    ];
    let mut answers = node
        .data()
        .increment_stream(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.tag, 1);
    match first.result.unwrap() {
        increment_stream_response::Result::Response(r) => {
            assert!(r.allowed);
            assert_eq!(r.used, 1);
        }
        other => panic!("{other:?}"),
    }
    let end = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .unwrap()
        .expect_err("the stream should end with an error");
    assert_eq!(end.code(), Code::OutOfRange, "{end:?}");
    assert!(end.message().contains("message length"), "{end:?}");
    let after = node
        .data()
        .increment(incr_by_secret(&secret, 1))
        .await
        .unwrap()
        .into_inner();
    assert!(after.allowed);
    assert_eq!(after.used, 2);
    node.stop().await;
}
