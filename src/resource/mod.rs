//! Every resource kind has one shape, the [`Resource`] trait: a batched read of every resource of the kind, a pure
//! compare of a spec with what was read, and create / update / delete. The one list of kinds is the `kinds!`
//! invocation below; it generates [`Kind`], the [`Spec`] and [`Facts`] enums and the dispatch the engine calls.
//! Adding a kind is one file and one line there, and the compiler checks that the kind handles every verb.
//!
//! Reconcile, do not trust: a create returns the facts of what it made, and the engine runs the same compare and
//! update on them as on an adopted resource, so a resource half made by a killed run (created, not yet attached,
//! its policy not attached, its route missing) is completed by the next run and never reported in sync.

pub mod elb;
pub mod error;
pub mod read;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::aws::Clients;
use crate::model::{Node, NodeId};
use crate::state::{Record, SharedState, StateFile};

pub use error::{ApiError, ErrorKind, OrGone, api_error, error_kind, is};
pub use read::{Live, LiveRule, ReadCx, Scope, Source};
pub use support::{blocking_enis, retry_while, tag_value};

pub const TAG_STACK: &str = "secep:stack";
pub const TAG_NODE: &str = "secep:node";
/// The state file's lifecycle (its nonce): a plain `down` deletes what carries it even if no record names it (a
/// run killed between a create and its record), and never what another state file of the same stack name made.
pub const TAG_LINEAGE: &str = "secep:lineage";

/// Who a live resource belongs to: its `secep:stack` tag, or that of the resource it is part of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Owner {
    Us,
    /// Somebody else's, or untagged: never changed or deleted. Holds what its tag says, if anything.
    Other(Option<String>),
}

impl Owner {
    pub fn from_tag(stack: &str, tag: Option<&str>) -> Owner {
        match tag {
            Some(t) if t == stack => Owner::Us,
            other => Owner::Other(other.map(str::to_string)),
        }
    }

    /// `secep:stack=<tag>`, or that there is none.
    pub fn describe(&self) -> String {
        match self {
            Owner::Us => "this stack's tag".into(),
            Owner::Other(Some(t)) => format!("secep:stack={t}"),
            Owner::Other(None) => "no secep:stack tag".into(),
        }
    }
}

/// One live resource as a kind's read found it.
#[derive(Debug, Clone)]
pub struct Found<F> {
    /// The node it is: named by its `secep:node` tag, or by what it is part of. `None`: only a record can place it.
    pub node: Option<NodeId>,
    pub id: String,
    pub arn: Option<String>,
    pub owner: Owner,
    /// Its `secep:lineage` tag: the state file lifecycle that made it (`None`: untagged, or not read because a
    /// record already places it).
    pub lineage: Option<String>,
    pub facts: F,
}

/// A live resource placed under its node.
#[derive(Debug, Clone)]
pub struct Observed {
    pub id: String,
    pub arn: Option<String>,
    pub owner: Owner,
    pub lineage: Option<String>,
    pub facts: Facts,
}

/// A kind's typed view of an [`Observed`] resource.
#[derive(Debug)]
pub struct View<'a, F> {
    pub node: &'a NodeId,
    pub id: &'a str,
    pub arn: Option<&'a str>,
    pub facts: &'a F,
}

/// What a create call made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: String,
    pub arn: Option<String>,
}

impl Created {
    /// The identifiers a create answered with; an answer without the id is an error naming the call, so that no
    /// empty id is ever recorded.
    pub fn from_answer(call: &str, id: Option<&str>, arn: Option<&str>) -> Result<Created> {
        let id = id.filter(|id| !id.is_empty()).with_context(|| {
            format!("{call} answered without the new resource's id; nothing was recorded\n  hint: re-run the command; the resource, if it was made, is found by its tags")
        })?;
        Ok(Created { id: id.to_string(), arn: arn.filter(|a| !a.is_empty()).map(str::to_string) })
    }

    pub fn named(id: impl Into<String>, arn: Option<String>) -> Created {
        Created { id: id.into(), arn }
    }
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deleted {
    Now,
    AlreadyGone,
}

/// How a config change to a created resource is applied when its compare names no field AWS cannot change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    InPlace,
    Replace,
}

