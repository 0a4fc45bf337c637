//! The TOML model of a stack and its validation.
//!
//! Loading never touches AWS: a config either comes back whole and valid, or as a [`ConfigError`] that lists every
//! problem with its file, line and field.

pub mod public;
mod reader;
pub mod secrets;
mod validate;

pub use validate::carve_bits as validate_carve_bits;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use toml::de::{DeTable, DeValue};

use reader::{Located, Problems, Section, line_col};

pub const DEFAULT_CPU: u32 = 256;
pub const DEFAULT_MEMORY: u32 = 512;
pub const DEFAULT_DESIRED_COUNT: u32 = 1;
pub const DEFAULT_DNS_TTL: u32 = 10;
pub const DEFAULT_LOG_RETENTION_DAYS: u32 = 30;
/// The retention periods CloudWatch Logs accepts (PutRetentionPolicy).
pub const LOG_RETENTION_DAYS: [u32; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/// A validated stack description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub stack: Stack,
    pub network: Network,
    pub namespace: Namespace,
    pub logs: Logs,
    pub state: StateConfig,
    /// Keyed and ordered by service name.
    pub services: BTreeMap<String, Service>,
    /// What is allowed but probably a mistake (a secret-looking plain environment value), for the commands to show.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub name: String,
    pub region: Option<String>,
    /// An existing task execution role; otherwise secep creates one for the stack.
    pub execution_role_arn: Option<String>,
    /// The customer-managed KMS key that encrypts the services' secrets: the execution role may decrypt with it.
    pub kms_key_arn: Option<String>,
}

/// How tasks in the private subnets reach ECR, CloudWatch Logs and S3 (image layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Egress {
    /// Interface endpoints for ecr.api, ecr.dkr and logs, a gateway endpoint for S3; no route to the internet.
    Endpoints,
    /// Public subnets, an internet gateway and NAT gateway(s): tasks reach anything on 443.
    Nat,
    /// No way out of the VPC: images must be reachable inside it.
    None,
}

impl Egress {
    pub fn as_str(self) -> &'static str {
        match self {
            Egress::Endpoints => "endpoints",
            Egress::Nat => "nat",
            Egress::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatGateways {
    /// One NAT gateway for all AZs: cheaper, but an AZ outage there cuts every AZ's egress.
    One,
    PerAz,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logs {
    pub retention_days: u32,
}

/// `[state]`: where the state lives when `--state` does not say (default: a local file under `.secep/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateConfig {
    /// `s3://BUCKET/KEY` or a local path.
    pub url: Option<crate::state::Location>,
    /// SSE-KMS key (id, ARN or alias) for an S3 state; SSE-S3 without it.
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub cidr: Ipv4Net,
    pub max_azs: usize,
    /// Explicit availability zones; otherwise the first `max_azs` the region offers.
    pub azs: Option<Vec<String>>,
    /// Explicit private subnet CIDRs, one per AZ; otherwise carved from `cidr`.
    pub subnet_cidrs: Option<Vec<Ipv4Net>>,
    pub egress: Egress,
    pub nat_gateways: NatGateways,
    /// Explicit public subnet CIDRs (egress = "nat" only), one per AZ; otherwise carved after the private ones.
    pub public_subnet_cidrs: Option<Vec<Ipv4Net>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub dns_ttl: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub image: String,
    pub port: u16,
    pub cpu: u32,
    pub memory: u32,
    pub desired_count: u32,
    pub dns_ttl: u32,
    /// Names of the services this one calls, in config order.
    pub calls: Vec<String>,
    pub environment: BTreeMap<String, String>,
    /// The IAM role the task's containers run as (`taskRoleArn`), if any.
    pub task_role_arn: Option<String>,
    /// Container variables fetched by ECS at start from Secrets Manager or SSM: name → ARN (`valueFrom`).
    pub secrets: BTreeMap<String, String>,
    /// S3 buckets the tasks use (with their task role): the S3 endpoint lets the role through to these only.
    pub s3_buckets: Vec<String>,
    /// Served by the stack's internet-facing load balancer (`[services.<name>.public]`).
    pub public: Option<public::Public>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })?;
        Config::parse(path, &source)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
        let (doc, syntax_errors) = DeTable::parse_recoverable(source);
        let mut problems = Problems::default();
        for e in &syntax_errors {
            problems.add("", e.span().unwrap_or(0..0), format!("invalid TOML: {}", e.message().trim()));
        }
        if !syntax_errors.is_empty() {
            return Err(ConfigError::invalid(path, source, problems));
        }
        let (mut config, spans) = read_config(path, &doc, &mut problems);
        config.warnings = validate::check(&config, &spans, &mut problems);
        if problems.0.is_empty() { Ok(config) } else { Err(ConfigError::invalid(path, source, problems)) }
    }

    /// The services behind the load balancer, by name.
    pub fn public_services(&self) -> impl Iterator<Item = (&Service, &public::Public)> {
        self.services.values().filter_map(|s| s.public.as_ref().map(|p| (s, p)))
    }

    /// Whether the VPC has public subnets: for NAT gateways or for the load balancer.
    pub fn has_public_subnets(&self) -> bool {
        self.network.egress == Egress::Nat || self.public_services().next().is_some()
    }

    /// The DNS name and port callers use to reach `service`.
    pub fn endpoint(&self, service: &Service) -> String {
        format!("{}.{}:{}", service.name, self.namespace.name, service.port)
    }
}

