//! One security group per service. It starts with no ingress at all; rules are separate nodes (ingress_rule.rs).

use anyhow::Result;
use aws_sdk_ec2::types::ResourceType;

use super::{Created, Ctx, api_error, ec2_tags};

pub async fn create(ctx: &Ctx, node: &str, group_name: &str, description: &str) -> Result<Created> {
    let vpc_id = ctx.id_of("vpc")?;
    let out = ctx
        .clients
        .ec2
        .create_security_group()
        .group_name(group_name)
        .description(description)
        .vpc_id(&vpc_id)
        .tag_specifications(ec2_tags(ctx, ResourceType::SecurityGroup, node, group_name))
        .send()
        .await
        .map_err(|e| api_error(format!("create security group {group_name} in {vpc_id}"), e))?;
    Ok(Created {
        id: out.group_id().unwrap_or_default().to_string(),
        arn: out.security_group_arn().map(str::to_string),
    })
}
