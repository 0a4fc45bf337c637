//! The reachability audit: which paths into each service the live security group rules allow, against the edges
//! the config declares (`calls`). Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::Config;
use crate::config::public::LB_CALLER;
use crate::model::{NodeId, edges};
use crate::resource::{Live, LiveRule, Source};

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
    let services: BTreeMap<&str, &str> = live
        .nodes
        .iter()
        .filter_map(|(node, l)| match node {
            NodeId::Group(svc) => Some((l.id.as_str(), svc.as_str())),
            NodeId::LbGroup => Some((l.id.as_str(), LB_CALLER)),
            _ => None,
        })
        .collect();
    // The declared calls, and the load balancer's to each public service.
    let lb_calls = config.public_services().map(|(svc, _)| (LB_CALLER.to_string(), svc.name.clone()));
    let declared: BTreeSet<Path> = edges(config)
        .into_iter()
        .chain(lb_calls)
        .map(|(from, to)| {
            let port = config.services[&to].port;
            Path { from, to, ports: format!("tcp/{port}") }
        })
        .collect();
    let mut allowed = BTreeSet::new();
    let mut extra = Vec::new();
    for rule in &live.rules {
        // The load balancer's own ingress (the listener ports from the allowed CIDRs) is its rule set's.
        let Some(to) = services.get(rule.group_id.as_str()).filter(|to| **to != LB_CALLER) else { continue };
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

/// Which services the internet reaches, from the live rules: only through the load balancer (the tasks have no
/// public address), where its group admits a CIDR on a listener port and it may reach the service: a public
/// service's own listener port, or any of them for a service it should not reach at all. Pure.
pub fn internet(config: &Config, live: &Live, audit: &Audit) -> Vec<Path> {
    let lb_group = live.get(&NodeId::LbGroup).map(|g| g.id.as_str());
    let mut lb_ports: Vec<i32> = live
        .rules
        .iter()
        .filter(|r| Some(r.group_id.as_str()) == lb_group && matches!(r.source, Source::Cidr(_)))
        .map(|r| r.from_port)
        .collect();
    lb_ports.sort();
    lb_ports.dedup();
    let mut out = Vec::new();
    for to in config.services.keys() {
        if audit.allowed.iter().any(|p| p.from == LB_CALLER && p.to == *to) {
            let listener = config.services[to].public.as_ref().map(|p| i32::from(p.port));
            for port in lb_ports.iter().filter(|p| listener.is_none_or(|l| l == **p)) {
                out.push(Path { from: "internet".into(), to: to.clone(), ports: format!("tcp/{port} via lb") });
            }
        }
    }
    out
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
    use crate::resource::{Facts, Observed, Owner};
    use std::path::Path as FsPath;

    fn seed() -> Config {
        let text =
            std::fs::read_to_string(FsPath::new(env!("CARGO_MANIFEST_DIR")).join("config/secure-endpoints.toml"))
                .unwrap();
        Config::parse(FsPath::new("seed.toml"), &text).unwrap()
    }

    fn group(live: &mut Live, svc: &str, id: &str) {
        let facts = Facts::SecurityGroup(crate::resource::security_group::Facts::for_test(svc));
        live.nodes
            .insert(NodeId::group(svc), Observed { id: id.into(), arn: None, owner: Owner::Us, lineage: None, facts });
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