/// Why a config could not be used. Every variant tells the user what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {reason}\n  hint: pass the file with -c/--config (default: secep.toml)", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}", render_problems(path, problems))]
    Invalid { path: PathBuf, problems: Vec<LocatedProblem> },
}

/// A problem with its line and column resolved, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedProblem {
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn invalid(path: &Path, source: &str, problems: Problems) -> ConfigError {
        let mut located: Vec<LocatedProblem> = problems
            .0
            .into_iter()
            .map(|p| {
                let (line, column) = line_col(source, p.span.start);
                LocatedProblem { line, column, field: p.field, message: p.message }
            })
            .collect();
        located.sort_by_key(|a| (a.line, a.column));
        ConfigError::Invalid { path: path.to_path_buf(), problems: located }
    }

    pub fn problems(&self) -> &[LocatedProblem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Unreadable { .. } => &[],
        }
    }
}

fn render_problems(path: &Path, problems: &[LocatedProblem]) -> String {
    let mut out =
        format!("{} has {} problem{}:", path.display(), problems.len(), if problems.len() == 1 { "" } else { "s" });
    for p in problems {
        let field = if p.field.is_empty() { String::new() } else { format!(" {}:", p.field) };
        out.push_str(&format!("\n  {}:{}:{}:{field} {}", path.display(), p.line, p.column, p.message));
    }
    out
}

impl fmt::Display for LocatedProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.line, self.column, self.field, self.message)
    }
}

// ---- reading the document into the model (types and presence; semantic rules live in validate.rs) ----

