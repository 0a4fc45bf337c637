//! `secep status` and `secep plan`: read the config, the state and the live stack (batched, never mutating), and
//! show how they compare. Exit codes follow `terraform plan -detailed-exitcode`: 0 in sync, 2 differences, 1 error.

use anyhow::Result;

use super::{Common, Opened, exit, open};
use crate::config::Config;
use crate::engine::{Action, Audit, NodeStatus, Verdict, audit, desired_and_live, diff::diff};
use crate::model::NodeId;
use crate::output::report::{
    ApiCalls, ExtraPath, LoadBalancerStatus, Namespace, PlanReport, PlanSummary, PublicStatus, Reachability,
    ServiceStatus, StatusReport,
};
use crate::output::{Console, short_id};
use crate::resource::{Facts, Live};

/// Everything both commands show.
struct Inspection {
    config: Config,
    region: String,
    state_file: String,
    statuses: Vec<NodeStatus>,
    live: Live,
    audit: Audit,
    calls: crate::aws::CallSummary,
    clients: crate::aws::Clients,
}

async fn inspect(common: &Common, console: &Console) -> Result<Inspection> {
    let Opened { config, clients, state, .. } = open(common, console, None).await?;
    let (nodes, live) = desired_and_live(&config, &state, &clients).await?;
    let statuses = diff(&nodes, &state, &live)?;
    let audit = audit(&config, &live);
    Ok(Inspection {
        region: clients.region.clone(),
        state_file: state.location().to_string(),
        calls: clients.calls.summary(),
        clients,
        config,
        statuses,
        live,
        audit,
    })
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::InSync => "in sync".into(),
        Verdict::NotCreated => "not created".into(),
        Verdict::MissingLive => "MISSING LIVE (deleted outside secep)".into(),
        Verdict::Drifted(fields) => format!("DRIFTED: {}", fields.join("; ")),
        Verdict::ConfigChanged => "config changed".into(),
        Verdict::NotInConfig => "recorded, not in config".into(),
        Verdict::Extra => "EXTRA (tagged for the stack, not recorded)".into(),
        Verdict::OtherLineage(lineage) => format!(
            "ANOTHER STATE's (tagged for the stack by {}; `up --adopt` takes it)",
            lineage.as_deref().map_or("a state file without lineage".to_string(), |l| format!("lineage {l}"))
        ),
        Verdict::NotOwned => "NOT OWNED (tagged as another stack's or untagged; never changed)".into(),
    }
}

