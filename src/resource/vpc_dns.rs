//! The VPC's DNS support and DNS hostnames attributes, a node of their own (`vpc-dns`) so that nothing but the
//! endpoints and services waits for them: Cloud Map's private zone and the endpoints' private DNS names resolve
//! inside the VPC only with both on. Recorded as `<vpc id>/dns` (a record id names one node); nothing to delete,
//! the attributes go with the VPC.

use std::fmt;

use anyhow::Result;
use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, VpcAttributeName};
use serde::Serialize;

use super::read::{ec2_lineage, ec2_node, ec2_tag};
use super::{
    Compare, Created, Ctx, Deleted, Found, OnChange, OrGone, Owner, ReadCx, Resource, Salt, TAG_STACK, View,
    api_error,
};
use crate::aws::Clients;
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec;

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// `None`: not read. Teardown reads no attributes (their deletion is a no-op), only whose VPC they are on.
    pub dns_support: Option<bool>,
    pub dns_hostnames: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    DnsSupportOff,
    DnsHostnamesOff,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::DnsSupportOff => f.write_str("DNS support is off"),
            Change::DnsHostnamesOff => f.write_str("DNS hostnames are off"),
        }
    }
}

impl super::Change for Change {}

pub struct VpcDns;

impl Resource for VpcDns {
    const PART_OF_PARENT: bool = true;
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "vpc dns attributes";
    const ON_CHANGE: OnChange = OnChange::InPlace;

    /// The attributes of the stack's VPC (the recorded one, else the one tagged as the stack's `vpc`): two
    /// attribute reads, made alongside the VPC read when the VPC is recorded. Attributes recorded for another VPC
    /// (the VPC was recreated) are not found, so they are set again.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        if cx.teardown() {
            return teardown(cx).await;
        }
        let recorded_vpc = cx.record(&NodeId::Vpc).map(|r| r.id.clone());
        let (vpcs, early) = tokio::join!(cx.vpcs(), async {
            match &recorded_vpc {
                Some(id) => Some(attributes(cx.clients, id).await),
                None => None,
            }
        });
        let vpcs = vpcs?;
        let vpc = match &recorded_vpc {
            Some(id) => vpcs.iter().find(|v| v.vpc_id() == Some(id.as_str())),
            None => vpcs.iter().find(|v| {
                ec2_node(v.tags()) == Some(NodeId::Vpc) && cx.owner(ec2_tag(v.tags(), TAG_STACK)) == Owner::Us
            }),
        };
        let Some((vpc, vpc_id)) = vpc.and_then(|v| Some((v, v.vpc_id()?))) else { return Ok(Vec::new()) };
        let id = dns_id(vpc_id);
        if cx.record(&NodeId::VpcDns).is_some_and(|r| r.id != id) {
            return Ok(Vec::new());
        }
        let facts = match early {
            Some(read) => read,
            None => attributes(cx.clients, vpc_id).await,
        };
        // Gone between the two reads: as if not found.
        let Some(facts) = facts.or_gone()? else { return Ok(Vec::new()) };
        let (owner, lineage) = (cx.owner(ec2_tag(vpc.tags(), TAG_STACK)), ec2_lineage(vpc.tags()));
        Ok(vec![Found { node: Some(NodeId::VpcDns), id, arn: None, owner, lineage, facts }])
    }

    fn compare(_spec: &Spec, facts: &Facts, _cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if facts.dns_support != Some(true) {
            changes.push(Change::DnsSupportOff);
        }
        if facts.dns_hostnames != Some(true) {
            changes.push(Change::DnsHostnamesOff);
        }
        changes
    }

    /// Turns both on (idempotent: a re-run after a crash sets them again).
    async fn create(ctx: &Ctx, _node: &Node, _spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let vpc_id = ctx.id_of(&NodeId::Vpc)?;
        let ec2 = &ctx.clients.ec2;
        // EC2 takes one attribute per call; the two are independent (DNS support is on in a new VPC, so the
        // hostnames need not wait for it).
        let (support, hostnames) = tokio::join!(
            ec2.modify_vpc_attribute().vpc_id(&vpc_id).enable_dns_support(on()).send(),
            ec2.modify_vpc_attribute().vpc_id(&vpc_id).enable_dns_hostnames(on()).send(),
        );
        support.map_err(|e| api_error(format!("enable DNS support on {vpc_id}"), e))?;
        hostnames.map_err(|e| api_error(format!("enable DNS hostnames on {vpc_id}"), e))?;
        let facts = Facts { dns_support: Some(true), dns_hostnames: Some(true) };
        Ok((Created::named(dns_id(&vpc_id), None), facts))
    }

    /// Turns on the attributes that are off, on the VPC the read found them on.
    async fn update(
        ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        let vpc_id = live.id.strip_suffix("/dns").unwrap_or(live.id);
        let ec2 = &ctx.clients.ec2;
        // DNS hostnames need DNS support: support first when both are off.
        if changes.contains(&Change::DnsSupportOff) {
            ec2.modify_vpc_attribute()
                .vpc_id(vpc_id)
                .enable_dns_support(on())
                .send()
                .await
                .map_err(|e| api_error(format!("enable DNS support on {vpc_id}"), e))?;
        }
        if changes.contains(&Change::DnsHostnamesOff) {
            ec2.modify_vpc_attribute()
                .vpc_id(vpc_id)
                .enable_dns_hostnames(on())
                .send()
                .await
                .map_err(|e| api_error(format!("enable DNS hostnames on {vpc_id}"), e))?;
        }
        Ok(None)
    }

    /// The attributes go with the VPC, deleted after this.
    async fn delete(_ctx: &Ctx, _live: &View<'_, Facts>) -> Result<Deleted> {
        Ok(Deleted::Now)
    }
}