/// What `down` does with a resource of the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDown {
    Delete,
    /// Account-wide or AWS-managed (the ECS service-linked role, the S3 prefix list): never ours to delete; the
    /// record is forgotten.
    Forget,
    /// Kept for what it holds (the log group) unless `down --delete-logs`; the record is forgotten.
    KeepUnlessDeleteLogs,
}

/// One difference between a spec and the live resource.
pub trait Change: Display + Debug + Clone + Send + Sync {
    /// AWS cannot make this change in place: the resource must be replaced.
    fn replaces(&self) -> bool {
        false
    }
}

/// For kinds that have nothing to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoChange {}

impl Display for NoChange {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl Change for NoChange {}

/// The recorded ids a compare resolves node references with (what a spec names by node, AWS names by id).
pub trait Refs {
    fn id(&self, node: &NodeId) -> Option<String>;
    fn arn(&self, node: &NodeId) -> Option<String>;
}

impl Refs for StateFile {
    fn id(&self, node: &NodeId) -> Option<String> {
        self.get(node).map(|r| r.id.clone())
    }

    fn arn(&self, node: &NodeId) -> Option<String> {
        self.get(node).and_then(|r| r.arn.clone())
    }
}

impl Refs for BTreeMap<NodeId, Record> {
    fn id(&self, node: &NodeId) -> Option<String> {
        self.get(node).map(|r| r.id.clone())
    }

    fn arn(&self, node: &NodeId) -> Option<String> {
        self.get(node).and_then(|r| r.arn.clone())
    }
}

/// What a compare may look at besides the spec and the facts.
pub struct Compare<'a> {
    pub node: &'a Node,
    pub refs: &'a (dyn Refs + Sync),
    /// The spec differs from the one the resource was created from (its recorded digest): for kinds whose live
    /// facts cannot show every field (a task definition's content), the only sign of a change.
    pub config_changed: bool,
}

impl Compare<'_> {
    pub fn id(&self, node: &NodeId) -> Option<String> {
        self.refs.id(node)
    }

    /// The recorded ids of the node's dependencies of one kind, in order (a service's subnets).
    pub fn dep_ids(&self, keep: impl Fn(&NodeId) -> bool) -> Option<Vec<String>> {
        self.node.deps.iter().filter(|d| keep(d)).map(|d| self.refs.id(d)).collect()
    }
}

/// Seeds a node's idempotency tokens: the stack lifecycle's nonce and the spec digest, and for a resource deleted
/// behind secep's back the id it replaces (reusing the first creation's token can hand back the deleted resource's
/// identity: hashicorp/terraform-provider-aws#46930).
#[derive(Debug, Clone)]
pub struct Salt(pub String);

impl Salt {
    pub fn token(&self, stack: &str, node: &NodeId) -> String {
        crate::model::idempotency_token(stack, &node.to_string(), &self.0)
    }
}

/// What the live read learnt that saves calls later.
#[derive(Debug, Default, Clone)]
pub struct Hints {
    /// The stack's task definition families that have a revision (`None`: not read, assume any may have one).
    pub task_families: Option<BTreeSet<String>>,
    /// No ECS cluster of the stack's name exists: CreateCluster cannot hand back somebody else's.
    pub cluster_name_free: bool,
}

/// What every create, update and delete needs: the clients, the stack's identity, and the state (for the ids of
/// dependencies, which the walker guarantees are recorded first).
#[derive(Clone)]
pub struct Ctx {
    pub clients: Clients,
    pub stack: String,
    pub state: Arc<SharedState>,
    /// Upper bound for asynchronous operations (Cloud Map, NAT gateways becoming available).
    pub operation_timeout: Duration,
    /// Upper bound for waiting out what AWS still holds (lingering ENIs, draining services).
    pub dependency_timeout: Duration,
    /// Upper bound for waiting until a new id or role has propagated (see `aws/propagation.rs`).
    pub propagation_timeout: Duration,
    /// The ECS deployments this run started, for `up` to wait on (see `engine/rollout.rs`).
    pub rollouts: Arc<Mutex<Vec<crate::engine::rollout::Started>>>,
    /// Rules between the stack's groups that this run replaced (a port change, a dropped call), as (group, rule,
    /// egress): revoked only once the rollouts have completed, since the tasks running until then use them.
    pub replaced_rules: Arc<Mutex<Vec<(String, String, bool)>>>,
    /// Target groups a new port replaced (AWS cannot change a group's port): deleted once the rollouts have
    /// completed, since the running tasks are registered in them until then.
    pub replaced_target_groups: Arc<Mutex<Vec<String>>>,
    /// Nodes created by this run: what they contain cannot predate it.
    pub created: Arc<Mutex<BTreeSet<NodeId>>>,
    /// The records as this run found them (an ECS service retires the revision it ran before).
    pub previous: Arc<BTreeMap<NodeId, Record>>,
    pub hints: Arc<Hints>,
    /// Raised by Ctrl-C: every bounded wait ends at its next pause (see [`Ctx::pause`]).
    pub stop: crate::graph::StopFlag,
}

