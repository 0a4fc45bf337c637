//! `secep down`: delete everything the state records (and, with `--adopt`, everything tagged for the stack), in
//! reverse dependency order, concurrently where independent. Never deletes a resource not tagged as this stack's.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use super::{Common, Opened, exit, open};
use crate::graph::{Dag, Outcome, StopFlag, walk};
use crate::model::recorded_graph;
use crate::output::{Console, short_id};
use crate::state::SharedState;
use crate::steps::{self, Ctx, Deleted, Owner, discover};

#[derive(Debug, Clone)]
pub struct DownArgs {
    pub yes: bool,
    pub adopt: bool,
    pub delete_logs: bool,
    pub operation_timeout: Duration,
    pub dependency_timeout: Duration,
}

/// What `down` did with one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Done {
    Deleted,
    AlreadyGone,
    /// Left in place on purpose (the log group, the account's service-linked role) and forgotten.
    Kept,
    NotOwned(Option<String>),
}

pub async fn run(common: &Common, args: &DownArgs, console: &Console, stop: &StopFlag) -> Result<u8> {
    let started = Instant::now();
    let Opened { config, clients, mut state, lock } = open(common, console, true).await?;
    let stack = config.stack.name.clone();
    if args.adopt {
        let found = discover::tagged(&clients, &stack).await?;
        let mut adopted = 0;
        for (node, record) in found {
            if state.get(&node).is_none() {
                console.step("adopted", &node, &short_id(&record.id), None);
                state.record(&node, record)?;
                adopted += 1;
            }
        }
        console.status(
            "Adopted",
            format!("{adopted} resource(s) tagged secep:stack={stack} that the state did not record"),
        );
    }
    if state.nodes().is_empty() {
        let hint = if args.adopt {
            String::new()
        } else {
            format!(
                "; if its resources were created without a state file, `secep down --adopt` finds them by their secep:stack={stack} tag"
            )
        };
        console.status("Nothing", format!("to delete: {} records no resources{hint}", state.path().display()));
        state.remove_file()?;
        if let Some(lock) = lock {
            lock.release();
        }
        console.json(&json!({ "command": "down", "stack": stack, "ok": true, "summary": { "deleted": 0, "already_gone": 0, "not_owned": 0, "failed": 0, "skipped": 0 }, "nodes": [] }));
        return Ok(exit::OK);
    }
    confirm(&stack, &clients.region, state.nodes().len(), args.yes)?;
    console.status("Destroying", format!("stack {stack} in {} ({} resources)", clients.region, state.nodes().len()));

    let ids: Vec<String> = state.nodes().keys().cloned().collect();
    let dag = Dag::new(recorded_graph(&ids))?.reversed();
    let state_path = state.path().to_path_buf();
    let ctx = Ctx {
        clients,
        stack: stack.clone(),
        state: SharedState::new(state),
        operation_timeout: args.operation_timeout,
        created: Default::default(),
        dependency_timeout: args.dependency_timeout,
        delete_logs: args.delete_logs,
        task_families: None,
        cluster_name_free: false,
    };
    console.start_progress(ids.len());
    let ids = Arc::new(ids);
    let outcomes = walk(&dag, ctx.clients.windows.ceiling(), stop, |i| {
        let (ctx, ids, console) = (ctx.clone(), ids.clone(), console.clone());
        async move { remove(&ctx, &ids[i], &console).await }
    })
    .await;
    console.finish_progress();

    let mut rows = Vec::new();
    let (mut deleted, mut gone, mut foreign, mut failed, mut skipped, mut kept) = (0, 0, 0, 0, 0, 0);
    for (node, outcome) in ids.iter().zip(&outcomes) {
        let (action, detail) = match outcome {
            Outcome::Done(Done::Deleted) => (("deleted", &mut deleted), None),
            Outcome::Done(Done::AlreadyGone) => (("already gone", &mut gone), None),
            Outcome::Done(Done::Kept) => (("kept", &mut kept), Some(kept_reason(node))),
            Outcome::Done(Done::NotOwned(tag)) => {
                let who = tag.as_deref().map_or("no secep:stack tag".to_string(), |t| format!("secep:stack={t}"));
                (("not owned", &mut foreign), Some(format!("left in place: it carries {who}")))
            }
            Outcome::Failed(e) => {
                console.error(e);
                (("failed", &mut failed), Some(format!("{e:#}")))
            }
            Outcome::Skipped { blocked_by } => {
                (("skipped", &mut skipped), Some(format!("not attempted: {blocked_by} failed")))
            }
            Outcome::NotStarted => (("skipped", &mut skipped), Some("not attempted: interrupted".to_string())),
        };
        *action.1 += 1;
        rows.push(json!({ "node": node, "action": action.0, "detail": detail }));
    }

    // Anything still tagged for the stack that the state did not know (a twin from a create whose response was lost,
    // a crash before the state write) is not deleted without --adopt, but it is never silently left behind.
    let mut leftovers = Vec::new();
    if !args.adopt && !stop.is_stopped() {
        // What failed to delete is still recorded and already reported; everything else found is a leftover.
        for (node, record) in discover::tagged(&ctx.clients, &stack).await? {
            // The log group is kept on purpose unless --delete-logs.
            let kept_on_purpose = node == "logs" && !args.delete_logs;
            if ctx.state.lock().get(&node).is_none() && !kept_on_purpose {
                leftovers.push(format!("{node} ({})", short_id(&record.id)));
            }
        }
        if !leftovers.is_empty() {
            console.warn(format!(
                "still tagged secep:stack={stack} but not in the state, left in place: {}\n  hint: `secep down --adopt` deletes them too",
                leftovers.join(", ")
            ));
        }
    }
    let mut state = ctx.state.lock();
    let everything_gone = state.nodes().is_empty();
    if everything_gone {
        state.remove_file()?;
    }
    let api = ctx.clients.calls.summary();
    let secs = started.elapsed().as_secs_f64();
    let summary = format!(
        "{deleted} deleted, {gone} already gone, {kept} kept, {foreign} not owned, {failed} failed, {skipped} not attempted in {secs:.2}s ({api})"
    );
    let ok = failed == 0 && skipped == 0 && foreign == 0 && leftovers.is_empty();
    if ok {
        console.status("Destroyed", format!("stack {stack}: {summary}; state file removed"));
    } else {
        console.status("Incomplete", summary);
        if !everything_gone {
            console.status(
                "",
                format!("{} still records what is left; fix the cause and re-run `secep down`", state_path.display()),
            );
        }
    }
    console.json(&json!({
        "command": "down",
        "stack": stack,
        "region": ctx.clients.region,
        "ok": ok,
        "state_file_removed": everything_gone,
        "tagged_leftovers": leftovers,
        "summary": { "deleted": deleted, "already_gone": gone, "kept": kept, "not_owned": foreign, "failed": failed, "skipped": skipped },
        "api_calls": { "total": api.calls, "mutating": api.mutating, "retries": api.retries, "throttled": api.throttled },
        "seconds": (secs * 1000.0).round() / 1000.0,
        "nodes": rows,
    }));
    if let Some(lock) = lock {
        lock.release();
    }
    if everything_gone {
        // Nothing is left to guard; a later `up` starts a new lifecycle with a new lock file.
        let _ = std::fs::remove_file(crate::state::lock_path(&state_path));
    }
    Ok(if stop.is_stopped() {
        exit::INTERRUPTED
    } else if ok {
        exit::OK
    } else {
        exit::ERROR
    })
}

