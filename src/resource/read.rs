//! The live read: every kind's batched read at once, sharing the describes several kinds need (the stack's groups
//! and their rules, its route tables, its cluster and services, its Cloud Map services) so that each is made once.
//! Never mutating. What is found is placed under its node: a recorded id under its recorded node, else under the
//! node its tag names if that one is free, else as a twin (`node#id`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use anyhow::Result;
use aws_sdk_ec2::types::{Filter, RouteTable, SecurityGroup, SecurityGroupRule, Vpc};
use tokio::sync::OnceCell;

use super::{Facts, Found, Hints, Kind, Observed, TAG_NODE, TAG_STACK, api_error, read_every_kind};
use crate::aws::Clients;
use crate::model::{Node, NodeId};
use crate::state::StateFile;

/// How much a read looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `up`, `plan`, `status`: what the state records and the config asks for, plus what is tagged for the stack
    /// where the same calls show it.
    Converge,
    /// `down`: everything the stack may own, recorded or not, with its owner (no per-resource ownership reads later).
    Teardown,
}

/// Everything a kind's read may look at, and the describes kinds share.
pub struct ReadCx<'a> {
    pub clients: &'a Clients,
    pub stack: &'a str,
    pub scope: Scope,
    pub state: &'a StateFile,
    pub desired: &'a [Node],
    pub hints: Mutex<Hints>,
    vpcs: OnceCell<Vec<Vpc>>,
    groups: OnceCell<Vec<SecurityGroup>>,
    rules: OnceCell<Vec<SecurityGroupRule>>,
    route_tables: OnceCell<Vec<RouteTable>>,
    cluster: OnceCell<Option<aws_sdk_ecs::types::Cluster>>,
    services: OnceCell<Vec<aws_sdk_ecs::types::Service>>,
    sd_services: OnceCell<Option<Vec<aws_sdk_servicediscovery::types::ServiceSummary>>>,
    elb: OnceCell<super::elb::ElbView>,
}

impl<'a> ReadCx<'a> {
    pub fn new(clients: &'a Clients, stack: &'a str, scope: Scope, state: &'a StateFile, desired: &'a [Node]) -> Self {
        ReadCx {
            clients,
            stack,
            scope,
            state,
            desired,
            hints: Mutex::new(Hints::default()),
            vpcs: OnceCell::new(),
            groups: OnceCell::new(),
            rules: OnceCell::new(),
            route_tables: OnceCell::new(),
            cluster: OnceCell::new(),
            services: OnceCell::new(),
            sd_services: OnceCell::new(),
            elb: OnceCell::new(),
        }
    }

    pub fn teardown(&self) -> bool {
        self.scope == Scope::Teardown
    }

    /// Whether a kind is read at all: in teardown every kind (what exists decides), else only kinds the config
    /// asks for or the state records (no NAT gateway lookups for a stack without NAT).
    pub fn wants(&self, kind: Kind) -> bool {
        self.teardown()
            || self.desired.iter().any(|n| n.spec.kind() == kind)
            || self.state.nodes().keys().any(|k| k.kind() == kind)
    }

    /// The recorded nodes of a kind, with their records.
    pub fn recorded(&self, kind: Kind) -> impl Iterator<Item = (&'a NodeId, &'a crate::state::Record)> {
        self.state.nodes().iter().filter(move |(k, _)| k.kind() == kind)
    }

