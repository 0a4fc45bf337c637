//! The diff of desired (config), recorded (state) and live (AWS) into a verdict and an action per node, for `up`,
//! `plan` and `status`, and into a teardown action per node for `down`. Pure: no AWS calls, unit-tested. What
//! differs is each kind's own compare; this file only combines the three views.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::model::{Node, NodeId};
use crate::resource::{self, Kind, Live, OnChange, OnDown, Owner};
use crate::state::StateFile;

/// How a node compares across the three views.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "details", rename_all = "kebab-case")]
pub enum Verdict {
    InSync,
    /// In the config, never created.
    NotCreated,
    /// Recorded, but gone live: deleted outside secep.
    MissingLive,
    /// Live, but it differs from what the config and state say (changed outside secep, or half made by a run that
    /// was interrupted between two calls).
    Drifted(Vec<String>),
    /// The config changed since the resource was created.
    ConfigChanged,
    /// Recorded, no longer in the config.
    NotInConfig,
    /// Tagged for the stack live, unknown to the state.
    Extra,
    /// Tagged for the stack, unknown to the state, and made from another state file (another `secep:lineage`, or
    /// none): another user's copy of the stack, or a lost state file's. Adopted only with `--adopt`.
    OtherLineage(Option<String>),
    /// Live under the recorded id, but tagged as somebody else's: never changed.
    NotOwned,
}

/// What `up` does with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    /// Record a live resource tagged as this node that the state lost (a run killed between create and record),
    /// then bring it to the spec like any other.
    Adopt,
    /// Recreate a resource deleted behind secep's back.
    Recreate,
    /// Make the differences the compare found, in place.
    Update,
    NoOp,
    /// The config dropped it: delete it (in teardown order, ownership checked).
    Delete,
    /// The config changed a field AWS cannot change in place; `up` refuses and names it.
    Replace,
    /// Not ours, or tagged for the stack but not recorded: left alone (`down --adopt` removes the latter).
    Unsupported,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub kind: &'static str,
    pub desired: bool,
    pub recorded: Option<String>,
    pub live: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub action: Action,
}

/// Compares every desired, recorded and live node.
pub fn diff(nodes: &[Node], state: &StateFile, live: &Live) -> anyhow::Result<Vec<NodeStatus>> {
    let mut out = Vec::new();
    for node in nodes {
        let recorded = state.get(&node.id);
        let observed = live.get(&node.id);
        let (verdict, action) = match (recorded, observed) {
            (None, None) => (Verdict::NotCreated, Action::Create),
            (None, Some(l)) if l.owner == Owner::Us && adoptable(node.spec.kind(), l, state) => {
                (Verdict::Extra, Action::Adopt)
            }
            (None, Some(l)) if l.owner == Owner::Us => (Verdict::OtherLineage(l.lineage.clone()), Action::Unsupported),
            (None, Some(_)) => (Verdict::NotOwned, Action::Unsupported),
            (Some(_), None) => (Verdict::MissingLive, Action::Recreate),
            (Some(_), Some(l)) if l.owner != Owner::Us && node.spec.kind().on_down() == OnDown::Delete => {
                (Verdict::NotOwned, Action::Unsupported)
            }
            (Some(r), Some(l)) => {
                let config_changed = r.digest != node.spec.digest();
                let differences = resource::compare(node, &l.facts, state, config_changed)?;
                let replace =
                    differences.replaces || (config_changed && node.spec.kind().on_change() == OnChange::Replace);
                match (config_changed, differences.is_empty()) {
                    _ if replace => {
                        let verdict =
                            if config_changed { Verdict::ConfigChanged } else { Verdict::Drifted(differences.texts) };
                        (verdict, Action::Replace)
                    }
                    (true, _) => (Verdict::ConfigChanged, Action::Update),
                    (false, true) => (Verdict::InSync, Action::NoOp),
                    (false, false) => (Verdict::Drifted(differences.texts), Action::Update),
                }
            }
        };
        out.push(NodeStatus {
            node: node.id.clone(),
            kind: node.spec.label(),
            desired: true,
            recorded: recorded.map(|r| r.id.clone()),
            live: observed.map(|l| l.id.clone()),
            verdict,
            action,
        });
    }
    follow_moved_dependencies(nodes, &mut out);
    let desired: BTreeSet<&NodeId> = nodes.iter().map(|n| &n.id).collect();
    for (id, record) in state.nodes() {
        if !desired.contains(id) {
            out.push(NodeStatus {
                node: id.clone(),
                kind: id.kind().label(),
                desired: false,
                recorded: Some(record.id.clone()),
                live: live.get(id).map(|l| l.id.clone()),
                verdict: Verdict::NotInConfig,
                action: Action::Delete,
            });
        }
    }
    for (id, l) in &live.nodes {
        if l.owner == Owner::Us && state.get(id).is_none() && !desired.contains(id) {
            // A target group a new port replaced, left by a run whose rollout did not complete (or that died):
            // this lifecycle's, so `up` removes it once the rollouts have completed, as it would have then.
            let replaced_target_group =
                id.is_twin() && id.kind() == Kind::TargetGroup && l.lineage.as_deref() == Some(state.nonce());
            out.push(NodeStatus {
                node: id.clone(),
                kind: id.kind().label(),
                desired: false,
                recorded: None,
                live: Some(l.id.clone()),
                verdict: Verdict::Extra,
                action: if replaced_target_group { Action::Delete } else { Action::Unsupported },
            });
        }
    }
    Ok(out)
}

