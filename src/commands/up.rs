//! `secep up`: read the live stack, diff it with the config and the state, and walk the step DAG: create what is
//! missing, adopt what an interrupted run left unrecorded, update what differs, in dependency order and
//! concurrently where the graph allows, recording each resource the moment it exists. Then remove what the config
//! dropped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Common, Opened, exit, open};
use crate::config::Config;
use crate::engine::{self, Action, Done, NodeStatus, Removed, Teardown, Verdict, audit, diff::diff, rollout};
use crate::graph::{Dag, Outcome, StopFlag, walk};
use crate::model::{Node, NodeId};
use crate::output::report::{self, ApiCalls, UpNode, UpReport, UpSummary};
use crate::output::{Console, short_id};
use crate::resource::{Ctx, Live, LiveRule, Owner};
use crate::state::StateFile;

#[derive(Debug, Clone)]
pub struct UpArgs {
    pub operation_timeout: Duration,
    /// Bounds the waits of the removals `up` makes (lingering ENIs, draining services), as for `down`.
    pub dependency_timeout: Duration,
    /// Replace what AWS cannot change in place (and everything built on it) instead of refusing.
    pub allow_replace: bool,
    /// How long to wait for the rollouts this run started; `None` (`--no-wait`) returns after the API calls.
    pub wait_timeout: Option<Duration>,
    /// Take over resources tagged for the stack that another state file made, instead of refusing.
    pub adopt: bool,
}

pub async fn run(common: &Common, args: &UpArgs, console: &Console, stop: &StopFlag) -> Result<u8> {
    let started = Instant::now();
    let Opened { config, clients, mut state, lock } = open(common, console, Some("up")).await?;
    console.status(
        "Deploying",
        format!("stack {} to {} (config {})", config.stack.name, clients.region, config.path.display()),
    );

    // Look at what really exists first (one batched read round): resources deleted or changed behind secep's back
    // are repaired, and resources an interrupted run created but never recorded are found instead of duplicated.
    let (nodes, live) = engine::desired_and_live(&config, &state, &clients).await?;
    let dag = engine::dag(&nodes)?;
    let mut statuses = diff(&nodes, &state, &live)?;
    take_other_lineages(&mut statuses, args.adopt, &state, &config.stack.name)?;
    // Rules no `calls` entry declares are revoked first, except the stack's own recorded rules: a rule on a port the
    // config just changed, or of a call it dropped, is replaced by its node once the rollouts have completed.
    let recorded: BTreeSet<&str> = state.nodes().values().map(|r| r.id.as_str()).collect();
    let undeclared_ids: Vec<String> = audit(&config, &live)
        .extra
        .into_iter()
        .map(|(_, rule)| rule)
        .filter(|rule| !recorded.contains(rule.as_str()))
        .collect();
    let undeclared: Vec<LiveRule> =
        live.rules.iter().filter(|r| undeclared_ids.contains(&r.rule_id)).cloned().collect();
    let replaced = if args.allow_replace { replacement_set(&nodes, &dag, &statuses, &state) } else { Vec::new() };
    if !args.allow_replace {
        refuse_replacements(&nodes, &statuses)?;
    }
    // Replaced nodes are deleted first, then created like new ones; what the config dropped goes after the walk,
    // once the nodes that stay no longer name it (a caller's egress, the endpoints' ingress).
    let actions: Vec<Action> = nodes
        .iter()
        .map(|n| if replaced.contains(&n.id) { Action::Create } else { action_of(&statuses, &n.id) })
        .collect();
    let dropped: Vec<NodeId> = statuses.iter().filter(|s| s.action == Action::Delete).map(|s| s.node.clone()).collect();

    let state_path = state.location();
    // On disk before the first change, so that whatever this run makes carries a lineage a later `down` can find.
    state.begin().await?;
    let ctx = engine::context(
        clients,
        &config.stack.name,
        state,
        args.operation_timeout,
        args.dependency_timeout,
        &live,
        stop,
    );
    let live = Arc::new(live);
    console.start_progress(nodes.len());
    let revoked = revoke_undeclared(&ctx, &undeclared, console).await?;
    let mut removal_failures = remove(&ctx, &replaced, &live, stop, console).await?;
    let nodes = Arc::new(nodes);
    let actions = Arc::new(actions);
    let outcomes = walk(&dag, ctx.clients.windows.ceiling(), stop, |i| {
        let (ctx, nodes, actions, console, live) =
            (ctx.clone(), nodes.clone(), actions.clone(), console.clone(), live.clone());
        async move { engine::converge(&ctx, &nodes[i], actions[i], &live, &console).await }
    })
    .await;
    let walked = outcomes.iter().all(Outcome::is_done);
    console.finish_progress();

    // `up` means the services run: wait for every rollout this run started. Only then is what they replaced
    // removed (make before break): old revisions, rules on an old port, what the config dropped.
    let started_rollouts = std::mem::take(&mut *ctx.rollouts.lock().expect("rollouts lock"));
    let rollouts = match args.wait_timeout {
        Some(timeout) if walked && !stop.is_stopped() => {
            rollout::wait(&ctx, started_rollouts.clone(), timeout, stop, console).await
        }
        _ => Vec::new(),
    };
    let rolled_out = rollouts.iter().all(|r| r.state.ok());
    if walked && rolled_out && !stop.is_stopped() {
        retire_replaced(&ctx, &started_rollouts, &rollouts, console).await;
        removal_failures += revoke_replaced(&ctx, console).await;
        removal_failures += delete_replaced_target_groups(&ctx, console).await;
        removal_failures += remove(&ctx, &dropped, &live, stop, console).await?;
    } else {
        if walked && !rolled_out && !dropped.is_empty() {
            console.status(
                "Kept",
                format!(
                    "{} resource(s) the config dropped, until every rollout has completed (the running tasks may still use them)",
                    dropped.len()
                ),
            );
        }
        removal_failures += dropped.len();
    }

    let removed = replaced.len() + dropped.len();
    let lb_dns = load_balancer_dns(&ctx, &config).await;
    let code = report(
        &config,
        lb_dns.as_deref(),
        &ctx,
        &nodes,
        &outcomes,
        &rollouts,
        revoked,
        removed,
        removal_failures,
        &state_path,
        started,
        console,
        stop,
    );
    if let Some(lock) = lock {
        lock.release(false).await;
    }
    code
}

