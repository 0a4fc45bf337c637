//! Reads the live stack in batches: one call per kind (a handful more for ECS services, 10 per call), concurrent
//! across kinds, never mutating. Used by `status`, `plan` and `up` to see what really exists.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use aws_sdk_ec2::types::{Filter, SecurityGroupRule};

use super::group_rules::{RuleKey, rule_key};
use super::{TAG_NODE, TAG_STACK, api_error};
use crate::aws::Clients;
use crate::model::{Node, Spec};
use crate::state::StateFile;

/// What a live resource looks like, in the terms secep compares against the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Facts {
    Vpc {
        cidr: String,
    },
    Subnet {
        az: String,
        cidr: String,
        public_ip_on_launch: bool,
    },
    Cluster,
    SdService {
        name: String,
        instances: Option<i32>,
    },
    SecurityGroup {
        name: String,
    },
    IngressRule,
    TaskDefinition,
    Service(ServiceFacts),
    /// Exists; nothing else is compared (endpoints, gateways, addresses, roles, account-wide lookups).
    Exists,
    /// Every rule of a group, by direction.
    GroupRules {
        ingress: BTreeSet<RuleKey>,
        egress: BTreeSet<RuleKey>,
    },
    RouteTable {
        /// Association id → subnet id.
        associations: BTreeMap<String, String>,
        default_target: Option<String>,
    },
    LogGroup {
        retention_days: Option<i32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub rollout: Option<String>,
    pub task_definition: String,
    pub subnets: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub public_ip: bool,
    pub registries: Vec<String>,
}

/// One live resource that belongs to the stack (by state record or by tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode {
    pub id: String,
    /// Tagged `secep:stack` = this stack.
    pub tagged: bool,
    pub facts: Facts,
}

/// Where traffic into a group may come from, per one live rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Group(String),
    Cidr(String),
    PrefixList(String),
}

/// One live ingress rule of one of the stack's groups.
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

/// Everything read live, by node id, plus every ingress rule of the stack's groups (for the reachability audit).
#[derive(Debug, Default)]
pub struct Live {
    pub nodes: BTreeMap<String, LiveNode>,
    pub rules: Vec<LiveRule>,
    /// When a desired task definition is unrecorded: the stack's families that have a revision (a superset on
    /// emulators that ignore the status filter). A family not in it has nothing an interrupted run could have left.
    pub task_families: Option<BTreeSet<String>>,
}

/// Who is who: recorded ids keep their node, so a twin carrying the same `secep:node` tag never hides them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorded {
    node_of_id: BTreeMap<String, String>,
    nodes: BTreeSet<String>,
}

impl Recorded {
    /// Places found resources: recorded ids under their node, others under their tag's node if that node is free
    /// (neither recorded nor taken), else under `node#id`.
    fn place(&self, live: &mut Live, mut found: Vec<(String, LiveNode)>) {
        found.sort_by_key(|(_, l)| !self.node_of_id.contains_key(&l.id));
        for (node, l) in found {
            let key = match self.node_of_id.get(&l.id) {
                Some(recorded) => recorded.clone(),
                None if !self.nodes.contains(&node) && !live.nodes.contains_key(&node) => node,
                None => format!("{node}#{}", l.id),
            };
            live.nodes.insert(key, l);
        }
    }
}

/// Desired services the state does not record: looked up by name, since a crash between CreateService and the
/// state write leaves one behind (ECS names are unique per cluster, so no listing of the cluster is needed).
fn unrecorded_services(desired: &[Node], state: &StateFile) -> Vec<String> {
    desired
        .iter()
        .filter(|n| super::kind_of(&n.id) == "svc" && state.get(&n.id).is_none())
        .filter_map(|n| n.id.strip_prefix("svc/").map(str::to_string))
        .collect()
}

