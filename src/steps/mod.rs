//! One module per resource kind, each with the same small shape: `create` now; `read` and `delete` for the
//! commands that inspect and tear down. Every AWS call of secep goes through here.

pub mod cluster;
pub mod ingress_rule;
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
use crate::state::{Record, StateFile};

pub const TAG_STACK: &str = "secep:stack";
pub const TAG_NODE: &str = "secep:node";

/// What every step needs: the clients, the stack's identity, and the state (for the ids of its dependencies).
#[derive(Clone)]
pub struct Ctx {
    pub clients: Clients,
    pub stack: String,
    pub state: Arc<Mutex<StateFile>>,
    /// Upper bound for asynchronous Cloud Map operations.
    pub operation_timeout: Duration,
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
        let state = self.state.lock().expect("state lock poisoned");
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

/// Creates the resource of one node and returns what to record.
pub async fn create(ctx: &Ctx, node: &Node) -> Result<Record> {
    let digest = node.spec.digest();
    let created = match &node.spec {
        Spec::Vpc { cidr, name } => vpc::create(ctx, &node.id, cidr, name).await,
        Spec::Subnet { az, cidr, name } => subnet::create(ctx, &node.id, az, cidr, name).await,
        Spec::Cluster { name } => cluster::create(ctx, &node.id, name).await,
        Spec::Namespace { name } => namespace::create(ctx, &node.id, name, &digest).await,
        Spec::SdService { service, ttl } => sd_service::create(ctx, &node.id, service, *ttl, &digest).await,
        Spec::SecurityGroup { service: _, group_name, description } => {
            security_group::create(ctx, &node.id, group_name, description).await
        }
        Spec::IngressRule { caller, callee, port } => ingress_rule::create(ctx, &node.id, caller, callee, *port).await,
        Spec::TaskDefinition(td) => task_definition::create(ctx, &node.id, td).await,
        Spec::Service { service, desired_count } => {
            service::create(ctx, &node.id, &node.deps, service, *desired_count, &digest).await
        }
    }?;
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
