//! An AWS-managed prefix list (`com.amazonaws.<region>.s3`), looked up by name for the egress rules to S3: never
//! created, changed or deleted by secep; `down` forgets it.

use anyhow::{Result, bail};
use aws_sdk_ec2::types::Filter;
use serde::Serialize;

use super::{
    Compare, Created, Ctx, Deleted, Found, Kind, NoChange, OnChange, OnDown, ReadCx, Resource, Salt, View, api_error,
};
use crate::model::Node;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub service: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The list's name as the lookup answered it; `None` for a recorded list, which is not read again (AWS's own,
    /// account-wide: nothing of the stack changes it).
    pub name: Option<String>,
}

pub struct PrefixList;

impl Resource for PrefixList {
    type Spec = Spec;
    type Facts = Facts;
    type Change = NoChange;
    const LABEL: &'static str = "prefix list";
    const ON_CHANGE: OnChange = OnChange::InPlace;
    const ON_DOWN: OnDown = OnDown::Forget;

    /// No call: what the state records stands (AWS's own list is not re-read on every status).
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        Ok(cx
            .recorded(Kind::PrefixList)
            .filter(|(node, _)| !node.is_twin())
            .map(|(node, r)| Found {
                node: Some(node.clone()),
                id: r.id.clone(),
                arn: r.arn.clone(),
                owner: super::Owner::Us,
                lineage: None,
                facts: Facts { name: None },
            })
            .collect())
    }

    fn compare(_spec: &Spec, _facts: &Facts, _cx: &Compare<'_>) -> Vec<NoChange> {
        Vec::new()
    }

    /// The lookup: the list of the service in the client's region.
    async fn create(ctx: &Ctx, _node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let name = format!("com.amazonaws.{}.{}", ctx.clients.region, spec.service);
        let out = ctx
            .clients
            .ec2
            .describe_prefix_lists()
            .filters(Filter::builder().name("prefix-list-name").values(&name).build())
            .send()
            .await
            .map_err(|e| api_error(format!("look up prefix list {name}"), e))?;
        let Some(list) = out.prefix_lists().iter().find(|p| p.prefix_list_id().is_some()) else {
            bail!(
                "region {} has no prefix list {name}\n  hint: use network.egress = \"nat\" where S3 has no gateway endpoint",
                ctx.clients.region
            )
        };
        let created = Created::from_answer("DescribePrefixLists", list.prefix_list_id(), None)?;
        Ok((created, Facts { name: Some(list.prefix_list_name().unwrap_or(&name).to_string()) }))
    }

    /// Nothing to change: the compare never finds a difference.
    async fn update(
        _ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        _live: &View<'_, Facts>,
        _changes: &[NoChange],
    ) -> Result<Option<Created>> {
        Ok(None)
    }

    /// Never deleted: AWS's own. `down` forgets the record without calling this (ON_DOWN); should anything else
    /// call it, there is nothing to delete and the record may go.
    async fn delete(_ctx: &Ctx, _live: &View<'_, Facts>) -> Result<Deleted> {
        Ok(Deleted::Now)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    #[test]
    fn a_looked_up_list_never_differs() {
        let spec = Spec { service: "s3".into() };
        let node = Node {
            id: crate::model::NodeId::PrefixList("s3".into()),
            spec: crate::resource::Spec::PrefixList(spec.clone()),
            deps: vec![],
        };
        let refs: BTreeMap<crate::model::NodeId, Record> = BTreeMap::new();
        let cx = Compare { node: &node, refs: &refs, config_changed: true };
        assert!(PrefixList::compare(&spec, &Facts { name: None }, &cx).is_empty());
        assert_eq!(PrefixList::ON_DOWN, OnDown::Forget);
        assert_eq!(node.id.to_string(), "prefix-list/s3");
    }
}
