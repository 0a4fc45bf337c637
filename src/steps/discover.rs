//! Finds a stack's resources by their `secep:stack` / `secep:node` tags, for when the state is lost or a crash came
//! between a create call and the state write. Reads only.

use std::collections::BTreeMap;

use anyhow::Result;
use aws_sdk_ec2::types::Filter;
use aws_sdk_servicediscovery::types::{ServiceFilter, ServiceFilterName};

use super::{TAG_NODE, TAG_STACK, api_error};
use crate::aws::Clients;
use crate::state::Record;

/// Digest recorded for adopted resources: their creating spec is unknown, so they never count as up to date.
pub const ADOPTED: &str = "adopted";

fn adopted(id: &str, arn: Option<&str>) -> Record {
    Record { id: id.to_string(), arn: arn.map(str::to_string), digest: ADOPTED.to_string() }
}

/// Adds a found resource under its node id, or under `node#id` when another resource already carries that node tag
/// (a twin left by a create whose response was lost): every one of them is found.
fn add(found: &mut BTreeMap<String, Record>, node: &str, record: Record) {
    let key = if found.get(node).is_some_and(|r| r.id != record.id) {
        format!("{node}#{}", record.id)
    } else {
        node.to_string()
    };
    found.insert(key, record);
}

/// Every live resource tagged for `stack`, keyed by node id.
pub async fn tagged(clients: &Clients, stack: &str) -> Result<BTreeMap<String, Record>> {
    // Each kind is found into its own map, all kinds at once: their node ids never overlap.
    let mut parts: [BTreeMap<String, Record>; 5] = Default::default();
    let [ec2_found, egress_found, ecs_found, cloud_map_found, account_found] = &mut parts;
    tokio::try_join!(
        ec2(clients, stack, ec2_found),
        egress(clients, stack, egress_found),
        ecs(clients, stack, ecs_found),
        cloud_map(clients, stack, cloud_map_found),
        account(clients, stack, account_found),
    )?;
    Ok(parts.into_iter().flatten().collect())
}

/// Route tables, endpoints, gateways and addresses: one describe per kind, by tag (DescribeTags would be fewer
/// calls, but deleted resources keep answering it for a while).
async fn egress(clients: &Clients, stack: &str, found: &mut BTreeMap<String, Record>) -> Result<()> {
    let kinds = ["rtb", "vpce", "igw", "eip", "nat"].into_iter().collect();
    let live = super::live::read_egress(clients, stack, &kinds, &Default::default()).await?;
    for (node, l) in live.nodes {
        add(found, node.split('#').next().unwrap_or(&node), adopted(&l.id, None));
    }
    Ok(())
}

/// The execution role (named after the stack) and the log group (`/secep/<stack>`), if tagged as the stack's.
async fn account(clients: &Clients, stack: &str, found: &mut BTreeMap<String, Record>) -> Result<()> {
    let name = crate::model::execution_role_name(stack);
    let group = format!("/secep/{stack}");
    let (role, group_tag) =
        tokio::try_join!(super::iam::read_role(clients, &name), super::log_group::stack_tag(clients, &group))?;
    if let Some((arn, Some(tag))) = role
        && tag == stack
    {
        found.insert("role/execution".into(), adopted(&name, Some(&arn)));
    }
    if group_tag == Some(Some(stack.to_string())) {
        found.insert("logs".into(), adopted(&group, None));
    }
    Ok(())
}

fn ec2_tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

