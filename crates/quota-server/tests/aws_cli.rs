//! The AWS API Gateway-compatible API driven by the real, unmodified AWS CLI (`aws
//! apigateway ... --endpoint-url`), which signs every request with Signature Version 4.
//! The node runs in-process on real sockets over real sled storage and checks signatures
//! against an access keys file.
//!
//! Needs the AWS CLI (`pip install awscli`; `.ci/run` and `test.sh` install it). Without it
//! these tests fail and say so: they are never skipped silently.

use quota_blackbox::aws::Aws;
use quota_proto::v1::*;
use serde_json::Value;
use std::io::Write;

mod common;
use common::Node;

use quota_blackbox::aws::{SECRET, access_keys};

/// Run blocking CLI calls off the runtime's worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    quota_core::Date::from_day_number(days as i64).to_string()
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

// Property: the CLI manages keys, plans, plan keys and usage end to end, and the gRPC API
// sees the same state. Set-up: one node with an access key; a plan with a throttle, a daily
// quota of 100 and a stage; two keys (one generated, one with a given value). Pass: every
// answer has the managed service's fields; 7 increments show as [7, 93] in the usage;
// setting remaining to 50 shows [7, 50]; patches change what they name; deletes are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keys_plans_and_usage() {
    let node = Node::start_aws(&access_keys()).await;
    let aws = Aws::new(node.aws.unwrap());

    let (plan, alice, bob) = blocking(move || {
        let plan = aws.run(&[
            "create-usage-plan",
            "--name",
            "gold",
            "--description",
            "the gold plan",
            "--throttle",
            "burstLimit=10,rateLimit=5",
            "--quota",
            "limit=100,offset=0,period=DAY",
            "--api-stages",
            "apiId=orders,stage=prod",
        ]);
        assert_eq!(plan["name"], "gold");
        assert_eq!(plan["quota"]["limit"], 100);
        assert_eq!(plan["quota"]["period"], "DAY");
        assert_eq!(plan["throttle"]["burstLimit"], 10);
        assert_eq!(plan["apiStages"][0]["apiId"], "orders");
        let plan_id = s(&plan["id"]);

        let alice = aws.run(&["create-api-key", "--name", "alice", "--enabled"]);
        let value = s(&alice["value"]);
        assert!(value.starts_with("qdk_"), "{value}");
        assert_eq!(alice["enabled"], true);
        assert!(alice["createdDate"].is_string() || alice["createdDate"].is_number());
        let alice_id = s(&alice["id"]);

        let bob_value = "bob-0123456789abcdefghij";
        let bob = aws.run(&[
            "create-api-key",
            "--name",
            "bob",
            "--value",
            bob_value,
            "--customer-id",
            "acme",
        ]);
        assert_eq!(bob["value"], bob_value);
        assert_eq!(bob["customerId"], "acme");
        assert_eq!(
            bob["enabled"], false,
            "keys are created disabled by default"
        );
        let bob_id = s(&bob["id"]);

        // The value is shown once: never again, even when asked.
        let got = aws.run(&["get-api-key", "--api-key", &alice_id, "--include-value"]);
        assert_eq!(got["name"], "alice");
        assert!(got.get("value").is_none(), "{got}");

        for key in [&alice_id, &bob_id] {
            let pk = aws.run(&[
                "create-usage-plan-key",
                "--usage-plan-id",
                &plan_id,
                "--key-id",
                key,
                "--key-type",
                "API_KEY",
            ]);
            assert_eq!(pk["type"], "API_KEY");
            assert_eq!(&s(&pk["id"]), key);
        }
        aws.fail(&[
            "create-usage-plan-key",
            "--usage-plan-id",
            &plan_id,
            "--key-id",
            &alice_id,
            "--key-type",
            "API_KEY",
        ])
        .assert("ConflictException", "already");
        let keys = aws.run(&["get-usage-plan-keys", "--usage-plan-id", &plan_id]);
        assert_eq!(keys["items"].as_array().unwrap().len(), 2);
        let named = aws.run(&[
            "get-usage-plan-keys",
            "--usage-plan-id",
            &plan_id,
            "--name-query",
            "bo",
        ]);
        assert_eq!(named["items"].as_array().unwrap().len(), 1);
        assert_eq!(named["items"][0]["name"], "bob");
        let pk = aws.run(&[
            "get-usage-plan-key",
            "--usage-plan-id",
            &plan_id,
            "--key-id",
            &bob_id,
        ]);
        assert_eq!(pk["name"], "bob");
        let plans = aws.run(&["get-usage-plans", "--key-id", &alice_id]);
        assert_eq!(plans["items"][0]["id"], plan_id.as_str());
        ((plan_id, value), alice_id, bob_id)
    })
    .await;
    let ((plan_id, alice_value), alice_id, bob_id) = (plan, alice, bob);

    // Seven requests of alice's, counted through the gRPC data API.
    let mut data = node.data();
    for _ in 0..7 {
        let r = data
            .increment(IncrementRequest {
                key: Some(increment_request::Key::Secret(alice_value.clone())),
                target: Some(increment_request::Target::Plan(PlanSelector {
                    by: Some(plan_selector::By::Id(plan_id.clone())),
                })),
                cost: 1,
                request_id: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.allowed, "{r:?}");
    }

    let aws = Aws::new(node.aws.unwrap());
    let (p, a) = (plan_id.clone(), alice_id.clone());
    blocking(move || {
        let day = today();
        let usage = aws.run(&[
            "get-usage",
            "--usage-plan-id",
            &p,
            "--start-date",
            &day,
            "--end-date",
            &day,
        ]);
        assert_eq!(usage["usagePlanId"], p.as_str());
        assert_eq!(usage["items"][&a], serde_json::json!([[7, 93]]), "{usage}");
        assert_eq!(
            usage["items"][&bob_id],
            serde_json::json!([[0, 100]]),
            "{usage}"
        );

        let updated = aws.run(&[
            "update-usage",
            "--usage-plan-id",
            &p,
            "--key-id",
            &a,
            "--patch-operations",
            "op=replace,path=/remaining,value=50",
        ]);
        assert_eq!(
            updated["items"][&a],
            serde_json::json!([[7, 50]]),
            "{updated}"
        );
        let usage = aws.run(&[
            "get-usage",
            "--usage-plan-id",
            &p,
            "--key-id",
            &a,
            "--start-date",
            &day,
            "--end-date",
            &day,
        ]);
        assert_eq!(usage["items"][&a], serde_json::json!([[7, 50]]), "{usage}");
        assert!(usage["items"].get(&bob_id).is_none(), "{usage}");

        let plan = aws.run(&[
            "update-usage-plan",
            "--usage-plan-id",
            &p,
            "--patch-operations",
            "op=replace,path=/throttle/rateLimit,value=20",
            "op=replace,path=/quota/limit,value=1000",
            "op=replace,path=/apiStages/orders:prod/throttle/~1orders/GET/rateLimit,value=2",
            "op=replace,path=/apiStages/orders:prod/throttle/~1orders/GET/burstLimit,value=4",
            "op=replace,path=/description,value=changed",
        ]);
        assert_eq!(plan["throttle"]["rateLimit"], 20.0);
        assert_eq!(plan["quota"]["limit"], 1000);
        assert_eq!(plan["description"], "changed");
        assert_eq!(
            plan["apiStages"][0]["throttle"]["/orders/GET"],
            serde_json::json!({"burstLimit": 4, "rateLimit": 2.0})
        );
        assert_eq!(aws.run(&["get-usage-plan", "--usage-plan-id", &p]), plan);

        let key = aws.run(&[
            "update-api-key",
            "--api-key",
            &a,
            "--patch-operations",
            "op=replace,path=/name,value=alice2",
            "op=replace,path=/enabled,value=false",
        ]);
        assert_eq!(key["name"], "alice2");
        assert_eq!(key["enabled"], false);

        aws.run(&[
            "delete-usage-plan-key",
            "--usage-plan-id",
            &p,
            "--key-id",
            &bob_id,
        ]);
        aws.fail(&[
            "get-usage-plan-key",
            "--usage-plan-id",
            &p,
            "--key-id",
            &bob_id,
        ])
        .assert("NotFoundException", &bob_id);
        aws.run(&["delete-api-key", "--api-key", &bob_id]);
        aws.fail(&["get-api-key", "--api-key", &bob_id])
            .assert("NotFoundException", "Invalid API Key identifier");
    })
    .await;

    // The gRPC admin API sees what the AWS API changed: one state, one log.
    let key = node
        .admin()
        .get_key(GetKeyRequest {
            key: Some(KeySelector {
                by: Some(key_selector::By::Id(alice_id.clone())),
            }),
            allow_stale: false,
        })
        .await
        .unwrap()
        .into_inner();
    let k = key.key.unwrap();
    assert_eq!(k.name, "alice2");
    assert!(!k.enabled);
    let plan = node
        .admin()
        .get_plan(GetPlanRequest {
            plan: Some(PlanSelector {
                by: Some(plan_selector::By::Id(plan_id.clone())),
            }),
            allow_stale: false,
        })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(plan.spec.unwrap().quota.unwrap().limit, 1000);

    let aws = Aws::new(node.aws.unwrap());
    blocking(move || {
        aws.run(&["delete-usage-plan", "--usage-plan-id", &plan_id]);
        aws.fail(&["get-usage-plan", "--usage-plan-id", &plan_id])
            .assert("NotFoundException", "Invalid Usage Plan ID");
    })
    .await;
    node.stop().await;
}

