//! A route table of the stack: a private subnet's (no way out, or a default route to its AZ's NAT gateway) or the
//! public subnets' (a default route to the internet gateway). Its subnets are associated by nodes of their own
//! (`rtb-assoc/...`, see `association.rs`).

use std::collections::BTreeSet;
use std::fmt;

use anyhow::Result;
use aws_sdk_ec2::types::{Filter, ResourceType, RouteTable as Table};
use serde::Serialize;

use super::read::{ec2_node, ec2_lineage, ec2_tag};
use super::support::ec2_tags;
use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, ReadCx, Resource, Salt, TAG_STACK, View,
    api_error, is, retry_while,
};
use crate::model::{Node, NodeId};

/// The destination of a default route.
const ANYWHERE: &str = "0.0.0.0/0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
    /// Where the default route goes (`igw` or `nat/<az>`); `None`: the table has no way out of the VPC.
    pub default_route: Option<NodeId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The target of the table's 0.0.0.0/0 route (an internet or NAT gateway id, or whatever else it names), if it
    /// has one.
    pub default_target: Option<String>,
}

impl Facts {
    pub fn of(table: &Table) -> Facts {
        let default = table.routes().iter().find(|r| r.destination_cidr_block() == Some(ANYWHERE));
        let default_target = default.map(|r| {
            r.nat_gateway_id()
                .or(r.gateway_id())
                .or(r.transit_gateway_id())
                .or(r.network_interface_id())
                .or(r.instance_id())
                .or(r.vpc_peering_connection_id())
                .or(r.egress_only_internet_gateway_id())
                .or(r.local_gateway_id())
                .or(r.carrier_gateway_id())
                .or(r.core_network_arn())
                .unwrap_or("an unknown target")
                .to_string()
        });
        Facts { default_target }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// No default route; the spec wants one to this gateway.
    NoDefaultRoute { to: NodeId },
    /// The default route goes to `now`, not to `to` (recorded as `want`, if it is recorded yet).
    WrongDefaultRoute { to: NodeId, now: String, want: Option<String> },
    /// A default route the spec does not have: a private table in endpoints mode has no way out of the VPC.
    UnwantedDefaultRoute { now: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::NoDefaultRoute { to } => write!(f, "no default route (wants one to {to})"),
            Change::WrongDefaultRoute { to, now, want: Some(want) } => {
                write!(f, "default route goes to {now}, not {to} ({want})")
            }
            Change::WrongDefaultRoute { to, now, want: None } => {
                write!(f, "default route goes to {now}, not {to} (not created yet)")
            }
            Change::UnwantedDefaultRoute { now } => write!(f, "has a default route to {now}; none is wanted"),
        }
    }
}

impl super::Change for Change {}

pub struct RouteTable;

impl Resource for RouteTable {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "route table";
    const ON_CHANGE: OnChange = OnChange::InPlace;
    /// The default route points at a gateway node: a recreated gateway is routed to again.
    const FOLLOWS_DEPENDENCIES: bool = true;

