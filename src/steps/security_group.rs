//! One security group per service. It starts with no ingress at all; rules are separate nodes (ingress_rule.rs).

use anyhow::Result;
use aws_sdk_ec2::types::ResourceType;

use super::{Created, Ctx, Deleted, api_error, blocking_enis, ec2_tags, error_code, retry_while_blocked};

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

/// Deleting a group fails with DependencyViolation while an ENI or another group's rule still uses it. secep revokes
/// its own rules first (they are separate nodes, torn down before any group); lingering ENIs are waited out, bounded.
pub async fn delete(ctx: &Ctx, group_id: &str) -> Result<Deleted> {
    let attempt = || async {
        ctx.clients
            .ec2
            .delete_security_group()
            .group_id(group_id)
            .send()
            .await
            .map_err(|e| api_error(format!("delete security group {group_id}"), e))
    };
    let blocked = || async {
        let referencing = referencing_groups(ctx, group_id).await;
        let enis = blocking_enis(ctx, "group-id", group_id).await;
        if referencing.is_empty() {
            enis
        } else {
            format!("{group_id} is referenced by the rules of {}; {enis}", referencing.join(", "))
        }
    };
    match retry_while_blocked(ctx, &["DependencyViolation"], attempt, blocked).await {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e) == Some("InvalidGroup.NotFound") => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}

/// Other groups whose ingress rules name this one (another team's group admitting ours blocks its deletion).
async fn referencing_groups(ctx: &Ctx, group_id: &str) -> Vec<String> {
    let filter = aws_sdk_ec2::types::Filter::builder().name("ip-permission.group-id").values(group_id).build();
    match ctx.clients.ec2.describe_security_groups().filters(filter).send().await {
        Ok(out) => out
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .filter(|g| *g != group_id)
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}
