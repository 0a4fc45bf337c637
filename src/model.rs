//! The desired topology as nodes: one per AWS resource, with a stable id, a spec, and its dependencies.
//!
//! Node ids (`vpc`, `subnet/us-east-1a`, `sg/api`, `sg-rule/web->api`, `sd/api`, `td/api`, `svc/api`) are the keys
//! of the state file, the value of the `secep:node` tag, and what the output and logs print.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, Egress, NatGateways, validate_carve_bits};

/// What one node creates, with every input that decides the resource's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Spec {
    Vpc {
        cidr: String,
        name: String,
    },
    /// DNS support and DNS hostnames on the VPC: Cloud Map's private zone and the endpoints' private DNS names
    /// resolve only with both. A node of its own so that nothing but the endpoints and services waits for it.
    VpcDns,
    Subnet {
        az: String,
        cidr: String,
        name: String,
    },
    Cluster {
        name: String,
    },
    Namespace {
        name: String,
    },
    SdService {
        service: String,
        ttl: u32,
    },
    SecurityGroup {
        service: String,
        group_name: String,
        description: String,
    },
    IngressRule {
        caller: String,
        callee: String,
        port: u16,
    },
    TaskDefinition(TaskDefinitionSpec),
    Service {
        service: String,
        desired_count: u32,
    },
    /// The account's ECS service-linked role: made sure of before the first ECS call, never deleted (account-wide).
    LinkedRole {
        service: String,
    },
    /// The stack's task execution role: pulls images and ships logs for the tasks.
    ExecutionRole {
        name: String,
        policy_arn: String,
    },
    LogGroup {
        name: String,
        retention_days: u32,
    },
    /// An AWS-managed prefix list looked up by name (the S3 one, for egress rules); never created or deleted.
    PrefixList {
        service: String,
    },
    /// A route table with a default route to `default_route` (a node id: an internet or NAT gateway) if any.
    RouteTable {
        name: String,
        default_route: Option<String>,
    },
    /// A subnet's association with a route table (both node ids). A node of its own so that the table, and the S3
    /// endpoint on it, need not wait for the subnet.
    RouteTableAssociation {
        table: String,
        subnet: String,
    },
    /// A VPC endpoint: interface (in the private subnets, behind the endpoint group) or gateway (on the route tables).
    Endpoint {
        service: String,
        gateway: bool,
    },
    InternetGateway {
        name: String,
    },
    ElasticIp {
        name: String,
    },
    NatGateway {
        name: String,
        subnet: String,
        eip: String,
    },
    /// Exactly these rules on a group: `None` leaves that direction to other nodes.
    GroupRules {
        group: String,
        ingress: Option<Vec<Permission>>,
        egress: Option<Vec<Permission>>,
    },
}

/// One allowed flow of a [`Spec::GroupRules`]: TCP on one port to or from a peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Permission {
    pub port: u16,
    pub peer: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// A security group node (`sg/api`, `vpce-sg`).
    Group(String),
    /// A prefix list node (`prefix-list/s3`).
    PrefixList(String),
    Cidr(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskDefinitionSpec {
    pub service: String,
    pub family: String,
    pub image: String,
    pub port: u16,
    pub cpu: u32,
    pub memory: u32,
    /// User environment plus the injected peer addresses.
    pub environment: BTreeMap<String, String>,
    /// The execution role: an ARN from the config, or the node `role/execution`.
    pub execution_role: String,
    pub task_role_arn: Option<String>,
    /// `awslogs` destination: log group and region.
    pub log_group: String,
    pub region: String,
}

impl Spec {
    /// Human name of the resource kind, as printed.
    pub fn kind(&self) -> &'static str {
        match self {
            Spec::Vpc { .. } => "vpc",
            Spec::VpcDns => "vpc dns attributes",
            Spec::Subnet { .. } => "subnet",
            Spec::Cluster { .. } => "ecs cluster",
            Spec::Namespace { .. } => "namespace",
            Spec::SdService { .. } => "cloud map service",
            Spec::SecurityGroup { .. } => "security group",
            Spec::IngressRule { .. } => "ingress rule",
            Spec::TaskDefinition(_) => "task definition",
            Spec::Service { .. } => "ecs service",
            Spec::LinkedRole { .. } => "service-linked role",
            Spec::ExecutionRole { .. } => "iam role",
            Spec::LogGroup { .. } => "log group",
            Spec::PrefixList { .. } => "prefix list",
            Spec::RouteTable { .. } => "route table",
            Spec::RouteTableAssociation { .. } => "route table association",
            Spec::Endpoint { gateway: true, .. } => "gateway endpoint",
            Spec::Endpoint { gateway: false, .. } => "interface endpoint",
            Spec::InternetGateway { .. } => "internet gateway",
            Spec::ElasticIp { .. } => "elastic ip",
            Spec::NatGateway { .. } => "nat gateway",
            Spec::GroupRules { .. } => "group rules",
        }
    }

    /// A digest of the spec: equal digests mean the resource needs no change.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("a spec always serialises");
        hex(&Sha256::digest(&json)[..16])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub spec: Spec,
    pub deps: Vec<String>,
}

