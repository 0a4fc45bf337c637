//! The Fargate service: private subnets, its own group, no public IP, registered in its Cloud Map service.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, LaunchType, NetworkConfiguration, PropagateTags, ServiceRegistry,
};

use super::{Created, Ctx, Deleted, Owner, api_error, ecs_tags, error_code, owner_from_tag};
use crate::model::idempotency_token;

pub async fn create(
    ctx: &Ctx,
    node: &str,
    deps: &[String],
    name: &str,
    desired_count: u32,
    digest: &str,
) -> Result<Created> {
    let cluster = ctx.id_of("cluster")?;
    let network = network(ctx, deps, name)?;
    let out = ctx
        .clients
        .ecs
        .create_service()
        .cluster(&cluster)
        .service_name(name)
        .task_definition(ctx.id_of(&format!("td/{name}"))?)
        .desired_count(desired_count as i32)
        .launch_type(LaunchType::Fargate)
        .network_configuration(network)
        .service_registries(ServiceRegistry::builder().registry_arn(ctx.arn_of(&format!("sd/{name}"))?).build())
        // ECS does not fill the token itself; a deterministic one makes a retried create idempotent.
        .client_token(idempotency_token(&ctx.stack, node, digest))
        .propagate_tags(PropagateTags::Service)
        .set_tags(Some(ecs_tags(ctx, node, name)))
        .send()
        .await
        .map_err(|e| api_error(format!("create ECS service {name} in cluster {cluster}"), e))?;
    let arn = out.service().and_then(|s| s.service_arn()).unwrap_or_default().to_string();
    Ok(Created { id: arn.clone(), arn: Some(arn) })
}

/// The service's networking: the stack's private subnets, only its own group, never a public IP.
fn network(ctx: &Ctx, deps: &[String], name: &str) -> Result<NetworkConfiguration> {
    let subnets = deps.iter().filter(|d| d.starts_with("subnet/")).map(|d| ctx.id_of(d)).collect::<Result<Vec<_>>>()?;
    let awsvpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(subnets))
        .security_groups(ctx.id_of(&format!("sg/{name}"))?)
        .assign_public_ip(AssignPublicIp::Disabled)
        .build()
        .context("awsvpc configuration")?;
    Ok(NetworkConfiguration::builder().awsvpc_configuration(awsvpc).build())
}

pub fn stack_tag(tags: &[aws_sdk_ecs::types::Tag]) -> Option<&str> {
    tags.iter().find(|t| t.key() == Some(super::TAG_STACK)).and_then(|t| t.value())
}

/// Splits a service ARN (`arn:…:service/<cluster>/<name>`) into cluster and name.
fn cluster_and_name(arn: &str) -> Result<(&str, &str)> {
    let tail =
        arn.rsplit_once(":service/").map(|(_, t)| t).with_context(|| format!("`{arn}` is not an ECS service ARN"))?;
    tail.split_once('/').with_context(|| format!("`{arn}` has no cluster part (an old-format ARN?)"))
}

