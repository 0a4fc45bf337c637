//! A VPC endpoint for `com.amazonaws.<region>.<service>`: an interface endpoint in every private subnet behind the
//! endpoint group, with private DNS (so the usual service names resolve to it); or a gateway endpoint on the private
//! route tables (S3).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use aws_sdk_ec2::types::{ResourceType, VpcEndpoint, VpcEndpointType};
use serde::Serialize;

use super::read::{ec2_node, ec2_lineage, ec2_tag};
use super::support::{all, ec2_tags};
use super::{
    ApiError, Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, ReadCx, Resource, Salt,
    TAG_STACK, View, api_error, is,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub service: String,
    pub gateway: bool,
    /// The S3 gateway endpoint only: task role ARN → the buckets it may reach through the endpoint
    /// (`s3_buckets`). Not in the digest: they change only the policy, which is updated in place (compare sees
    /// it), never a reason to replace the endpoint.
    #[serde(skip)]
    pub buckets: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// `com.amazonaws.<region>.<service>`.
    pub service_name: String,
    pub gateway: bool,
    /// AWS's state, lower case: `pending` for a minute or two on AWS (an interface endpoint), then `available`.
    pub state: String,
    pub subnets: BTreeSet<String>,
    pub route_tables: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub private_dns: bool,
    /// The endpoint policy as EC2 has it (`None`: none reported).
    pub policy: Option<serde_json::Value>,
    /// The account that owns the endpoint (its interface endpoints admit that account's principals only).
    pub account: Option<String>,
}

impl Facts {
    pub fn of(v: &VpcEndpoint) -> Facts {
        Facts {
            policy: v.policy_document().and_then(|d| serde_json::from_str(d).ok()),
            account: v.owner_id().map(str::to_string),
            service_name: v.service_name().unwrap_or_default().to_string(),
            gateway: v.vpc_endpoint_type() == Some(&VpcEndpointType::Gateway),
            state: v.state().map(|s| s.as_str().to_ascii_lowercase()).unwrap_or_default(),
            subnets: v.subnet_ids().iter().cloned().collect(),
            route_tables: v.route_table_ids().iter().cloned().collect(),
            groups: v.groups().iter().filter_map(|g| g.group_id()).map(str::to_string).collect(),
            private_dns: v.private_dns_enabled().unwrap_or(false),
        }
    }
}