/// The interface endpoints a task in a private subnet needs to pull from ECR and ship logs (S3 is a gateway).
pub const INTERFACE_ENDPOINTS: [&str; 3] = ["ecr.api", "ecr.dkr", "logs"];
pub const EXECUTION_POLICY_ARN: &str = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy";
pub const HTTPS: u16 = 443;

/// Every node the config asks for, in a deterministic order.
pub fn desired_nodes(config: &Config, azs: &[String], region: &str) -> Vec<Node> {
    let stack = &config.stack.name;
    let egress = config.network.egress;
    let mut nodes = Vec::new();
    let mut push = |id: String, spec: Spec, deps: Vec<String>| nodes.push(Node { id, spec, deps });
    let ids =
        |prefix: &str, names: &[String]| -> Vec<String> { names.iter().map(|n| format!("{prefix}{n}")).collect() };
    let services: Vec<String> = config.services.keys().cloned().collect();
    let groups = ids("sg/", &services);

    push("linked-role/ecs".into(), Spec::LinkedRole { service: "ecs.amazonaws.com".into() }, vec![]);
    push("vpc".into(), Spec::Vpc { cidr: config.network.cidr.to_string(), name: stack.clone() }, vec![]);
    push("vpc-dns".into(), Spec::VpcDns, vec!["vpc".into()]);
    let subnet_ids = ids("subnet/", azs);
    for (i, az) in azs.iter().enumerate() {
        push(
            subnet_ids[i].clone(),
            Spec::Subnet { az: az.clone(), cidr: subnet_cidr(config, i), name: format!("{stack}-private-{az}") },
            vec!["vpc".into()],
        );
    }

    // The way out of the private subnets (see README: egress modes).
    let mut nat_ids = Vec::new();
    if egress == Egress::Nat {
        let public_ids = ids("public-subnet/", azs);
        for (i, az) in azs.iter().enumerate() {
            push(
                public_ids[i].clone(),
                Spec::Subnet {
                    az: az.clone(),
                    cidr: public_subnet_cidr(config, i),
                    name: format!("{stack}-public-{az}"),
                },
                vec!["vpc".into()],
            );
        }
        push("igw".into(), Spec::InternetGateway { name: stack.clone() }, vec!["vpc".into()]);
        push(
            "rtb/public".into(),
            Spec::RouteTable { name: format!("{stack}-public"), default_route: Some("igw".into()) },
            vec!["vpc".into(), "igw".into()],
        );
        for public in &public_ids {
            push(association_id(public), association("rtb/public", public), vec!["rtb/public".into(), public.clone()]);
        }
        let nat_azs = match config.network.nat_gateways {
            NatGateways::One => &azs[..1],
            NatGateways::PerAz => azs,
        };
        for az in nat_azs {
            let name = format!("{stack}-{az}");
            push(format!("eip/{az}"), Spec::ElasticIp { name: name.clone() }, vec![]);
            push(
                format!("nat/{az}"),
                Spec::NatGateway { name, subnet: format!("public-subnet/{az}"), eip: format!("eip/{az}") },
                vec![
                    format!("public-subnet/{az}"),
                    format!("eip/{az}"),
                    "igw".into(),
                    association_id(&format!("public-subnet/{az}")),
                ],
            );
            nat_ids.push(format!("nat/{az}"));
        }
    }
    let mut private_routes = Vec::new();
    let mut private_associations = Vec::new();
    if egress != Egress::None {
        for (i, az) in azs.iter().enumerate() {
            let default_route = match config.network.nat_gateways {
                NatGateways::PerAz => nat_ids.get(i).cloned(),
                NatGateways::One => nat_ids.first().cloned(),
            };
            let mut deps = vec!["vpc".to_string()];
            deps.extend(nat_ids.iter().cloned());
            let table = format!("rtb/{az}");
            push(table.clone(), Spec::RouteTable { name: format!("{stack}-private-{az}"), default_route }, deps);
            let subnet = &subnet_ids[i];
            push(association_id(subnet), association(&table, subnet), vec![table.clone(), subnet.clone()]);
            private_routes.push(table);
            private_associations.push(association_id(subnet));
        }
    }

    push("cluster".into(), Spec::Cluster { name: stack.clone() }, vec!["linked-role/ecs".into()]);
    push("namespace".into(), Spec::Namespace { name: config.namespace.name.clone() }, vec!["vpc".into()]);
    let mut td_deps = vec!["logs".to_string()];
    let execution_role = match &config.stack.execution_role_arn {
        Some(arn) => arn.clone(),
        None => {
            push(
                "role/execution".into(),
                Spec::ExecutionRole { name: execution_role_name(stack), policy_arn: EXECUTION_POLICY_ARN.into() },
                vec![],
            );
            td_deps.push("role/execution".into());
            "role/execution".into()
        }
    };
    let log_group = format!("/secep/{stack}");
    push("logs".into(), Spec::LogGroup { name: log_group.clone(), retention_days: config.logs.retention_days }, vec![]);

    let mut endpoint_ids = Vec::new();
    if egress == Egress::Endpoints {
        push("prefix-list/s3".into(), Spec::PrefixList { service: "s3".into() }, vec![]);
        push(
            "vpce-sg".into(),
            Spec::SecurityGroup {
                service: String::new(),
                group_name: format!("{stack}-vpc-endpoints"),
                description: format!("secep {stack}: VPC endpoints accept HTTPS only from the service groups"),
            },
            vec!["vpc".into()],
        );
        for service in INTERFACE_ENDPOINTS {
            // Private DNS names need the VPC's DNS attributes.
            let mut deps = vec!["vpc-dns".to_string(), "vpce-sg".to_string()];
            deps.extend(subnet_ids.iter().cloned());
            push(format!("vpce/{service}"), Spec::Endpoint { service: service.into(), gateway: false }, deps);
            endpoint_ids.push(format!("vpce/{service}"));
        }
        let mut deps = vec!["vpc".to_string()];
        deps.extend(private_routes.iter().cloned());
        push("vpce/s3".into(), Spec::Endpoint { service: "s3".into(), gateway: true }, deps);
        endpoint_ids.push("vpce/s3".into());
        let ingress = groups.iter().map(|g| Permission { port: HTTPS, peer: Peer::Group(g.clone()) }).collect();
        let mut deps = vec!["vpce-sg".to_string()];
        deps.extend(groups.iter().cloned());
        push(
            "vpce-rules".into(),
            Spec::GroupRules { group: "vpce-sg".into(), ingress: Some(ingress), egress: Some(vec![]) },
            deps,
        );
        endpoint_ids.push("vpce-rules".into());
    }

    for svc in config.services.values() {
        let name = &svc.name;
        push(
            format!("sd/{name}"),
            Spec::SdService { service: name.clone(), ttl: svc.dns_ttl },
            vec!["namespace".into()],
        );
        push(
            format!("sg/{name}"),
            Spec::SecurityGroup {
                service: name.clone(),
                group_name: format!("{stack}-{name}"),
                description: format!("secep {stack}: {name} accepts only its declared callers"),
            },
            vec!["vpc".into()],
        );
        let td = task_definition(config, svc, &execution_role, &log_group, region);
        push(format!("td/{name}"), Spec::TaskDefinition(td), td_deps.clone());
        push(
            format!("egress/{name}"),
            Spec::GroupRules {
                group: format!("sg/{name}"),
                ingress: None,
                egress: Some(egress_permissions(config, svc)),
            },
            egress_deps(&groups, egress),
        );
    }
    for (caller, callee) in edges(config) {
        let port = config.services[&callee].port;
        push(
            rule_id(&caller, &callee),
            Spec::IngressRule { caller: caller.clone(), callee: callee.clone(), port },
            vec![format!("sg/{caller}"), format!("sg/{callee}")],
        );
    }
    for svc in config.services.values() {
        let name = &svc.name;
        let mut deps = vec![
            "vpc-dns".to_string(),
            "cluster".to_string(),
            format!("td/{name}"),
            format!("sd/{name}"),
            format!("sg/{name}"),
            format!("egress/{name}"),
        ];
        deps.extend(subnet_ids.iter().cloned());
        // Its tasks can pull their image and ship logs from the first start.
        deps.extend(private_routes.iter().cloned());
        deps.extend(private_associations.iter().cloned());
        deps.extend(endpoint_ids.iter().cloned());
        // The service starts only once its callers are let in, so it is reachable as declared from its first task.
        deps.extend(
            edges(config)
                .into_iter()
                .filter(|(_, callee)| callee == name)
                .map(|(caller, callee)| rule_id(&caller, &callee)),
        );
        push(format!("svc/{name}"), Spec::Service { service: name.clone(), desired_count: svc.desired_count }, deps);
    }
    nodes
}

