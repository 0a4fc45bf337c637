//! A public service's target group (`tg/<service>`): `ip` targets (Fargate tasks register by address) on the
//! container port, HTTP, with the service's health check. AWS cannot change a target group's port: a new port
//! makes a new group beside the old one (its name carries the port), the listener and the service move to it, and
//! the old one is deleted once the service's new tasks run (make before break).

use std::fmt;

use anyhow::Result;
use aws_sdk_elasticloadbalancingv2::types::{Matcher, ProtocolEnum, TargetGroup as Tg, TargetTypeEnum};
use serde::Serialize;

use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, ReadCx, Resource, Salt, View, api_error,
    is, retry_while,
};
use crate::model::{Node, NodeId};

/// What a target must answer to be healthy: AWS's default.
const HEALTHY_CODES: &str = "200";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
    pub service: String,
    /// The container port the targets serve.
    pub port: u16,
    pub health_check_path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub target_type: String,
    pub vpc_id: String,
    pub health_check_path: String,
    pub healthy_codes: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Another port, protocol, target type or VPC, which AWS cannot change: a new group stands in.
    Moved(String),
    HealthCheck { path: String, codes: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Moved(why) => write!(f, "{why} (a new target group stands in for it)"),
            Change::HealthCheck { path, codes } => write!(f, "health check is {path} expecting {codes}"),
        }
    }
}

impl super::Change for Change {}

pub struct TargetGroup;

impl Resource for TargetGroup {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "target group";
    const ON_CHANGE: OnChange = OnChange::InPlace;
    const FOLLOWS_DEPENDENCIES: bool = true;
    /// A new port makes a new group: the listener and the service follow it.
    const UPDATE_MOVES_ID: bool = true;

    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let view = cx.elb().await?;
        let recorded: Vec<&str> = cx.recorded(Kind::TargetGroup).map(|(_, r)| r.id.as_str()).collect();
        Ok(view
            .target_groups
            .iter()
            .filter_map(|tg| {
                let arn = tg.target_group_arn()?;
                let tags = view.stack_tags(arn);
                let owner = cx.owner(tags.stack.as_deref());
                if owner != super::Owner::Us && !recorded.contains(&arn) {
                    return None;
                }
                Some(Found {
                    node: view.node(arn).filter(|n| n.kind() == Kind::TargetGroup),
                    id: arn.to_string(),
                    arn: Some(arn.to_string()),
                    owner,
                    lineage: tags.lineage,
                    facts: facts_of(tg),
                })
            })
            .collect())
    }

    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        let vpc = cx.id(&NodeId::Vpc);
        let moved = if facts.port != i32::from(spec.port) {
            Some(format!("serves port {}, not {}", facts.port, spec.port))
        } else if facts.protocol != "HTTP" || facts.target_type != "ip" {
            Some(format!("is {} with {} targets, not HTTP with ip targets", facts.protocol, facts.target_type))
        } else if vpc.as_ref().is_some_and(|v| *v != facts.vpc_id) {
            Some(format!("is in {}, not the stack's VPC", facts.vpc_id))
        } else {
            None
        };
        if let Some(why) = moved {
            changes.push(Change::Moved(why));
        } else if facts.health_check_path != spec.health_check_path || facts.healthy_codes != HEALTHY_CODES {
            changes.push(Change::HealthCheck { path: facts.health_check_path.clone(), codes: facts.healthy_codes.clone() });
        }
        changes
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        create_group(ctx, node, spec).await
    }

    /// A new health check is set in place; a group AWS cannot change is replaced by a new one beside it, which the
    /// listener and the service move to; the old one goes once the service's new tasks run.
    async fn update(
        ctx: &Ctx,
        node: &Node,
        spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        if changes.iter().any(|c| matches!(c, Change::Moved(_))) {
            let (created, _) = create_group(ctx, node, spec).await?;
            if created.id != live.id {
                ctx.replaced_target_groups.lock().expect("replaced target groups lock").push(live.id.to_string());
            }
            return Ok(Some(created));
        }
        ctx.clients
            .elb
            .modify_target_group()
            .target_group_arn(live.id)
            .health_check_path(&spec.health_check_path)
            .matcher(Matcher::builder().http_code(HEALTHY_CODES).build())
            .send()
            .await
            .map_err(|e| api_error(format!("set the health check of target group {}", live.facts.name), e))?;
        Ok(None)
    }

    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        delete_group(ctx, live.id).await
    }
}

