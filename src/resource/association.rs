//! A subnet's association with one of the stack's route tables. A node of its own so that the table, and the S3
//! endpoint on it, need not wait for the subnet. Owned by containment: it is its table's, read with the stack's
//! tables (no call of its own).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{Result, bail};
use aws_sdk_ec2::types::{Filter, RouteTable as Table, RouteTableAssociationStateCode};
use serde::Serialize;

use super::read::{ec2_lineage, ec2_tag};
use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt, TAG_STACK,
    View, api_error, is,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub table: NodeId,
    pub subnet: NodeId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub table_id: String,
    pub subnet_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The subnet is associated with another table: moved in place (ReplaceRouteTableAssociation).
    Table { now: String, want: String },
    /// The association is of another subnet: an association cannot change its subnet.
    Subnet { now: String, want: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Table { now, want } => write!(f, "associates the subnet with route table {now}, not {want}"),
            Change::Subnet { now, want } => write!(f, "is of subnet {now}, not {want}"),
        }
    }
}

impl super::Change for Change {
    fn replaces(&self) -> bool {
        matches!(self, Change::Subnet { .. })
    }
}

pub struct Association;

impl Resource for Association {
    const PART_OF_PARENT: bool = true;
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "route table association";
    const ON_CHANGE: OnChange = OnChange::Replace;