    pub fn record(&self, node: &NodeId) -> Option<&'a crate::state::Record> {
        self.state.get(node)
    }

    /// The desired nodes of a kind.
    pub fn desired(&self, kind: Kind) -> impl Iterator<Item = &'a Node> {
        self.desired.iter().filter(move |n| n.spec.kind() == kind)
    }

    /// The filter on the stack's tag.
    pub fn ours(&self) -> Filter {
        Filter::builder().name(format!("tag:{TAG_STACK}")).values(self.stack).build()
    }

    pub fn owner(&self, stack_tag: Option<&str>) -> super::Owner {
        super::Owner::from_tag(self.stack, stack_tag)
    }

    /// The stack's VPCs (by tag).
    pub async fn vpcs(&self) -> Result<&[Vpc]> {
        let vpcs = self
            .vpcs
            .get_or_try_init(|| async {
                let out = self.clients.ec2.describe_vpcs().filters(self.ours()).send().await;
                Ok::<_, anyhow::Error>(out.map_err(|e| api_error("read the stack's VPC", e))?.vpcs().to_vec())
            })
            .await?;
        Ok(vpcs)
    }

    /// The stack's security groups (by tag).
    pub async fn groups(&self) -> Result<&[SecurityGroup]> {
        let groups = self
            .groups
            .get_or_try_init(|| async {
                let out = self.clients.ec2.describe_security_groups().filters(self.ours()).send().await;
                let out = out.map_err(|e| api_error("read the stack's security groups", e))?;
                Ok::<_, anyhow::Error>(out.security_groups().to_vec())
            })
            .await?;
        Ok(groups)
    }

    /// Every rule (both directions) of the stack's groups, hand-added ones included. The rules of the recorded
    /// groups are read alongside the groups (one round trip, not two); only groups the state does not know cost a
    /// second read.
    pub async fn group_rules(&self) -> Result<&[SecurityGroupRule]> {
        let rules = self
            .rules
            .get_or_try_init(|| async {
                let recorded: BTreeSet<String> = self
                    .state
                    .nodes()
                    .iter()
                    .filter(|(k, _)| k.kind() == Kind::SecurityGroup)
                    .map(|(_, r)| r.id.clone())
                    .collect();
                let (groups, mut rules) =
                    tokio::try_join!(self.groups(), read_rules(self.clients, recorded.iter().cloned().collect()))?;
                let ids: BTreeSet<String> = groups.iter().filter_map(|g| g.group_id()).map(str::to_string).collect();
                let unrecorded: Vec<String> = ids.difference(&recorded).cloned().collect();
                rules.extend(read_rules(self.clients, unrecorded).await?);
                let mut seen = BTreeSet::new();
                // moto ignores the group-id filter for some fields: only the live groups' rules, once each.
                rules.retain(|r| {
                    r.group_id().is_some_and(|g| ids.contains(g) || recorded.contains(g))
                        && seen.insert(r.security_group_rule_id().map(str::to_string))
                });
                Ok::<_, anyhow::Error>(rules)
            })
            .await?;
        Ok(rules)
    }

    /// What Elastic Load Balancing holds for the stack (the load balancer's kinds share it).
    pub async fn elb(&self) -> Result<&super::elb::ElbView> {
        self.elb.get_or_try_init(|| super::elb::read(self)).await
    }

    /// The stack's route tables (by tag).
    pub async fn route_tables(&self) -> Result<&[RouteTable]> {
        let tables = self
            .route_tables
            .get_or_try_init(|| async {
                let out = self.clients.ec2.describe_route_tables().filters(self.ours()).send().await;
                let out = out.map_err(|e| api_error("read the stack's route tables", e))?;
                Ok::<_, anyhow::Error>(out.route_tables().to_vec())
            })
            .await?;
        Ok(tables)
    }

    /// The active ECS cluster named after the stack, whoever's it is.
    pub async fn cluster(&self) -> Result<Option<&aws_sdk_ecs::types::Cluster>> {
        let cluster = self
            .cluster
            .get_or_try_init(|| async {
                let out = self
                    .clients
                    .ecs
                    .describe_clusters()
                    .clusters(self.stack)
                    .include(aws_sdk_ecs::types::ClusterField::Tags)
                    .send()
                    .await
                    .map_err(|e| api_error("read the stack's ECS cluster", e))?;
                Ok::<_, anyhow::Error>(out.clusters().iter().find(|c| c.status() == Some("ACTIVE")).cloned())
            })
            .await?;
        Ok(cluster.as_ref())
    }

    /// The ECS services of the stack's cluster that are not INACTIVE: the recorded ones by ARN and the desired
    /// unrecorded ones by name (a crash between CreateService and the state write leaves one), batched ten per call;
    /// in teardown every service of the cluster. With services recorded the cluster surely was, so they are read
    /// alongside it; on a fresh stack they wait for the cluster, so that a missing one costs no call.
    pub async fn ecs_services(&self) -> Result<&[aws_sdk_ecs::types::Service]> {
        let services = self
            .services
            .get_or_try_init(|| async {
                let recorded: Vec<String> = self.recorded(Kind::Service).map(|(_, r)| r.id.clone()).collect();
                let unrecorded = self
                    .desired(Kind::Service)
                    .filter(|n| self.record(&n.id).is_none())
                    .filter_map(|n| n.id.service_name().map(str::to_string));
                let mut wanted: BTreeSet<String> = recorded.iter().cloned().chain(unrecorded).collect();
                let early = !recorded.is_empty() && !self.teardown();
                let named = wanted.clone();
                let (cluster, early_read) = tokio::join!(self.cluster(), async {
                    if early { Some(describe_services(self.clients, self.stack, named).await) } else { None }
                });
                if cluster?.is_none() {
                    return Ok(Vec::new());
                }
                let mut services = match early_read {
                    Some(read) => read?,
                    None => {
                        if self.teardown() {
                            wanted.extend(list_services(self.clients, self.stack).await?);
                        }
                        describe_services(self.clients, self.stack, wanted).await?
                    }
                };
                let mut seen = BTreeSet::new();
                services.retain(|s| seen.insert(s.service_arn().map(str::to_string)));
                Ok::<_, anyhow::Error>(services)
            })
            .await?;
        Ok(services)
    }

    /// The services of the recorded namespace (`None`: no namespace recorded, or it is gone).
    pub async fn cloud_map_services(&self) -> Result<Option<&[aws_sdk_servicediscovery::types::ServiceSummary]>> {
        let services = self
            .sd_services
            .get_or_try_init(|| async {
                let namespace = match self.record(&NodeId::Namespace) {
                    Some(record) => record.id.clone(),
                    // A lost state: in teardown, the config's namespace if it exists (its services are checked by
                    // their own tags).
                    None if self.teardown() => match self.namespace_by_name().await? {
                        Some(id) => id,
                        None => return Ok(None),
                    },
                    None => return Ok(None),
                };
                let filter = aws_sdk_servicediscovery::types::ServiceFilter::builder()
                    .name(aws_sdk_servicediscovery::types::ServiceFilterName::NamespaceId)
                    .values(&namespace)
                    .build()?;
                let mut pages = self.clients.sd.list_services().filters(filter).into_paginator().send();
                let mut services = Vec::new();
                while let Some(page) = pages.next().await {
                    match page.map_err(|e| api_error(format!("list the services of {namespace}"), e)) {
                        Ok(page) => services.extend(page.services().iter().cloned()),
                        Err(e) if super::is(&e, super::ErrorKind::NotFound) => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
                Ok::<_, anyhow::Error>(Some(services))
            })
            .await?;
        Ok(services.as_deref())
    }
}

impl ReadCx<'_> {
    /// The id of the namespace the config names, if one of that name exists.
    async fn namespace_by_name(&self) -> Result<Option<String>> {
        let Some(name) = self.desired(Kind::Namespace).find_map(|n| match &n.spec {
            super::Spec::Namespace(spec) => Some(spec.name.clone()),
            _ => None,
        }) else {
            return Ok(None);
        };
        let mut pages = self.clients.sd.list_namespaces().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| api_error("list the Cloud Map namespaces", e))?;
            if let Some(ns) = page.namespaces().iter().find(|n| n.name() == Some(name.as_str())) {
                return Ok(ns.id().map(str::to_string));
            }
        }
        Ok(None)
    }
}