/// Reads every recorded resource and every resource tagged for the stack; kinds neither desired nor recorded are not
/// read at all (no NAT gateway lookups for a stack without NAT).
pub async fn read(clients: &Clients, stack: &str, state: &StateFile, desired: &[Node]) -> Result<Live> {
    let who = Recorded {
        node_of_id: state.nodes().iter().map(|(node, r)| (r.id.clone(), node.clone())).collect(),
        nodes: state.nodes().keys().cloned().collect(),
    };
    let recorded = |kind: &str| -> BTreeMap<String, String> {
        state
            .nodes()
            .iter()
            .filter(|(node, _)| super::kind_of(node) == kind)
            .map(|(node, r)| (r.id.clone(), node.clone()))
            .collect()
    };
    let kinds: BTreeSet<&str> =
        desired.iter().map(|n| super::kind_of(&n.id)).chain(state.nodes().keys().map(|k| super::kind_of(k))).collect();
    let role_name = state.get("role/execution").map(|r| r.id.clone()).or_else(|| {
        desired.iter().find_map(|n| match &n.spec {
            Spec::ExecutionRole { name, .. } => Some(name.clone()),
            _ => None,
        })
    });
    let unrecorded_families: Vec<String> = desired
        .iter()
        .filter(|n| state.get(&n.id).is_none())
        .filter_map(|n| match &n.spec {
            Spec::TaskDefinition(td) => Some(td.family.clone()),
            _ => None,
        })
        .collect();
    let (ec2, ecs, sd, network, account, families) = tokio::join!(
        read_ec2(clients, stack, recorded("sg-rule"), &who, state),
        read_ecs(clients, stack, recorded("svc"), recorded("td"), unrecorded_services(desired, state)),
        read_cloud_map(clients, state.get("namespace").map(|r| r.id.clone()), recorded("sd")),
        read_egress(clients, stack, &kinds, &who),
        read_account(clients, stack, &kinds, role_name, state),
        read_task_families(clients, stack, !unrecorded_families.is_empty()),
    );
    let mut live = Live { task_families: families?, ..Live::default() };
    for part in [ec2?, ecs?, sd?, network?, account?] {
        live.nodes.extend(part.nodes);
        live.rules.extend(part.rules);
    }
    live.rules.sort();
    add_attributes_and_associations(&mut live, state, desired);
    Ok(live)
}

/// The nodes that are facts about other resources, read with them: the VPC's DNS attributes (recorded, on the live
/// VPC) and route table associations (recorded, or desired and found on the live table and subnet).
fn add_attributes_and_associations(live: &mut Live, state: &StateFile, desired: &[Node]) {
    if let (Some(dns), Some(vpc)) = (state.get("vpc-dns"), live.nodes.get("vpc"))
        && dns.id == super::vpc::dns_id(&vpc.id)
    {
        live.nodes.insert("vpc-dns".into(), LiveNode { id: dns.id.clone(), tagged: true, facts: Facts::Exists });
    }
    // Association id → (table id, subnet id), over the stack's live tables.
    let associations: BTreeMap<String, (String, String)> = live
        .nodes
        .values()
        .flat_map(|l| match &l.facts {
            Facts::RouteTable { associations, .. } => {
                associations.iter().map(|(a, subnet)| (a.clone(), (l.id.clone(), subnet.clone()))).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        })
        .collect();
    let exists = |id: &str| LiveNode { id: id.to_string(), tagged: true, facts: Facts::Exists };
    for (node, record) in state.nodes() {
        if super::kind_of(node) == "rtb-assoc" && associations.contains_key(&record.id) {
            live.nodes.insert(node.clone(), exists(&record.id));
        }
    }
    for node in desired {
        let Spec::RouteTableAssociation { table, subnet } = &node.spec else { continue };
        if state.get(&node.id).is_some() {
            continue;
        }
        let (Some(table), Some(subnet)) = (live.nodes.get(table), live.nodes.get(subnet)) else { continue };
        let found = associations.iter().find(|(_, (t, s))| *t == table.id && *s == subnet.id);
        if let Some((association, _)) = found {
            live.nodes.insert(node.id.clone(), exists(association));
        }
    }
}

/// The families named `<stack>-...` with an ACTIVE revision (one call, paginated), if `wanted`.
async fn read_task_families(clients: &Clients, stack: &str, wanted: bool) -> Result<Option<BTreeSet<String>>> {
    if !wanted {
        return Ok(None);
    }
    let mut families = BTreeSet::new();
    let mut pages = clients
        .ecs
        .list_task_definition_families()
        .family_prefix(format!("{stack}-"))
        .status(aws_sdk_ecs::types::TaskDefinitionFamilyStatus::Active)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| api_error("list the stack's task definition families", e))?;
        families.extend(page.families().iter().cloned());
    }
    Ok(Some(families))
}

fn ec2_tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

