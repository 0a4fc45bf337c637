//! The ECS cluster, named after the stack. Read through the shared describe of the stack's cluster; nothing of it
//! is compared (a new name is a new cluster).

use anyhow::{Result, bail};
use serde::Serialize;

use super::read::ecs_tag;
use super::support::ecs_tags;
use super::{
    Created, Ctx, Deleted, ErrorKind, Found, NoChange, OnChange, OrGone, Owner, ReadCx, Resource, Salt, TAG_LINEAGE, TAG_STACK,
    View, api_error, retry_while,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub name: String,
}

pub struct Cluster;

impl Resource for Cluster {
    type Spec = Spec;
    type Facts = Facts;
    type Change = NoChange;
    const LABEL: &'static str = "ecs cluster";
    const ON_CHANGE: OnChange = OnChange::Replace;

    /// The active cluster named after the stack, whoever's it is (its tag tells): one describe, shared with the
    /// ECS services' read. In teardown too: the recorded id is that name.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let Some(cluster) = cx.cluster().await? else { return Ok(Vec::new()) };
        let name = cluster.cluster_name().unwrap_or(cx.stack).to_string();
        Ok(vec![Found {
            node: Some(NodeId::Cluster),
            id: name.clone(),
            arn: cluster.cluster_arn().map(str::to_string),
            owner: cx.owner(ecs_tag(cluster.tags(), TAG_STACK)),
            lineage: ecs_tag(cluster.tags(), TAG_LINEAGE).map(str::to_string),
            facts: Facts { name },
        }])
    }

    fn compare(_spec: &Spec, _facts: &Facts, _cx: &super::Compare<'_>) -> Vec<NoChange> {
        Vec::new()
    }

    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let name = &spec.name;
        // CreateCluster on an existing name returns that cluster: make sure it is not somebody else's. The live read
        // may have found the name free, and then this read (which lay on the path to every ECS service) is saved.
        if !ctx.hints.cluster_name_free {
            refuse_foreign(name, holder(ctx, name).await?)?;
        }
        let out = ctx
            .clients
            .ecs
            .create_cluster()
            .cluster_name(name)
            .set_tags(Some(ecs_tags(ctx, &node.id, name)))
            .send()
            .await
            .map_err(|e| api_error(format!("create ECS cluster {name}"), e))?;
        let cluster = out.cluster();
        let created = Created::from_answer(
            "CreateCluster",
            cluster.and_then(|c| c.cluster_name()),
            cluster.and_then(|c| c.cluster_arn()),
        )?;
        let facts = Facts { name: created.id.clone() };
        Ok((created, facts))
    }

    async fn update(
        _ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        _live: &View<'_, Facts>,
        changes: &[NoChange],
    ) -> Result<Option<Created>> {
        match changes.first() {
            Some(never) => match *never {},
            None => Ok(None),
        }
    }

    /// An ECS cluster cannot be deleted while services remain in it (ClusterContainsServicesException), for a while
    /// even after they were deleted: waited out, bounded.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let name = live.id;
        let attempt = || async {
            ctx.clients
                .ecs
                .delete_cluster()
                .cluster(name)
                .send()
                .await
                .map_err(|e| api_error(format!("delete ECS cluster {name}"), e))
        };
        let blocked = || async move { format!("cluster {name} still contains services or tasks") };
        // ClusterContainsServices/Tasks: DependencyViolation; UpdateInProgressException: InUse.
        let deleted = retry_while(ctx, &[ErrorKind::DependencyViolation, ErrorKind::InUse], attempt, blocked)
            .await
            .or_gone()?;
        Ok(if deleted.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
    }

    fn replace_reason(spec: &Spec) -> String {
        format!("the cluster name (now {}): replacing it destroys every ECS service", spec.name)
    }
}

/// Who holds the cluster of this name, if one exists (not INACTIVE).
async fn holder(ctx: &Ctx, name: &str) -> Result<Option<Owner>> {
    let out = ctx
        .clients
        .ecs
        .describe_clusters()
        .clusters(name)
        .include(aws_sdk_ecs::types::ClusterField::Tags)
        .send()
        .await
        .map_err(|e| api_error(format!("read ECS cluster {name}"), e))?;
    Ok(out
        .clusters()
        .iter()
        .find(|c| c.status() != Some("INACTIVE"))
        .map(|c| Owner::from_tag(&ctx.stack, ecs_tag(c.tags(), TAG_STACK))))
}

/// CreateCluster would hand back somebody else's cluster: refused.
fn refuse_foreign(name: &str, holder: Option<Owner>) -> Result<()> {
    if let Some(owner @ Owner::Other(_)) = holder {
        bail!(
            "an ECS cluster named {name} already exists and is not this stack's (it carries {})\n  hint: the cluster is named after the stack; rename the stack in [stack] name",
            owner.describe()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resource::Compare;
    use crate::state::Record;

    fn node() -> Node {
        Node {
            id: NodeId::Cluster,
            spec: crate::resource::Spec::Cluster(Spec { name: "shop".into() }),
            deps: vec![NodeId::LinkedRole("ecs".into())],
        }
    }

    #[test]
    fn a_live_cluster_is_in_sync() {
        let (node, refs) = (node(), BTreeMap::<NodeId, Record>::new());
        let cx = Compare { node: &node, refs: &refs, config_changed: false };
        let spec = Spec { name: "shop".into() };
        assert!(Cluster::compare(&spec, &Facts { name: "shop".into() }, &cx).is_empty());
    }

    #[test]
    fn somebody_elses_cluster_is_refused_and_a_free_or_own_name_is_not() {
        assert!(refuse_foreign("shop", None).is_ok());
        assert!(refuse_foreign("shop", Some(Owner::Us)).is_ok());
        let err = refuse_foreign("shop", Some(Owner::Other(Some("other".into())))).unwrap_err();
        assert!(err.to_string().contains("secep:stack=other"), "{err}");
        let err = refuse_foreign("shop", Some(Owner::Other(None))).unwrap_err();
        assert!(err.to_string().contains("no secep:stack tag"), "{err}");
    }

    #[test]
    fn the_spec_serialises_as_before() {
        let spec = crate::resource::Spec::Cluster(Spec { name: "shop".into() });
        assert_eq!(serde_json::to_string(&spec).unwrap(), r#"{"kind":"cluster","name":"shop"}"#);
    }
}
