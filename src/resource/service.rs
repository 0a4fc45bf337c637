//! The Fargate service: private subnets, its own group, no public IP, registered in its Cloud Map service. Moving it
//! to a new task definition revision retires the revision it ran before.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, DeploymentCircuitBreaker, DeploymentConfiguration, LaunchType,
    NetworkConfiguration, PropagateTags, ServiceRegistry,
};
use serde::Serialize;

use super::read::ecs_tag;
use super::support::ecs_tags;
use super::{
    Compare, Created, Ctx, Deleted, Found, OnChange, OrGone, ReadCx, Resource, Salt, TAG_NODE, TAG_LINEAGE, TAG_STACK, View,
    api_error,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub service: String,
    pub desired_count: u32,
    /// Behind the load balancer: the container port its target group forwards to (its container is named after
    /// the service). Left out of the digest when `None`, as earlier releases wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
}

/// How long ECS ignores the load balancer's health checks of a new task: time for the application to start.
pub const HEALTH_CHECK_GRACE_SECONDS: i32 = 60;

/// What ECS says about the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `ACTIVE`, or `DRAINING` while a delete stops its tasks.
    pub status: String,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    /// The primary deployment's rollout state (`IN_PROGRESS`, `COMPLETED`, `FAILED`) and why.
    pub rollout: Option<String>,
    pub rollout_reason: Option<String>,
    pub task_definition: String,
    pub subnets: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub public_ip: bool,
    pub registries: Vec<String>,
    /// The deployment circuit breaker as (enable, rollback); `None` when the answer does not say (an emulator).
    pub circuit_breaker: Option<(bool, bool)>,
    /// The primary deployment's id and failed task count.
    pub deployment: Option<String>,
    pub failed_tasks: i32,
    /// The reason of a deployment listed as FAILED (the primary one, or one ECS rolled back from).
    pub failed_rollout: Option<String>,
    /// Its load balancers as (target group ARN, container, port).
    pub load_balancers: Vec<(String, String, i32)>,
    /// `None`: the answer does not say (ECS leaves it out when it was never set).
    pub grace_seconds: Option<i32>,
}

impl Facts {
    fn of(s: &aws_sdk_ecs::types::Service) -> Facts {
        let vpc = s.network_configuration().and_then(|n| n.awsvpc_configuration());
        let primary =
            s.deployments().iter().find(|d| d.status() == Some("PRIMARY")).or_else(|| s.deployments().first());
        Facts {
            status: s.status().unwrap_or_default().to_string(),
            desired: s.desired_count(),
            running: s.running_count(),
            pending: s.pending_count(),
            rollout: primary.and_then(|d| d.rollout_state()).map(|r| r.as_str().to_string()),
            rollout_reason: primary.and_then(|d| d.rollout_state_reason()).map(str::to_string),
            task_definition: s.task_definition().unwrap_or_default().to_string(),
            subnets: vpc.map(|v| v.subnets().iter().cloned().collect()).unwrap_or_default(),
            groups: vpc.map(|v| v.security_groups().iter().cloned().collect()).unwrap_or_default(),
            public_ip: vpc.and_then(|v| v.assign_public_ip()) == Some(&AssignPublicIp::Enabled),
            registries: s.service_registries().iter().filter_map(|r| r.registry_arn()).map(str::to_string).collect(),
            circuit_breaker: s
                .deployment_configuration()
                .and_then(|c| c.deployment_circuit_breaker())
                .map(|b| (b.enable(), b.rollback())),
            deployment: primary.and_then(|d| d.id()).map(str::to_string),
            failed_tasks: primary.map_or(0, |d| d.failed_tasks()),
            failed_rollout: s
                .deployments()
                .iter()
                .find(|d| d.rollout_state().is_some_and(|r| r.as_str() == "FAILED"))
                .map(|d| d.rollout_state_reason().unwrap_or("the deployment failed").to_string()),
            load_balancers: s
                .load_balancers()
                .iter()
                .map(|l| {
                    let tg = l.target_group_arn().unwrap_or_default().to_string();
                    (tg, l.container_name().unwrap_or_default().to_string(), l.container_port().unwrap_or(0))
                })
                .collect(),
            grace_seconds: s.health_check_grace_period_seconds(),
        }
    }

