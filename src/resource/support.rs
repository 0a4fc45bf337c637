//! What several kinds share: bounded waits on what AWS still holds, the reason a deletion is blocked, fan-out of
//! independent reads, and tags in each service's shape.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use aws_smithy_types::error::display::DisplayErrorContext;

use super::{Ctx, ErrorKind, error_kind};
use crate::model::NodeId;

/// Runs `op` until it stops failing with an error of one of `kinds` (a resource AWS is still releasing), backing
/// off up to the dependency timeout; then fails with `blocked()`, which explains what still holds on.
pub async fn retry_while<T, F, Fut, B, BFut>(ctx: &Ctx, kinds: &[ErrorKind], mut op: F, blocked: B) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
    B: FnOnce() -> BFut,
    BFut: Future<Output = String>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        match op().await {
            Err(e) if error_kind(&e).is_some_and(|k| kinds.contains(&k)) => {
                if started.elapsed() + delay > ctx.dependency_timeout {
                    let why = blocked().await;
                    return Err(e.context(format!(
                        "still blocked after {}s: {why}\n  hint: re-run the command once it is released, or raise --dependency-timeout",
                        ctx.dependency_timeout.as_secs()
                    )));
                }
                tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "blocked; retrying");
                if let Err(stopped) = ctx.pause(delay, || "a dependency AWS still holds to be released".into()).await {
                    return Err(e.context(stopped.to_string()));
                }
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            other => return other,
        }
    }
}

/// Network interfaces still attached to a group or subnet: what blocks its deletion on AWS (lingering Fargate ENIs).
pub async fn blocking_enis(ctx: &Ctx, filter: &str, id: &str) -> String {
    let out = ctx
        .clients
        .ec2
        .describe_network_interfaces()
        .filters(aws_sdk_ec2::types::Filter::builder().name(filter).values(id).build())
        .send()
        .await;
    match out {
        Ok(out) if !out.network_interfaces().is_empty() => {
            let enis: Vec<String> = out
                .network_interfaces()
                .iter()
                .map(|n| {
                    format!(
                        "{} ({}: {})",
                        n.network_interface_id().unwrap_or("?"),
                        n.status().map(|s| s.as_str()).unwrap_or("?"),
                        n.description().unwrap_or("")
                    )
                })
                .collect();
            format!("{id} is still used by network interface(s) {}", enis.join(", "))
        }
        Ok(_) => {
            format!("{id} has a dependent object (no network interface is listed; often a Fargate ENI being released)")
        }
        Err(e) => {
            format!("{id} has a dependent object (listing its network interfaces failed: {})", DisplayErrorContext(&e))
        }
    }
}

/// Concurrent reads of one fan-out: enough to hide latency, few enough not to trip a describe rate limit.
pub const READ_FAN_OUT: usize = 16;

/// Runs `read` on every item concurrently (at most [`READ_FAN_OUT`] at once) and returns the results in input
/// order; the first error wins. For independent reads whose count grows with the stack.
pub async fn all<T, R, F, Fut>(items: Vec<T>, read: F) -> Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<R>> + Send + 'static,
    R: Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(READ_FAN_OUT));
    let mut set = tokio::task::JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let (fut, permits) = (read(item), permits.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (i, fut.await)
        });
    }
    let mut results: Vec<Option<R>> = (0..set.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, result) = joined.map_err(|e| anyhow::anyhow!("internal error: a read panicked: {e}"))?;
        results[i] = Some(result?);
    }
    Ok(results.into_iter().flatten().collect())
}

/// A tag's value in any service's key/value list.
pub fn tag_value<'t, T>(
    tags: &'t [T],
    key: &str,
    kv: impl Fn(&'t T) -> (Option<&'t str>, Option<&'t str>),
) -> Option<&'t str> {
    tags.iter().map(kv).find(|(k, _)| *k == Some(key)).and_then(|(_, v)| v)
}

/// EC2 tags go on at creation through a tag specification, so no untagged resource ever exists.
pub fn ec2_tags(
    ctx: &Ctx,
    kind: aws_sdk_ec2::types::ResourceType,
    node: &NodeId,
    name: &str,
) -> aws_sdk_ec2::types::TagSpecification {
    let tags =
        ctx.tags(node, name).into_iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
    aws_sdk_ec2::types::TagSpecification::builder().resource_type(kind).set_tags(Some(tags.collect())).build()
}

pub fn ecs_tags(ctx: &Ctx, node: &NodeId, name: &str) -> Vec<aws_sdk_ecs::types::Tag> {
    ctx.tags(node, name).into_iter().map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build()).collect()
}

pub fn sd_tags(ctx: &Ctx, node: &NodeId, name: &str) -> Result<Vec<aws_sdk_servicediscovery::types::Tag>> {
    use anyhow::Context;
    ctx.tags(node, name)
        .into_iter()
        .map(|(k, v)| aws_sdk_servicediscovery::types::Tag::builder().key(k).value(v).build().context("Cloud Map tag"))
        .collect()
}

/// A resource's ownership tags, for kinds whose tags take a call of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackTags {
    pub stack: Option<String>,
    pub lineage: Option<String>,
}

impl StackTags {
    pub fn of<'t>(tag: impl Fn(&str) -> Option<&'t str>) -> StackTags {
        StackTags {
            stack: tag(super::TAG_STACK).map(str::to_string),
            lineage: tag(super::TAG_LINEAGE).map(str::to_string),
        }
    }
}

/// The ownership tags of a Cloud Map resource; `None` when it is gone meanwhile.
pub async fn sd_stack_tags(ctx_clients: &crate::aws::Clients, arn: &str) -> Result<Option<StackTags>> {
    use super::{OrGone, api_error};
    let out = ctx_clients
        .sd
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| api_error(format!("read the tags of {arn}"), e))
        .or_gone()?;
    Ok(out.map(|o| StackTags::of(|key| o.tags().iter().find(|t| t.key() == key).map(|t| t.value()))))
}
