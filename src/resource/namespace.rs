//! The Cloud Map private DNS namespace bound to the VPC. Creation is asynchronous: it returns an operation id that
//! is polled until SUCCESS, with a bounded wait whose error names the operation.

use std::collections::BTreeSet;
use std::fmt::{self, Display};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_servicediscovery::operation::create_private_dns_namespace::CreatePrivateDnsNamespaceError;
use aws_sdk_servicediscovery::types::{OperationStatus, OperationTargetType};
use serde::Serialize;

use super::support::{all, sd_stack_tags, sd_tags};
use super::{
    Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt, View, api_error,
    is, retry_while,
};
use crate::aws::Clients;
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Its name, where the read asked for it (`None`: one of the stack's Cloud Map services proved it exists).
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A namespace cannot be renamed.
    Name { live: String, want: String },
}

impl Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Name { live, want } => write!(f, "named {live}, not {want}"),
        }
    }
}

impl super::Change for Change {
    fn replaces(&self) -> bool {
        true
    }
}

pub struct Namespace;

impl Resource for Namespace {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "namespace";
    const ON_CHANGE: OnChange = OnChange::Replace;

    /// The recorded namespace. Converge: proven by the shared listing of its services, else one GetNamespace; it is
    /// ours (the state recorded it). Teardown: its owner from one tag read, and any unrecorded namespace of the
    /// config's name that carries the stack's tag (an interrupted create).
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        if cx.teardown() {
            return read_teardown(cx).await;
        }
        let Some(record) = cx.record(&NodeId::Namespace) else { return Ok(Vec::new()) };
        // `None`: the listing found the namespace gone.
        let Some(services) = cx.cloud_map_services().await? else { return Ok(Vec::new()) };
        let recorded: BTreeSet<&str> = cx.recorded(Kind::SdService).map(|(_, r)| r.id.as_str()).collect();
        // Cloud Map refuses to delete a namespace that still has services: one of ours alive proves the namespace is,
        // and saves a call per status. Otherwise ask. (Only recorded ids count: moto ignores the namespace filter.)
        let proven = services.iter().any(|s| s.id().is_some_and(|id| recorded.contains(id)));
        let (name, arn) = if proven {
            (None, record.arn.clone())
        } else {
            match get_namespace(cx.clients, &record.id).await? {
                Some((name, arn)) => (name, arn.or_else(|| record.arn.clone())),
                None => return Ok(Vec::new()),
            }
        };
        Ok(vec![Found {
            node: Some(NodeId::Namespace),
            id: record.id.clone(),
            arn,
            owner: Owner::Us,
            lineage: None,
            facts: Facts { name },
        }])
    }

    fn compare(spec: &Spec, facts: &Facts, _cx: &super::Compare<'_>) -> Vec<Change> {
        match &facts.name {
            Some(live) if *live != spec.name => vec![Change::Name { live: live.clone(), want: spec.name.clone() }],
            _ => Vec::new(),
        }
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, salt: &Salt) -> Result<(Created, Facts)> {
        let name = &spec.name;
        let vpc_id = ctx.id_of(&NodeId::Vpc)?;
        let sent = ctx
            .clients
            .sd
            .create_private_dns_namespace()
            .name(name)
            .vpc(&vpc_id)
            // Deterministic, so a retried create after a lost response returns the same operation instead of a twin.
            .creator_request_id(salt.token(&ctx.stack, &node.id))
            .description(format!("secep stack {}", ctx.stack))
            .set_tags(Some(sd_tags(ctx, &node.id, name)?))
            .send()
            .await;
        let out = match sent {
            Ok(out) => out,
            Err(err) => {
                let duplicate = match err.as_service_error() {
                    Some(CreatePrivateDnsNamespaceError::DuplicateRequest(d)) => {
                        d.duplicate_operation_id().map(str::to_string)
                    }
                    _ => None,
                };
                let e = api_error(format!("create private DNS namespace {name} in {vpc_id}"), err);
                // ConflictingDomainExists / NamespaceAlreadyExists, or DuplicateRequest (still being created): an
                // interrupted run created it and could not record it. Take it back if it is ours.
                if !is(&e, ErrorKind::AlreadyExists) && !is(&e, ErrorKind::InUse) {
                    return Err(e);
                }
                if let Some(op) = duplicate {
                    wait_for_operation(ctx, &op, &format!("namespace {name}")).await?;
                }
                return match find_ours(ctx, name).await? {
                    Some(found) => Ok(found),
                    None => Err(e),
                };
            }
        };
        let operation_id = out
            .operation_id()
            .context("CreatePrivateDnsNamespace answered without an operation id; nothing was recorded\n  hint: re-run the command; the namespace, if it was made, is found by its name and tags")?;
        let namespace_id = wait_for_operation(ctx, operation_id, &format!("namespace {name}")).await?;
        // No read-back for the ARN: the Cloud Map services wait on this step, and teardown reads it when it needs it.
        let created = Created::from_answer("GetOperation", namespace_id.as_deref(), None)?;
        Ok((created, Facts { name: Some(name.clone()) }))
    }

    async fn update(
        _ctx: &Ctx,
        node: &Node,
        _spec: &Spec,
        _live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        // Every change replaces: the engine never asks for one in place.
        bail!("internal error: namespace `{}` cannot be changed in place ({})", node.id, changes_text(changes))
    }

    /// A namespace cannot be deleted while services remain in it (ResourceInUse): waited out, bounded. Deletion is
    /// asynchronous, so its operation is polled too.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let id = live.id;
        let attempt = || async {
            ctx.clients
                .sd
                .delete_namespace()
                .id(id)
                .send()
                .await
                .map_err(|e| api_error(format!("delete namespace {id}"), e))
        };
        let blocked = || async move { format!("namespace {id} still has services") };
        // ResourceInUse, and DuplicateRequest: an earlier delete of this namespace (an interrupted run) is still in
        // progress. Both are InUse.
        match retry_while(ctx, &[ErrorKind::InUse], attempt, blocked).await.or_gone()? {
            None => Ok(Deleted::AlreadyGone),
            Some(out) => {
                if let Some(op) = out.operation_id() {
                    wait_for_operation(ctx, op, &format!("delete namespace {id}")).await?;
                }
                Ok(Deleted::Now)
            }
        }
    }

    fn replace_reason(spec: &Spec) -> String {
        format!(
            "the namespace name (now {}): replacing it destroys every Cloud Map service and re-registers every ECS service",
            spec.name
        )
    }
}