async fn read_rules(clients: &Clients, group_ids: Vec<String>) -> Result<Vec<SecurityGroupRule>> {
    if group_ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = clients
        .ec2
        .describe_security_group_rules()
        .filters(Filter::builder().name("group-id").set_values(Some(group_ids)).build())
        .send()
        .await
        .map_err(|e| api_error("read the rules of the stack's groups", e))?;
    Ok(out.security_group_rules().to_vec())
}

/// The ARNs of every service of a cluster (one page walk, 100 per page).
async fn list_services(clients: &Clients, cluster: &str) -> Result<Vec<String>> {
    let mut arns = Vec::new();
    let mut pages = clients.ecs.list_services().cluster(cluster).max_results(100).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| api_error(format!("list the services of cluster {cluster}"), e))?;
        arns.extend(page.service_arns().iter().cloned());
    }
    Ok(arns)
}

/// The services named (by ARN or name) that exist and are not INACTIVE, ten per call (the API's limit), the calls
/// at once.
pub async fn describe_services(
    clients: &Clients,
    cluster: &str,
    services: impl IntoIterator<Item = String>,
) -> Result<Vec<aws_sdk_ecs::types::Service>> {
    let services: Vec<String> = services.into_iter().collect();
    let batches: Vec<Vec<String>> = services.chunks(10).map(<[String]>::to_vec).collect();
    let found = super::support::all(batches, |batch| {
        let (ecs, cluster) = (clients.ecs.clone(), cluster.to_string());
        async move {
            let out = ecs
                .describe_services()
                .cluster(&cluster)
                .set_services(Some(batch))
                .include(aws_sdk_ecs::types::ServiceField::Tags)
                .send()
                .await
                .map_err(|e| api_error(format!("read the services of cluster {cluster}"), e));
            let out = match out {
                Ok(out) => out,
                Err(e) if super::is(&e, super::ErrorKind::NotFound) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            Ok(out.services().iter().filter(|s| s.status() != Some("INACTIVE")).cloned().collect::<Vec<_>>())
        }
    })
    .await?;
    Ok(found.into_iter().flatten().collect())
}

/// Where traffic into a group may come from, per one live rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Group(String),
    Cidr(String),
    PrefixList(String),
}

/// One live ingress rule of one of the stack's groups (for the reachability audit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LiveRule {
    pub rule_id: String,
    pub group_id: String,
    /// `tcp`, `udp`, `icmp` or `-1` (all).
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub source: Source,
}