/// A wait ended by Ctrl-C: what was done is recorded, and the command exits 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted while waiting for {0}\n  hint: re-run the command to resume where it stopped")]
pub struct Interrupted(pub String);

impl Ctx {
    /// Sleeps between two polls of something AWS is doing; fails at once (within 100 ms) when Ctrl-C was pressed.
    pub async fn pause(&self, delay: Duration, waiting_for: impl FnOnce() -> String) -> Result<()> {
        self.stop.sleep(delay).await;
        if self.stop.is_stopped() {
            return Err(Interrupted(waiting_for()).into());
        }
        Ok(())
    }

    /// The recorded AWS id of a node this one depends on.
    pub fn id_of(&self, node: &NodeId) -> Result<String> {
        Ok(self.record_of(node)?.id)
    }

    pub fn arn_of(&self, node: &NodeId) -> Result<String> {
        self.record_of(node)?.arn.with_context(|| format!("internal error: no ARN recorded for `{node}`"))
    }

    fn record_of(&self, node: &NodeId) -> Result<Record> {
        let state = self.state.lock();
        state
            .get(node)
            .cloned()
            .with_context(|| format!("internal error: `{node}` is not recorded although a dependant runs"))
    }

    pub fn created_this_run(&self, node: &NodeId) -> bool {
        self.created.lock().expect("created lock").contains(node)
    }

    /// The tags every resource gets at creation: ownership (`secep:stack`), identity (`secep:node`), the state
    /// file's lifecycle (`secep:lineage`) and a Name.
    pub fn tags(&self, node: &NodeId, name: &str) -> Vec<(String, String)> {
        vec![
            (TAG_STACK.to_string(), self.stack.clone()),
            (TAG_NODE.to_string(), node.to_string()),
            (TAG_LINEAGE.to_string(), self.state.lock().nonce().to_string()),
            ("Name".to_string(), name.to_string()),
        ]
    }

    /// The records now, as the compare of an update sees them.
    pub fn refs(&self) -> BTreeMap<NodeId, Record> {
        self.state.lock().nodes().clone()
    }
}

/// One kind of resource: everything secep knows about it.
pub trait Resource {
    /// Every input that decides the resource's shape, as the config gives it.
    type Spec: Debug + Clone + PartialEq + Eq + Serialize + Send + Sync;
    /// What a live read (or a create's answer) tells about the resource, in the terms the compare needs.
    type Facts: Debug + Clone + PartialEq + Send + Sync;
    type Change: Change;
    /// The kind as printed (`security group`).
    const LABEL: &'static str;
    /// A config change that the compare cannot see field by field: applied in place, or a replacement.
    const ON_CHANGE: OnChange;
    /// The resource points at other nodes' AWS ids (a service at its subnets, a route at its gateway): it is
    /// updated when one of them is recreated.
    const FOLLOWS_DEPENDENCIES: bool = false;
    /// An update gives the resource a new id (a task definition's new revision): what follows it is updated too.
    const UPDATE_MOVES_ID: bool = false;
    const ON_DOWN: OnDown = OnDown::Delete;
    /// Part of another resource (a group's rules, a table's association, a VPC's attributes): it goes with it, so
    /// an unrecorded one is no leftover of `down`.
    const PART_OF_PARENT: bool = false;

