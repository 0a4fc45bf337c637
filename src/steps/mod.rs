//! One module per resource kind, each with the same small shape: `create`, `owner` (read the live resource and who
//! owns it) and `delete`. Every AWS call of secep goes through here.

pub mod cluster;
pub mod discover;
pub mod egress;
pub mod group_rules;
pub mod iam;
pub mod ingress_rule;
pub mod live;
pub mod log_group;
pub mod namespace;
pub mod sd_service;
pub mod security_group;
pub mod service;
pub mod subnet;
pub mod task_definition;
pub mod vpc;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::aws::Clients;
use crate::model::{Node, Spec};
use crate::state::{Record, SharedState};

pub const TAG_STACK: &str = "secep:stack";
pub const TAG_NODE: &str = "secep:node";

/// What every step needs: the clients, the stack's identity, and the state (for the ids of its dependencies).
#[derive(Clone)]
pub struct Ctx {
    pub clients: Clients,
    pub stack: String,
    pub state: Arc<SharedState>,
    /// Upper bound for asynchronous Cloud Map operations.
    pub operation_timeout: Duration,
    /// Upper bound for waiting out DependencyViolation / ResourceInUse while tearing down (lingering ENIs).
    pub dependency_timeout: Duration,
    /// Nodes created by this run: what they contain cannot predate it, so no lookup for leftovers is needed there.
    pub created: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// `down --delete-logs`: the log group goes too (it is kept by default).
    pub delete_logs: bool,
    /// The task definition families the live read found with a revision (`None`: not read, assume any may have).
    pub task_families: Option<Arc<std::collections::BTreeSet<String>>>,
    /// The live read found no active ECS cluster with the stack's name, so CreateCluster cannot hand back somebody
    /// else's: the ownership read before it is not needed (it lay on the path to every ECS service).
    pub cluster_name_free: bool,
}

impl Ctx {
    /// The recorded AWS id of a node this step depends on (the walker guarantees it was created first).
    pub fn id_of(&self, node: &str) -> Result<String> {
        Ok(self.record_of(node)?.id)
    }

    pub fn arn_of(&self, node: &str) -> Result<String> {
        self.record_of(node)?.arn.with_context(|| format!("internal error: no ARN recorded for `{node}`"))
    }

    fn record_of(&self, node: &str) -> Result<Record> {
        let state = self.state.lock();
        state
            .get(node)
            .cloned()
            .with_context(|| format!("internal error: `{node}` is not recorded although a dependant runs"))
    }

    /// The tags every resource gets at creation: ownership (`secep:stack`), identity (`secep:node`) and a Name.
    pub fn tags(&self, node: &str, name: &str) -> Vec<(String, String)> {
        vec![
            (TAG_STACK.to_string(), self.stack.clone()),
            (TAG_NODE.to_string(), node.to_string()),
            ("Name".to_string(), name.to_string()),
        ]
    }
}

/// Creates the resource of one node and returns what to record. `replacing` is the id of a resource of this node
/// that was deleted behind secep's back: it salts the idempotency tokens, because reusing the first creation's token
/// can hand back the deleted resource's identity (hashicorp/terraform-provider-aws#46930).
pub async fn create(ctx: &Ctx, node: &Node, replacing: Option<&str>) -> Result<Record> {
    let digest = node.spec.digest();
    let nonce = ctx.state.lock().nonce().to_string();
    let token_seed = match replacing {
        Some(old) => format!("{nonce}/{digest}/replaces/{old}"),
        None => format!("{nonce}/{digest}"),
    };
    let created = match &node.spec {
        Spec::Vpc { cidr, name } => vpc::create(ctx, &node.id, cidr, name).await,
        Spec::VpcDns => vpc::enable_dns(ctx).await,
        Spec::Subnet { az, cidr, name } => subnet::create(ctx, &node.id, az, cidr, name).await,
        Spec::Cluster { name } => cluster::create(ctx, &node.id, name).await,
        Spec::Namespace { name } => namespace::create(ctx, &node.id, name, &token_seed).await,
        Spec::SdService { service, ttl } => sd_service::create(ctx, &node.id, service, *ttl, &token_seed).await,
        Spec::SecurityGroup { service: _, group_name, description } => {
            security_group::create(ctx, &node.id, group_name, description).await
        }
        Spec::IngressRule { caller, callee, port } => ingress_rule::create(ctx, &node.id, caller, callee, *port).await,
        Spec::TaskDefinition(td) => task_definition::create(ctx, &node.id, td).await,
        Spec::Service { service, desired_count } => {
            service::create(ctx, &node.id, &node.deps, service, *desired_count, &token_seed).await
        }
        Spec::LinkedRole { service } => iam::ensure_linked_role(ctx, service).await,
        Spec::ExecutionRole { name, policy_arn } => iam::create_execution_role(ctx, &node.id, name, policy_arn).await,
        Spec::LogGroup { name, retention_days } => log_group::create(ctx, &node.id, name, *retention_days).await,
        Spec::PrefixList { service } => egress::find_prefix_list(ctx, service).await,
        Spec::RouteTable { name, default_route } => {
            let token = crate::model::idempotency_token(&ctx.stack, &node.id, &token_seed);
            egress::create_route_table(ctx, &node.id, name, default_route.as_deref(), &token).await
        }
        Spec::RouteTableAssociation { table, subnet } => egress::associate(ctx, table, subnet).await,
        Spec::Endpoint { service, gateway } => {
            let token = crate::model::idempotency_token(&ctx.stack, &node.id, &token_seed);
            egress::create_endpoint(ctx, &node.id, service, *gateway, &node.deps, &token).await
        }
        Spec::InternetGateway { name } => egress::create_internet_gateway(ctx, &node.id, name).await,
        Spec::ElasticIp { name } => egress::allocate_address(ctx, &node.id, name).await,
        Spec::NatGateway { name, subnet, eip } => {
            let token = crate::model::idempotency_token(&ctx.stack, &node.id, &token_seed);
            egress::create_nat_gateway(ctx, &node.id, name, subnet, eip, &token).await
        }
        Spec::GroupRules { group, ingress, egress } => {
            group_rules::apply(ctx, &node.id, group, ingress.as_deref(), egress.as_deref()).await
        }
    }?;
    ctx.created.lock().expect("created lock").insert(node.id.clone());
    Ok(Record { id: created.id, arn: created.arn, digest })
}