async fn read_ec2(
    clients: &Clients,
    stack: &str,
    recorded_rules: BTreeMap<String, String>,
    who: &Recorded,
    state: &StateFile,
) -> Result<Live> {
    let ec2 = &clients.ec2;
    let ours = || Filter::builder().name(format!("tag:{TAG_STACK}")).values(stack).build();
    // The rules of the recorded groups are read alongside the groups (one round trip, not two); only groups the
    // state does not know (made by an interrupted run, or by hand) cost a second read.
    let recorded_groups: BTreeSet<String> =
        state.nodes().values().map(|r| r.id.clone()).filter(|id| id.starts_with("sg-")).collect();
    let (vpcs, subnets, groups, recorded_group_rules) = tokio::join!(
        ec2.describe_vpcs().filters(ours()).send(),
        ec2.describe_subnets().filters(ours()).send(),
        ec2.describe_security_groups().filters(ours()).send(),
        read_rules(clients, recorded_groups.iter().cloned().collect()),
    );
    let mut live = Live::default();
    let mut found = Vec::new();
    for v in vpcs.map_err(|e| api_error("read the stack's VPC", e))?.vpcs() {
        if let (Some(node), Some(id)) = (ec2_tag(v.tags(), TAG_NODE), v.vpc_id()) {
            let facts = Facts::Vpc { cidr: v.cidr_block().unwrap_or_default().to_string() };
            found.push((node.to_string(), LiveNode { id: id.to_string(), tagged: true, facts }));
        }
    }
    for s in subnets.map_err(|e| api_error("read the stack's subnets", e))?.subnets() {
        if let (Some(node), Some(id)) = (ec2_tag(s.tags(), TAG_NODE), s.subnet_id()) {
            let facts = Facts::Subnet {
                az: s.availability_zone().unwrap_or_default().to_string(),
                cidr: s.cidr_block().unwrap_or_default().to_string(),
                public_ip_on_launch: s.map_public_ip_on_launch().unwrap_or(false),
            };
            found.push((node.to_string(), LiveNode { id: id.to_string(), tagged: true, facts }));
        }
    }
    let groups = groups.map_err(|e| api_error("read the stack's security groups", e))?;
    let mut group_ids = Vec::new();
    for g in groups.security_groups() {
        if let (Some(node), Some(id)) = (ec2_tag(g.tags(), TAG_NODE), g.group_id()) {
            let facts = Facts::SecurityGroup { name: g.group_name().unwrap_or_default().to_string() };
            found.push((node.to_string(), LiveNode { id: id.to_string(), tagged: true, facts }));
            group_ids.push(id.to_string());
        }
    }
    who.place(&mut live, found);
    // group id → service name, for naming rules between the stack's own groups.
    let service_of: BTreeMap<String, String> = live
        .nodes
        .iter()
        .filter_map(|(node, l)| {
            node.strip_prefix("sg/").filter(|s| !s.contains('#')).map(|s| (l.id.clone(), s.to_string()))
        })
        .collect();
    if group_ids.is_empty() {
        return Ok(live);
    }
    let unrecorded = group_ids.iter().filter(|g| !recorded_groups.contains(*g)).cloned().collect();
    let mut rules = recorded_group_rules?;
    rules.extend(read_rules(clients, unrecorded).await?);
    let mut seen = BTreeSet::new();
    rules.retain(|r| seen.insert(r.security_group_rule_id().map(str::to_string)));
    // Every rule of each group, for the nodes that own a group's whole rule set (egress, endpoint group).
    let mut by_group: BTreeMap<String, (BTreeSet<RuleKey>, BTreeSet<RuleKey>)> =
        group_ids.iter().map(|g| (g.clone(), Default::default())).collect();
    for r in &rules {
        if let Some(sets) = r.group_id().and_then(|g| by_group.get_mut(g)) {
            if r.is_egress().unwrap_or(false) {
                sets.1.insert(rule_key(r))
            } else {
                sets.0.insert(rule_key(r))
            };
        }
    }
    for (node, record) in state.nodes() {
        if matches!(super::kind_of(node), "egress" | "vpce-rules")
            && let Some((ingress, egress)) = by_group.get(&record.id)
        {
            let facts = Facts::GroupRules { ingress: ingress.clone(), egress: egress.clone() };
            live.nodes.insert(node.clone(), LiveNode { id: record.id.clone(), tagged: true, facts });
        }
    }
    for r in &rules {
        // moto ignores this filter for some fields; keep only our groups' ingress rules.
        let (Some(rule_id), Some(group_id)) = (r.security_group_rule_id(), r.group_id()) else { continue };
        if r.is_egress().unwrap_or(false) || !group_ids.iter().any(|g| g == group_id) {
            continue;
        }
        let source = if let Some(g) = r.referenced_group_info().and_then(|g| g.group_id()) {
            Source::Group(g.to_string())
        } else if let Some(c) = r.cidr_ipv4().or(r.cidr_ipv6()) {
            Source::Cidr(c.to_string())
        } else {
            Source::PrefixList(r.prefix_list_id().unwrap_or("?").to_string())
        };
        // The node of a recorded rule; or, for a rule between two of the stack's groups that the state does not
        // know (an interrupted run made it), the node it would be.
        let node = recorded_rules.get(rule_id).cloned().or_else(|| {
            let Source::Group(g) = &source else { return None };
            let node = crate::model::rule_id(service_of.get(g)?, service_of.get(group_id)?);
            (!who.nodes.contains(&node) && !live.nodes.contains_key(&node)).then_some(node)
        });
        if let Some(node) = node {
            live.nodes.insert(node, LiveNode { id: rule_id.to_string(), tagged: true, facts: Facts::IngressRule });
        }
        live.rules.push(LiveRule {
            rule_id: rule_id.to_string(),
            group_id: group_id.to_string(),
            protocol: r.ip_protocol().unwrap_or("-1").to_string(),
            from_port: r.from_port().unwrap_or(-1),
            to_port: r.to_port().unwrap_or(-1),
            source,
        });
    }
    Ok(live)
}

