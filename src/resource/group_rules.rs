//! Exactly these rules on a group, in the directions a node manages: a service group's egress (`egress/<service>`:
//! its peers, and the way out its egress mode gives), or the endpoint group's ingress (HTTPS from the service groups)
//! and egress (none) (`vpce-rules`). Applying adds what is missing and revokes the rest: AWS's default allow-all
//! egress among them. The rule set's id is its group's.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::Result;
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, PrefixListId, ResourceType, SecurityGroupRule, UserIdGroupPair,
};
use serde::Serialize;

use super::read::{ec2_lineage, ec2_node, ec2_tag};
use super::support::ec2_tags;
use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt, TAG_STACK,
    View, api_error, is,
};
use crate::model::{HTTPS, Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// The group node (`sg/<service>`, `vpce-sg`).
    pub group: NodeId,
    /// `None` leaves that direction to other nodes.
    pub ingress: Option<Vec<Permission>>,
    pub egress: Option<Vec<Permission>>,
}

/// One allowed flow: TCP on one port to or from a peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Permission {
    pub port: u16,
    pub peer: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// A security group node (`sg/api`, `vpce-sg`).
    Group(NodeId),
    /// A prefix list node (`prefix-list/s3`).
    PrefixList(NodeId),
    Cidr(String),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Group(n) | Peer::PrefixList(n) => write!(f, "{n}"),
            Peer::Cidr(c) => f.write_str(c),
        }
    }
}

/// The group's live rules in the directions the node manages.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub rules: Vec<Rule>,
}

/// One live rule as compared: direction, protocol, port range and peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub egress: bool,
    /// `tcp`, `udp`, `icmp` or `-1` (all).
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    /// The peer's AWS id: a group, a prefix list or a CIDR.
    pub peer: String,
    /// `None` only for a rule this run authorized whose answer did not name it (moto names only the last
    /// permission's rules): one that is wanted, so never revoked by id.
    pub id: Option<String>,
}

impl Rule {
    fn of(r: &SecurityGroupRule) -> Rule {
        let peer = r
            .referenced_group_info()
            .and_then(|g| g.group_id())
            .or(r.prefix_list_id())
            .or(r.cidr_ipv4())
            .or(r.cidr_ipv6())
            .unwrap_or("?");
        Rule {
            egress: r.is_egress().unwrap_or(false),
            protocol: r.ip_protocol().unwrap_or("-1").to_string(),
            from_port: r.from_port().unwrap_or(-1),
            to_port: r.to_port().unwrap_or(-1),
            peer: peer.to_string(),
            id: r.security_group_rule_id().map(str::to_string),
        }
    }

    /// A wanted permission with its peer resolved.
    fn wanted(egress: bool, port: u16, peer: &str) -> Rule {
        let port = i32::from(port);
        Rule { egress, protocol: "tcp".into(), from_port: port, to_port: port, peer: peer.to_string(), id: None }
    }

    fn same(&self, other: &Rule) -> bool {
        (self.egress, &self.protocol, self.from_port, self.to_port, &self.peer)
            == (other.egress, &other.protocol, other.from_port, other.to_port, &other.peer)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (protocol, from, to, peer) = (&self.protocol, self.from_port, self.to_port, &self.peer);
        match protocol.as_str() {
            "-1" => write!(f, "all traffic to/from {peer}"),
            _ if from == to => write!(f, "{protocol}/{from} {peer}"),
            _ => write!(f, "{protocol}/{from}-{to} {peer}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A permission with no live rule. `peer`: the peer's id, `None` while its node is not recorded (not created yet).
    Lacks { egress: bool, permission: Permission, peer: Option<String> },
    /// A live rule no permission asks for.
    Allows { rule: Rule },
}

fn direction(egress: bool) -> &'static str {
    if egress { "egress" } else { "ingress" }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Lacks { egress, permission, peer: Some(peer) } => {
                write!(f, "{} lacks tcp/{} {peer}", direction(*egress), permission.port)
            }
            Change::Lacks { egress, permission, peer: None } => {
                write!(f, "{} lacks tcp/{} {} (not created yet)", direction(*egress), permission.port, permission.peer)
            }
            Change::Allows { rule } => write!(f, "{} also allows {rule}", direction(rule.egress)),
        }
    }
}

