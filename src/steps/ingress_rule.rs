//! One ingress rule per declared call: the callee's group admits TCP on the callee's port from the caller's group,
//! and from nothing else. Rules reference groups, never CIDRs, so there is no 0.0.0.0/0 by construction.

use anyhow::Result;
use aws_sdk_ec2::types::{IpPermission, ResourceType, UserIdGroupPair};

use super::{Created, Ctx, api_error, ec2_tags};

pub async fn create(ctx: &Ctx, node: &str, caller: &str, callee: &str, port: u16) -> Result<Created> {
    let caller_group = ctx.id_of(&format!("sg/{caller}"))?;
    let callee_group = ctx.id_of(&format!("sg/{callee}"))?;
    let permission = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(i32::from(port))
        .to_port(i32::from(port))
        .user_id_group_pairs(
            UserIdGroupPair::builder().group_id(&caller_group).description(format!("{caller} calls {callee}")).build(),
        )
        .build();
    let out = ctx
        .clients
        .ec2
        .authorize_security_group_ingress()
        .group_id(&callee_group)
        .ip_permissions(permission)
        .tag_specifications(ec2_tags(ctx, ResourceType::SecurityGroupRule, node, &format!("{caller}->{callee}")))
        .send()
        .await
        .map_err(|e| api_error(format!("allow {caller} -> {callee} on tcp/{port}"), e))?;
    let rule_id = out.security_group_rules().first().and_then(|r| r.security_group_rule_id()).map(str::to_string);
    // Older EC2 endpoints return no rule id; the group plus the permission identify the rule just as well.
    let id = rule_id.unwrap_or_else(|| format!("{callee_group}:tcp:{port}:{caller_group}"));
    Ok(Created { id, arn: None })
}