    fn draining(&self) -> bool {
        self.status == "DRAINING"
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    DesiredCount { from: i32, to: u32 },
    /// Runs another revision than the recorded one (a new revision was registered, or drift).
    TaskDefinition { from: String, to: String },
    Subnets { from: BTreeSet<String>, to: BTreeSet<String> },
    Groups { from: BTreeSet<String>, to: BTreeSet<String> },
    PublicIp,
    /// Registered in another Cloud Map service than its own (UpdateService changes it in place).
    Registries { from: Vec<String>, to: String },
    /// Without the deployment circuit breaker (and its rollback), a deployment whose tasks never start retries for
    /// ever: `up` would wait for nothing and the service would run nothing.
    CircuitBreaker { enable: bool, rollback: bool },
    /// Being deleted: ECS updates nothing on a DRAINING service; only a new one will do.
    Draining,
    /// Behind other target groups than its own (or none, or behind one while private).
    LoadBalancers { from: Vec<String>, to: Vec<String> },
    /// ECS would judge a new task by the load balancer's health checks before it can answer them.
    Grace(Option<i32>),
}

/// `family:revision` of a task definition ARN.
fn revision(arn: &str) -> &str {
    arn.rsplit_once('/').map_or(arn, |(_, r)| r)
}

fn list(ids: &BTreeSet<String>) -> String {
    if ids.is_empty() { "none".into() } else { ids.iter().cloned().collect::<Vec<_>>().join(", ") }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::DesiredCount { from, to } => write!(f, "desired count {from} -> {to}"),
            Change::TaskDefinition { from, to } => {
                write!(f, "runs {}, not {}", if from.is_empty() { "nothing" } else { revision(from) }, revision(to))
            }
            Change::Subnets { from, to } => write!(f, "subnets are {}, not {}", list(from), list(to)),
            Change::Groups { from, to } => write!(f, "security groups are {}, not {}", list(from), list(to)),
            Change::PublicIp => f.write_str("assigns public IPs"),
            Change::Registries { from, to } => {
                let from = if from.is_empty() { "nothing".to_string() } else { from.join(", ") };
                write!(f, "registers in {from}, not {to}")
            }
            Change::CircuitBreaker { enable, rollback } => {
                write!(f, "deployment circuit breaker is {}", match (enable, rollback) {
                    (false, _) => "off",
                    (true, false) => "on without rollback",
                    (true, true) => "on",
                })
            }
            Change::Draining => f.write_str("is being deleted (DRAINING)"),
            Change::LoadBalancers { from, to } => {
                let text = |l: &Vec<String>| if l.is_empty() { "no load balancer".to_string() } else { l.join(", ") };
                write!(f, "is behind {}, not {}", text(from), text(to))
            }
            Change::Grace(live) => write!(
                f,
                "health check grace period is {}, not {HEALTH_CHECK_GRACE_SECONDS}s",
                live.map_or("unset".to_string(), |s| format!("{s}s"))
            ),
        }
    }
}

impl super::Change for Change {
    fn replaces(&self) -> bool {
        matches!(self, Change::Draining)
    }
}

pub struct Service;

impl Resource for Service {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "ecs service";
    // Desired count, task definition, network configuration and Cloud Map registry are all updatable in place.
    const ON_CHANGE: OnChange = OnChange::InPlace;
    const FOLLOWS_DEPENDENCIES: bool = true;

