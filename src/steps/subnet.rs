//! Private subnets, one per AZ; no public IPs on launch (the EC2 default for non-default VPCs, kept explicit in tests).

use anyhow::Result;
use aws_sdk_ec2::types::ResourceType;

use super::{Created, Ctx, Deleted, api_error, blocking_enis, ec2_tags, error_code, retry_while_blocked};

pub async fn create(ctx: &Ctx, node: &str, az: &str, cidr: &str, name: &str) -> Result<Created> {
    let vpc_id = ctx.id_of("vpc")?;
    let out = ctx
        .clients
        .ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block(cidr)
        .availability_zone(az)
        .tag_specifications(ec2_tags(ctx, ResourceType::Subnet, node, name))
        .send()
        .await
        .map_err(|e| api_error(format!("create subnet {cidr} in {az}"), e))?;
    let id = out.subnet().and_then(|s| s.subnet_id()).unwrap_or_default().to_string();
    Ok(Created { id, arn: None })
}

/// Deleting a subnet fails with DependencyViolation while Fargate ENIs linger in it; that is waited out, bounded.
pub async fn delete(ctx: &Ctx, subnet_id: &str) -> Result<Deleted> {
    let attempt = || async {
        ctx.clients
            .ec2
            .delete_subnet()
            .subnet_id(subnet_id)
            .send()
            .await
            .map_err(|e| api_error(format!("delete subnet {subnet_id}"), e))
    };
    let blocked = || blocking_enis(ctx, "subnet-id", subnet_id);
    match retry_while_blocked(ctx, &["DependencyViolation"], attempt, blocked).await {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e) == Some("InvalidSubnetID.NotFound") => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}