pub async fn status(common: &Common, console: &Console) -> Result<u8> {
    let i = inspect(common, console).await?;
    let in_sync = i.statuses.iter().all(|s| s.verdict == Verdict::InSync) && i.audit.is_clean();
    let ns = i.live.get(&NodeId::Namespace);
    let mut services: Vec<ServiceStatus> = i
        .config
        .services
        .values()
        .map(|s| {
            let facts = i.live.get(&NodeId::Service(s.name.clone())).and_then(|l| match &l.facts {
                Facts::Service(f) => Some(f.clone()),
                _ => None,
            });
            let instances = i.live.get(&NodeId::SdService(s.name.clone())).and_then(|l| match &l.facts {
                Facts::SdService(f) => f.instances,
                _ => None,
            });
            ServiceStatus {
                service: s.name.clone(),
                endpoint: i.config.endpoint(s),
                desired: facts.as_ref().map(|f| f.desired),
                running: facts.as_ref().map(|f| f.running),
                pending: facts.as_ref().map(|f| f.pending),
                rollout: facts.as_ref().and_then(|f| f.rollout.clone()),
                rollout_reason: facts.as_ref().and_then(|f| f.rollout_reason.clone()),
                failed_tasks: facts.as_ref().map(|f| f.failed_tasks),
                failed_rollout: facts.as_ref().and_then(|f| f.failed_rollout.clone()),
                stopped_tasks: Vec::new(),
                cloud_map_instances: instances,
                no_healthy_target: false,
            }
        })
        .collect();
    let load_balancer = load_balancer_status(&i).await;
    for p in load_balancer.iter().flat_map(|lb| &lb.services) {
        let Some(s) = services.iter_mut().find(|s| s.service == p.service) else { continue };
        s.no_healthy_target =
            p.targets.as_ref().is_some_and(|t| t.healthy == 0 && t.unhealthy > 0) && s.running.unwrap_or(0) > 0;
    }
    // Only a service in trouble costs the extra reads: why its tasks stopped is what the user needs.
    let cluster = i.live.get(&NodeId::Cluster).map(|c| c.id.clone());
    for s in services.iter_mut().filter(|s| s.unhealthy()) {
        if let Some(cluster) = &cluster {
            s.stopped_tasks = crate::engine::rollout::stopped_reasons(&i.clients.ecs, cluster, &s.service).await;
        }
    }
    let unhealthy: Vec<ServiceStatus> = services.iter().filter(|s| s.unhealthy()).cloned().collect();

    let mut text = format!(
        "Stack {} in {} (state {})\nNamespace {} ({})\n\n",
        i.config.stack.name,
        i.region,
        i.state_file,
        i.config.namespace.name,
        ns.map_or("not live".to_string(), |n| n.id.clone())
    );
    let id = |v: &Option<String>| v.as_deref().map_or("-".to_string(), short_id);
    let node_w = i.statuses.iter().map(|s| s.node.to_string().len()).max().unwrap_or(4).max(4);
    let kind_w = i.statuses.iter().map(|s| s.kind.len()).max().unwrap_or(4).max(4);
    let id_w = i.statuses.iter().flat_map(|s| [id(&s.recorded).len(), id(&s.live).len()]).max().unwrap_or(8).max(8);
    let header = ["NODE", "KIND", "DESIRED", "RECORDED", "LIVE", "VERDICT"];
    text.push_str(&format!(
        "{:<node_w$}  {:<kind_w$}  {:<8} {:<id_w$}  {:<id_w$}  {}\n",
        header[0], header[1], header[2], header[3], header[4], header[5]
    ));
    for s in &i.statuses {
        text.push_str(&format!(
            "{:<node_w$}  {:<kind_w$}  {:<8} {:<id_w$}  {:<id_w$}  {}\n",
            s.node.to_string(),
            s.kind,
            if s.desired { "yes" } else { "no" },
            id(&s.recorded),
            id(&s.live),
            verdict_text(&s.verdict)
        ));
    }
    text.push_str(&format!(
        "\n{:<20} {:>7} {:>7} {:>7} {:<12} {:>9}  {}\n",
        "SERVICE", "DESIRED", "RUNNING", "PENDING", "ROLLOUT", "CLOUD MAP", "ENDPOINT"
    ));
    let n = |v: Option<i32>| v.map_or("-".to_string(), |v| v.to_string());
    for s in &services {
        text.push_str(&format!(
            "{:<20} {:>7} {:>7} {:>7} {:<12} {:>9}  {}\n",
            s.service,
            n(s.desired),
            n(s.running),
            n(s.pending),
            s.rollout.as_deref().unwrap_or("-"),
            n(s.cloud_map_instances),
            s.endpoint
        ));
    }
    if let Some(lb) = &load_balancer {
        let url_w = lb.services.iter().map(|p| p.url.len()).max().unwrap_or(3).max(3);
        text.push_str(&format!(
            "\nLoad balancer {} ({})\n{:<20} {:<url_w$}  {}\n",
            lb.dns_name.as_deref().unwrap_or("not live"),
            lb.state.as_deref().unwrap_or("-"),
            "PUBLIC",
            "URL",
            "TARGETS"
        ));
        for p in &lb.services {
            let targets = p.targets.as_ref().map_or("-".to_string(), |t| t.summary());
            text.push_str(&format!("{:<20} {:<url_w$}  {targets}\n", p.service, p.url));
            for reason in p.targets.iter().flat_map(|t| &t.reasons) {
                text.push_str(&format!("  unhealthy: {reason}\n"));
            }
        }
    }
    for s in unhealthy.iter().filter(|s| s.no_healthy_target && s.failed_rollout.is_none()) {
        text.push_str(&format!("\n{}: no task passes the load balancer's health check\n", s.service));
    }
    for s in unhealthy.iter().filter(|s| !s.no_healthy_target || s.failed_rollout.is_some()) {
        let why = s.failed_rollout.as_deref().or(s.rollout_reason.as_deref()).unwrap_or("tasks keep failing to start");
        text.push_str(&format!(
            "\n{}: rollout {}: {why} ({} failed task(s))\n",
            s.service,
            if s.failed_rollout.is_some() { "FAILED" } else { "STUCK" },
            s.failed_tasks.unwrap_or(0)
        ));
        for t in &s.stopped_tasks {
            text.push_str(&format!("  stopped task {t}\n"));
        }
    }
    let internet = crate::engine::audit::internet(&i.config, &i.live, &i.audit);
    text.push_str(&reachability_matrix(&i.config, &i.audit, &internet));
    text.push_str(&format!("\nEgress: {}", egress_text(&i.config)));
    if i.config.network.egress == crate::config::Egress::None {
        console.warn(
            "network.egress = \"none\": tasks cannot pull images from ECR or Docker Hub, nor ship logs to CloudWatch; only images reachable inside the VPC will start\n  hint: use egress = \"endpoints\" (VPC endpoints) or \"nat\"",
        );
    }
    let differences = i.statuses.iter().filter(|s| s.verdict != Verdict::InSync).count();
    let calls = i.clients.calls.summary();
    text.push_str(&format!(
        "\n{} in sync, {differences} differ;{} reachability {}; {} API calls, {} mutating",
        i.statuses.len() - differences,
        if unhealthy.is_empty() {
            String::new()
        } else {
            format!(" {} service(s) failing their rollout;", unhealthy.len())
        },
        if i.audit.is_clean() { "as declared" } else { "NOT as declared" },
        calls.calls,
        calls.mutating
    ));
    console.result(&text);
    console.report(&StatusReport {
        command: "status",
        stack: &i.config.stack.name,
        region: &i.region,
        state_file: &i.state_file,
        in_sync,
        egress: i.config.network.egress,
        namespace: Namespace { name: &i.config.namespace.name, id: ns.map(|n| n.id.clone()) },
        nodes: &i.statuses,
        services,
        reachability: Reachability { internet, ..Reachability::of(&i.audit) },
        load_balancer,
        api_calls: ApiCalls::from(&calls),
    });
    Ok(if !unhealthy.is_empty() {
        exit::UNHEALTHY
    } else if in_sync {
        exit::OK
    } else {
        exit::DIFFERENCES
    })
}

