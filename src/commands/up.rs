//! `secep up`: create whatever the state does not record yet, in dependency order, concurrently where the graph
//! allows, recording each resource the moment it exists.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{Common, Opened, exit, open};
use crate::aws::Clients;
use crate::config::Config;
use crate::graph::{Dag, Outcome, StopFlag, walk};
use crate::model::{Node, Spec, desired_nodes};
use crate::output::{Console, short_id};
use crate::plan::{Action, audit, diff};
use crate::state::{Record, SharedState, StateFile};
use crate::steps::live;
use crate::steps::{self, Ctx};

#[derive(Debug, Clone)]
pub struct UpArgs {
    pub operation_timeout: Duration,
    /// Replace what AWS cannot change in place (and everything built on it) instead of refusing.
    pub allow_replace: bool,
}

/// What `up` did with one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Created,
    Recreated,
    Updated,
    Adopted,
    Unchanged,
}

pub async fn run(common: &Common, args: &UpArgs, console: &Console, stop: &StopFlag) -> Result<u8> {
    let started = Instant::now();
    let Opened { config, clients, state, lock } = open(common, console, true).await?;
    console.status(
        "Deploying",
        format!("stack {} to {} (config {})", config.stack.name, clients.region, config.path.display()),
    );

    // Look at what really exists first (one batched read round): resources deleted or changed behind secep's back
    // are repaired, and resources an interrupted run created but never recorded are found instead of duplicated.
    let (nodes, live) = desired_and_live(&config, &state, &clients).await?;
    let dag = Dag::new(nodes.iter().map(|n| (n.id.clone(), n.deps.clone())))?;
    let statuses = diff(&nodes, &state, &live);
    let undeclared_ids: Vec<String> = audit(&config, &live).extra.into_iter().map(|(_, rule)| rule).collect();
    let undeclared: Vec<_> = live.rules.iter().filter(|r| undeclared_ids.contains(&r.rule_id)).cloned().collect();
    let replaced = if args.allow_replace { replacement_set(&nodes, &dag, &statuses, &state) } else { Vec::new() };
    if !args.allow_replace {
        refuse_replacements(&nodes, &statuses)?;
    }
    // Replaced nodes are deleted first (with what is dropped from the config), then created like new ones.
    let actions: Vec<Action> = nodes
        .iter()
        .map(|n| {
            if replaced.contains(&n.id) {
                return Action::Create;
            }
            statuses.iter().find(|s| s.node == n.id).map_or(Action::Create, |s| s.action)
        })
        .collect();
    let mut removed: Vec<String> =
        statuses.iter().filter(|s| s.action == Action::Delete).map(|s| s.node.clone()).collect();
    removed.extend(replaced.iter().cloned());
    let previous = Arc::new(state.nodes().clone());
    let adopted = Arc::new(live.nodes.clone());

    let state_path = state.path().to_path_buf();
    let ctx = Ctx {
        clients,
        stack: config.stack.name.clone(),
        state: SharedState::new(state),
        operation_timeout: args.operation_timeout,
        created: Default::default(),
        dependency_timeout: args.operation_timeout,
        delete_logs: false,
        task_families: live.task_families.clone().map(Arc::new),
        cluster_name_free: !live.nodes.contains_key("cluster"),
    };
    console.start_progress(nodes.len());
    let revoked = revoke_undeclared(&ctx, &undeclared, console).await?;
    let removal_failures = remove_dropped(&ctx, &removed, stop, console).await?;
    let nodes = Arc::new(nodes);
    let actions = Arc::new(actions);
    let outcomes = walk(&dag, ctx.clients.windows.ceiling(), stop, |i| {
        let (ctx, nodes, actions, console, previous, adopted) =
            (ctx.clone(), nodes.clone(), actions.clone(), console.clone(), previous.clone(), adopted.clone());
        async move { apply(&ctx, &nodes[i], actions[i], &previous, &adopted, &console).await }
    })
    .await;
    console.finish_progress();

    let code = report(
        &config,
        &ctx,
        &nodes,
        &outcomes,
        revoked,
        removed.len(),
        removal_failures,
        &state_path,
        started.elapsed(),
        console,
        stop,
    );
    if let Some(lock) = lock {
        lock.release();
    }
    code
}