    /// The stack's tables (one describe by tag, shared with the associations); in teardown also the recorded ones
    /// the tag did not find, by id in one more call.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let recorded: BTreeSet<&str> = cx.recorded(Kind::RouteTable).map(|(_, r)| r.id.as_str()).collect();
        let tables = cx.route_tables().await?;
        let mut found: Vec<Found<Facts>> = tables
            .iter()
            .filter(|t| {
                // The tag is checked here too: moto ignores tag filters on some kinds, and another stack's table
                // taken for this one's would be reported as extra, or worse, adopted. A recorded one stays, to be
                // reported as not ours.
                ec2_tag(t.tags(), TAG_STACK) == Some(cx.stack)
                    || t.route_table_id().is_some_and(|id| recorded.contains(id))
            })
            .filter_map(|t| found_of(cx, t))
            .collect();
        if cx.teardown() {
            let missing: Vec<String> = recorded
                .iter()
                .filter(|id| !tables.iter().any(|t| t.route_table_id() == Some(**id)))
                .map(|id| id.to_string())
                .collect();
            if !missing.is_empty() {
                // A filter, not ids: a table that no longer exists is simply not listed (ids would fail the call).
                let out = cx
                    .clients
                    .ec2
                    .describe_route_tables()
                    .filters(Filter::builder().name("route-table-id").set_values(Some(missing)).build())
                    .send()
                    .await
                    .map_err(|e| api_error("read the stack's recorded route tables", e))?;
                found.extend(out.route_tables().iter().filter_map(|t| found_of(cx, t)));
            }
        }
        Ok(found)
    }

    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        match (&spec.default_route, &facts.default_target) {
            (Some(to), None) => vec![Change::NoDefaultRoute { to: to.clone() }],
            (Some(to), Some(now)) => {
                let want = cx.id(to);
                if want.as_deref() == Some(now.as_str()) {
                    Vec::new()
                } else {
                    vec![Change::WrongDefaultRoute { to: to.clone(), now: now.clone(), want }]
                }
            }
            (None, Some(now)) => vec![Change::UnwantedDefaultRoute { now: now.clone() }],
            (None, None) => Vec::new(),
        }
    }

    /// Makes the table only: its facts show no default route, so the engine's sync adds it, and a run killed in
    /// between leaves a table that the next run's compare finds without it.
    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, salt: &Salt) -> Result<(Created, Facts)> {
        let vpc_id = ctx.id_of(&NodeId::Vpc)?;
        let out = ctx
            .clients
            .ec2
            .create_route_table()
            .vpc_id(&vpc_id)
            .client_token(salt.token(&ctx.stack, &node.id))
            .tag_specifications(ec2_tags(ctx, ResourceType::RouteTable, &node.id, &spec.name))
            .send()
            .await
            .map_err(|e| api_error(format!("create route table {} in {vpc_id}", spec.name), e))?;
        let table = out.route_table();
        let created = Created::from_answer("CreateRouteTable", table.and_then(|t| t.route_table_id()), None)?;
        // The answer describes the table (a replayed token: as it is now): no read-back before routing.
        let facts = table.map(Facts::of).unwrap_or(Facts { default_target: None });
        Ok((created, facts))
    }

    async fn update(
        ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        for change in changes {
            match change {
                Change::NoDefaultRoute { to } => route_default(ctx, live.id, to, false).await?,
                Change::WrongDefaultRoute { to, .. } => route_default(ctx, live.id, to, true).await?,
                Change::UnwantedDefaultRoute { now } => {
                    let out = ctx
                        .clients
                        .ec2
                        .delete_route()
                        .route_table_id(live.id)
                        .destination_cidr_block(ANYWHERE)
                        .send()
                        .await
                        .map_err(|e| api_error(format!("delete the default route of {} (to {now})", live.id), e));
                    out.or_gone()?;
                }
            }
        }
        Ok(None)
    }

    /// One DeleteRouteTable normally. AWS refuses while subnets are still associated (a table found by tag without
    /// its association nodes, or a subnet associated by hand): only then are its associations read and removed,
    /// and the delete retried.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let id = live.id;
        match delete_table(ctx, id).await {
            Ok(()) => return Ok(Deleted::Now),
            Err(e) if is(&e, ErrorKind::NotFound) => return Ok(Deleted::AlreadyGone),
            Err(e) if is(&e, ErrorKind::DependencyViolation) => {}
            Err(e) => return Err(e),
        }
        let out = ctx
            .clients
            .ec2
            .describe_route_tables()
            .route_table_ids(id)
            .send()
            .await
            .map_err(|e| api_error(format!("read the associations of route table {id}"), e))
            .or_gone()?;
        let Some(table) = out.and_then(|o| o.route_tables().first().cloned()) else { return Ok(Deleted::AlreadyGone) };
        for association in table.associations().iter().filter(|a| !a.main().unwrap_or(false)) {
            if let Some(association_id) = association.route_table_association_id() {
                super::association::disassociate(ctx, association_id).await?;
            }
        }
        let deleted = retry_while(
            ctx,
            &[ErrorKind::DependencyViolation],
            || delete_table(ctx, id),
            || async move { format!("{id} is still associated, or something still depends on it") },
        )
        .await;
        Ok(match deleted.or_gone()? {
            Some(()) => Deleted::Now,
            None => Deleted::AlreadyGone,
        })
    }
}

fn found_of(cx: &ReadCx<'_>, table: &Table) -> Option<Found<Facts>> {
    Some(Found {
        node: ec2_node(table.tags()),
        id: table.route_table_id()?.to_string(),
        arn: None,
        owner: cx.owner(ec2_tag(table.tags(), TAG_STACK)),
        lineage: ec2_lineage(table.tags()),
        facts: Facts::of(table),
    })
}

/// Points the table's default route at a gateway node: replaces the route where one exists, else adds it. Either
/// falls back to the other when the table changed since it was read.
async fn route_default(ctx: &Ctx, table: &str, to: &NodeId, exists: bool) -> Result<()> {
    let target = ctx.id_of(to)?;
    let nat = matches!(to.base(), NodeId::NatGateway(_));
    if exists {
        match replace_route(ctx, table, &target, nat).await {
            Err(e) if is(&e, ErrorKind::NotFound) => create_route(ctx, table, &target, nat).await,
            other => other,
        }
    } else {
        match create_route(ctx, table, &target, nat).await {
            Err(e) if is(&e, ErrorKind::AlreadyExists) => replace_route(ctx, table, &target, nat).await,
            other => other,
        }
    }
}

async fn create_route(ctx: &Ctx, table: &str, target: &str, nat: bool) -> Result<()> {
    let create = ctx.clients.ec2.create_route().route_table_id(table).destination_cidr_block(ANYWHERE);
    let create = if nat { create.nat_gateway_id(target) } else { create.gateway_id(target) };
    create.send().await.map_err(|e| api_error(format!("add a default route to {table} via {target}"), e))?;
    Ok(())
}

