//! The real `quotactl` binary against a real single-node `quotad --dev` cluster.

mod common;

use common::{Node, free_port, quotactl_at};

const EXIT_REFUSED: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_UNREACHABLE: i32 = 3;

// Property: a key goes through its whole lifecycle from the CLI, and --json prints the
// documented field names; the secret is printed at creation and rotation only.
// Set-up: one node; create, get (by name and id), list (also through a dead endpoint
// listed first), update, disable, enable, rotate, delete, then get again.
// Pass: each step exits 0 with the expected JSON fields; the rotated secret differs; a
// get after delete exits 1 (not found).
#[test]
fn key_lifecycle_with_json() {
    let node = Node::start();
    let created = node
        .q(&[
            "--json",
            "key",
            "create",
            "alice",
            "--owner",
            "acme",
            "--tag",
            "team=web",
            "--description",
            "first",
        ])
        .expect(0)
        .json();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("qdk_"), "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["name"], "alice");
    assert_eq!(created["owner"], "acme");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["tags"]["team"], "web");
    assert_eq!(created["expires_at"], serde_json::Value::Null);
    assert!(
        created["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let got = node.q(&["--json", "key", "get", "alice"]).expect(0).json();
    assert_eq!(got["id"], id.as_str());
    assert!(
        got.get("secret").is_none(),
        "get must not show a secret: {got}"
    );
    assert_eq!(got["plans"], serde_json::json!([]));
    assert_eq!(
        got["prefix"].as_str().map(|p| secret.starts_with(p)),
        Some(true)
    );
    let by_id = node.q(&["--json", "key", "get", &id]).expect(0).json();
    assert_eq!(by_id["name"], "alice");

    let list = node.q(&["--json", "key", "list"]).expect(0).json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    // A dead endpoint first in the list: the call moves on to the next one.
    let endpoints = format!("http://127.0.0.1:{},{}", free_port(), node.endpoint);
    let via_second = node
        .q(&["--json", "--endpoints", &endpoints, "key", "list"])
        .expect(0)
        .json();
    assert_eq!(via_second, list);
    let table = node.q(&["key", "list"]).expect(0);
    assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
    assert!(!table.stdout.contains(&secret));

    let updated = node
        .q(&[
            "--json",
            "key",
            "update",
            "alice",
            "--description",
            "second",
            "--clear-owner",
            "--expires",
            "2030-01-01",
        ])
        .expect(0)
        .json();
    assert_eq!(updated["description"], "second");
    assert_eq!(updated["owner"], serde_json::Value::Null);
    assert_eq!(updated["expires_at"], "2030-01-01T00:00:00.000Z");

    let disabled = node
        .q(&["--json", "key", "disable", "alice"])
        .expect(0)
        .json();
    assert_eq!(disabled["enabled"], false);
    let enabled = node.q(&["--json", "key", "enable", &id]).expect(0).json();
    assert_eq!(enabled["enabled"], true);

    let rotated = node
        .q(&["--json", "key", "rotate", "alice", "--grace", "1h"])
        .expect(0)
        .json();
    let new_secret = rotated["secret"].as_str().expect("new secret");
    assert_ne!(new_secret, secret);
    assert!(
        rotated["previous_valid_until"].as_str().is_some(),
        "{rotated}"
    );
    let text = node.q(&["key", "rotate", "alice"]).expect(0);
    assert!(text.stdout.contains("shown this once"), "{}", text.stdout);

    node.q(&["--json", "key", "delete", "alice"]).expect(0);
    let gone = node.q(&["key", "get", "alice"]).expect(EXIT_REFUSED);
    assert!(gone.stderr.contains("NOT_FOUND"), "{}", gone.stderr);
    let gone = node.q(&["--json", "key", "get", &id]).expect(EXIT_REFUSED);
    assert!(
        gone.stderr.contains("\"kind\":\"refused\""),
        "{}",
        gone.stderr
    );
}

// Property: a plan's quota is enforced through `incr`, and the usage report and grants
// show and change it; a denial exits 1.
// Set-up: one node; plan "basic" with 3 per day, a throttle, a stage and a route
// throttle; key bob attached; incr until exhaustion; usage; grant; set-remaining.
// Pass: three increments exit 0, the fourth exits 1 with QUOTA_EXCEEDED; the report
// shows 3 used today and 0 remaining; after a grant of 2 one more passes (also by
// api/stage); set-remaining 0 denies again.
#[test]
fn plan_quota_until_exhausted() {
    let node = Node::start();
    let plan = node
        .q(&[
            "--json",
            "plan",
            "create",
            "basic",
            "--limit",
            "3",
            "--period",
            "day",
            "--rate",
            "100",
            "--burst",
            "100",
            "--stage",
            "shop/prod",
            "--route-throttle",
            "POST /orders=50:60",
            "--description",
            "Basic tier",
        ])
        .expect(0)
        .json();
    assert_eq!(plan["quota"]["limit"], 3);
    assert_eq!(plan["quota"]["period"], "DAY");
    assert_eq!(plan["throttle"]["burst_limit"], 100);
    assert_eq!(plan["stages"][0]["api"], "shop");
    assert_eq!(plan["route_throttles"]["POST /orders"]["burst_limit"], 60);
    node.q(&["key", "create", "bob"]).expect(0);
    let assoc = node
        .q(&["--json", "plan", "attach", "basic", "bob"])
        .expect(0)
        .json();
    assert_eq!(assoc["extra_per_period"], 0);

    for i in 1..=3u64 {
        let r = node
            .q(&["--json", "incr", "bob", "--plan", "basic"])
            .expect(0)
            .json();
        assert_eq!(r["allowed"], true);
        assert_eq!(r["used"], i);
        assert_eq!(r["remaining"], 3 - i);
    }
    let denied = node
        .q(&["--json", "incr", "bob", "--plan", "basic"])
        .expect(EXIT_REFUSED)
        .json();
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["reason"], "QUOTA_EXCEEDED");
    assert_eq!(denied["denied_plan_id"], plan["id"]);
    node.q(&["incr", "bob", "--api", "shop", "--stage", "prod"])
        .expect(EXIT_REFUSED);

    let report = node.q(&["--json", "usage", "basic"]).expect(0).json();
    let keys = report["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let days = keys[0]["days"].as_array().expect("days");
    assert_eq!(days.len(), 7);
    let today = days.last().expect("today");
    assert_eq!(
        (today["used"].as_u64(), today["remaining"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(keys[0]["current"]["remaining"], 0);
    let table = node.q(&["usage", "basic", "--key", "bob"]).expect(0);
    assert!(table.stdout.contains("REMAINING"), "{}", table.stdout);

    let granted = node
        .q(&["--json", "usage", "grant", "basic", "bob", "2"])
        .expect(0)
        .json();
    assert_eq!(granted["remaining"], 2);
    let r = node
        .q(&[
            "--json",
            "incr",
            "bob",
            "--api",
            "shop",
            "--stage",
            "prod",
            "--route",
            "POST /orders",
            "--cost",
            "1",
        ])
        .expect(0)
        .json();
    assert_eq!(r["remaining"], 1);
    let set = node
        .q(&["--json", "usage", "set-remaining", "basic", "bob", "0"])
        .expect(0)
        .json();
    assert_eq!(set["remaining"], 0);
    node.q(&["incr", "bob", "--plan", "basic"])
        .expect(EXIT_REFUSED);

    // A retried increment with the same request id counts once.
    node.q(&["usage", "set-remaining", "basic", "bob", "5"])
        .expect(0);
    let id = "00112233445566778899aabbccddeeff";
    let first = node
        .q(&[
            "--json",
            "incr",
            "bob",
            "--plan",
            "basic",
            "--request-id",
            id,
        ])
        .expect(0)
        .json();
    let again = node
        .q(&[
            "--json",
            "incr",
            "bob",
            "--plan",
            "basic",
            "--request-id",
            id,
        ])
        .expect(0)
        .json();
    assert_eq!(first["remaining"], again["remaining"]);

    let updated = node
        .q(&[
            "--json",
            "plan",
            "update",
            "basic",
            "--limit",
            "10",
            "--no-throttle",
            "--remove-route-throttle",
            "POST /orders",
        ])
        .expect(0)
        .json();
    assert_eq!(updated["quota"]["limit"], 10);
    assert_eq!(updated["throttle"], serde_json::Value::Null);
    node.q(&["plan", "detach", "basic", "bob"]).expect(0);
    node.q(&["incr", "bob", "--plan", "basic"])
        .expect(EXIT_REFUSED);
    node.q(&["plan", "delete", "basic"]).expect(0);
    node.q(&["plan", "get", "basic"]).expect(EXIT_REFUSED);
}

// Property: with no server to talk to, quotactl gives up after --retry-for and exits 3
// with a message saying what to do.
// Set-up: a free port nobody listens on. Pass: exit 3 within a few seconds, and the
// message names the endpoint and `quotad --dev`.
#[test]
fn no_server_exits_3() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let run = quotactl_at(&endpoint, &["--retry-for", "0.5", "key", "list"], None)
        .expect(EXIT_UNREACHABLE);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(run.stderr.contains(&endpoint), "{}", run.stderr);
    assert!(run.stderr.contains("quotad --dev"), "{}", run.stderr);
    let json = quotactl_at(
        &endpoint,
        &["--json", "--retry-for", "0", "cluster", "status"],
        None,
    )
    .expect(EXIT_UNREACHABLE);
    assert!(
        json.stderr.contains("\"kind\":\"unreachable\""),
        "{}",
        json.stderr
    );
}

// Property: bad command lines exit 2 without contacting anything, and say what is wrong.
// Set-up: an unknown subcommand, a throttle without burst, a quota without period, a
// bad date, a bad request id, an unreadable file. No server runs.
// Pass: exit 2 for each, with a message naming the problem.
#[test]
fn bad_usage_exits_2() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let q = |args: &[&str]| quotactl_at(&endpoint, args, None).expect(EXIT_USAGE);
    assert!(
        q(&["key", "frobnicate"])
            .stderr
            .contains("unrecognized subcommand")
    );
    assert!(
        q(&["plan", "create", "x", "--rate", "1"])
            .stderr
            .contains("--burst")
    );
    assert!(
        q(&["plan", "create", "x", "--limit", "5"])
            .stderr
            .contains("--period")
    );
    assert!(
        q(&["usage", "p1", "--from", "yesterday"])
            .stderr
            .contains("--from")
    );
    assert!(
        q(&["incr", "k1", "--plan", "p1", "--request-id", "xyz"])
            .stderr
            .contains("--request-id")
    );
    assert!(q(&["incr", "k1"]).stderr.contains("--plan"));
    assert!(
        q(&["apply", "-f", "/nonexistent/serverless.yml"])
            .stderr
            .contains("cannot read")
    );
    let help = quotactl_at(&endpoint, &["apply", "--help"], None).expect(0);
    assert!(help.stdout.contains("serverless.yml"));
    let completions = quotactl_at(&endpoint, &["completions", "bash"], None).expect(0);
    assert!(completions.stdout.contains("quotactl"));
}

const SERVERLESS: &str = "\
service: shop
frameworkVersion: '3'
provider:
  name: aws
  runtime: nodejs18.x
  stage: ${opt:stage, 'dev'}
  apiGateway:
    apiKeys:
      - free:
          - ${opt:stage}-alice
          - bob
      - paid:
          - name: carol
            value: carol-secret-value-0123456789
            description: Carol's key
            customerId: acme
          - name: dave
            enabled: false
    usagePlan:
      - free:
          quota:
            limit: 5000
            offset: 2
            period: MONTH
          throttle:
            burstLimit: 200
            rateLimit: 100
      - paid:
          quota:
            limit: 50000
            period: DAY
          throttle:
            burstLimit: 2000
            rateLimit: 1000
functions:
  hello:
    handler: handler.hello
    events:
      - http:
          path: hello
          method: get
          private: true
resources:
  Resources:
    Bucket:
      Type: AWS::S3::Bucket
      Properties:
        BucketName: !Sub '${AWS::StackName}-bucket'
";

// Property: a serverless.yml with two plans and four keys applies, a second apply changes
// nothing, --dry-run changes nothing, and an invalid file names its line and field and
// changes nothing.
// Set-up: one node; the file above with --stage prod (one key with a given value, one
// disabled). Order: invalid file, dry run, apply, apply again, dry run of an edit.
// Pass: the invalid file and the dry run leave the cluster empty; the first apply makes
// 2 plans, 4 keys, 4 attachments and prints 3 secrets once; the imported value works as a
// secret; the second apply reports no changes, prints no secret and leaves the cluster
// byte-for-byte the same (timestamps included).
#[test]
fn serverless_yml_applied_twice() {
    let node = Node::start();
    let empty = node.snapshot();

    std::fs::create_dir_all(node.dir.path().join("bad")).expect("mkdir");
    let invalid = node.file(
        "bad/serverless.yml",
        &SERVERLESS.replace("limit: 50000", "limit: lots"),
    );
    let run = node
        .q(&["apply", "-f", &invalid, "--stage", "prod"])
        .expect(EXIT_USAGE);
    assert!(
        run.stderr
            .contains("serverless.yml:30: provider.apiGateway.usagePlan[1].paid.quota.limit"),
        "{}",
        run.stderr
    );
    std::fs::write(&invalid, SERVERLESS.replace("limit: 50000", "limit: 0")).expect("write");
    let run = node
        .q(&["--json", "apply", "-f", &invalid, "--stage", "prod"])
        .expect(EXIT_USAGE);
    assert!(
        run.stderr
            .contains(":30: provider.apiGateway.usagePlan[1].paid.quota.limit"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("\"kind\":\"invalid_file\""),
        "{}",
        run.stderr
    );
    assert_eq!(
        node.snapshot(),
        empty,
        "an invalid file changed the cluster"
    );

    let file = node.file("serverless.yml", SERVERLESS);
    let dry = node
        .q(&[
            "--json",
            "apply",
            "-f",
            &file,
            "--stage",
            "prod",
            "--dry-run",
        ])
        .expect(0)
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["changes"].as_array().map(Vec::len), Some(10), "{dry}");
    assert_eq!(dry["applied"], 0);
    assert_eq!(node.snapshot(), empty, "--dry-run changed the cluster");

    let first = node
        .q(&["--json", "apply", "-f", &file, "--stage", "prod"])
        .expect(0)
        .json();
    assert_eq!(first["applied"], 10, "{first}");
    let secrets = first["secrets"].as_array().expect("secrets");
    let names: Vec<_> = secrets
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["prod-alice", "bob", "dave"]);
    assert!(
        secrets
            .iter()
            .all(|s| s["secret"].as_str().is_some_and(|x| x.starts_with("qdk_")))
    );

    let after_first = node.snapshot();
    let plans = after_first["plans"].as_array().expect("plans");
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0]["name"], "free");
    assert_eq!(plans[0]["quota"]["offset"], 2);
    assert_eq!(plans[0]["quota"]["period"], "MONTH");
    assert_eq!(plans[0]["throttle"]["rate_limit"], 100.0);
    assert_eq!(
        plans[0]["stages"],
        serde_json::json!([{"api": "shop", "stage": "prod"}])
    );
    assert_eq!(plans[0]["keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(plans[1]["keys"].as_array().map(Vec::len), Some(2));
    let keys = after_first["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 4);
    let carol = keys.iter().find(|k| k["name"] == "carol").expect("carol");
    assert_eq!(
        (carol["imported"].as_bool(), carol["owner"].as_str()),
        (Some(true), Some("acme"))
    );
    let dave = keys.iter().find(|k| k["name"] == "dave").expect("dave");
    assert_eq!(dave["enabled"], false);

    // The imported value is carol's secret, as a gateway would present it.
    let incr = node
        .q_in(
            &[
                "--json",
                "incr",
                "--secret-stdin",
                "--api",
                "shop",
                "--stage",
                "prod",
            ],
            "carol-secret-value-0123456789\n",
        )
        .expect(0)
        .json();
    assert_eq!(incr["key_id"], carol["id"]);
    let after_incr = node.snapshot();

    let second = node
        .q(&["--json", "apply", "-f", &file, "--stage", "prod"])
        .expect(0)
        .json();
    assert_eq!(second["changes"], serde_json::json!([]), "{second}");
    assert_eq!(second["applied"], 0);
    assert_eq!(second["secrets"], serde_json::json!([]));
    assert!(
        second["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("carol") && n.contains("not imported again")),
        "{second}"
    );
    assert_eq!(
        node.snapshot(),
        after_incr,
        "the second apply changed the cluster"
    );
    let text = node.q(&["apply", "-f", &file, "--stage", "prod"]).expect(0);
    assert!(text.stdout.contains("No changes"), "{}", text.stdout);
    assert!(!text.stdout.contains("qdk_"), "{}", text.stdout);

    // An edit shows up as exactly the changes it makes; a dry run of it changes nothing.
    let edited = node.file(
        "serverless-edited.yml",
        &SERVERLESS
            .replace("limit: 5000\n", "limit: 6000\n")
            .replace("- bob\n", "- bobby\n"),
    );
    let dry = node
        .q(&[
            "--json",
            "apply",
            "-f",
            &edited,
            "--stage",
            "prod",
            "--dry-run",
        ])
        .expect(0)
        .json();
    let actions: Vec<_> = dry["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["action"].as_str().unwrap_or_default(),
                c["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        actions,
        ["update free", "create bobby", "attach bobby", "detach bob"]
    );
    assert_eq!(node.snapshot(), after_incr);
}

const NATIVE_YAML: &str = "\
version: 1
plans:
  - name: gold
    description: Paying customers
    throttle: {rate_limit: 50.5, burst_limit: 100}
    quota: {limit: 1000, period: week, week_start: sunday, offset: 10}
    stages: [orders/prod, {api: orders, stage: beta}]
    route_throttles:
      \"POST /orders\": {rate_limit: 5, burst_limit: 10}
  - name: trial
    quota: {limit: 50, period: month, month_start_day: 15}
keys:
  - name: erin
    description: Erin's key
    owner: initech
    tags: {team: web}
    expires_at: 2031-06-01T12:00:00Z
    plans: [gold, {plan: trial, extra: 25}]
  - name: frank
    value_env: QUOTACTL_TEST_FRANK
    enabled: false
    plans: [trial]
";

const NATIVE_TOML: &str = "\
[[plans]]
name = \"silver\"
throttle = { rate_limit = 10, burst_limit = 20 }
quota = { limit = 500, period = \"day\" }
stages = [\"orders/prod\"]

[[keys]]
name = \"gina\"
plans = [{ plan = \"silver\", extra = 5 }]
";

// Property: the native format (YAML and TOML) expresses everything a plan and a key can
// hold, applies, and is idempotent.
// Set-up: one node; the YAML file above (the imported value from the environment
// variable QUOTACTL_TEST_FRANK, given to quotactl only); then the TOML file;
// each applied twice; then a TOML file with an error.
// Pass: every field lands as written; second applies report no changes; the TOML error
// names line 3 and the field, exit 2.
#[test]
fn native_format_yaml_and_toml() {
    let node = Node::start();
    let env = [("QUOTACTL_TEST_FRANK", "frank-imported-value-0123456789")];
    let yaml = node.file("quota.yaml", NATIVE_YAML);
    let first = node
        .q_env(&["--json", "apply", "-f", &yaml], &env)
        .expect(0)
        .json();
    assert_eq!(first["format"], "native");
    assert_eq!(first["applied"], 7, "{first}");
    let second = node
        .q_env(&["--json", "apply", "-f", &yaml], &env)
        .expect(0)
        .json();
    assert_eq!(second["changes"], serde_json::json!([]), "{second}");

    let gold = node.q(&["--json", "plan", "get", "gold"]).expect(0).json();
    assert_eq!(gold["throttle"]["rate_limit"], 50.5);
    assert_eq!(gold["quota"]["week_start"], "SUNDAY");
    assert_eq!(gold["quota"]["offset"], 10);
    assert_eq!(gold["stages"].as_array().map(Vec::len), Some(2));
    assert_eq!(gold["route_throttles"]["POST /orders"]["rate_limit"], 5.0);
    let trial = node.q(&["--json", "plan", "get", "trial"]).expect(0).json();
    assert_eq!(trial["quota"]["month_start_day"], 15);
    let erin_in_trial = trial["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["key_name"] == "erin")
        .cloned();
    assert_eq!(
        erin_in_trial.map(|k| k["extra_per_period"].clone()),
        Some(serde_json::json!(25))
    );
    let erin = node.q(&["--json", "key", "get", "erin"]).expect(0).json();
    assert_eq!(erin["owner"], "initech");
    assert_eq!(erin["tags"]["team"], "web");
    assert_eq!(erin["expires_at"], "2031-06-01T12:00:00.000Z");
    let frank = node.q(&["--json", "key", "get", "frank"]).expect(0).json();
    assert_eq!(
        (frank["imported"].as_bool(), frank["enabled"].as_bool()),
        (Some(true), Some(false))
    );

    let toml = node.file("quota.toml", NATIVE_TOML);
    let first = node.q(&["--json", "apply", "-f", &toml]).expect(0).json();
    assert_eq!(first["applied"], 3, "{first}");
    let second = node.q(&["apply", "-f", &toml]).expect(0);
    assert!(second.stdout.contains("No changes"), "{}", second.stdout);
    let before = node.snapshot();
    let bad = node.file(
        "bad.toml",
        &NATIVE_TOML.replace("rate_limit = 10", "rate_limit = -1"),
    );
    let run = node.q(&["apply", "-f", &bad]).expect(EXIT_USAGE);
    assert!(
        run.stderr
            .contains("bad.toml:3: plans[0].throttle.rate_limit"),
        "{}",
        run.stderr
    );
    assert_eq!(node.snapshot(), before);
}

// Property: against a cluster with an admin token, quotactl sends the token from
// QUOTA_TOKEN or --token-file, and without it is refused with a hint (exit 1).
// Set-up: one node started with QUOTAD_ADMIN_TOKEN. Pass: no token exits 1 naming
// QUOTA_TOKEN; a wrong token exits 1; the right token from either source exits 0.
#[test]
fn admin_token_from_env_or_file() {
    let token = "test-admin-token-0123456789";
    let node = Node::start_with(Some(token));
    let run = node.q(&["key", "list"]).expect(EXIT_REFUSED);
    assert!(
        run.stderr.contains("UNAUTHENTICATED") && run.stderr.contains("QUOTA_TOKEN"),
        "{}",
        run.stderr
    );
    node.q_env(
        &["key", "list"],
        &[("QUOTA_TOKEN", "wrong-token-0123456789")],
    )
    .expect(EXIT_REFUSED);
    node.q_env(&["key", "create", "tok"], &[("QUOTA_TOKEN", token)])
        .expect(0);
    let file = node.file("token", &format!("{token}\n"));
    let list = node
        .q(&["--json", "--token-file", &file, "key", "list"])
        .expect(0)
        .json();
    assert_eq!(list[0]["name"], "tok");
}
