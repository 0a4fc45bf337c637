//! The stack's CloudWatch log group (`/secep/<stack>`), the `awslogs` destination of every container. `down` keeps
//! it (logs outlive a deployment) unless asked to delete it. Made by two calls (create, then the retention).

use std::collections::HashMap;
use std::fmt;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OnDown, OrGone, Owner, ReadCx, Resource, Salt,
    View, api_error, is,
};
use super::support::StackTags;
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
    pub retention_days: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// `None`: the events never expire (what a new group gets).
    pub retention_days: Option<i32>,
    /// The retention the account keeps for every group (an account-level policy overrides the group's, and
    /// DescribeLogGroups reports it): found when secep's own PutRetentionPolicy read back differently, and kept
    /// in the group's [`TAG_ACCOUNT_RETENTION`] tag; read only when the retention differs from the config's.
    pub account_retention: Option<i32>,
}

/// The tag that remembers an account-level retention (see [`Facts::account_retention`]).
const TAG_ACCOUNT_RETENTION: &str = "secep:account-retention";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Retention { live: Option<i32>, want: u32 },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Retention { live, want } => write!(
                f,
                "retention is {}, not {want} days",
                live.map_or("never expire".to_string(), |l| format!("{l} days"))
            ),
        }
    }
}

impl super::Change for Change {}

pub struct LogGroup;

/// What DescribeLogGroups tells about a group.
struct LiveGroup {
    /// Without the `:*` that the `arn` field ends in: the tagging API wants it so.
    arn: Option<String>,
    retention_days: Option<i32>,
}

/// The group of exactly this name, or `None` if there is none (the prefix also matches longer names).
async fn describe(logs: &aws_sdk_cloudwatchlogs::Client, name: &str) -> Result<Option<LiveGroup>> {
    let out = logs
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .map_err(|e| api_error(format!("read log group {name}"), e))?;
    Ok(out.log_groups().iter().find(|g| g.log_group_name() == Some(name)).map(|g| LiveGroup {
        arn: g.log_group_arn().or(g.arn()).map(|a| a.trim_end_matches(":*").to_string()),
        retention_days: g.retention_in_days(),
    }))
}

/// The group's ownership tags and the account retention it remembers: `None` if the group is gone meanwhile.
async fn group_tags(
    logs: &aws_sdk_cloudwatchlogs::Client,
    name: &str,
    group: &LiveGroup,
) -> Result<Option<(StackTags, Option<i32>)>> {
    let out = logs
        .list_tags_for_resource()
        .resource_arn(group_arn(name, group)?)
        .send()
        .await
        .map_err(|e| api_error(format!("read the tags of log group {name}"), e))
        .or_gone()?;
    Ok(out.map(|o| {
        let tag = |key: &str| o.tags().and_then(|t| t.get(key)).map(String::as_str);
        (StackTags::of(tag), tag(TAG_ACCOUNT_RETENTION).and_then(|d| d.parse().ok()))
    }))
}

fn group_arn<'a>(name: &str, group: &'a LiveGroup) -> Result<&'a str> {
    group
        .arn
        .as_deref()
        .with_context(|| format!("read the tags of log group {name}: DescribeLogGroups answered without its ARN"))
}

/// One group the read looks at.
struct Lookup {
    node: NodeId,
    name: String,
    recorded: bool,
    /// The config's retention, if the group is desired: another one makes the read look at the tags.
    want: Option<u32>,
}

async fn look(
    logs: aws_sdk_cloudwatchlogs::Client,
    stack: String,
    lookup: Lookup,
    teardown: bool,
) -> Result<Option<Found<Facts>>> {
    let Lookup { node, name, recorded, want } = lookup;
    let Some(group) = describe(&logs, &name).await? else { return Ok(None) };
    // Tags are read only in teardown, for a group the state does not know, or one whose retention is not the
    // config's (one more call per status otherwise); a recorded group is the stack's by its record.
    let other_retention = want.is_some_and(|w| group.retention_days != Some(w as i32));
    let by_tag = teardown || !recorded;
    let (owner, lineage, account_retention) = if by_tag || other_retention {
        match group_tags(&logs, &name, &group).await? {
            Some((tags, account)) if by_tag => {
                (Owner::from_tag(&stack, tags.stack.as_deref()), tags.lineage, account)
            }
            Some((_, account)) => (Owner::Us, None, account),
            None => return Ok(None),
        }
    } else {
        (Owner::Us, None, None)
    };
    // Unrecorded, it is the stack's to tear down only if tagged so (kept by an earlier `down`, or left by a
    // killed run).
    if teardown && !recorded && owner != Owner::Us {
        return Ok(None);
    }
    // The record names a group by its name alone, as earlier releases did.
    let facts = Facts { retention_days: group.retention_days, account_retention };
    Ok(Some(Found { node: Some(node), id: name, arn: None, owner, lineage, facts }))
}

