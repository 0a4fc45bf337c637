//! The stack's internet-facing application load balancer (`lb`): in the public subnets, behind its own group, with
//! invalid header fields dropped (so a malformed header never reaches a service). Subnets, group and attributes
//! change in place; the scheme is fixed at creation. Its ENIs outlive it for minutes: `down` waits for the
//! load balancer to go, and the group and subnet deletes wait out the rest (see `support::retry_while`).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Instant;

use anyhow::{Result, bail};
use aws_sdk_elasticloadbalancingv2::types::{
    IpAddressType, LoadBalancer as Lb, LoadBalancerAttribute, LoadBalancerSchemeEnum, LoadBalancerTypeEnum,
};
use serde::Serialize;

use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, ReadCx, Resource, Salt, View, api_error,
    is,
};
use crate::model::{Node, NodeId};

/// AWS's attribute that drops request headers whose names are not valid HTTP (a request smuggling vector).
pub const DROP_INVALID_HEADERS: &str = "routing.http.drop_invalid_header_fields.enabled";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// `provisioning`, `active`, `active_impaired` or `failed`.
    pub state: String,
    pub scheme: String,
    pub dns_name: String,
    pub subnets: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    /// `None`: not read (a create's answer); AWS's default is off.
    pub drops_invalid_headers: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Internal, not internet-facing: fixed at creation.
    Scheme(String),
    Subnets { from: BTreeSet<String>, to: BTreeSet<String> },
    Groups { from: BTreeSet<String>, to: BTreeSet<String> },
    /// Lets invalid header fields through to the services.
    InvalidHeaders,
}

fn list(ids: &BTreeSet<String>) -> String {
    if ids.is_empty() { "none".into() } else { ids.iter().cloned().collect::<Vec<_>>().join(", ") }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Scheme(s) => write!(f, "is {s}, not internet-facing"),
            Change::Subnets { from, to } => write!(f, "subnets are {}, not {}", list(from), list(to)),
            Change::Groups { from, to } => write!(f, "security groups are {}, not {}", list(from), list(to)),
            Change::InvalidHeaders => f.write_str("passes invalid header fields on to the services"),
        }
    }
}

impl super::Change for Change {
    fn replaces(&self) -> bool {
        matches!(self, Change::Scheme(_))
    }
}

pub struct LoadBalancer;

impl Resource for LoadBalancer {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "load balancer";
    const ON_CHANGE: OnChange = OnChange::InPlace;
    /// It names its subnets and group by id.
    const FOLLOWS_DEPENDENCIES: bool = true;

