//! The diff of desired (config), recorded (state) and live (AWS) into a verdict and an action per node, plus the
//! reachability audit of the live security group rules. Pure: no AWS calls, unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::Config;
use crate::model::{Node, Spec, edges};
use crate::state::StateFile;
use crate::steps::live::{Facts, Live, LiveRule, Source};

/// How a node compares across the three views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "details", rename_all = "kebab-case")]
pub enum Verdict {
    InSync,
    /// In the config, never created.
    NotCreated,
    /// Recorded, but gone live: deleted outside secep.
    MissingLive,
    /// Live, but some fields differ from what the config and state say.
    Drifted(Vec<String>),
    /// The config changed since the resource was created.
    ConfigChanged,
    /// Recorded, no longer in the config.
    NotInConfig,
    /// Tagged for the stack live, unknown to the state.
    Extra,
}

/// What `up` does with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    /// Record a live resource tagged as this node that the state lost (a run killed between create and record).
    Adopt,
    /// Recreate a resource deleted behind secep's back.
    Recreate,
    /// Put a drifted resource back in place (an ECS service: UpdateService).
    Update,
    NoOp,
    /// The config dropped it: delete it (in teardown order, ownership checked).
    Delete,
    /// The config changed a field AWS cannot change in place; `up` refuses and names it.
    Replace,
    /// Tagged for the stack but not recorded: left alone (`down --adopt` removes it).
    Unsupported,
}

/// How a config change to a created node is applied.
pub fn change_action(spec: &Spec) -> Action {
    match spec {
        // A new task definition revision, a service update, a Cloud Map TTL update, a new rule before the old one
        // is revoked: all without replacing what depends on them.
        Spec::TaskDefinition(_)
        | Spec::Service { .. }
        | Spec::SdService { .. }
        | Spec::IngressRule { .. }
        | Spec::GroupRules { .. }
        | Spec::RouteTable { .. }
        | Spec::LogGroup { .. }
        | Spec::LinkedRole { .. }
        | Spec::PrefixList { .. }
        | Spec::VpcDns => Action::Update,
        Spec::Vpc { .. }
        | Spec::Subnet { .. }
        | Spec::Namespace { .. }
        | Spec::Cluster { .. }
        | Spec::SecurityGroup { .. }
        | Spec::ExecutionRole { .. }
        | Spec::Endpoint { .. }
        | Spec::InternetGateway { .. }
        | Spec::ElasticIp { .. }
        | Spec::NatGateway { .. }
        | Spec::RouteTableAssociation { .. } => Action::Replace,
    }
}

/// For a change AWS cannot make in place: what differs, and what replacing the node would destroy.
pub fn replace_reason(node: &Node) -> String {
    let what = match &node.spec {
        Spec::Vpc { cidr, .. } => format!(
            "the VPC CIDR (now {cidr}): replacing the VPC destroys every subnet, group, namespace and service of the stack"
        ),
        Spec::Subnet { cidr, az, .. } => {
            format!("subnet {cidr} in {az}: replacing a subnet moves every task of the stack")
        }
        Spec::Namespace { name } => format!(
            "the namespace name (now {name}): replacing it destroys every Cloud Map service and re-registers every ECS service"
        ),
        Spec::Cluster { name } => format!("the cluster name (now {name}): replacing it destroys every ECS service"),
        Spec::SecurityGroup { group_name, .. } => {
            format!("security group {group_name}: replacing it cuts the service off until its rules are recreated")
        }
        Spec::Endpoint { service, .. } => {
            format!("VPC endpoint {service}: replacing it cuts image pulls or logs until the new one is available")
        }
        Spec::NatGateway { .. } | Spec::ElasticIp { .. } | Spec::InternetGateway { .. } => {
            "the NAT path: replacing it cuts the tasks' way out until the new gateway is available".to_string()
        }
        _ => String::new(),
    };
    format!("{}: {what}", node.id)
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub kind: &'static str,
    pub desired: bool,
    pub recorded: Option<String>,
    pub live: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub action: Action,
}

