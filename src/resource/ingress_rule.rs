//! One ingress rule per declared call (`sg-rule/<caller>-><callee>`): the callee's group admits TCP on the callee's
//! port from the caller's group, and from nothing else. Rules reference groups, never CIDRs, so there is no
//! 0.0.0.0/0 by construction. A rule is ours when its group is: rules are revoked with their group's authority.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::Result;
use aws_sdk_ec2::types::{Filter, IpPermission, ResourceType, SecurityGroupRule, UserIdGroupPair};
use serde::Serialize;

use super::read::{Source, ec2_lineage, ec2_node, ec2_tag};
use super::support::ec2_tags;
use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, LiveRule, OnChange, OrGone, Owner, ReadCx, Resource, Salt,
    TAG_STACK, View, api_error, is,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub caller: String,
    pub callee: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The group the rule is on (the callee's).
    pub group_id: String,
    /// `tcp`, `udp`, `icmp` or `-1` (all).
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// On another group than the callee's.
    Group { live: String, want: String },
    /// Admits another source than the caller's group.
    Source { live: String, want: String },
    /// Another protocol or port than TCP on the callee's port.
    Port { live: String, want: u16 },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Group { live, want } => write!(f, "is on {live}, not {want}"),
            Change::Source { live, want } => write!(f, "admits {live}, not {want}"),
            Change::Port { live, want } => write!(f, "allows {live}, not tcp/{want}"),
        }
    }
}

/// A rule is changed by authorizing the new one, then revoking the old one: never a replacement of what depends
/// on it.
impl super::Change for Change {}

pub struct IngressRule;

impl Resource for IngressRule {
    const PART_OF_PARENT: bool = true;
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "ingress rule";
    const ON_CHANGE: OnChange = OnChange::InPlace;
    /// It names the caller's and the callee's groups by id.
    const FOLLOWS_DEPENDENCIES: bool = true;