/// Revokes the rules this run replaced (a port change), now that the tasks that used them are gone. Returns how
/// many could not be revoked (a later `up` finds them as undeclared and revokes them).
async fn revoke_replaced(ctx: &Ctx, console: &Console) -> usize {
    let rules = std::mem::take(&mut *ctx.replaced_rules.lock().expect("replaced rules lock"));
    let mut failed = 0;
    for (group, rule, egress) in rules {
        let started = Instant::now();
        match crate::resource::group_rules::revoke(ctx, &group, egress, vec![rule.clone()]).await {
            Ok(_) => {
                console.step("revoked", "sg-rule", &format!("{rule} (replaced, on {group})"), Some(started.elapsed()))
            }
            Err(e) => {
                console.error(&e);
                failed += 1;
            }
        }
    }
    failed
}

/// The load balancer's DNS name, for the public services' URLs (one describe; `None` without one, or if it fails).
async fn load_balancer_dns(ctx: &Ctx, config: &Config) -> Option<String> {
    config.public_services().next()?;
    let arn = ctx.state.lock().get(&NodeId::LoadBalancer).map(|r| r.id.clone())?;
    let out = ctx.clients.elb.describe_load_balancers().load_balancer_arns(arn).send().await.ok()?;
    out.load_balancers().first().and_then(|l| l.dns_name()).map(str::to_string)
}

/// Deletes the target groups a new port replaced, now that no task is registered in them. Returns how many could
/// not be deleted (a later `down` finds them by their tags).
async fn delete_replaced_target_groups(ctx: &Ctx, console: &Console) -> usize {
    let groups = std::mem::take(&mut *ctx.replaced_target_groups.lock().expect("replaced target groups lock"));
    let mut failed = 0;
    for arn in groups {
        let started = Instant::now();
        match crate::resource::target_group::delete_group(ctx, &arn).await {
            Ok(_) => console.step("deleted", "tg", &format!("{} (replaced)", short_id(&arn)), Some(started.elapsed())),
            Err(e) => {
                console.error(&e);
                failed += 1;
            }
        }
    }
    failed
}

/// Deregisters, for each service whose new revision has rolled out, the revisions older than the one it replaced
/// (that one stays for a rollback). A failure here is a warning: the stack runs.
async fn retire_replaced(ctx: &Ctx, started: &[rollout::Started], done: &[rollout::Rollout], console: &Console) {
    for s in started {
        let completed = done.iter().any(|r| r.service == s.service && r.state.ok());
        let Some(previous) = s.retire.as_deref().filter(|_| completed) else { continue };
        if let Err(e) = crate::resource::task_definition::retire_family(ctx, &s.task_definition, &[previous]).await {
            console.warn(format!("could not retire old revisions of {}: {e:#}", s.service));
        }
    }
}

