//! A security group in the stack's VPC: one per service (`sg/<service>`), and the VPC endpoints' (`vpce-sg`). It
//! starts with no ingress at all; its rules are other nodes (ingress_rule.rs, group_rules.rs).

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{Result, bail};
use aws_sdk_ec2::types::{Filter, ResourceType, SecurityGroup as Ec2Group};
use serde::Serialize;

use super::read::{ec2_node, ec2_lineage, ec2_tag};
use super::support::{blocking_enis, ec2_tags, retry_while};
use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt, TAG_STACK,
    View, api_error, is,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// The service the group is for; empty for the endpoints' group.
    pub service: String,
    pub group_name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub name: String,
    pub vpc_id: String,
}

#[cfg(test)]
impl Facts {
    /// A live group of the service, for other modules' tests.
    pub fn for_test(service: &str) -> Facts {
        Facts { name: service.to_string(), vpc_id: "vpc-test".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A group's name is fixed at creation.
    Name { live: String, want: String },
    /// In another VPC than the stack's (a group is never moved).
    Vpc { live: String, want: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Name { live, want } => write!(f, "is named {live}, not {want}"),
            Change::Vpc { live, want } => write!(f, "is in {live}, not {want}"),
        }
    }
}

impl super::Change for Change {
    fn replaces(&self) -> bool {
        true
    }
}

pub struct SecurityGroup;

impl Resource for SecurityGroup {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "security group";
    const ON_CHANGE: OnChange = OnChange::Replace;

    /// The stack's groups by tag (the describe the rule kinds share); in teardown also the recorded ones the tag
    /// read did not find.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let groups = cx.groups().await?;
        let mut found: Vec<Found<Facts>> = groups.iter().filter_map(|g| of(cx, g)).collect();
        if cx.teardown() {
            let seen: BTreeSet<&str> = groups.iter().filter_map(|g| g.group_id()).collect();
            let missing: Vec<String> = cx
                .recorded(Kind::SecurityGroup)
                .map(|(_, r)| r.id.clone())
                .filter(|id| !seen.contains(id.as_str()))
                .collect();
            found.extend(by_ids(cx, missing).await?.iter().filter_map(|g| of(cx, g)));
        }
        Ok(found)
    }

    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if facts.name != spec.group_name {
            changes.push(Change::Name { live: facts.name.clone(), want: spec.group_name.clone() });
        }
        if let Some(vpc) = cx.id(&NodeId::Vpc)
            && vpc != facts.vpc_id
        {
            changes.push(Change::Vpc { live: facts.vpc_id.clone(), want: vpc });
        }
        changes
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let vpc_id = ctx.id_of(&NodeId::Vpc)?;
        let out = ctx
            .clients
            .ec2
            .create_security_group()
            .group_name(&spec.group_name)
            .description(&spec.description)
            .vpc_id(&vpc_id)
            .tag_specifications(ec2_tags(ctx, ResourceType::SecurityGroup, &node.id, &spec.group_name))
            .send()
            .await
            .map_err(|e| api_error(format!("create security group {} in {vpc_id}", spec.group_name), e));
        match out {
            Ok(out) => {
                let created = Created::from_answer("CreateSecurityGroup", out.group_id(), out.security_group_arn())?;
                Ok((created, Facts { name: spec.group_name.clone(), vpc_id }))
            }
            // Names are unique per VPC: a retried call whose first answer was lost, or a run killed before it
            // recorded the group, left it; it is taken over only if it carries this stack's tag.
            Err(e) if is(&e, ErrorKind::AlreadyExists) => existing(ctx, &vpc_id, &spec.group_name).await?.ok_or(e),
            Err(e) => Err(e),
        }
    }

    async fn update(
        _ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        match changes.first() {
            Some(change) => bail!("internal error: {} ({change}) cannot be changed in place", live.node),
            None => Ok(None),
        }
    }

    /// Deleting a group fails with DependencyViolation while an ENI or another group's rule still uses it. secep
    /// revokes its own rules first (they are separate nodes, torn down before any group); lingering ENIs are waited
    /// out, bounded.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let group_id = live.id;
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
        let deleted = retry_while(ctx, &[ErrorKind::DependencyViolation], attempt, blocked).await.or_gone()?;
        Ok(if deleted.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
    }

    fn replace_reason(spec: &Spec) -> String {
        format!("security group {}: replacing it cuts the service off until its rules are recreated", spec.group_name)
    }
}

fn of(cx: &ReadCx<'_>, g: &Ec2Group) -> Option<Found<Facts>> {
    Some(Found {
        node: ec2_node(g.tags()),
        id: g.group_id()?.to_string(),
        arn: g.security_group_arn().map(str::to_string),
        owner: cx.owner(ec2_tag(g.tags(), TAG_STACK)),
        lineage: ec2_lineage(g.tags()),
        facts: facts_of(g),
    })
}