/// The node of a subnet's route table association: `rtb-assoc/us-east-1a`, `rtb-assoc/public-us-east-1a`.
pub fn association_id(subnet: &str) -> String {
    let (kind, az) = subnet.split_once('/').unwrap_or((subnet, ""));
    match kind {
        "public-subnet" => format!("rtb-assoc/public-{az}"),
        _ => format!("rtb-assoc/{az}"),
    }
}

fn association(table: &str, subnet: &str) -> Spec {
    Spec::RouteTableAssociation { table: table.into(), subnet: subnet.into() }
}

/// Where a service's tasks may connect: the services it calls, on their ports, and the way out the egress mode
/// gives (HTTPS to the endpoints and S3, or HTTPS anywhere through NAT). Nothing else, not even the default
/// allow-all egress AWS gives a new group.
fn egress_permissions(config: &Config, svc: &crate::config::Service) -> Vec<Permission> {
    let mut out: Vec<Permission> = svc
        .calls
        .iter()
        .map(|callee| Permission { port: config.services[callee].port, peer: Peer::Group(format!("sg/{callee}")) })
        .collect();
    match config.network.egress {
        Egress::Endpoints => {
            out.push(Permission { port: HTTPS, peer: Peer::Group("vpce-sg".into()) });
            out.push(Permission { port: HTTPS, peer: Peer::PrefixList("prefix-list/s3".into()) });
        }
        Egress::Nat => out.push(Permission { port: HTTPS, peer: Peer::Cidr("0.0.0.0/0".into()) }),
        Egress::None => {}
    }
    out.sort();
    out.dedup();
    out
}

