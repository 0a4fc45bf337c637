//! Exactly these rules on a group, in the directions a node manages: a service group's egress (its peers, and the
//! way out its egress mode gives), or the endpoint group's ingress (HTTPS from the service groups) and egress (none).
//! Applying adds what is missing first, then revokes the rest: AWS's default allow-all egress among them.

use std::collections::BTreeSet;

use anyhow::Result;
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, PrefixListId, ResourceType, SecurityGroupRule, UserIdGroupPair,
};

use super::{Created, Ctx, Deleted, api_error, ec2_tags, error_code};
use crate::model::{Peer, Permission};

/// A rule as compared: protocol, port range and peer (a group, prefix list or CIDR id).
pub type RuleKey = (String, i32, i32, String);

pub fn rule_key(rule: &SecurityGroupRule) -> RuleKey {
    let peer = rule
        .referenced_group_info()
        .and_then(|g| g.group_id())
        .or(rule.prefix_list_id())
        .or(rule.cidr_ipv4())
        .or(rule.cidr_ipv6())
        .unwrap_or("?");
    (
        rule.ip_protocol().unwrap_or("-1").to_string(),
        rule.from_port().unwrap_or(-1),
        rule.to_port().unwrap_or(-1),
        peer.to_string(),
    )
}

/// The desired rules with their peers resolved to AWS ids, through `id_of` (the state's records).
pub fn desired_keys(permissions: &[Permission], id_of: impl Fn(&str) -> Option<String>) -> Option<BTreeSet<RuleKey>> {
    permissions
        .iter()
        .map(|p| {
            let peer = match &p.peer {
                Peer::Group(node) | Peer::PrefixList(node) => id_of(node)?,
                Peer::Cidr(c) => c.clone(),
            };
            Some(("tcp".to_string(), i32::from(p.port), i32::from(p.port), peer))
        })
        .collect()
}

pub async fn apply(
    ctx: &Ctx,
    node: &str,
    group: &str,
    ingress: Option<&[Permission]>,
    egress: Option<&[Permission]>,
) -> Result<Created> {
    let group_id = ctx.id_of(group)?;
    // A group this run created holds only what AWS gives every new group, allow-all egress: nothing to read, and
    // that rule is revoked by its permission (one round trip less on the deploy's chain, one call less per group).
    let fresh = ctx.created.lock().expect("created lock").contains(group);
    let live = if fresh { Vec::new() } else { read(ctx, &group_id).await? };
    let id_of = |n: &str| ctx.id_of(n).ok();
    // Both directions, and in each the grants and the revocations, are independent: all at once.
    tokio::try_join!(
        converge_direction(ctx, node, &group_id, fresh, &live, false, ingress, id_of),
        converge_direction(ctx, node, &group_id, fresh, &live, true, egress, id_of),
    )?;
    Ok(Created { id: group_id, arn: None })
}

/// Grants the missing permissions of one direction and revokes its extra rules (and, on a fresh group, AWS's
/// default allow-all egress) concurrently.
#[allow(clippy::too_many_arguments)]
async fn converge_direction(
    ctx: &Ctx,
    node: &str,
    group_id: &str,
    fresh: bool,
    live: &[SecurityGroupRule],
    is_egress: bool,
    wanted: Option<&[Permission]>,
    id_of: impl Fn(&str) -> Option<String> + Copy,
) -> Result<()> {
    {
        let Some(wanted) = wanted else { return Ok(()) };
        let desired = desired_keys(wanted, id_of)
            .ok_or_else(|| anyhow::anyhow!("internal error: a peer of {node} is not recorded"))?;
        let current: Vec<&SecurityGroupRule> =
            live.iter().filter(|r| r.is_egress().unwrap_or(false) == is_egress).collect();
        let have: BTreeSet<RuleKey> = current.iter().map(|r| rule_key(r)).collect();
        // Each permission on its own: the keys of several come back as a set, in another order.
        let missing: Vec<&Permission> = wanted
            .iter()
            .filter(|p| {
                desired_keys(std::slice::from_ref(*p), id_of).is_none_or(|k| !k.iter().all(|k| have.contains(k)))
            })
            .collect();
        let extra: Vec<String> = current
            .iter()
            .filter(|r| !desired.contains(&rule_key(r)))
            .filter_map(|r| r.security_group_rule_id().map(str::to_string))
            .collect();
        let grant = async {
            if missing.is_empty() { Ok(()) } else { authorize(ctx, node, group_id, is_egress, &missing).await }
        };
        let take_back = async {
            revoke(ctx, group_id, is_egress, extra).await?;
            if fresh && is_egress {
                revoke_default_egress(ctx, group_id).await?;
            }
            Ok::<_, anyhow::Error>(())
        };
        tokio::try_join!(grant, take_back)?;
        Ok(())
    }
}

