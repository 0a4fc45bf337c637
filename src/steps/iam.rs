//! IAM: the account's ECS service-linked role (made sure of, never deleted) and the stack's task execution role.

use anyhow::{Result, bail};

use super::{Created, Ctx, Deleted, Owner, api_error, error_code, owner_from_tag};
use crate::aws::Clients;

/// Service-linked roles live under this path; listing it finds the role whatever its exact name (moto names the
/// ECS one `AWSServiceRoleForecs`, AWS `AWSServiceRoleForECS`).
fn linked_role_path(service: &str) -> String {
    format!("/aws-service-role/{service}/")
}

async fn find_linked_role(ctx: &Ctx, service: &str) -> Result<Option<(String, String)>> {
    let out = ctx
        .clients
        .iam
        .list_roles()
        .path_prefix(linked_role_path(service))
        .send()
        .await
        .map_err(|e| api_error(format!("look for the service-linked role of {service}"), e))?;
    Ok(out.roles().first().map(|r| (r.role_name().to_string(), r.arn().to_string())))
}

/// Fresh accounts lack the ECS service-linked role, and CreateService fails without it: create it if missing.
pub async fn ensure_linked_role(ctx: &Ctx, service: &str) -> Result<Created> {
    if let Some((name, arn)) = find_linked_role(ctx, service).await? {
        return Ok(Created { id: name, arn: Some(arn) });
    }
    let created = ctx.clients.iam.create_service_linked_role().aws_service_name(service).send().await;
    match created.map_err(|e| api_error(format!("create the service-linked role of {service}"), e)) {
        Ok(out) => {
            let role = out.role().map(|r| (r.role_name().to_string(), r.arn().to_string())).unwrap_or_default();
            Ok(Created { id: role.0, arn: Some(role.1) })
        }
        // Another deployer created it in between: fine, it is account-wide.
        Err(e) if matches!(error_code(&e), Some("InvalidInput" | "EntityAlreadyExists")) => {
            match find_linked_role(ctx, service).await? {
                Some((name, arn)) => Ok(Created { id: name, arn: Some(arn) }),
                None => Err(e),
            }
        }
        Err(e) => Err(e.context(
            "secep needs iam:CreateServiceLinkedRole once per account (or create it yourself: `aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com`)",
        )),
    }
}

const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// The task execution role: trusted by ECS tasks, with AWS's managed execution policy (ECR pulls, log streams).
pub async fn create_execution_role(ctx: &Ctx, node: &str, name: &str, policy_arn: &str) -> Result<Created> {
    let tags: Vec<aws_sdk_iam::types::Tag> = ctx
        .tags(node, name)
        .into_iter()
        .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build())
        .collect::<Result<_, _>>()?;
    let created = ctx
        .clients
        .iam
        .create_role()
        .role_name(name)
        .path("/secep/")
        .assume_role_policy_document(TRUST_POLICY)
        .description(format!("secep {}: ECS task execution (image pulls, logs)", ctx.stack))
        .set_tags(Some(tags))
        .send()
        .await;
    let arn = match created.map_err(|e| api_error(format!("create IAM role {name}"), e)) {
        Ok(out) => out.role().map(|r| r.arn().to_string()).unwrap_or_default(),
        // A run killed after CreateRole left it: ours if tagged so, else a name clash the user must resolve.
        Err(e) if error_code(&e) == Some("EntityAlreadyExists") => match read_role(&ctx.clients, name).await? {
            Some((arn, tag)) if owner_from_tag(ctx, tag.as_deref()) == Owner::Us => arn,
            _ => bail!(
                "an IAM role named {name} already exists and is not tagged secep:stack={}\n  hint: set stack.execution_role_arn to use an existing role, or rename the stack",
                ctx.stack
            ),
        },
        Err(e) => return Err(e),
    };
    ctx.clients
        .iam
        .attach_role_policy()
        .role_name(name)
        .policy_arn(policy_arn)
        .send()
        .await
        .map_err(|e| api_error(format!("attach {policy_arn} to IAM role {name}"), e))?;
    Ok(Created { id: name.to_string(), arn: Some(arn) })
}

/// A role's ARN and `secep:stack` tag, or `None` if there is no such role.
pub async fn read_role(clients: &Clients, name: &str) -> Result<Option<(String, Option<String>)>> {
    match clients.iam.get_role().role_name(name).send().await {
        Ok(out) => Ok(out.role().map(|role| {
            let tag = role.tags().iter().find(|t| t.key() == super::TAG_STACK).map(|t| t.value().to_string());
            (role.arn().to_string(), tag)
        })),
        Err(e) => {
            let e = api_error(format!("read IAM role {name}"), e);
            if error_code(&e) == Some("NoSuchEntity") { Ok(None) } else { Err(e) }
        }
    }
}

pub async fn role_arn(ctx: &Ctx, name: &str) -> Result<String> {
    match read_role(&ctx.clients, name).await? {
        Some((arn, _)) => Ok(arn),
        None => bail!(
            "IAM role {name} does not exist although the state records it\n  hint: re-run `secep up` to recreate it"
        ),
    }
}

pub async fn owner(ctx: &Ctx, name: &str) -> Result<Owner> {
    Ok(read_role(&ctx.clients, name).await?.map_or(Owner::Gone, |(_, tag)| owner_from_tag(ctx, tag.as_deref())))
}

/// Detaches every managed policy and deletes every inline one (IAM refuses to delete a role that has any), then
/// deletes the role.
pub async fn delete_role(ctx: &Ctx, name: &str) -> Result<Deleted> {
    let iam = &ctx.clients.iam;
    let gone = |e: &anyhow::Error| error_code(e) == Some("NoSuchEntity");
    let attached = match iam.list_attached_role_policies().role_name(name).send().await {
        Ok(out) => out.attached_policies().iter().filter_map(|p| p.policy_arn().map(str::to_string)).collect(),
        Err(e) => {
            let e = api_error(format!("list the policies of IAM role {name}"), e);
            return if gone(&e) { Ok(Deleted::AlreadyGone) } else { Err(e) };
        }
    };
    let attached: Vec<String> = attached;
    for arn in attached {
        iam.detach_role_policy()
            .role_name(name)
            .policy_arn(&arn)
            .send()
            .await
            .map_err(|e| api_error(format!("detach {arn} from IAM role {name}"), e))?;
    }
    let inline = iam
        .list_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| api_error(format!("list the inline policies of IAM role {name}"), e))?;
    for policy in inline.policy_names() {
        iam.delete_role_policy()
            .role_name(name)
            .policy_name(policy)
            .send()
            .await
            .map_err(|e| api_error(format!("delete inline policy {policy} of IAM role {name}"), e))?;
    }
    match iam.delete_role().role_name(name).send().await.map_err(|e| api_error(format!("delete IAM role {name}"), e)) {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if gone(&e) => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}
