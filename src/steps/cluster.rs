//! The ECS cluster, named after the stack.

use anyhow::Result;

use super::{Created, Ctx, api_error, ecs_tags};

pub async fn create(ctx: &Ctx, node: &str, name: &str) -> Result<Created> {
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