/// Every rule of these groups, hand-added ones included (the reachability audit must see them).
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

fn ecs_tag<'a>(tags: &'a [aws_sdk_ecs::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

async fn read_ecs(
    clients: &Clients,
    stack: &str,
    recorded_services: BTreeMap<String, String>,
    recorded_tds: BTreeMap<String, String>,
    unrecorded_services: Vec<String>,
) -> Result<Live> {
    let ecs = &clients.ecs;
    let mut live = Live::default();
    // Recorded services by ARN, desired ones not recorded by name: batched describes, no listing of the cluster.
    // With services recorded the cluster surely was, so they are read alongside it (one round trip, not two); on
    // a fresh stack they wait for the cluster, so that a missing one costs no calls.
    let wanted: Vec<String> = recorded_services.keys().cloned().chain(unrecorded_services).collect();
    let services = || super::service::describe_services(clients, stack, wanted.clone());
    let early = !recorded_services.is_empty();
    let (clusters, early_services) = tokio::join!(
        ecs.describe_clusters().clusters(stack).include(aws_sdk_ecs::types::ClusterField::Tags).send(),
        async { if early { Some(services().await) } else { None } },
    );
    let clusters = clusters.map_err(|e| api_error("read the stack's ECS cluster", e))?;
    // No cluster: whatever the early read said (most likely ClusterNotFoundException) does not matter.
    let Some(cluster) = clusters.clusters().iter().find(|c| c.status() == Some("ACTIVE")) else { return Ok(live) };
    let tagged = ecs_tag(cluster.tags(), TAG_STACK) == Some(stack);
    live.nodes.insert(
        "cluster".into(),
        LiveNode { id: cluster.cluster_name().unwrap_or(stack).to_string(), tagged, facts: Facts::Cluster },
    );
    let services = match early_services {
        Some(read) => read?,
        None => services().await?,
    };
    let mut seen = BTreeSet::new();
    let services: Vec<_> = services.into_iter().filter(|s| seen.insert(s.service_arn().map(str::to_string))).collect();
    let mut task_definitions = BTreeSet::new();
    for s in &services {
        let arn = s.service_arn().unwrap_or_default().to_string();
        let node = recorded_services.get(&arn).cloned().or_else(|| ecs_tag(s.tags(), TAG_NODE).map(str::to_string));
        let Some(node) = node else { continue };
        let vpc = s.network_configuration().and_then(|n| n.awsvpc_configuration());
        let facts = ServiceFacts {
            desired: s.desired_count(),
            running: s.running_count(),
            pending: s.pending_count(),
            rollout: s.deployments().first().and_then(|d| d.rollout_state()).map(|r| r.as_str().to_string()),
            task_definition: s.task_definition().unwrap_or_default().to_string(),
            subnets: vpc.map(|v| v.subnets().iter().cloned().collect()).unwrap_or_default(),
            groups: vpc.map(|v| v.security_groups().iter().cloned().collect()).unwrap_or_default(),
            public_ip: vpc.and_then(|v| v.assign_public_ip()) == Some(&aws_sdk_ecs::types::AssignPublicIp::Enabled),
            registries: s.service_registries().iter().filter_map(|r| r.registry_arn()).map(str::to_string).collect(),
        };
        task_definitions.insert(facts.task_definition.clone());
        let tagged = ecs_tag(s.tags(), TAG_STACK) == Some(stack);
        live.nodes.insert(node, LiveNode { id: arn, tagged, facts: Facts::Service(facts) });
    }
    // A recorded revision counts as live while a service uses it; others are read only when they are not.
    for (arn, node) in recorded_tds {
        if task_definitions.contains(&arn) {
            live.nodes.insert(node, LiveNode { id: arn, tagged: true, facts: Facts::TaskDefinition });
        } else if let Some(found) = read_task_definition(clients, stack, &arn).await? {
            live.nodes.insert(node, found);
        }
    }
    Ok(live)
}

async fn read_task_definition(clients: &Clients, stack: &str, arn: &str) -> Result<Option<LiveNode>> {
    let out = super::task_definition::describe(clients, arn).await;
    match out {
        Ok(o)
            if o.task_definition().and_then(|t| t.status())
                == Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active) =>
        {
            let tagged = ecs_tag(o.tags(), TAG_STACK) == Some(stack);
            Ok(Some(LiveNode { id: arn.to_string(), tagged, facts: Facts::TaskDefinition }))
        }
        Ok(_) => Ok(None),
        Err(e) if super::error_code(&e) == Some("ClientException") => Ok(None),
        Err(e) => Err(e),
    }
}