/// Sets the retention; if the group then reports another one, the account's policy overrides it: that value is
/// remembered in a tag, so that it is not drift for ever after.
async fn set_retention(ctx: &Ctx, name: &str, days: u32) -> Result<()> {
    let logs = &ctx.clients.logs;
    logs.put_retention_policy()
        .log_group_name(name)
        .retention_in_days(days as i32)
        .send()
        .await
        .map_err(|e| api_error(format!("set the retention of log group {name} to {days} days"), e))?;
    let Some(group) = describe(logs, name).await? else { return Ok(()) };
    let Some(kept) = group.retention_days.filter(|kept| *kept != days as i32) else { return Ok(()) };
    tracing::warn!(
        "log group {name} keeps {kept} days, not the configured {days}: an account-level retention policy overrides the group's"
    );
    logs.tag_resource()
        .resource_arn(group_arn(name, &group)?)
        .tags(TAG_ACCOUNT_RETENTION, kept.to_string())
        .send()
        .await
        .map_err(|e| api_error(format!("tag log group {name} with the account's retention"), e))?;
    Ok(())
}

impl Resource for LogGroup {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "log group";
    const ON_CHANGE: OnChange = OnChange::InPlace;
    const ON_DOWN: OnDown = OnDown::KeepUnlessDeleteLogs;

