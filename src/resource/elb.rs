//! What the load balancer's kinds share (`lb`, `tg/<service>`, `listener/<port>`): their names, their tags, and
//! one read of everything Elastic Load Balancing holds in the stack's VPC. Elastic Load Balancing has no tag
//! filter, so the read lists the region's load balancers and target groups and keeps those in the stack's VPC or
//! recorded (a run killed between a create and its record leaves one the next `down` must find), then reads their
//! listeners, rules, attributes and tags: about six calls for a public stack, none for one without.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use aws_sdk_elasticloadbalancingv2::types::{Listener, LoadBalancer, Rule, Tag, TargetGroup};
use sha2::{Digest, Sha256};

use super::support::{StackTags, all};
use super::{Ctx, Kind, OrGone, ReadCx, TAG_NODE, api_error};
use crate::model::NodeId;

/// Load balancer and target group names: at most 32 letters, digits and hyphens, unique in the region.
const MAX_NAME: usize = 32;

/// The stack's load balancer: named after the stack (shortened with a hash past 32 characters).
pub fn lb_name(stack: &str) -> String {
    short_name(stack)
}

/// A public service's target group: its port is in the name, because AWS cannot change a target group's port and
/// a new one must stand beside the old one while the service moves (make before break).
pub fn tg_name(stack: &str, service: &str, port: u16) -> String {
    short_name(&format!("{stack}-{service}-{port}"))
}

