//! The VPC's default security group, kept without rules (CIS AWS Foundations EC2.2): AWS gives it an ingress rule
//! admitting all traffic among its members and an allow-all egress, so anything launched into the VPC without a
//! group of its own would be reachable from its peers, around the segmentation. secep never uses it; it revokes its
//! rules and puts nothing back. Recorded as the group's id; nothing to delete, the group goes with the VPC.

use std::fmt;

use anyhow::{Context, Result};
use aws_sdk_ec2::types::{Filter, SecurityGroup};
use serde::Serialize;

use super::read::{ec2_lineage, ec2_node, ec2_tag};
use super::{Compare, Created, Ctx, Deleted, Found, OnChange, Owner, ReadCx, Resource, Salt, TAG_STACK, View, api_error};
use crate::aws::Clients;
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec;

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Permissions on the group (`None`: not read, in teardown).
    pub ingress: Option<usize>,
    pub egress: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Open { ingress: usize, egress: usize },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Open { ingress, egress } => write!(
                f,
                "the VPC's default group has {ingress} ingress and {egress} egress permission(s); secep keeps it empty (CIS EC2.2)"
            ),
        }
    }
}

impl super::Change for Change {}

pub struct DefaultGroup;

impl Resource for DefaultGroup {
    const PART_OF_PARENT: bool = true;
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "default security group";
    const ON_CHANGE: OnChange = OnChange::InPlace;

    /// The default group of the stack's VPC (the recorded one, else the one tagged as the stack's `vpc`): one
    /// DescribeSecurityGroups by VPC and name.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let recorded_vpc = cx.record(&NodeId::Vpc).map(|r| r.id.clone());
        let vpcs = cx.vpcs().await?;
        let vpc = match &recorded_vpc {
            Some(id) => vpcs.iter().find(|v| v.vpc_id() == Some(id.as_str())),
            None => vpcs.iter().find(|v| {
                ec2_node(v.tags()) == Some(NodeId::Vpc) && cx.owner(ec2_tag(v.tags(), TAG_STACK)) == Owner::Us
            }),
        };
        let Some((vpc, vpc_id)) = vpc.and_then(|v| Some((v, v.vpc_id()?))) else { return Ok(Vec::new()) };
        let (owner, lineage) = (cx.owner(ec2_tag(vpc.tags(), TAG_STACK)), ec2_lineage(vpc.tags()));
        if cx.teardown() {
            // Nothing to delete: only whose it is, with no call.
            let Some(record) = cx.record(&NodeId::DefaultGroup) else { return Ok(Vec::new()) };
            let facts = Facts { ingress: None, egress: None };
            return Ok(vec![Found { node: Some(NodeId::DefaultGroup), id: record.id.clone(), arn: None, owner, lineage, facts }]);
        }
        let Some(group) = default_group(cx.clients, vpc_id).await? else { return Ok(Vec::new()) };
        let id = group.group_id().unwrap_or_default().to_string();
        let facts = Facts { ingress: Some(group.ip_permissions().len()), egress: Some(group.ip_permissions_egress().len()) };
        Ok(vec![Found { node: Some(NodeId::DefaultGroup), id, arn: None, owner, lineage, facts }])
    }

    fn compare(_spec: &Spec, facts: &Facts, _cx: &Compare<'_>) -> Vec<Change> {
        let (ingress, egress) = (facts.ingress.unwrap_or(0), facts.egress.unwrap_or(0));
        if ingress + egress > 0 { vec![Change::Open { ingress, egress }] } else { Vec::new() }
    }

    async fn create(ctx: &Ctx, _node: &Node, _spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let vpc_id = ctx.id_of(&NodeId::Vpc)?;
        let group_id = close(ctx, &vpc_id).await?;
        Ok((Created::named(group_id, None), Facts { ingress: Some(0), egress: Some(0) }))
    }

    async fn update(
        ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        _live: &View<'_, Facts>,
        _changes: &[Change],
    ) -> Result<Option<Created>> {
        let vpc_id = ctx.id_of(&NodeId::Vpc)?;
        close(ctx, &vpc_id).await?;
        Ok(None)
    }

    /// The group goes with the VPC, deleted after this.
    async fn delete(_ctx: &Ctx, _live: &View<'_, Facts>) -> Result<Deleted> {
        Ok(Deleted::Now)
    }
}

async fn default_group(clients: &Clients, vpc_id: &str) -> Result<Option<SecurityGroup>> {
    let out = clients
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .filters(Filter::builder().name("group-name").values("default").build())
        .send()
        .await
        .map_err(|e| api_error(format!("read the default security group of {vpc_id}"), e))?;
    Ok(out.security_groups().first().cloned())
}

/// Revokes every permission of the VPC's default group (a fresh VPC's: all traffic from its members, all out).
async fn close(ctx: &Ctx, vpc_id: &str) -> Result<String> {
    let group = default_group(&ctx.clients, vpc_id)
        .await?
        .with_context(|| format!("VPC {vpc_id} has no default security group"))?;
    let id = group.group_id().unwrap_or_default().to_string();
    let ec2 = &ctx.clients.ec2;
    if !group.ip_permissions().is_empty() {
        ec2.revoke_security_group_ingress()
            .group_id(&id)
            .set_ip_permissions(Some(group.ip_permissions().to_vec()))
            .send()
            .await
            .map_err(|e| api_error(format!("revoke the rules of default group {id}"), e))?;
    }
    if !group.ip_permissions_egress().is_empty() {
        ec2.revoke_security_group_egress()
            .group_id(&id)
            .set_ip_permissions(Some(group.ip_permissions_egress().to_vec()))
            .send()
            .await
            .map_err(|e| api_error(format!("revoke the egress of default group {id}"), e))?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    #[test]
    fn a_default_group_with_any_rule_is_not_in_sync() {
        let node = Node { id: NodeId::DefaultGroup, spec: super::super::Spec::DefaultGroup(Spec), deps: vec![] };
        let refs = BTreeMap::<NodeId, Record>::new();
        let cx = Compare { node: &node, refs: &refs, config_changed: false };
        let open = Facts { ingress: Some(1), egress: Some(1) };
        assert_eq!(DefaultGroup::compare(&Spec, &open, &cx), [Change::Open { ingress: 1, egress: 1 }]);
        assert!(DefaultGroup::compare(&Spec, &Facts { ingress: Some(0), egress: Some(0) }, &cx).is_empty());
    }
}