/// The identifiers a create call returned.
pub struct Created {
    pub id: String,
    pub arn: Option<String>,
}

/// An AWS API error in a form callers can branch on (`code`) and users can read (no SDK debug dump).
#[derive(Debug, thiserror::Error)]
#[error("{action}: {detail}")]
pub struct ApiError {
    pub action: String,
    pub code: Option<String>,
    pub detail: String,
}

/// Turns an SDK error into an [`ApiError`] naming the action that failed.
pub fn api_error<E, R>(
    action: impl Into<String>,
    err: aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    let action = action.into();
    let (code, detail) = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().map(str::to_string);
            let message = e.message().unwrap_or("no message");
            (code.clone(), format!("{} ({})", message, code.as_deref().unwrap_or("unknown error code")))
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (
            None,
            format!(
                "could not reach AWS: {}\n  hint: check the network, or --endpoint-url / AWS_ENDPOINT_URL if you target a local emulator (is it running? `./localstack/start.sh`)",
                DisplayErrorContext(&err)
            ),
        ),
        _ => (err.code().map(str::to_string), DisplayErrorContext(&err).to_string()),
    };
    anyhow!(ApiError { action, code, detail })
}

/// The error code of an [`ApiError`] anywhere in an error chain.
pub fn error_code(err: &anyhow::Error) -> Option<&str> {
    err.chain().find_map(|e| e.downcast_ref::<ApiError>()).and_then(|e| e.code.as_deref())
}

/// EC2 tags go on at creation through a tag specification, so no untagged resource ever exists.
fn ec2_tags(
    ctx: &Ctx,
    kind: aws_sdk_ec2::types::ResourceType,
    node: &str,
    name: &str,
) -> aws_sdk_ec2::types::TagSpecification {
    let tags =
        ctx.tags(node, name).into_iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
    aws_sdk_ec2::types::TagSpecification::builder().resource_type(kind).set_tags(Some(tags.collect())).build()
}

fn ecs_tags(ctx: &Ctx, node: &str, name: &str) -> Vec<aws_sdk_ecs::types::Tag> {
    ctx.tags(node, name).into_iter().map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build()).collect()
}

fn sd_tags(ctx: &Ctx, node: &str, name: &str) -> Result<Vec<aws_sdk_servicediscovery::types::Tag>> {
    ctx.tags(node, name)
        .into_iter()
        .map(|(k, v)| aws_sdk_servicediscovery::types::Tag::builder().key(k).value(v).build().context("Cloud Map tag"))
        .collect()
}

/// Who owns a recorded resource, read live before anything is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// It no longer exists.
    Gone,
    /// Tagged `secep:stack` = this stack.
    Us,
    /// Exists but is not tagged as this stack's: never deleted. Holds what its tag says, if anything.
    Other(Option<String>),
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Now,
    AlreadyGone,
    /// Deliberately left in place and forgotten: account-wide (the service-linked role, AWS's prefix list) or kept
    /// for its contents (the log group, without `--delete-logs`).
    Kept,
}

/// The kind of a node, from its id (`sg/api` → `sg`; a twin found by tag, `vpc#vpc-123`, → `vpc`).
pub fn kind_of(node: &str) -> &str {
    node.split(['/', '#']).next().unwrap_or(node)
}