fn short_name(name: &str) -> String {
    if name.len() <= MAX_NAME {
        return name.to_string();
    }
    let hash: String = Sha256::digest(name.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect();
    let head = name[..MAX_NAME - 9].trim_end_matches('-');
    format!("{head}-{hash}")
}

/// The tags every load balancer resource gets at creation.
pub fn tags(ctx: &Ctx, node: &NodeId, name: &str) -> Vec<Tag> {
    ctx.tags(node, name).into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

/// Everything Elastic Load Balancing holds for the stack, as one read found it.
#[derive(Debug, Default)]
pub struct ElbView {
    pub load_balancers: Vec<LoadBalancer>,
    /// Load balancer ARN → its attributes (key → value).
    pub attributes: BTreeMap<String, BTreeMap<String, String>>,
    pub target_groups: Vec<TargetGroup>,
    pub listeners: Vec<Listener>,
    /// Listener ARN → its rules (the default one included).
    pub rules: BTreeMap<String, Vec<Rule>>,
    /// Resource ARN → its tags.
    pub tags: BTreeMap<String, BTreeMap<String, String>>,
    /// Target group ARN → its attributes.
    pub target_group_attributes: BTreeMap<String, BTreeMap<String, String>>,
}

impl ElbView {
    pub fn tag(&self, arn: &str, key: &str) -> Option<&str> {
        self.tags.get(arn).and_then(|t| t.get(key)).map(String::as_str)
    }

    pub fn stack_tags(&self, arn: &str) -> StackTags {
        StackTags::of(|key| self.tag(arn, key))
    }

    pub fn target_group_attribute(&self, arn: &str, key: &str) -> Option<&str> {
        self.target_group_attributes.get(arn).and_then(|a| a.get(key)).map(String::as_str)
    }

    pub fn node(&self, arn: &str) -> Option<NodeId> {
        self.tag(arn, TAG_NODE).and_then(|n| n.parse().ok())
    }
}

/// Reads the view (see the module's comment); no call at all when the stack has no VPC and records nothing.
pub async fn read(cx: &ReadCx<'_>) -> Result<ElbView> {
    let recorded = |kind: Kind| -> BTreeSet<String> { cx.recorded(kind).map(|(_, r)| r.id.clone()).collect() };
    let (recorded_lbs, recorded_tgs) = (recorded(Kind::LoadBalancer), recorded(Kind::TargetGroup));
    let vpcs: BTreeSet<String> = cx.vpcs().await?.iter().filter_map(|v| v.vpc_id()).map(str::to_string).collect();
    if vpcs.is_empty() && recorded_lbs.is_empty() && recorded_tgs.is_empty() {
        return Ok(ElbView::default());
    }
    let ours = |vpc: Option<&str>, arn: Option<&str>, recorded: &BTreeSet<String>| {
        vpc.is_some_and(|v| vpcs.contains(v)) || arn.is_some_and(|a| recorded.contains(a))
    };
    let (lbs, tgs) = match tokio::try_join!(all_load_balancers(cx), all_target_groups(cx)) {
        Ok(found) => found,
        // A policy from before load balancers (or one without them) may not list them: with none desired or
        // recorded, there is nothing of the stack's to find but what a killed run left, which is said.
        Err(e)
            if super::is(&e, super::ErrorKind::AccessDenied)
                && !cx.desired.iter().any(|n| is_elb(n.spec.kind()))
                && recorded_lbs.is_empty()
                && recorded_tgs.is_empty() =>
        {
            tracing::warn!(
                "{e:#}; not looking for load balancers this stack may have left (grant the read actions of `secep iam-policy`)"
            );
            return Ok(ElbView::default());
        }
        Err(e) => return Err(e),
    };
    let load_balancers: Vec<LoadBalancer> =
        lbs.into_iter().filter(|l| ours(l.vpc_id(), l.load_balancer_arn(), &recorded_lbs)).collect();
    let target_groups: Vec<TargetGroup> =
        tgs.into_iter().filter(|t| ours(t.vpc_id(), t.target_group_arn(), &recorded_tgs)).collect();
    let lb_arns: Vec<String> =
        load_balancers.iter().filter_map(|l| l.load_balancer_arn()).map(str::to_string).collect();
    let clients = cx.clients.clone();
    let per_lb = all(lb_arns.clone(), move |arn| {
        let elb = clients.elb.clone();
        async move {
            let (listeners, attributes) = tokio::try_join!(listeners_of(&elb, &arn), attributes_of(&elb, &arn))?;
            Ok((arn, listeners, attributes))
        }
    })
    .await?;
    let mut view = ElbView { load_balancers, target_groups, ..ElbView::default() };
    for (arn, listeners, attributes) in per_lb {
        view.attributes.insert(arn, attributes);
        view.listeners.extend(listeners);
    }
    let tg_arns: Vec<String> =
        view.target_groups.iter().filter_map(|t| t.target_group_arn()).map(str::to_string).collect();
    let clients = cx.clients.clone();
    let tg_attributes = all(tg_arns, move |arn| {
        let elb = clients.elb.clone();
        async move { Ok((arn.clone(), target_group_attributes_of(&elb, &arn).await?)) }
    })
    .await?;
    view.target_group_attributes = tg_attributes.into_iter().collect();
    let listener_arns: Vec<String> =
        view.listeners.iter().filter_map(|l| l.listener_arn()).map(str::to_string).collect();
    let clients = cx.clients.clone();
    let rules = all(listener_arns.clone(), move |arn| {
        let elb = clients.elb.clone();
        async move { Ok((arn.clone(), rules_of(&elb, &arn).await?)) }
    })
    .await?;
    view.rules = rules.into_iter().collect();
    let tagged: Vec<String> = lb_arns
        .into_iter()
        .chain(view.target_groups.iter().filter_map(|t| t.target_group_arn()).map(str::to_string))
        .chain(listener_arns)
        .collect();
    view.tags = tags_of(cx, tagged).await?;
    Ok(view)
}

/// Every page of a marker-paged describe: `page(marker)` answers one page's items and the next marker.
async fn paged<T, F, Fut>(mut page: F) -> Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>)>>,
{
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let (items, next) = page(marker.clone()).await?;
        out.extend(items);
        match next.filter(|m| !m.is_empty() && Some(m) != marker.as_ref()) {
            Some(next) => marker = Some(next),
            None => return Ok(out),
        }
    }
}

fn is_elb(kind: Kind) -> bool {
    matches!(kind, Kind::LoadBalancer | Kind::TargetGroup | Kind::Listener)
}

async fn all_load_balancers(cx: &ReadCx<'_>) -> Result<Vec<LoadBalancer>> {
    paged(|marker| async move {
        let page = cx.clients.elb.describe_load_balancers().set_marker(marker).send().await;
        let page = page.map_err(|e| api_error("list the region's load balancers", e))?;
        Ok((page.load_balancers().to_vec(), page.next_marker().map(str::to_string)))
    })
    .await
}