/// Compares every desired, recorded and live node.
pub fn diff(nodes: &[Node], state: &StateFile, live: &Live) -> Vec<NodeStatus> {
    let mut out = Vec::new();
    for node in nodes {
        let recorded = state.get(&node.id);
        let live_node = live.nodes.get(&node.id);
        let (verdict, action) = match (recorded, live_node) {
            (None, None) => (Verdict::NotCreated, Action::Create),
            (None, Some(l)) if l.tagged => (Verdict::Extra, Action::Adopt),
            (None, Some(_)) => (Verdict::Extra, Action::Unsupported),
            (Some(_), None) => (Verdict::MissingLive, Action::Recreate),
            (Some(r), Some(_)) if r.digest != node.spec.digest() => (Verdict::ConfigChanged, change_action(&node.spec)),
            (Some(_), Some(l)) => {
                let drift = drift(node, &l.facts, state);
                if drift.is_empty() {
                    (Verdict::InSync, Action::NoOp)
                } else {
                    let repairable = matches!(
                        node.spec,
                        Spec::Service { .. }
                            | Spec::GroupRules { .. }
                            | Spec::RouteTable { .. }
                            | Spec::LogGroup { .. }
                    );
                    let action = if repairable { Action::Update } else { Action::Unsupported };
                    (Verdict::Drifted(drift), action)
                }
            }
        };
        out.push(NodeStatus {
            node: node.id.clone(),
            kind: node.spec.kind(),
            desired: true,
            recorded: recorded.map(|r| r.id.clone()),
            live: live_node.map(|l| l.id.clone()),
            verdict,
            action,
        });
    }
    // A node that points at another (a service at its subnets and revision, a route table at its subnets, rules at
    // their peer groups, an endpoint at its subnets or route tables) is updated when that one is recreated.
    for (i, node) in nodes.iter().enumerate() {
        let points = matches!(
            node.spec,
            Spec::Service { .. } | Spec::RouteTable { .. } | Spec::GroupRules { .. } | Spec::Endpoint { .. }
        );
        if points && out[i].action == Action::NoOp {
            let moved = node.deps.iter().any(|d| {
                out.iter().any(|s| {
                    &s.node == d
                        && (s.action == Action::Recreate || (s.action == Action::Update && d.starts_with("td/")))
                })
            });
            if moved {
                out[i].action = Action::Update;
            }
        }
    }
    for (id, record) in state.nodes() {
        if !nodes.iter().any(|n| &n.id == id) {
            out.push(NodeStatus {
                node: id.clone(),
                kind: "",
                desired: false,
                recorded: Some(record.id.clone()),
                live: live.nodes.get(id).map(|l| l.id.clone()),
                verdict: Verdict::NotInConfig,
                action: Action::Delete,
            });
        }
    }
    for (id, l) in &live.nodes {
        if l.tagged && state.get(id).is_none() && !nodes.iter().any(|n| &n.id == id) {
            out.push(NodeStatus {
                node: id.clone(),
                kind: "",
                desired: false,
                recorded: None,
                live: Some(l.id.clone()),
                verdict: Verdict::Extra,
                action: Action::Unsupported,
            });
        }
    }
    out
}

