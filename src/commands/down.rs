//! `secep down`: one teardown read finds everything the stack may own and who owns it; the diff plans a delete per
//! node (recorded ones, and with `--adopt` the tagged ones the state lost); the walk deletes in reverse dependency
//! order, concurrently where independent. Never deletes a resource not tagged as this stack's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Common, Opened, exit, open};
use crate::engine::{self, Removed, Teardown, diff};
use crate::graph::{Outcome, StopFlag, walk};
use crate::model::NodeId;
use crate::output::report::{self, ApiCalls, DownNode, DownReport, DownSummary};
use crate::output::{Console, short_id};
use crate::resource::Kind;

#[derive(Debug, Clone)]
pub struct DownArgs {
    pub yes: bool,
    pub adopt: bool,
    pub delete_logs: bool,
    pub operation_timeout: Duration,
    pub dependency_timeout: Duration,
}

pub async fn run(common: &Common, args: &DownArgs, console: &Console, stop: &StopFlag) -> Result<u8> {
    let started = Instant::now();
    let Opened { config, clients, state, lock } = open(common, console, Some("down")).await?;
    let stack = config.stack.name.clone();
    let live = engine::teardown_read(&config, &state, &clients).await?;
    let plan = diff::teardown(&state, &live, args.adopt, args.delete_logs);
    let (walked, leftovers): (Vec<_>, Vec<_>) =
        plan.into_iter().partition(|(_, a)| !matches!(a, Teardown::Leftover(_)));
    let leftovers: Vec<String> = leftovers
        .iter()
        .map(|(node, action)| {
            let id = live.get(node).map(|o| short_id(&o.id)).unwrap_or_default();
            match action {
                Teardown::Leftover(Some(lineage)) => format!("{node} ({id}, secep:lineage={lineage})"),
                _ => format!("{node} ({id}, no secep:lineage)"),
            }
        })
        .collect();
    let to_delete = walked.iter().filter(|(_, a)| *a == Teardown::Delete).count();
    if args.adopt {
        let adopted = walked.iter().filter(|(id, a)| *a == Teardown::Delete && state.get(id).is_none()).count();
        console.status(
            "Adopted",
            format!("{adopted} resource(s) tagged secep:stack={stack} that the state did not record"),
        );
    }
    let unrecorded = walked
        .iter()
        .filter(|(id, a)| *a == Teardown::Delete && state.get(id).is_none())
        // Old task definition revisions kept for a rollback are no news.
        .filter(|(id, _)| !(id.kind().part_of_parent() || id.kind() == Kind::TaskDefinition && id.is_twin()))
        .count();
    if !args.adopt && unrecorded > 0 {
        console.status(
            "Found",
            format!("{unrecorded} resource(s) this state file's runs made but never recorded (a run was interrupted): deleting them too"),
        );
    }
    let region = clients.region.clone();
    let state_path = state.location();

    let ctx;
    let mut rows = Vec::new();
    let mut n = DownSummary::default();
    if walked.is_empty() {
        let hint = if args.adopt || !leftovers.is_empty() {
            String::new()
        } else {
            format!(
                "; if its resources were created without a state file, `secep down --adopt` finds them by their secep:stack={stack} tag"
            )
        };
        console.status("Nothing", format!("to delete: {} records no resources{hint}", state_path));
        ctx = engine::context(clients, &stack, state, args.operation_timeout, args.dependency_timeout, &live, stop);
    } else {
        if to_delete > 0 {
            console.confirm_deletion(&stack, &region, to_delete, args.yes)?;
        }
        console.status("Destroying", format!("stack {stack} in {region} ({} resources)", walked.len()));
        ctx = engine::context(clients, &stack, state, args.operation_timeout, args.dependency_timeout, &live, stop);
        let ids: Vec<NodeId> = walked.iter().map(|(id, _)| id.clone()).collect();
        let dag = engine::teardown_dag(&ids)?;
        console.start_progress(ids.len());
        let (plan, observed) = (Arc::new(walked), Arc::new(live.nodes.clone()));
        let outcomes = walk(&dag, ctx.clients.windows.ceiling(), stop, |i| {
            let (ctx, plan, observed, console) = (ctx.clone(), plan.clone(), observed.clone(), console.clone());
            async move { engine::remove(&ctx, &plan[i].0, &plan[i].1, &observed, &console).await }
        })
        .await;
        console.finish_progress();
        for ((node, _), outcome) in plan.iter().zip(&outcomes) {
            let (action, count, detail) = match outcome {
                Outcome::Done(Removed::Deleted) => ("deleted", &mut n.deleted, None),
                Outcome::Done(Removed::AlreadyGone) => ("already gone", &mut n.already_gone, None),
                Outcome::Done(Removed::Kept) => ("kept", &mut n.kept, Some(kept_reason(node.kind()))),
                Outcome::Done(Removed::Held(why)) => ("skipped", &mut n.skipped, Some(format!("not attempted: {why}"))),
                Outcome::Done(Removed::NotOwned(tag)) => {
                    let who = crate::resource::Owner::Other(tag.clone()).describe();
                    ("not owned", &mut n.not_owned, Some(format!("left in place: it carries {who}")))
                }
                Outcome::Failed(e) => {
                    console.error(e);
                    ("failed", &mut n.failed, Some(format!("{e:#}")))
                }
                Outcome::Skipped { blocked_by } => {
                    ("skipped", &mut n.skipped, Some(format!("not attempted: {blocked_by} failed")))
                }
                Outcome::NotStarted => ("skipped", &mut n.skipped, Some("not attempted: interrupted".to_string())),
            };
            *count += 1;
            rows.push(DownNode { node: node.to_string(), action, detail });
        }
    }

    // Tagged for the stack but made from another state file (another user's copy of the stack, a lost state file,
    // or a release before lineage tags): never deleted without --adopt, but never silently left behind.
    if !leftovers.is_empty() {
        console.warn(format!(
            "{} resource(s) tagged secep:stack={stack} were made from another state file (this one is secep:lineage={}) and are left in place:\n  {}\n  hint: run `secep down` with the state file that made them (--state), or `secep down --adopt` to delete them too",
            leftovers.len(),
            ctx.state.lock().nonce(),
            leftovers.join("\n  ")
        ));
    }
    let walk_failed = n.failed + n.skipped > 0;
    // A failed delete of a resource no record names keeps the state: its lineage is how the next `down` finds it.
    let everything_gone = ctx.state.lock().nodes().is_empty() && !walk_failed;
    if everything_gone {
        ctx.state.remove().await?;
    }
    let api = ctx.clients.calls.summary();
    let elapsed = started.elapsed();
    let secs = elapsed.as_secs_f64();
    let ok = n.failed == 0 && n.skipped == 0 && n.not_owned == 0 && leftovers.is_empty();
    if !rows.is_empty() {
        let summary = format!(
            "{} deleted, {} already gone, {} kept, {} not owned, {} failed, {} not attempted in {secs:.2}s ({api})",
            n.deleted, n.already_gone, n.kept, n.not_owned, n.failed, n.skipped
        );
        if ok {
            let removed = match ctx.state.lock().location() {
                crate::state::Location::Local(_) => "state file removed".to_string(),
                s3 => format!("state {s3} removed"),
            };
            console.status("Destroyed", format!("stack {stack}: {summary}; {removed}"));
        } else {
            console.status("Incomplete", summary);
            if !everything_gone {
                console.status(
                    "",
                    format!("{} still records what is left; fix the cause and re-run `secep down`", state_path),
                );
            }
        }
    }
    console.report(&DownReport {
        command: "down",
        stack: stack.clone(),
        region,
        ok,
        state_file_removed: everything_gone,
        tagged_leftovers: leftovers,
        summary: n,
        api_calls: ApiCalls::from(&api),
        seconds: report::seconds(elapsed),
        nodes: rows,
    });
    if let Some(lock) = lock {
        // With the state gone, nothing is left to guard; a later `up` starts a new lifecycle with a new lock.
        lock.release(everything_gone).await;
    }
    Ok(if stop.is_stopped() {
        exit::INTERRUPTED
    } else if ok {
        exit::OK
    } else {
        exit::ERROR
    })
}

fn kept_reason(kind: Kind) -> String {
    match kind {
        Kind::LogGroup => "kept with its logs; `secep down --delete-logs` deletes it".into(),
        _ => "account-wide, shared with other stacks: left in place".into(),
    }
}
