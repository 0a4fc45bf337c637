//! The diff on hand-made views: a resource half made by a killed run is never in sync, and adoption, drift,
//! moved dependencies and teardown ownership get the actions a user expects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::*;
use crate::config::Config;
use crate::model::desired_nodes;
use crate::resource::{Facts, Observed, execution_role, internet_gateway, route_table};
use crate::state::Record;

fn nat_config() -> Config {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model/testdata/nat.toml"))
        .expect("nat fixture");
    Config::parse(Path::new("nat.toml"), &text).expect("nat fixture parses")
}

fn nodes() -> Vec<Node> {
    desired_nodes(&nat_config(), &["us-east-1a".into(), "us-east-1b".into()], "us-east-1")
}

/// A state recording every desired node (id `id-<node>`, digest of its spec), in a scratch folder.
fn recorded(nodes: &[Node]) -> (tempfile::TempDir, StateFile) {
    let dir = tempfile::tempdir().unwrap();
    let mut state = StateFile::open(&dir.path().join("s.json"), "nat-test", "us-east-1").unwrap();
    for n in nodes {
        state.record(&n.id, Record { id: format!("id-{}", n.id), arn: None, digest: n.spec.digest() }).unwrap();
    }
    (dir, state)
}

fn observed(id: &str, facts: Facts) -> Observed {
    Observed { id: id.to_string(), arn: None, owner: Owner::Us, lineage: None, facts }
}

fn status<'a>(statuses: &'a [NodeStatus], node: &NodeId) -> &'a NodeStatus {
    statuses.iter().find(|s| &s.node == node).unwrap_or_else(|| panic!("no status for {node}"))
}

fn live_with(entries: Vec<(NodeId, Observed)>) -> Live {
    Live { nodes: entries.into_iter().collect::<BTreeMap<_, _>>(), ..Live::default() }
}

#[test]
fn an_internet_gateway_created_but_not_attached_is_not_in_sync() {
    let nodes = nodes();
    let (_dir, state) = recorded(&nodes);
    let igw = observed("id-igw", Facts::InternetGateway(internet_gateway::Facts { vpc: None }));
    let live = live_with(vec![(NodeId::InternetGateway, igw)]);
    let s = diff(&nodes, &state, &live).unwrap();
    let igw = status(&s, &NodeId::InternetGateway);
    assert!(matches!(&igw.verdict, Verdict::Drifted(d) if d.iter().any(|t| t.contains("attached"))), "{igw:?}");
    assert_eq!(igw.action, Action::Update);

    let attached = observed("id-igw", Facts::InternetGateway(internet_gateway::Facts { vpc: Some("id-vpc".into()) }));
    let s = diff(&nodes, &state, &live_with(vec![(NodeId::InternetGateway, attached)])).unwrap();
    assert_eq!(status(&s, &NodeId::InternetGateway).verdict, Verdict::InSync);
}

#[test]
fn an_execution_role_without_its_policy_is_not_in_sync() {
    let nodes = nodes();
    let (_dir, state) = recorded(&nodes);
    let bare = execution_role::Facts { policies: BTreeSet::new(), owner: None, inline: None, trust: None };
    let live = live_with(vec![(NodeId::ExecutionRole, observed("id-role", Facts::ExecutionRole(bare)))]);
    let s = diff(&nodes, &state, &live).unwrap();
    let role = status(&s, &NodeId::ExecutionRole);
    assert!(
        matches!(&role.verdict, Verdict::Drifted(d) if d.iter().any(|t| t.contains("AmazonECSTaskExecutionRolePolicy"))),
        "{role:?}"
    );
    assert_eq!(role.action, Action::Update);
}