async fn replace_route(ctx: &Ctx, table: &str, target: &str, nat: bool) -> Result<()> {
    let replace = ctx.clients.ec2.replace_route().route_table_id(table).destination_cidr_block(ANYWHERE);
    let replace = if nat { replace.nat_gateway_id(target) } else { replace.gateway_id(target) };
    replace.send().await.map_err(|e| api_error(format!("point the default route of {table} at {target}"), e))?;
    Ok(())
}

async fn delete_table(ctx: &Ctx, id: &str) -> Result<()> {
    ctx.clients
        .ec2
        .delete_route_table()
        .route_table_id(id)
        .send()
        .await
        .map_err(|e| api_error(format!("delete route table {id}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn node(spec: &Spec) -> Node {
        Node {
            id: NodeId::RouteTable("public".into()),
            spec: crate::resource::Spec::RouteTable(spec.clone()),
            deps: vec![NodeId::Vpc, NodeId::InternetGateway],
        }
    }

    fn refs(pairs: &[(NodeId, &str)]) -> BTreeMap<NodeId, Record> {
        pairs
            .iter()
            .map(|(n, id)| (n.clone(), Record { id: id.to_string(), arn: None, digest: String::new() }))
            .collect()
    }

    fn compare(spec: &Spec, default_target: Option<&str>, refs: &BTreeMap<NodeId, Record>) -> Vec<Change> {
        let node = node(spec);
        let cx = Compare { node: &node, refs, config_changed: false };
        RouteTable::compare(spec, &Facts { default_target: default_target.map(str::to_string) }, &cx)
    }

    fn public() -> Spec {
        Spec { name: "s-public".into(), default_route: Some(NodeId::InternetGateway) }
    }

    #[test]
    fn a_table_routed_to_its_gateway_is_in_sync() {
        let refs = refs(&[(NodeId::InternetGateway, "igw-1")]);
        assert!(compare(&public(), Some("igw-1"), &refs).is_empty());
        let private = Spec { name: "s-private-a".into(), default_route: None };
        assert!(compare(&private, None, &refs).is_empty());
    }

    #[test]
    fn a_table_just_created_lacks_its_default_route() {
        // What create reports: the table alone. The sync that follows must add the route.
        let refs = refs(&[(NodeId::InternetGateway, "igw-1")]);
        let changes = compare(&public(), None, &refs);
        assert_eq!(changes, [Change::NoDefaultRoute { to: NodeId::InternetGateway }]);
        assert!(!super::super::Change::replaces(&changes[0]));
        assert_eq!(changes[0].to_string(), "no default route (wants one to igw)");
    }

    #[test]
    fn a_default_route_elsewhere_is_a_difference() {
        let refs = refs(&[(NodeId::InternetGateway, "igw-2")]);
        let changes = compare(&public(), Some("igw-1"), &refs);
        assert_eq!(
            changes,
            [Change::WrongDefaultRoute {
                to: NodeId::InternetGateway,
                now: "igw-1".into(),
                want: Some("igw-2".into())
            }]
        );
        assert_eq!(changes[0].to_string(), "default route goes to igw-1, not igw (igw-2)");
    }

    #[test]
    fn a_route_to_an_unrecorded_gateway_is_not_taken_for_ours() {
        let changes = compare(&public(), Some("igw-1"), &refs(&[]));
        let want = Change::WrongDefaultRoute { to: NodeId::InternetGateway, now: "igw-1".into(), want: None };
        assert_eq!(changes, [want]);
    }

    #[test]
    fn a_private_table_with_a_way_out_is_a_difference() {
        let private = Spec { name: "s-private-a".into(), default_route: None };
        let changes = compare(&private, Some("igw-9"), &refs(&[]));
        assert_eq!(changes, [Change::UnwantedDefaultRoute { now: "igw-9".into() }]);
    }

    #[test]
    fn a_nat_route_is_compared_by_the_nat_gateways_id() {
        let nat = NodeId::NatGateway("a".into());
        let spec = Spec { name: "s-private-a".into(), default_route: Some(nat.clone()) };
        let refs = refs(&[(nat.clone(), "nat-1")]);
        assert!(compare(&spec, Some("nat-1"), &refs).is_empty());
        assert_eq!(compare(&spec, Some("nat-0"), &refs).len(), 1);
    }

    #[test]
    fn facts_name_any_default_target() {
        use aws_sdk_ec2::types::Route;
        let local = Route::builder().destination_cidr_block("10.0.0.0/16").gateway_id("local").build();
        let table = Table::builder().routes(local.clone()).build();
        assert_eq!(Facts::of(&table).default_target, None);
        let nat = Route::builder().destination_cidr_block(ANYWHERE).nat_gateway_id("nat-1").build();
        let table = Table::builder().routes(local.clone()).routes(nat).build();
        assert_eq!(Facts::of(&table).default_target.as_deref(), Some("nat-1"));
        let eni = Route::builder().destination_cidr_block(ANYWHERE).network_interface_id("eni-1").build();
        let table = Table::builder().routes(local).routes(eni).build();
        assert_eq!(Facts::of(&table).default_target.as_deref(), Some("eni-1"));
    }
}