/// What an endpoint lets through; AWS's default policy lets anyone do anything through it, so with egress to the S3
/// prefix list any task could read or write any bucket in the region. The S3 gateway endpoint lets through only
/// what ECR image pulls need (its layer bucket), and each service's task role to the buckets the service lists
/// (any action: the role's own policy says which); an interface endpoint only principals of the account (`None`
/// while the account is not known yet: the update after the create sets it).
pub fn policy(spec: &Spec, region: &str, account: Option<&str>) -> Option<serde_json::Value> {
    let partition = crate::config::secrets::partition_of(region);
    if spec.gateway {
        let mut statements = vec![serde_json::json!({
            "Sid": "EcrImageLayersOnly", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": format!("arn:{partition}:s3:::prod-{region}-starport-layer-bucket/*"),
        })];
        for (i, (role, buckets)) in spec.buckets.iter().enumerate() {
            let resources: Vec<String> = buckets
                .iter()
                .flat_map(|b| [format!("arn:{partition}:s3:::{b}"), format!("arn:{partition}:s3:::{b}/*")])
                .collect();
            statements.push(serde_json::json!({
                "Sid": format!("TaskRoleBuckets{}", i + 1), "Effect": "Allow", "Principal": "*", "Action": "s3:*",
                "Resource": resources,
                "Condition": { "ArnEquals": { "aws:PrincipalArn": role } },
            }));
        }
        return Some(serde_json::json!({ "Version": "2012-10-17", "Statement": statements }));
    }
    let account = account?;
    Some(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ThisAccountsPrincipalsOnly", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
            "Condition": { "StringEquals": { "aws:PrincipalAccount": account } },
        }],
    }))
}

/// The region of `com.amazonaws.<region>.<service>`.
fn region_of(service_name: &str) -> Option<&str> {
    service_name.split('.').nth(2)
}

/// The policy this endpoint should have, from what the read found.
fn wanted_policy(spec: &Spec, facts: &Facts) -> Option<serde_json::Value> {
    policy(spec, region_of(&facts.service_name)?, facts.account.as_deref())
}

/// Endpoints in these states are gone, or never will be usable: not this node's resource any more.
fn is_live(v: &VpcEndpoint) -> bool {
    let state = v.state().map(|s| s.as_str().to_ascii_lowercase()).unwrap_or_default();
    !matches!(state.as_str(), "deleting" | "deleted" | "failed" | "rejected" | "expired")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An endpoint for another service.
    Service {
        now: String,
        want: String,
    },
    /// A gateway endpoint where an interface one is wanted, or the reverse.
    Type {
        gateway: bool,
    },
    Subnets {
        add: Vec<String>,
        remove: Vec<String>,
    },
    RouteTables {
        add: Vec<String>,
        remove: Vec<String>,
    },
    Groups {
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// Without private DNS the usual service names resolve to public addresses the tasks' egress blocks.
    PrivateDnsOff,
    /// The policy is not the stack's (AWS's default full access, or edited).
    Policy,
    /// Not usable yet (`pending`): until it is `available` with private DNS, image pulls and logs time out, so the
    /// update waits for it and no ECS service starts before.
    NotAvailable(String),
}

fn delta(f: &mut fmt::Formatter<'_>, what: &str, add: &[String], remove: &[String]) -> fmt::Result {
    write!(f, "{what}:")?;
    if !add.is_empty() {
        write!(f, " missing {}", add.join(", "))?;
    }
    if !add.is_empty() && !remove.is_empty() {
        f.write_str(";")?;
    }
    if !remove.is_empty() {
        write!(f, " also {}", remove.join(", "))?;
    }
    Ok(())
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Service { now, want } => write!(f, "is an endpoint for {now}, not {want}"),
            Change::Type { gateway: true } => f.write_str("is a gateway endpoint, not an interface endpoint"),
            Change::Type { gateway: false } => f.write_str("is an interface endpoint, not a gateway endpoint"),
            Change::Subnets { add, remove } => delta(f, "subnets", add, remove),
            Change::RouteTables { add, remove } => delta(f, "route tables", add, remove),
            Change::Groups { add, remove } => delta(f, "security groups", add, remove),
            Change::PrivateDnsOff => f.write_str("private DNS is off"),
            Change::Policy => f.write_str("its policy differs from the config's (AWS's default lets anything through)"),
            Change::NotAvailable(state) => write!(f, "is {state}, not available"),
        }
    }
}

impl super::Change for Change {
    fn replaces(&self) -> bool {
        matches!(self, Change::Service { .. } | Change::Type { .. })
    }
}

/// What `want` lacks of `have`, and what `have` has beyond it.
fn differ(want: &[String], have: &BTreeSet<String>) -> Option<(Vec<String>, Vec<String>)> {
    let want: BTreeSet<String> = want.iter().cloned().collect();
    let add: Vec<String> = want.difference(have).cloned().collect();
    let remove: Vec<String> = have.difference(&want).cloned().collect();
    (!add.is_empty() || !remove.is_empty()).then_some((add, remove))
}

pub struct Endpoint;

impl Resource for Endpoint {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "vpc endpoint";
    const ON_CHANGE: OnChange = OnChange::Replace;
    /// It points at the private subnets (interface) or route tables (gateway): moved onto recreated ones.
    const FOLLOWS_DEPENDENCIES: bool = true;

    fn label(spec: &Spec) -> &'static str {
        if spec.gateway { "gateway endpoint" } else { "interface endpoint" }
    }

    /// The stack's endpoints (one describe by tag); in teardown also the recorded ones the tag did not find.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let recorded: BTreeSet<&str> = cx.recorded(Kind::Endpoint).map(|(_, r)| r.id.as_str()).collect();
        let out = cx
            .clients
            .ec2
            .describe_vpc_endpoints()
            .filters(cx.ours())
            .send()
            .await
            .map_err(|e| api_error("read the stack's VPC endpoints", e))?;
        let tagged = out.vpc_endpoints();
        let mut found: Vec<Found<Facts>> = tagged
            .iter()
            .filter(|v| is_live(v))
            .filter(|v| {
                // The tag is checked here too (moto ignores tag filters on some kinds); a recorded one stays, to be
                // reported as not ours.
                ec2_tag(v.tags(), TAG_STACK) == Some(cx.stack)
                    || v.vpc_endpoint_id().is_some_and(|id| recorded.contains(id))
            })
            .filter_map(|v| found_of(cx, v))
            .collect();
        if cx.teardown() {
            let missing: Vec<String> = recorded
                .iter()
                .filter(|id| !tagged.iter().any(|v| v.vpc_endpoint_id() == Some(**id)))
                .map(|id| id.to_string())
                .collect();
            let by_id = read_by_id(cx, missing).await?;
            found.extend(by_id.iter().filter(|v| is_live(v)).filter_map(|v| found_of(cx, v)));
        }
        Ok(found)
    }

    /// A reference not recorded yet cannot be compared: the run that records it makes or moves the endpoint.
    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if !facts.service_name.ends_with(&format!(".{}", spec.service)) {
            changes.push(Change::Service { now: facts.service_name.clone(), want: spec.service.clone() });
        }
        if facts.gateway != spec.gateway {
            changes.push(Change::Type { gateway: facts.gateway });
            return changes;
        }
        if let Some(want) = wanted_policy(spec, facts)
            && facts.policy.as_ref() != Some(&want)
        {
            changes.push(Change::Policy);
        }
        if spec.gateway {
            let tables = cx.dep_ids(|d| matches!(d, NodeId::RouteTable(_)));
            if let Some((add, remove)) = tables.and_then(|want| differ(&want, &facts.route_tables)) {
                changes.push(Change::RouteTables { add, remove });
            }
            return changes;
        }
        let subnets = cx.dep_ids(|d| matches!(d, NodeId::Subnet(_)));
        if let Some((add, remove)) = subnets.and_then(|want| differ(&want, &facts.subnets)) {
            changes.push(Change::Subnets { add, remove });
        }
        // An interface endpoint always has a group (AWS puts the VPC's default one on it otherwise).
        let groups = cx.dep_ids(|d| *d == NodeId::EndpointGroup).filter(|g| !g.is_empty());
        if let Some((add, remove)) = groups.and_then(|want| differ(&want, &facts.groups)) {
            changes.push(Change::Groups { add, remove });
        }
        if !facts.private_dns {
            changes.push(Change::PrivateDnsOff);
        }
        if !facts.state.is_empty() && facts.state != "available" {
            changes.push(Change::NotAvailable(facts.state.clone()));
        }
        changes
    }

    /// One call; the endpoint is `pending` for a minute or two on AWS, and the update waits until it is available.
    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, salt: &Salt) -> Result<(Created, Facts)> {
        let vpc_id = ctx.id_of(&NodeId::Vpc)?;
        let service_name = format!("com.amazonaws.{}.{}", ctx.clients.region, spec.service);
        let name = format!("{}-{}", ctx.stack, spec.service);
        let mut request = ctx
            .clients
            .ec2
            .create_vpc_endpoint()
            .vpc_id(&vpc_id)
            .service_name(&service_name)
            .client_token(salt.token(&ctx.stack, &node.id))
            .tag_specifications(ec2_tags(ctx, ResourceType::VpcEndpoint, &node.id, &name));
        // The account is known once the service-linked role is recorded; else the update after this sets it.
        let account = ctx.arn_of(&NodeId::LinkedRole("ecs".into())).ok().and_then(|a| a.split(':').nth(4).map(String::from));
        if let Some(document) = policy(spec, &ctx.clients.region, account.as_deref()) {
            request = request.policy_document(document.to_string());
        }
        if spec.gateway {
            request = request.vpc_endpoint_type(VpcEndpointType::Gateway);
            for table in node.deps.iter().filter(|d| matches!(d, NodeId::RouteTable(_))) {
                request = request.route_table_ids(ctx.id_of(table)?);
            }
        } else {
            request = request.vpc_endpoint_type(VpcEndpointType::Interface).private_dns_enabled(true);
            for group in node.deps.iter().filter(|d| **d == NodeId::EndpointGroup) {
                request = request.security_group_ids(ctx.id_of(group)?);
            }
            for subnet in node.deps.iter().filter(|d| matches!(d, NodeId::Subnet(_))) {
                request = request.subnet_ids(ctx.id_of(subnet)?);
            }
        }
        let out = request.send().await.map_err(|e| api_error(format!("create VPC endpoint {service_name}"), e))?;
        let endpoint = out.vpc_endpoint().cloned().unwrap_or_else(|| VpcEndpoint::builder().build());
        let created = Created::from_answer("CreateVpcEndpoint", endpoint.vpc_endpoint_id(), None)?;
        // The answer describes the endpoint as made (subnets, tables, groups, private DNS): no read-back.
        Ok((created, Facts::of(&endpoint)))
    }

    /// Every in-place change in one ModifyVpcEndpoint.
    async fn update(
        ctx: &Ctx,
        node: &Node,
        spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        fn some(ids: &[String]) -> Option<Vec<String>> {
            (!ids.is_empty()).then(|| ids.to_vec())
        }
        let mut request = ctx.clients.ec2.modify_vpc_endpoint().vpc_endpoint_id(live.id);
        let modifies = changes.iter().any(|c| !matches!(c, Change::NotAvailable(_)));
        for change in changes {
            request = match change {
                Change::NotAvailable(_) => request,
                Change::Subnets { add, remove } => {
                    request.set_add_subnet_ids(some(add)).set_remove_subnet_ids(some(remove))
                }
                Change::RouteTables { add, remove } => {
                    request.set_add_route_table_ids(some(add)).set_remove_route_table_ids(some(remove))
                }
                Change::Groups { add, remove } => {
                    request.set_add_security_group_ids(some(add)).set_remove_security_group_ids(some(remove))
                }
                Change::PrivateDnsOff => request.private_dns_enabled(true),
                Change::Policy => match wanted_policy(spec, live.facts) {
                    Some(document) => request.policy_document(document.to_string()),
                    None => request,
                },
                Change::Service { .. } | Change::Type { .. } => {
                    bail!("{}: {change}: AWS cannot change that in place; the endpoint must be replaced", node.id)
                }
            };
        }
        if modifies {
            request.send().await.map_err(|e| api_error(format!("update VPC endpoint {}", live.id), e))?;
        }
        if changes.iter().any(|c| matches!(c, Change::NotAvailable(_))) {
            wait_available(ctx, live.id).await?;
        }
        Ok(None)
    }

    /// One call. Its network interfaces take minutes to go on AWS: what they block (the subnets, the endpoint
    /// group) waits them out in its own delete.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let id = live.id;
        let action = format!("delete VPC endpoint {id}");
        let out = ctx
            .clients
            .ec2
            .delete_vpc_endpoints()
            .vpc_endpoint_ids(id)
            .send()
            .await
            .map_err(|e| api_error(action.clone(), e))
            .or_gone()?;
        let Some(out) = out else { return Ok(Deleted::AlreadyGone) };
        // DeleteVpcEndpoints answers per endpoint, in the answer rather than as an error.
        let Some(err) = out.unsuccessful().iter().find_map(|u| u.error()) else { return Ok(Deleted::Now) };
        let (code, message) = (err.code(), err.message().unwrap_or("failed"));
        let kind = ErrorKind::of(code.unwrap_or(""), message);
        if kind == ErrorKind::NotFound {
            return Ok(Deleted::AlreadyGone);
        }
        let detail = format!("{message} ({})", code.unwrap_or("unknown error code"));
        Err(anyhow::Error::new(ApiError { action, code: code.map(str::to_string), kind, detail }))
    }

    fn replace_reason(spec: &Spec) -> String {
        format!("VPC endpoint {}: replacing it cuts image pulls or logs until the new one is available", spec.service)
    }
}

/// Polls the endpoint until it is `available`, bounded by `--operation-timeout`.
async fn wait_available(ctx: &Ctx, id: &str) -> Result<()> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        let out = ctx
            .clients
            .ec2
            .describe_vpc_endpoints()
            .vpc_endpoint_ids(id)
            .send()
            .await
            .map_err(|e| api_error(format!("read VPC endpoint {id}"), e))?;
        let state = out.vpc_endpoints().first().and_then(|v| v.state()).map(|s| s.as_str().to_ascii_lowercase());
        match state.as_deref() {
            Some("available") => return Ok(()),
            Some(s @ ("failed" | "rejected" | "expired" | "deleting" | "deleted")) | Some(s @ "") => {
                bail!("VPC endpoint {id} is {s}, and will never be available\n  hint: re-run `secep up` to replace it")
            }
            None => bail!("VPC endpoint {id} no longer exists\n  hint: re-run `secep up` to create it again"),
            Some(s) if started.elapsed() + delay > ctx.operation_timeout => bail!(
                "VPC endpoint {id} is still {s} after {}s\n  hint: raise --operation-timeout, or re-run `secep up` to keep waiting",
                ctx.operation_timeout.as_secs()
            ),
            Some(_) => {
                ctx.pause(delay, || format!("VPC endpoint {id} to be available")).await?;
                delay = crate::aws::poll_delay(started.elapsed());
            }
        }
    }
}

fn found_of(cx: &ReadCx<'_>, v: &VpcEndpoint) -> Option<Found<Facts>> {
    Some(Found {
        node: ec2_node(v.tags()),
        id: v.vpc_endpoint_id()?.to_string(),
        arn: None,
        owner: cx.owner(ec2_tag(v.tags(), TAG_STACK)),
        lineage: ec2_lineage(v.tags()),
        facts: Facts::of(v),
    })
}

/// Endpoints by id, those that still exist. One call; an id that no longer exists fails it (there is no id filter
/// on the emulator), and then each is asked for alone.
async fn read_by_id(cx: &ReadCx<'_>, ids: Vec<String>) -> Result<Vec<VpcEndpoint>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = cx.clients.ec2.describe_vpc_endpoints().set_vpc_endpoint_ids(Some(ids.clone())).send().await;
    match out.map_err(|e| api_error("read the stack's recorded VPC endpoints", e)) {
        Ok(out) => Ok(out.vpc_endpoints().to_vec()),
        Err(e) if is(&e, ErrorKind::NotFound) && ids.len() > 1 => {
            let ec2 = cx.clients.ec2.clone();
            let each = all(ids, move |id: String| {
                let ec2 = ec2.clone();
                async move {
                    let out = ec2.describe_vpc_endpoints().vpc_endpoint_ids(&id).send().await;
                    let out = out.map_err(|e| api_error(format!("read VPC endpoint {id}"), e)).or_gone()?;
                    Ok::<_, anyhow::Error>(out.map(|o| o.vpc_endpoints().to_vec()).unwrap_or_default())
                }
            })
            .await?;
            Ok(each.into_iter().flatten().collect())
        }
        Err(e) if is(&e, ErrorKind::NotFound) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    fn record(id: &str) -> Record {
        Record { id: id.to_string(), arn: None, digest: String::new() }
    }

    fn interface() -> (Node, Spec) {
        let spec = Spec { service: "ecr.api".into(), gateway: false, buckets: BTreeMap::new() };
        let node = Node {
            id: NodeId::Endpoint("ecr.api".into()),
            spec: crate::resource::Spec::Endpoint(spec.clone()),
            deps: vec![NodeId::VpcDns, NodeId::EndpointGroup, NodeId::subnet("a"), NodeId::subnet("b")],
        };
        (node, spec)
    }

    fn gateway() -> (Node, Spec) {
        let spec = Spec { service: "s3".into(), gateway: true, buckets: BTreeMap::new() };
        let node = Node {
            id: NodeId::Endpoint("s3".into()),
            spec: crate::resource::Spec::Endpoint(spec.clone()),
            deps: vec![NodeId::Vpc, NodeId::RouteTable("a".into()), NodeId::RouteTable("b".into())],
        };
        (node, spec)
    }

    fn refs() -> BTreeMap<NodeId, Record> {
        BTreeMap::from([
            (NodeId::EndpointGroup, record("sg-e")),
            (NodeId::subnet("a"), record("subnet-a")),
            (NodeId::subnet("b"), record("subnet-b")),
            (NodeId::RouteTable("a".into()), record("rtb-a")),
            (NodeId::RouteTable("b".into()), record("rtb-b")),
        ])
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn interface_facts() -> Facts {
        Facts {
            service_name: "com.amazonaws.us-east-1.ecr.api".into(),
            gateway: false,
            state: "available".into(),
            subnets: set(&["subnet-a", "subnet-b"]),
            route_tables: BTreeSet::new(),
            groups: set(&["sg-e"]),
            private_dns: true,
            policy: policy(&interface().1, "us-east-1", Some("123456789012")),
            account: Some("123456789012".into()),
        }
    }

    fn gateway_facts() -> Facts {
        Facts {
            service_name: "com.amazonaws.us-east-1.s3".into(),
            gateway: true,
            state: "available".into(),
            subnets: BTreeSet::new(),
            route_tables: set(&["rtb-a", "rtb-b"]),
            groups: BTreeSet::new(),
            // What the emulator answers for a gateway endpoint: not compared.
            private_dns: true,
            policy: policy(&gateway().1, "us-east-1", None),
            account: Some("123456789012".into()),
        }
    }

    #[test]
    fn an_endpoint_with_aws_s_default_policy_is_narrowed() {
        let (node, spec) = gateway();
        let open = Facts { policy: Some(serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]})), ..gateway_facts() };
        assert_eq!(compare(&node, &spec, &open, &refs()), [Change::Policy]);
        let doc = policy(&spec, "us-east-1", None).unwrap().to_string();
        assert!(doc.contains("arn:aws:s3:::prod-us-east-1-starport-layer-bucket/*") && doc.contains("s3:GetObject"));
        let (node, spec) = interface();
        let none = Facts { policy: None, ..interface_facts() };
        assert_eq!(compare(&node, &spec, &none, &refs()), [Change::Policy]);
        assert!(policy(&spec, "us-east-1", Some("123456789012")).unwrap().to_string().contains("aws:PrincipalAccount"));
    }

    #[test]
    fn listed_buckets_open_the_s3_endpoint_to_their_task_role_only() {
        let (_, mut spec) = gateway();
        let role = "arn:aws-us-gov:iam::123456789012:role/reports";
        spec.buckets.insert(role.into(), BTreeSet::from(["reports-2026".to_string()]));
        let doc = policy(&spec, "us-gov-west-1", None).unwrap();
        let statements = doc["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 2, "{doc}");
        assert_eq!(
            statements[1]["Resource"],
            serde_json::json!(["arn:aws-us-gov:s3:::reports-2026", "arn:aws-us-gov:s3:::reports-2026/*"])
        );
        assert_eq!(statements[1]["Condition"], serde_json::json!({"ArnEquals": {"aws:PrincipalArn": role}}));
        // The buckets change the policy in place, never the digest that would replace the endpoint.
        let (_, plain) = gateway();
        assert_eq!(serde_json::to_string(&plain).unwrap(), serde_json::to_string(&spec).unwrap());
    }

    fn compare(node: &Node, spec: &Spec, facts: &Facts, refs: &BTreeMap<NodeId, Record>) -> Vec<Change> {
        let cx = Compare { node, refs, config_changed: false };
        Endpoint::compare(spec, facts, &cx)
    }

    #[test]
    fn endpoints_as_made_are_in_sync_once_available() {
        let (node, spec) = interface();
        assert!(compare(&node, &spec, &interface_facts(), &refs()).is_empty());
        let (node, spec) = gateway();
        assert!(compare(&node, &spec, &gateway_facts(), &refs()).is_empty());
    }

    #[test]
    fn a_pending_interface_endpoint_is_waited_for_in_place() {
        let (node, spec) = interface();
        let facts = Facts { state: "pending".into(), ..interface_facts() };
        let changes = compare(&node, &spec, &facts, &refs());
        assert_eq!(changes, [Change::NotAvailable("pending".into())]);
        assert!(!super::super::Change::replaces(&changes[0]));
        assert_eq!(changes[0].to_string(), "is pending, not available");
    }

    #[test]
    fn an_interface_endpoint_on_a_recreated_subnet_is_moved() {
        let (node, spec) = interface();
        let mut refs = refs();
        refs.insert(NodeId::subnet("b"), record("subnet-b2"));
        let changes = compare(&node, &spec, &interface_facts(), &refs);
        assert_eq!(changes, [Change::Subnets { add: vec!["subnet-b2".into()], remove: vec!["subnet-b".into()] }]);
        assert!(!super::super::Change::replaces(&changes[0]));
        assert_eq!(changes[0].to_string(), "subnets: missing subnet-b2; also subnet-b");
    }

    #[test]
    fn an_interface_endpoints_group_and_private_dns_are_compared() {
        let (node, spec) = interface();
        let facts = Facts { groups: set(&["sg-default"]), private_dns: false, ..interface_facts() };
        let changes = compare(&node, &spec, &facts, &refs());
        assert_eq!(
            changes,
            [Change::Groups { add: vec!["sg-e".into()], remove: vec!["sg-default".into()] }, Change::PrivateDnsOff]
        );
    }

    #[test]
    fn a_gateway_endpoint_missing_a_table_gets_it() {
        let (node, spec) = gateway();
        let facts = Facts { route_tables: set(&["rtb-a"]), ..gateway_facts() };
        let changes = compare(&node, &spec, &facts, &refs());
        assert_eq!(changes, [Change::RouteTables { add: vec!["rtb-b".into()], remove: vec![] }]);
        assert_eq!(changes[0].to_string(), "route tables: missing rtb-b");
    }

    #[test]
    fn another_service_or_type_must_be_replaced() {
        let (node, spec) = interface();
        let facts = Facts { service_name: "com.amazonaws.us-east-1.ecr.dkr".into(), ..interface_facts() };
        let changes = compare(&node, &spec, &facts, &refs());
        assert_eq!(changes.len(), 1);
        assert!(super::super::Change::replaces(&changes[0]));
        let changes = compare(&node, &spec, &gateway_facts(), &refs());
        assert!(changes.contains(&Change::Type { gateway: true }), "{changes:?}");
        assert!(changes.iter().all(super::super::Change::replaces));
    }

    #[test]
    fn unrecorded_references_are_not_compared() {
        let (node, spec) = interface();
        let facts = Facts { subnets: set(&["subnet-x"]), groups: set(&["sg-x"]), ..interface_facts() };
        assert!(compare(&node, &spec, &facts, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn the_label_names_the_endpoints_type() {
        assert_eq!(Endpoint::label(&interface().1), "interface endpoint");
        assert_eq!(Endpoint::label(&gateway().1), "gateway endpoint");
    }
}
