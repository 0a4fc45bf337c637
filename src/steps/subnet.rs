//! Private subnets, one per AZ; no public IPs on launch (the EC2 default for non-default VPCs, kept explicit in tests).

use anyhow::Result;
use aws_sdk_ec2::types::ResourceType;

use super::{Created, Ctx, api_error, ec2_tags};

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