/// Fields of a live resource that differ from what it should be.
fn drift(node: &Node, facts: &Facts, state: &StateFile) -> Vec<String> {
    let recorded_id = |node: &str| state.get(node).map(|r| r.id.clone());
    let mut d = Vec::new();
    match (&node.spec, facts) {
        (Spec::Vpc { cidr, .. }, Facts::Vpc { cidr: live }) if cidr != live => {
            d.push(format!("cidr is {live}, not {cidr}"))
        }
        (Spec::Subnet { cidr, az, .. }, Facts::Subnet { cidr: lc, az: laz, public_ip_on_launch }) => {
            if cidr != lc || az != laz {
                d.push(format!("is {lc} in {laz}, not {cidr} in {az}"));
            }
            if *public_ip_on_launch {
                d.push("MapPublicIpOnLaunch is on".into());
            }
        }
        (Spec::Service { service, desired_count }, Facts::Service(s)) => {
            if s.desired != *desired_count as i32 {
                d.push(format!("desired count is {}, not {desired_count}", s.desired));
            }
            if s.public_ip {
                d.push("assigns public IPs".into());
            }
            if let Some(td) = recorded_id(&format!("td/{service}")).filter(|td| *td != s.task_definition) {
                d.push(format!("runs {}, not {td}", s.task_definition));
            }
            let subnets: BTreeSet<String> =
                node.deps.iter().filter(|n| n.starts_with("subnet/")).filter_map(|n| recorded_id(n)).collect();
            if subnets != s.subnets {
                d.push("subnets differ".into());
            }
            let groups: BTreeSet<String> = recorded_id(&format!("sg/{service}")).into_iter().collect();
            if groups != s.groups {
                d.push("security groups differ".into());
            }
            let registry = state.get(&format!("sd/{service}")).and_then(|r| r.arn.clone());
            if registry.is_some_and(|arn| s.registries != [arn]) {
                d.push("Cloud Map registry differs".into());
            }
        }
        (Spec::GroupRules { ingress, egress, .. }, Facts::GroupRules { ingress: li, egress: le }) => {
            for (direction, wanted, live) in [("ingress", ingress, li), ("egress", egress, le)] {
                let Some(wanted) = wanted else { continue };
                // A peer not recorded yet (being created) cannot be compared: the apply that records it sets it.
                let Some(want) = crate::steps::group_rules::desired_keys(wanted, recorded_id) else { continue };
                let extra: Vec<String> = live.difference(&want).map(rule_text).collect();
                let missing: Vec<String> = want.difference(live).map(rule_text).collect();
                if !extra.is_empty() {
                    d.push(format!("{direction} also allows {}", extra.join(", ")));
                }
                if !missing.is_empty() {
                    d.push(format!("{direction} lacks {}", missing.join(", ")));
                }
            }
        }
        (Spec::RouteTable { default_route, .. }, Facts::RouteTable { default_target, .. }) => {
            let target = default_route.as_deref().and_then(recorded_id);
            if default_route.is_some() && target.as_ref() != default_target.as_ref() {
                d.push(format!(
                    "default route goes to {}, not {}",
                    default_target.as_deref().unwrap_or("nowhere"),
                    target.as_deref().unwrap_or("?")
                ));
            }
        }
        (Spec::LogGroup { retention_days, .. }, Facts::LogGroup { retention_days: live })
            if *live != Some(*retention_days as i32) =>
        {
            d.push(format!(
                "retention is {}, not {retention_days} days",
                live.map_or("never expire".to_string(), |l| format!("{l} days"))
            ));
        }
        _ => {}
    }
    d
}

fn rule_text(key: &crate::steps::group_rules::RuleKey) -> String {
    let (protocol, from, to, peer) = key;
    match protocol.as_str() {
        "-1" => format!("all traffic to/from {peer}"),
        _ if from == to => format!("{protocol}/{from} {peer}"),
        _ => format!("{protocol}/{from}-{to} {peer}"),
    }
}

/// One allowed path into a service, from the live rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Path {
    /// A service name, or `anywhere (0.0.0.0/0)`, `group sg-…`, `prefix list pl-…`.
    pub from: String,
    pub to: String,
    /// `tcp/8080`, `tcp/0-65535`, `all`.
    pub ports: String,
}

/// The reachability audit: what the live rules allow against what the config declares.
#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    pub allowed: Vec<Path>,
    /// Allowed live but not declared; with the rule ids that allow them.
    pub extra: Vec<(Path, String)>,
    /// Declared but not allowed live.
    pub missing: Vec<Path>,
}

impl Audit {
    pub fn is_clean(&self) -> bool {
        self.extra.is_empty() && self.missing.is_empty()
    }
}

