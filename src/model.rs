//! The desired topology as nodes: one per AWS resource, with a stable id, a spec, and its dependencies.
//!
//! Node ids (`vpc`, `subnet/us-east-1a`, `sg/api`, `sg-rule/web->api`, `sd/api`, `td/api`, `svc/api`) are the keys
//! of the state file, the value of the `secep:node` tag, and what the output and logs print.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, validate_carve_bits};

/// What one node creates, with every input that decides the resource's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Spec {
    Vpc { cidr: String, name: String },
    Subnet { az: String, cidr: String, name: String },
    Cluster { name: String },
    Namespace { name: String },
    SdService { service: String, ttl: u32 },
    SecurityGroup { service: String, group_name: String, description: String },
    IngressRule { caller: String, callee: String, port: u16 },
    TaskDefinition(TaskDefinitionSpec),
    Service { service: String, desired_count: u32 },
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
}

impl Spec {
    /// Human name of the resource kind, as printed.
    pub fn kind(&self) -> &'static str {
        match self {
            Spec::Vpc { .. } => "vpc",
            Spec::Subnet { .. } => "subnet",
            Spec::Cluster { .. } => "ecs cluster",
            Spec::Namespace { .. } => "namespace",
            Spec::SdService { .. } => "cloud map service",
            Spec::SecurityGroup { .. } => "security group",
            Spec::IngressRule { .. } => "ingress rule",
            Spec::TaskDefinition(_) => "task definition",
            Spec::Service { .. } => "ecs service",
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

/// Every node the config asks for, in a deterministic order.
pub fn desired_nodes(config: &Config, azs: &[String]) -> Vec<Node> {
    let stack = &config.stack.name;
    let mut nodes = Vec::new();
    let mut push = |id: String, spec: Spec, deps: Vec<String>| nodes.push(Node { id, spec, deps });

    push("vpc".into(), Spec::Vpc { cidr: config.network.cidr.to_string(), name: stack.clone() }, vec![]);
    let subnet_ids: Vec<String> = azs.iter().map(|az| format!("subnet/{az}")).collect();
    for (i, az) in azs.iter().enumerate() {
        push(
            subnet_ids[i].clone(),
            Spec::Subnet { az: az.clone(), cidr: subnet_cidr(config, i), name: format!("{stack}-private-{az}") },
            vec!["vpc".into()],
        );
    }
    push("cluster".into(), Spec::Cluster { name: stack.clone() }, vec![]);
    push("namespace".into(), Spec::Namespace { name: config.namespace.name.clone() }, vec!["vpc".into()]);

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
        push(format!("td/{name}"), Spec::TaskDefinition(task_definition(config, svc)), vec![]);
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
        let mut deps = vec!["cluster".to_string(), format!("td/{name}"), format!("sd/{name}"), format!("sg/{name}")];
        deps.extend(subnet_ids.iter().cloned());
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

fn task_definition(config: &Config, svc: &crate::config::Service) -> TaskDefinitionSpec {
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
    ids.iter()
        .map(|id| {
            let mut deps: Vec<String> = Vec::new();
            // A twin found by tag (`sg/api#sg-123`) sits where its node would.
            let base = id.split('#').next().unwrap_or(id);
            let (kind, name) = base.split_once('/').unwrap_or((base, ""));
            match kind {
                "subnet" | "namespace" | "sg" => deps.push("vpc".into()),
                "sd" => deps.push("namespace".into()),
                "sg-rule" => {
                    if let Some((caller, callee)) = name.split_once("->") {
                        deps.push(format!("sg/{caller}"));
                        deps.push(format!("sg/{callee}"));
                    }
                }
                "svc" => {
                    deps.extend([
                        "cluster".to_string(),
                        format!("td/{name}"),
                        format!("sd/{name}"),
                        format!("sg/{name}"),
                    ]);
                    deps.extend(ids.iter().filter(|i| i.starts_with("subnet/")).cloned());
                    let inbound = format!("->{name}");
                    deps.extend(ids.iter().filter(|i| i.starts_with("sg-rule/") && i.ends_with(&inbound)).cloned());
                }
                _ => {}
            }
            deps.retain(|d| has(d));
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
        let config = Config::parse(Path::new("shop.toml"), &text).unwrap();
        let nodes = desired_nodes(&config, &["a".into(), "b".into(), "c".into()]);
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let derived: std::collections::BTreeMap<_, _> = recorded_graph(&ids).into_iter().collect();
        for node in &nodes {
            let mut want = node.deps.clone();
            let mut got = derived[&node.id].clone();
            want.sort();
            got.sort();
            assert_eq!(got, want, "dependencies of {}", node.id);
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