    /// The ingress rules of the stack's groups (the rule read the group kinds share): the recorded ones, and the
    /// ones between two of the stack's service groups, named by the pair. In `up`, `plan` and `status` only one per
    /// unrecorded node (the one on the declared port first); the others are the reachability audit's (which `up`
    /// revokes). In teardown every rule between the stack's groups, and the recorded rules wherever they are.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let all = cx.group_rules().await?;
        let groups = cx.groups().await?;
        let recorded: BTreeMap<&str, &NodeId> =
            cx.recorded(Kind::IngressRule).map(|(n, r)| (r.id.as_str(), n)).collect();
        let mut rules: Vec<SecurityGroupRule> =
            all.iter().filter(|r| !r.is_egress().unwrap_or(false)).cloned().collect();
        // A rule is made by whoever made its group.
        let of = |g: &aws_sdk_ec2::types::SecurityGroup| (cx.owner(ec2_tag(g.tags(), TAG_STACK)), ec2_lineage(g.tags()));
        let mut owners: BTreeMap<String, (Owner, Option<String>)> =
            groups.iter().filter_map(|g| Some((g.group_id()?.to_string(), of(g)))).collect();
        if cx.teardown() {
            let seen: BTreeSet<&str> = all.iter().filter_map(|r| r.security_group_rule_id()).collect();
            let missing: Vec<String> =
                recorded.keys().filter(|id| !seen.contains(**id)).map(|id| id.to_string()).collect();
            rules.extend(rules_by_id(cx, missing).await?.into_iter().filter(|r| !r.is_egress().unwrap_or(false)));
            // The groups of recorded rules that are not tagged for the stack: their tags say whose the rules are.
            let unknown: BTreeSet<String> = rules
                .iter()
                .filter(|r| r.security_group_rule_id().is_some_and(|id| recorded.contains_key(id)))
                .filter_map(|r| r.group_id())
                .filter(|g| !owners.contains_key(*g))
                .map(str::to_string)
                .collect();
            for g in super::security_group::by_ids(cx, unknown.into_iter().collect()).await? {
                if let Some(id) = g.group_id() {
                    owners.insert(id.to_string(), of(&g));
                }
            }
        }
        // group id → service, for naming the rules between the stack's own groups. Outside teardown a twin group
        // (tagged as a node recorded with another id) names nothing.
        let service_of: BTreeMap<String, String> = groups
            .iter()
            .filter_map(|g| {
                let id = g.group_id()?;
                // The load balancer's group calls the public services as `lb`.
                let (node, name) = match ec2_node(g.tags())? {
                    NodeId::Group(service) => (NodeId::group(&service), service),
                    NodeId::LbGroup => (NodeId::LbGroup, crate::config::public::LB_CALLER.to_string()),
                    _ => return None,
                };
                let twin = cx.record(&node).is_some_and(|r| r.id != id);
                (cx.teardown() || !twin).then(|| (id.to_string(), name))
            })
            .collect();
        // The rule on the declared port first: it is the one an unrecorded node is given.
        let declared: BTreeMap<&NodeId, u16> = cx
            .desired(Kind::IngressRule)
            .filter_map(|n| match &n.spec {
                super::Spec::IngressRule(s) => Some((&n.id, s.port)),
                _ => None,
            })
            .collect();
        let on_declared_port = |r: &SecurityGroupRule| {
            pair(r, &service_of).is_some_and(|node| {
                declared.get(&node).is_some_and(|port| {
                    r.ip_protocol() == Some("tcp")
                        && r.from_port() == Some(i32::from(*port))
                        && r.to_port() == Some(i32::from(*port))
                })
            })
        };
        rules.sort_by_key(|r| !on_declared_port(r));
        let mut taken = BTreeSet::new();
        let mut found = Vec::new();
        for r in &rules {
            let Some(rule) = LiveRule::of(r) else { continue };
            // Outside teardown only the rules of the stack's tagged groups (as the groups themselves are read).
            let Some((owner, lineage)) = owners.get(&rule.group_id) else { continue };
            let node = match (recorded.get(rule.rule_id.as_str()), pair(r, &service_of)) {
                (Some(recorded), _) => Some((*recorded).clone()),
                (None, Some(node)) if cx.teardown() => Some(node),
                (None, Some(node)) if cx.record(&node).is_none() && taken.insert(node.clone()) => Some(node),
                // Not a node: the reachability audit reports it.
                _ => continue,
            };
            found.push(Found {
                node,
                id: rule.rule_id,
                arn: r.security_group_rule_arn().map(str::to_string),
                owner: owner.clone(),
                lineage: lineage.clone(),
                facts: Facts {
                    group_id: rule.group_id,
                    protocol: rule.protocol,
                    from_port: rule.from_port,
                    to_port: rule.to_port,
                    source: rule.source,
                },
            });
        }
        Ok(found)
    }

    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(want) = cx.id(&NodeId::group(&spec.callee))
            && want != facts.group_id
        {
            changes.push(Change::Group { live: facts.group_id.clone(), want });
        }
        if let Some(want) = cx.id(&NodeId::caller_group(&spec.caller))
            && facts.source != Source::Group(want.clone())
        {
            changes.push(Change::Source { live: source_text(&facts.source), want });
        }
        let port = i32::from(spec.port);
        if facts.protocol != "tcp" || facts.from_port != port || facts.to_port != port {
            changes.push(Change::Port { live: ports_text(facts), want: spec.port });
        }
        changes
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        authorize(ctx, &node.id, spec).await
    }

    /// A rule cannot be edited by secep: the rule as declared is authorized first (the path stays open); the old one
    /// is revoked by `up` once the rollouts it started have completed, since the running tasks use it until then.
    /// The rule's id moves to the new one.
    async fn update(
        ctx: &Ctx,
        node: &Node,
        spec: &Spec,
        live: &View<'_, Facts>,
        _changes: &[Change],
    ) -> Result<Option<Created>> {
        let (created, _) = authorize(ctx, &node.id, spec).await?;
        if created.id != live.id {
            let replaced = (live.facts.group_id.clone(), live.id.to_string(), false);
            ctx.replaced_rules.lock().expect("replaced rules lock").push(replaced);
        }
        Ok(Some(created))
    }

    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        revoke(ctx, &live.facts.group_id, live.id).await
    }
}

