//! A NAT gateway (NAT mode) in a public subnet with its elastic IP: the private route tables' way out. Usable only
//! once available (minutes on AWS): the create makes it and the compare finds it pending until the update has waited
//! for it, so a run killed meanwhile leaves a gateway the next run waits for before any route points at it.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use aws_sdk_ec2::types::{Filter, NatGateway as Gateway, ResourceType};
use serde::Serialize;

use super::read::{ec2_node, ec2_lineage, ec2_tag};
use super::support::ec2_tags;
use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt, TAG_STACK,
    View, api_error, is,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
    /// The public subnet it sits in.
    pub subnet: NodeId,
    /// Its elastic IP.
    pub eip: NodeId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// `pending`, `available`, `deleting`, `deleted` or `failed`.
    pub state: String,
    pub subnet_id: Option<String>,
    /// The allocation ids of its addresses (empty: not reported).
    pub allocation_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Not available yet: no route may point at it before it is.
    NotAvailable(String),
    /// In another subnet: fixed at creation.
    Subnet { live: String, want: String },
    /// Without the stack's address: fixed at creation.
    Address { want: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::NotAvailable(state) => write!(f, "is {state}, not available"),
            Change::Subnet { live, want } => write!(f, "is in subnet {live}, not {want}"),
            Change::Address { want } => write!(f, "does not use elastic IP {want}"),
        }
    }
}

impl super::Change for Change {
    fn replaces(&self) -> bool {
        matches!(self, Change::Subnet { .. } | Change::Address { .. })
    }
}

pub struct NatGateway;

impl Resource for NatGateway {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "nat gateway";
    const ON_CHANGE: OnChange = OnChange::Replace;

    /// The stack's gateways by tag (one call) that are pending or available; in teardown also those being deleted
    /// (their address and subnet stay in use until they are gone, so `down` waits for them), and the recorded ones
    /// the tag read did not find.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let live = |g: &&Gateway| {
            let state = g.state().map(|s| s.as_str()).unwrap_or_default();
            matches!(state, "pending" | "available") || (cx.teardown() && state == "deleting")
        };
        let out = cx
            .clients
            .ec2
            .describe_nat_gateways()
            .filter(cx.ours())
            .send()
            .await
            .map_err(|e| api_error("read the stack's NAT gateways", e))?;
        // The tag is checked here too: moto ignores tag filters on NAT gateways, and another stack's gateway taken
        // for this one's would be reported as extra, or worse, adopted.
        let mut found: Vec<Found<Facts>> =
            out.nat_gateways().iter().filter(live).filter_map(|g| of(cx, g)).filter(|f| f.owner == Owner::Us).collect();
        if cx.teardown() {
            let seen: BTreeSet<&str> = out.nat_gateways().iter().filter_map(|g| g.nat_gateway_id()).collect();
            let recorded: Vec<String> = cx.recorded(Kind::NatGateway).map(|(_, r)| r.id.clone()).collect();
            let missing: Vec<String> = recorded.iter().filter(|id| !seen.contains(id.as_str())).cloned().collect();
            // Recorded ones the tag read listed but that are not tagged as ours are kept too, with their owner.
            found.extend(
                out.nat_gateways()
                    .iter()
                    .filter(live)
                    .filter(|g| g.nat_gateway_id().is_some_and(|id| recorded.iter().any(|r| r == id)))
                    .filter_map(|g| of(cx, g))
                    .filter(|f| f.owner != Owner::Us),
            );
            if !missing.is_empty() {
                // A filter, not NatGatewayIds: an id that no longer exists is simply not listed.
                let out = cx
                    .clients
                    .ec2
                    .describe_nat_gateways()
                    .filter(Filter::builder().name("nat-gateway-id").set_values(Some(missing.clone())).build())
                    .send()
                    .await
                    .map_err(|e| api_error("read the recorded NAT gateways", e))?;
                found.extend(
                    out.nat_gateways()
                        .iter()
                        .filter(live)
                        .filter(|g| g.nat_gateway_id().is_some_and(|id| missing.iter().any(|m| m == id)))
                        .filter_map(|g| of(cx, g)),
                );
            }
        }
        Ok(found)
    }

    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(want) = cx.id(&spec.subnet)
            && facts.subnet_id.as_deref() != Some(want.as_str())
        {
            let live = facts.subnet_id.clone().unwrap_or_else(|| "?".into());
            changes.push(Change::Subnet { live, want });
        }
        // An answer without addresses tells nothing about them.
        if let Some(want) = cx.id(&spec.eip)
            && !facts.allocation_ids.is_empty()
            && !facts.allocation_ids.contains(&want)
        {
            changes.push(Change::Address { want });
        }
        if facts.state != "available" {
            changes.push(Change::NotAvailable(facts.state.clone()));
        }
        changes
    }

    /// Makes the gateway (pending); the update waits until it is available.
    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, salt: &Salt) -> Result<(Created, Facts)> {
        let subnet_id = ctx.id_of(&spec.subnet)?;
        let allocation_id = ctx.id_of(&spec.eip)?;
        let out = ctx
            .clients
            .ec2
            .create_nat_gateway()
            .subnet_id(&subnet_id)
            .allocation_id(&allocation_id)
            .client_token(salt.token(&ctx.stack, &node.id))
            .tag_specifications(ec2_tags(ctx, ResourceType::Natgateway, &node.id, &spec.name))
            .send()
            .await
            .map_err(|e| api_error(format!("create NAT gateway {} in {subnet_id}", spec.name), e))?;
        let gateway = out.nat_gateway();
        let created = Created::from_answer("CreateNatGateway", gateway.and_then(|g| g.nat_gateway_id()), None)?;
        // Made as asked: where the answer leaves a field out, it is what the request said.
        let mut facts = gateway.map_or_else(|| facts_of(&Gateway::builder().build()), facts_of);
        if facts.state.is_empty() {
            facts.state = "pending".into();
        }
        facts.subnet_id = facts.subnet_id.or(Some(subnet_id));
        if facts.allocation_ids.is_empty() {
            facts.allocation_ids = vec![allocation_id];
        }
        Ok((created, facts))
    }

    /// Waits until the gateway is available (a route to a NAT gateway that then fails would leave the tasks without
    /// a way out).
    async fn update(
        ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        for change in changes {
            match change {
                Change::NotAvailable(_) => wait_nat(ctx, live.id, "available", ctx.operation_timeout).await?,
                Change::Subnet { .. } | Change::Address { .. } => {
                    bail!("internal error: {} ({change}) cannot be changed in place", live.node)
                }
            }
        }
        Ok(None)
    }

    /// Deletes and waits until the gateway is gone: its address and subnet stay in use until then.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let id = live.id;
        let out = ctx
            .clients
            .ec2
            .delete_nat_gateway()
            .nat_gateway_id(id)
            .send()
            .await
            .map_err(|e| api_error(format!("delete NAT gateway {id}"), e))
            .or_gone()?;
        if out.is_none() {
            return Ok(Deleted::AlreadyGone);
        }
        wait_nat(ctx, id, "deleted", ctx.dependency_timeout).await?;
        Ok(Deleted::Now)
    }

    fn replace_reason(_spec: &Spec) -> String {
        "the NAT path: replacing it cuts the tasks' way out until the new gateway is available".to_string()
    }
}