    /// The stack's services from the shared describe (recorded by ARN, desired unrecorded by name; in teardown
    /// every service of the cluster).
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let services = cx.ecs_services().await?;
        Ok(services
            .iter()
            .filter_map(|s| {
                let arn = s.service_arn()?;
                Some(Found {
                    node: ecs_tag(s.tags(), TAG_NODE).and_then(|n| n.parse().ok()),
                    id: arn.to_string(),
                    arn: Some(arn.to_string()),
                    owner: cx.owner(ecs_tag(s.tags(), TAG_STACK)),
                    lineage: ecs_tag(s.tags(), TAG_LINEAGE).map(str::to_string),
                    facts: Facts::of(s),
                })
            })
            .collect())
    }

    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if facts.draining() {
            changes.push(Change::Draining);
        }
        if i64::from(facts.desired) != i64::from(spec.desired_count) {
            changes.push(Change::DesiredCount { from: facts.desired, to: spec.desired_count });
        }
        // A dependency not recorded yet (being created) cannot be compared: the update that follows it sets it.
        if let Some(td) = cx.id(&NodeId::TaskDef(spec.service.clone()))
            && td != facts.task_definition
        {
            changes.push(Change::TaskDefinition { from: facts.task_definition.clone(), to: td });
        }
        if let Some(subnets) = cx.dep_ids(|d| matches!(d, NodeId::Subnet(_))) {
            let subnets: BTreeSet<String> = subnets.into_iter().collect();
            if subnets != facts.subnets {
                changes.push(Change::Subnets { from: facts.subnets.clone(), to: subnets });
            }
        }
        if let Some(groups) = cx.dep_ids(is_task_group) {
            let groups: BTreeSet<String> = groups.into_iter().collect();
            if groups != facts.groups {
                changes.push(Change::Groups { from: facts.groups.clone(), to: groups });
            }
        }
        if facts.public_ip {
            changes.push(Change::PublicIp);
        }
        if let Some(registry) = super::Refs::arn(cx.refs, &NodeId::SdService(spec.service.clone()))
            && facts.registries != [registry.as_str()]
        {
            changes.push(Change::Registries { from: facts.registries.clone(), to: registry });
        }
        if let Some((enable, rollback)) = facts.circuit_breaker
            && !(enable && rollback)
        {
            changes.push(Change::CircuitBreaker { enable, rollback });
        }
        let want: Option<Vec<(String, String, i32)>> = match spec.public_port {
            Some(port) => super::Refs::arn(cx.refs, &NodeId::TargetGroup(spec.service.clone()))
                .map(|tg| vec![(tg, spec.service.clone(), i32::from(port))]),
            None => Some(Vec::new()),
        };
        if let Some(want) = want.filter(|w| *w != facts.load_balancers) {
            let text = |l: &[(String, String, i32)]| l.iter().map(|(tg, _, port)| format!("{tg}:{port}")).collect();
            changes.push(Change::LoadBalancers { from: text(&facts.load_balancers), to: text(&want) });
        }
        if spec.public_port.is_some() && facts.grace_seconds != Some(HEALTH_CHECK_GRACE_SECONDS) {
            changes.push(Change::Grace(facts.grace_seconds));
        }
        changes
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, salt: &Salt) -> Result<(Created, Facts)> {
        let name = &spec.service;
        let cluster = ctx.id_of(&NodeId::Cluster)?;
        let out = ctx
            .clients
            .ecs
            .create_service()
            .cluster(&cluster)
            .service_name(name)
            .task_definition(ctx.id_of(&NodeId::TaskDef(name.clone()))?)
            .desired_count(count(spec.desired_count))
            .launch_type(LaunchType::Fargate)
            .network_configuration(network(ctx, node)?)
            .service_registries(registry(ctx, name)?)
            .deployment_configuration(deployment_configuration())
            .set_load_balancers(load_balancers(ctx, spec)?)
            .set_health_check_grace_period_seconds(spec.public_port.map(|_| HEALTH_CHECK_GRACE_SECONDS))
            // ECS does not fill the token itself; a deterministic one makes a retried create idempotent.
            .client_token(salt.token(&ctx.stack, &node.id))
            .propagate_tags(PropagateTags::Service)
            .set_tags(Some(ecs_tags(ctx, &node.id, name)))
            .send()
            .await
            .map_err(|e| api_error(format!("create ECS service {name} in cluster {cluster}"), e))?;
        let arn = out.service().and_then(|s| s.service_arn());
        let created = Created::from_answer("CreateService", arn, arn)?;
        let facts = out.service().map(Facts::of).context("CreateService answered without the service")?;
        watch(ctx, name, &cluster, &created.id, &facts, None);
        Ok((created, facts))
    }

    /// One UpdateService with only what differs: AWS starts a new deployment of every task for a task definition,
    /// network configuration or registry in the call, so a desired-count change sends the count alone. Moved to a
    /// new revision, the service retires the one it ran before.
    async fn update(
        ctx: &Ctx,
        node: &Node,
        spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        if changes.contains(&Change::Draining) {
            bail!(
                "internal error: ECS service {} is being deleted (DRAINING) and cannot be updated, only replaced",
                spec.service
            );
        }
        let name = &spec.service;
        let (cluster, service) = locate(ctx, live.id, name)?;
        let td_node = NodeId::TaskDef(name.clone());
        let mut call = ctx.clients.ecs.update_service().cluster(&cluster).service(&service);
        let mut moved_to = None;
        if changes.iter().any(|c| matches!(c, Change::DesiredCount { .. })) {
            call = call.desired_count(count(spec.desired_count));
        }
        if changes.iter().any(|c| matches!(c, Change::TaskDefinition { .. })) {
            let td = ctx.id_of(&td_node)?;
            call = call.task_definition(&td);
            moved_to = Some(td);
        }
        if changes.iter().any(|c| matches!(c, Change::Subnets { .. } | Change::Groups { .. } | Change::PublicIp)) {
            call = call.network_configuration(network(ctx, node)?);
        }
        if changes.iter().any(|c| matches!(c, Change::Registries { .. })) {
            call = call.service_registries(registry(ctx, name)?);
        }
        if changes.iter().any(|c| matches!(c, Change::CircuitBreaker { .. })) {
            call = call.deployment_configuration(deployment_configuration());
        }
        // A new load balancer starts a new deployment (its tasks register in the new target group); a grace
        // period alone does not.
        if changes.iter().any(|c| matches!(c, Change::LoadBalancers { .. })) {
            call = call.set_load_balancers(Some(load_balancers(ctx, spec)?.unwrap_or_default()));
        }
        if changes.iter().any(|c| matches!(c, Change::Grace(_))) {
            call = call.health_check_grace_period_seconds(HEALTH_CHECK_GRACE_SECONDS);
        }
        let what = changes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        let action = format!("update ECS service {name} in cluster {cluster} ({what})");
        let out = call.send().await.map_err(|e| api_error(action, e))?;
        // Watched until it runs; the revision it ran before is retired only once the new one has rolled out.
        let facts = out.service().map(Facts::of);
        let retire = moved_to.and_then(|now| ctx.previous.get(&td_node).filter(|old| old.id != now).map(|o| o.id.clone()));
        if let Some(facts) = facts {
            watch(ctx, name, &cluster, live.id, &facts, retire);
        }
        Ok(None)
    }

    /// Deletes with `force` (ECS stops the tasks itself: one call instead of scaling to zero first), then trusts the
    /// answer: gone when it says INACTIVE, else waits until ECS reports it INACTIVE *or* MISSING. Both mean gone; the
    /// SDK's `services_inactive` waiter treats MISSING as a failure (hashicorp/terraform#4326), so it is not used.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let fallback = live.node.service_name().unwrap_or_else(|| revision(live.id));
        let (cluster, name) = locate(ctx, live.id, fallback)?;
        // A DRAINING service was deleted by a previous run: only the wait is left.
        if !live.facts.draining() {
            let out = ctx
                .clients
                .ecs
                .delete_service()
                .cluster(&cluster)
                .service(&name)
                .force(true)
                .send()
                .await
                .map_err(|e| api_error(format!("delete ECS service {name}"), e))
                .or_gone()?;
            let Some(out) = out else { return Ok(Deleted::AlreadyGone) };
            if matches!(out.service().and_then(|s| s.status()), None | Some("INACTIVE")) {
                return Ok(Deleted::Now);
            }
        }
        wait_until_gone(ctx, &cluster, live.id, &name).await?;
        Ok(Deleted::Now)
    }

    fn replace_reason(spec: &Spec) -> String {
        format!(
            "ECS service {} is being deleted (DRAINING): replacing it waits until ECS has removed it, then creates it again",
            spec.service
        )
    }
}

