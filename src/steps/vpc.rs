//! The VPC, and its DNS attributes (a node of their own, `vpc-dns`): DNS support and DNS hostnames on, so Cloud
//! Map's private zone and the endpoints' private DNS names resolve inside it.

use anyhow::Result;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};

use super::{Created, Ctx, Deleted, Owner, api_error, ec2_tags, error_code, owner_from_tag, retry_while_blocked};

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
    Ok(Created { id: vpc_id, arn: None })
}

/// Turns on DNS support and DNS hostnames (idempotent: a re-run after a crash sets them again). Recorded as
/// `<vpc id>/dns` (a record id names one node); nothing to delete, the attributes go with the VPC.
pub async fn enable_dns(ctx: &Ctx) -> Result<Created> {
    let ec2 = &ctx.clients.ec2;
    let vpc_id = ctx.id_of("vpc")?;
    let on = || AttributeBooleanValue::builder().value(true).build();
    // EC2 takes one attribute per call; the two are independent.
    let (support, hostnames) = tokio::join!(
        ec2.modify_vpc_attribute().vpc_id(&vpc_id).enable_dns_support(on()).send(),
        ec2.modify_vpc_attribute().vpc_id(&vpc_id).enable_dns_hostnames(on()).send(),
    );
    support.map_err(|e| api_error(format!("enable DNS support on {vpc_id}"), e))?;
    hostnames.map_err(|e| api_error(format!("enable DNS hostnames on {vpc_id}"), e))?;
    Ok(Created { id: dns_id(&vpc_id), arn: None })
}

pub fn dns_id(vpc_id: &str) -> String {
    format!("{vpc_id}/dns")
}

/// Owner of a recorded VPC, subnet or security group (the EC2 kinds share `secep:stack` tags read by describe).
pub async fn owner(ctx: &Ctx, node: &str, id: &str) -> Result<Owner> {
    let ec2 = &ctx.clients.ec2;
    let not_found = |e: &anyhow::Error| error_code(e).is_some_and(|c| c.ends_with(".NotFound"));
    let read = |what: &str, e: anyhow::Error| e.context(format!("read {what} {id}"));
    let tags = match super::kind_of(node) {
        "vpc" => ec2
            .describe_vpcs()
            .vpc_ids(id)
            .send()
            .await
            .map(|o| o.vpcs().first().map(|v| v.tags().to_vec()))
            .map_err(|e| read("VPC", api_error("describe", e))),
        "subnet" => ec2
            .describe_subnets()
            .subnet_ids(id)
            .send()
            .await
            .map(|o| o.subnets().first().map(|v| v.tags().to_vec()))
            .map_err(|e| read("subnet", api_error("describe", e))),
        _ => ec2
            .describe_security_groups()
            .group_ids(id)
            .send()
            .await
            .map(|o| o.security_groups().first().map(|v| v.tags().to_vec()))
            .map_err(|e| read("security group", api_error("describe", e))),
    };
    match tags {
        Ok(Some(tags)) => Ok(owner_from_tag(ctx, stack_tag(&tags))),
        Ok(None) => Ok(Owner::Gone),
        Err(e) if not_found(&e) => Ok(Owner::Gone),
        Err(e) => Err(e),
    }
}

pub fn stack_tag(tags: &[aws_sdk_ec2::types::Tag]) -> Option<&str> {
    tags.iter().find(|t| t.key() == Some(super::TAG_STACK)).and_then(|t| t.value())
}

pub async fn delete(ctx: &Ctx, vpc_id: &str) -> Result<Deleted> {
    let attempt = || async {
        ctx.clients
            .ec2
            .delete_vpc()
            .vpc_id(vpc_id)
            .send()
            .await
            .map_err(|e| api_error(format!("delete VPC {vpc_id}"), e))
    };
    let blocked = || async { remaining_in_vpc(ctx, vpc_id).await };
    match retry_while_blocked(ctx, &["DependencyViolation"], attempt, blocked).await {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e) == Some("InvalidVpcID.NotFound") => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}

/// What still lives in a VPC, for the message when it cannot be deleted.
async fn remaining_in_vpc(ctx: &Ctx, vpc_id: &str) -> String {
    let filter = || aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(vpc_id).build();
    let ec2 = &ctx.clients.ec2;
    let mut found = Vec::new();
    if let Ok(o) = ec2.describe_subnets().filters(filter()).send().await {
        found.extend(o.subnets().iter().filter_map(|s| s.subnet_id()).map(str::to_string));
    }
    if let Ok(o) = ec2.describe_security_groups().filters(filter()).send().await {
        found.extend(
            o.security_groups()
                .iter()
                .filter(|g| g.group_name() != Some("default"))
                .filter_map(|g| g.group_id())
                .map(str::to_string),
        );
    }
    if let Ok(o) = ec2.describe_network_interfaces().filters(filter()).send().await {
        found.extend(o.network_interfaces().iter().filter_map(|n| n.network_interface_id()).map(str::to_string));
    }
    if found.is_empty() {
        format!("{vpc_id} has dependencies that were not listed (internet gateway, endpoints or peering?)")
    } else {
        format!("{vpc_id} still contains {}", found.join(", "))
    }
}
