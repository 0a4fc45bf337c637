//! The Fargate task definition: awsvpc, one essential container with its port and environment (peer URLs included).

use anyhow::Result;
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, KeyValuePair, LogConfiguration, LogDriver, NetworkMode, PortMapping,
    TransportProtocol,
};

use super::{Created, Ctx, Deleted, Owner, api_error, ecs_tags, error_code, owner_from_tag};
use crate::model::TaskDefinitionSpec;

/// The execution role's ARN: the config's, or the one secep created (recorded under `role/execution`).
async fn execution_role_arn(ctx: &Ctx, td: &TaskDefinitionSpec) -> Result<String> {
    if td.execution_role.starts_with("arn:") {
        return Ok(td.execution_role.clone());
    }
    match ctx.arn_of(&td.execution_role) {
        Ok(arn) => Ok(arn),
        // Adopted after a crash: the state knows its name only.
        Err(_) => super::iam::role_arn(ctx, &ctx.id_of(&td.execution_role)?).await,
    }
}

/// `awslogs` into the stack's group, one stream per task under the service's name.
fn log_configuration(td: &TaskDefinitionSpec) -> LogConfiguration {
    LogConfiguration::builder()
        .log_driver(LogDriver::Awslogs)
        .options("awslogs-group", &td.log_group)
        .options("awslogs-region", &td.region)
        .options("awslogs-stream-prefix", &td.service)
        .build()
        .expect("log driver is set")
}

pub async fn create(ctx: &Ctx, node: &str, td: &TaskDefinitionSpec) -> Result<Created> {
    let execution_role = execution_role_arn(ctx, td).await?;
    // An interrupted run may have registered this very revision without recording it: reuse it, never a twin. A
    // family the live read found without revisions has none to look up (a round trip off the deploy's chain).
    let may_exist = ctx.task_families.as_ref().is_none_or(|f| f.contains(&td.family));
    if may_exist && let Some(arn) = find_identical(ctx, td, &execution_role).await? {
        return Ok(Created { id: arn.clone(), arn: Some(arn) });
    }
    let environment = td.environment.iter().map(|(k, v)| KeyValuePair::builder().name(k).value(v).build()).collect();
    let container = ContainerDefinition::builder()
        .name(&td.service)
        .image(&td.image)
        .essential(true)
        .port_mappings(
            PortMapping::builder().container_port(i32::from(td.port)).protocol(TransportProtocol::Tcp).build(),
        )
        .set_environment(Some(environment))
        .log_configuration(log_configuration(td))
        .build();
    let out = ctx
        .clients
        .ecs
        .register_task_definition()
        .family(&td.family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu(td.cpu.to_string())
        .memory(td.memory.to_string())
        .container_definitions(container)
        .execution_role_arn(&execution_role)
        .set_task_role_arn(td.task_role_arn.clone())
        .set_tags(Some(ecs_tags(ctx, node, &td.family)))
        .send()
        .await
        .map_err(|e| api_error(format!("register task definition {}", td.family), e))?;
    let arn = out.task_definition().and_then(|t| t.task_definition_arn()).unwrap_or_default().to_string();
    Ok(Created { id: arn.clone(), arn: Some(arn) })
}

pub async fn owner(ctx: &Ctx, arn: &str) -> Result<Owner> {
    let out = describe(&ctx.clients, arn).await;
    match out {
        Ok(o) => match o.task_definition() {
            Some(td) if td.status() == Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active) => {
                Ok(owner_from_tag(ctx, super::service::stack_tag(o.tags())))
            }
            _ => Ok(Owner::Gone),
        },
        // ECS answers a ClientException for an unknown revision.
        Err(e) if error_code(&e) == Some("ClientException") => Ok(Owner::Gone),
        Err(e) => Err(e),
    }
}

/// Deregisters the revision secep registered (ECS keeps INACTIVE revisions readable; that is how AWS works).
pub async fn delete(ctx: &Ctx, arn: &str) -> Result<Deleted> {
    let out = ctx.clients.ecs.deregister_task_definition().task_definition(arn).send().await;
    match out.map_err(|e| api_error(format!("deregister task definition {arn}"), e)) {
        Ok(_) => Ok(Deleted::Now),
        Err(e) if error_code(&e) == Some("ClientException") => Ok(Deleted::AlreadyGone),
        Err(e) => Err(e),
    }
}

/// The newest ACTIVE revision of the family, if it is this stack's and has exactly the spec's content.
async fn find_identical(ctx: &Ctx, td: &TaskDefinitionSpec, execution_role: &str) -> Result<Option<String>> {
    let listed = ctx
        .clients
        .ecs
        .list_task_definitions()
        .family_prefix(&td.family)
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .sort(aws_sdk_ecs::types::SortOrder::Desc)
        .max_results(1)
        .send()
        .await
        .map_err(|e| api_error(format!("list revisions of {}", td.family), e))?;
    let Some(arn) = listed.task_definition_arns().first() else { return Ok(None) };
    let out = describe(&ctx.clients, arn).await?;
    let Some(live) = out.task_definition() else { return Ok(None) };
    let container = live.container_definitions().first();
    let environment: std::collections::BTreeMap<String, String> = container
        .map(|c| {
            c.environment().iter().filter_map(|kv| Some((kv.name()?.to_string(), kv.value()?.to_string()))).collect()
        })
        .unwrap_or_default();
    let same = owner_from_tag(ctx, super::service::stack_tag(out.tags())) == Owner::Us
        && container.and_then(|c| c.image()) == Some(td.image.as_str())
        && container.and_then(|c| c.port_mappings().first()).and_then(|p| p.container_port())
            == Some(i32::from(td.port))
        && live.cpu() == Some(td.cpu.to_string().as_str())
        && live.memory() == Some(td.memory.to_string().as_str())
        && environment == td.environment
        && live.execution_role_arn() == Some(execution_role)
        && live.task_role_arn() == td.task_role_arn.as_deref()
        && container.and_then(|c| c.log_configuration()).and_then(|l| l.options()) == log_configuration(td).options();
    Ok(same.then(|| arn.clone()))
}

/// A task definition revision with its tags.
pub async fn describe(
    clients: &crate::aws::Clients,
    arn: &str,
) -> Result<aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput> {
    clients
        .ecs
        .describe_task_definition()
        .task_definition(arn)
        .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
        .send()
        .await
        .map_err(|e| api_error(format!("read task definition {arn}"), e))
}
