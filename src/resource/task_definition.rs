//! The Fargate task definition: awsvpc, one essential container with its port and environment (peer URLs included).
//! A change registers a new revision (a new ARN); the ECS service deregisters the old one once it has moved.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{Context, Result};
use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput;
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, KeyValuePair, LogConfiguration, LogDriver, NetworkMode, PortMapping, Secret,
    TaskDefinitionStatus, TransportProtocol,
};
use serde::{Serialize, Serializer};

use super::read::ecs_tag;
use super::support::{all, ecs_tags};
use super::{
    Compare, Created, Ctx, Deleted, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt, TAG_NODE, TAG_LINEAGE, TAG_STACK,
    View, api_error,
};
use crate::aws::Clients;
use crate::model::{Node, NodeId};

/// The execution role of the tasks: the stack's own role node, or an ARN from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleRef {
    /// The role secep makes (`role/execution`).
    Node(NodeId),
    Arn(String),
}

/// Serialised as earlier releases wrote the field (the node id's string, or the ARN), so the digest is unchanged.
impl Serialize for RoleRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RoleRef::Node(node) => node.serialize(s),
            RoleRef::Arn(arn) => s.serialize_str(arn),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskDefinitionSpec {
    pub service: String,
    pub family: String,
    pub image: String,
    pub port: u16,
    pub cpu: u32,
    pub memory: u32,
    /// User environment plus the injected peer addresses.
    pub environment: BTreeMap<String, String>,
    /// Name → Secrets Manager or SSM ARN: ECS fetches them at start (`valueFrom`); never in the environment.
    /// Absent from the digest when empty, so stacks without secrets keep their revisions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// The execution role: an ARN from the config, or the node `role/execution`.
    pub execution_role: RoleRef,
    pub task_role_arn: Option<String>,
    /// `awslogs` destination: log group and region.
    pub log_group: String,
    pub region: String,
}

pub type Spec = TaskDefinitionSpec;

/// What ECS says about the revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    /// Deregistered behind secep's back: it still runs where it runs, but no new service can use it.
    Inactive,
    /// Not described: a service of the stack runs it, which only an existing revision can be.
    InUse,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The spec differs from the one the revision was registered from (a revision's content cannot be read back
    /// field by field; the recorded digest tells).
    Content,
    Deregistered,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Content => f.write_str("content changed: a new revision is registered"),
            Change::Deregistered => f.write_str("deregistered (INACTIVE): a new revision is registered"),
        }
    }
}

impl super::Change for Change {}

pub struct TaskDefinition;

impl Resource for TaskDefinition {
    type Spec = TaskDefinitionSpec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "task definition";
    // A new task definition revision, without replacing what depends on it.
    const ON_CHANGE: OnChange = OnChange::InPlace;
    const UPDATE_MOVES_ID: bool = true;

    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        if cx.teardown() { read_everything(cx).await } else { read_recorded(cx).await }
    }

    fn compare(_spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if cx.config_changed {
            changes.push(Change::Content);
        }
        if facts.status == Status::Inactive {
            changes.push(Change::Deregistered);
        }
        changes
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let created = register_or_reuse(ctx, node, spec).await?;
        Ok((created, Facts { status: Status::Active }))
    }

    /// Every change is made the same way: a revision with the spec's content (an identical ACTIVE one if there is
    /// one). The service moves to it and deregisters the old one.
    async fn update(
        ctx: &Ctx,
        node: &Node,
        spec: &Spec,
        _live: &View<'_, Facts>,
        _changes: &[Change],
    ) -> Result<Option<Created>> {
        Ok(Some(register_or_reuse(ctx, node, spec).await?))
    }

    /// Deregisters the revision and the family's other revisions of this stack (the one kept for a rollback).
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let deleted = deregister(ctx, live.id).await?;
        retire_family(ctx, live.id, &[]).await?;
        Ok(deleted)
    }
}

/// `family` of `arn:…:task-definition/family:revision`.
fn family_of(arn: &str) -> &str {
    let tail = arn.rsplit_once('/').map_or(arn, |(_, t)| t);
    tail.rsplit_once(':').map_or(tail, |(f, _)| f)
}