async fn ec2(clients: &Clients, stack: &str, found: &mut BTreeMap<String, Record>) -> Result<()> {
    let ours = || Filter::builder().name(format!("tag:{TAG_STACK}")).values(stack).build();
    let ec2 = &clients.ec2;
    let (vpcs, subnets, groups) = tokio::try_join!(
        async { ec2.describe_vpcs().filters(ours()).send().await.map_err(|e| api_error("find tagged VPCs", e)) },
        async { ec2.describe_subnets().filters(ours()).send().await.map_err(|e| api_error("find tagged subnets", e)) },
        async {
            ec2.describe_security_groups()
                .filters(ours())
                .send()
                .await
                .map_err(|e| api_error("find tagged security groups", e))
        },
    )?;
    for v in vpcs.vpcs() {
        if let (Some(node), Some(id)) = (ec2_tag(v.tags(), TAG_NODE), v.vpc_id()) {
            add(found, node, adopted(id, None));
        }
    }
    for s in subnets.subnets() {
        if let (Some(node), Some(id)) = (ec2_tag(s.tags(), TAG_NODE), s.subnet_id()) {
            add(found, node, adopted(id, None));
        }
    }
    // group id → service name, to name the rules between them.
    let mut services = BTreeMap::new();
    for g in groups.security_groups() {
        if let (Some(node), Some(id)) = (ec2_tag(g.tags(), TAG_NODE), g.group_id()) {
            add(found, node, adopted(id, None));
            // A group's whole-rule-set node goes with it: its rules are revoked before any group is deleted.
            if let Some(service) = node.strip_prefix("sg/") {
                services.insert(id.to_string(), service.to_string());
                found.entry(format!("egress/{service}")).or_insert_with(|| adopted(id, None));
            } else if node == "vpce-sg" {
                found.entry("vpce-rules".into()).or_insert_with(|| adopted(id, None));
            }
        }
    }
    if services.is_empty() {
        return Ok(());
    }
    let rules = ec2
        .describe_security_group_rules()
        .filters(Filter::builder().name("group-id").set_values(Some(services.keys().cloned().collect())).build())
        .send()
        .await
        .map_err(|e| api_error("list the rules of the stack's groups", e))?;
    for r in rules.security_group_rules() {
        let callee = r.group_id().and_then(|g| services.get(g));
        let caller = r.referenced_group_info().and_then(|g| g.group_id()).and_then(|g| services.get(g));
        if let (Some(callee), Some(caller), Some(id), false) =
            (callee, caller, r.security_group_rule_id(), r.is_egress().unwrap_or(false))
        {
            found.insert(crate::model::rule_id(caller, callee), adopted(id, None));
        }
    }
    Ok(())
}

fn ecs_tag<'a>(tags: &'a [aws_sdk_ecs::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

async fn ecs(clients: &Clients, stack: &str, found: &mut BTreeMap<String, Record>) -> Result<()> {
    let ecs = &clients.ecs;
    // The cluster is named after the stack.
    let clusters = ecs
        .describe_clusters()
        .clusters(stack)
        .include(aws_sdk_ecs::types::ClusterField::Tags)
        .send()
        .await
        .map_err(|e| api_error("find the stack's ECS cluster", e))?;
    for c in clusters.clusters() {
        if c.status() == Some("ACTIVE") && ecs_tag(c.tags(), TAG_STACK) == Some(stack) {
            found.insert("cluster".into(), adopted(c.cluster_name().unwrap_or(stack), c.cluster_arn()));
            for s in super::service::describe_cluster_services(clients, stack, []).await? {
                if let (Some(node), Some(arn), Some(stack_tag)) =
                    (ecs_tag(s.tags(), TAG_NODE), s.service_arn(), ecs_tag(s.tags(), TAG_STACK))
                    && stack_tag == stack
                {
                    add(found, node, adopted(arn, Some(arn)));
                }
            }
        }
    }
    // Task definition families are `<stack>-<service>`. ListTaskDefinitions takes a full family name, so the
    // families are listed first (a prefix match, which may include another stack's: the tags decide below).
    let mut families = Vec::new();
    let mut pages = ecs
        .list_task_definition_families()
        .family_prefix(format!("{stack}-"))
        .status(aws_sdk_ecs::types::TaskDefinitionFamilyStatus::Active)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        families
            .extend(page.map_err(|e| api_error("list the stack's task definition families", e))?.families().to_vec());
    }
    // One listing per family and one describe per revision, all at once (a 50-service stack has 50 families).
    let revisions = super::all(families, |family| {
        let ecs = ecs.clone();
        async move {
            let mut arns = Vec::new();
            let mut pages = ecs
                .list_task_definitions()
                .family_prefix(&family)
                .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| api_error(format!("list revisions of {family}"), e))?;
                arns.extend(page.task_definition_arns().to_vec());
            }
            Ok(arns)
        }
    })
    .await?;
    let described = super::all(revisions.into_iter().flatten().collect(), |arn: String| {
        let ecs = ecs.clone();
        async move {
            let out = ecs
                .describe_task_definition()
                .task_definition(&arn)
                .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
                .send()
                .await
                .map_err(|e| api_error(format!("describe task definition {arn}"), e))?;
            Ok((arn, out))
        }
    })
    .await?;
    for (arn, out) in described {
        if ecs_tag(out.tags(), TAG_STACK) == Some(stack)
            && let Some(node) = ecs_tag(out.tags(), TAG_NODE)
        {
            // Several revisions may carry the same node (a crash between registers): keep them all.
            let key = if found.contains_key(node) {
                format!("{node}#{}", arn.rsplit(':').next().unwrap_or(""))
            } else {
                node.to_string()
            };
            found.insert(key, adopted(&arn, Some(&arn)));
        }
    }
    Ok(())
}