/// The circuit breaker with rollback, on every service: a deployment whose tasks cannot start stops (FAILED) and
/// ECS goes back to the last deployment that worked, instead of retrying for ever.
fn deployment_configuration() -> DeploymentConfiguration {
    let breaker = DeploymentCircuitBreaker::builder().enable(true).rollback(true).build();
    DeploymentConfiguration::builder().deployment_circuit_breaker(breaker).build()
}

/// Hands the deployment an answer describes to `up`, which waits until it has rolled out.
fn watch(ctx: &Ctx, service: &str, cluster: &str, arn: &str, facts: &Facts, retire: Option<String>) {
    let started = crate::engine::rollout::Started {
        service: service.to_string(),
        cluster: cluster.to_string(),
        arn: arn.to_string(),
        deployment: facts.deployment.clone(),
        task_definition: facts.task_definition.clone(),
        retire,
    };
    ctx.rollouts.lock().expect("rollouts lock").push(started);
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The groups a service's tasks carry: its own and, with endpoints, the clients group that reaches them.
fn is_task_group(dep: &NodeId) -> bool {
    matches!(dep, NodeId::Group(_) | NodeId::ClientGroup)
}

/// The service's networking: the stack's private subnets, its own group (and the endpoint clients group), never
/// a public IP.
fn network(ctx: &Ctx, node: &Node) -> Result<NetworkConfiguration> {
    let ids = |keep: fn(&NodeId) -> bool| node.deps.iter().filter(|d| keep(d)).map(|d| ctx.id_of(d)).collect();
    let subnets: Result<Vec<String>> = ids(|d| matches!(d, NodeId::Subnet(_)));
    let groups: Result<Vec<String>> = ids(is_task_group);
    let awsvpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(subnets?))
        .set_security_groups(Some(groups?))
        .assign_public_ip(AssignPublicIp::Disabled)
        .build()
        .context("awsvpc configuration")?;
    Ok(NetworkConfiguration::builder().awsvpc_configuration(awsvpc).build())
}