/// Deregisters the ACTIVE revisions of `current`'s family that carry the stack's tag, except `current` and `keep`:
/// after a rollout the revision it replaced stays, so ECS (and a user) has somewhere to roll back to.
pub async fn retire_family(ctx: &Ctx, current: &str, keep: &[&str]) -> Result<usize> {
    let family = family_of(current);
    let mut arns = Vec::new();
    let mut pages = ctx
        .clients
        .ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(TaskDefinitionStatus::Active)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| api_error(format!("list the revisions of {family}"), e))?;
        arns.extend(page.task_definition_arns().iter().cloned());
    }
    // The prefix also matches `family2`: only this family, and never what is kept.
    let retired: Vec<(String, String)> = arns
        .into_iter()
        .filter(|a| family_of(a) == family && a != current && !keep.contains(&a.as_str()))
        .map(|a| (a.clone(), a))
        .collect();
    let mut count = 0;
    for ((_, arn), out) in describe_all(&ctx.clients, retired).await? {
        let ours = out.as_ref().is_some_and(|o| ecs_tag(o.tags(), TAG_STACK) == Some(ctx.stack.as_str()));
        let active = out.as_ref().and_then(|o| o.task_definition()).and_then(|t| t.status())
            == Some(&TaskDefinitionStatus::Active);
        if ours && active && deregister(ctx, &arn).await? == Deleted::Now {
            count += 1;
        }
    }
    Ok(count)
}

/// Converge: the recorded revisions. One a service of the stack runs counts as live without a call; the others are
/// described (all at once). When a desired family is not recorded, the stack's families that have an ACTIVE revision
/// are listed for the create (a family without one has nothing an interrupted run could have left).
async fn read_recorded(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
    let recorded: Vec<(NodeId, String)> =
        cx.recorded(Kind::TaskDefinition).map(|(node, r)| (node.clone(), r.id.clone())).collect();
    let unrecorded_family = cx.desired(Kind::TaskDefinition).any(|n| cx.record(&n.id).is_none());
    let (services, families) = tokio::join!(
        async { if recorded.is_empty() { Ok(None) } else { cx.ecs_services().await.map(Some) } },
        async { if unrecorded_family { list_families(cx.clients, cx.stack).await.map(Some) } else { Ok(None) } },
    );
    let services = services?.unwrap_or_default();
    if let Some(families) = families? {
        cx.hints.lock().expect("hints lock").task_families = Some(families);
    }
    let in_use: BTreeSet<&str> = services.iter().filter_map(|s| s.task_definition()).collect();
    let mut found = Vec::new();
    let mut to_describe = Vec::new();
    for (node, arn) in recorded {
        if in_use.contains(arn.as_str()) {
            found.push(Found {
                node: Some(node),
                id: arn.clone(),
                arn: Some(arn),
                owner: Owner::Us,
                lineage: None,
                facts: Facts { status: Status::InUse },
            });
        } else {
            to_describe.push((node, arn));
        }
    }
    let described = describe_all(cx.clients, to_describe).await?;
    for ((node, arn), out) in described {
        let Some(out) = out else { continue };
        let status = match out.task_definition().and_then(|t| t.status()) {
            Some(TaskDefinitionStatus::Active) => Status::Active,
            Some(TaskDefinitionStatus::Inactive) => Status::Inactive,
            // Being deleted (DeleteTaskDefinitions), or a status this secep does not know: gone.
            _ => continue,
        };
        found.push(Found {
            node: Some(node),
            id: arn.clone(),
            arn: Some(arn),
            owner: cx.owner(ecs_tag(out.tags(), TAG_STACK)),
            lineage: ecs_tag(out.tags(), TAG_LINEAGE).map(str::to_string),
            facts: Facts { status },
        });
    }
    Ok(found)
}