    /// The load balancers in the stack's VPC, or recorded (from the shared Elastic Load Balancing read): the
    /// recorded one, one tagged as the node, and in teardown every one tagged for the stack or recorded.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let view = cx.elb().await?;
        let recorded: BTreeSet<&str> = cx.recorded(Kind::LoadBalancer).map(|(_, r)| r.id.as_str()).collect();
        Ok(view
            .load_balancers
            .iter()
            .filter_map(|lb| {
                let arn = lb.load_balancer_arn()?;
                let tags = view.stack_tags(arn);
                let owner = cx.owner(tags.stack.as_deref());
                if owner != super::Owner::Us && !recorded.contains(arn) {
                    return None;
                }
                let attributes = view.attributes.get(arn);
                let drops = attributes.and_then(|a| a.get(DROP_INVALID_HEADERS)).map(|v| v == "true");
                Some(Found {
                    node: view.node(arn).filter(|n| n.kind() == Kind::LoadBalancer),
                    id: arn.to_string(),
                    arn: Some(arn.to_string()),
                    owner,
                    lineage: tags.lineage,
                    // An attribute AWS does not list is at its default: off.
                    facts: Facts { drops_invalid_headers: Some(drops.unwrap_or(false)), ..facts_of(lb) },
                })
            })
            .collect())
    }

    fn compare(_spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if !facts.scheme.is_empty() && facts.scheme != "internet-facing" {
            changes.push(Change::Scheme(facts.scheme.clone()));
        }
        if let Some(subnets) = cx.dep_ids(|d| matches!(d, NodeId::PublicSubnet(_))) {
            let subnets: BTreeSet<String> = subnets.into_iter().collect();
            if subnets != facts.subnets {
                changes.push(Change::Subnets { from: facts.subnets.clone(), to: subnets });
            }
        }
        if let Some(group) = cx.id(&NodeId::LbGroup) {
            let groups = BTreeSet::from([group]);
            if groups != facts.groups {
                changes.push(Change::Groups { from: facts.groups.clone(), to: groups });
            }
        }
        if facts.drops_invalid_headers != Some(true) {
            changes.push(Change::InvalidHeaders);
        }
        changes
    }

    /// Makes the load balancer (provisioning for a minute or two on AWS; its listeners and targets may be added
    /// meanwhile); the update that follows sets its attributes.
    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let subnets = dep_ids(ctx, node, |d| matches!(d, NodeId::PublicSubnet(_)))?;
        let group = ctx.id_of(&NodeId::LbGroup)?;
        let out = ctx
            .clients
            .elb
            .create_load_balancer()
            .name(&spec.name)
            .r#type(LoadBalancerTypeEnum::Application)
            .scheme(LoadBalancerSchemeEnum::InternetFacing)
            .ip_address_type(IpAddressType::Ipv4)
            .set_subnets(Some(subnets.clone()))
            .security_groups(&group)
            .set_tags(Some(super::elb::tags(ctx, &node.id, &spec.name)))
            .send()
            .await
            .map_err(|e| api_error(format!("create load balancer {}", spec.name), e))?;
        let lb = out.load_balancers().first();
        let arn = lb.and_then(|l| l.load_balancer_arn());
        let created = Created::from_answer("CreateLoadBalancer", arn, arn)?;
        // Made as asked: where the answer leaves a field out, it is what the request said.
        let mut facts = lb.map_or_else(|| facts_of(&Lb::builder().build()), facts_of);
        if facts.subnets.is_empty() {
            facts.subnets = subnets.into_iter().collect();
        }
        if facts.groups.is_empty() {
            facts.groups = BTreeSet::from([group]);
        }
        facts.drops_invalid_headers = Some(false);
        Ok((created, facts))
    }

    async fn update(
        ctx: &Ctx,
        _node: &Node,
        spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        let elb = &ctx.clients.elb;
        for change in changes {
            match change {
                Change::Scheme(_) => bail!("internal error: {} ({change}) cannot be changed in place", live.node),
                Change::Subnets { to, .. } => {
                    let out = elb.set_subnets().load_balancer_arn(live.id).set_subnets(Some(to.iter().cloned().collect()));
                    out.send().await.map_err(|e| api_error(format!("move load balancer {} to {}", spec.name, list(to)), e))?;
                }
                Change::Groups { .. } => {
                    let group = ctx.id_of(&NodeId::LbGroup)?;
                    let out = elb.set_security_groups().load_balancer_arn(live.id).security_groups(&group);
                    out.send()
                        .await
                        .map_err(|e| api_error(format!("set the security group of load balancer {}", spec.name), e))?;
                }
                Change::InvalidHeaders => {
                    let attribute = LoadBalancerAttribute::builder().key(DROP_INVALID_HEADERS).value("true").build();
                    let out = elb.modify_load_balancer_attributes().load_balancer_arn(live.id).attributes(attribute);
                    out.send().await.map_err(|e| {
                        api_error(format!("drop invalid header fields on load balancer {}", spec.name), e)
                    })?;
                }
            }
        }
        Ok(None)
    }

    /// Deletes the load balancer (its listeners go with it) and waits until AWS no longer lists it. Its network
    /// interfaces linger for minutes more: the group and subnet deletes that follow wait them out.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let arn = live.id;
        let out = ctx
            .clients
            .elb
            .delete_load_balancer()
            .load_balancer_arn(arn)
            .send()
            .await
            .map_err(|e| api_error(format!("delete load balancer {arn}"), e))
            .or_gone()?;
        if out.is_none() {
            return Ok(Deleted::AlreadyGone);
        }
        let started = Instant::now();
        loop {
            let out = ctx.clients.elb.describe_load_balancers().load_balancer_arns(arn).send().await;
            match out.map_err(|e| api_error(format!("read load balancer {arn}"), e)) {
                Err(e) if is(&e, ErrorKind::NotFound) => return Ok(Deleted::Now),
                Ok(out) if out.load_balancers().is_empty() => return Ok(Deleted::Now),
                Err(e) => return Err(e),
                Ok(_) if started.elapsed() > ctx.dependency_timeout => bail!(
                    "load balancer {arn} is still listed {}s after its deletion\n  hint: re-run the command, or raise --dependency-timeout",
                    ctx.dependency_timeout.as_secs()
                ),
                Ok(_) => {
                    ctx.pause(crate::aws::poll_delay(started.elapsed()), || format!("load balancer {arn} to go"))
                        .await?
                }
            }
        }
    }

    fn replace_reason(spec: &Spec) -> String {
        format!("load balancer {}: replacing it gives it a new DNS name, which clients and DNS records must follow", spec.name)
    }
}

