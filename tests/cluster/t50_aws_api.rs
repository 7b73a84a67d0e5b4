//! The AWS API Gateway-compatible API across a real three-node cluster, driven by the real
//! AWS CLI: any node serves it, followers forward its writes through the same Raft log, and
//! it keeps working when the leader is killed.

use std::time::Duration;

use quota_blackbox::aws::{Aws, access_keys};
use quota_blackbox::{Cluster, ClusterOpts};
use serde_json::Value;

/// How long a new leader may take after a kill.
const ELECTION: Duration = Duration::from_secs(10);

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

// Property: what one node's AWS API writes, every node's AWS API reads, and after kill -9 of
// the leader the survivors accept writes and agree. Set-up: 3 nodes, each serving the AWS
// API with signature checks; a plan and a key created and attached through a follower.
// Pass: every node lists the key and the attachment; after the leader is killed and a new
// one elected, a key created through one survivor is listed, attached, by the other, and
// both survivors list the same two keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_api_on_every_node_survives_leader_loss() {
    let opts = ClusterOpts {
        aws_access_keys: Some(access_keys()),
        ..ClusterOpts::default()
    };
    let mut cluster = Cluster::start(3, opts).await.expect("cluster starts");
    let result = scenario(&mut cluster).await;
    cluster.finish(result);
}

async fn scenario(cluster: &mut Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(ELECTION).await?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&i| i != leader)
        .expect("a follower");
    let endpoints: Vec<(u64, Aws)> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, Aws::new(cluster.aws_addr(id).expect("aws api served"))))
        .collect();
    let via = Aws::new(cluster.aws_addr(follower).expect("aws api served"));
    let (plan, first) = tokio::task::spawn_blocking(move || {
        let plan = via.run(&[
            "create-usage-plan",
            "--name",
            "t50",
            "--quota",
            "limit=100,period=DAY",
        ]);
        let plan = plan["id"].as_str().expect("plan id").to_owned();
        let key = via.run(&["create-api-key", "--name", "t50-first", "--enabled"]);
        let key = key["id"].as_str().expect("key id").to_owned();
        via.run(&[
            "create-usage-plan-key",
            "--usage-plan-id",
            &plan,
            "--key-id",
            &key,
            "--key-type",
            "API_KEY",
        ]);
        for (id, aws) in &endpoints {
            let keys = aws.run(&["get-api-keys"]);
            assert_eq!(ids(&keys), vec![key.clone()], "node {id}");
            let attached = aws.run(&["get-usage-plan-keys", "--usage-plan-id", &plan]);
            assert_eq!(ids(&attached), vec![key.clone()], "node {id}");
        }
        (plan, key)
    })
    .await?;

    cluster.kill9(leader)?;
    // The survivors elect a new leader (until then they may still name the killed one).
    let deadline = std::time::Instant::now() + ELECTION;
    loop {
        match cluster.leader().await {
            Some(l) if l != leader => break,
            _ if std::time::Instant::now() > deadline => {
                anyhow::bail!("no new leader within {ELECTION:?} of killing node {leader}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let survivors: Vec<u64> = cluster.running();
    let writer = Aws::new(cluster.aws_addr(survivors[0]).expect("aws api"));
    let reader = Aws::new(cluster.aws_addr(survivors[1]).expect("aws api"));
    tokio::task::spawn_blocking(move || {
        let key = writer.run(&["create-api-key", "--name", "t50-second", "--enabled"]);
        let key = key["id"].as_str().expect("key id").to_owned();
        writer.run(&[
            "create-usage-plan-key",
            "--usage-plan-id",
            &plan,
            "--key-id",
            &key,
            "--key-type",
            "API_KEY",
        ]);
        let mut both = vec![first, key];
        both.sort();
        assert_eq!(ids(&reader.run(&["get-api-keys"])), both);
        assert_eq!(ids(&writer.run(&["get-api-keys"])), both);
        assert_eq!(
            ids(&reader.run(&["get-usage-plan-keys", "--usage-plan-id", &plan])),
            both
        );
    })
    .await?;
    Ok(())
}