async fn all_target_groups(cx: &ReadCx<'_>) -> Result<Vec<TargetGroup>> {
    paged(|marker| async move {
        let page = cx.clients.elb.describe_target_groups().set_marker(marker).send().await;
        let page = page.map_err(|e| api_error("list the region's target groups", e))?;
        Ok((page.target_groups().to_vec(), page.next_marker().map(str::to_string)))
    })
    .await
}

/// A load balancer's listeners; none when it was deleted between the list and this read.
async fn listeners_of(elb: &aws_sdk_elasticloadbalancingv2::Client, lb: &str) -> Result<Vec<Listener>> {
    let listeners = paged(|marker| async move {
        let page = elb.describe_listeners().load_balancer_arn(lb).set_marker(marker).send().await;
        let page = page.map_err(|e| api_error(format!("read the listeners of {lb}"), e))?;
        Ok((page.listeners().to_vec(), page.next_marker().map(str::to_string)))
    });
    Ok(listeners.await.or_gone()?.unwrap_or_default())
}

/// A listener's rules; none when it was deleted between the list and this read.
async fn rules_of(elb: &aws_sdk_elasticloadbalancingv2::Client, listener: &str) -> Result<Vec<Rule>> {
    let rules = paged(|marker| async move {
        let page = elb.describe_rules().listener_arn(listener).set_marker(marker).send().await;
        let page = page.map_err(|e| api_error(format!("read the rules of listener {listener}"), e))?;
        Ok((page.rules().to_vec(), page.next_marker().map(str::to_string)))
    });
    Ok(rules.await.or_gone()?.unwrap_or_default())
}

async fn attributes_of(elb: &aws_sdk_elasticloadbalancingv2::Client, lb: &str) -> Result<BTreeMap<String, String>> {
    let out = elb.describe_load_balancer_attributes().load_balancer_arn(lb).send().await;
    let out = out.map_err(|e| api_error(format!("read the attributes of {lb}"), e)).or_gone()?;
    Ok(out.map(|o| key_values(o.attributes().iter().map(|a| (a.key(), a.value())))).unwrap_or_default())
}

async fn target_group_attributes_of(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    tg: &str,
) -> Result<BTreeMap<String, String>> {
    let out = elb.describe_target_group_attributes().target_group_arn(tg).send().await;
    let out = out.map_err(|e| api_error(format!("read the attributes of {tg}"), e)).or_gone()?;
    Ok(out.map(|o| key_values(o.attributes().iter().map(|a| (a.key(), a.value())))).unwrap_or_default())
}

/// Attributes or tags as a map; an entry without a key or a value is left out.
fn key_values<'a>(pairs: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>) -> BTreeMap<String, String> {
    pairs.filter_map(|(k, v)| Some((k?.to_string(), v?.to_string()))).collect()
}

/// DescribeTags takes at most 20 ARNs a call.
async fn tags_of(cx: &ReadCx<'_>, arns: Vec<String>) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let chunks: Vec<Vec<String>> = arns.chunks(20).map(<[String]>::to_vec).collect();
    let clients = cx.clients.clone();
    let pages = all(chunks, move |chunk| {
        let elb = clients.elb.clone();
        async move {
            let out = elb.describe_tags().set_resource_arns(Some(chunk)).send().await;
            let out = out.map_err(|e| api_error("read the load balancer resources' tags", e))?;
            Ok(out
                .tag_descriptions()
                .iter()
                .filter_map(|d| {
                    Some((d.resource_arn()?.to_string(), key_values(d.tags().iter().map(|t| (t.key(), t.value())))))
                })
                .collect::<Vec<_>>())
        }
    })
    .await?;
    Ok(pages.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_elastic_load_balancings_limit() {
        assert_eq!(lb_name("shop"), "shop");
        assert_eq!(tg_name("shop", "web", 8080), "shop-web-8080");
        let long = tg_name("a-rather-long-stack-name-for-prod", "checkout", 8080);
        assert!(long.len() <= 32 && !long.contains("--"), "{long}");
        assert_ne!(long, tg_name("a-rather-long-stack-name-for-prod", "checkout", 9090), "the port changes the name");
    }
}