/// Reads the document into the model. Values that are missing or unreadable are reported and replaced by
/// placeholders, so that every other check still runs and all problems are reported together; the placeholders never
/// escape, because any problem makes `parse` fail.
fn read_config(path: &Path, doc: &toml::Spanned<DeTable<'_>>, problems: &mut Problems) -> (Config, validate::Spans) {
    let mut root = Section::new("", doc.get_ref(), doc.span());

    let (stack_name, region, execution_role_arn, kms_key_arn) = match root.table("stack", problems) {
        Some(mut s) => {
            let name = required(s.string("name", problems), &s, "name", problems);
            let region = s.string("region", problems);
            let role = s.string("execution_role_arn", problems);
            let kms = s.string("kms_key_arn", problems);
            s.finish(&["name", "region", "execution_role_arn", "kms_key_arn"], problems);
            (name, region, role, kms)
        }
        None => {
            missing(&root, "stack", "add a [stack] table with `name = \"...\"`", problems);
            (None, None, None, None)
        }
    };

    let mut egress = Egress::Endpoints;
    let mut nat_gateways = NatGateways::One;
    let mut egress_spans = validate::EgressSpans::default();
    let (cidr, max_azs, azs, subnet_cidrs, public_subnet_cidrs, network_span) = match root.table("network", problems) {
        Some(mut s) => {
            let cidr = required(s.string("cidr", problems), &s, "cidr", problems);
            let max_azs = s.integer("max_azs", problems);
            let azs = s.string_list("azs", problems);
            let subnet_cidrs = s.string_list("subnet_cidrs", problems);
            let public_subnet_cidrs = s.string_list("public_subnet_cidrs", problems);
            if let Some(e) = s.string("egress", problems) {
                egress = match e.value.as_str() {
                    "endpoints" => Egress::Endpoints,
                    "nat" => Egress::Nat,
                    "none" => Egress::None,
                    other => {
                        problems.add(
                            "network.egress",
                            e.span.clone(),
                            format!("`{other}` is not an egress mode: use \"endpoints\" (VPC endpoints, the default), \"nat\" (NAT gateways) or \"none\" (no way out)"),
                        );
                        Egress::Endpoints
                    }
                };
                egress_spans.egress = Some(e.span);
            }
            if let Some(v) = s.value("nat_gateways") {
                nat_gateways = match v.get_ref() {
                    DeValue::Integer(i) if i.as_str() == "1" => NatGateways::One,
                    DeValue::String(t) if t == "one" => NatGateways::One,
                    DeValue::String(t) if t == "per_az" => NatGateways::PerAz,
                    _ => {
                        problems.add(
                            "network.nat_gateways",
                            v.span(),
                            "must be 1 (one NAT gateway for all AZs) or \"per_az\" (one per AZ)",
                        );
                        NatGateways::One
                    }
                };
                egress_spans.nat_gateways = Some(v.span());
            }
            egress_spans.public_subnet_cidrs =
                public_subnet_cidrs.as_ref().map(|l| l.iter().map(|c| c.span.clone()).collect());
            let span = s.span();
            s.finish(
                &["cidr", "max_azs", "azs", "subnet_cidrs", "egress", "nat_gateways", "public_subnet_cidrs"],
                problems,
            );
            (cidr, max_azs, azs, subnet_cidrs, public_subnet_cidrs, span)
        }
        None => {
            missing(&root, "network", "add a [network] table with `cidr = \"10.0.0.0/16\"`", problems);
            (None, None, None, None, None, root.span())
        }
    };

    let mut retention_days = DEFAULT_LOG_RETENTION_DAYS;
    if let Some(mut s) = root.table("logs", problems) {
        if let Some(days) = s.integer("retention_days", problems) {
            if LOG_RETENTION_DAYS.iter().any(|d| i64::from(*d) == days.value) {
                retention_days = days.value as u32;
            } else {
                problems.add(
                    "logs.retention_days",
                    days.span,
                    format!(
                        "{} is not a retention CloudWatch Logs accepts; use one of {LOG_RETENTION_DAYS:?}",
                        days.value
                    ),
                );
            }
        }
        s.finish(&["retention_days"], problems);
    }

    let mut state = StateConfig::default();
    if let Some(mut s) = root.table("state", problems) {
        if let Some(url) = s.string("url", problems) {
            match crate::state::Location::parse(&url.value) {
                Ok(location) => state.url = Some(location),
                Err(why) => problems.add("state.url", url.span, why),
            }
        }
        if let Some(key) = s.string("kms_key_id", problems) {
            if key.value.trim().is_empty() {
                problems.add(
                    "state.kms_key_id",
                    key.span,
                    "is empty: give a KMS key id, ARN or alias, or leave it out for SSE-S3",
                );
            } else if matches!(state.url, Some(crate::state::Location::Local(_))) {
                problems.add("state.kms_key_id", key.span, "only applies to an S3 state, and `url` is a local path");
            } else {
                state.kms_key_id = Some(key.value);
            }
        }
        s.finish(&["url", "kms_key_id"], problems);
    }

    let (ns_name, ns_ttl) = match root.table("namespace", problems) {
        Some(mut s) => {
            let name = required(s.string("name", problems), &s, "name", problems);
            let ttl = s.integer("dns_ttl", problems);
            s.finish(&["name", "dns_ttl"], problems);
            (name, ttl)
        }
        None => {
            missing(&root, "namespace", "add a [namespace] table with `name = \"example.local\"`", problems);
            (None, None)
        }
    };

    let mut raw_services = Vec::new();
    match root.table("services", problems) {
        Some(mut s) => {
            for (name, value) in s.entries() {
                let field = s.field(&name.value);
                match value.get_ref() {
                    DeValue::Table(t) => {
                        raw_services.push(read_service(name, Section::new(field, t, value.span()), problems))
                    }
                    other => problems.add(
                        field,
                        value.span(),
                        format!("expected a table [services.{}], found {}", name.value, other.type_str()),
                    ),
                }
            }
            if raw_services.is_empty() {
                problems.add("services", s.span(), "no services declared; add at least one [services.<name>] table");
            }
        }
        None => missing(&root, "services", "declare at least one [services.<name>] table", problems),
    }
    root.finish(&["stack", "network", "namespace", "logs", "state", "services"], problems);

    let cidr_value = cidr.as_ref().and_then(|c| validate::parse_cidr("network.cidr", c, problems));
    let max_azs_value = match &max_azs {
        Some(n) if n.value < 1 => {
            problems.add("network.max_azs", n.span.clone(), format!("must be at least 1, got {}", n.value));
            None
        }
        Some(n) if n.value > 16 => {
            problems.add("network.max_azs", n.span.clone(), format!("must be at most 16, got {}", n.value));
            None
        }
        Some(n) => Some(n.value as usize),
        None => Some(azs.as_ref().map_or(2, |a| a.len().max(1))),
    };
    let subnet_values = subnet_cidrs.as_ref().map(|list| {
        list.iter().filter_map(|c| validate::parse_cidr("network.subnet_cidrs", c, problems)).collect::<Vec<_>>()
    });
    let public_subnet_values = public_subnet_cidrs.as_ref().map(|list| {
        list.iter().filter_map(|c| validate::parse_cidr("network.public_subnet_cidrs", c, problems)).collect::<Vec<_>>()
    });
    let dns_ttl = ns_ttl.as_ref().map_or(Some(DEFAULT_DNS_TTL), |t| validate::ttl("namespace.dns_ttl", t, problems));

    let mut services = BTreeMap::new();
    let mut service_spans = BTreeMap::new();
    for raw in raw_services {
        let ttl = match &raw.dns_ttl {
            Some(t) => validate::ttl(&format!("services.{}.dns_ttl", raw.name.value), t, problems),
            None => dns_ttl,
        };
        let number = |v: &Option<Located<i64>>, default: u32| {
            v.as_ref().map_or(default, |n| n.value.clamp(0, u32::MAX as i64) as u32)
        };
        services.insert(
            raw.name.value.clone(),
            Service {
                name: raw.name.value.clone(),
                image: raw.image.as_ref().map(|i| i.value.clone()).unwrap_or_default(),
                port: raw.port.as_ref().map_or(0, |p| p.value.clamp(0, u16::MAX as i64) as u16),
                cpu: number(&raw.cpu, DEFAULT_CPU),
                memory: number(&raw.memory, DEFAULT_MEMORY),
                desired_count: number(&raw.desired_count, DEFAULT_DESIRED_COUNT),
                dns_ttl: ttl.unwrap_or(DEFAULT_DNS_TTL),
                calls: raw.calls.iter().map(|c| c.value.clone()).collect(),
                environment: raw.environment.iter().map(|(k, v)| (k.value.clone(), v.value.clone())).collect(),
                task_role_arn: raw.task_role_arn.as_ref().map(|r| r.value.clone()),
                secrets: raw.secrets.iter().map(|(k, v)| (k.value.clone(), v.value.clone())).collect(),
                s3_buckets: raw.s3_buckets.iter().map(|b| b.value.clone()).collect(),
                public: raw.public.as_ref().map(public::model),
            },
        );
        service_spans.insert(raw.name.value.clone(), raw);
    }

    let config = Config {
        path: path.to_path_buf(),
        stack: Stack {
            name: stack_name.as_ref().map(|n| n.value.clone()).unwrap_or_default(),
            region: region.as_ref().map(|r| r.value.clone()),
            execution_role_arn: execution_role_arn.as_ref().map(|r| r.value.clone()),
            kms_key_arn: kms_key_arn.as_ref().map(|k| k.value.clone()),
        },
        network: Network {
            cidr: cidr_value.unwrap_or_else(|| "10.0.0.0/16".parse().expect("valid placeholder")),
            max_azs: max_azs_value.unwrap_or(1),
            azs: azs.as_ref().map(|a| a.iter().map(|z| z.value.clone()).collect()),
            subnet_cidrs: subnet_values,
            egress,
            nat_gateways,
            public_subnet_cidrs: public_subnet_values,
        },
        namespace: Namespace {
            name: ns_name.as_ref().map(|n| n.value.clone()).unwrap_or_default(),
            dns_ttl: dns_ttl.unwrap_or(DEFAULT_DNS_TTL),
        },
        logs: Logs { retention_days },
        state,
        services,
        warnings: Vec::new(),
    };
    // Spans the semantic checks need, kept beside the model so the model itself stays plain data. A `None` span
    // means the value could not be read (already reported), so its semantic checks are skipped.
    let spans = validate::Spans {
        stack_name: stack_name.map(|n| n.span),
        region: region.map(|r| r.span),
        network: network_span,
        network_ok: cidr_value.is_some() && max_azs_value.is_some(),
        max_azs: max_azs.map(|m| m.span),
        azs: azs.map(|a| a.into_iter().map(|z| z.span).collect()),
        subnet_cidrs: subnet_cidrs.map(|a| a.into_iter().map(|z| z.span).collect()),
        namespace_name: ns_name.map(|n| n.span),
        execution_role_arn: execution_role_arn.map(|r| r.span),
        kms_key_arn: kms_key_arn.map(|k| k.span),
        egress: egress_spans,
        services: service_spans,
    };
    (config, spans)
}

