//! One Cloud Map service per ECS service: MULTIVALUE A records, and a custom health check that ECS drives
//! (its failure threshold is fixed at 1 by AWS, so none is sent).

use anyhow::{Context, Result};
use aws_sdk_servicediscovery::types::{DnsConfig, DnsRecord, HealthCheckCustomConfig, RecordType, RoutingPolicy};

use super::{Created, Ctx, Deleted, Owner, api_error, error_code, retry_while_blocked, sd_tags};
use crate::model::idempotency_token;

pub async fn create(ctx: &Ctx, node: &str, name: &str, ttl: u32, digest: &str) -> Result<Created> {
    let namespace_id = ctx.id_of("namespace")?;
    // In a namespace older than this run, an interrupted run may have created this service without recording it.
    if !ctx.created.lock().expect("created lock").contains("namespace")
        && let Some(found) = find_ours(ctx, &namespace_id, name).await?
    {
        return Ok(found);
    }
    let dns = DnsConfig::builder()
        .routing_policy(RoutingPolicy::Multivalue)
        .dns_records(DnsRecord::builder().r#type(RecordType::A).ttl(i64::from(ttl)).build().context("DNS record")?)
        .build()
        .context("DNS config")?;
    let out = ctx
        .clients
        .sd
        .create_service()
        .name(name)
        .namespace_id(&namespace_id)
        .creator_request_id(idempotency_token(&ctx.stack, node, digest))
        .description(format!("secep stack {}", ctx.stack))
        .dns_config(dns)
        .health_check_custom_config(HealthCheckCustomConfig::builder().build())
        .set_tags(Some(sd_tags(ctx, node, name)?))
        .send()
        .await
        .map_err(|e| api_error(format!("create Cloud Map service {name} in {namespace_id}"), e))?;
    let svc = out.service();
    Ok(Created {
        id: svc.and_then(|s| s.id()).unwrap_or_default().to_string(),
        arn: svc.and_then(|s| s.arn()).map(str::to_string),
    })
}

pub async fn owner(ctx: &Ctx, record: &crate::state::Record) -> Result<Owner> {
    let found = ctx.clients.sd.get_service().id(&record.id).send().await;
    match found.map_err(|e| api_error(format!("read Cloud Map service {}", record.id), e)) {
        Ok(o) => match o.service().and_then(|s| s.arn()) {
            Some(arn) => super::namespace::owner_of_arn(ctx, arn).await,
            None => Ok(Owner::Gone),
        },
        Err(e) if error_code(&e) == Some("ServiceNotFound") => Ok(Owner::Gone),
        Err(e) => Err(e),
    }
}

/// Instances ECS registered may outlive the ECS service briefly; AWS then refuses the delete with ResourceInUse.
/// secep deregisters what is left, then retries the delete with backoff, bounded.
pub async fn delete(ctx: &Ctx, service_id: &str) -> Result<Deleted> {
    let attempt = || async {
        deregister_instances(ctx, service_id).await?;
        ctx.clients
            .sd
            .delete_service()
            .id(service_id)
            .send()
            .await
            .map_err(|e| api_error(format!("delete Cloud Map service {service_id}"), e))
    };
    let blocked = || async { format!("Cloud Map service {service_id} still has registered instances") };
    // DuplicateRequest: ECS is still deregistering the same instance.
    match retry_while_blocked(ctx, &["ResourceInUse", "DuplicateRequest"], attempt, blocked).await {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e) == Some("ServiceNotFound") => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}

async fn deregister_instances(ctx: &Ctx, service_id: &str) -> Result<()> {
    let listed = ctx.clients.sd.list_instances().service_id(service_id).send().await;
    let instances = match listed.map_err(|e| api_error(format!("list instances of {service_id}"), e)) {
        Ok(o) => o.instances().iter().filter_map(|i| i.id()).map(str::to_string).collect::<Vec<_>>(),
        Err(e) if error_code(&e) == Some("ServiceNotFound") => return Ok(()),
        Err(e) => return Err(e),
    };
    for instance in instances {
        let out = ctx.clients.sd.deregister_instance().service_id(service_id).instance_id(&instance).send().await;
        match out.map_err(|e| api_error(format!("deregister instance {instance} of {service_id}"), e)) {
            Ok(_) => {}
            Err(e) if matches!(error_code(&e), Some("InstanceNotFound" | "ServiceNotFound")) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Changes the A records' TTL in place (Cloud Map UpdateService); ECS registrations are untouched.
pub async fn update_ttl(ctx: &Ctx, service_id: &str, ttl: u32) -> Result<()> {
    use aws_sdk_servicediscovery::types::{DnsConfigChange, ServiceChange};
    let change = ServiceChange::builder()
        .dns_config(
            DnsConfigChange::builder()
                .dns_records(
                    DnsRecord::builder().r#type(RecordType::A).ttl(i64::from(ttl)).build().context("DNS record")?,
                )
                .build()
                .context("DNS config change")?,
        )
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

/// The stack's Cloud Map service of this name in the namespace, if one exists.
async fn find_ours(ctx: &Ctx, namespace_id: &str, name: &str) -> Result<Option<Created>> {
    let filter = aws_sdk_servicediscovery::types::ServiceFilter::builder()
        .name(aws_sdk_servicediscovery::types::ServiceFilterName::NamespaceId)
        .values(namespace_id)
        .build()?;
    let mut pages = ctx.clients.sd.list_services().filters(filter).into_paginator().send();
    while let Some(page) = pages.next().await {
        for s in page.map_err(|e| api_error(format!("list the services of {namespace_id}"), e))?.services() {
            let (Some(id), Some(arn)) = (s.id(), s.arn()) else { continue };
            if s.name() != Some(name) {
                continue;
            }
            // Some emulators ignore the namespace filter: check the namespace and the owner.
            let full = match ctx
                .clients
                .sd
                .get_service()
                .id(id)
                .send()
                .await
                .map_err(|e| api_error(format!("read {id}"), e))
            {
                Ok(full) => full,
                Err(e) if error_code(&e) == Some("ServiceNotFound") => continue, // deleted meanwhile
                Err(e) => return Err(e),
            };
            if full.service().and_then(|s| s.namespace_id()) == Some(namespace_id)
                && super::namespace::owner_of_arn(ctx, arn).await? == Owner::Us
            {
                return Ok(Some(Created { id: id.to_string(), arn: Some(arn.to_string()) }));
            }
        }
    }
    Ok(None)
}