#[test]
fn a_route_table_without_its_default_route_is_not_in_sync() {
    let nodes = nodes();
    let (_dir, state) = recorded(&nodes);
    let table = NodeId::RouteTable("public".into());
    let bare = observed("id-rtb", Facts::RouteTable(route_table::Facts { default_target: None }));
    let s = diff(&nodes, &state, &live_with(vec![(table.clone(), bare)])).unwrap();
    assert!(matches!(status(&s, &table).verdict, Verdict::Drifted(_)), "{:?}", status(&s, &table));
    assert_eq!(status(&s, &table).action, Action::Update);

    let routed = observed("id-rtb", Facts::RouteTable(route_table::Facts { default_target: Some("id-igw".into()) }));
    let s = diff(&nodes, &state, &live_with(vec![(table.clone(), routed)])).unwrap();
    assert_eq!(status(&s, &table).verdict, Verdict::InSync);
}

#[test]
fn an_unrecorded_resource_tagged_as_ours_is_adopted_and_one_tagged_otherwise_is_not() {
    let nodes = nodes();
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::open(&dir.path().join("s.json"), "nat-test", "us-east-1").unwrap();
    let ours =
        with_lineage(state.nonce(), observed("igw-1", Facts::InternetGateway(internet_gateway::Facts { vpc: None })));
    let s = diff(&nodes, &state, &live_with(vec![(NodeId::InternetGateway, ours.clone())])).unwrap();
    assert_eq!(status(&s, &NodeId::InternetGateway).action, Action::Adopt);
    let theirs = Observed { owner: Owner::Other(Some("another".into())), ..ours };
    let s = diff(&nodes, &state, &live_with(vec![(NodeId::InternetGateway, theirs)])).unwrap();
    assert_eq!(status(&s, &NodeId::InternetGateway).action, Action::Unsupported);
    assert_eq!(status(&s, &NodeId::Vpc).action, Action::Create);
}

#[test]
fn a_recreated_gateway_moves_the_route_that_points_at_it() {
    let nodes = nodes();
    let (_dir, state) = recorded(&nodes);
    let table = NodeId::RouteTable("public".into());
    let routed = observed("id-rtb", Facts::RouteTable(route_table::Facts { default_target: Some("id-igw".into()) }));
    // The gateway is gone live: recreated, and the table that routes to it follows.
    let s = diff(&nodes, &state, &live_with(vec![(table.clone(), routed)])).unwrap();
    assert_eq!(status(&s, &NodeId::InternetGateway).action, Action::Recreate);
    assert_eq!(status(&s, &table).action, Action::Update);
}

#[test]
fn teardown_deletes_ours_forgets_the_gone_and_never_touches_the_foreign() {
    let nodes = nodes();
    let (_dir, state) = recorded(&nodes);
    let igw = observed("id-igw", Facts::InternetGateway(internet_gateway::Facts { vpc: None }));
    let foreign = Observed {
        owner: Owner::Other(None),
        ..observed("id-rtb", Facts::RouteTable(route_table::Facts { default_target: None }))
    };
    let stray = observed("igw-2", Facts::InternetGateway(internet_gateway::Facts { vpc: None }));
    let twin = NodeId::InternetGateway.twin("igw-2");
    let live = live_with(vec![
        (NodeId::InternetGateway, igw),
        (NodeId::RouteTable("public".into()), foreign),
        (twin.clone(), stray),
    ]);
    let plan: BTreeMap<NodeId, Teardown> = teardown(&state, &live, false, false).into_iter().collect();
    assert_eq!(plan[&NodeId::InternetGateway], Teardown::Delete);
    assert_eq!(plan[&NodeId::RouteTable("public".into())], Teardown::NotOwned(None));
    assert_eq!(plan[&NodeId::Vpc], Teardown::AlreadyGone);
    assert_eq!(plan[&twin], Teardown::Leftover(None), "no lineage: not provably this state's");
    let adopted: BTreeMap<NodeId, Teardown> = teardown(&state, &live, true, false).into_iter().collect();
    assert_eq!(adopted[&twin], Teardown::Delete);
}

fn with_lineage(lineage: &str, o: Observed) -> Observed {
    Observed { lineage: Some(lineage.into()), ..o }
}