/// Revokes every rule in the directions the node manages (before its groups are deleted: a rule naming another
/// group blocks that group's deletion).
pub async fn delete(ctx: &Ctx, group_id: &str, ingress: bool, egress: bool) -> Result<Deleted> {
    let live = match read(ctx, group_id).await {
        Ok(rules) => rules,
        Err(e) if error_code(&e) == Some("InvalidGroup.NotFound") => return Ok(Deleted::AlreadyGone),
        Err(e) => return Err(e),
    };
    for is_egress in [false, true] {
        if (is_egress && !egress) || (!is_egress && !ingress) {
            continue;
        }
        let ids: Vec<String> = live
            .iter()
            .filter(|r| r.is_egress().unwrap_or(false) == is_egress)
            .filter_map(|r| r.security_group_rule_id().map(str::to_string))
            .collect();
        revoke(ctx, group_id, is_egress, ids).await?;
    }
    Ok(Deleted::Now)
}

/// Revokes this group's rules that name any of `groups` (groups about to be deleted: AWS refuses while a rule of
/// another group names them).
pub async fn revoke_naming(ctx: &Ctx, group_id: &str, groups: &[String]) -> Result<()> {
    let live = read(ctx, group_id).await?;
    for is_egress in [false, true] {
        let ids: Vec<String> = live
            .iter()
            .filter(|r| r.is_egress().unwrap_or(false) == is_egress)
            .filter(|r| {
                r.referenced_group_info().and_then(|g| g.group_id()).is_some_and(|g| groups.iter().any(|x| x == g))
            })
            .filter_map(|r| r.security_group_rule_id().map(str::to_string))
            .collect();
        revoke(ctx, group_id, is_egress, ids).await?;
    }
    Ok(())
}

async fn read(ctx: &Ctx, group_id: &str) -> Result<Vec<SecurityGroupRule>> {
    let out = ctx
        .clients
        .ec2
        .describe_security_group_rules()
        .filters(Filter::builder().name("group-id").values(group_id).build())
        .send()
        .await
        .map_err(|e| api_error(format!("read the rules of {group_id}"), e))?;
    // moto ignores the filter for some fields: keep only this group's rules.
    Ok(out.security_group_rules().iter().filter(|r| r.group_id() == Some(group_id)).cloned().collect())
}

async fn authorize(ctx: &Ctx, node: &str, group_id: &str, egress: bool, permissions: &[&Permission]) -> Result<()> {
    let mut ip_permissions = Vec::new();
    for p in permissions {
        let base = IpPermission::builder().ip_protocol("tcp").from_port(i32::from(p.port)).to_port(i32::from(p.port));
        let with_peer = match &p.peer {
            Peer::Group(n) => base.user_id_group_pairs(UserIdGroupPair::builder().group_id(ctx.id_of(n)?).build()),
            Peer::PrefixList(n) => base.prefix_list_ids(PrefixListId::builder().prefix_list_id(ctx.id_of(n)?).build()),
            Peer::Cidr(c) => base.ip_ranges(IpRange::builder().cidr_ip(c).build()),
        };
        ip_permissions.push(with_peer.build());
    }
    let tags = ec2_tags(ctx, ResourceType::SecurityGroupRule, node, node);
    let direction = if egress { "egress" } else { "ingress" };
    let result = if egress {
        ctx.clients
            .ec2
            .authorize_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(Some(ip_permissions))
            .tag_specifications(tags)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error(format!("allow {direction} on {group_id} for {node}"), e))
    } else {
        ctx.clients
            .ec2
            .authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(ip_permissions))
            .tag_specifications(tags)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error(format!("allow {direction} on {group_id} for {node}"), e))
    };
    match result {
        // A retried call whose first answer was lost: the rules are there.
        Err(e) if error_code(&e) == Some("InvalidPermission.Duplicate") => Ok(()),
        other => other,
    }
}

/// The allow-all egress rule AWS puts in every new group (IPv4 only: the stack's VPC has no IPv6 block).
async fn revoke_default_egress(ctx: &Ctx, group_id: &str) -> Result<()> {
    let all = IpPermission::builder().ip_protocol("-1").ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build());
    let result =
        ctx.clients.ec2.revoke_security_group_egress().group_id(group_id).ip_permissions(all.build()).send().await;
    match result.map_err(|e| api_error(format!("revoke the default allow-all egress of {group_id}"), e)) {
        Err(e) if error_code(&e) == Some("InvalidPermission.NotFound") => Ok(()),
        other => other.map(|_| ()),
    }
}

async fn revoke(ctx: &Ctx, group_id: &str, egress: bool, rule_ids: Vec<String>) -> Result<()> {
    if rule_ids.is_empty() {
        return Ok(());
    }
    let result = if egress {
        ctx.clients
            .ec2
            .revoke_security_group_egress()
            .group_id(group_id)
            .set_security_group_rule_ids(Some(rule_ids))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error(format!("revoke egress rules of {group_id}"), e))
    } else {
        ctx.clients
            .ec2
            .revoke_security_group_ingress()
            .group_id(group_id)
            .set_security_group_rule_ids(Some(rule_ids))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error(format!("revoke ingress rules of {group_id}"), e))
    };
    match result {
        Err(e) if matches!(error_code(&e), Some("InvalidPermission.NotFound" | "InvalidGroup.NotFound")) => Ok(()),
        other => other,
    }
}