    /// The associations of the stack's tables, from the tables' shared read; in teardown also the recorded ones the
    /// tables did not show, in one more call. Each is placed by its subnet's recorded node.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let recorded: BTreeSet<&str> = cx.recorded(Kind::RouteTableAssociation).map(|(_, r)| r.id.as_str()).collect();
        // Subnet id → its node, for the association node (`rtb-assoc/<az>` holds its subnet).
        let subnets: BTreeMap<&str, &NodeId> = cx
            .recorded(Kind::Subnet)
            .filter(|(n, _)| matches!(n, NodeId::Subnet(_) | NodeId::PublicSubnet(_)))
            .map(|(n, r)| (r.id.as_str(), n))
            .collect();
        let tables = cx.route_tables().await?;
        let mut found = Vec::new();
        for table in tables {
            // As for the tables themselves: another stack's, taken in by an ignored tag filter, is not looked at,
            // unless the state records one of its associations (then it is reported as not ours).
            let ours = ec2_tag(table.tags(), TAG_STACK) == Some(cx.stack);
            found.extend(found_in(cx.stack, table, &subnets, |id| ours || recorded.contains(id)));
        }
        if cx.teardown() {
            let missing: Vec<String> =
                recorded.iter().filter(|id| !found.iter().any(|f| f.id == ***id)).map(|id| id.to_string()).collect();
            if !missing.is_empty() {
                let filter =
                    Filter::builder().name("association.route-table-association-id").set_values(Some(missing)).build();
                let out =
                    cx.clients.ec2.describe_route_tables().filters(filter).send().await.map_err(|e| {
                        api_error("read the tables of the stack's recorded route table associations", e)
                    })?;
                for table in out.route_tables() {
                    found.extend(found_in(cx.stack, table, &subnets, |id| recorded.contains(id)));
                }
            }
        }
        let mut seen = BTreeSet::new();
        found.retain(|f| seen.insert(f.id.clone()));
        Ok(found)
    }

    /// A reference not recorded yet cannot be compared: the run that records it makes the association.
    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(want) = cx.id(&spec.subnet)
            && want != facts.subnet_id
        {
            changes.push(Change::Subnet { now: facts.subnet_id.clone(), want });
        }
        if let Some(want) = cx.id(&spec.table)
            && want != facts.table_id
        {
            changes.push(Change::Table { now: facts.table_id.clone(), want });
        }
        changes
    }

    async fn create(ctx: &Ctx, _node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let (table_id, subnet_id) = (ctx.id_of(&spec.table)?, ctx.id_of(&spec.subnet)?);
        let out = ctx.clients.ec2.associate_route_table().route_table_id(&table_id).subnet_id(&subnet_id).send().await;
        match out.map_err(|e| api_error(format!("associate route table {table_id} with {subnet_id}"), e)) {
            Ok(out) => {
                let created = Created::from_answer("AssociateRouteTable", out.association_id(), None)?;
                Ok((created, Facts { table_id, subnet_id }))
            }
            // Already associated: a run killed before it recorded this association, or the subnet was associated
            // with another table meanwhile. The existing association is returned as it is; the sync that follows
            // moves it to this table if it is on another.
            Err(e) if is(&e, ErrorKind::AlreadyExists) => match association_of(ctx, &subnet_id).await? {
                Some((id, table)) => Ok((Created::named(id, None), Facts { table_id: table, subnet_id })),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Moves the subnet to its table in one call (it is never left on the VPC's main table meanwhile); the move
    /// gives the association a new id.
    async fn update(
        ctx: &Ctx,
        node: &Node,
        spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        let mut moved = None;
        for change in changes {
            match change {
                Change::Table { now, .. } => {
                    let table_id = ctx.id_of(&spec.table)?;
                    let action = format!("move {} from route table {now} to {table_id}", live.facts.subnet_id);
                    let out = ctx
                        .clients
                        .ec2
                        .replace_route_table_association()
                        .association_id(live.id)
                        .route_table_id(&table_id)
                        .send()
                        .await
                        .map_err(|e| api_error(action, e))?;
                    moved = Some(Created::from_answer("ReplaceRouteTableAssociation", out.new_association_id(), None)?);
                }
                Change::Subnet { now, want } => bail!(
                    "{}: association {} is of subnet {now}, not {want}, and an association cannot change its subnet\n  hint: disassociate it (aws ec2 disassociate-route-table --association-id {}) and re-run",
                    node.id,
                    live.id,
                    live.id
                ),
            }
        }
        Ok(moved)
    }

    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        disassociate(ctx, live.id).await
    }
}

/// The live associations of one table with subnets, those whose id `keep` accepts, owned as the table is.
fn found_in(
    stack: &str,
    table: &Table,
    subnets: &BTreeMap<&str, &NodeId>,
    keep: impl Fn(&str) -> bool,
) -> Vec<Found<Facts>> {
    let Some(table_id) = table.route_table_id() else { return Vec::new() };
    let owner = Owner::from_tag(stack, ec2_tag(table.tags(), TAG_STACK));
    // An association is made by whoever made its table.
    let lineage = ec2_lineage(table.tags());
    table
        .associations()
        .iter()
        .filter(|a| !a.main().unwrap_or(false))
        .filter(|a| {
            a.association_state().and_then(|s| s.state()).is_none_or(|s| {
                matches!(s, RouteTableAssociationStateCode::Associated | RouteTableAssociationStateCode::Associating)
            })
        })
        .filter_map(|a| {
            let (id, subnet_id) = (a.route_table_association_id()?, a.subnet_id()?);
            if !keep(id) {
                return None;
            }
            Some(Found {
                node: subnets.get(subnet_id).map(|s| NodeId::association_of(s)),
                id: id.to_string(),
                arn: None,
                owner: owner.clone(),
                lineage: lineage.clone(),
                facts: Facts { table_id: table_id.to_string(), subnet_id: subnet_id.to_string() },
            })
        })
        .collect()
}

/// A subnet's explicit association: (association id, route table id).
async fn association_of(ctx: &Ctx, subnet_id: &str) -> Result<Option<(String, String)>> {
    let filter = Filter::builder().name("association.subnet-id").values(subnet_id).build();
    let out = ctx
        .clients
        .ec2
        .describe_route_tables()
        .filters(filter)
        .send()
        .await
        .map_err(|e| api_error(format!("read the route table of {subnet_id}"), e))?;
    Ok(out.route_tables().iter().find_map(|t| {
        let a = t.associations().iter().find(|a| a.subnet_id() == Some(subnet_id))?;
        Some((a.route_table_association_id()?.to_string(), t.route_table_id()?.to_string()))
    }))
}

/// Removes one association; one already gone counts as removed. Also what a table's delete uses for the
/// associations it still has.
pub(super) async fn disassociate(ctx: &Ctx, association_id: &str) -> Result<Deleted> {
    let out = ctx
        .clients
        .ec2
        .disassociate_route_table()
        .association_id(association_id)
        .send()
        .await
        .map_err(|e| api_error(format!("disassociate route table association {association_id}"), e))
        .or_gone()?;
    Ok(if out.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Record;

    fn spec() -> Spec {
        Spec { table: NodeId::RouteTable("a".into()), subnet: NodeId::subnet("a") }
    }

    fn compare(facts: (&str, &str), recorded: &[(NodeId, &str)]) -> Vec<Change> {
        let spec = spec();
        let node = Node {
            id: NodeId::association_of(&spec.subnet),
            spec: crate::resource::Spec::RouteTableAssociation(spec.clone()),
            deps: vec![spec.table.clone(), spec.subnet.clone()],
        };
        let refs: BTreeMap<NodeId, Record> = recorded
            .iter()
            .map(|(n, id)| (n.clone(), Record { id: id.to_string(), arn: None, digest: String::new() }))
            .collect();
        let cx = Compare { node: &node, refs: &refs, config_changed: false };
        let facts = Facts { table_id: facts.0.into(), subnet_id: facts.1.into() };
        Association::compare(&spec, &facts, &cx)
    }

    fn both() -> Vec<(NodeId, &'static str)> {
        vec![(NodeId::RouteTable("a".into()), "rtb-1"), (NodeId::subnet("a"), "subnet-1")]
    }

    #[test]
    fn the_subnet_on_its_table_is_in_sync() {
        assert!(compare(("rtb-1", "subnet-1"), &both()).is_empty());
    }

    #[test]
    fn a_subnet_on_another_table_is_moved_in_place() {
        let changes = compare(("rtb-9", "subnet-1"), &both());
        assert_eq!(changes, [Change::Table { now: "rtb-9".into(), want: "rtb-1".into() }]);
        assert!(!super::super::Change::replaces(&changes[0]));
        assert_eq!(changes[0].to_string(), "associates the subnet with route table rtb-9, not rtb-1");
    }

    #[test]
    fn an_association_of_another_subnet_must_be_replaced() {
        let changes = compare(("rtb-1", "subnet-9"), &both());
        assert_eq!(changes, [Change::Subnet { now: "subnet-9".into(), want: "subnet-1".into() }]);
        assert!(super::super::Change::replaces(&changes[0]));
    }

    #[test]
    fn unrecorded_references_are_not_compared() {
        assert!(compare(("rtb-9", "subnet-9"), &[]).is_empty());
    }

    #[test]
    fn associations_are_placed_by_their_subnets_node() {
        use aws_sdk_ec2::types::{RouteTableAssociation, Tag};
        let association = |id: &str, subnet: &str| {
            RouteTableAssociation::builder().route_table_association_id(id).subnet_id(subnet).main(false).build()
        };
        let table = Table::builder()
            .route_table_id("rtb-1")
            .tags(Tag::builder().key(TAG_STACK).value("s").build())
            .associations(association("rtbassoc-1", "subnet-1"))
            .associations(association("rtbassoc-2", "subnet-2"))
            .associations(RouteTableAssociation::builder().route_table_association_id("rtbassoc-m").main(true).build())
            .build();
        let subnet = NodeId::PublicSubnet("a".into());
        let subnets = BTreeMap::from([("subnet-1", &subnet)]);
        let found = found_in("s", &table, &subnets, |_| true);
        let placed: Vec<(Option<String>, &str)> =
            found.iter().map(|f| (f.node.as_ref().map(ToString::to_string), f.id.as_str())).collect();
        assert_eq!(placed, [(Some("rtb-assoc/public-a".to_string()), "rtbassoc-1"), (None, "rtbassoc-2")]);
        assert!(found.iter().all(|f| f.owner == Owner::Us && f.facts.table_id == "rtb-1"));
        assert_eq!(found_in("other", &table, &subnets, |_| true)[0].owner, Owner::Other(Some("s".into())));
    }
}