async fn read_cloud_map(
    clients: &Clients,
    namespace_id: Option<String>,
    recorded_sd: BTreeMap<String, String>,
) -> Result<Live> {
    let sd = &clients.sd;
    let mut live = Live::default();
    let Some(namespace_id) = namespace_id else { return Ok(live) };
    let filter = aws_sdk_servicediscovery::types::ServiceFilter::builder()
        .name(aws_sdk_servicediscovery::types::ServiceFilterName::NamespaceId)
        .values(&namespace_id)
        .build()?;
    let mut pages = sd.list_services().filters(filter).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page.map_err(|e| api_error(format!("list the services of {namespace_id}"), e)) {
            Ok(page) => page,
            Err(e) if super::error_code(&e) == Some("NamespaceNotFound") => return Ok(live),
            Err(e) => return Err(e),
        };
        for s in page.services() {
            let Some(id) = s.id() else { continue };
            // Only recorded services are read here (moto ignores the namespace filter, so others may be anyone's).
            if let Some(node) = recorded_sd.get(id) {
                let facts =
                    Facts::SdService { name: s.name().unwrap_or_default().to_string(), instances: s.instance_count() };
                live.nodes.insert(node.clone(), LiveNode { id: id.to_string(), tagged: true, facts });
            }
        }
    }
    // Cloud Map refuses to delete a namespace that still has services: one of ours alive proves the namespace is,
    // and saves a call per status. Otherwise ask.
    let exists = !live.nodes.is_empty()
        || match sd.get_namespace().id(&namespace_id).send().await {
            Ok(_) => true,
            Err(e) => {
                let e = api_error(format!("read namespace {namespace_id}"), e);
                if super::error_code(&e) != Some("NamespaceNotFound") {
                    return Err(e);
                }
                false
            }
        };
    if exists {
        live.nodes
            .insert("namespace".into(), LiveNode { id: namespace_id.clone(), tagged: true, facts: Facts::Exists });
    }
    Ok(live)
}