/// Creates, recreates or repairs one node, or leaves it alone, as the diff decided.
async fn apply(
    ctx: &Ctx,
    node: &Node,
    action: Action,
    previous: &BTreeMap<String, Record>,
    adopted: &BTreeMap<String, crate::steps::live::LiveNode>,
    console: &Console,
) -> Result<(Done, String, Duration)> {
    let started = Instant::now();
    let recorded = ctx.state.lock().get(&node.id).cloned();
    match (action, recorded) {
        (Action::Adopt, None) => {
            let live = adopted
                .get(&node.id)
                .cloned()
                .with_context(|| format!("internal error: nothing to adopt for {}", node.id))?;
            let arn = live.id.starts_with("arn:").then(|| live.id.clone());
            let record = Record { id: live.id.clone(), arn, digest: node.spec.digest() };
            ctx.state.record(&node.id, record).await?;
            console.step("adopted", &node.id, &short_id(&live.id), Some(started.elapsed()));
            Ok((Done::Adopted, live.id, started.elapsed()))
        }
        (Action::NoOp | Action::Unsupported, Some(record)) => {
            console.skip_step();
            Ok((Done::Unchanged, record.id, Duration::ZERO))
        }
        (Action::Update, Some(record)) => {
            console.progress_message(format!("updating {}", node.id));
            let id = update(ctx, node, &record, previous).await?;
            let elapsed = started.elapsed();
            console.step("updated", &node.id, &short_id(&id), Some(elapsed));
            Ok((Done::Updated, id, elapsed))
        }
        (_, stale) => {
            console.progress_message(format!("creating {}", node.id));
            let record = steps::create(ctx, node, stale.as_ref().map(|r| r.id.as_str())).await?;
            let id = record.id.clone();
            // Recorded before anything that depends on it starts: a crash after this line loses nothing.
            ctx.state.record(&node.id, record).await.map_err(|e| {
                anyhow::Error::new(e).context(format!(
                    "created {} = {id} but could not record it; once the state can be written, `secep down --adopt` finds it by its tags",
                    node.id
                ))
            })?;
            let elapsed = started.elapsed();
            let (verb, done) =
                if stale.is_some() { ("recreated", Done::Recreated) } else { ("created", Done::Created) };
            console.step(verb, &node.id, &short_id(&id), Some(elapsed));
            Ok((done, id, elapsed))
        }
    }
}

/// Applies a change in place and records it: a new task definition revision; a service updated to its new inputs
/// (and its previous revision deregistered); a Cloud Map TTL; a rule on a new port authorized before the old one is
/// revoked. Returns the node's (possibly new) id.
async fn update(ctx: &Ctx, node: &Node, record: &Record, previous: &BTreeMap<String, Record>) -> Result<String> {
    let digest = node.spec.digest();
    let mut new_record = Record { digest: digest.clone(), ..record.clone() };
    match &node.spec {
        Spec::Service { service, desired_count } => {
            steps::service::update(ctx, &node.deps, service, *desired_count).await?;
            let td_node = format!("td/{service}");
            let now = ctx.id_of(&td_node)?;
            if let Some(old) = previous.get(&td_node).filter(|old| old.id != now) {
                // The service no longer uses the old revision: nothing stray is left behind.
                steps::delete(ctx, &td_node, old).await?;
            }
        }
        Spec::TaskDefinition(_) => {
            new_record = steps::create(ctx, node, None).await?;
        }
        Spec::SdService { ttl, .. } => steps::sd_service::update_ttl(ctx, &record.id, *ttl).await?,
        Spec::IngressRule { .. } => {
            new_record = steps::create(ctx, node, Some(&record.id)).await?;
            ctx.state.record(&node.id, new_record.clone()).await?;
            steps::delete(ctx, &node.id, record).await?;
        }
        Spec::GroupRules { group, ingress, egress } => {
            steps::group_rules::apply(ctx, &node.id, group, ingress.as_deref(), egress.as_deref()).await?;
        }
        Spec::RouteTable { default_route, .. } => {
            steps::egress::converge_route_table(ctx, &record.id, None, default_route.as_deref()).await?;
        }
        Spec::LogGroup { name, retention_days } => {
            steps::log_group::set_retention(ctx, name, *retention_days).await?;
        }
        Spec::Endpoint { gateway, .. } => {
            steps::egress::converge_endpoint(ctx, &record.id, *gateway, &node.deps).await?;
        }
        // Lookups: looked up again; attributes: set again.
        Spec::LinkedRole { .. } | Spec::PrefixList { .. } | Spec::VpcDns => {
            new_record = steps::create(ctx, node, None).await?;
        }
        _ => anyhow::bail!("internal error: {} cannot be updated in place", node.id),
    }
    let id = new_record.id.clone();
    ctx.state.record(&node.id, new_record).await?;
    Ok(id)
}