/// The node a rule between two of the stack's service groups is: `sg-rule/<caller>-><callee>`.
fn pair(r: &SecurityGroupRule, service_of: &BTreeMap<String, String>) -> Option<NodeId> {
    // Rules on the load balancer's own group are its rule set's (`lb-rules`), never a call.
    let callee = service_of.get(r.group_id()?).filter(|c| *c != crate::config::public::LB_CALLER)?;
    let caller = service_of.get(r.referenced_group_info()?.group_id()?)?;
    Some(NodeId::rule(caller, callee))
}

/// Authorizes the rule as declared; a rule that is there already (a retried call whose first answer was lost, a run
/// killed before it recorded the rule) is found instead. Returns it with its facts as made.
async fn authorize(ctx: &Ctx, node: &NodeId, spec: &Spec) -> Result<(Created, Facts)> {
    let (caller, callee, port) = (&spec.caller, &spec.callee, spec.port);
    let caller_group = ctx.id_of(&NodeId::caller_group(caller))?;
    let callee_group = ctx.id_of(&NodeId::group(callee))?;
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
        .map_err(|e| api_error(format!("allow {caller} -> {callee} on tcp/{port}"), e));
    let created = match out {
        Ok(out) => Created::from_answer(
            "AuthorizeSecurityGroupIngress",
            out.security_group_rules().first().and_then(|r| r.security_group_rule_id()),
            None,
        )?,
        Err(e) if is(&e, ErrorKind::AlreadyExists) => match existing(ctx, &callee_group, &caller_group, port).await? {
            Some(id) => Created::named(id, None),
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let facts = Facts {
        group_id: callee_group,
        protocol: "tcp".into(),
        from_port: i32::from(port),
        to_port: i32::from(port),
        source: Source::Group(caller_group),
    };
    Ok((created, facts))
}

/// The id of the live rule on `group` admitting TCP on `port` from `caller`.
async fn existing(ctx: &Ctx, group: &str, caller: &str, port: u16) -> Result<Option<String>> {
    let out = ctx
        .clients
        .ec2
        .describe_security_group_rules()
        .filters(Filter::builder().name("group-id").values(group).build())
        .send()
        .await
        .map_err(|e| api_error(format!("read the rules of {group}"), e))?;
    let port = Some(i32::from(port));
    // moto ignores the filter for some fields: the group is checked here too.
    Ok(out
        .security_group_rules()
        .iter()
        .find(|r| {
            r.group_id() == Some(group)
                && !r.is_egress().unwrap_or(false)
                && r.ip_protocol() == Some("tcp")
                && r.from_port() == port
                && r.to_port() == port
                && r.referenced_group_info().and_then(|g| g.group_id()) == Some(caller)
        })
        .and_then(|r| r.security_group_rule_id())
        .map(str::to_string))
}

/// Revokes one ingress rule of a group: a declared one, or one nobody declared (drift: a hand-added 0.0.0.0/0, a
/// path between services that do not call).
pub async fn revoke(ctx: &Ctx, group_id: &str, rule_id: &str) -> Result<Deleted> {
    let out = ctx
        .clients
        .ec2
        .revoke_security_group_ingress()
        .group_id(group_id)
        .security_group_rule_ids(rule_id)
        .send()
        .await
        .map_err(|e| api_error(format!("revoke rule {rule_id} of {group_id}"), e))
        .or_gone()?;
    Ok(if out.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
}

/// Recorded rules by id, whoever's group they are on (in teardown, those the stack's rule read did not see).
async fn rules_by_id(cx: &ReadCx<'_>, ids: Vec<String>) -> Result<Vec<SecurityGroupRule>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // A filter, not SecurityGroupRuleIds: an id that no longer exists is simply not listed (the ids fail the call).
    let out = cx
        .clients
        .ec2
        .describe_security_group_rules()
        .filters(Filter::builder().name("security-group-rule-id").set_values(Some(ids.clone())).build())
        .send()
        .await
        .map_err(|e| api_error("read the recorded ingress rules", e))?;
    let asked = |r: &&SecurityGroupRule| r.security_group_rule_id().is_some_and(|id| ids.iter().any(|i| i == id));
    Ok(out.security_group_rules().iter().filter(asked).cloned().collect())
}

fn source_text(source: &Source) -> String {
    match source {
        Source::Group(g) => g.clone(),
        Source::Cidr(c) => c.clone(),
        Source::PrefixList(p) => p.clone(),
    }
}

fn ports_text(facts: &Facts) -> String {
    match (facts.protocol.as_str(), facts.from_port, facts.to_port) {
        ("-1", _, _) => "all traffic".into(),
        (p, from, to) if from == to => format!("{p}/{from}"),
        (p, from, to) => format!("{p}/{from}-{to}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Record;

    fn spec() -> Spec {
        Spec { caller: "web".into(), callee: "api".into(), port: 8080 }
    }

    fn facts() -> Facts {
        Facts {
            group_id: "sg-api".into(),
            protocol: "tcp".into(),
            from_port: 8080,
            to_port: 8080,
            source: Source::Group("sg-web".into()),
        }
    }

    fn refs(pairs: &[(NodeId, &str)]) -> BTreeMap<NodeId, Record> {
        pairs.iter().map(|(n, id)| (n.clone(), Record { id: id.to_string(), arn: None, digest: "d".into() })).collect()
    }

    fn compare_with(facts: &Facts, refs: &BTreeMap<NodeId, Record>) -> Vec<Change> {
        let node = Node {
            id: NodeId::rule("web", "api"),
            spec: super::super::Spec::IngressRule(spec()),
            deps: vec![NodeId::group("web"), NodeId::group("api")],
        };
        IngressRule::compare(&spec(), facts, &Compare { node: &node, refs, config_changed: false })
    }

    fn compare(facts: &Facts) -> Vec<Change> {
        compare_with(facts, &refs(&[(NodeId::group("web"), "sg-web"), (NodeId::group("api"), "sg-api")]))
    }

    #[test]
    fn the_declared_rule_is_in_sync() {
        assert_eq!(compare(&facts()), []);
    }

    #[test]
    fn another_port_protocol_source_or_group_is_detected() {
        let moved = compare(&Facts { from_port: 9090, to_port: 9090, ..facts() });
        assert_eq!(moved, [Change::Port { live: "tcp/9090".into(), want: 8080 }]);
        assert_eq!(moved[0].to_string(), "allows tcp/9090, not tcp/8080");
        let udp = compare(&Facts { protocol: "udp".into(), ..facts() });
        assert_eq!(udp[0].to_string(), "allows udp/8080, not tcp/8080");
        let all = compare(&Facts { protocol: "-1".into(), from_port: -1, to_port: -1, ..facts() });
        assert_eq!(all[0].to_string(), "allows all traffic, not tcp/8080");
        let range = compare(&Facts { from_port: 0, to_port: 65535, ..facts() });
        assert_eq!(range[0].to_string(), "allows tcp/0-65535, not tcp/8080");
        let open = compare(&Facts { source: Source::Cidr("0.0.0.0/0".into()), ..facts() });
        assert_eq!(open, [Change::Source { live: "0.0.0.0/0".into(), want: "sg-web".into() }]);
        assert_eq!(open[0].to_string(), "admits 0.0.0.0/0, not sg-web");
        let elsewhere = compare(&Facts { group_id: "sg-old".into(), ..facts() });
        assert_eq!(elsewhere, [Change::Group { live: "sg-old".into(), want: "sg-api".into() }]);
        assert_eq!(elsewhere[0].to_string(), "is on sg-old, not sg-api");
        assert!(moved.iter().chain(&open).chain(&elsewhere).all(|c| !super::super::Change::replaces(c)));
    }

    #[test]
    fn a_recreated_caller_group_is_detected() {
        let changes =
            compare_with(&facts(), &refs(&[(NodeId::group("web"), "sg-web2"), (NodeId::group("api"), "sg-api")]));
        assert_eq!(changes, [Change::Source { live: "sg-web".into(), want: "sg-web2".into() }]);
    }

    #[test]
    fn unrecorded_groups_are_not_compared() {
        assert_eq!(compare_with(&facts(), &BTreeMap::new()), []);
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let json = serde_json::to_string(&super::super::Spec::IngressRule(spec())).unwrap();
        assert_eq!(json, r#"{"kind":"ingress-rule","caller":"web","callee":"api","port":8080}"#);
    }
}