/// The target group a public service's tasks register in, on its container port.
fn load_balancers(ctx: &Ctx, spec: &Spec) -> Result<Option<Vec<aws_sdk_ecs::types::LoadBalancer>>> {
    let Some(port) = spec.public_port else { return Ok(None) };
    let tg = ctx.arn_of(&NodeId::TargetGroup(spec.service.clone()))?;
    let lb = aws_sdk_ecs::types::LoadBalancer::builder()
        .target_group_arn(tg)
        .container_name(&spec.service)
        .container_port(i32::from(port))
        .build();
    Ok(Some(vec![lb]))
}

fn registry(ctx: &Ctx, name: &str) -> Result<ServiceRegistry> {
    Ok(ServiceRegistry::builder().registry_arn(ctx.arn_of(&NodeId::SdService(name.to_string()))?).build())
}

/// Splits a service ARN (`arn:…:service/<cluster>/<name>`) into cluster and name.
fn cluster_and_name(arn: &str) -> Option<(&str, &str)> {
    arn.rsplit_once(":service/").map(|(_, t)| t)?.split_once('/')
}

/// The cluster and name of a live service: from its ARN, or for an old-format ARN without the cluster part, the
/// stack's cluster.
fn locate(ctx: &Ctx, arn: &str, name: &str) -> Result<(String, String)> {
    match cluster_and_name(arn) {
        Some((cluster, name)) => Ok((cluster.to_string(), name.to_string())),
        None => Ok((ctx.id_of(&NodeId::Cluster)?, name.to_string())),
    }
}