/// With --allow-replace: each node whose change needs a replacement, plus every recorded node built on it
/// (transitively), since those cannot outlive it.
fn replacement_set(nodes: &[Node], dag: &Dag, statuses: &[crate::plan::NodeStatus], state: &StateFile) -> Vec<String> {
    let mut set = std::collections::BTreeSet::new();
    let mut stack: Vec<usize> = (0..nodes.len())
        .filter(|&i| statuses.iter().any(|s| s.node == nodes[i].id && s.action == Action::Replace))
        .collect();
    while let Some(i) = stack.pop() {
        if state.get(&nodes[i].id).is_some() && set.insert(nodes[i].id.clone()) {
            stack.extend(dag.dependants(i).iter().copied());
        }
    }
    set.into_iter().collect()
}

/// Refuses changes AWS cannot make in place, naming each and what replacing it would destroy.
fn refuse_replacements(nodes: &[Node], statuses: &[crate::plan::NodeStatus]) -> Result<()> {
    let refused: Vec<String> = nodes
        .iter()
        .filter(|n| statuses.iter().any(|s| s.node == n.id && s.action == Action::Replace))
        .map(|n| format!("  {}", crate::plan::replace_reason(n)))
        .collect();
    if !refused.is_empty() {
        bail!(
            "the config changes what AWS cannot change in place:\n{}\n  hint: nothing was changed; revert these fields, or run `secep up --allow-replace` to delete and recreate them and what is built on them (`secep plan` lists it)",
            refused.join("\n")
        );
    }
    Ok(())
}

/// Deletes what the config no longer declares (a removed service's chain, a removed call), in teardown order and
/// with the same ownership check as `down`. Returns how many failed.
async fn remove_dropped(ctx: &Ctx, removed: &[String], stop: &StopFlag, console: &Console) -> Result<usize> {
    if removed.is_empty() {
        return Ok(0);
    }
    revoke_references(ctx, removed).await?;
    let dag = Dag::new(crate::model::recorded_graph(removed))?.reversed();
    let ids = Arc::new(removed.to_vec());
    let outcomes = walk(&dag, ctx.clients.windows.ceiling(), stop, |i| {
        let (ctx, ids, console) = (ctx.clone(), ids.clone(), console.clone());
        async move { super::down::remove(&ctx, &ids[i], &console).await }
    })
    .await;
    let mut failed = 0;
    for outcome in &outcomes {
        match outcome {
            Outcome::Done(super::down::Done::NotOwned(_)) | Outcome::Skipped { .. } | Outcome::NotStarted => {
                failed += 1
            }
            Outcome::Failed(e) => {
                console.error(e);
                failed += 1;
            }
            Outcome::Done(_) => {}
        }
    }
    Ok(failed)
}