#[test]
fn plain_teardown_deletes_what_this_lineage_made_unrecorded_and_leaves_another_states() {
    let nodes = nodes();
    let (_dir, state) = recorded(&nodes);
    let igw = || Facts::InternetGateway(internet_gateway::Facts { vpc: None });
    let (ours, theirs) = (NodeId::InternetGateway.twin("igw-2"), NodeId::InternetGateway.twin("igw-3"));
    let live = live_with(vec![
        (ours.clone(), with_lineage(state.nonce(), observed("igw-2", igw()))),
        (theirs.clone(), with_lineage("0123456789abcdef", observed("igw-3", igw()))),
    ]);
    let plan: BTreeMap<NodeId, Teardown> = teardown(&state, &live, false, false).into_iter().collect();
    assert_eq!(plan[&ours], Teardown::Delete, "made by this lifecycle, killed before its record");
    assert_eq!(plan[&theirs], Teardown::Leftover(Some("0123456789abcdef".into())));
}

#[test]
fn a_cluster_holding_another_states_service_is_not_attempted() {
    let nodes = nodes();
    let (_dir, state) = recorded(&nodes);
    let svc = nodes.iter().find(|n| n.id.kind() == Kind::Service).expect("a service").id.clone();
    let cluster_facts = Facts::Cluster(crate::resource::cluster::Facts { name: "nat-test".into() });
    let theirs = svc.clone().twin("arn:their-service");
    let mut live = live_with(vec![(NodeId::Cluster, observed("nat-test", cluster_facts))]);
    let recorded_svc = state.get(&svc).unwrap().id.clone();
    let service_facts = |_: &str| Facts::Service(crate::resource::service::Facts::default());
    live.nodes.insert(svc.clone(), observed(&recorded_svc, service_facts(&recorded_svc)));
    live.nodes
        .insert(theirs.clone(), with_lineage("0123456789abcdef", observed("arn:their-service", service_facts("x"))));
    let plan: BTreeMap<NodeId, Teardown> = teardown(&state, &live, false, false).into_iter().collect();
    assert_eq!(plan[&svc], Teardown::Delete);
    assert!(matches!(&plan[&NodeId::Cluster], Teardown::Held(why) if why.contains(&theirs.to_string())), "{plan:?}");
    let adopted: BTreeMap<NodeId, Teardown> = teardown(&state, &live, true, false).into_iter().collect();
    assert_eq!(adopted[&NodeId::Cluster], Teardown::Delete, "with --adopt the service goes first, then the cluster");
}

#[test]
fn up_adopts_only_what_this_lineage_made_and_kept_log_groups() {
    let nodes = nodes();
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::open(&dir.path().join("s.json"), "nat-test", "us-east-1").unwrap();
    let igw = || Facts::InternetGateway(internet_gateway::Facts { vpc: None });
    let mine = live_with(vec![(NodeId::InternetGateway, with_lineage(state.nonce(), observed("igw-1", igw())))]);
    let s = diff(&nodes, &state, &mine).unwrap();
    assert_eq!(status(&s, &NodeId::InternetGateway).action, Action::Adopt);
    let theirs = live_with(vec![(NodeId::InternetGateway, with_lineage("another", observed("igw-1", igw())))]);
    let s = diff(&nodes, &state, &theirs).unwrap();
    let igw = status(&s, &NodeId::InternetGateway);
    assert_eq!((&igw.verdict, igw.action), (&Verdict::OtherLineage(Some("another".into())), Action::Unsupported));
    let logs = nodes.iter().find(|n| n.id.kind() == Kind::LogGroup).expect("a log group").id.clone();
    let kept = Facts::LogGroup(crate::resource::log_group::Facts { retention_days: Some(30), account_retention: None });
    let s = diff(&nodes, &state, &live_with(vec![(logs.clone(), with_lineage("another", observed("/secep/x", kept)))]))
        .unwrap();
    assert_eq!(status(&s, &logs).action, Action::Adopt, "a log group an earlier lifecycle's `down` kept is reused");
}