// Property: a CSV import of 250 keys attaches them to their plan, importing the same file
// again updates rather than duplicates, the CLI pages through all 250 keys (its automatic
// paging and the manual --max-items/--starting-token), and an import with a bad row and
// --fail-on-warnings imports nothing. Set-up: one node, one plan, generated CSV files.
// Pass: exact counts and ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_and_paging() {
    let node = Node::start_aws(&access_keys()).await;
    let aws = Aws::new(node.aws.unwrap());
    blocking(move || {
        let plan = aws.run(&[
            "create-usage-plan",
            "--name",
            "bulk",
            "--quota",
            "limit=1000,period=MONTH",
        ]);
        let plan_id = s(&plan["id"]);
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("keys.csv");
        let mut f = std::fs::File::create(&csv).unwrap();
        writeln!(f, "Name,key,description,Enabled,usageplanIds").unwrap();
        for i in 0..250 {
            writeln!(
                f,
                "user{i:03},imported-key-{i:03}-abcdefghijkl,imported,TRUE,{plan_id}"
            )
            .unwrap();
        }
        drop(f);
        let body = format!("fileb://{}", csv.display());
        let imported = aws.run(&["import-api-keys", "--body", &body, "--format", "csv"]);
        let ids: Vec<String> = imported["ids"].as_array().unwrap().iter().map(s).collect();
        // The import writes concurrently, so ids are not assigned in the file's order; lists
        // come in id order.
        let by_id = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort_by_key(|id| id[1..].parse::<u64>().unwrap());
            v
        };
        let ids_in_order = by_id(&ids);
        assert_eq!(ids_in_order.len(), 250);
        assert_eq!(ids_in_order.first().map(String::as_str), Some("k1"));
        assert_eq!(ids_in_order.last().map(String::as_str), Some("k250"));
        assert_eq!(ids.len(), 250, "{imported}");
        assert_eq!(imported["warnings"], serde_json::json!([]));
        // The same values again: the same keys, updated.
        let again = aws.run(&["import-api-keys", "--body", &body, "--format", "csv"]);
        let again: Vec<String> = again["ids"].as_array().unwrap().iter().map(s).collect();
        assert_eq!(again, ids);

        // The CLI follows `position` itself.
        let all = aws.run(&["get-api-keys", "--page-size", "100"]);
        let listed: Vec<String> = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| s(&k["id"]))
            .collect();
        assert_eq!(listed, ids_in_order);
        // By hand, 100 at a time.
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut args = vec!["get-api-keys", "--max-items", "100", "--page-size", "30"];
            if let Some(t) = &token {
                args.extend(["--starting-token", t.as_str()]);
            }
            let page = aws.run(&args);
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 100);
            seen.extend(items.iter().map(|k| s(&k["id"])));
            match page.get("NextToken") {
                Some(t) => token = Some(s(t)),
                None => break,
            }
        }
        assert_eq!(seen, ids_in_order);
        let named = aws.run(&["get-api-keys", "--name-query", "user12"]);
        assert_eq!(named["items"].as_array().unwrap().len(), 10);
        let plan_keys = aws.run(&[
            "get-usage-plan-keys",
            "--usage-plan-id",
            &plan_id,
            "--page-size",
            "60",
        ]);
        assert_eq!(plan_keys["items"].as_array().unwrap().len(), 250);

        // A bad row with --fail-on-warnings: nothing is imported, the line is named and the
        // key value is not echoed.
        let bad = dir.path().join("bad.csv");
        std::fs::write(
            &bad,
            "name,key\nfresh1,fresh-key-0001-abcdefghijkl\nfresh2,short\n",
        )
        .unwrap();
        let e = aws.fail(&[
            "import-api-keys",
            "--body",
            &format!("fileb://{}", bad.display()),
            "--format",
            "csv",
            "--fail-on-warnings",
        ]);
        e.assert("BadRequestException", "line 3");
        assert!(!e.stderr.contains("short,"), "{}", e.stderr);
        let named = aws.run(&["get-api-keys", "--name-query", "fresh"]);
        assert_eq!(named["items"], serde_json::json!([]));
        // Without the flag, the good row is imported and the bad one is a warning.
        let partial = aws.run(&[
            "import-api-keys",
            "--body",
            &format!("fileb://{}", bad.display()),
            "--format",
            "csv",
        ]);
        assert_eq!(partial["ids"].as_array().unwrap().len(), 1);
        assert!(s(&partial["warnings"][0]).starts_with("line 3"));
    })
    .await;
    node.stop().await;
}