/// Teardown: every ACTIVE revision of the stack's families that carries the stack's tag, plus the recorded ones
/// whatever their tags (their owner says whose they are). Families are `<stack>-<service>`; ListTaskDefinitions
/// takes a full family name, so the families are listed first (a prefix match, which may include another stack's:
/// the tags decide).
async fn read_everything(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
    let families: Vec<String> = list_families(cx.clients, cx.stack).await?.into_iter().collect();
    // One listing per family, all at once (a 50-service stack has 50 families).
    let revisions = all(families, |family| {
        let ecs = cx.clients.ecs.clone();
        async move {
            let mut arns = Vec::new();
            let mut pages = ecs
                .list_task_definitions()
                .family_prefix(&family)
                .status(TaskDefinitionStatus::Active)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| api_error(format!("list the revisions of {family}"), e))?;
                arns.extend(page.task_definition_arns().iter().cloned());
            }
            Ok(arns)
        }
    })
    .await?;
    let recorded: BTreeMap<String, NodeId> =
        cx.recorded(Kind::TaskDefinition).map(|(node, r)| (r.id.clone(), node.clone())).collect();
    let mut arns: BTreeSet<String> = revisions.into_iter().flatten().collect();
    arns.extend(recorded.keys().cloned());
    let wanted = arns.into_iter().map(|arn| (recorded.get(&arn).cloned(), arn)).collect();
    let mut found = Vec::new();
    for ((recorded_node, arn), out) in describe_all(cx.clients, wanted).await? {
        let Some(out) = out else { continue };
        // An INACTIVE revision is as deleted as ECS makes it (it stays readable); emulators may ignore the filter.
        if out.task_definition().and_then(|t| t.status()) != Some(&TaskDefinitionStatus::Active) {
            continue;
        }
        let stack_tag = ecs_tag(out.tags(), TAG_STACK);
        if recorded_node.is_none() && stack_tag != Some(cx.stack) {
            continue;
        }
        // Several revisions may carry the same node (a crash between registers): all are found.
        let node = recorded_node.or_else(|| ecs_tag(out.tags(), TAG_NODE).and_then(|n| n.parse().ok()));
        found.push(Found {
            node,
            id: arn.clone(),
            arn: Some(arn),
            owner: cx.owner(stack_tag),
            lineage: ecs_tag(out.tags(), TAG_LINEAGE).map(str::to_string),
            facts: Facts { status: Status::Active },
        });
    }
    Ok(found)
}

/// The families named `<stack>-...` with an ACTIVE revision (one call, paginated; a superset on emulators that
/// ignore the status filter).
async fn list_families(clients: &Clients, stack: &str) -> Result<BTreeSet<String>> {
    let mut families = BTreeSet::new();
    let mut pages = clients
        .ecs
        .list_task_definition_families()
        .family_prefix(format!("{stack}-"))
        .status(aws_sdk_ecs::types::TaskDefinitionFamilyStatus::Active)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| api_error("list the stack's task definition families", e))?;
        families.extend(page.families().iter().cloned());
    }
    Ok(families)
}

/// Describes revisions with their tags, all at once; a revision ECS does not know is `None`.
async fn describe_all<K: Send + 'static>(
    clients: &Clients,
    revisions: Vec<(K, String)>,
) -> Result<Vec<((K, String), Option<DescribeTaskDefinitionOutput>)>> {
    all(revisions, |(key, arn)| {
        let clients = clients.clone();
        async move {
            let out = describe(&clients, &arn).await.or_gone()?;
            Ok(((key, arn), out))
        }
    })
    .await
}

/// A task definition revision with its tags.
async fn describe(clients: &Clients, arn: &str) -> Result<DescribeTaskDefinitionOutput> {
    clients
        .ecs
        .describe_task_definition()
        .task_definition(arn)
        .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
        .send()
        .await
        .map_err(|e| api_error(format!("read task definition {arn}"), e))
}