/// Checks ownership, deletes, and forgets the node in the state (written atomically) before returning.
pub(crate) async fn remove(ctx: &Ctx, node: &str, console: &Console) -> Result<Done> {
    let started = Instant::now();
    let record = ctx.state.lock().get(node).cloned();
    let Some(record) = record else { return Ok(Done::AlreadyGone) };
    console.progress_message(format!("deleting {node}"));
    let done = match steps::owner(ctx, node, &record).await? {
        Owner::Gone => Done::AlreadyGone,
        Owner::Other(tag) => {
            let who = tag.as_deref().map_or("no secep:stack tag".to_string(), |t| format!("secep:stack={t}"));
            console.step("not owned", node, &format!("{} carries {who}; left in place", short_id(&record.id)), None);
            // secep does not track what it does not own; the run still fails so the user looks at it.
            ctx.state.forget(node).await?;
            return Ok(Done::NotOwned(tag));
        }
        Owner::Us => match steps::delete(ctx, node, &record).await? {
            Deleted::Now => Done::Deleted,
            Deleted::AlreadyGone => Done::AlreadyGone,
            Deleted::Kept => Done::Kept,
        },
    };
    ctx.state.forget(node).await?;
    let verb = match done {
        Done::Deleted => "deleted",
        Done::Kept => "kept",
        _ => "gone",
    };
    console.step(verb, node, &short_id(&record.id), Some(started.elapsed()));
    Ok(done)
}

fn kept_reason(node: &str) -> String {
    match steps::kind_of(node) {
        "logs" => "kept with its logs; `secep down --delete-logs` deletes it".into(),
        _ => "account-wide, shared with other stacks: left in place".into(),
    }
}

/// On a terminal, asks before deleting; elsewhere `--yes` is required, so a script never deletes by accident.
fn confirm(stack: &str, region: &str, count: usize, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to delete {count} resources of stack {stack} without confirmation\n  hint: pass --yes when running non-interactively"
        );
    }
    eprint!("Delete {count} resources of stack {stack} in {region}? Type the stack name to confirm: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != stack {
        bail!("not confirmed; nothing was deleted");
    }
    Ok(())
}
