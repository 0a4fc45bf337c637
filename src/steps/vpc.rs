//! The VPC: DNS support and DNS hostnames on, so Cloud Map's private zone resolves inside it.

use anyhow::Result;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};

use super::{Created, Ctx, api_error, ec2_tags};

pub async fn create(ctx: &Ctx, node: &str, cidr: &str, name: &str) -> Result<Created> {
    let ec2 = &ctx.clients.ec2;
    let out = ec2
        .create_vpc()
        .cidr_block(cidr)
        .tag_specifications(ec2_tags(ctx, ResourceType::Vpc, node, name))
        .send()
        .await
        .map_err(|e| api_error(format!("create VPC {cidr}"), e))?;
    let vpc_id = out.vpc().and_then(|v| v.vpc_id()).unwrap_or_default().to_string();
    let on = || AttributeBooleanValue::builder().value(true).build();
    // EC2 takes one attribute per call; the two are independent.
    let (support, hostnames) = tokio::join!(
        ec2.modify_vpc_attribute().vpc_id(&vpc_id).enable_dns_support(on()).send(),
        ec2.modify_vpc_attribute().vpc_id(&vpc_id).enable_dns_hostnames(on()).send(),
    );
    support.map_err(|e| api_error(format!("enable DNS support on {vpc_id}"), e))?;
    hostnames.map_err(|e| api_error(format!("enable DNS hostnames on {vpc_id}"), e))?;
    Ok(Created { id: vpc_id, arn: None })
}