    /// One DescribeLogGroups per group (the stack has one): the recorded one, or the desired one, and in teardown
    /// the one named after the stack; plus its tags where the owner is not known from the record.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let want = |node: &NodeId| {
            cx.desired(Kind::LogGroup).find(|n| n.id == *node).and_then(|n| match &n.spec {
                super::Spec::LogGroup(s) => Some(s.retention_days),
                _ => None,
            })
        };
        let mut lookups: Vec<Lookup> = cx
            .recorded(Kind::LogGroup)
            .map(|(node, r)| Lookup { node: node.clone(), name: r.id.clone(), recorded: true, want: want(node) })
            .collect();
        let mut unrecorded: Vec<(NodeId, String)> = cx
            .desired(Kind::LogGroup)
            .filter(|n| cx.record(&n.id).is_none())
            .filter_map(|n| match &n.spec {
                super::Spec::LogGroup(s) => Some((n.id.clone(), s.name.clone())),
                _ => None,
            })
            .collect();
        if cx.teardown() {
            unrecorded.push((NodeId::LogGroup, crate::model::log_group_name(cx.stack)));
        }
        for (node, name) in unrecorded {
            if !lookups.iter().any(|l| l.name == name) {
                let want = want(&node);
                lookups.push(Lookup { node, name, recorded: false, want });
            }
        }
        let teardown = cx.teardown();
        let found = super::support::all(lookups, |lookup| {
            let (logs, stack) = (cx.clients.logs.clone(), cx.stack.to_string());
            async move { look(logs, stack, lookup, teardown).await }
        })
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// A retention the account keeps (found when secep last set the config's) is the account's, not drift.
    fn compare(spec: &Spec, facts: &Facts, _cx: &Compare<'_>) -> Vec<Change> {
        let kept_by_account = facts.account_retention.is_some() && facts.account_retention == facts.retention_days;
        if facts.retention_days == Some(spec.retention_days as i32) || kept_by_account {
            Vec::new()
        } else {
            vec![Change::Retention { live: facts.retention_days, want: spec.retention_days }]
        }
    }

    /// CreateLogGroup only, tagged at creation; a new group never expires its events, so the facts returned make
    /// the engine's update set the retention (and a run killed in between leaves a group the next run completes).
    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let name = &spec.name;
        let tags: HashMap<String, String> = ctx.tags(&node.id, name).into_iter().filter(|(k, _)| k != "Name").collect();
        let created = ctx.clients.logs.create_log_group().log_group_name(name).set_tags(Some(tags)).send().await;
        match created.map_err(|e| api_error(format!("create log group {name}"), e)) {
            // CreateLogGroup answers nothing: the group is known by its name.
            Ok(_) => Ok((Created::named(name.clone(), None), Facts { retention_days: None, account_retention: None })),
            // Kept by an earlier `down`, or left by a killed run: reused if it is this stack's.
            Err(e) if is(&e, ErrorKind::AlreadyExists) => {
                // Deleted in between: the clash reported is the one AWS answered.
                let Some(group) = describe(&ctx.clients.logs, name).await? else { return Err(e) };
                let Some((tags, _)) = group_tags(&ctx.clients.logs, name, &group).await? else { return Err(e) };
                let owner = Owner::from_tag(&ctx.stack, tags.stack.as_deref());
                if owner != Owner::Us {
                    bail!(
                        "log group {name} already exists and is not tagged secep:stack={} (it carries {})\n  hint: delete or retag it, or rename the stack",
                        ctx.stack,
                        owner.describe()
                    );
                }
                Ok((Created::named(name.clone(), None), Facts { retention_days: group.retention_days, account_retention: None }))
            }
            Err(e) => Err(e),
        }
    }

    async fn update(
        ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        for change in changes {
            match change {
                Change::Retention { want, .. } => set_retention(ctx, live.id, *want).await?,
            }
        }
        Ok(None)
    }

    /// Called only for `down --delete-logs` ([`OnDown::KeepUnlessDeleteLogs`]) or a group the config dropped.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let name = live.id;
        let out = ctx
            .clients
            .logs
            .delete_log_group()
            .log_group_name(name)
            .send()
            .await
            .map_err(|e| api_error(format!("delete log group {name}"), e))
            .or_gone()?;
        Ok(if out.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn spec() -> Spec {
        Spec { name: "/secep/demo".into(), retention_days: 30 }
    }

    fn compare(retention_days: Option<i32>) -> Vec<Change> {
        compare_facts(Facts { retention_days, account_retention: None })
    }

    fn compare_facts(facts: Facts) -> Vec<Change> {
        let spec = spec();
        let node = Node { id: NodeId::LogGroup, spec: super::super::Spec::LogGroup(spec.clone()), deps: vec![] };
        let refs = BTreeMap::<NodeId, Record>::new();
        let cx = Compare { node: &node, refs: &refs, config_changed: false };
        LogGroup::compare(&spec, &facts, &cx)
    }

    #[test]
    fn a_retention_the_account_keeps_is_not_drift_but_another_one_is() {
        let kept = Facts { retention_days: Some(365), account_retention: Some(365) };
        assert!(compare_facts(kept).is_empty(), "the account's policy overrides the group's");
        // Changed by hand since (or the account's policy changed): secep sets the config's again.
        let changed = Facts { retention_days: Some(7), account_retention: Some(365) };
        assert_eq!(compare_facts(changed), [Change::Retention { live: Some(7), want: 30 }]);
    }

    #[test]
    fn the_configured_retention_is_in_sync() {
        assert!(compare(Some(30)).is_empty());
    }

    #[test]
    fn another_retention_is_found() {
        let changes = compare(Some(7));
        assert_eq!(changes, [Change::Retention { live: Some(7), want: 30 }]);
        assert_eq!(changes[0].to_string(), "retention is 7 days, not 30 days");
        assert!(!super::super::Change::replaces(&changes[0]));
    }

    #[test]
    fn a_group_just_created_is_incomplete_until_its_retention_is_set() {
        // What create returns: a group whose events never expire (a run killed here leaves exactly this).
        let changes = compare(None);
        assert_eq!(changes, [Change::Retention { live: None, want: 30 }]);
        assert_eq!(changes[0].to_string(), "retention is never expire, not 30 days");
    }
}