/// Status of a service: None when ECS reports it MISSING or its cluster is gone.
async fn describe(ctx: &Ctx, arn: &str) -> Result<Option<aws_sdk_ecs::types::Service>> {
    let (cluster, _) = cluster_and_name(arn)?;
    let out = ctx
        .clients
        .ecs
        .describe_services()
        .cluster(cluster)
        .services(arn)
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .send()
        .await
        .map_err(|e| api_error(format!("read ECS service {arn}"), e));
    match out {
        Ok(o) => Ok(o.services().first().cloned()),
        Err(e) if error_code(&e) == Some("ClusterNotFoundException") => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn owner(ctx: &Ctx, arn: &str) -> Result<Owner> {
    match describe(ctx, arn).await? {
        Some(s) if s.status() != Some("INACTIVE") => Ok(owner_from_tag(ctx, stack_tag(s.tags()))),
        _ => Ok(Owner::Gone),
    }
}

/// Scale to 0, delete with force, then wait until ECS reports it INACTIVE *or* MISSING. Both mean gone; the SDK's
/// `services_inactive` waiter treats MISSING as a failure (hashicorp/terraform#4326), so it is not used.
pub async fn delete(ctx: &Ctx, arn: &str) -> Result<Deleted> {
    let (cluster, name) = cluster_and_name(arn)?;
    let gone = |e: &anyhow::Error| {
        matches!(
            error_code(e),
            Some("ServiceNotFoundException" | "ClusterNotFoundException" | "ServiceNotActiveException")
        )
    };
    match describe(ctx, arn).await? {
        None => return Ok(Deleted::AlreadyGone),
        Some(s) if s.status() == Some("INACTIVE") => return Ok(Deleted::AlreadyGone),
        Some(s) if s.status() == Some("DRAINING") => {} // a previous run deleted it; only the wait is left
        Some(_) => {
            // `force` deletes without scaling to zero first: ECS stops the tasks itself, one call instead of two.
            let deleted = ctx.clients.ecs.delete_service().cluster(cluster).service(name).force(true).send().await;
            if let Err(e) = deleted.map_err(|e| api_error(format!("delete ECS service {name}"), e)) {
                if gone(&e) {
                    return Ok(Deleted::AlreadyGone);
                }
                return Err(e);
            }
        }
    }
    wait_until_gone(ctx, arn, name).await?;
    Ok(Deleted::Now)
}

async fn wait_until_gone(ctx: &Ctx, arn: &str, name: &str) -> Result<()> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match describe(ctx, arn).await? {
            None => return Ok(()),
            Some(s) if s.status() == Some("INACTIVE") => return Ok(()),
            Some(s) => {
                if started.elapsed() + delay > ctx.dependency_timeout {
                    bail!(
                        "ECS service {name} is still {} with {} running task(s) after {}s\n  hint: re-run `secep down` to keep waiting; it resumes where it stopped",
                        s.status().unwrap_or("?"),
                        s.running_count(),
                        ctx.dependency_timeout.as_secs()
                    );
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Puts a drifted service back: desired count, task definition, network configuration and Cloud Map registry as the
/// config and state say (all four are updatable in place).
pub async fn update(ctx: &Ctx, deps: &[String], name: &str, desired_count: u32) -> Result<()> {
    let cluster = ctx.id_of("cluster")?;
    let network = network(ctx, deps, name)?;
    ctx.clients
        .ecs
        .update_service()
        .cluster(&cluster)
        .service(name)
        .desired_count(desired_count as i32)
        .task_definition(ctx.id_of(&format!("td/{name}"))?)
        .network_configuration(network)
        .service_registries(ServiceRegistry::builder().registry_arn(ctx.arn_of(&format!("sd/{name}"))?).build())
        .send()
        .await
        .map_err(|e| api_error(format!("update ECS service {name} in cluster {cluster}"), e))?;
    Ok(())
}

/// Every service of a cluster that is not INACTIVE, plus the `also` ARNs (recorded ones a listing might miss),
/// with tags: one ListServices page walk and one DescribeServices call per 10 services.
pub async fn describe_cluster_services(
    clients: &crate::aws::Clients,
    cluster: &str,
    also: impl IntoIterator<Item = String>,
) -> Result<Vec<aws_sdk_ecs::types::Service>> {
    let mut arns: std::collections::BTreeSet<String> = also.into_iter().collect();
    let mut pages = clients.ecs.list_services().cluster(cluster).into_paginator().send();
    while let Some(page) = pages.next().await {
        arns.extend(
            page.map_err(|e| api_error(format!("list the services of cluster {cluster}"), e))?
                .service_arns()
                .iter()
                .cloned(),
        );
    }
    describe_services(clients, cluster, arns).await
}

/// The services named (by ARN or name) that exist and are not INACTIVE, ten per call (the API's limit), the calls
/// in parallel.
pub async fn describe_services(
    clients: &crate::aws::Clients,
    cluster: &str,
    services: impl IntoIterator<Item = String>,
) -> Result<Vec<aws_sdk_ecs::types::Service>> {
    let services: Vec<String> = services.into_iter().collect();
    let batches: Vec<Vec<String>> = services.chunks(10).map(<[String]>::to_vec).collect();
    let found = super::all(batches, |batch| {
        let (ecs, cluster) = (clients.ecs.clone(), cluster.to_string());
        async move {
            let out = ecs
                .describe_services()
                .cluster(&cluster)
                .set_services(Some(batch))
                .include(aws_sdk_ecs::types::ServiceField::Tags)
                .send()
                .await
                .map_err(|e| api_error(format!("read the services of cluster {cluster}"), e))?;
            Ok(out.services().iter().filter(|s| s.status() != Some("INACTIVE")).cloned().collect::<Vec<_>>())
        }
    })
    .await?;
    Ok(found.into_iter().flatten().collect())
}