// Property: errors come back in the managed service's shapes, name what was wrong and
// change nothing; signatures are checked. Set-up: one node with one access key. Pass: the
// CLI reports NotFoundException for unknown ids, BadRequestException for bad patch paths and
// values, MissingAuthenticationTokenException for an unsigned request,
// UnrecognizedClientException for an unknown access key, InvalidSignatureException for a
// wrong secret; the plan is unchanged after the refused patches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_and_signatures() {
    let node = Node::start_aws(&access_keys()).await;
    let addr = node.aws.unwrap();
    blocking(move || {
        let aws = Aws::new(addr);
        aws.fail(&["get-api-key", "--api-key", "k999"])
            .assert("NotFoundException", "k999");
        aws.fail(&["get-api-key", "--api-key", "nonsense"])
            .assert("NotFoundException", "Invalid API Key identifier");
        aws.fail(&["get-usage-plan", "--usage-plan-id", "p42"])
            .assert("NotFoundException", "p42");
        let plan = aws.run(&[
            "create-usage-plan",
            "--name",
            "p",
            "--quota",
            "limit=10,period=WEEK",
        ]);
        let id = s(&plan["id"]);
        aws.fail(&[
            "update-usage-plan",
            "--usage-plan-id",
            &id,
            "--patch-operations",
            "op=replace,path=/quota/limit,value=20",
            "op=replace,path=/nonsense,value=1",
        ])
        .assert("BadRequestException", "Invalid patch path '/nonsense'");
        aws.fail(&[
            "update-usage-plan",
            "--usage-plan-id",
            &id,
            "--patch-operations",
            "op=replace,path=/quota/period,value=YEAR",
        ])
        .assert("BadRequestException", "YEAR");
        assert_eq!(aws.run(&["get-usage-plan", "--usage-plan-id", &id]), plan);
        aws.fail(&["create-api-key", "--name", "x", "--value", "too-short"])
            .assert("BadRequestException", "value");
        aws.fail(&[
            "get-usage",
            "--usage-plan-id",
            &id,
            "--start-date",
            "2026-01-05",
            "--end-date",
            "2026-01-01",
        ])
        .assert("BadRequestException", "endDate");

        let mut unsigned = Aws::new(addr);
        unsigned.extra.push("--no-sign-request".into());
        unsigned.fail(&["get-api-keys"]).assert(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
        let mut stranger = Aws::new(addr);
        stranger.access_key = "AKIDNOBODY0000000000".into();
        stranger
            .fail(&["get-api-keys"])
            .assert("UnrecognizedClientException", "security token");
        let mut wrong = Aws::new(addr);
        wrong.secret = "not-the-secret-at-all-0000000000000000000".into();
        let e = wrong.fail(&["create-api-key", "--name", "sneaky"]);
        e.assert("InvalidSignatureException", "signature");
        assert!(!e.stderr.contains(SECRET));
        // The refused create changed nothing.
        let keys = aws.run(&["get-api-keys"]);
        assert_eq!(keys["items"], serde_json::json!([]));
    })
    .await;
    node.stop().await;
}

