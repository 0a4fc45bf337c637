//! The internet gateway of the stack's VPC (NAT mode): the public route table's way out. Made by two calls, create
//! and attach: the create makes the gateway only, and the compare finds it not attached until the update attaches
//! it, so a run killed between the two leaves a gateway the next run completes.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::Result;
use aws_sdk_ec2::types::{AttachmentStatus, Filter, InternetGateway as Gateway, ResourceType};
use serde::Serialize;

use super::read::{ec2_node, ec2_lineage, ec2_tag};
use super::support::{ec2_tags, retry_while};
use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt,
    TAG_STACK, View, api_error, is,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The VPC it is attached to (a gateway attaches to one at most).
    pub vpc: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    NotAttached,
    /// Attached to another VPC than the stack's.
    AttachedElsewhere(String),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::NotAttached => f.write_str("not attached to the VPC"),
            Change::AttachedElsewhere(vpc) => write!(f, "attached to {vpc}, not to the VPC"),
        }
    }
}

impl super::Change for Change {}

pub struct InternetGateway;

impl Resource for InternetGateway {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "internet gateway";
    const ON_CHANGE: OnChange = OnChange::Replace;
    /// Its attachment names the VPC's id.
    const FOLLOWS_DEPENDENCIES: bool = true;

    /// The stack's gateways by tag (one call); in teardown also the recorded ones the tag read did not find.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let out = cx
            .clients
            .ec2
            .describe_internet_gateways()
            .filters(cx.ours())
            .send()
            .await
            .map_err(|e| api_error("read the stack's internet gateway", e))?;
        // The tag is checked here too: moto ignores tag filters on some kinds, and another stack's gateway taken
        // for this one's would be reported as extra, or worse, adopted.
        let mut found: Vec<Found<Facts>> =
            out.internet_gateways().iter().filter_map(|g| of(cx, g)).filter(|f| f.owner == Owner::Us).collect();
        if cx.teardown() {
            let seen: BTreeSet<&str> = out.internet_gateways().iter().filter_map(|g| g.internet_gateway_id()).collect();
            let recorded: Vec<String> = cx.recorded(Kind::InternetGateway).map(|(_, r)| r.id.clone()).collect();
            let missing: Vec<String> = recorded.iter().filter(|id| !seen.contains(id.as_str())).cloned().collect();
            // Recorded ones the tag read listed but that are not tagged as ours are kept too, with their owner.
            found.extend(
                out.internet_gateways()
                    .iter()
                    .filter(|g| g.internet_gateway_id().is_some_and(|id| recorded.iter().any(|r| r == id)))
                    .filter_map(|g| of(cx, g))
                    .filter(|f| f.owner != Owner::Us),
            );
            if !missing.is_empty() {
                // A filter, not InternetGatewayIds: an id that no longer exists is simply not listed.
                let out = cx
                    .clients
                    .ec2
                    .describe_internet_gateways()
                    .filters(Filter::builder().name("internet-gateway-id").set_values(Some(missing.clone())).build())
                    .send()
                    .await
                    .map_err(|e| api_error("read the recorded internet gateways", e))?;
                found.extend(
                    out.internet_gateways()
                        .iter()
                        .filter(|g| g.internet_gateway_id().is_some_and(|id| missing.iter().any(|m| m == id)))
                        .filter_map(|g| of(cx, g)),
                );
            }
        }
        Ok(found)
    }

    fn compare(_spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let vpc = cx.id(&NodeId::Vpc);
        match (&facts.vpc, vpc) {
            (None, _) => vec![Change::NotAttached],
            (Some(live), Some(vpc)) if *live != vpc => vec![Change::AttachedElsewhere(live.clone())],
            _ => Vec::new(),
        }
    }

    /// Makes the gateway only: the update attaches it (see the module doc).
    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let out = ctx
            .clients
            .ec2
            .create_internet_gateway()
            .tag_specifications(ec2_tags(ctx, ResourceType::InternetGateway, &node.id, &spec.name))
            .send()
            .await
            .map_err(|e| api_error(format!("create internet gateway {}", spec.name), e))?;
        let gateway = out.internet_gateway();
        let id = gateway.and_then(|g| g.internet_gateway_id());
        let created = Created::from_answer("CreateInternetGateway", id, None)?;
        Ok((created, Facts { vpc: gateway.and_then(attached_vpc) }))
    }

    /// Attaches the gateway to the stack's VPC, detaching it from another VPC first.
    async fn update(
        ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        if changes.is_empty() {
            return Ok(None);
        }
        let id = live.id;
        let vpc_id = ctx.id_of(&NodeId::Vpc)?;
        for change in changes {
            if let Change::AttachedElsewhere(other) = change {
                // Already detached meanwhile: nothing to do.
                detach(ctx, id, other).await.or_gone()?;
            }
        }
        ctx.clients
            .ec2
            .attach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(&vpc_id)
            .send()
            .await
            .map_err(|e| api_error(format!("attach internet gateway {id} to {vpc_id}"), e))?;
        Ok(None)
    }

    /// Detaches (AWS refuses while NAT gateways' addresses are still mapped: waited out) and deletes.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let id = live.id;
        if let Some(vpc) = &live.facts.vpc {
            // Gone, or detached meanwhile: the delete below tells which.
            detach(ctx, id, vpc).await.or_gone()?;
        }
        let deleted = match delete_gateway(ctx, id).await {
            // Attached since it was read (by this run's update): detach from what it is attached to now.
            Err(e) if is(&e, ErrorKind::DependencyViolation) => {
                for vpc in attachments(ctx, id).await? {
                    detach(ctx, id, &vpc).await.or_gone()?;
                }
                delete_gateway(ctx, id).await.or_gone()?
            }
            other => other.or_gone()?,
        };
        Ok(if deleted.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
    }

    fn replace_reason(_spec: &Spec) -> String {
        "the NAT path: replacing it cuts the tasks' way out until the new gateway is available".to_string()
    }
}