/// One line on how tasks get out of the private subnets.
fn egress_text(config: &Config) -> String {
    use crate::config::{Egress, NatGateways};
    match (config.network.egress, config.network.nat_gateways) {
        (Egress::Endpoints, _) => {
            "VPC endpoints (ecr.api, ecr.dkr, logs; S3 gateway); services may open HTTPS only to them".to_string()
        }
        (Egress::Nat, NatGateways::One) => "one NAT gateway for all AZs; services may open HTTPS anywhere".to_string(),
        (Egress::Nat, NatGateways::PerAz) => "a NAT gateway per AZ; services may open HTTPS anywhere".to_string(),
        (Egress::None, _) => "none: no way out of the VPC".to_string(),
    }
}

/// The load balancer's DNS name and state, and per public service its URL and what the load balancer thinks of
/// its tasks (one DescribeTargetHealth per public service). `None` when no service is public and none was.
async fn load_balancer_status(i: &Inspection) -> Option<LoadBalancerStatus> {
    let live = i.live.get(&NodeId::LoadBalancer);
    let public: Vec<_> = i.config.public_services().collect();
    if public.is_empty() && live.is_none() {
        return None;
    }
    let facts = live.and_then(|l| match &l.facts {
        Facts::LoadBalancer(f) => Some(f.clone()),
        _ => None,
    });
    let dns = facts.as_ref().map(|f| f.dns_name.clone()).filter(|d| !d.is_empty());
    let mut services = Vec::new();
    for (svc, p) in public {
        let tg = i.live.get(&NodeId::TargetGroup(svc.name.clone())).map(|t| t.id.clone());
        let targets = match tg {
            Some(tg) => crate::engine::rollout::target_health(&i.clients.elb, &tg).await.ok(),
            None => None,
        };
        services.push(PublicStatus {
            service: svc.name.clone(),
            url: p.url(dns.as_deref()),
            listener_port: p.port,
            targets,
        });
    }
    Some(LoadBalancerStatus { dns_name: dns, state: facts.map(|f| f.state), services })
}

