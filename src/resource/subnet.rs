//! A subnet of the stack's VPC in one AZ: the private subnets the tasks run in (`subnet/<az>`) and, in NAT mode, the
//! public ones the NAT gateways sit in (`public-subnet/<az>`). No public IPs on launch (the EC2 default for
//! non-default VPCs, checked: a subnet that maps them is drift).

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{Result, bail};
use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType};
use serde::Serialize;

use super::read::{ec2_node, ec2_lineage, ec2_tag};
use super::support::{blocking_enis, ec2_tags, retry_while};
use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, ReadCx, Resource, Salt, TAG_STACK,
    View, api_error,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub az: String,
    pub cidr: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub az: String,
    pub cidr: String,
    pub public_ip_on_launch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Another CIDR block or AZ: both are fixed at creation.
    Placement { live_cidr: String, live_az: String, cidr: String, az: String },
    /// Instances launched in it get a public IP.
    PublicIpOnLaunch,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Placement { live_cidr, live_az, cidr, az } => {
                write!(f, "is {live_cidr} in {live_az}, not {cidr} in {az}")
            }
            Change::PublicIpOnLaunch => f.write_str("MapPublicIpOnLaunch is on"),
        }
    }
}

impl super::Change for Change {
    fn replaces(&self) -> bool {
        matches!(self, Change::Placement { .. })
    }
}

pub struct Subnet;

impl Resource for Subnet {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "subnet";
    const ON_CHANGE: OnChange = OnChange::Replace;

    /// The stack's subnets by tag (one call); in teardown also the recorded ones the tag read did not find.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let out = cx
            .clients
            .ec2
            .describe_subnets()
            .filters(cx.ours())
            .send()
            .await
            .map_err(|e| api_error("read the stack's subnets", e))?;
        let mut found: Vec<Found<Facts>> = out.subnets().iter().filter_map(|s| of(cx, s)).collect();
        if cx.teardown() {
            let seen: BTreeSet<&str> = out.subnets().iter().filter_map(|s| s.subnet_id()).collect();
            let missing: Vec<String> = cx
                .recorded(Kind::Subnet)
                .map(|(_, r)| r.id.clone())
                .filter(|id| !seen.contains(id.as_str()))
                .collect();
            if !missing.is_empty() {
                // A filter, not SubnetIds: an id that no longer exists is simply not listed.
                let out = cx
                    .clients
                    .ec2
                    .describe_subnets()
                    .filters(Filter::builder().name("subnet-id").set_values(Some(missing.clone())).build())
                    .send()
                    .await
                    .map_err(|e| api_error("read the recorded subnets", e))?;
                found.extend(
                    out.subnets()
                        .iter()
                        .filter(|s| s.subnet_id().is_some_and(|id| missing.iter().any(|m| m == id)))
                        .filter_map(|s| of(cx, s)),
                );
            }
        }
        Ok(found)
    }

    fn compare(spec: &Spec, facts: &Facts, _cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if spec.cidr != facts.cidr || spec.az != facts.az {
            changes.push(Change::Placement {
                live_cidr: facts.cidr.clone(),
                live_az: facts.az.clone(),
                cidr: spec.cidr.clone(),
                az: spec.az.clone(),
            });
        }
        if facts.public_ip_on_launch {
            changes.push(Change::PublicIpOnLaunch);
        }
        changes
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let vpc_id = ctx.id_of(&NodeId::Vpc)?;
        let out = ctx
            .clients
            .ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(&spec.cidr)
            .availability_zone(&spec.az)
            .tag_specifications(ec2_tags(ctx, ResourceType::Subnet, &node.id, &spec.name))
            .send()
            .await
            .map_err(|e| api_error(format!("create subnet {} in {}", spec.cidr, spec.az), e))?;
        let subnet = out.subnet();
        let created = Created::from_answer("CreateSubnet", subnet.and_then(|s| s.subnet_id()), None)?;
        let facts = Facts {
            az: subnet.and_then(|s| s.availability_zone()).unwrap_or(&spec.az).to_string(),
            cidr: subnet.and_then(|s| s.cidr_block()).unwrap_or(&spec.cidr).to_string(),
            public_ip_on_launch: subnet.and_then(|s| s.map_public_ip_on_launch()).unwrap_or(false),
        };
        Ok((created, facts))
    }

    async fn update(
        ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        let subnet_id = live.id;
        for change in changes {
            match change {
                Change::PublicIpOnLaunch => {
                    ctx.clients
                        .ec2
                        .modify_subnet_attribute()
                        .subnet_id(subnet_id)
                        .map_public_ip_on_launch(AttributeBooleanValue::builder().value(false).build())
                        .send()
                        .await
                        .map_err(|e| api_error(format!("turn off public IPs on launch in subnet {subnet_id}"), e))?;
                }
                Change::Placement { .. } => {
                    bail!("internal error: {} ({change}) cannot be changed in place", live.node)
                }
            }
        }
        Ok(None)
    }

    /// Deleting a subnet fails with DependencyViolation while Fargate ENIs linger in it; that is waited out, bounded.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let subnet_id = live.id;
        let attempt = || async {
            ctx.clients
                .ec2
                .delete_subnet()
                .subnet_id(subnet_id)
                .send()
                .await
                .map_err(|e| api_error(format!("delete subnet {subnet_id}"), e))
        };
        let blocked = || blocking_enis(ctx, "subnet-id", subnet_id);
        let deleted = retry_while(ctx, &[ErrorKind::DependencyViolation], attempt, blocked).await.or_gone()?;
        Ok(if deleted.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
    }

    fn replace_reason(spec: &Spec) -> String {
        format!("subnet {} in {}: replacing a subnet moves every task of the stack", spec.cidr, spec.az)
    }
}