/// Before groups are removed, the groups that stay stop naming them (a caller's egress, the endpoints' ingress):
/// AWS refuses to delete a group another group's rule names.
async fn revoke_references(ctx: &Ctx, removed: &[String]) -> Result<()> {
    let (groups, keepers): (Vec<String>, Vec<String>) = {
        let state = ctx.state.lock();
        let groups = removed
            .iter()
            .filter(|n| matches!(steps::kind_of(n), "sg" | "vpce-sg"))
            .filter_map(|n| state.get(n).map(|r| r.id.clone()))
            .collect();
        let keepers = state
            .nodes()
            .iter()
            .filter(|(n, _)| matches!(steps::kind_of(n), "egress" | "vpce-rules") && !removed.contains(n))
            .map(|(_, r)| r.id.clone())
            .collect();
        (groups, keepers)
    };
    if groups.is_empty() {
        return Ok(());
    }
    for group in keepers {
        steps::group_rules::revoke_naming(ctx, &group, &groups).await?;
    }
    Ok(())
}

/// Revokes live ingress rules on the stack's groups that no `calls` entry declares.
async fn revoke_undeclared(ctx: &Ctx, rules: &[crate::steps::live::LiveRule], console: &Console) -> Result<usize> {
    for rule in rules {
        let started = Instant::now();
        steps::ingress_rule::revoke(ctx, &rule.group_id, &rule.rule_id).await?;
        let what = format!("{} (undeclared, on {})", rule.rule_id, rule.group_id);
        console.step("revoked", "sg-rule", &what, Some(started.elapsed()));
    }
    Ok(rules.len())
}

/// The AZs of the private subnets: from the config, else those already recorded, else the region's first ones.
/// The desired nodes and the live stack. The live read needs only which kinds and names are desired, not which
/// zones, so it runs beside the zone lookup (a fresh stack does not wait a round trip for the zones first).
pub(crate) async fn desired_and_live(
    config: &Config,
    state: &StateFile,
    clients: &Clients,
) -> Result<(Vec<crate::model::Node>, live::Live)> {
    let zone_slots: Vec<String> = (0..config.network.max_azs).map(|i| format!("zone-{i}")).collect();
    let kinds_and_names = desired_nodes(config, &zone_slots, &clients.region);
    let (azs, live) = tokio::try_join!(
        resolve_azs(config, state, clients),
        live::read(clients, &config.stack.name, state, &kinds_and_names)
    )?;
    Ok((desired_nodes(config, &azs, &clients.region), live))
}

async fn resolve_azs(config: &Config, state: &StateFile, clients: &Clients) -> Result<Vec<String>> {
    if let Some(azs) = &config.network.azs {
        return Ok(azs.clone());
    }
    let recorded: Vec<String> =
        state.nodes().keys().filter_map(|k| k.strip_prefix("subnet/")).map(str::to_string).collect();
    if recorded.len() == config.network.max_azs {
        return Ok(recorded);
    }
    let out = clients
        .ec2
        .describe_availability_zones()
        .filters(aws_sdk_ec2::types::Filter::builder().name("state").values("available").build())
        .filters(aws_sdk_ec2::types::Filter::builder().name("zone-type").values("availability-zone").build())
        .send()
        .await
        .map_err(|e| steps::api_error(format!("list availability zones of {}", clients.region), e))?;
    let mut zones: Vec<String> =
        out.availability_zones().iter().filter_map(|z| z.zone_name()).map(str::to_string).collect();
    zones.sort();
    if zones.len() < config.network.max_azs {
        bail!(
            "region {} has {} available zones, but network.max_azs is {}\n  hint: lower max_azs in {}",
            clients.region,
            zones.len(),
            config.network.max_azs,
            config.path.display()
        );
    }
    zones.truncate(config.network.max_azs);
    Ok(zones)
}

