//! One Cloud Map service per ECS service: MULTIVALUE A records with the configured TTL, and a custom health check
//! that ECS drives (its failure threshold is fixed at 1 by AWS, so none is sent).

use std::collections::BTreeMap;
use std::fmt::{self, Display};

use anyhow::{Context, Result};
use aws_sdk_servicediscovery::types::{
    DnsConfig, DnsConfigChange, DnsRecord, HealthCheckCustomConfig, RecordType, RoutingPolicy, ServiceChange,
    ServiceFilter, ServiceFilterName,
};
use serde::Serialize;

use super::support::{all, sd_stack_tags, sd_tags};
use super::{
    Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt, View, api_error,
    is, retry_while,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub service: String,
    pub ttl: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub name: String,
    /// The A records' TTL (`None`: the answer did not show the DNS config).
    pub ttl: Option<i64>,
    pub instances: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Ttl { live: i64, want: u32 },
}

impl Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Ttl { live, want } => write!(f, "DNS TTL {live}s -> {want}s"),
        }
    }
}

/// The TTL changes in place (Cloud Map UpdateService).
impl super::Change for Change {}

pub struct SdService;

impl Resource for SdService {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "cloud map service";
    const ON_CHANGE: OnChange = OnChange::InPlace;

    /// The services of the recorded namespace, from the shared listing (one paginated call). Converge: only the
    /// recorded ones (moto ignores the namespace filter, so others may be anyone's; an unrecorded one of ours is
    /// taken back by its create). They are owned by containment: the recorded namespace is ours, so are they; in
    /// teardown the namespace's tag says whose it is, and an unrecorded service there is the stack's only by its own
    /// tag.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let Some(services) = cx.cloud_map_services().await? else { return Ok(Vec::new()) };
        let recorded: BTreeMap<&str, &NodeId> =
            cx.recorded(Kind::SdService).map(|(node, r)| (r.id.as_str(), node)).collect();
        let mut found = Vec::new();
        let mut unrecorded = Vec::new();
        for s in services {
            let Some(id) = s.id() else { continue };
            let facts = facts_of(s.name().unwrap_or_default(), s.dns_config(), s.instance_count());
            match recorded.get(id) {
                Some(node) => found.push(Found {
                    node: Some((*node).clone()),
                    id: id.to_string(),
                    arn: s.arn().map(str::to_string),
                    owner: Owner::Us,
                    lineage: None,
                    facts,
                }),
                None if cx.teardown() => {
                    if let (Some(arn), Some(name)) = (s.arn(), s.name()) {
                        unrecorded.push((id.to_string(), arn.to_string(), name.to_string(), facts));
                    }
                }
                None => {}
            }
        }
        if !cx.teardown() {
            return Ok(found);
        }
        if !found.is_empty() {
            // By containment, the namespace's owner (gone meanwhile: what the record names was ours).
            let owner = super::namespace::recorded(cx).await?.map_or(Owner::Us, |ns| ns.owner);
            for f in &mut found {
                f.owner = owner.clone();
            }
        }
        let tagged = all(unrecorded, |(id, arn, name, facts)| {
            let clients = cx.clients.clone();
            async move {
                let tags = sd_stack_tags(&clients, &arn).await?;
                Ok((id, arn, name, facts, tags))
            }
        })
        .await?;
        for (id, arn, name, facts, tags) in tagged {
            if let Some(tags) = tags
                && cx.owner(tags.stack.as_deref()) == Owner::Us
            {
                let (node, lineage) = (Some(NodeId::SdService(name)), tags.lineage);
                found.push(Found { node, id, arn: Some(arn), owner: Owner::Us, lineage, facts });
            }
        }
        Ok(found)
    }

    fn compare(spec: &Spec, facts: &Facts, _cx: &super::Compare<'_>) -> Vec<Change> {
        match facts.ttl {
            // A listing that does not show the DNS config cannot tell the TTL: nothing to compare.
            Some(live) if live != i64::from(spec.ttl) => vec![Change::Ttl { live, want: spec.ttl }],
            _ => Vec::new(),
        }
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, salt: &Salt) -> Result<(Created, Facts)> {
        let name = &spec.service;
        let namespace_id = ctx.id_of(&NodeId::Namespace)?;
        // In a namespace older than this run, an interrupted run may have created this service without recording it.
        if !ctx.created_this_run(&NodeId::Namespace)
            && let Some(found) = find_ours(ctx, &namespace_id, name).await?
        {
            return Ok(found);
        }
        let dns = DnsConfig::builder()
            .routing_policy(RoutingPolicy::Multivalue)
            .dns_records(a_record(spec.ttl)?)
            .build()
            .context("DNS config")?;
        let sent = ctx
            .clients
            .sd
            .create_service()
            .name(name)
            .namespace_id(&namespace_id)
            .creator_request_id(salt.token(&ctx.stack, &node.id))
            .description(format!("secep stack {}", ctx.stack))
            .dns_config(dns)
            .health_check_custom_config(HealthCheckCustomConfig::builder().build())
            .set_tags(Some(sd_tags(ctx, &node.id, name)?))
            .send()
            .await
            .map_err(|e| api_error(format!("create Cloud Map service {name} in {namespace_id}"), e));
        let out = match sent {
            Ok(out) => out,
            // A create retried after its answer was lost finds the service made: taken back if it is ours.
            Err(e) if is(&e, ErrorKind::AlreadyExists) => {
                return match find_ours(ctx, &namespace_id, name).await? {
                    Some(found) => Ok(found),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let svc = out.service();
        let created = Created::from_answer("CreateService", svc.and_then(|s| s.id()), svc.and_then(|s| s.arn()))?;
        let mut facts = facts_of(name, svc.and_then(|s| s.dns_config()), svc.and_then(|s| s.instance_count()));
        // Made with the TTL asked for, if the answer does not show it.
        facts.ttl = facts.ttl.or(Some(i64::from(spec.ttl)));
        Ok((created, facts))
    }

    async fn update(
        ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        for change in changes {
            match change {
                Change::Ttl { want, .. } => update_ttl(ctx, live.id, *want).await?,
            }
        }
        Ok(None)
    }

    /// Instances ECS registered may outlive the ECS service briefly; AWS then refuses the delete with ResourceInUse.
    /// Only then does secep deregister what is left, and retry the delete with backoff, bounded.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let id = live.id;
        match delete_service(ctx, id).await.or_gone() {
            Ok(Some(_)) => return Ok(Deleted::Now),
            Ok(None) => return Ok(Deleted::AlreadyGone),
            Err(e) if is(&e, ErrorKind::InUse) => {}
            Err(e) => return Err(e),
        }
        let attempt = || async move {
            deregister_instances(ctx, id).await?;
            delete_service(ctx, id).await
        };
        let blocked = || async move { format!("Cloud Map service {id} still has registered instances") };
        // ResourceInUse, and DuplicateRequest: ECS is still deregistering the same instance. Both are InUse.
        let deleted = retry_while(ctx, &[ErrorKind::InUse], attempt, blocked).await.or_gone()?;
        Ok(if deleted.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
    }
}

async fn delete_service(
    ctx: &Ctx,
    id: &str,
) -> Result<aws_sdk_servicediscovery::operation::delete_service::DeleteServiceOutput> {
    ctx.clients
        .sd
        .delete_service()
        .id(id)
        .send()
        .await
        .map_err(|e| api_error(format!("delete Cloud Map service {id}"), e))
}

fn a_record(ttl: u32) -> Result<DnsRecord> {
    DnsRecord::builder().r#type(RecordType::A).ttl(i64::from(ttl)).build().context("DNS record")
}

fn facts_of(name: &str, dns: Option<&DnsConfig>, instances: Option<i32>) -> Facts {
    let ttl = dns.and_then(|d| d.dns_records().iter().find(|r| *r.r#type() == RecordType::A)).map(DnsRecord::ttl);
    Facts { name: name.to_string(), ttl, instances }
}

/// Deregisters every instance left in the service (a gone service or instance counts as done).
async fn deregister_instances(ctx: &Ctx, service_id: &str) -> Result<()> {
    let mut instances = Vec::new();
    let mut pages = ctx.clients.sd.list_instances().service_id(service_id).into_paginator().send();
    while let Some(page) = pages.next().await {
        match page.map_err(|e| api_error(format!("list instances of {service_id}"), e)).or_gone()? {
            Some(page) => instances.extend(page.instances().iter().filter_map(|i| i.id()).map(str::to_string)),
            None => return Ok(()),
        }
    }
    for instance in instances {
        ctx.clients
            .sd
            .deregister_instance()
            .service_id(service_id)
            .instance_id(&instance)
            .send()
            .await
            .map_err(|e| api_error(format!("deregister instance {instance} of {service_id}"), e))
            .or_gone()?;
    }
    Ok(())
}

/// Changes the A records' TTL in place (Cloud Map UpdateService); ECS registrations are untouched.
async fn update_ttl(ctx: &Ctx, service_id: &str, ttl: u32) -> Result<()> {
    let change = ServiceChange::builder()
        .dns_config(DnsConfigChange::builder().dns_records(a_record(ttl)?).build().context("DNS config change")?)
        .build();
    let out = ctx
        .clients
        .sd
        .update_service()
        .id(service_id)
        .service(change)
        .send()
        .await
        .map_err(|e| api_error(format!("update the TTL of Cloud Map service {service_id}"), e))?;
    if let Some(op) = out.operation_id() {
        super::namespace::wait_for_operation(ctx, op, &format!("update Cloud Map service {service_id}")).await?;
    }
    Ok(())
}

/// The stack's Cloud Map service of this name in the namespace, if one exists, with its facts.
async fn find_ours(ctx: &Ctx, namespace_id: &str, name: &str) -> Result<Option<(Created, Facts)>> {
    let filter = ServiceFilter::builder().name(ServiceFilterName::NamespaceId).values(namespace_id).build()?;
    let mut pages = ctx.clients.sd.list_services().filters(filter).into_paginator().send();
    while let Some(page) = pages.next().await {
        for s in page.map_err(|e| api_error(format!("list the services of {namespace_id}"), e))?.services() {
            let (Some(id), Some(arn)) = (s.id(), s.arn()) else { continue };
            if s.name() != Some(name) {
                continue;
            }
            // Some emulators ignore the namespace filter: check the namespace and the owner.
            let full = ctx
                .clients
                .sd
                .get_service()
                .id(id)
                .send()
                .await
                .map_err(|e| api_error(format!("read Cloud Map service {id}"), e))
                .or_gone()?;
            // Deleted meanwhile.
            let Some(full) = full else { continue };
            let Some(svc) = full.service().filter(|svc| svc.namespace_id() == Some(namespace_id)) else { continue };
            if let Some(tags) = sd_stack_tags(&ctx.clients, arn).await?
                && Owner::from_tag(&ctx.stack, tags.stack.as_deref()) == Owner::Us
            {
                let facts = facts_of(name, svc.dns_config(), svc.instance_count());
                return Ok(Some((Created::named(id, Some(arn.to_string())), facts)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resource::{Change as _, Compare};
    use crate::state::Record;

    fn check(ttl: Option<i64>) -> Vec<Change> {
        let spec = Spec { service: "api".into(), ttl: 10 };
        let node = Node {
            id: NodeId::SdService("api".into()),
            spec: crate::resource::Spec::SdService(spec.clone()),
            deps: vec![NodeId::Namespace],
        };
        let refs = BTreeMap::<NodeId, Record>::new();
        let facts = Facts { name: "api".into(), ttl, instances: Some(2) };
        SdService::compare(&spec, &facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn the_ttl_asked_for_is_in_sync() {
        assert!(check(Some(10)).is_empty());
    }

    #[test]
    fn another_ttl_is_changed_in_place() {
        let changes = check(Some(60));
        assert_eq!(changes, [Change::Ttl { live: 60, want: 10 }]);
        assert!(!changes[0].replaces());
        assert_eq!(changes[0].to_string(), "DNS TTL 60s -> 10s");
    }

    #[test]
    fn a_listing_without_the_dns_config_is_not_a_difference() {
        assert!(check(None).is_empty());
    }

    #[test]
    fn the_ttl_is_read_from_the_a_record() {
        let dns = DnsConfig::builder()
            .routing_policy(RoutingPolicy::Multivalue)
            .dns_records(DnsRecord::builder().r#type(RecordType::Srv).ttl(300).build().unwrap())
            .dns_records(a_record(15).unwrap())
            .build()
            .unwrap();
        assert_eq!(facts_of("api", Some(&dns), None).ttl, Some(15));
        assert_eq!(facts_of("api", None, None).ttl, None);
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let spec = crate::resource::Spec::SdService(Spec { service: "api".into(), ttl: 10 });
        assert_eq!(serde_json::to_string(&spec).unwrap(), r#"{"kind":"sd-service","service":"api","ttl":10}"#);
    }
}