/// Resources tagged for the stack by another state file (someone else's copy of the stack, or a lost state file's)
/// are refused, before any change, unless `--adopt` takes them over.
fn take_other_lineages(statuses: &mut [NodeStatus], adopt: bool, state: &StateFile, stack: &str) -> Result<()> {
    let mut foreign = Vec::new();
    for s in statuses.iter_mut().filter(|s| s.desired) {
        let Verdict::OtherLineage(lineage) = &s.verdict else { continue };
        let made_by = lineage.as_deref().map_or("no secep:lineage".to_string(), |l| format!("secep:lineage={l}"));
        foreign.push(format!("  {} ({}, {made_by})", s.node, s.live.as_deref().unwrap_or("?")));
        if adopt {
            s.action = Action::Adopt;
        }
    }
    if !foreign.is_empty() && !adopt {
        bail!(
            "stack `{stack}` already has resources that another state file made (this one, {}, is secep:lineage={}):\n{}\n  hint: nothing was changed; run with the state file that made them (--state), or give this copy another [stack] name; `secep up --adopt` takes them over into this state file",
            state.location(),
            state.nonce(),
            foreign.join("\n")
        );
    }
    Ok(())
}

fn action_of(statuses: &[NodeStatus], node: &NodeId) -> Action {
    statuses.iter().find(|s| &s.node == node).map_or(Action::Create, |s| s.action)
}

/// With --allow-replace: each node whose change needs a replacement, plus every recorded node built on it
/// (transitively), since those cannot outlive it.
fn replacement_set(nodes: &[Node], dag: &Dag, statuses: &[NodeStatus], state: &StateFile) -> Vec<NodeId> {
    let mut set = BTreeSet::new();
    let mut stack: Vec<usize> =
        (0..nodes.len()).filter(|&i| action_of(statuses, &nodes[i].id) == Action::Replace).collect();
    while let Some(i) = stack.pop() {
        if state.get(&nodes[i].id).is_some() && set.insert(nodes[i].id.clone()) {
            stack.extend(dag.dependants(i).iter().copied());
        }
    }
    set.into_iter().collect()
}

/// Refuses changes AWS cannot make in place, naming each and what replacing it would destroy.
fn refuse_replacements(nodes: &[Node], statuses: &[NodeStatus]) -> Result<()> {
    let refused: Vec<String> = nodes
        .iter()
        .filter(|n| action_of(statuses, &n.id) == Action::Replace)
        .map(|n| format!("  {}: {}", n.id, n.spec.replace_reason()))
        .collect();
    if !refused.is_empty() {
        bail!(
            "the config changes what AWS cannot change in place:\n{}\n  hint: nothing was changed; revert these fields, or run `secep up --allow-replace` to delete and recreate them and what is built on them (`secep plan` lists it)",
            refused.join("\n")
        );
    }
    Ok(())
}

/// Deletes recorded nodes in teardown order with the ownership the read found, bounded by the dependency
/// timeout. Returns how many were not removed.
async fn remove(ctx: &Ctx, ids: &[NodeId], live: &Live, stop: &StopFlag, console: &Console) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let plan: Vec<(NodeId, Teardown)> = ids
        .iter()
        .map(|id| {
            let action = match live.get(id) {
                None => Teardown::AlreadyGone,
                Some(_) if id.kind().on_down() != crate::resource::OnDown::Delete => Teardown::Keep,
                Some(l) => match &l.owner {
                    Owner::Us => Teardown::Delete,
                    Owner::Other(tag) => Teardown::NotOwned(tag.clone()),
                },
            };
            (id.clone(), action)
        })
        .collect();
    let dag = engine::teardown_dag(ids)?;
    let plan = Arc::new(plan);
    let observed = Arc::new(live.nodes.clone());
    let outcomes = walk(&dag, ctx.clients.windows.ceiling(), stop, |i| {
        let (ctx, plan, observed, console) = (ctx.clone(), plan.clone(), observed.clone(), console.clone());
        async move { engine::remove(&ctx, &plan[i].0, &plan[i].1, &observed, &console).await }
    })
    .await;
    let mut failed = 0;
    for outcome in &outcomes {
        match outcome {
            Outcome::Done(Removed::NotOwned(_)) | Outcome::Skipped { .. } | Outcome::NotStarted => failed += 1,
            Outcome::Failed(e) => {
                console.error(e);
                failed += 1;
            }
            Outcome::Done(_) => {}
        }
    }
    Ok(failed)
}

/// Revokes live ingress rules on the stack's groups that no `calls` entry declares.
async fn revoke_undeclared(ctx: &Ctx, rules: &[LiveRule], console: &Console) -> Result<usize> {
    for rule in rules {
        let started = Instant::now();
        crate::resource::ingress_rule::revoke(ctx, &rule.group_id, &rule.rule_id).await?;
        let what = format!("{} (undeclared, on {})", rule.rule_id, rule.group_id);
        console.step("revoked", "sg-rule", &what, Some(started.elapsed()));
    }
    Ok(rules.len())
}

