//! The reachability audit: which paths into each service the live security group rules allow, against the edges
//! the config declares (`calls`). Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::Config;
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
            _ => None,
        })
        .collect();
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