#[allow(clippy::too_many_arguments)]
fn report(
    config: &Config,
    ctx: &Ctx,
    nodes: &[Node],
    outcomes: &[Outcome<(Done, String, Duration)>],
    revoked: usize,
    removed: usize,
    removal_failures: usize,
    state_path: &std::path::Path,
    elapsed: Duration,
    console: &Console,
    stop: &StopFlag,
) -> Result<u8> {
    let mut rows = Vec::new();
    let (mut created, mut updated, mut unchanged, mut failed, mut skipped) = (0, 0, 0, 0, 0);
    let mut adopted_count = 0;
    for (node, outcome) in nodes.iter().zip(outcomes) {
        let (action, id, error) = match outcome {
            Outcome::Done((Done::Created, id, _)) => {
                created += 1;
                ("created", Some(id.clone()), None)
            }
            Outcome::Done((Done::Recreated, id, _)) => {
                created += 1;
                ("recreated", Some(id.clone()), None)
            }
            Outcome::Done((Done::Adopted, id, _)) => {
                adopted_count += 1;
                ("adopted", Some(id.clone()), None)
            }
            Outcome::Done((Done::Updated, id, _)) => {
                updated += 1;
                ("updated", Some(id.clone()), None)
            }
            Outcome::Done((Done::Unchanged, id, _)) => {
                unchanged += 1;
                ("unchanged", Some(id.clone()), None)
            }
            Outcome::Failed(e) => {
                failed += 1;
                console.step("failed", &node.id, "", None);
                console.error(e);
                ("failed", None, Some(format!("{e:#}")))
            }
            Outcome::Skipped { blocked_by } => {
                skipped += 1;
                ("skipped", None, Some(format!("not attempted: {blocked_by} failed")))
            }
            Outcome::NotStarted => {
                skipped += 1;
                ("skipped", None, Some("not attempted: interrupted".to_string()))
            }
        };
        rows.push(json!({ "node": node.id, "kind": node.spec.kind(), "action": action, "id": id, "error": error }));
    }
    failed += removal_failures;
    let deleted = removed - removal_failures;
    let ok = failed == 0 && skipped == 0;
    let endpoints: Vec<_> = config
        .services
        .values()
        .map(|s| json!({ "service": s.name, "address": config.endpoint(s), "port": s.port, "calls": s.calls }))
        .collect();
    let secs = elapsed.as_secs_f64();
    let api = ctx.clients.calls.summary();
    let cost = api.to_string();
    tracing::debug!(windows = ?ctx.clients.windows.summary(), "concurrency windows at the end");
    if !ok {
        console.status(
            "Failed",
            format!("{created} created, {unchanged} unchanged, {failed} failed, {skipped} not attempted in {secs:.2}s ({cost})"),
        );
        console.status(
            "",
            format!(
                "what was created is recorded in {}; fix the cause and re-run `secep up` to continue",
                state_path.display()
            ),
        );
    } else if created + updated + revoked + deleted + adopted_count == 0 {
        console.status(
            "Up to date",
            format!("all {unchanged} resources match the config; nothing to do ({cost}, {secs:.2}s)"),
        );
    } else {
        let parts: Vec<String> = [
            (created, "created"),
            (updated, "updated"),
            (revoked, "undeclared rules revoked"),
            (unchanged, "unchanged"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        console.status("Deployed", format!("{} in {secs:.2}s ({cost})", parts.join(", ")));
        console.status("State", state_path.display());
    }
    if ok {
        let mut table = String::from("Service endpoints (reachable only from their declared callers):");
        for s in config.services.values() {
            let callers: Vec<&str> =
                config.services.values().filter(|c| c.calls.contains(&s.name)).map(|c| c.name.as_str()).collect();
            let from =
                if callers.is_empty() { "no callers".to_string() } else { format!("from {}", callers.join(", ")) };
            table.push_str(&format!("\n  {:<20} {:<45} {from}", s.name, config.endpoint(s)));
        }
        console.result(&table);
    }
    console.json(&json!({
        "command": "up",
        "stack": config.stack.name,
        "region": ctx.clients.region,
        "state_file": state_path.display().to_string(),
        "ok": ok,
        "summary": { "created": created, "adopted": adopted_count, "updated": updated, "deleted": deleted, "revoked": revoked, "unchanged": unchanged, "failed": failed, "skipped": skipped },
        "seconds": (secs * 1000.0).round() / 1000.0,
        "api_calls": { "total": api.calls, "mutating": api.mutating, "retries": api.retries, "throttled": api.throttled },
        "nodes": rows,
        "endpoints": endpoints,
    }));
    Ok(if stop.is_stopped() {
        exit::INTERRUPTED
    } else if ok {
        exit::OK
    } else {
        exit::ERROR
    })
}