impl LiveRule {
    pub fn of(r: &SecurityGroupRule) -> Option<LiveRule> {
        let source = if let Some(g) = r.referenced_group_info().and_then(|g| g.group_id()) {
            Source::Group(g.to_string())
        } else if let Some(c) = r.cidr_ipv4().or(r.cidr_ipv6()) {
            Source::Cidr(c.to_string())
        } else {
            Source::PrefixList(r.prefix_list_id().unwrap_or("?").to_string())
        };
        Some(LiveRule {
            rule_id: r.security_group_rule_id()?.to_string(),
            group_id: r.group_id()?.to_string(),
            protocol: r.ip_protocol().unwrap_or("-1").to_string(),
            from_port: r.from_port().unwrap_or(-1),
            to_port: r.to_port().unwrap_or(-1),
            source,
        })
    }
}

/// Everything read live: the stack's resources under their nodes, every ingress rule of its groups (for the
/// reachability audit), and what the read learnt that saves calls later.
#[derive(Debug, Default)]
pub struct Live {
    pub nodes: BTreeMap<NodeId, Observed>,
    pub rules: Vec<LiveRule>,
    pub hints: Hints,
}

impl Live {
    pub fn get(&self, node: &NodeId) -> Option<&Observed> {
        self.nodes.get(node)
    }
}

/// Reads the live stack.
pub async fn read(cx: &ReadCx<'_>) -> Result<Live> {
    let found = read_every_kind(cx).await?;
    let mut live = Live { nodes: place(cx.state, found), ..Live::default() };
    // The audit sees every ingress rule of the stack's live groups.
    if cx.wants(Kind::SecurityGroup) {
        let groups: BTreeSet<&str> =
            live.nodes.iter().filter(|(k, _)| k.kind() == Kind::SecurityGroup).map(|(_, o)| o.id.as_str()).collect();
        let rules = cx.group_rules().await?;
        live.rules = rules
            .iter()
            .filter(|r| !r.is_egress().unwrap_or(false) && r.group_id().is_some_and(|g| groups.contains(g)))
            .filter_map(LiveRule::of)
            .collect();
        live.rules.sort();
    }
    let mut hints = cx.hints.lock().expect("hints lock").clone();
    hints.cluster_name_free = !live.nodes.contains_key(&NodeId::Cluster);
    live.hints = hints;
    Ok(live)
}

/// Places what the kinds found: a recorded id under its node (so a twin carrying the same tag never hides it),
/// others under their node if it is free (neither recorded nor taken), else as `node#id`.
fn place(state: &StateFile, found: Vec<(Kind, Vec<Found<Facts>>)>) -> BTreeMap<NodeId, Observed> {
    // Ids are unique per kind, not across kinds: a group and its rule set share the group's id.
    let node_of: BTreeMap<(Kind, &str), &NodeId> =
        state.nodes().iter().map(|(node, r)| ((node.kind(), r.id.as_str()), node)).collect();
    let mut all: Vec<(Kind, Found<Facts>)> =
        found.into_iter().flat_map(|(kind, f)| f.into_iter().map(move |f| (kind, f))).collect();
    all.sort_by_key(|(kind, f)| !node_of.contains_key(&(*kind, f.id.as_str())));
    let mut nodes = BTreeMap::new();
    for (kind, f) in all {
        let key = match (node_of.get(&(kind, f.id.as_str())), f.node) {
            (Some(recorded), _) => (*recorded).clone(),
            (None, Some(node)) if node.kind() == kind && state.get(&node).is_none() && !nodes.contains_key(&node) => {
                node
            }
            (None, Some(node)) if node.kind() == kind => node.base().clone().twin(&f.id),
            _ => continue,
        };
        nodes.insert(key, Observed { id: f.id, arn: f.arn, owner: f.owner, lineage: f.lineage, facts: f.facts });
    }
    nodes
}

/// The value of a tag in EC2's tag list.
pub fn ec2_tag<'t>(tags: &'t [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'t str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// An EC2 resource's `secep:lineage` tag.
pub fn ec2_lineage(tags: &[aws_sdk_ec2::types::Tag]) -> Option<String> {
    ec2_tag(tags, super::TAG_LINEAGE).map(str::to_string)
}

/// The node an EC2 resource's `secep:node` tag names, if it parses.
pub fn ec2_node(tags: &[aws_sdk_ec2::types::Tag]) -> Option<NodeId> {
    ec2_tag(tags, TAG_NODE).and_then(|n| n.parse().ok())
}

pub fn ecs_tag<'t>(tags: &'t [aws_sdk_ecs::types::Tag], key: &str) -> Option<&'t str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}
