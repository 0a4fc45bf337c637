//! One pipeline for every command: read (every kind's batched read) → diff (pure) → walk (the step DAG). `up`,
//! `plan` and `status` read in converge scope and diff against the config; `down` reads in teardown scope, where
//! the read also tells who owns each resource, and plans a delete per node.

pub mod audit;
pub mod diff;
pub mod rollout;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::aws::Clients;
use crate::aws::propagation::settle;
use crate::config::Config;
use crate::graph::Dag;
use crate::model::{Node, NodeId, desired_nodes};
use crate::output::{Console, short_id};
use crate::resource::{self, Ctx, Deleted, Live, Observed, Owner, ReadCx, Salt, Scope};
use crate::state::{Record, SharedState, StateFile};
pub use audit::{Audit, Path, audit};
pub use diff::{Action, NodeStatus, Teardown, Verdict};

/// The desired nodes and the live stack. The live read needs only which kinds and names are desired, not which
/// zones, so it runs beside the zone lookup (a fresh stack does not wait a round trip for the zones first).
pub async fn desired_and_live(config: &Config, state: &StateFile, clients: &Clients) -> Result<(Vec<Node>, Live)> {
    let zone_slots: Vec<String> = (0..config.network.max_azs).map(|i| format!("zone-{i}")).collect();
    let kinds_and_names = desired_nodes(config, &zone_slots, &clients.region);
    let cx = ReadCx::new(clients, &config.stack.name, Scope::Converge, state, &kinds_and_names);
    let (azs, live) = tokio::try_join!(resolve_azs(config, state, clients), resource::read::read(&cx))?;
    Ok((desired_nodes(config, &azs, &clients.region), live))
}

/// Everything the stack may own, with its owner: the read `down` plans its deletes from. The config's nodes only
/// name what to look for when the state is lost (the namespace by its name).
pub async fn teardown_read(config: &Config, state: &StateFile, clients: &Clients) -> Result<Live> {
    let zone_slots: Vec<String> = (0..config.network.max_azs).map(|i| format!("zone-{i}")).collect();
    let names = desired_nodes(config, &zone_slots, &clients.region);
    let cx = ReadCx::new(clients, &config.stack.name, Scope::Teardown, state, &names);
    resource::read::read(&cx).await
}

/// The AZs of the private subnets: from the config, else those already recorded, else the region's first ones.
async fn resolve_azs(config: &Config, state: &StateFile, clients: &Clients) -> Result<Vec<String>> {
    if let Some(azs) = &config.network.azs {
        return Ok(azs.clone());
    }
    let recorded: Vec<String> = state
        .nodes()
        .keys()
        .filter_map(|k| match k {
            NodeId::Subnet(az) => Some(az.clone()),
            _ => None,
        })
        .collect();
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
        .map_err(|e| resource::api_error(format!("list availability zones of {}", clients.region), e))?;
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

/// The context every create, update and delete of one run shares.
pub fn context(
    clients: Clients,
    stack: &str,
    state: StateFile,
    operation_timeout: Duration,
    dependency_timeout: Duration,
    live: &Live,
    stop: &crate::graph::StopFlag,
) -> Ctx {
    Ctx {
        clients,
        stack: stack.to_string(),
        previous: Arc::new(state.nodes().clone()),
        state: SharedState::new(state),
        operation_timeout,
        dependency_timeout,
        propagation_timeout: crate::aws::propagation::DEFAULT_PROPAGATION_TIMEOUT,
        rollouts: Default::default(),
        replaced_rules: Default::default(),
        replaced_target_groups: Default::default(),
        created: Default::default(),
        hints: Arc::new(live.hints.clone()),
        stop: stop.clone(),
    }
}

/// The step DAG of desired nodes.
pub fn dag(nodes: &[Node]) -> Result<Dag> {
    Ok(Dag::new(nodes.iter().map(|n| (n.id.to_string(), n.deps.iter().map(ToString::to_string).collect::<Vec<_>>())))?)
}

/// The teardown DAG of recorded (or found) nodes, dependants first.
pub fn teardown_dag(ids: &[NodeId]) -> Result<Dag> {
    let graph = crate::model::recorded_graph(ids);
    Ok(Dag::new(
        graph.into_iter().map(|(id, deps)| (id.to_string(), deps.iter().map(ToString::to_string).collect::<Vec<_>>())),
    )?
    .reversed())
}

/// What `up` did with one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Created,
    Recreated,
    Updated,
    Adopted,
    Unchanged,
}

impl Done {
    pub fn verb(self) -> &'static str {
        match self {
            Done::Created => "created",
            Done::Recreated => "recreated",
            Done::Updated => "updated",
            Done::Adopted => "adopted",
            Done::Unchanged => "unchanged",
        }
    }
}