/// One raw HTTP/1.1 exchange: the status, the `x-amzn-ErrorType` header and the body.
async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Option<String>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before reading a large body, and close.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let kind = head
        .lines()
        .find_map(|l| l.strip_prefix("x-amzn-errortype: "))
        .map(str::to_owned);
    (status, kind, body.to_owned())
}

// Property: malformed requests get the managed service's error shape naming what was wrong,
// change nothing, and leave the node serving. Set-up: one node serving the AWS API without
// signature checks (the `--dev` mode); raw HTTP requests. Pass: invalid JSON and wrong types
// -> 400 BadRequestException naming the problem; a body over the limit -> 413; an unknown
// resource -> 404; a bad query parameter -> 400; afterwards no plan exists and a valid
// create succeeds (201).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bad_requests() {
    let node = Node::start_aws_unsigned().await;
    let addr = node.aws.unwrap();
    let (status, kind, body) = raw(addr, "POST", "/usageplans", b"{not json").await;
    assert_eq!(
        (status, kind.as_deref()),
        (400, Some("BadRequestException")),
        "{body}"
    );
    assert!(body.contains("invalid request body"), "{body}");
    let (status, _, body) = raw(addr, "POST", "/usageplans", br#"{"name": 5}"#).await;
    assert_eq!(status, 400, "{body}");
    let big = vec![b' '; 2 << 20];
    let (status, _, _) = raw(addr, "POST", "/usageplans", &big).await;
    assert_eq!(status, 413);
    let (status, kind, _) = raw(addr, "GET", "/restapis", b"").await;
    assert_eq!((status, kind.as_deref()), (404, Some("NotFoundException")));
    let (status, _, body) = raw(addr, "GET", "/apikeys?limit=100000", b"").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit"), "{body}");
    let (status, _, body) = raw(addr, "GET", "/usageplans", b"").await;
    assert_eq!((status, body.as_str()), (200, r#"{"item":[]}"#));
    let (status, _, body) = raw(addr, "POST", "/usageplans", br#"{"name":"ok"}"#).await;
    assert_eq!(status, 201, "{body}");
    node.stop().await;
}