impl super::Change for Change {}

pub struct GroupRules;

impl Resource for GroupRules {
    const PART_OF_PARENT: bool = true;
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "group rules";
    const ON_CHANGE: OnChange = OnChange::InPlace;
    /// Its rules name other groups and the prefix list by id.
    const FOLLOWS_DEPENDENCIES: bool = true;

    /// The rule set of each of the stack's groups (from the describes the group kinds share, no call of its own):
    /// the recorded ones, and those of desired nodes not recorded yet (a run killed before it recorded them); in
    /// teardown every tagged group's, and the recorded ones whose group the tag read did not find.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let all = cx.group_rules().await?;
        let groups = cx.groups().await?;
        let mut candidates: Vec<(String, Option<NodeId>, Owner, Option<String>)> = Vec::new();
        for g in groups {
            let Some(id) = g.group_id() else { continue };
            let node = ec2_node(g.tags()).and_then(|n| rule_set_of(&n));
            let recorded = recorded_node(cx, id);
            let wanted = node
                .as_ref()
                .is_some_and(|n| cx.record(n).is_none() && cx.desired(Kind::GroupRules).any(|d| &d.id == n));
            if cx.teardown() || recorded.is_some() || wanted {
                let owner = cx.owner(ec2_tag(g.tags(), TAG_STACK));
                candidates.push((id.to_string(), recorded.or(node), owner, ec2_lineage(g.tags())));
            }
        }
        if cx.teardown() {
            let seen: BTreeSet<&str> = groups.iter().filter_map(|g| g.group_id()).collect();
            let missing: Vec<String> = cx
                .recorded(Kind::GroupRules)
                .map(|(_, r)| r.id.clone())
                .filter(|id| !seen.contains(id.as_str()))
                .collect();
            // Not this stack's (or it would carry the tag): never changed, so the rules the shared read holds do.
            for g in super::security_group::by_ids(cx, missing).await? {
                let Some(id) = g.group_id() else { continue };
                let owner = cx.owner(ec2_tag(g.tags(), TAG_STACK));
                candidates.push((id.to_string(), recorded_node(cx, id), owner, ec2_lineage(g.tags())));
            }
        }
        Ok(candidates
            .into_iter()
            .filter_map(|(id, node, owner, lineage)| {
                let node = node?;
                let (ingress, egress) = managed(&node);
                let rules = all.iter().filter(|r| r.group_id() == Some(id.as_str())).map(Rule::of);
                let facts = facts_of(rules, ingress, egress);
                // A group's rules are made by whoever made the group.
                Some(Found { node: Some(node), id, arn: None, owner, lineage, facts })
            })
            .collect())
    }

    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        for (egress, wanted) in [(false, &spec.ingress), (true, &spec.egress)] {
            let Some(wanted) = wanted else { continue };
            let live: Vec<&Rule> = facts.rules.iter().filter(|r| r.egress == egress).collect();
            // Each permission on its own: the rules of several come back as a set, in another order.
            let mut want = Vec::new();
            for permission in wanted {
                let peer = resolve(&permission.peer, |n| cx.id(n));
                let rule = peer.as_deref().map(|peer| Rule::wanted(egress, permission.port, peer));
                if !rule.as_ref().is_some_and(|rule| live.iter().any(|r| r.same(rule))) {
                    changes.push(Change::Lacks { egress, permission: permission.clone(), peer });
                }
                want.extend(rule);
            }
            for r in live {
                if !want.iter().any(|w| w.same(r)) {
                    changes.push(Change::Allows { rule: r.clone() });
                }
            }
        }
        changes
    }

    /// A group this run created holds only what AWS gives every new group, allow-all egress: nothing to read, and
    /// that rule is revoked by its permission (one round trip less on the deploy's chain, one call less per group).
    /// Any other group's rules are read, and the compare and update that follow complete them.
    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let group_id = ctx.id_of(&spec.group)?;
        let created = Created::named(group_id.clone(), None);
        if ctx.created_this_run(&spec.group) {
            match fresh(ctx, &node.id, spec, &group_id).await {
                Ok(facts) => return Ok((created, facts)),
                // A retried call whose first answer was lost: the rules are there, unnamed; they are read below.
                Err(e) if is(&e, ErrorKind::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        let rules = read_rules(ctx, &group_id).await?;
        Ok((created, facts_of(rules.iter().map(Rule::of), spec.ingress.is_some(), spec.egress.is_some())))
    }

    /// Authorizes what is missing and revokes what is extra, both directions at once. On a group in use the grants
    /// go first, so that no flow that is to stay is cut while its own rule is added; on a group made by this run
    /// (nothing flows through it yet) they go together.
    async fn update(
        ctx: &Ctx,
        node: &Node,
        spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        let together = ctx.created_this_run(&spec.group);
        tokio::try_join!(
            converge_direction(ctx, &node.id, live.id, false, together, changes),
            converge_direction(ctx, &node.id, live.id, true, together, changes),
        )?;
        Ok(None)
    }

    /// Revokes every rule in the directions the node manages (before its groups are deleted: a rule naming another
    /// group blocks that group's deletion).
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let ids = |egress: bool| -> Vec<String> {
            live.facts.rules.iter().filter(|r| r.egress == egress).filter_map(|r| r.id.clone()).collect()
        };
        let (ingress, egress) =
            tokio::try_join!(revoke(ctx, live.id, false, ids(false)), revoke(ctx, live.id, true, ids(true)))?;
        Ok(if ingress == Deleted::AlreadyGone && egress == Deleted::AlreadyGone {
            Deleted::AlreadyGone
        } else {
            Deleted::Now
        })
    }
}

