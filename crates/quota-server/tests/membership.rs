//! Membership changes on real nodes (in-process, real sockets, real sled): add a node as a
//! learner and then a voter, and remove it again.

use quota_proto::v1::*;
use std::time::Duration;

mod common;
use common::Node;

async fn status(node: &Node) -> ClusterStatus {
    node.cluster()
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

// Property: a node started without members joins through AddNode (learner, then voter),
// receives the existing data, and leaves through RemoveNode; removing a non-member is not
// an error; bad addresses are refused. Set-up: node 1 bootstraps alone and holds a plan;
// node 2 starts empty; AddNode is sent to node 2's future leader through node 1.
// Pass: node 1 reports two voters; node 2 serves the plan in a linearizable read; after
// RemoveNode node 1 reports one member.
#[tokio::test]
async fn add_and_remove_a_node() {
    let one = Node::start_with(1, true, None).await;
    let two = Node::start_with(2, false, None).await;
    one.admin()
        .create_plan(CreatePlanRequest {
            request_id: vec![],
            spec: Some(PlanSpec {
                name: "before-join".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let bad = one
        .cluster()
        .add_node(AddNodeRequest {
            id: 2,
            raft_address: "no-port".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let added = one
        .cluster()
        .add_node(AddNodeRequest {
            id: 2,
            raft_address: two.addr.to_string(),
            public_address: two.addr.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let voters: Vec<u64> = added
        .members
        .iter()
        .filter(|m| m.role == Role::Voter as i32)
        .map(|m| m.id)
        .collect();
    assert_eq!(voters, vec![1, 2]);
    // Node 2 knows the leader and serves what was written before it joined.
    let mut seen = None;
    for _ in 0..100 {
        if let Ok(p) = two
            .admin()
            .get_plan(GetPlanRequest {
                plan: Some(PlanSelector {
                    by: Some(plan_selector::By::Name("before-join".into())),
                }),
                allow_stale: false,
            })
            .await
        {
            seen = p.into_inner().plan;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.unwrap().spec.unwrap().name, "before-join");
    assert_eq!(status(&two).await.leader_id, 1);

    let removed = one
        .cluster()
        .remove_node(RemoveNodeRequest {
            request_id: vec![],
            id: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(
        removed.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1]
    );
    // Again: not a member any more, which is not an error.
    one.cluster()
        .remove_node(RemoveNodeRequest {
            request_id: vec![],
            id: 2,
        })
        .await
        .unwrap();
    // The last voter cannot be removed.
    let last = one
        .cluster()
        .remove_node(RemoveNodeRequest {
            request_id: vec![],
            id: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(last.code(), tonic::Code::FailedPrecondition);
    two.stop().await;
    one.stop().await;
}