/// Whether `up` may take an unrecorded resource tagged for the stack as its node's: one this lifecycle made (a run
/// killed between a create and its record), or one of a kind that outlives lifecycles by design (the log group a
/// `down` kept). Another state file's copy of the stack is never taken without `--adopt`.
fn adoptable(kind: Kind, live: &resource::Observed, state: &StateFile) -> bool {
    live.lineage.as_deref() == Some(state.nonce()) || kind.on_down() != OnDown::Delete
}

/// A resource that points at other nodes' ids (a service at its subnets and revision, a route at its gateway) is
/// updated when one of them gets a new id: recreated, or updated by a kind whose update moves the id.
fn follow_moved_dependencies(nodes: &[Node], out: &mut [NodeStatus]) {
    let moved: BTreeSet<NodeId> = out
        .iter()
        .filter(|s| {
            s.action == Action::Recreate
                || s.action == Action::Create && s.recorded.is_some()
                || (s.action == Action::Update && s.node.kind().update_moves_id())
        })
        .map(|s| s.node.clone())
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        if out[i].action != Action::NoOp || !node.deps.iter().any(|d| moved.contains(d)) {
            continue;
        }
        // One that cannot follow is made anew on the new dependency (an association of a recreated subnet: on
        // AWS the old one went with the old subnet).
        out[i].action = if node.spec.kind().follows_dependencies() { Action::Update } else { Action::Recreate };
    }
}

/// What `down` does with one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Teardown {
    Delete,
    /// Recorded, not found live: forgotten.
    AlreadyGone,
    /// Left in place on purpose and forgotten: account-wide, or kept for its logs.
    Keep,
    /// Tagged as somebody else's (or untagged): never deleted; forgotten, and the run fails so the user looks.
    NotOwned(Option<String>),
    /// Tagged for the stack but made from another state file (its lineage, if any), without `--adopt`: left in
    /// place and reported.
    Leftover(Option<String>),
    /// Not attempted: it still holds what is left in place (a cluster with another state's services in it).
    Held(String),
}

/// The teardown of what the read found: every recorded node, and every live node tagged for the stack.
pub fn teardown(state: &StateFile, live: &Live, adopt: bool, delete_logs: bool) -> Vec<(NodeId, Teardown)> {
    let mut plan = Vec::new();
    let keep = |kind: Kind| match kind.on_down() {
        OnDown::Delete => false,
        OnDown::Forget => true,
        OnDown::KeepUnlessDeleteLogs => !delete_logs,
    };
    for id in state.nodes().keys() {
        let action = match live.get(id) {
            None => Teardown::AlreadyGone,
            Some(_) if keep(id.kind()) => Teardown::Keep,
            Some(l) => match &l.owner {
                Owner::Us => Teardown::Delete,
                Owner::Other(tag) => Teardown::NotOwned(tag.clone()),
            },
        };
        plan.push((id.clone(), action));
    }
    for (id, l) in &live.nodes {
        if state.get(id).is_some() || l.owner != Owner::Us || id.kind().on_down() == OnDown::Forget {
            continue;
        }
        let action = match () {
            _ if keep(id.kind()) => continue,
            // Part of one of the stack's resources (rules naming other groups, which would otherwise block their
            // deletion both ways), made by whoever made that one: deleted with it when this lineage made it (or
            // none is known: a release before lineage tags), and never listed as a leftover of its own.
            _ if id.kind().part_of_parent() => match l.lineage.as_deref() {
                Some(lineage) if lineage != state.nonce() && !adopt => continue,
                _ => Teardown::Delete,
            },
            // An older revision of a recorded task definition (`up` keeps the one before the running one, for a
            // rollback): deleted with its family.
            _ if id.is_twin() && id.kind() == Kind::TaskDefinition && state.get(id.base()).is_some() => {
                Teardown::Delete
            }
            // Made by this lifecycle but never recorded (a run killed between a create and its record).
            _ if l.lineage.as_deref() == Some(state.nonce()) => Teardown::Delete,
            _ if adopt => Teardown::Delete,
            _ => Teardown::Leftover(l.lineage.clone()),
        };
        plan.push((id.clone(), action));
    }
    hold_containers(&mut plan);
    plan
}

/// A cluster that keeps services left in place, or a namespace that keeps Cloud Map services left in place, cannot
/// be deleted (AWS refuses while they exist): it is not attempted, and says what holds it.
fn hold_containers(plan: &mut [(NodeId, Teardown)]) {
    let left = |kind: Kind| -> Vec<String> {
        plan.iter()
            .filter(|(id, a)| id.kind() == kind && matches!(a, Teardown::Leftover(_) | Teardown::NotOwned(_)))
            .map(|(id, _)| id.to_string())
            .collect()
    };
    let held = [(Kind::Cluster, left(Kind::Service)), (Kind::Namespace, left(Kind::SdService))];
    for (container, contents) in held {
        if contents.is_empty() {
            continue;
        }
        for (id, action) in plan.iter_mut() {
            if id.kind() == container && *action == Teardown::Delete {
                *action = Teardown::Held(format!("it still holds {} (left in place)", contents.join(", ")));
            }
        }
    }
}

#[cfg(test)]
mod tests;