/// The rule set node of a group node.
fn rule_set_of(group: &NodeId) -> Option<NodeId> {
    match group {
        NodeId::Group(service) => Some(NodeId::Egress(service.clone())),
        NodeId::EndpointGroup => Some(NodeId::EndpointRules),
        NodeId::ClientGroup => Some(NodeId::ClientRules),
        NodeId::LbGroup => Some(NodeId::LbRules),
        _ => None,
    }
}

/// The directions (ingress, egress) a rule set node manages: the endpoint and clients groups' both, a service
/// group's egress.
fn managed(node: &NodeId) -> (bool, bool) {
    match node.base() {
        NodeId::EndpointRules | NodeId::ClientRules | NodeId::LbRules => (true, true),
        _ => (false, true),
    }
}

fn recorded_node(cx: &ReadCx<'_>, group_id: &str) -> Option<NodeId> {
    cx.recorded(Kind::GroupRules).find(|(_, r)| r.id == group_id).map(|(n, _)| n.clone())
}

fn facts_of(rules: impl Iterator<Item = Rule>, ingress: bool, egress: bool) -> Facts {
    let mut rules: Vec<Rule> = rules.filter(|r| if r.egress { egress } else { ingress }).collect();
    rules.sort();
    Facts { rules }
}

fn resolve(peer: &Peer, id: impl Fn(&NodeId) -> Option<String>) -> Option<String> {
    match peer {
        Peer::Group(node) | Peer::PrefixList(node) => id(node),
        Peer::Cidr(c) => Some(c.clone()),
    }
}

/// A group made by this run: authorizes every wanted permission and revokes AWS's default egress, all at once.
/// Returns the rules as made.
async fn fresh(ctx: &Ctx, node: &NodeId, spec: &Spec, group_id: &str) -> Result<Facts> {
    let ingress = async {
        match &spec.ingress {
            Some(wanted) => grant(ctx, node, group_id, false, wanted).await,
            None => Ok(Vec::new()),
        }
    };
    let egress = async {
        match &spec.egress {
            Some(wanted) => {
                let (made, ()) =
                    tokio::try_join!(grant(ctx, node, group_id, true, wanted), revoke_default_egress(ctx, group_id))?;
                Ok::<_, anyhow::Error>(made)
            }
            None => Ok(Vec::new()),
        }
    };
    let (ingress, egress) = tokio::try_join!(ingress, egress)?;
    Ok(facts_of(ingress.into_iter().chain(egress), true, true))
}