/// Creates, adopts, recreates or updates one node as the diff decided. Every path that leaves a live resource
/// records it first and then runs the same sync (compare with the spec, make the differences), so a resource found
/// half made, or made by this run in several calls, is completed the same way. Returns what was done and the id.
pub async fn converge(
    ctx: &Ctx,
    node: &Node,
    action: Action,
    live: &Live,
    console: &Console,
) -> Result<(Done, String)> {
    let started = Instant::now();
    let recorded = ctx.state.lock().get(&node.id).cloned();
    let label = node.id.to_string();
    let (done, observed, config_changed) = match (action, recorded) {
        (Action::NoOp | Action::Unsupported | Action::Replace | Action::Delete, Some(record)) => {
            console.skip_step();
            return Ok((Done::Unchanged, record.id));
        }
        (Action::Adopt, None) => {
            let found = live.get(&node.id).with_context(|| format!("internal error: nothing to adopt for {label}"))?;
            record(ctx, node, &found.id, found.arn.clone()).await?;
            (Done::Adopted, found.clone(), false)
        }
        (Action::Update, Some(record)) => {
            console.progress_message(format!("updating {label}"));
            let found = live
                .get(&node.id)
                .with_context(|| format!("internal error: {label} has no live resource to update"))?;
            (Done::Updated, found.clone(), record.digest != node.spec.digest())
        }
        (_, stale) => {
            console.progress_message(format!("creating {label}"));
            let nonce = ctx.state.lock().nonce().to_string();
            let digest = node.spec.digest();
            // A node created before in this lifecycle (dropped from the config and added back, replaced) gets new
            // tokens: replaying the first creation's could hand back the deleted resource.
            let generation = match ctx.state.lock().generation(&node.id) {
                0 => String::new(),
                n => format!("/generation/{n}"),
            };
            let salt = Salt(match &stale {
                Some(old) => format!("{nonce}/{digest}{generation}/replaces/{}", old.id),
                None => format!("{nonce}/{digest}{generation}"),
            });
            // A refused create made nothing (tokens make a lost answer safe too): retrying it is safe.
            let (created, facts) = settle(&label, ctx.propagation_timeout, &ctx.clients.calls, &ctx.stop, || {
                resource::create(ctx, node, &salt)
            })
            .await?;
            ctx.created.lock().expect("created lock").insert(node.id.clone());
            record(ctx, node, &created.id, created.arn.clone()).await?;
            let done = if stale.is_some() { Done::Recreated } else { Done::Created };
            let lineage = Some(nonce);
            (done, Observed { id: created.id, arn: created.arn, owner: Owner::Us, lineage, facts }, false)
        }
    };
    // The sync compares before it changes anything, so a retry redoes only what is still missing.
    let (moved, changed) = settle(&label, ctx.propagation_timeout, &ctx.clients.calls, &ctx.stop, || {
        resource::sync(ctx, node, &observed, config_changed)
    })
    .await?;
    let id = match moved {
        Some(created) => {
            record(ctx, node, &created.id, created.arn.clone()).await?;
            created.id
        }
        None => {
            if config_changed {
                record(ctx, node, &observed.id, observed.arn.clone()).await?;
            }
            observed.id.clone()
        }
    };
    let detail = match done {
        // An adopted resource found half made was completed: say what was missing.
        Done::Adopted if !changed.is_empty() => format!("{} (completed: {})", short_id(&id), changed.join("; ")),
        _ => short_id(&id),
    };
    console.step(done.verb(), &label, &detail, Some(started.elapsed()));
    Ok((done, id))
}

/// Records a node right after its resource exists: a crash after this loses nothing.
async fn record(ctx: &Ctx, node: &Node, id: &str, arn: Option<String>) -> Result<()> {
    let record = Record { id: id.to_string(), arn, digest: node.spec.digest() };
    ctx.state.record(&node.id, record).await.map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "{} = {id} exists but could not be recorded; once the state can be written, `secep up` adopts it by its tags",
            node.id
        ))
    })
}

/// What a removal did with one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Deleted,
    AlreadyGone,
    Kept,
    NotOwned(Option<String>),
    /// Not attempted, still recorded: it holds what is left in place.
    Held(String),
}

/// Carries out one node's teardown action and forgets it in the state (written atomically) before returning.
pub async fn remove(
    ctx: &Ctx,
    node: &NodeId,
    action: &Teardown,
    live: &BTreeMap<NodeId, Observed>,
    console: &Console,
) -> Result<Removed> {
    let started = Instant::now();
    let label = node.to_string();
    let observed = live.get(node);
    let shown = observed.map(|o| short_id(&o.id)).unwrap_or_default();
    let removed = match action {
        Teardown::Leftover(_) => bail!("internal error: {label} is not to be removed"),
        Teardown::Held(why) => {
            console.step("kept", &label, &format!("{shown}: {why}"), None);
            return Ok(Removed::Held(why.clone()));
        }
        Teardown::AlreadyGone => Removed::AlreadyGone,
        Teardown::Keep => Removed::Kept,
        Teardown::NotOwned(tag) => {
            let who = Owner::Other(tag.clone()).describe();
            console.step("not owned", &label, &format!("{shown} carries {who}; left in place"), None);
            ctx.state.forget(node).await?;
            return Ok(Removed::NotOwned(tag.clone()));
        }
        Teardown::Delete => {
            let observed = observed.with_context(|| format!("internal error: {label} was not read"))?;
            console.progress_message(format!("deleting {label}"));
            match resource::delete(ctx, node, observed).await? {
                Deleted::Now => Removed::Deleted,
                Deleted::AlreadyGone => Removed::AlreadyGone,
            }
        }
    };
    ctx.state.forget(node).await?;
    let verb = match removed {
        Removed::Deleted => "deleted",
        Removed::Kept => "kept",
        _ => "gone",
    };
    console.step(verb, &label, &shown, Some(started.elapsed()));
    Ok(removed)
}