fn of(cx: &ReadCx<'_>, g: &Gateway) -> Option<Found<Facts>> {
    Some(Found {
        node: ec2_node(g.tags()),
        id: g.internet_gateway_id()?.to_string(),
        arn: None,
        owner: cx.owner(ec2_tag(g.tags(), TAG_STACK)),
        lineage: ec2_lineage(g.tags()),
        facts: Facts { vpc: attached_vpc(g) },
    })
}

/// The VPC a gateway is attached to. AWS reports an attached gateway's attachment as `available`, moto too; only
/// `detaching` and `detached` mean it is on its way out.
fn attached_vpc(g: &Gateway) -> Option<String> {
    g.attachments()
        .iter()
        .filter(|a| !matches!(a.state(), Some(AttachmentStatus::Detached | AttachmentStatus::Detaching)))
        .find_map(|a| a.vpc_id())
        .map(str::to_string)
}

/// The VPCs a gateway is attached to now (none when it is gone).
async fn attachments(ctx: &Ctx, id: &str) -> Result<Vec<String>> {
    let out = ctx
        .clients
        .ec2
        .describe_internet_gateways()
        .internet_gateway_ids(id)
        .send()
        .await
        .map_err(|e| api_error(format!("read internet gateway {id}"), e))
        .or_gone()?;
    Ok(out
        .iter()
        .flat_map(|o| o.internet_gateways())
        .flat_map(|g| g.attachments())
        .filter_map(|a| a.vpc_id())
        .map(str::to_string)
        .collect())
}

async fn detach(ctx: &Ctx, id: &str, vpc: &str) -> Result<()> {
    let attempt = || async {
        ctx.clients
            .ec2
            .detach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc)
            .send()
            .await
            .map_err(|e| api_error(format!("detach internet gateway {id} from {vpc}"), e))
    };
    let blocked = || async {
        format!("{vpc} still has public addresses mapped (NAT gateways or a deleted load balancer's network interfaces being released?)")
    };
    retry_while(ctx, &[ErrorKind::DependencyViolation], attempt, blocked).await?;
    Ok(())
}

async fn delete_gateway(ctx: &Ctx, id: &str) -> Result<()> {
    ctx.clients
        .ec2
        .delete_internet_gateway()
        .internet_gateway_id(id)
        .send()
        .await
        .map_err(|e| api_error(format!("delete internet gateway {id}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn compare(facts: &Facts, vpc: Option<&str>) -> Vec<Change> {
        let spec = Spec { name: "demo".into() };
        let node = Node {
            id: NodeId::InternetGateway,
            spec: super::super::Spec::InternetGateway(spec.clone()),
            deps: vec![NodeId::Vpc],
        };
        let refs: BTreeMap<NodeId, Record> = vpc
            .map(|id| (NodeId::Vpc, Record { id: id.into(), arn: None, digest: String::new() }))
            .into_iter()
            .collect();
        InternetGateway::compare(&spec, facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn a_gateway_attached_to_the_vpc_is_in_sync() {
        assert_eq!(compare(&Facts { vpc: Some("vpc-1".into()) }, Some("vpc-1")), []);
    }

    #[test]
    fn a_gateway_just_created_is_not_attached() {
        // What the create reports, and what a run killed between create and attach leaves: completed, not in sync.
        let changes = compare(&Facts { vpc: None }, Some("vpc-1"));
        assert_eq!(changes, [Change::NotAttached]);
        assert_eq!(changes[0].to_string(), "not attached to the VPC");
        assert!(!super::super::Change::replaces(&changes[0]));
        assert_eq!(compare(&Facts { vpc: None }, None), [Change::NotAttached]);
    }

    #[test]
    fn a_gateway_attached_elsewhere_is_moved() {
        let changes = compare(&Facts { vpc: Some("vpc-0".into()) }, Some("vpc-1"));
        assert_eq!(changes, [Change::AttachedElsewhere("vpc-0".into())]);
        assert_eq!(changes[0].to_string(), "attached to vpc-0, not to the VPC");
    }

    #[test]
    fn detaching_attachments_do_not_count() {
        use aws_sdk_ec2::types::InternetGatewayAttachment;
        let attachment =
            |state: AttachmentStatus| InternetGatewayAttachment::builder().vpc_id("vpc-1").state(state).build();
        let gateway = |state: AttachmentStatus| {
            Gateway::builder().internet_gateway_id("igw-1").attachments(attachment(state)).build()
        };
        assert_eq!(attached_vpc(&gateway(AttachmentStatus::from("available"))), Some("vpc-1".into()));
        assert_eq!(attached_vpc(&gateway(AttachmentStatus::Attached)), Some("vpc-1".into()));
        assert_eq!(attached_vpc(&gateway(AttachmentStatus::Detaching)), None);
        assert_eq!(attached_vpc(&Gateway::builder().build()), None);
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let json = serde_json::to_string(&super::super::Spec::InternetGateway(Spec { name: "demo".into() })).unwrap();
        assert_eq!(json, r#"{"kind":"internet-gateway","name":"demo"}"#);
    }
}