/// Grants the missing permissions of one direction and revokes its extra rules.
async fn converge_direction(
    ctx: &Ctx,
    node: &NodeId,
    group_id: &str,
    egress: bool,
    together: bool,
    changes: &[Change],
) -> Result<()> {
    let missing: Vec<Permission> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Lacks { egress: e, permission, .. } if *e == egress => Some(permission.clone()),
            _ => None,
        })
        .collect();
    // What the running tasks may still use is revoked once the rollouts have completed: a service's egress to a
    // group or prefix list the config no longer wants (a callee's old port, a dropped call, the endpoints and S3
    // before the clients group carried them) or NAT mode's HTTPS to anywhere (when the clients group takes over),
    // the endpoints' ingress from a service group (before the clients group), and the load balancer's way to a
    // service's old port. Anything else extra (a hand-added CIDR, say) goes now.
    let by_reference = |rule: &Rule| rule.peer.starts_with("sg-") || rule.peer.starts_with("pl-");
    let nat_way_out = |rule: &Rule| rule.peer == "0.0.0.0/0" && rule.from_port == i32::from(HTTPS);
    let used_by_tasks = |rule: &Rule| match node {
        NodeId::Egress(_) => egress && (by_reference(rule) || nat_way_out(rule)),
        NodeId::EndpointRules => !egress && rule.peer.starts_with("sg-"),
        NodeId::LbRules => egress && rule.peer.starts_with("sg-"),
        _ => false,
    };
    let later = |rule: &Rule| !together && used_by_tasks(rule);
    let mut extra: Vec<String> = Vec::new();
    for c in changes {
        if let Change::Allows { rule } = c
            && rule.egress == egress
            && let Some(id) = &rule.id
        {
            if later(rule) {
                ctx.replaced_rules.lock().expect("replaced rules lock").push((group_id.to_string(), id.clone(), egress));
            } else {
                extra.push(id.clone());
            }
        }
    }
    let add = async {
        match grant(ctx, node, group_id, egress, &missing).await {
            // A retried call whose first answer was lost: the rules are there.
            Err(e) if is(&e, ErrorKind::AlreadyExists) => Ok(()),
            other => other.map(|_| ()),
        }
    };
    let take_back = revoke(ctx, group_id, egress, extra);
    if together {
        tokio::try_join!(add, take_back)?;
    } else {
        add.await?;
        take_back.await?;
    }
    Ok(())
}

/// Authorizes permissions of one direction in one call, the rules tagged; returns the rules as made.
async fn grant(
    ctx: &Ctx,
    node: &NodeId,
    group_id: &str,
    egress: bool,
    permissions: &[Permission],
) -> Result<Vec<Rule>> {
    if permissions.is_empty() {
        return Ok(Vec::new());
    }
    let mut ip_permissions = Vec::new();
    let mut wanted = Vec::new();
    for p in permissions {
        let base = IpPermission::builder().ip_protocol("tcp").from_port(i32::from(p.port)).to_port(i32::from(p.port));
        let (with_peer, peer) = match &p.peer {
            Peer::Group(n) => {
                let id = ctx.id_of(n)?;
                (base.user_id_group_pairs(UserIdGroupPair::builder().group_id(&id).build()), id)
            }
            Peer::PrefixList(n) => {
                let id = ctx.id_of(n)?;
                (base.prefix_list_ids(PrefixListId::builder().prefix_list_id(&id).build()), id)
            }
            Peer::Cidr(c) if c.contains(':') => (base.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build()), c.clone()),
            Peer::Cidr(c) => (base.ip_ranges(IpRange::builder().cidr_ip(c).build()), c.clone()),
        };
        ip_permissions.push(with_peer.build());
        wanted.push(Rule::wanted(egress, p.port, &peer));
    }
    let label = node.to_string();
    let tags = ec2_tags(ctx, ResourceType::SecurityGroupRule, node, &label);
    let action = format!("allow {} on {group_id} for {node}", direction(egress));
    let ec2 = &ctx.clients.ec2;
    let answered: Vec<SecurityGroupRule> = if egress {
        let out = ec2
            .authorize_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(Some(ip_permissions))
            .tag_specifications(tags)
            .send()
            .await
            .map_err(|e| api_error(action, e))?;
        out.security_group_rules().to_vec()
    } else {
        let out = ec2
            .authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(ip_permissions))
            .tag_specifications(tags)
            .send()
            .await
            .map_err(|e| api_error(action, e))?;
        out.security_group_rules().to_vec()
    };
    // The call is all or nothing: every wanted rule is there, named by the answer where it says.
    let answered: Vec<Rule> = answered.iter().map(Rule::of).collect();
    Ok(wanted
        .into_iter()
        .map(|w| {
            let id = answered.iter().find(|a| a.same(&w)).and_then(|a| a.id.clone());
            Rule { id, ..w }
        })
        .collect())
}

