//! The account's service-linked role of an AWS service (ECS's, `AWSServiceRoleForECS`): CreateService fails without
//! it on a fresh account, so it is made sure of before the first ECS call. Account-wide: never deleted, only forgotten.

use anyhow::{Result, bail};
use serde::Serialize;

use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, NoChange, OnChange, OnDown, Owner, ReadCx, Resource, Salt,
    View, api_error, is,
};
use crate::model::Node;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// The AWS service the role is linked to (`ecs.amazonaws.com`).
    pub service: String,
}

/// Nothing to compare: the role is AWS's, and its existence is all secep needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts;

pub struct LinkedRole;

/// Service-linked roles live under this path; listing it finds the role whatever its exact name (moto names the
/// ECS one `AWSServiceRoleForecs`, AWS `AWSServiceRoleForECS`).
fn linked_role_path(service: &str) -> String {
    format!("/aws-service-role/{service}/")
}

/// The service's linked role, if the account has it (one ListRoles call).
async fn find(ctx: &Ctx, service: &str) -> Result<Option<Created>> {
    let out = ctx
        .clients
        .iam
        .list_roles()
        .path_prefix(linked_role_path(service))
        .send()
        .await
        .map_err(|e| api_error(format!("look for the service-linked role of {service}"), e))?;
    out.roles().first().map(|r| Created::from_answer("ListRoles", Some(r.role_name()), Some(r.arn()))).transpose()
}

impl Resource for LinkedRole {
    type Spec = Spec;
    type Facts = Facts;
    type Change = NoChange;
    const LABEL: &'static str = "service-linked role";
    const ON_CHANGE: OnChange = OnChange::InPlace;
    const ON_DOWN: OnDown = OnDown::Forget;

    /// A recorded role is taken as it is, with no call (account-wide and AWS-managed: nobody deletes it); an
    /// unrecorded one is made sure of by `create` (ListRoles first, so an existing role costs no create).
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        Ok(cx
            .recorded(Kind::LinkedRole)
            .map(|(node, record)| Found {
                node: Some(node.clone()),
                id: record.id.clone(),
                arn: record.arn.clone(),
                owner: Owner::Us,
                lineage: None,
                facts: Facts,
            })
            .collect())
    }

    fn compare(_spec: &Spec, _facts: &Facts, _cx: &Compare<'_>) -> Vec<NoChange> {
        Vec::new()
    }

    /// Fresh accounts lack the ECS service-linked role, and CreateService fails without it: create it if missing.
    async fn create(ctx: &Ctx, _node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let service = spec.service.as_str();
        if let Some(role) = find(ctx, service).await? {
            return Ok((role, Facts));
        }
        let created = ctx.clients.iam.create_service_linked_role().aws_service_name(service).send().await;
        match created.map_err(|e| api_error(format!("create the service-linked role of {service}"), e)) {
            Ok(out) => {
                let role = out.role();
                let created = Created::from_answer(
                    "CreateServiceLinkedRole",
                    role.map(|r| r.role_name()),
                    role.map(|r| r.arn()),
                )?;
                Ok((created, Facts))
            }
            // Another deployer created it in between: fine, it is account-wide. IAM answers EntityAlreadyExists or
            // InvalidInput ("... has been taken in this account", classified Invalid) for that; the role found
            // afterwards is what tells it from a real error.
            Err(e) if is(&e, ErrorKind::AlreadyExists) || is(&e, ErrorKind::Invalid) => {
                match find(ctx, service).await? {
                    Some(role) => Ok((role, Facts)),
                    None => Err(e),
                }
            }
            Err(e) => Err(e.context(
                "secep needs iam:CreateServiceLinkedRole once per account (or create it yourself: `aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com`)",
            )),
        }
    }

    async fn update(
        _ctx: &Ctx,
        _node: &Node,
        _spec: &Spec,
        _live: &View<'_, Facts>,
        _changes: &[NoChange],
    ) -> Result<Option<Created>> {
        Ok(None)
    }

    /// Never called: the role is account-wide (other stacks' services need it too), so `down` forgets it
    /// ([`OnDown::Forget`]). Refused rather than reported done, should the engine ever ask.
    async fn delete(_ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        bail!("internal error: the service-linked role {} is account-wide and never deleted, only forgotten", live.id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::NodeId;
    use crate::state::Record;

    #[test]
    fn there_is_nothing_to_compare() {
        let spec = Spec { service: "ecs.amazonaws.com".into() };
        let node = Node {
            id: NodeId::LinkedRole("ecs".into()),
            spec: super::super::Spec::LinkedRole(spec.clone()),
            deps: vec![],
        };
        let refs = BTreeMap::<NodeId, Record>::new();
        let cx = Compare { node: &node, refs: &refs, config_changed: true };
        assert!(LinkedRole::compare(&spec, &Facts, &cx).is_empty());
    }

    #[test]
    fn the_role_is_looked_for_under_its_services_path() {
        assert_eq!(linked_role_path("ecs.amazonaws.com"), "/aws-service-role/ecs.amazonaws.com/");
    }
}