async fn wait_until_gone(ctx: &Ctx, cluster: &str, arn: &str, name: &str) -> Result<()> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let out = ctx
            .clients
            .ecs
            .describe_services()
            .cluster(cluster)
            .services(arn)
            // Always with tags: moto answers a describe without them by stripping the tags of concurrent ones.
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send()
            .await
            .map_err(|e| api_error(format!("read ECS service {name}"), e))
            .or_gone()?;
        // No answer (its cluster is gone) or none in it (MISSING): gone.
        let Some(s) = out.as_ref().and_then(|o| o.services().first()) else { return Ok(()) };
        if s.status() == Some("INACTIVE") {
            return Ok(());
        }
        if started.elapsed() + delay > ctx.dependency_timeout {
            bail!(
                "ECS service {name} is still {} with {} running task(s) after {}s\n  hint: re-run `secep down` to keep waiting; it resumes where it stopped",
                s.status().unwrap_or("?"),
                s.running_count(),
                ctx.dependency_timeout.as_secs()
            );
        }
        ctx.pause(delay, || format!("ECS service {name} to be deleted")).await?;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resource::Change as _;
    use crate::state::Record;

    const TD: &str = "arn:aws:ecs:us-east-1:1:task-definition/demo-api:2";
    const SD: &str = "arn:aws:servicediscovery:us-east-1:1:service/srv-1";

    fn node() -> Node {
        Node {
            id: NodeId::Service("api".into()),
            spec: crate::resource::Spec::Service(spec()),
            deps: vec![
                NodeId::Cluster,
                NodeId::TaskDef("api".into()),
                NodeId::SdService("api".into()),
                NodeId::group("api"),
                NodeId::subnet("a"),
                NodeId::subnet("b"),
                NodeId::PublicSubnet("a".into()),
            ],
        }
    }

    fn spec() -> Spec {
        Spec { service: "api".into(), desired_count: 2, public_port: None }
    }

    fn record(id: &str, arn: Option<&str>) -> Record {
        Record { id: id.into(), arn: arn.map(str::to_string), digest: "d".into() }
    }

    fn refs() -> BTreeMap<NodeId, Record> {
        [
            (NodeId::TaskDef("api".into()), record(TD, Some(TD))),
            (NodeId::SdService("api".into()), record("srv-1", Some(SD))),
            (NodeId::group("api"), record("sg-1", None)),
            (NodeId::subnet("a"), record("subnet-a", None)),
            (NodeId::subnet("b"), record("subnet-b", None)),
            (NodeId::PublicSubnet("a".into()), record("subnet-pa", None)),
        ]
        .into_iter()
        .collect()
    }

    fn in_sync() -> Facts {
        Facts {
            status: "ACTIVE".into(),
            desired: 2,
            running: 2,
            pending: 0,
            rollout: Some("COMPLETED".into()),
            rollout_reason: None,
            task_definition: TD.into(),
            subnets: ["subnet-a".to_string(), "subnet-b".to_string()].into_iter().collect(),
            groups: ["sg-1".to_string()].into_iter().collect(),
            public_ip: false,
            registries: vec![SD.into()],
            circuit_breaker: Some((true, true)),
            deployment: Some("ecs-svc/1".into()),
            failed_tasks: 0,
            failed_rollout: None,
            load_balancers: vec![],
            grace_seconds: None,
        }
    }

    fn compare_with(facts: &Facts, refs: &BTreeMap<NodeId, Record>) -> Vec<Change> {
        let node = node();
        let cx = Compare { node: &node, refs, config_changed: false };
        Service::compare(&spec(), facts, &cx)
    }

    fn compare(facts: &Facts) -> Vec<Change> {
        compare_with(facts, &refs())
    }

    #[test]
    fn a_service_as_declared_is_in_sync() {
        assert_eq!(compare(&in_sync()), []);
        // Running fewer than desired, or a rollout under way, is health, not a difference.
        let rolling = Facts { running: 0, pending: 2, rollout: Some("IN_PROGRESS".into()), ..in_sync() };
        assert_eq!(compare(&rolling), []);
    }

    #[test]
    fn each_difference_is_found() {
        let facts = Facts { desired: 5, ..in_sync() };
        assert_eq!(compare(&facts), [Change::DesiredCount { from: 5, to: 2 }]);
        assert_eq!(compare(&facts)[0].to_string(), "desired count 5 -> 2");

        let old = "arn:aws:ecs:us-east-1:1:task-definition/demo-api:1";
        let facts = Facts { task_definition: old.into(), ..in_sync() };
        assert_eq!(compare(&facts), [Change::TaskDefinition { from: old.into(), to: TD.into() }]);
        assert_eq!(compare(&facts)[0].to_string(), "runs demo-api:1, not demo-api:2");

        let facts = Facts { subnets: ["subnet-a".to_string()].into_iter().collect(), ..in_sync() };
        assert!(matches!(compare(&facts)[..], [Change::Subnets { .. }]));

        let facts = Facts { groups: ["sg-1".to_string(), "sg-2".to_string()].into_iter().collect(), ..in_sync() };
        assert!(matches!(compare(&facts)[..], [Change::Groups { .. }]));

        let facts = Facts { public_ip: true, ..in_sync() };
        assert_eq!(compare(&facts), [Change::PublicIp]);

        let facts = Facts { registries: vec![], ..in_sync() };
        assert_eq!(compare(&facts), [Change::Registries { from: vec![], to: SD.into() }]);

        let facts = Facts { circuit_breaker: Some((false, false)), ..in_sync() };
        assert_eq!(compare(&facts), [Change::CircuitBreaker { enable: false, rollback: false }]);
        assert_eq!(compare(&facts)[0].to_string(), "deployment circuit breaker is off");
        // An answer that does not say (an emulator) is not a difference.
        assert_eq!(compare(&Facts { circuit_breaker: None, ..in_sync() }), []);

        assert!(compare(&in_sync()).iter().all(|c| !c.replaces()));
    }

    #[test]
    fn a_draining_service_must_be_replaced() {
        let facts = Facts { status: "DRAINING".into(), ..in_sync() };
        let changes = compare(&facts);
        assert_eq!(changes, [Change::Draining]);
        assert!(changes[0].replaces());
    }

    #[test]
    fn a_service_made_by_create_with_nothing_echoed_is_completed_by_the_update() {
        // An answer without the network configuration or registries (an emulator): the update sets them.
        let facts = Facts { subnets: BTreeSet::new(), groups: BTreeSet::new(), registries: vec![], ..in_sync() };
        let changes = compare(&facts);
        assert!(matches!(changes[..], [Change::Subnets { .. }, Change::Groups { .. }, Change::Registries { .. }]));
    }

    #[test]
    fn dependencies_not_recorded_yet_are_not_compared() {
        let refs: BTreeMap<NodeId, Record> =
            refs().into_iter().filter(|(n, _)| !matches!(n, NodeId::TaskDef(_)) && *n != NodeId::subnet("b")).collect();
        let facts = Facts { task_definition: String::new(), subnets: BTreeSet::new(), ..in_sync() };
        assert_eq!(compare_with(&facts, &refs), []);
    }

    #[test]
    fn the_spec_serialises_as_earlier_releases_did() {
        let json = serde_json::to_string(&crate::resource::Spec::Service(spec())).unwrap();
        assert_eq!(json, r#"{"kind":"service","service":"api","desired_count":2}"#);
    }

    #[test]
    fn an_arn_names_its_cluster_and_service() {
        assert_eq!(cluster_and_name("arn:aws:ecs:us-east-1:1:service/demo/api"), Some(("demo", "api")));
        assert_eq!(cluster_and_name("arn:aws:ecs:us-east-1:1:service/api"), None);
    }
}