/// The allow-all egress rule AWS puts in every new group (IPv4 only: the stack's VPC has no IPv6 block).
async fn revoke_default_egress(ctx: &Ctx, group_id: &str) -> Result<()> {
    let all = IpPermission::builder().ip_protocol("-1").ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build());
    let result =
        ctx.clients.ec2.revoke_security_group_egress().group_id(group_id).ip_permissions(all.build()).send().await;
    match result.map_err(|e| api_error(format!("revoke the default allow-all egress of {group_id}"), e)) {
        Ok(_) => Ok(()),
        // The rule is gone already. Only that: a group this run just made can be unknown for a moment
        // (`InvalidGroup.NotFound`), and skipping the revoke then would leave it open to the world on the way out.
        Err(e) if super::error::error_code(&e) == Some("InvalidPermission.NotFound") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Revokes rules of one direction by id, in one call. One rule already gone fails the whole call: then each is
/// revoked on its own, the gone ones skipped.
pub async fn revoke(ctx: &Ctx, group_id: &str, egress: bool, rule_ids: Vec<String>) -> Result<Deleted> {
    if rule_ids.is_empty() {
        return Ok(Deleted::Now);
    }
    if revoke_ids(ctx, group_id, egress, rule_ids.clone()).await.or_gone()?.is_some() {
        return Ok(Deleted::Now);
    }
    if rule_ids.len() == 1 {
        return Ok(Deleted::AlreadyGone);
    }
    let mut any = false;
    for id in rule_ids {
        any |= revoke_ids(ctx, group_id, egress, vec![id]).await.or_gone()?.is_some();
    }
    Ok(if any { Deleted::Now } else { Deleted::AlreadyGone })
}

async fn revoke_ids(ctx: &Ctx, group_id: &str, egress: bool, rule_ids: Vec<String>) -> Result<()> {
    let ec2 = &ctx.clients.ec2;
    let action = || format!("revoke {} rules {} of {group_id}", direction(egress), rule_ids.join(", "));
    if egress {
        ec2.revoke_security_group_egress()
            .group_id(group_id)
            .set_security_group_rule_ids(Some(rule_ids.clone()))
            .send()
            .await
            .map_err(|e| api_error(action(), e))?;
    } else {
        ec2.revoke_security_group_ingress()
            .group_id(group_id)
            .set_security_group_rule_ids(Some(rule_ids.clone()))
            .send()
            .await
            .map_err(|e| api_error(action(), e))?;
    }
    Ok(())
}

/// Every rule of a group (both directions), hand-added ones included.
async fn read_rules(ctx: &Ctx, group_id: &str) -> Result<Vec<SecurityGroupRule>> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn record(id: &str) -> Record {
        Record { id: id.into(), arn: None, digest: "d".into() }
    }

    fn refs() -> BTreeMap<NodeId, Record> {
        BTreeMap::from([
            (NodeId::group("web"), record("sg-web")),
            (NodeId::group("api"), record("sg-api")),
            (NodeId::EndpointGroup, record("sg-vpce")),
            (NodeId::PrefixList("s3".into()), record("pl-s3")),
        ])
    }

    fn egress_spec() -> Spec {
        let mut egress = vec![
            Permission { port: 8080, peer: Peer::Group(NodeId::group("api")) },
            Permission { port: 443, peer: Peer::Group(NodeId::EndpointGroup) },
            Permission { port: 443, peer: Peer::PrefixList(NodeId::PrefixList("s3".into())) },
        ];
        egress.sort();
        Spec { group: NodeId::group("web"), ingress: None, egress: Some(egress) }
    }

    fn endpoint_spec() -> Spec {
        let ingress = vec![
            Permission { port: 443, peer: Peer::Group(NodeId::group("api")) },
            Permission { port: 443, peer: Peer::Group(NodeId::group("web")) },
        ];
        Spec { group: NodeId::EndpointGroup, ingress: Some(ingress), egress: Some(vec![]) }
    }

    fn rule(egress: bool, protocol: &str, from: i32, to: i32, peer: &str, id: &str) -> Rule {
        Rule { egress, protocol: protocol.into(), from_port: from, to_port: to, peer: peer.into(), id: Some(id.into()) }
    }

    fn egress_facts() -> Facts {
        Facts {
            rules: vec![
                rule(true, "tcp", 443, 443, "pl-s3", "sgr-3"),
                rule(true, "tcp", 443, 443, "sg-vpce", "sgr-2"),
                rule(true, "tcp", 8080, 8080, "sg-api", "sgr-1"),
            ],
        }
    }

    fn compare_with(spec: &Spec, facts: &Facts, refs: &BTreeMap<NodeId, Record>) -> Vec<Change> {
        let id = if spec.group == NodeId::EndpointGroup { NodeId::EndpointRules } else { NodeId::Egress("web".into()) };
        let node = Node { id, spec: super::super::Spec::GroupRules(spec.clone()), deps: vec![spec.group.clone()] };
        GroupRules::compare(spec, facts, &Compare { node: &node, refs, config_changed: false })
    }

    fn compare(spec: &Spec, facts: &Facts) -> Vec<Change> {
        compare_with(spec, facts, &refs())
    }

    fn texts(changes: &[Change]) -> Vec<String> {
        changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn exactly_the_wanted_rules_are_in_sync() {
        assert_eq!(compare(&egress_spec(), &egress_facts()), []);
        let endpoint = Facts {
            rules: vec![
                rule(false, "tcp", 443, 443, "sg-api", "sgr-a"),
                rule(false, "tcp", 443, 443, "sg-web", "sgr-w"),
            ],
        };
        assert_eq!(compare(&endpoint_spec(), &endpoint), []);
    }

    #[test]
    fn missing_and_extra_rules_are_named() {
        let mut facts = egress_facts();
        facts.rules.retain(|r| r.peer != "sg-api");
        facts.rules.push(rule(true, "-1", -1, -1, "0.0.0.0/0", "sgr-default"));
        let changes = compare(&egress_spec(), &facts);
        assert_eq!(
            texts(&changes),
            ["egress lacks tcp/8080 sg-api", "egress also allows all traffic to/from 0.0.0.0/0"]
        );
        assert_eq!(
            changes[0],
            Change::Lacks {
                egress: true,
                permission: Permission { port: 8080, peer: Peer::Group(NodeId::group("api")) },
                peer: Some("sg-api".into()),
            }
        );
        assert!(changes.iter().all(|c| !super::super::Change::replaces(c)));
    }

    #[test]
    fn a_rule_on_another_port_is_both_missing_and_extra() {
        let mut facts = egress_facts();
        facts.rules.retain(|r| r.peer != "sg-api");
        facts.rules.push(rule(true, "tcp", 8000, 8100, "sg-api", "sgr-range"));
        assert_eq!(
            texts(&compare(&egress_spec(), &facts)),
            ["egress lacks tcp/8080 sg-api", "egress also allows tcp/8000-8100 sg-api"]
        );
    }

    #[test]
    fn the_endpoint_group_manages_both_directions() {
        // A fresh endpoint group: no ingress yet, AWS's default egress.
        let facts = Facts { rules: vec![rule(true, "-1", -1, -1, "0.0.0.0/0", "sgr-default")] };
        assert_eq!(
            texts(&compare(&endpoint_spec(), &facts)),
            [
                "ingress lacks tcp/443 sg-api",
                "ingress lacks tcp/443 sg-web",
                "egress also allows all traffic to/from 0.0.0.0/0"
            ]
        );
    }

    #[test]
    fn an_unmanaged_direction_is_not_compared() {
        let mut facts = egress_facts();
        facts.rules.push(rule(false, "tcp", 8080, 8080, "sg-other", "sgr-in"));
        assert_eq!(compare(&egress_spec(), &facts), []);
    }

    #[test]
    fn a_peer_not_created_yet_is_missing_by_name() {
        let mut refs = refs();
        refs.remove(&NodeId::group("api"));
        let mut facts = egress_facts();
        facts.rules.retain(|r| r.peer != "sg-api");
        let changes = compare_with(&egress_spec(), &facts, &refs);
        assert_eq!(texts(&changes), ["egress lacks tcp/8080 sg/api (not created yet)"]);
    }

    #[test]
    fn a_recreated_peer_group_is_detected() {
        let mut refs = refs();
        refs.insert(NodeId::group("api"), record("sg-api2"));
        assert_eq!(
            texts(&compare_with(&egress_spec(), &egress_facts(), &refs)),
            ["egress lacks tcp/8080 sg-api2", "egress also allows tcp/8080 sg-api"]
        );
    }

    #[test]
    fn rules_made_without_an_id_in_the_answer_still_count() {
        let mut facts = egress_facts();
        for r in &mut facts.rules {
            r.id = None;
        }
        assert_eq!(compare(&egress_spec(), &facts), []);
    }

    #[test]
    fn nat_egress_to_anywhere_on_https_only() {
        let spec = Spec {
            group: NodeId::group("web"),
            ingress: None,
            egress: Some(vec![Permission { port: 443, peer: Peer::Cidr("0.0.0.0/0".into()) }]),
        };
        let facts = Facts {
            rules: vec![
                rule(true, "tcp", 443, 443, "0.0.0.0/0", "sgr-https"),
                rule(true, "-1", -1, -1, "0.0.0.0/0", "sgr-default"),
            ],
        };
        assert_eq!(texts(&compare(&spec, &facts)), ["egress also allows all traffic to/from 0.0.0.0/0"]);
    }

    #[test]
    fn rule_sets_name_their_group_and_directions() {
        assert_eq!(rule_set_of(&NodeId::group("api")), Some(NodeId::Egress("api".into())));
        assert_eq!(rule_set_of(&NodeId::EndpointGroup), Some(NodeId::EndpointRules));
        assert_eq!(rule_set_of(&NodeId::Vpc), None);
        assert_eq!(managed(&NodeId::EndpointRules), (true, true));
        assert_eq!(managed(&NodeId::Egress("api".into())), (false, true));
        assert_eq!(managed(&NodeId::Egress("api".into()).twin("sg-2")), (false, true));
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let spec = Spec {
            group: NodeId::group("web"),
            ingress: None,
            egress: Some(vec![
                Permission { port: 443, peer: Peer::Group(NodeId::EndpointGroup) },
                Permission { port: 443, peer: Peer::PrefixList(NodeId::PrefixList("s3".into())) },
                Permission { port: 443, peer: Peer::Cidr("0.0.0.0/0".into()) },
            ]),
        };
        let json = serde_json::to_string(&super::super::Spec::GroupRules(spec)).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"group-rules","group":"sg/web","ingress":null,"egress":[{"port":443,"peer":{"group":"vpce-sg"}},{"port":443,"peer":{"prefix-list":"prefix-list/s3"}},{"port":443,"peer":{"cidr":"0.0.0.0/0"}}]}"#
        );
    }
}