fn of(cx: &ReadCx<'_>, g: &Gateway) -> Option<Found<Facts>> {
    Some(Found {
        node: ec2_node(g.tags()),
        id: g.nat_gateway_id()?.to_string(),
        arn: None,
        owner: cx.owner(ec2_tag(g.tags(), TAG_STACK)),
        lineage: ec2_lineage(g.tags()),
        facts: facts_of(g),
    })
}

fn facts_of(g: &Gateway) -> Facts {
    Facts {
        state: g.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        subnet_id: g.subnet_id().map(str::to_string),
        allocation_ids: g
            .nat_gateway_addresses()
            .iter()
            .filter_map(|a| a.allocation_id())
            .map(str::to_string)
            .collect(),
    }
}

/// The state of a NAT gateway, with its failure message (`None`: it does not exist).
async fn nat_state(ctx: &Ctx, id: &str) -> Result<Option<(String, Option<String>)>> {
    match nat_state_strict(ctx, id).await {
        Ok(state) => Ok(Some(state)),
        Err(e) if is(&e, ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The state of a NAT gateway; NotFound is an error.
async fn nat_state_strict(ctx: &Ctx, id: &str) -> Result<(String, Option<String>)> {
    let out = ctx
        .clients
        .ec2
        .describe_nat_gateways()
        .nat_gateway_ids(id)
        .send()
        .await
        .map_err(|e| api_error(format!("read NAT gateway {id}"), e))?;
    let found = out.nat_gateways().first().map(|n| {
        (n.state().map(|s| s.as_str().to_string()).unwrap_or_default(), n.failure_message().map(str::to_string))
    });
    // An empty answer for an id is what AWS says of a gateway long deleted.
    found.ok_or_else(|| {
        anyhow::Error::new(super::ApiError {
            action: format!("read NAT gateway {id}"),
            code: Some("NatGatewayNotFound".into()),
            kind: ErrorKind::NotFound,
            detail: format!("NAT gateway {id} was not found (NatGatewayNotFound)"),
        })
    })
}

async fn wait_nat(ctx: &Ctx, id: &str, want: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        // A gateway this run just made can be unknown for a moment (eventual consistency): while waiting for it to
        // become available, NotFound is propagation (retried by the caller), not absence.
        let state = if want == "available" { nat_state_strict(ctx, id).await.map(Some)? } else { nat_state(ctx, id).await? };
        match state.as_ref().map(|(s, m)| (s.as_str(), m)) {
            Some((s, _)) if s == want => return Ok(()),
            None if want == "deleted" => return Ok(()),
            Some(("failed", message)) => {
                bail!("NAT gateway {id} failed: {}", message.as_deref().unwrap_or("no reason given"))
            }
            // Deleted behind secep's back while it was being waited for: it will never be available.
            None => bail!("NAT gateway {id} no longer exists\n  hint: re-run the command to create it again"),
            Some((s @ ("deleting" | "deleted"), _)) if want == "available" => {
                bail!("NAT gateway {id} is {s}\n  hint: re-run the command to create it again")
            }
            _ if started.elapsed() > timeout => {
                bail!("NAT gateway {id} is not {want} after {}s\n  hint: raise --operation-timeout", timeout.as_secs())
            }
            _ => ctx.pause(crate::aws::poll_delay(started.elapsed()), || format!("NAT gateway {id} to be {want}")).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn spec() -> Spec {
        Spec {
            name: "demo-us-east-1a".into(),
            subnet: NodeId::PublicSubnet("us-east-1a".into()),
            eip: NodeId::ElasticIp("us-east-1a".into()),
        }
    }

    fn facts() -> Facts {
        Facts {
            state: "available".into(),
            subnet_id: Some("subnet-1".into()),
            allocation_ids: vec!["eipalloc-1".into()],
        }
    }

    fn compare(facts: &Facts) -> Vec<Change> {
        let s = spec();
        let node = Node {
            id: NodeId::NatGateway("us-east-1a".into()),
            spec: super::super::Spec::NatGateway(s.clone()),
            deps: vec![s.subnet.clone(), s.eip.clone()],
        };
        let record = |id: &str| Record { id: id.into(), arn: None, digest: String::new() };
        let refs: BTreeMap<NodeId, Record> =
            [(s.subnet.clone(), record("subnet-1")), (s.eip.clone(), record("eipalloc-1"))].into_iter().collect();
        NatGateway::compare(&s, facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn an_available_gateway_of_the_spec_is_in_sync() {
        assert_eq!(compare(&facts()), []);
    }

    #[test]
    fn a_pending_gateway_is_waited_for() {
        // What the create reports, and what a run killed while waiting leaves: completed, not in sync.
        let changes = compare(&Facts { state: "pending".into(), ..facts() });
        assert_eq!(changes, [Change::NotAvailable("pending".into())]);
        assert!(!super::super::Change::replaces(&changes[0]));
        assert_eq!(changes[0].to_string(), "is pending, not available");
    }

    #[test]
    fn another_subnet_or_address_needs_a_replacement() {
        let changes = compare(&Facts { subnet_id: Some("subnet-9".into()), ..facts() });
        assert_eq!(changes, [Change::Subnet { live: "subnet-9".into(), want: "subnet-1".into() }]);
        assert!(super::super::Change::replaces(&changes[0]));
        let changes = compare(&Facts { allocation_ids: vec!["eipalloc-9".into()], ..facts() });
        assert_eq!(changes, [Change::Address { want: "eipalloc-1".into() }]);
        assert!(super::super::Change::replaces(&changes[0]));
    }

    #[test]
    fn unreported_addresses_are_not_a_difference() {
        assert_eq!(compare(&Facts { allocation_ids: vec![], ..facts() }), []);
    }

    #[test]
    fn every_difference_is_reported() {
        let live = Facts { state: "pending".into(), subnet_id: None, allocation_ids: vec!["eipalloc-9".into()] };
        assert_eq!(compare(&live).len(), 3);
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let json = serde_json::to_string(&super::super::Spec::NatGateway(spec())).unwrap();
        let want = concat!(
            r#"{"kind":"nat-gateway","name":"demo-us-east-1a","#,
            r#""subnet":"public-subnet/us-east-1a","eip":"eip/us-east-1a"}"#
        );
        assert_eq!(json, want);
    }
}
