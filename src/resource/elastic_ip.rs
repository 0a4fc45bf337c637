//! An elastic IP (NAT mode): the public address of one NAT gateway. Nothing of it is compared; it is released after
//! its NAT gateway is gone.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use aws_sdk_ec2::types::{Address, DomainType, Filter, ResourceType};
use serde::Serialize;

use super::read::{ec2_node, ec2_lineage, ec2_tag};
use super::support::{ec2_tags, retry_while};
use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, NoChange, OnChange, OrGone, Owner, ReadCx, Resource, Salt,
    TAG_STACK, View, api_error, is,
};
use crate::model::Node;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub public_ip: Option<String>,
}

pub struct ElasticIp;

impl Resource for ElasticIp {
    type Spec = Spec;
    type Facts = Facts;
    type Change = NoChange;
    const LABEL: &'static str = "elastic ip";
    const ON_CHANGE: OnChange = OnChange::Replace;

    /// The stack's addresses by tag (one call); in teardown also the recorded ones the tag read did not find.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let out = cx
            .clients
            .ec2
            .describe_addresses()
            .filters(cx.ours())
            .send()
            .await
            .map_err(|e| api_error("read the stack's elastic IPs", e))?;
        // The tag is checked here too: moto ignores tag filters on some kinds, and another stack's address taken
        // for this one's would be reported as extra, or worse, adopted.
        let mut found: Vec<Found<Facts>> =
            out.addresses().iter().filter_map(|a| of(cx, a)).filter(|f| f.owner == Owner::Us).collect();
        if cx.teardown() {
            let seen: BTreeSet<&str> = out.addresses().iter().filter_map(|a| a.allocation_id()).collect();
            let recorded: Vec<String> = cx.recorded(Kind::ElasticIp).map(|(_, r)| r.id.clone()).collect();
            let missing: Vec<String> = recorded.iter().filter(|id| !seen.contains(id.as_str())).cloned().collect();
            // Recorded ones the tag read listed but that are not tagged as ours are kept too, with their owner.
            found.extend(
                out.addresses()
                    .iter()
                    .filter(|a| a.allocation_id().is_some_and(|id| recorded.iter().any(|r| r == id)))
                    .filter_map(|a| of(cx, a))
                    .filter(|f| f.owner != Owner::Us),
            );
            if !missing.is_empty() {
                // A filter, not AllocationIds: an id that no longer exists is simply not listed.
                let out = cx
                    .clients
                    .ec2
                    .describe_addresses()
                    .filters(Filter::builder().name("allocation-id").set_values(Some(missing.clone())).build())
                    .send()
                    .await
                    .map_err(|e| api_error("read the recorded elastic IPs", e))?;
                found.extend(
                    out.addresses()
                        .iter()
                        .filter(|a| a.allocation_id().is_some_and(|id| missing.iter().any(|m| m == id)))
                        .filter_map(|a| of(cx, a)),
                );
            }
        }
        Ok(found)
    }

    fn compare(_spec: &Spec, _facts: &Facts, _cx: &Compare<'_>) -> Vec<NoChange> {
        Vec::new()
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let out = ctx
            .clients
            .ec2
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(ec2_tags(ctx, ResourceType::ElasticIp, &node.id, &spec.name))
            .send()
            .await
            .map_err(|e| api_error(format!("allocate an elastic IP for {}", spec.name), e))?;
        let created = Created::from_answer("AllocateAddress", out.allocation_id(), None)?;
        Ok((created, Facts { public_ip: out.public_ip().map(str::to_string) }))
    }

    async fn update(
        _ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[NoChange],
    ) -> Result<Option<Created>> {
        if changes.is_empty() {
            return Ok(None);
        }
        bail!("internal error: {} cannot be changed in place", live.node)
    }

    /// Releases the address; while a NAT gateway being deleted still holds it, AWS says InvalidIPAddress.InUse (and
    /// sometimes AuthFailure, classified as access denied: waited out the same way).
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let allocation_id = live.id;
        let release = || async {
            let out = ctx.clients.ec2.release_address().allocation_id(allocation_id).send().await;
            match out.map_err(|e| api_error(format!("release elastic IP {allocation_id}"), e)) {
                Ok(_) => Ok(Deleted::Now),
                // AWS answers AuthFailure for an address already released (and taken by another account since):
                // gone, if the account no longer lists it; else it is still held, and retried.
                Err(e) if is(&e, ErrorKind::AccessDenied) && !still_allocated(ctx, allocation_id).await? => {
                    Ok(Deleted::AlreadyGone)
                }
                Err(e) => Err(e),
            }
        };
        let blocked = || async { format!("{allocation_id} is still associated (its NAT gateway is being deleted?)") };
        let released =
            retry_while(ctx, &[ErrorKind::InUse, ErrorKind::AccessDenied], release, blocked).await.or_gone()?;
        Ok(released.unwrap_or(Deleted::AlreadyGone))
    }

    fn replace_reason(_spec: &Spec) -> String {
        "the NAT path: replacing it cuts the tasks' way out until the new gateway is available".to_string()
    }
}

/// Whether the account still holds the address (a NotFound answer: it does not).
async fn still_allocated(ctx: &Ctx, allocation_id: &str) -> Result<bool> {
    let out = ctx.clients.ec2.describe_addresses().allocation_ids(allocation_id).send().await;
    let out = out.map_err(|e| api_error(format!("read elastic IP {allocation_id}"), e)).or_gone()?;
    Ok(out.is_some_and(|o| o.addresses().iter().any(|a| a.allocation_id() == Some(allocation_id))))
}

fn of(cx: &ReadCx<'_>, a: &Address) -> Option<Found<Facts>> {
    Some(Found {
        node: ec2_node(a.tags()),
        id: a.allocation_id()?.to_string(),
        arn: None,
        owner: cx.owner(ec2_tag(a.tags(), TAG_STACK)),
        lineage: ec2_lineage(a.tags()),
        facts: Facts { public_ip: a.public_ip().map(str::to_string) },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::NodeId;
    use crate::state::Record;

    #[test]
    fn an_address_has_nothing_to_compare() {
        let spec = Spec { name: "demo-us-east-1a".into() };
        let node = Node {
            id: NodeId::ElasticIp("us-east-1a".into()),
            spec: super::super::Spec::ElasticIp(spec.clone()),
            deps: vec![],
        };
        let refs: BTreeMap<NodeId, Record> = BTreeMap::new();
        let cx = Compare { node: &node, refs: &refs, config_changed: true };
        assert_eq!(ElasticIp::compare(&spec, &Facts { public_ip: None }, &cx), []);
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let json = serde_json::to_string(&super::super::Spec::ElasticIp(Spec { name: "demo".into() })).unwrap();
        assert_eq!(json, r#"{"kind":"elastic-ip","name":"demo"}"#);
    }
}