/// Route tables, VPC endpoints, and for NAT the internet gateway, addresses and NAT gateways: each kind read (one
/// call, by tag) only if the stack wants or records it.
pub(crate) async fn read_egress(
    clients: &Clients,
    stack: &str,
    kinds: &BTreeSet<&str>,
    who: &Recorded,
) -> Result<Live> {
    let ec2 = &clients.ec2;
    let ours = || Filter::builder().name(format!("tag:{TAG_STACK}")).values(stack).build();
    let mut live = Live::default();
    let mut found = Vec::new();
    // The tag is checked here too: moto ignores tag filters on some kinds (NAT gateways), and another stack's
    // resource taken for this one's would be reported as extra, or worse, adopted.
    let mut add = |tags: &[aws_sdk_ec2::types::Tag], id: Option<&str>, facts: Facts| {
        if let (Some(node), Some(id), Some(true)) =
            (ec2_tag(tags, TAG_NODE), id, ec2_tag(tags, TAG_STACK).map(|s| s == stack))
        {
            found.push((node.to_string(), LiveNode { id: id.to_string(), tagged: true, facts }));
        }
    };
    // One describe per wanted kind, all at once.
    let wanted = |kind: &str| kinds.contains(kind);
    let (tables, endpoints, gateways, addresses, nats) = tokio::try_join!(
        async {
            if !wanted("rtb") {
                return Ok(None);
            }
            let out = ec2.describe_route_tables().filters(ours()).send().await;
            out.map(Some).map_err(|e| api_error("read the stack's route tables", e))
        },
        async {
            if !wanted("vpce") {
                return Ok(None);
            }
            let out = ec2.describe_vpc_endpoints().filters(ours()).send().await;
            out.map(Some).map_err(|e| api_error("read the stack's VPC endpoints", e))
        },
        async {
            if !wanted("igw") {
                return Ok(None);
            }
            let out = ec2.describe_internet_gateways().filters(ours()).send().await;
            out.map(Some).map_err(|e| api_error("read the stack's internet gateway", e))
        },
        async {
            if !wanted("eip") {
                return Ok(None);
            }
            let out = ec2.describe_addresses().filters(ours()).send().await;
            out.map(Some).map_err(|e| api_error("read the stack's elastic IPs", e))
        },
        async {
            if !wanted("nat") {
                return Ok(None);
            }
            let out = ec2.describe_nat_gateways().filter(ours()).send().await;
            out.map(Some).map_err(|e| api_error("read the stack's NAT gateways", e))
        },
    )?;
    for t in tables.iter().flat_map(|o| o.route_tables()) {
        let default = t.routes().iter().find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"));
        let facts = Facts::RouteTable {
            associations: t
                .associations()
                .iter()
                .filter_map(|a| Some((a.route_table_association_id()?.to_string(), a.subnet_id()?.to_string())))
                .collect(),
            default_target: default.and_then(|r| r.nat_gateway_id().or(r.gateway_id())).map(str::to_string),
        };
        add(t.tags(), t.route_table_id(), facts);
    }
    for v in endpoints.iter().flat_map(|o| o.vpc_endpoints()) {
        let state = v.state().map(|s| s.as_str().to_ascii_lowercase()).unwrap_or_default();
        if !matches!(state.as_str(), "deleting" | "deleted" | "failed" | "rejected") {
            add(v.tags(), v.vpc_endpoint_id(), Facts::Exists);
        }
    }
    for g in gateways.iter().flat_map(|o| o.internet_gateways()) {
        add(g.tags(), g.internet_gateway_id(), Facts::Exists);
    }
    for a in addresses.iter().flat_map(|o| o.addresses()) {
        add(a.tags(), a.allocation_id(), Facts::Exists);
    }
    for n in nats.iter().flat_map(|o| o.nat_gateways()) {
        let state = n.state().map(|s| s.as_str()).unwrap_or_default();
        if matches!(state, "pending" | "available") {
            add(n.tags(), n.nat_gateway_id(), Facts::Exists);
        }
    }
    who.place(&mut live, found);
    Ok(live)
}

/// The execution role and the log group (one call each, when wanted), and the account-wide lookups the state
/// records (the service-linked role, the S3 prefix list: AWS's own, not re-read).
async fn read_account(
    clients: &Clients,
    stack: &str,
    kinds: &BTreeSet<&str>,
    role_name: Option<String>,
    state: &StateFile,
) -> Result<Live> {
    let mut live = Live::default();
    for (node, record) in state.nodes() {
        if matches!(super::kind_of(node), "linked-role" | "prefix-list") {
            live.nodes.insert(node.clone(), LiveNode { id: record.id.clone(), tagged: true, facts: Facts::Exists });
        }
    }
    let group = format!("/secep/{stack}");
    let (role, log_group) = tokio::try_join!(
        async {
            match role_name.filter(|_| kinds.contains("role")) {
                Some(name) => Ok(super::iam::read_role(clients, &name).await?.map(|(_, tag)| (name, tag))),
                None => Ok(None),
            }
        },
        async { if kinds.contains("logs") { super::log_group::read(clients, &group).await } else { Ok(None) } },
    )?;
    if let Some((name, tag)) = role {
        let tagged = tag.as_deref() == Some(stack);
        live.nodes.insert("role/execution".into(), LiveNode { id: name, tagged, facts: Facts::Exists });
    }
    if let Some((_, retention_days)) = log_group {
        // Tags are read only when it is deleted (one more call per status otherwise); the name is the stack's.
        live.nodes
            .insert("logs".into(), LiveNode { id: group, tagged: true, facts: Facts::LogGroup { retention_days } });
    }
    Ok(live)
}
