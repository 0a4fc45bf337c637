//! The Fargate task definition: awsvpc, one essential container with its port and environment (peer URLs included).

use anyhow::Result;
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, KeyValuePair, NetworkMode, PortMapping, TransportProtocol,
};

use super::{Created, Ctx, api_error, ecs_tags};
use crate::model::TaskDefinitionSpec;

pub async fn create(ctx: &Ctx, node: &str, td: &TaskDefinitionSpec) -> Result<Created> {
    let environment = td.environment.iter().map(|(k, v)| KeyValuePair::builder().name(k).value(v).build()).collect();
    let container = ContainerDefinition::builder()
        .name(&td.service)
        .image(&td.image)
        .essential(true)
        .port_mappings(
            PortMapping::builder()
                .container_port(i32::from(td.port))
                .protocol(TransportProtocol::Tcp)
                .name(format!("{}-{}", td.service, td.port))
                .build(),
        )
        .set_environment(Some(environment))
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
        .set_tags(Some(ecs_tags(ctx, node, &td.family)))
        .send()
        .await
        .map_err(|e| api_error(format!("register task definition {}", td.family), e))?;
    let arn = out.task_definition().and_then(|t| t.task_definition_arn()).unwrap_or_default().to_string();
    Ok(Created { id: arn.clone(), arn: Some(arn) })
}
