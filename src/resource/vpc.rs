//! The stack's VPC, tagged at creation. Its DNS attributes are a node of their own ([`super::vpc_dns`]); what lives
//! in it (subnets, groups, gateways) goes before it on the way down.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{Result, bail};
use aws_sdk_ec2::types::{Filter, ResourceType};
use serde::Serialize;

use super::read::{ec2_node, ec2_lineage, ec2_tag};
use super::support::{ec2_tags, retry_while};
use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt,
    TAG_STACK, View, api_error,
};
use crate::model::Node;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub cidr: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub cidr: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The CIDR block is fixed at creation.
    Cidr { live: String, want: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Cidr { live, want } => write!(f, "cidr is {live}, not {want}"),
        }
    }
}

impl super::Change for Change {
    fn replaces(&self) -> bool {
        match self {
            Change::Cidr { .. } => true,
        }
    }
}

pub struct Vpc;

impl Resource for Vpc {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "vpc";
    const ON_CHANGE: OnChange = OnChange::Replace;

    /// The stack's VPCs by tag (the describe the DNS attributes share); in teardown also the recorded ones the tag
    /// read did not find (untagged by hand: found, with their owner, so that `down` leaves them alone).
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let tagged = cx.vpcs().await?;
        let mut found: Vec<Found<Facts>> = tagged.iter().filter_map(|v| of(cx, v)).collect();
        if cx.teardown() {
            let seen: BTreeSet<&str> = tagged.iter().filter_map(|v| v.vpc_id()).collect();
            let missing: Vec<String> =
                cx.recorded(Kind::Vpc).map(|(_, r)| r.id.clone()).filter(|id| !seen.contains(id.as_str())).collect();
            if !missing.is_empty() {
                // A filter, not VpcIds: an id that no longer exists is simply not listed (VpcIds fails the call).
                let out = cx
                    .clients
                    .ec2
                    .describe_vpcs()
                    .filters(Filter::builder().name("vpc-id").set_values(Some(missing.clone())).build())
                    .send()
                    .await
                    .map_err(|e| api_error("read the recorded VPCs", e))?;
                found.extend(
                    out.vpcs()
                        .iter()
                        .filter(|v| v.vpc_id().is_some_and(|id| missing.iter().any(|m| m == id)))
                        .filter_map(|v| of(cx, v)),
                );
            }
        }
        Ok(found)
    }

    fn compare(spec: &Spec, facts: &Facts, _cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if spec.cidr != facts.cidr {
            changes.push(Change::Cidr { live: facts.cidr.clone(), want: spec.cidr.clone() });
        }
        changes
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let out = ctx
            .clients
            .ec2
            .create_vpc()
            .cidr_block(&spec.cidr)
            .tag_specifications(ec2_tags(ctx, ResourceType::Vpc, &node.id, &spec.name))
            .send()
            .await
            .map_err(|e| api_error(format!("create VPC {}", spec.cidr), e))?;
        let vpc = out.vpc();
        let created = Created::from_answer("CreateVpc", vpc.and_then(|v| v.vpc_id()), None)?;
        let facts = Facts { cidr: vpc.and_then(|v| v.cidr_block()).unwrap_or(&spec.cidr).to_string() };
        Ok((created, facts))
    }

    async fn update(
        _ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        match changes.first() {
            None => Ok(None),
            Some(change) => bail!("internal error: {} ({change}) cannot be changed in place", live.node),
        }
    }

    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let vpc_id = live.id;
        let attempt = || async {
            ctx.clients
                .ec2
                .delete_vpc()
                .vpc_id(vpc_id)
                .send()
                .await
                .map_err(|e| api_error(format!("delete VPC {vpc_id}"), e))
        };
        let blocked = || remaining_in_vpc(ctx, vpc_id);
        let deleted = retry_while(ctx, &[ErrorKind::DependencyViolation], attempt, blocked).await.or_gone()?;
        Ok(if deleted.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
    }

    fn replace_reason(spec: &Spec) -> String {
        format!(
            "the VPC CIDR (now {}): replacing the VPC destroys every subnet, group, namespace and service of the stack",
            spec.cidr
        )
    }
}

fn of(cx: &ReadCx<'_>, v: &aws_sdk_ec2::types::Vpc) -> Option<Found<Facts>> {
    let owner: Owner = cx.owner(ec2_tag(v.tags(), TAG_STACK));
    Some(Found {
        node: ec2_node(v.tags()),
        id: v.vpc_id()?.to_string(),
        arn: None,
        owner,
        lineage: ec2_lineage(v.tags()),
        facts: Facts { cidr: v.cidr_block().unwrap_or_default().to_string() },
    })
}

/// What still lives in a VPC, for the message when it cannot be deleted.
async fn remaining_in_vpc(ctx: &Ctx, vpc_id: &str) -> String {
    let filter = || Filter::builder().name("vpc-id").values(vpc_id).build();
    let ec2 = &ctx.clients.ec2;
    let mut found = Vec::new();
    if let Ok(o) = ec2.describe_subnets().filters(filter()).send().await {
        found.extend(o.subnets().iter().filter_map(|s| s.subnet_id()).map(str::to_string));
    }
    if let Ok(o) = ec2.describe_security_groups().filters(filter()).send().await {
        found.extend(
            o.security_groups()
                .iter()
                .filter(|g| g.group_name() != Some("default"))
                .filter_map(|g| g.group_id())
                .map(str::to_string),
        );
    }
    if let Ok(o) = ec2.describe_network_interfaces().filters(filter()).send().await {
        found.extend(o.network_interfaces().iter().filter_map(|n| n.network_interface_id()).map(str::to_string));
    }
    if found.is_empty() {
        format!("{vpc_id} has dependencies that were not listed (internet gateway, endpoints or peering?)")
    } else {
        format!("{vpc_id} still contains {}", found.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::NodeId;
    use crate::state::Record;

    fn spec() -> Spec {
        Spec { cidr: "10.0.0.0/16".into(), name: "demo".into() }
    }

    fn compare(facts: &Facts) -> Vec<Change> {
        let node = Node { id: NodeId::Vpc, spec: super::super::Spec::Vpc(spec()), deps: vec![] };
        let refs: BTreeMap<NodeId, Record> = BTreeMap::new();
        Vpc::compare(&spec(), facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn a_vpc_of_the_spec_is_in_sync() {
        assert_eq!(compare(&Facts { cidr: "10.0.0.0/16".into() }), []);
    }

    #[test]
    fn another_cidr_needs_a_replacement() {
        let changes = compare(&Facts { cidr: "10.1.0.0/16".into() });
        assert_eq!(changes, [Change::Cidr { live: "10.1.0.0/16".into(), want: "10.0.0.0/16".into() }]);
        assert_eq!(changes[0].to_string(), "cidr is 10.1.0.0/16, not 10.0.0.0/16");
        assert!(super::super::Change::replaces(&changes[0]));
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let json = serde_json::to_string(&super::super::Spec::Vpc(spec())).unwrap();
        assert_eq!(json, r#"{"kind":"vpc","cidr":"10.0.0.0/16","name":"demo"}"#);
    }
}