/// Who may reach whom, from the live rules: a matrix over the declared services (and, with a load balancer, the
/// internet), then every extra and missing path.
fn reachability_matrix(config: &Config, audit: &Audit, internet: &[crate::engine::Path]) -> String {
    let names: Vec<&str> = config.services.keys().map(String::as_str).collect();
    let cells = internet.iter().map(|p| p.ports.len());
    let width = names.iter().map(|n| n.len()).chain(cells).max().unwrap_or(4).max(10) + 2;
    let mut out =
        format!("\nReachability from live security group rules (row calls column):\n{:<width$}", "FROM \\ TO");
    for n in &names {
        out.push_str(&format!("{n:<width$}"));
    }
    let has_lb = config.public_services().next().is_some() || !internet.is_empty();
    let rows: Vec<&str> = names.iter().copied().chain(has_lb.then_some("internet")).collect();
    for from in &rows {
        out.push_str(&format!("\n{from:<width$}"));
        for to in &names {
            let paths = if *from == "internet" { internet } else { &audit.allowed[..] };
            let ports: Vec<&str> =
                paths.iter().filter(|p| p.from == *from && p.to == *to).map(|p| p.ports.as_str()).collect();
            let cell = if ports.is_empty() { "-".to_string() } else { ports.join(",") };
            out.push_str(&format!("{cell:<width$}"));
        }
    }
    out.push('\n');
    for (p, rule) in &audit.extra {
        out.push_str(&format!(
            "EXTRA path: {} -> {} on {} (rule {rule}), not declared in `calls`\n",
            p.from, p.to, p.ports
        ));
    }
    for p in &audit.missing {
        out.push_str(&format!("MISSING path: {} -> {} on {}, declared but not allowed live\n", p.from, p.to, p.ports));
    }
    out
}

pub async fn plan(common: &Common, console: &Console) -> Result<u8> {
    let i = inspect(common, console).await?;
    let paint = |code: &str, text: String| console.paint(code, text);
    let mut text = format!("Plan for stack {} in {}:\n", i.config.stack.name, i.region);
    let (mut create, mut update, mut delete, mut unchanged, mut unsupported) = (0, 0, 0, 0, 0);
    for s in &i.statuses {
        let line = match s.action {
            Action::Create => {
                create += 1;
                paint("32", format!("  + create     {}", s.node))
            }
            Action::Adopt => {
                update += 1;
                paint(
                    "33",
                    format!(
                        "  ~ adopt      {}  (tagged for the stack, not recorded: an interrupted run made it)",
                        s.node
                    ),
                )
            }
            Action::Recreate => {
                create += 1;
                paint("32", format!("  + recreate   {}  (deleted outside secep)", s.node))
            }
            Action::Update => {
                update += 1;
                paint("33", format!("  ~ update     {}  ({})", s.node, verdict_text(&s.verdict)))
            }
            Action::Delete => {
                delete += 1;
                paint("31", format!("  - delete     {}  (no longer in the config)", s.node))
            }
            Action::Replace => {
                unsupported += 1;
                paint("35", format!("  ! replace    {}  (a field AWS cannot change in place; `up` refuses)", s.node))
            }
            Action::Unsupported => {
                unsupported += 1;
                paint("35", format!("  ! untouched  {}  ({}; not handled by `up`)", s.node, verdict_text(&s.verdict)))
            }
            Action::NoOp => {
                unchanged += 1;
                continue;
            }
        };
        text.push_str(&line);
        text.push('\n');
    }
    for (p, rule) in &i.audit.extra {
        text.push_str(&paint(
            "31",
            format!("  - revoke     {rule}  ({} -> {} on {}, not declared)", p.from, p.to, p.ports),
        ));
        text.push('\n');
    }
    let revoke = i.audit.extra.len();
    text.push_str(&format!(
        "Plan: {create} to create, {update} to update, {delete} to delete, {revoke} to revoke, {unchanged} unchanged{}. ({} API calls, {} mutating)",
        if unsupported > 0 { format!(", {unsupported} not handled") } else { String::new() },
        i.calls.calls,
        i.calls.mutating
    ));
    console.result(&text);
    console.report(&PlanReport {
        command: "plan",
        stack: &i.config.stack.name,
        region: &i.region,
        summary: PlanSummary { create, update, delete, revoke, unchanged, unsupported },
        nodes: &i.statuses,
        revoke: i.audit.extra.iter().map(|(p, rule)| ExtraPath::of(p, rule)).collect(),
        api_calls: ApiCalls::from(&i.calls),
    });
    Ok(if create + update + delete + revoke + unsupported == 0 { exit::OK } else { exit::DIFFERENCES })
}