/// A `[services.<name>]` table as written, before semantic checks.
#[derive(Debug, Clone)]
pub(crate) struct RawService {
    pub name: Located<String>,
    pub image: Option<Located<String>>,
    pub port: Option<Located<i64>>,
    pub cpu: Option<Located<i64>>,
    pub memory: Option<Located<i64>>,
    pub desired_count: Option<Located<i64>>,
    pub dns_ttl: Option<Located<i64>>,
    pub calls: Vec<Located<String>>,
    pub environment: Vec<(Located<String>, Located<String>)>,
    pub task_role_arn: Option<Located<String>>,
    pub secrets: Vec<(Located<String>, Located<String>)>,
    pub s3_buckets: Vec<Located<String>>,
    pub public: Option<public::RawPublic>,
    pub span: std::ops::Range<usize>,
}

fn read_service(name: Located<String>, mut s: Section<'_, '_>, problems: &mut Problems) -> RawService {
    let image = required(s.string("image", problems), &s, "image", problems);
    let port = required(s.integer("port", problems), &s, "port", problems);
    let cpu = s.integer("cpu", problems);
    let memory = s.integer("memory", problems);
    let desired_count = s.integer("desired_count", problems);
    let dns_ttl = s.integer("dns_ttl", problems);
    let calls = s.string_list("calls", problems).unwrap_or_default();
    let task_role_arn = s.string("task_role_arn", problems);
    let s3_buckets = s.string_list("s3_buckets", problems).unwrap_or_default();
    let public = s.table("public", problems).map(|p| public::read(p, problems));
    let mut environment = Vec::new();
    if let Some(mut env) = s.table("environment", problems) {
        for (key, value) in env.entries() {
            // ECS environment values are strings; numbers and booleans are accepted and written as text.
            let text = match value.get_ref() {
                DeValue::String(v) => Some(v.to_string()),
                DeValue::Integer(i) => Some(i.to_string()),
                DeValue::Float(f) => Some(f.to_string()),
                DeValue::Boolean(b) => Some(b.to_string()),
                other => {
                    let field = env.field(&key.value);
                    problems.add(field, value.span(), format!("expected a string, found {}", other.type_str()));
                    None
                }
            };
            if let Some(text) = text {
                environment.push((key, Located { value: text, span: value.span() }));
            }
        }
    }
    let mut secrets = Vec::new();
    if let Some(mut table) = s.table("secrets", problems) {
        for (key, value) in table.entries() {
            match value.get_ref() {
                DeValue::String(arn) => secrets.push((key, Located { value: arn.to_string(), span: value.span() })),
                other => {
                    let field = table.field(&key.value);
                    problems.add(field, value.span(), format!("expected an ARN string, found {}", other.type_str()));
                }
            }
        }
    }
    let span = s.span();
    s.finish(
        &[
            "image",
            "port",
            "cpu",
            "memory",
            "desired_count",
            "dns_ttl",
            "calls",
            "environment",
            "task_role_arn",
            "secrets",
            "s3_buckets",
            "public",
        ],
        problems,
    );
    RawService {
        name,
        image,
        port,
        cpu,
        memory,
        desired_count,
        dns_ttl,
        calls,
        environment,
        task_role_arn,
        secrets,
        s3_buckets,
        public,
        span,
    }
}

fn required<T>(
    value: Option<Located<T>>,
    section: &Section<'_, '_>,
    key: &str,
    problems: &mut Problems,
) -> Option<Located<T>> {
    if value.is_none() && !problems.0.iter().any(|p| p.field == section.field(key)) {
        problems.add(section.field(key), section.span(), format!("missing required key `{key}`"));
    }
    value
}

fn missing(root: &Section<'_, '_>, key: &str, hint: &str, problems: &mut Problems) {
    problems.add(key, root.span().start..root.span().start, format!("missing [{key}] table; {hint}"));
}

#[cfg(test)]
mod tests;