/// An egress node may name any group of the stack: it goes after all of them, and is removed before any.
fn egress_deps(groups: &[String], egress: Egress) -> Vec<String> {
    let mut deps = groups.to_vec();
    if egress == Egress::Endpoints {
        deps.extend(["vpce-sg".to_string(), "prefix-list/s3".to_string()]);
    }
    deps
}

/// IAM role names are at most 64 characters and account-wide: the stack name, shortened with a hash if need be.
pub fn execution_role_name(stack: &str) -> String {
    let name = format!("{stack}-ecs-execution");
    if name.len() <= 64 {
        return name;
    }
    let hash = hex(&Sha256::digest(stack.as_bytes())[..4]);
    format!("{}-{hash}-ecs-execution", &stack[..40])
}

/// Declared (caller, callee) pairs, sorted.
pub fn edges(config: &Config) -> Vec<(String, String)> {
    let mut edges: Vec<_> = config
        .services
        .values()
        .flat_map(|s| s.calls.iter().map(move |callee| (s.name.clone(), callee.clone())))
        .collect();
    edges.sort();
    edges
}

pub fn rule_id(caller: &str, callee: &str) -> String {
    format!("sg-rule/{caller}->{callee}")
}

/// The environment variable that carries a callee's address: `api-gw` → `API_GW_URL`.
pub fn peer_env_name(callee: &str) -> String {
    format!("{}_URL", callee.to_ascii_uppercase().replace('-', "_"))
}

