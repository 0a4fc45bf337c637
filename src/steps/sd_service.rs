//! One Cloud Map service per ECS service: MULTIVALUE A records, and a custom health check that ECS drives
//! (its failure threshold is fixed at 1 by AWS, so none is sent).

use anyhow::{Context, Result};
use aws_sdk_servicediscovery::types::{DnsConfig, DnsRecord, HealthCheckCustomConfig, RecordType, RoutingPolicy};

use super::{Created, Ctx, api_error, sd_tags};
use crate::model::idempotency_token;

pub async fn create(ctx: &Ctx, node: &str, name: &str, ttl: u32, digest: &str) -> Result<Created> {
    let namespace_id = ctx.id_of("namespace")?;
    let dns = DnsConfig::builder()
        .routing_policy(RoutingPolicy::Multivalue)
        .dns_records(DnsRecord::builder().r#type(RecordType::A).ttl(i64::from(ttl)).build().context("DNS record")?)
        .build()
        .context("DNS config")?;
    let out = ctx
        .clients
        .sd
        .create_service()
        .name(name)
        .namespace_id(&namespace_id)
        .creator_request_id(idempotency_token(&ctx.stack, node, digest))
        .description(format!("secep stack {}", ctx.stack))
        .dns_config(dns)
        .health_check_custom_config(HealthCheckCustomConfig::builder().build())
        .set_tags(Some(sd_tags(ctx, node, name)?))
        .send()
        .await
        .map_err(|e| api_error(format!("create Cloud Map service {name} in {namespace_id}"), e))?;
    let svc = out.service();
    Ok(Created {
        id: svc.and_then(|s| s.id()).unwrap_or_default().to_string(),
        arn: svc.and_then(|s| s.arn()).map(str::to_string),
    })
}
