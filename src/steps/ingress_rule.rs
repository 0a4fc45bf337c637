//! One ingress rule per declared call: the callee's group admits TCP on the callee's port from the caller's group,
//! and from nothing else. Rules reference groups, never CIDRs, so there is no 0.0.0.0/0 by construction.

use anyhow::{Context, Result};
use aws_sdk_ec2::types::{IpPermission, ResourceType, UserIdGroupPair};

use super::{Created, Ctx, Deleted, Owner, api_error, ec2_tags, error_code};

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
    let id = out
        .security_group_rules()
        .first()
        .and_then(|r| r.security_group_rule_id())
        .with_context(|| format!("EC2 returned no rule id for {caller} -> {callee}"))?;
    Ok(Created { id: id.to_string(), arn: None })
}

/// The group a recorded rule (`sgr-…`) belongs to, or None when the rule is gone.
async fn locate(ctx: &Ctx, rule_id: &str) -> Result<Option<(String, aws_sdk_ec2::types::SecurityGroupRule)>> {
    let out = ctx
        .clients
        .ec2
        .describe_security_group_rules()
        .security_group_rule_ids(rule_id)
        .send()
        .await
        .map_err(|e| api_error(format!("read security group rule {rule_id}"), e));
    match out {
        Ok(o) => {
            Ok(o.security_group_rules().first().map(|r| (r.group_id().unwrap_or_default().to_string(), r.clone())))
        }
        Err(e) if error_code(&e).is_some_and(|c| c.ends_with(".NotFound")) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A rule is ours when its group is: rules are revoked with their group's authority.
pub async fn owner(ctx: &Ctx, node: &str, rule_id: &str) -> Result<Owner> {
    let Some((group_id, _)) = locate(ctx, rule_id).await? else { return Ok(Owner::Gone) };
    super::vpc::owner(ctx, "sg", &group_id).await.map_err(|e| e.context(format!("read the group of {node}")))
}

pub async fn delete(ctx: &Ctx, rule_id: &str) -> Result<Deleted> {
    let Some((group_id, _)) = locate(ctx, rule_id).await? else { return Ok(Deleted::AlreadyGone) };
    let out = ctx
        .clients
        .ec2
        .revoke_security_group_ingress()
        .group_id(&group_id)
        .security_group_rule_ids(rule_id)
        .send()
        .await
        .map_err(|e| api_error(format!("revoke rule {rule_id} of {group_id}"), e));
    match out {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e).is_some_and(|c| c.ends_with(".NotFound")) => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}

/// Revokes a live rule nobody declared (drift: a hand-added 0.0.0.0/0, a path between services that do not call).
pub async fn revoke(ctx: &Ctx, group_id: &str, rule_id: &str) -> Result<Deleted> {
    let out = ctx
        .clients
        .ec2
        .revoke_security_group_ingress()
        .group_id(group_id)
        .security_group_rule_ids(rule_id)
        .send()
        .await
        .map_err(|e| api_error(format!("revoke undeclared rule {rule_id} of {group_id}"), e));
    match out {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e).is_some_and(|c| c.ends_with(".NotFound")) => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}