fn task_definition(
    config: &Config,
    svc: &crate::config::Service,
    execution_role: &str,
    log_group: &str,
    region: &str,
) -> TaskDefinitionSpec {
    let mut environment = svc.environment.clone();
    for callee in &svc.calls {
        environment.insert(peer_env_name(callee), config.endpoint(&config.services[callee]));
    }
    if let [only] = svc.calls.as_slice() {
        // The seed chapter's services read a single peer from SERVICE_URL.
        environment.insert("SERVICE_URL".into(), config.endpoint(&config.services[only]));
    }
    TaskDefinitionSpec {
        service: svc.name.clone(),
        family: format!("{}-{}", config.stack.name, svc.name),
        image: svc.image.clone(),
        port: svc.port,
        cpu: svc.cpu,
        memory: svc.memory,
        environment,
        execution_role: execution_role.to_string(),
        task_role_arn: svc.task_role_arn.clone(),
        log_group: log_group.to_string(),
        region: region.to_string(),
    }
}

fn subnet_cidr(config: &Config, index: usize) -> String {
    if let Some(explicit) = &config.network.subnet_cidrs {
        return explicit[index].to_string();
    }
    let vpc = config.network.cidr;
    let prefix = vpc.prefix_len() + validate_carve_bits(config.network.max_azs);
    vpc.subnets(prefix).expect("validated: prefix fits").nth(index).expect("validated: enough subnets").to_string()
}

/// Public subnets (NAT only) come after the private ones in the carving: the carve reserves room for both.
fn public_subnet_cidr(config: &Config, index: usize) -> String {
    if let Some(explicit) = &config.network.public_subnet_cidrs {
        return explicit[index].to_string();
    }
    let vpc = config.network.cidr;
    let prefix = vpc.prefix_len() + validate_carve_bits(config.network.max_azs);
    let slot = config.network.max_azs + index;
    vpc.subnets(prefix).expect("validated: prefix fits").nth(slot).expect("validated: enough subnets").to_string()
}

