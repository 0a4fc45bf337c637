//! The ECS cluster, named after the stack.

use anyhow::Result;

use super::{Created, Ctx, Deleted, Owner, api_error, ecs_tags, error_code, owner_from_tag, retry_while_blocked};

pub async fn create(ctx: &Ctx, node: &str, name: &str) -> Result<Created> {
    // CreateCluster on an existing name returns that cluster: make sure it is not somebody else's (the live read
    // may just have found the name free).
    let holder = if ctx.cluster_name_free { Owner::Gone } else { owner(ctx, name).await? };
    if let Owner::Other(tag) = holder {
        let who = tag.map_or("no secep:stack tag".to_string(), |t| format!("secep:stack={t}"));
        anyhow::bail!(
            "an ECS cluster named {name} already exists and is not this stack's (it carries {who})\n  hint: the cluster is named after the stack; rename the stack in [stack] name"
        );
    }
    let out = ctx
        .clients
        .ecs
        .create_cluster()
        .cluster_name(name)
        .set_tags(Some(ecs_tags(ctx, node, name)))
        .send()
        .await
        .map_err(|e| api_error(format!("create ECS cluster {name}"), e))?;
    let arn = out.cluster().and_then(|c| c.cluster_arn()).unwrap_or_default().to_string();
    Ok(Created { id: name.to_string(), arn: Some(arn) })
}

pub async fn owner(ctx: &Ctx, name: &str) -> Result<Owner> {
    let out = ctx
        .clients
        .ecs
        .describe_clusters()
        .clusters(name)
        .include(aws_sdk_ecs::types::ClusterField::Tags)
        .send()
        .await
        .map_err(|e| api_error(format!("read ECS cluster {name}"), e))?;
    match out.clusters().first() {
        Some(c) if c.status() != Some("INACTIVE") => Ok(owner_from_tag(ctx, super::service::stack_tag(c.tags()))),
        _ => Ok(Owner::Gone),
    }
}

/// An ECS cluster cannot be deleted while services remain in it (ClusterContainsServicesException), for a while
/// even after they were deleted: waited out, bounded.
pub async fn delete(ctx: &Ctx, name: &str) -> Result<Deleted> {
    let attempt = || async {
        ctx.clients
            .ecs
            .delete_cluster()
            .cluster(name)
            .send()
            .await
            .map_err(|e| api_error(format!("delete ECS cluster {name}"), e))
    };
    let blocked = || async { format!("cluster {name} still contains services or tasks") };
    let busy = ["ClusterContainsServicesException", "ClusterContainsTasksException", "UpdateInProgressException"];
    match retry_while_blocked(ctx, &busy, attempt, blocked).await {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e) == Some("ClusterNotFoundException") => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}