/// Deregisters a revision secep registered (ECS keeps INACTIVE revisions readable; that is how AWS works). Also
/// what the ECS service calls to retire the revision it ran before.
pub async fn deregister(ctx: &Ctx, arn: &str) -> Result<Deleted> {
    let out = ctx
        .clients
        .ecs
        .deregister_task_definition()
        .task_definition(arn)
        .send()
        .await
        .map_err(|e| api_error(format!("deregister task definition {arn}"), e))
        .or_gone()?;
    Ok(if out.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
}

/// A revision with exactly the spec's content: an interrupted run may have registered this very revision without
/// recording it, so it is reused, never twinned. A family the live read found without revisions has none to look
/// up (a round trip off the deploy's chain).
async fn register_or_reuse(ctx: &Ctx, node: &Node, td: &Spec) -> Result<Created> {
    let execution_role = execution_role_arn(ctx, td).await?;
    let may_exist = ctx.hints.task_families.as_ref().is_none_or(|f| f.contains(&td.family));
    if may_exist && let Some(arn) = find_identical(ctx, td, &execution_role).await? {
        return Ok(Created::named(arn.clone(), Some(arn)));
    }
    let environment = td.environment.iter().map(|(k, v)| KeyValuePair::builder().name(k).value(v).build()).collect();
    let secrets = td
        .secrets
        .iter()
        .map(|(name, arn)| Secret::builder().name(name).value_from(arn).build())
        .collect::<Result<Vec<_>, _>>()
        .context("the secrets of the task definition")?;
    let container = ContainerDefinition::builder()
        .name(&td.service)
        .image(&td.image)
        .essential(true)
        .port_mappings(
            PortMapping::builder().container_port(i32::from(td.port)).protocol(TransportProtocol::Tcp).build(),
        )
        .set_environment(Some(environment))
        .set_secrets((!secrets.is_empty()).then_some(secrets))
        .log_configuration(log_configuration(td)?)
        .build();
    let out = ctx
        .clients
        .ecs
        .register_task_definition()
        .family(&td.family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu(td.cpu.to_string())
        .memory(td.memory.to_string())
        .container_definitions(container)
        .execution_role_arn(&execution_role)
        .set_task_role_arn(td.task_role_arn.clone())
        .set_tags(Some(ecs_tags(ctx, &node.id, &td.family)))
        .send()
        .await
        .map_err(|e| api_error(format!("register task definition {}", td.family), e))?;
    let arn = out.task_definition().and_then(|t| t.task_definition_arn());
    Created::from_answer("RegisterTaskDefinition", arn, arn)
}

/// The execution role's ARN: the config's, or the one secep created (recorded under `role/execution`).
async fn execution_role_arn(ctx: &Ctx, td: &Spec) -> Result<String> {
    let node = match &td.execution_role {
        RoleRef::Arn(arn) => return Ok(arn.clone()),
        RoleRef::Node(node) => node,
    };
    if let Ok(arn) = ctx.arn_of(node) {
        return Ok(arn);
    }
    // Adopted after a crash: the state knows its name only.
    let name = ctx.id_of(node)?;
    let out = ctx
        .clients
        .iam
        .get_role()
        .role_name(&name)
        .send()
        .await
        .map_err(|e| api_error(format!("read IAM role {name}"), e))
        .or_gone()?;
    out.as_ref().and_then(|o| o.role()).map(|r| r.arn().to_string()).with_context(|| {
        format!("IAM role {name} does not exist although the state records it\n  hint: re-run `secep up` to recreate it")
    })
}

/// `awslogs` into the stack's group, one stream per task under the service's name.
fn log_configuration(td: &Spec) -> Result<LogConfiguration> {
    LogConfiguration::builder()
        .log_driver(LogDriver::Awslogs)
        .options("awslogs-group", &td.log_group)
        .options("awslogs-region", &td.region)
        .options("awslogs-stream-prefix", &td.service)
        .build()
        .context("the log configuration of the task definition")
}

/// The newest ACTIVE revision of the family, if it is this stack's and has exactly the spec's content.
async fn find_identical(ctx: &Ctx, td: &Spec, execution_role: &str) -> Result<Option<String>> {
    let listed = ctx
        .clients
        .ecs
        .list_task_definitions()
        .family_prefix(&td.family)
        .status(TaskDefinitionStatus::Active)
        .sort(aws_sdk_ecs::types::SortOrder::Desc)
        .max_results(1)
        .send()
        .await
        .map_err(|e| api_error(format!("list the revisions of {}", td.family), e))?;
    let Some(arn) = listed.task_definition_arns().first() else { return Ok(None) };
    let Some(out) = describe(&ctx.clients, arn).await.or_gone()? else { return Ok(None) };
    let Some(live) = out.task_definition() else { return Ok(None) };
    let container = live.container_definitions().first();
    let environment: BTreeMap<String, String> = container
        .map(|c| {
            c.environment().iter().filter_map(|kv| Some((kv.name()?.to_string(), kv.value()?.to_string()))).collect()
        })
        .unwrap_or_default();
    let secrets: BTreeMap<String, String> = container
        .map(|c| c.secrets().iter().map(|s| (s.name().to_string(), s.value_from().to_string())).collect())
        .unwrap_or_default();
    let logs = log_configuration(td)?;
    let same = Owner::from_tag(&ctx.stack, ecs_tag(out.tags(), TAG_STACK)) == Owner::Us
        && container.and_then(|c| c.image()) == Some(td.image.as_str())
        && container.and_then(|c| c.port_mappings().first()).and_then(|p| p.container_port())
            == Some(i32::from(td.port))
        && live.cpu() == Some(td.cpu.to_string().as_str())
        && live.memory() == Some(td.memory.to_string().as_str())
        && environment == td.environment
        && secrets == td.secrets
        && live.execution_role_arn() == Some(execution_role)
        && live.task_role_arn() == td.task_role_arn.as_deref()
        && container.and_then(|c| c.log_configuration()).and_then(|l| l.options()) == logs.options();
    Ok(same.then(|| arn.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Record;

    fn spec(role: RoleRef) -> Spec {
        TaskDefinitionSpec {
            service: "api".into(),
            family: "demo-api".into(),
            image: "nginx:1".into(),
            port: 8080,
            cpu: 256,
            memory: 512,
            environment: [("A".to_string(), "1".to_string())].into_iter().collect(),
            secrets: BTreeMap::new(),
            execution_role: role,
            task_role_arn: None,
            log_group: "/secep/demo".into(),
            region: "us-east-1".into(),
        }
    }

    fn node(spec: Spec) -> Node {
        Node {
            id: NodeId::TaskDef("api".into()),
            spec: crate::resource::Spec::TaskDefinition(spec),
            deps: vec![NodeId::LogGroup, NodeId::ExecutionRole],
        }
    }

    fn changes(status: Status, config_changed: bool) -> Vec<Change> {
        let node = node(spec(RoleRef::Node(NodeId::ExecutionRole)));
        let refs: BTreeMap<NodeId, Record> = BTreeMap::new();
        let cx = Compare { node: &node, refs: &refs, config_changed };
        let crate::resource::Spec::TaskDefinition(spec) = &node.spec else { unreachable!() };
        TaskDefinition::compare(spec, &Facts { status }, &cx)
    }

    #[test]
    fn an_unchanged_live_revision_is_in_sync() {
        assert_eq!(changes(Status::Active, false), []);
        assert_eq!(changes(Status::InUse, false), []);
    }

    #[test]
    fn a_changed_spec_or_a_deregistered_revision_needs_a_new_revision() {
        assert_eq!(changes(Status::Active, true), [Change::Content]);
        assert_eq!(changes(Status::InUse, true), [Change::Content]);
        assert_eq!(changes(Status::Inactive, false), [Change::Deregistered]);
        assert_eq!(changes(Status::Inactive, true), [Change::Content, Change::Deregistered]);
        assert!(!changes(Status::Inactive, true).iter().any(crate::resource::Change::replaces));
    }

    #[test]
    fn the_spec_serialises_as_earlier_releases_did() {
        let json = serde_json::to_string(&crate::resource::Spec::TaskDefinition(spec(RoleRef::Node(
            NodeId::ExecutionRole,
        ))))
        .unwrap();
        assert_eq!(
            json,
            r#"{"kind":"task-definition","service":"api","family":"demo-api","image":"nginx:1","port":8080,"cpu":256,"memory":512,"environment":{"A":"1"},"execution_role":"role/execution","task_role_arn":null,"log_group":"/secep/demo","region":"us-east-1"}"#
        );
        let arn = "arn:aws:iam::123456789012:role/mine";
        let json = serde_json::to_value(spec(RoleRef::Arn(arn.into()))).unwrap();
        assert_eq!(json["execution_role"], arn);
    }
}