fn of(cx: &ReadCx<'_>, s: &aws_sdk_ec2::types::Subnet) -> Option<Found<Facts>> {
    Some(Found {
        node: ec2_node(s.tags()),
        id: s.subnet_id()?.to_string(),
        arn: None,
        owner: cx.owner(ec2_tag(s.tags(), TAG_STACK)),
        lineage: ec2_lineage(s.tags()),
        facts: Facts {
            az: s.availability_zone().unwrap_or_default().to_string(),
            cidr: s.cidr_block().unwrap_or_default().to_string(),
            public_ip_on_launch: s.map_public_ip_on_launch().unwrap_or(false),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn spec() -> Spec {
        Spec { az: "us-east-1a".into(), cidr: "10.0.0.0/20".into(), name: "demo-private-us-east-1a".into() }
    }

    fn facts() -> Facts {
        Facts { az: "us-east-1a".into(), cidr: "10.0.0.0/20".into(), public_ip_on_launch: false }
    }

    fn compare(facts: &Facts) -> Vec<Change> {
        let node_spec = super::super::Spec::Subnet(spec());
        let node = Node { id: NodeId::subnet("us-east-1a"), spec: node_spec, deps: vec![NodeId::Vpc] };
        let refs: BTreeMap<NodeId, Record> = BTreeMap::new();
        Subnet::compare(&spec(), facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn a_subnet_of_the_spec_is_in_sync() {
        assert_eq!(compare(&facts()), []);
    }

    #[test]
    fn another_cidr_or_az_needs_a_replacement() {
        for live in [Facts { cidr: "10.0.16.0/20".into(), ..facts() }, Facts { az: "us-east-1b".into(), ..facts() }] {
            let changes = compare(&live);
            assert_eq!(changes.len(), 1, "{live:?}");
            assert!(super::super::Change::replaces(&changes[0]));
        }
        let changes = compare(&Facts { az: "us-east-1b".into(), ..facts() });
        assert_eq!(changes[0].to_string(), "is 10.0.0.0/20 in us-east-1b, not 10.0.0.0/20 in us-east-1a");
    }

    #[test]
    fn public_ips_on_launch_are_changed_in_place() {
        let changes = compare(&Facts { public_ip_on_launch: true, ..facts() });
        assert_eq!(changes, [Change::PublicIpOnLaunch]);
        assert!(!super::super::Change::replaces(&changes[0]));
        assert_eq!(changes[0].to_string(), "MapPublicIpOnLaunch is on");
    }

    #[test]
    fn every_difference_is_reported() {
        let changes = compare(&Facts { cidr: "10.9.0.0/20".into(), public_ip_on_launch: true, ..facts() });
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let json = serde_json::to_string(&super::super::Spec::Subnet(spec())).unwrap();
        let want = r#"{"kind":"subnet","az":"us-east-1a","cidr":"10.0.0.0/20","name":"demo-private-us-east-1a"}"#;
        assert_eq!(json, want);
    }
}
