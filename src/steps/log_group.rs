//! The stack's CloudWatch log group (`/secep/<stack>`), the `awslogs` destination of every container. `down` keeps
//! it (logs outlive a deployment) unless asked to delete it.

use std::collections::HashMap;

use anyhow::{Result, bail};

use super::{Created, Ctx, Deleted, Owner, api_error, error_code, owner_from_tag};
use crate::aws::Clients;

pub async fn create(ctx: &Ctx, node: &str, name: &str, retention_days: u32) -> Result<Created> {
    let tags: HashMap<String, String> = ctx.tags(node, name).into_iter().filter(|(k, _)| k != "Name").collect();
    let created = ctx.clients.logs.create_log_group().log_group_name(name).set_tags(Some(tags)).send().await;
    match created.map_err(|e| api_error(format!("create log group {name}"), e)) {
        Ok(_) => {}
        // Kept by an earlier `down`, or left by a killed run: reused if it is this stack's.
        Err(e) if error_code(&e) == Some("ResourceAlreadyExistsException") => match owner(ctx, name).await? {
            Owner::Us => {}
            _ => bail!(
                "log group {name} already exists and is not tagged secep:stack={}\n  hint: delete or retag it, or rename the stack",
                ctx.stack
            ),
        },
        Err(e) => return Err(e),
    }
    set_retention(ctx, name, retention_days).await?;
    Ok(Created { id: name.to_string(), arn: None })
}

pub async fn set_retention(ctx: &Ctx, name: &str, days: u32) -> Result<()> {
    ctx.clients
        .logs
        .put_retention_policy()
        .log_group_name(name)
        .retention_in_days(days as i32)
        .send()
        .await
        .map_err(|e| api_error(format!("set the retention of log group {name} to {days} days"), e))?;
    Ok(())
}

/// The group's retention, or `None` if it does not exist.
pub async fn read(clients: &Clients, name: &str) -> Result<Option<(String, Option<i32>)>> {
    let out = clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .map_err(|e| api_error(format!("read log group {name}"), e))?;
    Ok(out.log_groups().iter().find(|g| g.log_group_name() == Some(name)).map(|g| {
        (g.log_group_arn().or(g.arn()).unwrap_or_default().trim_end_matches(":*").to_string(), g.retention_in_days())
    }))
}

/// The group's `secep:stack` tag: `None` if there is no such group, `Some(None)` if it has no such tag.
pub async fn stack_tag(clients: &Clients, name: &str) -> Result<Option<Option<String>>> {
    let Some((arn, _)) = read(clients, name).await? else { return Ok(None) };
    let tags = clients
        .logs
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(|e| api_error(format!("read the tags of log group {name}"), e))?;
    Ok(Some(tags.tags().and_then(|t| t.get(super::TAG_STACK)).cloned()))
}

pub async fn owner(ctx: &Ctx, name: &str) -> Result<Owner> {
    Ok(stack_tag(&ctx.clients, name).await?.map_or(Owner::Gone, |tag| owner_from_tag(ctx, tag.as_deref())))
}

/// Deletes the group only with `down --delete-logs`; otherwise it is kept, with its logs.
pub async fn delete(ctx: &Ctx, name: &str) -> Result<Deleted> {
    if !ctx.delete_logs {
        return Ok(Deleted::Kept);
    }
    let out = ctx.clients.logs.delete_log_group().log_group_name(name).send().await;
    match out.map_err(|e| api_error(format!("delete log group {name}"), e)) {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}