fn changes_text(changes: &[Change]) -> String {
    changes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Teardown: the recorded namespace with its owner, and unrecorded ones of the config's name tagged for the stack.
async fn read_teardown(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
    let names: BTreeSet<String> = cx
        .desired(Kind::Namespace)
        .filter_map(|n| match &n.spec {
            super::Spec::Namespace(s) => Some(s.name.clone()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Ok(recorded(cx).await?.into_iter().collect());
    }
    let recorded_id = cx.record(&NodeId::Namespace).map(|r| r.id.clone());
    // Namespaces carry no tag filter: the account's are listed (one paginated call; moto ignores filters anyway) and
    // the candidates' tags read, all at once.
    let mut candidates = Vec::new();
    let mut pages = cx.clients.sd.list_namespaces().into_paginator().send();
    while let Some(page) = pages.next().await {
        for ns in page.map_err(|e| api_error("list Cloud Map namespaces", e))?.namespaces() {
            let (Some(id), Some(arn)) = (ns.id(), ns.arn()) else { continue };
            let is_recorded = recorded_id.as_deref() == Some(id);
            if is_recorded || ns.name().is_some_and(|n| names.contains(n)) {
                candidates.push((id.to_string(), arn.to_string(), ns.name().map(str::to_string), is_recorded));
            }
        }
    }
    let tagged = all(candidates, |(id, arn, name, is_recorded)| {
        let clients = cx.clients.clone();
        async move {
            let tags = sd_stack_tags(&clients, &arn).await?;
            Ok((id, arn, name, is_recorded, tags))
        }
    })
    .await?;
    let mut found = Vec::new();
    for (id, arn, name, is_recorded, tags) in tagged {
        // Gone meanwhile.
        let Some(tags) = tags else { continue };
        let owner = cx.owner(tags.stack.as_deref());
        // An unrecorded namespace is the stack's only by its tag; somebody else's of the same name is none of ours.
        if is_recorded || owner == Owner::Us {
            let (node, lineage, facts) = (Some(NodeId::Namespace), tags.lineage, Facts { name });
            found.push(Found { node, id, arn: Some(arn), owner, lineage, facts });
        }
    }
    Ok(found)
}

/// The recorded namespace with its owner, from its one tag read (its ARN read first if the record lacks it);
/// `None` when none is recorded or it is gone. Its Cloud Map services are owned by containment, through this.
pub(super) async fn recorded(cx: &ReadCx<'_>) -> Result<Option<Found<Facts>>> {
    let Some(record) = cx.record(&NodeId::Namespace) else { return Ok(None) };
    let (name, arn) = match &record.arn {
        Some(arn) => (None, arn.clone()),
        None => match get_namespace(cx.clients, &record.id).await? {
            Some((name, Some(arn))) => (name, arn),
            _ => return Ok(None),
        },
    };
    let Some(tags) = sd_stack_tags(cx.clients, &arn).await? else { return Ok(None) };
    Ok(Some(Found {
        node: Some(NodeId::Namespace),
        id: record.id.clone(),
        arn: Some(arn),
        owner: cx.owner(tags.stack.as_deref()),
        lineage: tags.lineage,
        facts: Facts { name },
    }))
}

/// A namespace's name and ARN; `None` when it is gone.
async fn get_namespace(clients: &Clients, id: &str) -> Result<Option<(Option<String>, Option<String>)>> {
    let out = clients
        .sd
        .get_namespace()
        .id(id)
        .send()
        .await
        .map_err(|e| api_error(format!("read namespace {id}"), e))
        .or_gone()?;
    Ok(out.map(|o| {
        let ns = o.namespace();
        (ns.and_then(|n| n.name()).map(str::to_string), ns.and_then(|n| n.arn()).map(str::to_string))
    }))
}

/// The stack's namespace of this name, if one exists (tagged for this stack).
async fn find_ours(ctx: &Ctx, name: &str) -> Result<Option<(Created, Facts)>> {
    let mut pages = ctx.clients.sd.list_namespaces().into_paginator().send();
    while let Some(page) = pages.next().await {
        for ns in page.map_err(|e| api_error("list Cloud Map namespaces", e))?.namespaces() {
            if let (Some(n), Some(id), Some(arn)) = (ns.name(), ns.id(), ns.arn())
                && n == name
                && let Some(tags) = sd_stack_tags(&ctx.clients, arn).await?
                && Owner::from_tag(&ctx.stack, tags.stack.as_deref()) == Owner::Us
            {
                let created = Created::named(id, Some(arn.to_string()));
                return Ok(Some((created, Facts { name: Some(n.to_string()) })));
            }
        }
    }
    Ok(None)
}

/// Polls a Cloud Map operation until it succeeds, returning its namespace target (if it has one).
pub(super) async fn wait_for_operation(ctx: &Ctx, operation_id: &str, what: &str) -> Result<Option<String>> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let out = ctx
            .clients
            .sd
            .get_operation()
            .operation_id(operation_id)
            .send()
            .await
            .map_err(|e| api_error(format!("read Cloud Map operation {operation_id} ({what})"), e))?;
        let op = out.operation();
        match op.and_then(|o| o.status()) {
            Some(OperationStatus::Success) => {
                let target = op.and_then(|o| o.targets()).and_then(|t| t.get(&OperationTargetType::Namespace));
                return Ok(target.cloned());
            }
            Some(OperationStatus::Fail) => {
                let code = op.and_then(|o| o.error_code()).unwrap_or("unknown");
                let message = op.and_then(|o| o.error_message()).unwrap_or("no message");
                bail!("Cloud Map operation {operation_id} ({what}) failed: {message} ({code})");
            }
            _ => {}
        }
        if started.elapsed() + delay > ctx.operation_timeout {
            bail!(
                "Cloud Map operation {operation_id} ({what}) did not finish within {}s\n  hint: it may still complete; check it with `aws servicediscovery get-operation --operation-id {operation_id}` and re-run the command to resume",
                ctx.operation_timeout.as_secs()
            );
        }
        ctx.pause(delay, || format!("Cloud Map operation {operation_id} ({what})")).await?;
        delay = crate::aws::poll_delay(started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resource::{Change as _, Compare};
    use crate::state::Record;

    fn check(facts: Facts) -> Vec<Change> {
        let spec = Spec { name: "shop.local".into() };
        let node = Node {
            id: NodeId::Namespace,
            spec: crate::resource::Spec::Namespace(spec.clone()),
            deps: vec![NodeId::Vpc],
        };
        let refs = BTreeMap::<NodeId, Record>::new();
        Namespace::compare(&spec, &facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn a_namespace_of_its_name_or_proven_by_its_services_is_in_sync() {
        assert!(check(Facts { name: Some("shop.local".into()) }).is_empty());
        assert!(check(Facts { name: None }).is_empty());
    }

    #[test]
    fn another_name_is_a_replacement() {
        let changes = check(Facts { name: Some("old.local".into()) });
        assert_eq!(changes, [Change::Name { live: "old.local".into(), want: "shop.local".into() }]);
        assert!(changes[0].replaces());
        assert_eq!(changes[0].to_string(), "named old.local, not shop.local");
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let spec = crate::resource::Spec::Namespace(Spec { name: "shop.local".into() });
        assert_eq!(serde_json::to_string(&spec).unwrap(), r#"{"kind":"namespace","name":"shop.local"}"#);
    }
}
