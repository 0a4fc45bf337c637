//! A public service's target group (`tg/<service>`): `ip` targets (Fargate tasks register by address) on the
//! container port, HTTP, with the service's health check. AWS cannot change a target group's port: a new port
//! makes a new group beside the old one (its name carries the port), the listener and the service move to it, and
//! the old one is deleted once the service's new tasks run (make before break).

use std::fmt;

use anyhow::Result;
use aws_sdk_elasticloadbalancingv2::types::{
    Matcher, ProtocolEnum, TargetGroup as Tg, TargetGroupAttribute, TargetTypeEnum,
};
use serde::Serialize;

use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, ReadCx, Resource, Salt, View, api_error,
    is, retry_while,
};
use crate::model::{Node, NodeId};

/// What a target must answer to be healthy: AWS's default.
const HEALTHY_CODES: &str = "200";
/// A new task is healthy after 3 checks 15 s apart (45 s, where AWS's defaults take 5 x 30 s), and out after 3.
const HEALTH_CHECK: HealthCheck = HealthCheck { interval: 15, healthy: 3, unhealthy: 3 };
/// How long a stopping task keeps its connections: 30 s (AWS's 300 s would add five minutes to every rollout of
/// a public service and to its `down`).
pub const DEREGISTRATION_DELAY: i32 = 30;
const DEREGISTRATION_KEY: &str = "deregistration_delay.timeout_seconds";

/// The health check's timing: seconds between checks, and how many in a row make a target healthy or unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: i32,
    pub healthy: i32,
    pub unhealthy: i32,
}

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
    pub health_check: HealthCheck,
    /// `None`: not read (a create's answer).
    pub deregistration_delay: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Another port, protocol, target type or VPC, which AWS cannot change: a new group stands in.
    Moved(String),
    HealthCheck { path: String, codes: String, timing: HealthCheck },
    DeregistrationDelay(Option<i32>),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Moved(why) => write!(f, "{why} (a new target group stands in for it)"),
            Change::HealthCheck { path, codes, timing } => write!(
                f,
                "health check is {path} expecting {codes}, every {}s, {} to be healthy and {} unhealthy",
                timing.interval, timing.healthy, timing.unhealthy
            ),
            Change::DeregistrationDelay(live) => write!(
                f,
                "deregistration delay is {}, not {DEREGISTRATION_DELAY}s",
                live.map_or("unread".to_string(), |d| format!("{d}s"))
            ),
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
                    facts: facts_of(tg, view.target_group_attribute(arn, DEREGISTRATION_KEY).and_then(|v| v.parse().ok())),
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
        } else if facts.health_check_path != spec.health_check_path
            || facts.healthy_codes != HEALTHY_CODES
            || facts.health_check != HEALTH_CHECK
        {
            changes.push(Change::HealthCheck {
                path: facts.health_check_path.clone(),
                codes: facts.healthy_codes.clone(),
                timing: facts.health_check,
            });
        }
        if facts.deregistration_delay != Some(DEREGISTRATION_DELAY) && !changes.iter().any(|c| matches!(c, Change::Moved(_))) {
            changes.push(Change::DeregistrationDelay(facts.deregistration_delay));
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
        if changes.iter().any(|c| matches!(c, Change::HealthCheck { .. })) {
            ctx.clients
                .elb
                .modify_target_group()
                .target_group_arn(live.id)
                .health_check_path(&spec.health_check_path)
                .matcher(Matcher::builder().http_code(HEALTHY_CODES).build())
                .health_check_interval_seconds(HEALTH_CHECK.interval)
                .healthy_threshold_count(HEALTH_CHECK.healthy)
                .unhealthy_threshold_count(HEALTH_CHECK.unhealthy)
                .send()
                .await
                .map_err(|e| api_error(format!("set the health check of target group {}", live.facts.name), e))?;
        }
        if changes.iter().any(|c| matches!(c, Change::DeregistrationDelay(_))) {
            let attribute = TargetGroupAttribute::builder()
                .key(DEREGISTRATION_KEY)
                .value(DEREGISTRATION_DELAY.to_string())
                .build();
            ctx.clients
                .elb
                .modify_target_group_attributes()
                .target_group_arn(live.id)
                .attributes(attribute)
                .send()
                .await
                .map_err(|e| api_error(format!("set the deregistration delay of target group {}", live.facts.name), e))?;
        }
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
        .health_check_interval_seconds(HEALTH_CHECK.interval)
        .healthy_threshold_count(HEALTH_CHECK.healthy)
        .unhealthy_threshold_count(HEALTH_CHECK.unhealthy)
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
    let facts = group.as_ref().map(|g| facts_of(g, None)).unwrap_or_else(|| Facts {
        name: spec.name.clone(),
        port: i32::from(spec.port),
        protocol: "HTTP".into(),
        target_type: "ip".into(),
        vpc_id: vpc,
        health_check_path: spec.health_check_path.clone(),
        healthy_codes: HEALTHY_CODES.into(),
        health_check: HEALTH_CHECK,
        deregistration_delay: None,
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

fn facts_of(tg: &Tg, deregistration_delay: Option<i32>) -> Facts {
    Facts {
        name: tg.target_group_name().unwrap_or_default().to_string(),
        port: tg.port().unwrap_or(0),
        protocol: tg.protocol().map(|p| p.as_str().to_string()).unwrap_or_default(),
        target_type: tg.target_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        vpc_id: tg.vpc_id().unwrap_or_default().to_string(),
        health_check_path: tg.health_check_path().unwrap_or("/").to_string(),
        healthy_codes: tg.matcher().and_then(|m| m.http_code()).unwrap_or(HEALTHY_CODES).to_string(),
        health_check: HealthCheck {
            interval: tg.health_check_interval_seconds().unwrap_or(HEALTH_CHECK.interval),
            healthy: tg.healthy_threshold_count().unwrap_or(HEALTH_CHECK.healthy),
            unhealthy: tg.unhealthy_threshold_count().unwrap_or(HEALTH_CHECK.unhealthy),
        },
        deregistration_delay,
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
            health_check: HEALTH_CHECK,
            deregistration_delay: Some(DEREGISTRATION_DELAY),
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

    #[test]
    fn aws_default_timings_are_set_to_secep_s() {
        let slow = Facts {
            health_check: HealthCheck { interval: 30, healthy: 5, unhealthy: 2 },
            deregistration_delay: Some(300),
            ..facts()
        };
        let changes = compare(&slow);
        assert!(matches!(&changes[..], [Change::HealthCheck { .. }, Change::DeregistrationDelay(Some(300))]), "{changes:?}");
        // A create's answer does not say: the update that follows sets it.
        assert_eq!(compare(&Facts { deregistration_delay: None, ..facts() }), [Change::DeregistrationDelay(None)]);
    }
}