    /// The printed kind of one spec (interface and gateway endpoints are one kind).
    fn label(_spec: &Self::Spec) -> &'static str {
        Self::LABEL
    }

    /// Every resource of the kind that the state records or the stack may own, in as few calls as the API allows.
    fn read(cx: &ReadCx<'_>) -> impl Future<Output = Result<Vec<Found<Self::Facts>>>> + Send;

    /// How the live resource differs from the spec. Pure.
    fn compare(spec: &Self::Spec, facts: &Self::Facts, cx: &Compare<'_>) -> Vec<Self::Change>;

    /// Makes the resource and returns it with its facts as made (what the compare then completes).
    fn create(
        ctx: &Ctx,
        node: &Node,
        spec: &Self::Spec,
        salt: &Salt,
    ) -> impl Future<Output = Result<(Created, Self::Facts)>> + Send;

    /// Makes the changes the compare found; returns the resource's new identity if it has one now.
    fn update(
        ctx: &Ctx,
        node: &Node,
        spec: &Self::Spec,
        live: &View<'_, Self::Facts>,
        changes: &[Self::Change],
    ) -> impl Future<Output = Result<Option<Created>>> + Send;

    /// Deletes the resource as the read found it; a resource already gone counts as deleted.
    fn delete(ctx: &Ctx, live: &View<'_, Self::Facts>) -> impl Future<Output = Result<Deleted>> + Send;

    /// For a config change AWS cannot make in place: what replacing it destroys.
    fn replace_reason(_spec: &Self::Spec) -> String {
        String::new()
    }
}

/// The result of a compare, with the kind's types erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Differences {
    pub texts: Vec<String>,
    pub replaces: bool,
}

impl Differences {
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

fn erase<C: Change>(changes: &[C]) -> Differences {
    Differences { texts: changes.iter().map(ToString::to_string).collect(), replaces: changes.iter().any(C::replaces) }
}

fn mismatch(node: &NodeId) -> anyhow::Error {
    anyhow::anyhow!("internal error: the live facts of `{node}` are of another kind than its spec")
}

macro_rules! kinds {
    ($($variant:ident => $module:ident :: $ty:ident,)*) => {
        $(pub mod $module;)*

        /// The kinds of resource secep makes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind { $($variant),* }

        /// What one node asks of its resource. Serialised (for the digest) exactly as earlier releases did.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(tag = "kind", rename_all = "kebab-case")]
        pub enum Spec { $($variant(<$module::$ty as Resource>::Spec)),* }

        /// What the live read found about one resource.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Facts { $($variant(<$module::$ty as Resource>::Facts)),* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The kind as printed.
            pub fn label(self) -> &'static str {
                match self { $(Kind::$variant => <$module::$ty as Resource>::LABEL),* }
            }

            pub fn on_change(self) -> OnChange {
                match self { $(Kind::$variant => <$module::$ty as Resource>::ON_CHANGE),* }
            }

            pub fn follows_dependencies(self) -> bool {
                match self { $(Kind::$variant => <$module::$ty as Resource>::FOLLOWS_DEPENDENCIES),* }
            }

            pub fn update_moves_id(self) -> bool {
                match self { $(Kind::$variant => <$module::$ty as Resource>::UPDATE_MOVES_ID),* }
            }

            pub fn part_of_parent(self) -> bool {
                match self { $(Kind::$variant => <$module::$ty as Resource>::PART_OF_PARENT),* }
            }

            pub fn on_down(self) -> OnDown {
                match self { $(Kind::$variant => <$module::$ty as Resource>::ON_DOWN),* }
            }
        }

        impl Spec {
            pub fn kind(&self) -> Kind {
                match self { $(Spec::$variant(_) => Kind::$variant),* }
            }

            pub fn label(&self) -> &'static str {
                match self { $(Spec::$variant(s) => <$module::$ty as Resource>::label(s)),* }
            }

            pub fn replace_reason(&self) -> String {
                match self { $(Spec::$variant(s) => <$module::$ty as Resource>::replace_reason(s)),* }
            }
        }

        impl Facts {
            pub fn kind(&self) -> Kind {
                match self { $(Facts::$variant(_) => Kind::$variant),* }
            }
        }

        /// Every kind's batched read, all at once, each returning what it found with its facts erased.
        async fn read_every_kind(cx: &ReadCx<'_>) -> Result<Vec<(Kind, Vec<Found<Facts>>)>> {
            let ($($module,)*) = tokio::join!($(read_kind::<$module::$ty, _>(cx, Kind::$variant, Facts::$variant),)*);
            Ok(vec![$((Kind::$variant, $module?),)*])
        }

        /// The compare of a node's spec with the facts read about it.
        pub fn compare(node: &Node, facts: &Facts, refs: &(dyn Refs + Sync), config_changed: bool) -> Result<Differences> {
            let cx = Compare { node, refs, config_changed };
            match (&node.spec, facts) {
                $((Spec::$variant(spec), Facts::$variant(f)) => Ok(erase(&<$module::$ty as Resource>::compare(spec, f, &cx))),)*
                _ => Err(mismatch(&node.id)),
            }
        }

        /// Creates a node's resource.
        pub async fn create(ctx: &Ctx, node: &Node, salt: &Salt) -> Result<(Created, Facts)> {
            match &node.spec {
                $(Spec::$variant(spec) => {
                    let (created, facts) = <$module::$ty as Resource>::create(ctx, node, spec, salt).await?;
                    Ok((created, Facts::$variant(facts)))
                })*
            }
        }

        /// Brings a live resource to its node's spec: compares with the records as they are now and makes the
        /// changes. Returns the new identity, if the update gave it one, and what was changed.
        pub async fn sync(ctx: &Ctx, node: &Node, live: &Observed, config_changed: bool) -> Result<(Option<Created>, Vec<String>)> {
            let refs = ctx.refs();
            let cx = Compare { node, refs: &refs, config_changed };
            match (&node.spec, &live.facts) {
                $((Spec::$variant(spec), Facts::$variant(facts)) => {
                    let changes = <$module::$ty as Resource>::compare(spec, facts, &cx);
                    if changes.is_empty() {
                        return Ok((None, Vec::new()));
                    }
                    let view = View { node: &node.id, id: &live.id, arn: live.arn.as_deref(), facts };
                    let texts = changes.iter().map(ToString::to_string).collect();
                    let created = <$module::$ty as Resource>::update(ctx, node, spec, &view, &changes).await?;
                    Ok((created, texts))
                })*
                _ => Err(mismatch(&node.id)),
            }
        }

        /// Deletes a live resource.
        pub async fn delete(ctx: &Ctx, node: &NodeId, live: &Observed) -> Result<Deleted> {
            match &live.facts {
                $(Facts::$variant(facts) => {
                    let view = View { node, id: &live.id, arn: live.arn.as_deref(), facts };
                    <$module::$ty as Resource>::delete(ctx, &view).await
                })*
            }
        }
    };
}