pub fn audit(config: &Config, live: &Live) -> Audit {
    // group id → service, from the live groups the stack owns.
    let services: BTreeMap<&str, &str> =
        live.nodes.iter().filter_map(|(node, l)| node.strip_prefix("sg/").map(|svc| (l.id.as_str(), svc))).collect();
    let declared: BTreeSet<Path> = edges(config)
        .into_iter()
        .map(|(from, to)| {
            let port = config.services[&to].port;
            Path { from, to, ports: format!("tcp/{port}") }
        })
        .collect();
    let mut allowed = BTreeSet::new();
    let mut extra = Vec::new();
    for rule in &live.rules {
        let Some(to) = services.get(rule.group_id.as_str()) else { continue };
        let path = Path { from: source_name(&rule.source, &services), to: to.to_string(), ports: ports(rule) };
        if !declared.contains(&path) {
            extra.push((path.clone(), rule.rule_id.clone()));
        }
        allowed.insert(path);
    }
    extra.sort();
    let missing = declared.iter().filter(|p| !allowed.contains(*p)).cloned().collect();
    Audit { allowed: allowed.into_iter().collect(), extra, missing }
}

fn source_name(source: &Source, services: &BTreeMap<&str, &str>) -> String {
    match source {
        Source::Group(g) => services.get(g.as_str()).map_or_else(|| format!("group {g}"), |s| s.to_string()),
        Source::Cidr(c) if c == "0.0.0.0/0" || c == "::/0" => format!("anywhere ({c})"),
        Source::Cidr(c) => format!("cidr {c}"),
        Source::PrefixList(p) => format!("prefix list {p}"),
    }
}

fn ports(rule: &LiveRule) -> String {
    match (rule.protocol.as_str(), rule.from_port, rule.to_port) {
        ("-1", _, _) => "all".into(),
        (p, from, to) if from == to => format!("{p}/{from}"),
        (p, from, to) => format!("{p}/{from}-{to}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::live::LiveNode;
    use std::path::Path as FsPath;

    fn seed() -> Config {
        let text =
            std::fs::read_to_string(FsPath::new(env!("CARGO_MANIFEST_DIR")).join("config/secure-endpoints.toml"))
                .unwrap();
        Config::parse(FsPath::new("seed.toml"), &text).unwrap()
    }

    fn group(live: &mut Live, svc: &str, id: &str) {
        live.nodes.insert(
            format!("sg/{svc}"),
            LiveNode { id: id.into(), tagged: true, facts: Facts::SecurityGroup { name: svc.into() } },
        );
    }

    fn rule(id: &str, group: &str, source: Source, port: i32) -> LiveRule {
        LiveRule {
            rule_id: id.into(),
            group_id: group.into(),
            protocol: "tcp".into(),
            from_port: port,
            to_port: port,
            source,
        }
    }

    #[test]
    fn audit_accepts_exactly_the_declared_edges() {
        let mut live = Live::default();
        group(&mut live, "service1", "sg-1");
        group(&mut live, "service2", "sg-2");
        live.rules = vec![
            rule("r1", "sg-2", Source::Group("sg-1".into()), 8080),
            rule("r2", "sg-1", Source::Group("sg-2".into()), 8080),
        ];
        let a = audit(&seed(), &live);
        assert!(a.is_clean(), "{a:?}");
        assert_eq!(a.allowed.len(), 2);
    }

    #[test]
    fn audit_flags_open_rules_wrong_ports_and_missing_edges() {
        let mut live = Live::default();
        group(&mut live, "service1", "sg-1");
        group(&mut live, "service2", "sg-2");
        live.rules = vec![
            rule("r1", "sg-2", Source::Group("sg-1".into()), 9999),
            rule("r2", "sg-1", Source::Cidr("0.0.0.0/0".into()), 8080),
            LiveRule {
                rule_id: "r3".into(),
                group_id: "sg-1".into(),
                protocol: "-1".into(),
                from_port: -1,
                to_port: -1,
                source: Source::Group("sg-1".into()),
            },
        ];
        let a = audit(&seed(), &live);
        let extra: Vec<String> =
            a.extra.iter().map(|(p, id)| format!("{} -> {} {} ({id})", p.from, p.to, p.ports)).collect();
        assert_eq!(
            extra,
            [
                "anywhere (0.0.0.0/0) -> service1 tcp/8080 (r2)",
                "service1 -> service1 all (r3)",
                "service1 -> service2 tcp/9999 (r1)"
            ]
        );
        let missing: Vec<String> = a.missing.iter().map(|p| format!("{} -> {}", p.from, p.to)).collect();
        assert_eq!(missing, ["service1 -> service2", "service2 -> service1"]);
    }
}