fn facts_of(g: &Ec2Group) -> Facts {
    Facts { name: g.group_name().unwrap_or_default().to_string(), vpc_id: g.vpc_id().unwrap_or_default().to_string() }
}

/// Groups by id, whoever's they are (the recorded ones the tag read did not find, in teardown): one call.
pub(super) async fn by_ids(cx: &ReadCx<'_>, ids: Vec<String>) -> Result<Vec<Ec2Group>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // A filter, not GroupIds: an id that no longer exists is simply not listed (GroupIds fails the whole call).
    let out = cx
        .clients
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-id").set_values(Some(ids.clone())).build())
        .send()
        .await
        .map_err(|e| api_error("read the recorded security groups", e))?;
    // moto ignores some filters: only the groups asked for.
    Ok(out
        .security_groups()
        .iter()
        .filter(|g| g.group_id().is_some_and(|id| ids.iter().any(|i| i == id)))
        .cloned()
        .collect())
}

/// The group of this name in the VPC, if it carries this stack's tag; an error naming its owner if it does not.
async fn existing(ctx: &Ctx, vpc_id: &str, name: &str) -> Result<Option<(Created, Facts)>> {
    let out = ctx
        .clients
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .filters(Filter::builder().name("group-name").values(name).build())
        .send()
        .await
        .map_err(|e| api_error(format!("read security group {name} in {vpc_id}"), e))?;
    // moto ignores some filters: the name and VPC are checked here too.
    let Some(group) = out.security_groups().iter().find(|g| g.group_name() == Some(name) && g.vpc_id() == Some(vpc_id))
    else {
        return Ok(None);
    };
    let owner = Owner::from_tag(&ctx.stack, ec2_tag(group.tags(), TAG_STACK));
    if owner != Owner::Us {
        bail!(
            "security group {name} exists in {vpc_id} and is not this stack's ({})\n  hint: delete or rename it, then re-run the command",
            owner.describe()
        );
    }
    let created = Created::from_answer("DescribeSecurityGroups", group.group_id(), group.security_group_arn())?;
    Ok(Some((created, facts_of(group))))
}

/// Other groups whose ingress rules name this one (another team's group admitting ours blocks its deletion).
async fn referencing_groups(ctx: &Ctx, group_id: &str) -> Vec<String> {
    let filter = Filter::builder().name("ip-permission.group-id").values(group_id).build();
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn spec() -> Spec {
        Spec {
            service: "api".into(),
            group_name: "demo-api".into(),
            description: "secep demo: api accepts only its declared callers".into(),
        }
    }

    fn facts() -> Facts {
        Facts { name: "demo-api".into(), vpc_id: "vpc-1".into() }
    }

    fn compare(facts: &Facts, vpc: Option<&str>) -> Vec<Change> {
        let node =
            Node { id: NodeId::group("api"), spec: super::super::Spec::SecurityGroup(spec()), deps: vec![NodeId::Vpc] };
        let mut refs: BTreeMap<NodeId, Record> = BTreeMap::new();
        if let Some(vpc) = vpc {
            refs.insert(NodeId::Vpc, Record { id: vpc.into(), arn: None, digest: "d".into() });
        }
        SecurityGroup::compare(&spec(), facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn a_group_of_the_spec_is_in_sync() {
        assert_eq!(compare(&facts(), Some("vpc-1")), []);
        // The VPC not recorded (yet): nothing to compare it with.
        assert_eq!(compare(&facts(), None), []);
    }

    #[test]
    fn another_name_or_vpc_needs_a_replacement() {
        let renamed = compare(&Facts { name: "other".into(), ..facts() }, Some("vpc-1"));
        assert_eq!(renamed, [Change::Name { live: "other".into(), want: "demo-api".into() }]);
        assert_eq!(renamed[0].to_string(), "is named other, not demo-api");
        let moved = compare(&facts(), Some("vpc-2"));
        assert_eq!(moved, [Change::Vpc { live: "vpc-1".into(), want: "vpc-2".into() }]);
        assert_eq!(moved[0].to_string(), "is in vpc-1, not vpc-2");
        assert!(renamed.iter().chain(&moved).all(super::super::Change::replaces));
        assert_eq!(compare(&Facts { name: "other".into(), vpc_id: "vpc-9".into() }, Some("vpc-1")).len(), 2);
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let json = serde_json::to_string(&super::super::Spec::SecurityGroup(spec())).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"security-group","service":"api","group_name":"demo-api","description":"secep demo: api accepts only its declared callers"}"#
        );
    }
}