async fn read_kind<K: Resource, W: Fn(K::Facts) -> Facts>(
    cx: &ReadCx<'_>,
    kind: Kind,
    wrap: W,
) -> Result<Vec<Found<Facts>>> {
    if !cx.wants(kind) {
        return Ok(Vec::new());
    }
    let found = K::read(cx).await?;
    Ok(found
        .into_iter()
        .map(|f| Found { node: f.node, id: f.id, arn: f.arn, owner: f.owner, lineage: f.lineage, facts: wrap(f.facts) })
        .collect())
}

// The one list of kinds: the variant names are the `kind` of the spec in its digest and must not change.
kinds! {
    LinkedRole => linked_role::LinkedRole,
    Vpc => vpc::Vpc,
    VpcDns => vpc_dns::VpcDns,
    DefaultGroup => default_group::DefaultGroup,
    Subnet => subnet::Subnet,
    InternetGateway => internet_gateway::InternetGateway,
    RouteTable => route_table::RouteTable,
    RouteTableAssociation => association::Association,
    ElasticIp => elastic_ip::ElasticIp,
    NatGateway => nat_gateway::NatGateway,
    Cluster => cluster::Cluster,
    Namespace => namespace::Namespace,
    SdService => sd_service::SdService,
    SecurityGroup => security_group::SecurityGroup,
    IngressRule => ingress_rule::IngressRule,
    GroupRules => group_rules::GroupRules,
    TaskDefinition => task_definition::TaskDefinition,
    Service => service::Service,
    ExecutionRole => execution_role::ExecutionRole,
    LogGroup => log_group::LogGroup,
    PrefixList => prefix_list::PrefixList,
    Endpoint => endpoint::Endpoint,
    LoadBalancer => load_balancer::LoadBalancer,
    TargetGroup => target_group::TargetGroup,
    Listener => listener::Listener,
}

impl Spec {
    /// A digest of the spec: equal digests mean the resource needs no change.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).expect("a spec always serialises");
        Sha256::digest(&json)[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}
