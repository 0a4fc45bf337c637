//! The Fargate service: private subnets, its own group, no public IP, registered in its Cloud Map service.

use anyhow::{Context, Result};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, LaunchType, NetworkConfiguration, PropagateTags, ServiceRegistry,
};

use super::{Created, Ctx, api_error, ecs_tags};
use crate::model::idempotency_token;

pub async fn create(
    ctx: &Ctx,
    node: &str,
    deps: &[String],
    name: &str,
    desired_count: u32,
    digest: &str,
) -> Result<Created> {
    let cluster = ctx.id_of("cluster")?;
    let subnets = deps.iter().filter(|d| d.starts_with("subnet/")).map(|d| ctx.id_of(d)).collect::<Result<Vec<_>>>()?;
    let network = AwsVpcConfiguration::builder()
        .set_subnets(Some(subnets))
        .security_groups(ctx.id_of(&format!("sg/{name}"))?)
        .assign_public_ip(AssignPublicIp::Disabled)
        .build()
        .context("awsvpc configuration")?;
    let out = ctx
        .clients
        .ecs
        .create_service()
        .cluster(&cluster)
        .service_name(name)
        .task_definition(ctx.id_of(&format!("td/{name}"))?)
        .desired_count(desired_count as i32)
        .launch_type(LaunchType::Fargate)
        .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(network).build())
        .service_registries(ServiceRegistry::builder().registry_arn(ctx.arn_of(&format!("sd/{name}"))?).build())
        // ECS does not fill the token itself; a deterministic one makes a retried create idempotent.
        .client_token(idempotency_token(&ctx.stack, node, digest))
        .propagate_tags(PropagateTags::Service)
        .set_tags(Some(ecs_tags(ctx, node, name)))
        .send()
        .await
        .map_err(|e| api_error(format!("create ECS service {name} in cluster {cluster}"), e))?;
    let arn = out.service().and_then(|s| s.service_arn()).unwrap_or_default().to_string();
    Ok(Created { id: arn.clone(), arn: Some(arn) })
}