/// A deterministic idempotency token for a node (ECS clientToken: at most 36 ASCII characters).
pub fn idempotency_token(stack: &str, node_id: &str, digest: &str) -> String {
    let d = Sha256::digest(format!("{stack}\0{node_id}\0{digest}").as_bytes());
    hex(&d[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The dependencies of recorded nodes, derived from their ids alone, so teardown needs neither the config that
/// created them nor a config that still matches. Only nodes in `ids` are linked.
pub fn recorded_graph(ids: &[String]) -> Vec<(String, Vec<String>)> {
    let has = |id: &str| ids.iter().any(|i| i == id);
    let all = |prefix: &'static str| ids.iter().filter(move |i| i.starts_with(prefix)).cloned();
    let private_routes = || all("rtb/").filter(|i| i != "rtb/public");
    ids.iter()
        .map(|id| {
            let mut deps: Vec<String> = Vec::new();
            // A twin found by tag (`sg/api#sg-123`) sits where its node would.
            let base = id.split('#').next().unwrap_or(id);
            let (kind, name) = base.split_once('/').unwrap_or((base, ""));
            match kind {
                "subnet" | "public-subnet" | "namespace" | "sg" | "vpce-sg" | "igw" | "vpc-dns" => {
                    deps.push("vpc".into())
                }
                "sd" => deps.push("namespace".into()),
                "cluster" => deps.extend(all("linked-role/")),
                "td" => deps.extend(all("role/").chain(all("logs"))),
                "sg-rule" => {
                    if let Some((caller, callee)) = name.split_once("->") {
                        deps.push(format!("sg/{caller}"));
                        deps.push(format!("sg/{callee}"));
                    }
                }
                "rtb" if name == "public" => {
                    deps.extend(["vpc".to_string(), "igw".to_string()]);
                    deps.extend(all("public-subnet/"));
                }
                // A table still goes before its subnets: one found by tag, without its association nodes, is
                // disassociated by its own deletion.
                "rtb" => {
                    deps.extend(["vpc".to_string(), format!("subnet/{name}")]);
                    deps.extend(all("nat/"));
                }
                "rtb-assoc" => match name.strip_prefix("public-") {
                    Some(az) => deps.extend(["rtb/public".to_string(), format!("public-subnet/{az}")]),
                    None => deps.extend([format!("rtb/{name}"), format!("subnet/{name}")]),
                },
                "nat" => deps.extend([
                    format!("public-subnet/{name}"),
                    format!("eip/{name}"),
                    "igw".to_string(),
                    format!("rtb-assoc/public-{name}"),
                ]),
                "vpce" if name == "s3" => {
                    deps.push("vpc".into());
                    deps.extend(private_routes());
                }
                "vpce" => {
                    deps.extend(["vpc-dns".to_string(), "vpce-sg".to_string()]);
                    deps.extend(all("subnet/"));
                }
                "vpce-rules" => {
                    deps.push("vpce-sg".into());
                    deps.extend(all("sg/"));
                }
                "egress" => {
                    deps.extend(all("sg/"));
                    deps.extend(["vpce-sg".to_string(), "prefix-list/s3".to_string()]);
                }
                "svc" => {
                    deps.extend([
                        "cluster".to_string(),
                        format!("td/{name}"),
                        format!("sd/{name}"),
                        format!("sg/{name}"),
                        format!("egress/{name}"),
                    ]);
                    deps.extend(all("subnet/"));
                    deps.extend(private_routes());
                    deps.extend(all("rtb-assoc/").filter(|i| !i.starts_with("rtb-assoc/public-")));
                    deps.extend(all("vpc-dns"));
                    deps.extend(all("vpce/"));
                    deps.extend(all("vpce-rules"));
                    let inbound = format!("->{name}");
                    deps.extend(all("sg-rule/").filter(|i| i.ends_with(&inbound)));
                }
                _ => {}
            }
            deps.retain(|d| has(d) && d != id);
            (id.clone(), deps)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn teardown_graph_from_ids_matches_the_desired_graph() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shop.toml")).unwrap();
        let shop = Config::parse(Path::new("shop.toml"), &text).unwrap();
        for (egress, nat_gateways) in [
            (Egress::Endpoints, NatGateways::One),
            (Egress::Nat, NatGateways::One),
            (Egress::Nat, NatGateways::PerAz),
            (Egress::None, NatGateways::One),
        ] {
            let mut config = shop.clone();
            config.network.egress = egress;
            config.network.nat_gateways = nat_gateways;
            let nodes = desired_nodes(&config, &["a".into(), "b".into(), "c".into()], "us-east-1");
            let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
            let derived: std::collections::BTreeMap<_, _> = recorded_graph(&ids).into_iter().collect();
            for node in &nodes {
                let mut want = node.deps.clone();
                let mut got = derived[&node.id].clone();
                // The one deliberate extra: a route table is torn down before its subnets (see recorded_graph).
                if crate::steps::kind_of(&node.id) == "rtb" {
                    got.retain(|d| !d.contains("subnet/"));
                }
                want.sort();
                got.sort();
                assert_eq!(got, want, "dependencies of {} with egress {egress:?} {nat_gateways:?}", node.id);
            }
        }
    }

    #[test]
    fn peer_env_names_are_shell_safe() {
        assert_eq!(peer_env_name("api-gw"), "API_GW_URL");
        assert_eq!(peer_env_name("service2"), "SERVICE2_URL");
    }

    #[test]
    fn subnets_are_carved_inside_the_vpc_without_overlap() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shop.toml")).unwrap();
        let config = Config::parse(Path::new("shop.toml"), &text).unwrap();
        let cidrs: Vec<String> = (0..3).map(|i| subnet_cidr(&config, i)).collect();
        assert_eq!(cidrs, ["10.20.0.0/19", "10.20.32.0/19", "10.20.64.0/19"]);
    }
}
