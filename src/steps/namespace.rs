//! The Cloud Map private DNS namespace bound to the VPC. Creation is asynchronous: it returns an operation id that
//! is polled until SUCCESS, with a bounded wait whose error names the operation.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use aws_sdk_servicediscovery::types::{OperationStatus, OperationTargetType};

use super::{Created, Ctx, Deleted, Owner, api_error, error_code, owner_from_tag, retry_while_blocked, sd_tags};
use crate::model::idempotency_token;

pub async fn create(ctx: &Ctx, node: &str, name: &str, digest: &str) -> Result<Created> {
    let vpc_id = ctx.id_of("vpc")?;
    let out = ctx
        .clients
        .sd
        .create_private_dns_namespace()
        .name(name)
        .vpc(&vpc_id)
        // Deterministic, so a retried create after a lost response returns the same operation instead of a twin.
        .creator_request_id(idempotency_token(&ctx.stack, node, digest))
        .description(format!("secep stack {}", ctx.stack))
        .set_tags(Some(sd_tags(ctx, node, name)?))
        .send()
        .await
        .map_err(|e| api_error(format!("create private DNS namespace {name} in {vpc_id}"), e));
    let out = match out {
        Ok(out) => out,
        // An interrupted run created it and could not record it: take it back if it is ours.
        Err(e)
            if matches!(
                super::error_code(&e),
                Some("ConflictingDomainExists" | "NamespaceAlreadyExists" | "DuplicateRequest")
            ) =>
        {
            return match find_ours(ctx, name).await? {
                Some(found) => Ok(found),
                None => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let operation_id = out.operation_id().unwrap_or_default().to_string();
    let namespace_id = wait_for_operation(ctx, &operation_id, &format!("namespace {name}")).await?;
    // No read-back for the ARN: nothing uses it (ownership reads the namespace afresh), and the Cloud Map services
    // wait on this step.
    Ok(Created { id: namespace_id, arn: None })
}

/// The stack's namespace of this name, if one exists (tagged for this stack).
async fn find_ours(ctx: &Ctx, name: &str) -> Result<Option<Created>> {
    let mut pages = ctx.clients.sd.list_namespaces().into_paginator().send();
    while let Some(page) = pages.next().await {
        for ns in page.map_err(|e| api_error("list Cloud Map namespaces", e))?.namespaces() {
            if let (Some(n), Some(id), Some(arn)) = (ns.name(), ns.id(), ns.arn())
                && n == name
                && owner_of_arn(ctx, arn).await? == Owner::Us
            {
                return Ok(Some(Created { id: id.to_string(), arn: Some(arn.to_string()) }));
            }
        }
    }
    Ok(None)
}

/// Polls a Cloud Map operation until it succeeds, returning its namespace target.
pub async fn wait_for_operation(ctx: &Ctx, operation_id: &str, what: &str) -> Result<String> {
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
                return Ok(target.cloned().unwrap_or_default());
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
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Owner of a Cloud Map resource (namespace or service) from its tags.
pub async fn owner_of_arn(ctx: &Ctx, arn: &str) -> Result<Owner> {
    let out = ctx.clients.sd.list_tags_for_resource().resource_arn(arn).send().await;
    match out.map_err(|e| api_error(format!("read tags of {arn}"), e)) {
        Ok(o) => {
            let tag = o.tags().iter().find(|t| t.key() == super::TAG_STACK).map(|t| t.value());
            Ok(owner_from_tag(ctx, tag))
        }
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(Owner::Gone),
        Err(e) => Err(e),
    }
}

pub async fn owner(ctx: &Ctx, record: &crate::state::Record) -> Result<Owner> {
    let found = ctx.clients.sd.get_namespace().id(&record.id).send().await;
    match found.map_err(|e| api_error(format!("read namespace {}", record.id), e)) {
        Ok(o) => match o.namespace().and_then(|n| n.arn()) {
            Some(arn) => owner_of_arn(ctx, arn).await,
            None => Ok(Owner::Gone),
        },
        Err(e) if error_code(&e) == Some("NamespaceNotFound") => Ok(Owner::Gone),
        Err(e) => Err(e),
    }
}

/// A namespace cannot be deleted while services remain in it (ResourceInUse): waited out, bounded. Deletion is
/// asynchronous, so its operation is polled too.
pub async fn delete(ctx: &Ctx, namespace_id: &str) -> Result<Deleted> {
    let attempt = || async {
        ctx.clients
            .sd
            .delete_namespace()
            .id(namespace_id)
            .send()
            .await
            .map_err(|e| api_error(format!("delete namespace {namespace_id}"), e))
    };
    let blocked = || async { format!("namespace {namespace_id} still has services") };
    // DuplicateRequest: an earlier delete of this namespace (an interrupted run) is still in progress.
    match retry_while_blocked(ctx, &["ResourceInUse", "DuplicateRequest"], attempt, blocked).await {
        Ok(out) => {
            if let Some(op) = out.operation_id() {
                wait_for_operation(ctx, op, &format!("delete namespace {namespace_id}")).await?;
            }
            Ok(Deleted::Now)
        }
        Err(e) if error_code(&e) == Some("NamespaceNotFound") => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}