/// Tags of a Cloud Map resource; none when it was deleted meanwhile (another stack tearing down in the account).
async fn sd_tags(sd: aws_sdk_servicediscovery::Client, arn: String) -> Result<BTreeMap<String, String>> {
    match sd
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(|e| api_error(format!("read tags of {arn}"), e))
    {
        Ok(o) => Ok(o.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()),
        Err(e) if super::error_code(&e) == Some("ResourceNotFoundException") => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

async fn cloud_map(clients: &Clients, stack: &str, found: &mut BTreeMap<String, Record>) -> Result<()> {
    let sd = &clients.sd;
    let mut pages = sd.list_namespaces().into_paginator().send();
    let mut namespaces = Vec::new();
    while let Some(page) = pages.next().await {
        namespaces.extend(page.map_err(|e| api_error("list Cloud Map namespaces", e))?.namespaces().to_vec());
    }
    // Every namespace in the account is a candidate: their tags are read all at once.
    let candidates: Vec<(String, String)> =
        namespaces.iter().filter_map(|ns| Some((ns.id()?.to_string(), ns.arn()?.to_string()))).collect();
    let tagged = super::all(candidates, |(id, arn)| {
        let sd = sd.clone();
        async move { Ok((id, arn.clone(), sd_tags(sd, arn).await?)) }
    })
    .await?;
    for (id, arn, tags) in tagged {
        if tags.get(TAG_STACK).map(String::as_str) != Some(stack) {
            continue;
        }
        found.insert(tags.get(TAG_NODE).cloned().unwrap_or_else(|| "namespace".into()), adopted(&id, Some(&arn)));
        let filter = ServiceFilter::builder().name(ServiceFilterName::NamespaceId).values(&id).build()?;
        let services = sd
            .list_services()
            .filters(filter)
            .send()
            .await
            .map_err(|e| api_error(format!("list services of {id}"), e))?;
        let services: Vec<(String, String)> =
            services.services().iter().filter_map(|s| Some((s.id()?.to_string(), s.arn()?.to_string()))).collect();
        let services = super::all(services, |(sid, sarn)| {
            let sd = sd.clone();
            async move { Ok((sid, sarn.clone(), sd_tags(sd, sarn).await?)) }
        })
        .await?;
        for (sid, sarn, tags) in services {
            if let (Some(node), Some(owner)) = (tags.get(TAG_NODE), tags.get(TAG_STACK))
                && owner == stack
            {
                add(found, node, adopted(&sid, Some(&sarn)));
            }
        }
    }
    Ok(())
}