/// Reads the live owner of a recorded node.
pub async fn owner(ctx: &Ctx, node: &str, record: &Record) -> Result<Owner> {
    match kind_of(node) {
        "vpc" | "subnet" | "sg" => vpc::owner(ctx, node, &record.id).await,
        "vpc-dns" => vpc::owner(ctx, "vpc", record.id.trim_end_matches("/dns")).await,
        "rtb-assoc" => egress::association_owner(ctx, &record.id).await,
        "sg-rule" => ingress_rule::owner(ctx, node, &record.id).await,
        "cluster" => cluster::owner(ctx, &record.id).await,
        "namespace" => namespace::owner(ctx, record).await,
        "sd" => sd_service::owner(ctx, record).await,
        "td" => task_definition::owner(ctx, &record.id).await,
        "svc" => service::owner(ctx, &record.id).await,
        "vpce-sg" => vpc::owner(ctx, "sg", &record.id).await,
        "public-subnet" => vpc::owner(ctx, "subnet", &record.id).await,
        "egress" | "vpce-rules" => vpc::owner(ctx, "sg", &record.id).await,
        "role" => iam::owner(ctx, &record.id).await,
        "logs" => log_group::owner(ctx, &record.id).await,
        "nat" => egress::nat_owner(ctx, &record.id).await,
        "rtb" | "vpce" | "igw" | "eip" => egress::tag_owner(ctx, &record.id).await,
        // Account-wide or AWS-managed: never ours to delete, only to forget.
        "linked-role" | "prefix-list" => Ok(Owner::Us),
        other => Err(anyhow!("the state records `{node}` of unknown kind `{other}`; was it written by a newer secep?")),
    }
}

/// Deletes a recorded node's resource; a resource already gone counts as deleted.
pub async fn delete(ctx: &Ctx, node: &str, record: &Record) -> Result<Deleted> {
    match kind_of(node) {
        "vpc" => vpc::delete(ctx, &record.id).await,
        // The attributes go with the VPC, deleted after this.
        "vpc-dns" => Ok(Deleted::Now),
        "rtb-assoc" => egress::disassociate(ctx, &record.id).await,
        "subnet" => subnet::delete(ctx, &record.id).await,
        "sg" => security_group::delete(ctx, &record.id).await,
        "sg-rule" => ingress_rule::delete(ctx, &record.id).await,
        "cluster" => cluster::delete(ctx, &record.id).await,
        "namespace" => namespace::delete(ctx, &record.id).await,
        "sd" => sd_service::delete(ctx, &record.id).await,
        "td" => task_definition::delete(ctx, &record.id).await,
        "svc" => service::delete(ctx, &record.id).await,
        "vpce-sg" => security_group::delete(ctx, &record.id).await,
        "public-subnet" => subnet::delete(ctx, &record.id).await,
        "egress" => group_rules::delete(ctx, &record.id, false, true).await,
        "vpce-rules" => group_rules::delete(ctx, &record.id, true, true).await,
        "role" => iam::delete_role(ctx, &record.id).await,
        "logs" => log_group::delete(ctx, &record.id).await,
        "rtb" => egress::delete_route_table(ctx, &record.id).await,
        "vpce" => egress::delete_endpoint(ctx, &record.id).await,
        "igw" => egress::delete_internet_gateway(ctx, &record.id).await,
        "eip" => egress::release_address(ctx, &record.id).await,
        "nat" => egress::delete_nat_gateway(ctx, &record.id).await,
        "linked-role" | "prefix-list" => Ok(Deleted::Kept),
        other => Err(anyhow!("the state records `{node}` of unknown kind `{other}`")),
    }
}

/// The owner named by a `secep:stack` tag value.
pub fn owner_from_tag(ctx: &Ctx, stack_tag: Option<&str>) -> Owner {
    match stack_tag {
        Some(s) if s == ctx.stack => Owner::Us,
        other => Owner::Other(other.map(str::to_string)),
    }
}

/// Runs `op` until it stops failing with one of `codes` (resources AWS is still releasing), backing off up to
/// `ctx.dependency_timeout`; then fails with `blocked()` explaining what still holds on.
pub async fn retry_while_blocked<T, F, Fut, B, BFut>(ctx: &Ctx, codes: &[&str], mut op: F, blocked: B) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
    B: FnOnce() -> BFut,
    BFut: std::future::Future<Output = String>,
{
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        match op().await {
            Err(e) if error_code(&e).is_some_and(|c| codes.contains(&c)) => {
                if started.elapsed() + delay > ctx.dependency_timeout {
                    let why = blocked().await;
                    return Err(e.context(format!(
                        "still blocked after {}s: {why}\n  hint: re-run `secep down` once it is released, or raise --dependency-timeout",
                        ctx.dependency_timeout.as_secs()
                    )));
                }
                tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "blocked; retrying");
                tokio::time::sleep(delay).await;
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

/// Runs `read` on every item concurrently (at most [`READ_FAN_OUT`] at once) and returns the results in input
/// order; the first error wins. For independent reads whose count grows with the stack.
pub async fn all<T, R, F, Fut>(items: Vec<T>, read: F) -> Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<R>> + Send + 'static,
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

/// Concurrent reads of one fan-out: enough to hide latency, few enough not to trip a describe rate limit.
pub const READ_FAN_OUT: usize = 16;