/// Makes the group; one of that name made by a run killed before it recorded it is taken instead (AWS answers a
/// create of an existing name with the same settings with that group; elsewhere the name is refused).
async fn create_group(ctx: &Ctx, node: &Node, spec: &Spec) -> Result<(Created, Facts)> {
    let vpc = ctx.id_of(&NodeId::Vpc)?;
    let out = ctx
        .clients
        .elb
        .create_target_group()
        .name(&spec.name)
        .protocol(ProtocolEnum::Http)
        .port(i32::from(spec.port))
        .target_type(TargetTypeEnum::Ip)
        .vpc_id(&vpc)
        .health_check_path(&spec.health_check_path)
        .matcher(Matcher::builder().http_code(HEALTHY_CODES).build())
        .set_tags(Some(super::elb::tags(ctx, &node.id, &spec.name)))
        .send()
        .await
        .map_err(|e| api_error(format!("create target group {} for {}", spec.name, spec.service), e));
    let group = match out {
        Ok(out) => out.target_groups().first().cloned(),
        Err(e) if is(&e, ErrorKind::AlreadyExists) => {
            let out = ctx.clients.elb.describe_target_groups().names(&spec.name).send().await;
            let out = out.map_err(|e| api_error(format!("read target group {}", spec.name), e))?;
            let found = out.target_groups().first().filter(|t| t.vpc_id() == Some(vpc.as_str())).cloned();
            if found.is_none() {
                return Err(e.context(format!("target group {} exists outside the stack's VPC", spec.name)));
            }
            found
        }
        Err(e) => return Err(e),
    };
    let arn = group.as_ref().and_then(|g| g.target_group_arn());
    let created = Created::from_answer("CreateTargetGroup", arn, arn)?;
    let facts = group.as_ref().map(facts_of).unwrap_or_else(|| Facts {
        name: spec.name.clone(),
        port: i32::from(spec.port),
        protocol: "HTTP".into(),
        target_type: "ip".into(),
        vpc_id: vpc,
        health_check_path: spec.health_check_path.clone(),
        healthy_codes: HEALTHY_CODES.into(),
    });
    Ok((created, facts))
}

/// Deletes a target group; while a listener or rule still forwards to it (AWS: ResourceInUse) it waits.
pub async fn delete_group(ctx: &Ctx, arn: &str) -> Result<Deleted> {
    let deleted = retry_while(
        ctx,
        &[ErrorKind::InUse, ErrorKind::DependencyViolation],
        || async {
            ctx.clients
                .elb
                .delete_target_group()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(|e| api_error(format!("delete target group {arn}"), e))
                .or_gone()
        },
        || async { format!("target group {arn} is still used by a listener or rule") },
    )
    .await?;
    Ok(if deleted.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
}

fn facts_of(tg: &Tg) -> Facts {
    Facts {
        name: tg.target_group_name().unwrap_or_default().to_string(),
        port: tg.port().unwrap_or(0),
        protocol: tg.protocol().map(|p| p.as_str().to_string()).unwrap_or_default(),
        target_type: tg.target_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        vpc_id: tg.vpc_id().unwrap_or_default().to_string(),
        health_check_path: tg.health_check_path().unwrap_or("/").to_string(),
        healthy_codes: tg.matcher().and_then(|m| m.http_code()).unwrap_or(HEALTHY_CODES).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn spec() -> Spec {
        Spec { name: "demo-web-8080".into(), service: "web".into(), port: 8080, health_check_path: "/healthz".into() }
    }

    fn facts() -> Facts {
        Facts {
            name: "demo-web-8080".into(),
            port: 8080,
            protocol: "HTTP".into(),
            target_type: "ip".into(),
            vpc_id: "vpc-1".into(),
            health_check_path: "/healthz".into(),
            healthy_codes: "200".into(),
        }
    }

    fn compare(facts: &Facts) -> Vec<Change> {
        let node =
            Node { id: NodeId::TargetGroup("web".into()), spec: super::super::Spec::TargetGroup(spec()), deps: vec![] };
        let refs: BTreeMap<NodeId, Record> =
            [(NodeId::Vpc, Record { id: "vpc-1".into(), arn: None, digest: String::new() })].into_iter().collect();
        TargetGroup::compare(&spec(), facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn a_group_of_the_spec_is_in_sync() {
        assert_eq!(compare(&facts()), []);
    }

    #[test]
    fn a_new_health_check_is_set_in_place_and_a_new_port_moves_to_a_new_group() {
        assert!(matches!(&compare(&Facts { health_check_path: "/".into(), ..facts() })[..], [Change::HealthCheck { .. }]));
        let moved = compare(&Facts { port: 9090, ..facts() });
        assert!(matches!(&moved[..], [Change::Moved(why)] if why.contains("9090")), "{moved:?}");
        assert!(!super::super::Change::replaces(&moved[0]), "made before the old one goes, never a replacement");
    }
}