pub fn dns_id(vpc_id: &str) -> String {
    format!("{vpc_id}/dns")
}

fn on() -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(true).build()
}

/// Both attributes of a VPC (EC2 answers one per call; the two at once).
async fn attributes(clients: &Clients, vpc_id: &str) -> Result<Facts> {
    let ec2 = &clients.ec2;
    let (support, hostnames) = tokio::join!(
        ec2.describe_vpc_attribute().vpc_id(vpc_id).attribute(VpcAttributeName::EnableDnsSupport).send(),
        ec2.describe_vpc_attribute().vpc_id(vpc_id).attribute(VpcAttributeName::EnableDnsHostnames).send(),
    );
    let support = support.map_err(|e| api_error(format!("read the DNS support attribute of {vpc_id}"), e))?;
    let hostnames = hostnames.map_err(|e| api_error(format!("read the DNS hostnames attribute of {vpc_id}"), e))?;
    Ok(Facts {
        dns_support: Some(support.enable_dns_support().and_then(|a| a.value()).unwrap_or(false)),
        dns_hostnames: Some(hostnames.enable_dns_hostnames().and_then(|a| a.value()).unwrap_or(false)),
    })
}

/// In teardown the recorded attributes are the VPC's: owned as it is, gone with it. No attribute is read.
async fn teardown(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
    let Some(record) = cx.record(&NodeId::VpcDns) else { return Ok(Vec::new()) };
    let vpc_id = record.id.strip_suffix("/dns").unwrap_or(&record.id);
    let unread = Facts { dns_support: None, dns_hostnames: None };
    let found = |tags: &[aws_sdk_ec2::types::Tag]| Found {
        node: Some(NodeId::VpcDns),
        id: record.id.clone(),
        arn: None,
        owner: cx.owner(ec2_tag(tags, TAG_STACK)),
        lineage: ec2_lineage(tags),
        facts: unread.clone(),
    };
    if let Some(vpc) = cx.vpcs().await?.iter().find(|v| v.vpc_id() == Some(vpc_id)) {
        return Ok(vec![found(vpc.tags())]);
    }
    // Not tagged as the stack's (the VPC kind looks it up the same way): whose it is, if it exists.
    let out = cx
        .clients
        .ec2
        .describe_vpcs()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .map_err(|e| api_error(format!("read VPC {vpc_id}"), e))?;
    Ok(out.vpcs().iter().find(|v| v.vpc_id() == Some(vpc_id)).map(|v| found(v.tags())).into_iter().collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn compare(facts: &Facts) -> Vec<Change> {
        let node = Node { id: NodeId::VpcDns, spec: super::super::Spec::VpcDns(Spec), deps: vec![NodeId::Vpc] };
        let refs: BTreeMap<NodeId, Record> = BTreeMap::new();
        VpcDns::compare(&Spec, facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn both_on_is_in_sync() {
        assert_eq!(compare(&Facts { dns_support: Some(true), dns_hostnames: Some(true) }), []);
    }

    #[test]
    fn each_attribute_off_is_a_change() {
        assert_eq!(compare(&Facts { dns_support: Some(false), dns_hostnames: Some(true) }), [Change::DnsSupportOff]);
        assert_eq!(compare(&Facts { dns_support: Some(true), dns_hostnames: Some(false) }), [Change::DnsHostnamesOff]);
    }

    #[test]
    fn a_new_vpc_has_hostnames_off() {
        // What a VPC looks like when a run was killed before the attributes were set: completed, not in sync.
        let changes = compare(&Facts { dns_support: Some(true), dns_hostnames: Some(false) });
        assert_eq!(changes.iter().map(ToString::to_string).collect::<Vec<_>>(), ["DNS hostnames are off"]);
    }

    #[test]
    fn unread_attributes_are_never_in_sync() {
        assert_eq!(compare(&Facts { dns_support: None, dns_hostnames: None }), [
            Change::DnsSupportOff,
            Change::DnsHostnamesOff
        ]);
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let json = serde_json::to_string(&super::super::Spec::VpcDns(Spec)).unwrap();
        assert_eq!(json, r#"{"kind":"vpc-dns"}"#);
        assert_eq!(dns_id("vpc-1"), "vpc-1/dns");
    }
}