#[allow(clippy::too_many_arguments)]
fn report(
    config: &Config,
    lb_dns: Option<&str>,
    ctx: &Ctx,
    nodes: &[Node],
    outcomes: &[Outcome<(Done, String)>],
    rollouts: &[rollout::Rollout],
    revoked: usize,
    removed: usize,
    removal_failures: usize,
    state_path: &crate::state::Location,
    started: Instant,
    console: &Console,
    stop: &StopFlag,
) -> Result<u8> {
    let mut rows = Vec::new();
    let mut n = UpSummary { revoked, ..UpSummary::default() };
    for (node, outcome) in nodes.iter().zip(outcomes) {
        let (action, id, error) = match outcome {
            Outcome::Done((done, id)) => {
                *match done {
                    Done::Created | Done::Recreated => &mut n.created,
                    Done::Adopted => &mut n.adopted,
                    Done::Updated => &mut n.updated,
                    Done::Unchanged => &mut n.unchanged,
                } += 1;
                (done.verb(), Some(id.clone()), None)
            }
            Outcome::Failed(e) => {
                n.failed += 1;
                console.step("failed", &node.id.to_string(), "", None);
                console.error(e);
                ("failed", None, Some(format!("{e:#}")))
            }
            Outcome::Skipped { blocked_by } => {
                n.skipped += 1;
                ("skipped", None, Some(format!("not attempted: {blocked_by} failed")))
            }
            Outcome::NotStarted => {
                n.skipped += 1;
                ("skipped", None, Some("not attempted: interrupted".to_string()))
            }
        };
        rows.push(UpNode { node: node.id.to_string(), kind: node.spec.label(), action, id, error });
    }
    n.failed += removal_failures;
    n.deleted = removed - removal_failures;
    let failed_rollouts: Vec<&rollout::Rollout> = rollouts.iter().filter(|r| !r.state.ok()).collect();
    let ok = n.failed == 0 && n.skipped == 0 && failed_rollouts.is_empty();
    let elapsed = started.elapsed();
    let secs = elapsed.as_secs_f64();
    let api = ctx.clients.calls.summary();
    let cost = api.to_string();
    tracing::debug!(windows = ?ctx.clients.windows.summary(), "concurrency windows at the end");
    if !failed_rollouts.is_empty() && n.failed == 0 && n.skipped == 0 {
        let names: Vec<&str> = failed_rollouts.iter().map(|r| r.service.as_str()).collect();
        console.status(
            "Failed",
            format!(
                "the resources are in place, but {} did not roll out: {} ({secs:.2}s, {cost})",
                if names.len() == 1 { "one service" } else { "services" },
                names.join(", ")
            ),
        );
        console.status(
            "",
            format!(
                "everything is recorded in {}; fix the cause above (the image, its registry, the egress mode) and re-run `secep up`",
                state_path
            ),
        );
    } else if !ok {
        console.status(
            "Failed",
            format!(
                "{} created, {} unchanged, {} failed, {} not attempted in {secs:.2}s ({cost})",
                n.created, n.unchanged, n.failed, n.skipped
            ),
        );
        console.status(
            "",
            format!("what was created is recorded in {}; fix the cause and re-run `secep up` to continue", state_path),
        );
    } else if n.created + n.updated + n.revoked + n.deleted + n.adopted == 0 {
        console.status(
            "Up to date",
            format!("all {} resources match the config; nothing to do ({cost}, {secs:.2}s)", n.unchanged),
        );
    } else {
        let parts: Vec<String> = [
            (n.created, "created"),
            (n.adopted, "adopted"),
            (n.updated, "updated"),
            (n.deleted, "deleted"),
            (n.revoked, "undeclared rules revoked"),
            (n.unchanged, "unchanged"),
        ]
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect();
        console.status("Deployed", format!("{} in {secs:.2}s ({cost})", parts.join(", ")));
        console.status("State", state_path);
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
        let public: Vec<_> = config.public_services().collect();
        if !public.is_empty() {
            table.push_str("\nPublic, through the load balancer (the only way in from the internet):");
            for (s, p) in public {
                table.push_str(&format!("\n  {:<20} {}", s.name, p.url(lb_dns)));
            }
        }
        console.result(&table);
    }
    let endpoints = config
        .services
        .values()
        .map(|s| report::Endpoint {
            service: s.name.clone(),
            address: config.endpoint(s),
            port: s.port,
            calls: s.calls.clone(),
            public_url: s.public.as_ref().map(|p| p.url(lb_dns)),
        })
        .collect();
    console.report(&UpReport {
        command: "up",
        stack: config.stack.name.clone(),
        region: ctx.clients.region.clone(),
        state_file: state_path.to_string(),
        ok,
        summary: n,
        seconds: report::seconds(elapsed),
        api_calls: ApiCalls::from(&api),
        nodes: rows,
        rollouts: rollouts.to_vec(),
        endpoints,
    });
    Ok(if stop.is_stopped() {
        exit::INTERRUPTED
    } else if ok {
        exit::OK
    } else {
        exit::ERROR
    })
}