fn facts_of(lb: &Lb) -> Facts {
    Facts {
        state: lb.state().and_then(|s| s.code()).map(|c| c.as_str().to_string()).unwrap_or_default(),
        scheme: lb.scheme().map(|s| s.as_str().to_string()).unwrap_or_default(),
        dns_name: lb.dns_name().unwrap_or_default().to_string(),
        subnets: lb.availability_zones().iter().filter_map(|z| z.subnet_id()).map(str::to_string).collect(),
        groups: lb.security_groups().iter().cloned().collect(),
        drops_invalid_headers: None,
    }
}

fn dep_ids(ctx: &Ctx, node: &Node, keep: fn(&NodeId) -> bool) -> Result<Vec<String>> {
    node.deps.iter().filter(|d| keep(d)).map(|d| ctx.id_of(d)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn facts() -> Facts {
        Facts {
            state: "active".into(),
            scheme: "internet-facing".into(),
            dns_name: "demo-1.us-east-1.elb.amazonaws.com".into(),
            subnets: BTreeSet::from(["subnet-a".to_string(), "subnet-b".to_string()]),
            groups: BTreeSet::from(["sg-lb".to_string()]),
            drops_invalid_headers: Some(true),
        }
    }

    fn compare(facts: &Facts) -> Vec<Change> {
        let spec = Spec { name: "demo".into() };
        let (a, b) = (NodeId::PublicSubnet("us-east-1a".into()), NodeId::PublicSubnet("us-east-1b".into()));
        let node = Node {
            id: NodeId::LoadBalancer,
            spec: super::super::Spec::LoadBalancer(spec.clone()),
            deps: vec![a.clone(), b.clone(), NodeId::LbGroup],
        };
        let record = |id: &str| Record { id: id.into(), arn: None, digest: String::new() };
        let refs: BTreeMap<NodeId, Record> =
            [(a, record("subnet-a")), (b, record("subnet-b")), (NodeId::LbGroup, record("sg-lb"))].into_iter().collect();
        LoadBalancer::compare(&spec, facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn a_load_balancer_of_the_spec_is_in_sync_while_provisioning_too() {
        assert_eq!(compare(&facts()), []);
        assert_eq!(compare(&Facts { state: "provisioning".into(), ..facts() }), []);
    }

    #[test]
    fn invalid_headers_let_through_or_unread_are_a_change_in_place() {
        for drops in [Some(false), None] {
            let changes = compare(&Facts { drops_invalid_headers: drops, ..facts() });
            assert_eq!(changes, [Change::InvalidHeaders]);
            assert!(!super::super::Change::replaces(&changes[0]));
        }
    }

    #[test]
    fn an_internal_load_balancer_needs_a_replacement_and_other_subnets_or_groups_do_not() {
        let changes = compare(&Facts { scheme: "internal".into(), ..facts() });
        assert!(super::super::Change::replaces(&changes[0]), "{changes:?}");
        let changes = compare(&Facts { groups: BTreeSet::from(["sg-other".to_string()]), ..facts() });
        assert!(matches!(&changes[..], [Change::Groups { .. }]) && !super::super::Change::replaces(&changes[0]));
    }
}
