//! The `--json` documents, one type per command, so that their shape is written down once and cannot drift
//! between a command's paths (an empty `down` reports the same fields as a full one).

use serde::Serialize;

use crate::aws::CallSummary;
use crate::engine::{Audit, NodeStatus, Path};

#[derive(Debug, Serialize)]
pub struct ApiCalls {
    pub total: u64,
    pub mutating: u64,
    pub retries: u64,
    pub throttled: u64,
    /// Creates and updates retried until a new id or role had propagated.
    pub propagation_retries: u64,
}

impl From<&CallSummary> for ApiCalls {
    fn from(c: &CallSummary) -> ApiCalls {
        ApiCalls {
            total: c.calls,
            mutating: c.mutating,
            retries: c.retries,
            throttled: c.throttled,
            propagation_retries: c.propagation,
        }
    }
}

/// Seconds, to the millisecond.
pub fn seconds(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 1000.0).round() / 1000.0
}

#[derive(Debug, Serialize)]
pub struct UpReport {
    pub command: &'static str,
    pub stack: String,
    pub region: String,
    pub state_file: String,
    pub ok: bool,
    pub summary: UpSummary,
    pub seconds: f64,
    pub api_calls: ApiCalls,
    pub nodes: Vec<UpNode>,
    /// The rollouts `up` waited for: one per service it created or changed (empty with `--no-wait`).
    pub rollouts: Vec<crate::engine::rollout::Rollout>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Default, Serialize)]
pub struct UpSummary {
    pub created: usize,
    pub adopted: usize,
    pub updated: usize,
    pub deleted: usize,
    pub revoked: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
}

#[derive(Debug, Serialize)]
pub struct UpNode {
    pub node: String,
    pub kind: &'static str,
    pub action: &'static str,
    pub id: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub service: String,
    pub address: String,
    pub port: u16,
    pub calls: Vec<String>,
    /// A public service's URL through the load balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DownReport {
    pub command: &'static str,
    pub stack: String,
    pub region: String,
    pub ok: bool,
    pub state_file_removed: bool,
    pub tagged_leftovers: Vec<String>,
    pub summary: DownSummary,
    pub api_calls: ApiCalls,
    pub seconds: f64,
    pub nodes: Vec<DownNode>,
}

#[derive(Debug, Default, Serialize)]
pub struct DownSummary {
    pub deleted: usize,
    pub already_gone: usize,
    pub kept: usize,
    pub not_owned: usize,
    pub failed: usize,
    pub skipped: usize,
}

#[derive(Debug, Serialize)]
pub struct DownNode {
    pub node: String,
    pub action: &'static str,
    pub detail: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Reachability<'a> {
    pub allowed: &'a [Path],
    /// What the internet reaches (through the load balancer only).
    pub internet: Vec<Path>,
    pub extra: Vec<ExtraPath<'a>>,
    pub missing: &'a [Path],
}

#[derive(Debug, Serialize)]
pub struct ExtraPath<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub ports: &'a str,
    pub rule_id: &'a str,
}

impl<'a> Reachability<'a> {
    pub fn of(audit: &'a Audit) -> Reachability<'a> {
        Reachability {
            allowed: &audit.allowed,
            internet: Vec::new(),
            extra: audit.extra.iter().map(|(p, rule)| ExtraPath::of(p, rule)).collect(),
            missing: &audit.missing,
        }
    }
}

impl<'a> ExtraPath<'a> {
    pub fn of(p: &'a Path, rule_id: &'a str) -> ExtraPath<'a> {
        ExtraPath { from: &p.from, to: &p.to, ports: &p.ports, rule_id }
    }
}

#[derive(Debug, Serialize)]
pub struct StatusReport<'a> {
    pub command: &'static str,
    pub stack: &'a str,
    pub region: &'a str,
    pub state_file: &'a str,
    pub in_sync: bool,
    pub egress: crate::config::Egress,
    pub namespace: Namespace<'a>,
    pub nodes: &'a [NodeStatus],
    pub services: Vec<ServiceStatus>,
    pub reachability: Reachability<'a>,
    /// The stack's load balancer, when a service is public.
    pub load_balancer: Option<LoadBalancerStatus>,
    pub api_calls: ApiCalls,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadBalancerStatus {
    pub dns_name: Option<String>,
    pub state: Option<String>,
    pub services: Vec<PublicStatus>,
}

/// A public service as the internet sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PublicStatus {
    pub service: String,
    pub url: String,
    pub listener_port: u16,
    /// What the load balancer thinks of its tasks (`None`: not read: no target group live).
    pub targets: Option<crate::engine::rollout::TargetHealth>,
}

#[derive(Debug, Serialize)]
pub struct Namespace<'a> {
    pub name: &'a str,
    pub id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    pub endpoint: String,
    pub desired: Option<i32>,
    pub running: Option<i32>,
    pub pending: Option<i32>,
    pub rollout: Option<String>,
    pub rollout_reason: Option<String>,
    pub failed_tasks: Option<i32>,
    /// Set when a deployment failed (and ECS rolled back, or the service runs nothing new): why.
    pub failed_rollout: Option<String>,
    /// Why the latest stopped tasks stopped, read only when the rollout failed or tasks keep failing.
    pub stopped_tasks: Vec<String>,
    pub cloud_map_instances: Option<i32>,
    /// Behind the load balancer: none of its running tasks passes the health check.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_healthy_target: bool,
}

impl ServiceStatus {
    /// A rollout that failed, was rolled back, or keeps failing tasks, or a public service the load balancer finds
    /// no healthy task of: the service does not run as deployed.
    pub fn unhealthy(&self) -> bool {
        self.failed_rollout.is_some()
            || (self.rollout.as_deref() == Some("IN_PROGRESS") && self.failed_tasks.unwrap_or(0) > 0)
            || self.no_healthy_target
    }
}

#[derive(Debug, Serialize)]
pub struct PlanReport<'a> {
    pub command: &'static str,
    pub stack: &'a str,
    pub region: &'a str,
    pub summary: PlanSummary,
    pub nodes: &'a [NodeStatus],
    pub revoke: Vec<ExtraPath<'a>>,
    pub api_calls: ApiCalls,
}

#[derive(Debug, Default, Serialize)]
pub struct PlanSummary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub revoke: usize,
    pub unchanged: usize,
    pub unsupported: usize,
}

#[derive(Debug, Serialize)]
pub struct StateReport {
    pub command: &'static str,
    pub location: String,
    pub exists: bool,
    pub stack: String,
    pub region: String,
    pub lineage: String,
    pub serial: u64,
    pub resources: usize,
    /// For an S3 state: the bucket's region, history (versioning or KEY.bak), ETag, version id, encryption.
    pub details: std::collections::BTreeMap<String, String>,
    pub lock_holder: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MigrateReport {
    pub command: &'static str,
    pub stack: String,
    pub from: String,
    pub to: String,
    pub resources: usize,
    pub lineage: String,
}
