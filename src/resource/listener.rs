//! A listener of the load balancer (`listener/<port>`) with its routing: HTTPS with the certificate and a modern TLS
//! policy (or plain HTTP), forwarding to the public service that takes what no rule matches (else a 404), one rule
//! per service routed by path or host; or port 80's redirect to HTTPS. Everything about it changes in place: the
//! listener with one ModifyListener, each rule with its own call.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Result, bail};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, FixedResponseActionConfig, HostHeaderConditionConfig, Listener as Live,
    PathPatternConditionConfig, ProtocolEnum, RedirectActionConfig, RedirectActionStatusCodeEnum, RuleCondition,
    RulePriorityPair,
};
use serde::Serialize;

use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt, View,
    api_error, is,
};
use crate::model::{Node, NodeId};

/// TLS 1.3 and 1.2 with forward-secret ciphers only: AWS's recommended policy for new HTTPS listeners.
pub const TLS_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";
/// Rule priorities are moved out of each other's way through this range (AWS allows 1 to 50000).
const PARKING: u32 = 40000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub port: u16,
    /// HTTPS with this ACM certificate; plain HTTP without.
    pub certificate_arn: Option<String>,
    /// What a request no rule matches gets.
    pub default: Target,
    /// One rule per service routed by path or host, in priority order (1, 2, ...).
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Forward to a public service's target group.
    Service(String),
    /// Answer a permanent redirect to HTTPS on this port.
    Redirect(u16),
    /// Answer 404: no service takes what no rule matches.
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub service: String,
    pub host: Option<String>,
    pub path: Option<String>,
}

/// What a live action does, in comparable terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveAction {
    Forward(Vec<String>),
    Redirect { protocol: String, port: String, code: String },
    Fixed { code: String },
    Other(String),
}

impl fmt::Display for LiveAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveAction::Forward(tgs) => write!(f, "forwards to {}", if tgs.is_empty() { "nothing".into() } else { tgs.join(", ") }),
            LiveAction::Redirect { protocol, port, code } => write!(f, "redirects to {protocol}:{port} ({code})"),
            LiveAction::Fixed { code } => write!(f, "answers {code}"),
            LiveAction::Other(kind) => write!(f, "does {kind}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LiveRule {
    pub arn: String,
    pub priority: u32,
    pub host: Vec<String>,
    pub path: Vec<String>,
    pub action: LiveAction,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub port: i32,
    pub protocol: String,
    pub certificates: Vec<String>,
    pub ssl_policy: Option<String>,
    pub default: LiveAction,
    /// Its rules but the default one.
    pub rules: Vec<LiveRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Protocol, certificate, TLS policy or default action: one ModifyListener sets them all.
    Listener(String),
    RouteMissing { service: String, priority: u32 },
    RouteDiffers { service: String, arn: String },
    RoutePriority { service: String, arn: String, from: u32, to: u32 },
    /// A rule nobody declared (hand-made, or of a service no longer public).
    RuleExtra { arn: String, what: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Listener(what) => f.write_str(what),
            Change::RouteMissing { service, .. } => write!(f, "has no rule for {service}"),
            Change::RouteDiffers { service, .. } => write!(f, "routes {service} otherwise"),
            Change::RoutePriority { service, from, to, .. } => write!(f, "rule for {service} is priority {from}, not {to}"),
            Change::RuleExtra { what, .. } => write!(f, "has a rule nobody declared ({what})"),
        }
    }
}

impl super::Change for Change {}

pub struct Listener;

impl Resource for Listener {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "listener";
    const ON_CHANGE: OnChange = OnChange::InPlace;
    /// It forwards to target groups by ARN.
    const FOLLOWS_DEPENDENCIES: bool = true;
    /// It goes with its load balancer.
    const PART_OF_PARENT: bool = true;

    /// The listeners of the stack's load balancers (from the shared read), each with its rules; a listener is
    /// whoever's its load balancer is.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let view = cx.elb().await?;
        let recorded: Vec<&str> = cx.recorded(Kind::LoadBalancer).map(|(_, r)| r.id.as_str()).collect();
        let owners: BTreeMap<&str, (Owner, Option<String>)> = view
            .load_balancers
            .iter()
            .filter_map(|lb| {
                let arn = lb.load_balancer_arn()?;
                let tags = view.stack_tags(arn);
                Some((arn, (cx.owner(tags.stack.as_deref()), tags.lineage)))
            })
            .filter(|(arn, (owner, _))| *owner == Owner::Us || recorded.contains(arn))
            .collect();
        Ok(view
            .listeners
            .iter()
            .filter_map(|l| {
                let arn = l.listener_arn()?;
                let (owner, lineage) = owners.get(l.load_balancer_arn()?)?.clone();
                let port = u16::try_from(l.port()?).ok()?;
                let node = view.node(arn).filter(|n| n.kind() == Kind::Listener).unwrap_or(NodeId::Listener(port));
                let rules = view.rules.get(arn).map(Vec::as_slice).unwrap_or_default();
                Some(Found { node: Some(node), id: arn.to_string(), arn: Some(arn.to_string()), owner, lineage, facts: facts_of(l, rules) })
            })
            .collect())
    }

    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let tg = |service: &str| super::Refs::arn(cx.refs, &NodeId::TargetGroup(service.to_string()));
        let mut changes = Vec::new();
        let protocol = if spec.certificate_arn.is_some() { "HTTPS" } else { "HTTP" };
        if facts.port != i32::from(spec.port) {
            changes.push(Change::Listener(format!("listens on port {}, not {}", facts.port, spec.port)));
        }
        if facts.protocol != protocol {
            changes.push(Change::Listener(format!("is {}, not {protocol}", facts.protocol)));
        } else if let Some(cert) = &spec.certificate_arn {
            if facts.certificates != [cert.clone()] {
                changes.push(Change::Listener(format!("serves certificate {}, not {cert}", facts.certificates.join(", "))));
            } else if facts.ssl_policy.as_deref() != Some(TLS_POLICY) {
                let live = facts.ssl_policy.as_deref().unwrap_or("none");
                changes.push(Change::Listener(format!("TLS policy is {live}, not {TLS_POLICY}")));
            }
        }
        // A target group being created cannot be compared yet: the update after it sets the action.
        let want = match &spec.default {
            Target::Service(s) => tg(s).map(|arn| LiveAction::Forward(vec![arn])),
            Target::Redirect(port) => Some(redirect_of(*port)),
            Target::NotFound => Some(LiveAction::Fixed { code: "404".into() }),
        };
        if let Some(want) = want.filter(|w| *w != facts.default) {
            changes.push(Change::Listener(format!("default {}, not {want}", facts.default)));
        }
        let mut matched: Vec<&str> = Vec::new();
        for (i, route) in spec.routes.iter().enumerate() {
            let priority = i as u32 + 1;
            let Some(arn) = tg(&route.service) else { continue };
            let forward = LiveAction::Forward(vec![arn]);
            let live = facts.rules.iter().find(|r| r.action == forward && !matched.contains(&r.arn.as_str()));
            let Some(live) = live else {
                changes.push(Change::RouteMissing { service: route.service.clone(), priority });
                continue;
            };
            matched.push(&live.arn);
            if live.host != route.host.iter().cloned().collect::<Vec<_>>()
                || live.path != route.path.iter().cloned().collect::<Vec<_>>()
            {
                changes.push(Change::RouteDiffers { service: route.service.clone(), arn: live.arn.clone() });
            }
            if live.priority != priority {
                changes.push(Change::RoutePriority {
                    service: route.service.clone(),
                    arn: live.arn.clone(),
                    from: live.priority,
                    to: priority,
                });
            }
        }
        for r in &facts.rules {
            // Rules forwarding to a group not recorded yet are this spec's, still being made.
            let pending = spec.routes.iter().any(|route| tg(&route.service).is_none());
            if !matched.contains(&r.arn.as_str()) && !pending {
                changes.push(Change::RuleExtra { arn: r.arn.clone(), what: rule_text(r) });
            }
        }
        changes
    }

    /// Makes the listener with its default action; the rules follow in the update the compare then asks for.
    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let lb = ctx.id_of(&NodeId::LoadBalancer)?;
        let mut call = ctx
            .clients
            .elb
            .create_listener()
            .load_balancer_arn(&lb)
            .port(i32::from(spec.port))
            .default_actions(action(ctx, &spec.default)?)
            .set_tags(Some(super::elb::tags(ctx, &node.id, &format!("listener {}", spec.port))));
        call = match &spec.certificate_arn {
            Some(cert) => call
                .protocol(ProtocolEnum::Https)
                .certificates(Certificate::builder().certificate_arn(cert).build())
                .ssl_policy(TLS_POLICY),
            None => call.protocol(ProtocolEnum::Http),
        };
        let out = call.send().await.map_err(|e| certificate_hint(api_error(format!("create listener {} of {lb}", spec.port), e), spec));
        let live = match out {
            Ok(out) => out.listeners().first().cloned(),
            // Made by a run killed before it recorded it: taken as it is, and the compare completes it.
            Err(e) if is(&e, ErrorKind::AlreadyExists) => {
                let out = ctx.clients.elb.describe_listeners().load_balancer_arn(&lb).send().await;
                let out = out.map_err(|e| api_error(format!("read the listeners of {lb}"), e))?;
                let found = out.listeners().iter().find(|l| l.port() == Some(i32::from(spec.port))).cloned();
                if found.is_none() {
                    return Err(e);
                }
                found
            }
            Err(e) => return Err(e),
        };
        let arn = live.as_ref().and_then(|l| l.listener_arn());
        let created = Created::from_answer("CreateListener", arn, arn)?;
        let facts = live.as_ref().map(|l| facts_of(l, &[])).unwrap_or_else(|| Facts {
            port: i32::from(spec.port),
            protocol: String::new(),
            certificates: Vec::new(),
            ssl_policy: None,
            default: LiveAction::Other("unknown".into()),
            rules: Vec::new(),
        });
        Ok((created, facts))
    }

    /// Rules first (nobody's go, differing ones are set, priorities moved through a parking range so that no two
    /// rules ever hold one, missing ones made), then the listener itself.
    async fn update(
        ctx: &Ctx,
        _node: &Node,
        spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        let elb = &ctx.clients.elb;
        let listener = live.id;
        for change in changes {
            if let Change::RuleExtra { arn, .. } = change {
                let out = elb.delete_rule().rule_arn(arn).send().await;
                out.map_err(|e| api_error(format!("delete rule {arn} of listener {}", spec.port), e)).or_gone()?;
            }
        }
        for change in changes {
            if let Change::RouteDiffers { service, arn } = change {
                let route = route_of(spec, service)?;
                let out = elb
                    .modify_rule()
                    .rule_arn(arn)
                    .set_conditions(Some(conditions(route)))
                    .actions(action(ctx, &Target::Service(service.clone()))?)
                    .send()
                    .await;
                out.map_err(|e| api_error(format!("route {service} on listener {}", spec.port), e))?;
            }
        }
        let moves: Vec<(&String, u32)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::RoutePriority { arn, to, .. } => Some((arn, *to)),
                _ => None,
            })
            .collect();
        if !moves.is_empty() {
            let pairs = |to: &dyn Fn(usize, u32) -> u32| -> Vec<RulePriorityPair> {
                moves
                    .iter()
                    .enumerate()
                    .map(|(i, (arn, p))| RulePriorityPair::builder().rule_arn(*arn).priority(to(i, *p) as i32).build())
                    .collect()
            };
            for step in [pairs(&|i, _| PARKING + i as u32), pairs(&|_, p| p)] {
                let out = elb.set_rule_priorities().set_rule_priorities(Some(step)).send().await;
                out.map_err(|e| api_error(format!("order the rules of listener {}", spec.port), e))?;
            }
        }
        for change in changes {
            if let Change::RouteMissing { service, priority } = change {
                let route = route_of(spec, service)?;
                let out = elb
                    .create_rule()
                    .listener_arn(listener)
                    .priority(*priority as i32)
                    .set_conditions(Some(conditions(route)))
                    .actions(action(ctx, &Target::Service(service.clone()))?)
                    .set_tags(Some(super::elb::tags(ctx, live.node, &format!("{} route {service}", spec.port))))
                    .send()
                    .await;
                match out.map_err(|e| api_error(format!("route {service} on listener {}", spec.port), e)) {
                    // A retried update whose first CreateRule went through: the rule is there, at its priority.
                    Err(e) if is(&e, ErrorKind::InUse) && rule_exists(ctx, listener, service, *priority).await? => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        if changes.iter().any(|c| matches!(c, Change::Listener(_))) {
            let mut call = elb
                .modify_listener()
                .listener_arn(listener)
                .port(i32::from(spec.port))
                .default_actions(action(ctx, &spec.default)?);
            call = match &spec.certificate_arn {
                Some(cert) => call
                    .protocol(ProtocolEnum::Https)
                    .certificates(Certificate::builder().certificate_arn(cert).build())
                    .ssl_policy(TLS_POLICY),
                None => call.protocol(ProtocolEnum::Http),
            };
            let out = call.send().await;
            out.map_err(|e| certificate_hint(api_error(format!("set listener {}", spec.port), e), spec))?;
        }
        Ok(None)
    }

    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let out = ctx
            .clients
            .elb
            .delete_listener()
            .listener_arn(live.id)
            .send()
            .await
            .map_err(|e| api_error(format!("delete listener {}", live.id), e))
            .or_gone()?;
        Ok(if out.is_some() { Deleted::Now } else { Deleted::AlreadyGone })
    }
}

/// Whether the listener has a rule at `priority` forwarding to the service's target group.
async fn rule_exists(ctx: &Ctx, listener: &str, service: &str, priority: u32) -> Result<bool> {
    let tg = ctx.id_of(&NodeId::TargetGroup(service.to_string()))?;
    let out = ctx.clients.elb.describe_rules().listener_arn(listener).send().await;
    let out = out.map_err(|e| api_error(format!("read the rules of listener {listener}"), e))?;
    Ok(out.rules().iter().any(|r| {
        r.priority() == Some(priority.to_string().as_str()) && action_of(r.actions()) == LiveAction::Forward(vec![tg.clone()])
    }))
}

fn route_of<'a>(spec: &'a Spec, service: &str) -> Result<&'a Route> {
    match spec.routes.iter().find(|r| r.service == service) {
        Some(route) => Ok(route),
        None => bail!("internal error: listener {} has no route for {service}", spec.port),
    }
}

/// The action that sends requests where the spec says.
fn action(ctx: &Ctx, target: &Target) -> Result<Action> {
    Ok(match target {
        Target::Service(s) => Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(ctx.id_of(&NodeId::TargetGroup(s.clone()))?)
            .build(),
        Target::Redirect(port) => Action::builder()
            .r#type(ActionTypeEnum::Redirect)
            .redirect_config(
                RedirectActionConfig::builder()
                    .protocol("HTTPS")
                    .port(port.to_string())
                    .status_code(RedirectActionStatusCodeEnum::Http301)
                    .build(),
            )
            .build(),
        Target::NotFound => Action::builder()
            .r#type(ActionTypeEnum::FixedResponse)
            .fixed_response_config(
                FixedResponseActionConfig::builder()
                    .status_code("404")
                    .content_type("text/plain")
                    .message_body("Not Found")
                    .build(),
            )
            .build(),
    })
}

fn conditions(route: &Route) -> Vec<RuleCondition> {
    let mut out = Vec::new();
    if let Some(host) = &route.host {
        out.push(
            RuleCondition::builder()
                .field("host-header")
                .host_header_config(HostHeaderConditionConfig::builder().values(host).build())
                .build(),
        );
    }
    if let Some(path) = &route.path {
        out.push(
            RuleCondition::builder()
                .field("path-pattern")
                .path_pattern_config(PathPatternConditionConfig::builder().values(path).build())
                .build(),
        );
    }
    out
}

fn redirect_of(port: u16) -> LiveAction {
    LiveAction::Redirect { protocol: "HTTPS".into(), port: port.to_string(), code: "HTTP_301".into() }
}

/// A certificate AWS cannot find is the config's to fix.
fn certificate_hint(e: anyhow::Error, spec: &Spec) -> anyhow::Error {
    match (&spec.certificate_arn, e.to_string().contains("CertificateNotFound")) {
        (Some(cert), true) => e.context(format!(
            "certificate {cert} was not found\n  hint: request or import it in ACM in the stack's region, or fix certificate_arn in the config"
        )),
        _ => e,
    }
}

fn action_of(actions: &[Action]) -> LiveAction {
    let Some(a) = actions.iter().min_by_key(|a| a.order().unwrap_or(0)) else { return LiveAction::Other("nothing".into()) };
    match a.r#type() {
        Some(ActionTypeEnum::Forward) => {
            let mut tgs: Vec<String> = a.target_group_arn().into_iter().map(str::to_string).collect();
            if tgs.is_empty() {
                let weighted = a.forward_config().map(|f| f.target_groups()).unwrap_or_default();
                tgs = weighted.iter().filter_map(|t| t.target_group_arn()).map(str::to_string).collect();
            }
            LiveAction::Forward(tgs)
        }
        Some(ActionTypeEnum::Redirect) => {
            let r = a.redirect_config();
            LiveAction::Redirect {
                protocol: r.and_then(|r| r.protocol()).unwrap_or("#{protocol}").to_string(),
                port: r.and_then(|r| r.port()).unwrap_or("#{port}").to_string(),
                code: r.and_then(|r| r.status_code()).map(|c| c.as_str().to_string()).unwrap_or_default(),
            }
        }
        Some(ActionTypeEnum::FixedResponse) => LiveAction::Fixed {
            code: a.fixed_response_config().and_then(|f| f.status_code()).unwrap_or_default().to_string(),
        },
        other => LiveAction::Other(other.map(|t| t.as_str().to_string()).unwrap_or_default()),
    }
}

fn condition_values(rule: &aws_sdk_elasticloadbalancingv2::types::Rule, field: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in rule.conditions().iter().filter(|c| c.field() == Some(field)) {
        let configured = match field {
            "host-header" => c.host_header_config().map(|h| h.values().to_vec()),
            _ => c.path_pattern_config().map(|p| p.values().to_vec()),
        };
        out.extend(configured.filter(|v| !v.is_empty()).unwrap_or_else(|| c.values().to_vec()));
    }
    out
}

fn rule_text(r: &LiveRule) -> String {
    let mut parts = vec![format!("priority {}", r.priority)];
    parts.extend(r.host.iter().map(|h| format!("host {h}")));
    parts.extend(r.path.iter().map(|p| format!("path {p}")));
    parts.push(r.action.to_string());
    parts.join(", ")
}

fn facts_of(l: &Live, rules: &[aws_sdk_elasticloadbalancingv2::types::Rule]) -> Facts {
    Facts {
        port: l.port().unwrap_or(0),
        protocol: l.protocol().map(|p| p.as_str().to_string()).unwrap_or_default(),
        certificates: l.certificates().iter().filter_map(|c| c.certificate_arn()).map(str::to_string).collect(),
        ssl_policy: l.ssl_policy().map(str::to_string),
        default: action_of(l.default_actions()),
        rules: rules
            .iter()
            .filter(|r| !r.is_default().unwrap_or(false) && r.priority() != Some("default"))
            .filter_map(|r| {
                Some(LiveRule {
                    arn: r.rule_arn()?.to_string(),
                    priority: r.priority()?.parse().ok()?,
                    host: condition_values(r, "host-header"),
                    path: condition_values(r, "path-pattern"),
                    action: action_of(r.actions()),
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::state::Record;

    use super::*;

    fn spec() -> Spec {
        Spec {
            port: 443,
            certificate_arn: Some("arn:aws:acm:us-east-1:123456789012:certificate/c".into()),
            default: Target::Service("web".into()),
            routes: vec![
                Route { service: "api".into(), host: None, path: Some("/api/*".into()) },
                Route { service: "admin".into(), host: Some("admin.example.com".into()), path: None },
            ],
        }
    }

    fn facts() -> Facts {
        Facts {
            port: 443,
            protocol: "HTTPS".into(),
            certificates: vec!["arn:aws:acm:us-east-1:123456789012:certificate/c".into()],
            ssl_policy: Some(TLS_POLICY.into()),
            default: LiveAction::Forward(vec!["tg-web".into()]),
            rules: vec![
                LiveRule {
                    arn: "r-api".into(),
                    priority: 1,
                    host: vec![],
                    path: vec!["/api/*".into()],
                    action: LiveAction::Forward(vec!["tg-api".into()]),
                },
                LiveRule {
                    arn: "r-admin".into(),
                    priority: 2,
                    host: vec!["admin.example.com".into()],
                    path: vec![],
                    action: LiveAction::Forward(vec!["tg-admin".into()]),
                },
            ],
        }
    }

    fn compare(spec: &Spec, facts: &Facts) -> Vec<Change> {
        let node = Node { id: NodeId::Listener(443), spec: super::super::Spec::Listener(spec.clone()), deps: vec![] };
        let refs: BTreeMap<NodeId, Record> = ["web", "api", "admin"]
            .into_iter()
            .map(|s| {
                let arn = format!("tg-{s}");
                (NodeId::TargetGroup(s.into()), Record { id: arn.clone(), arn: Some(arn), digest: String::new() })
            })
            .collect();
        Listener::compare(spec, facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    #[test]
    fn a_listener_of_the_spec_is_in_sync() {
        assert_eq!(compare(&spec(), &facts()), []);
    }

    #[test]
    fn an_old_tls_policy_another_certificate_or_default_is_set_in_place() {
        let old = compare(&spec(), &Facts { ssl_policy: Some("ELBSecurityPolicy-2016-08".into()), ..facts() });
        assert!(matches!(&old[..], [Change::Listener(t)] if t.contains("ELBSecurityPolicy-2016-08")), "{old:?}");
        let default = compare(&spec(), &Facts { default: LiveAction::Fixed { code: "404".into() }, ..facts() });
        assert!(matches!(&default[..], [Change::Listener(t)] if t.contains("answers 404")), "{default:?}");
    }

    #[test]
    fn rules_are_matched_by_their_service_and_a_hand_made_one_is_extra() {
        let mut live = facts();
        live.rules.swap(0, 1);
        live.rules[0].priority = 1;
        live.rules[1].priority = 2;
        live.rules[1].path = vec!["/v2/*".into()];
        live.rules.push(LiveRule {
            arn: "r-hand".into(),
            priority: 9,
            host: vec![],
            path: vec!["/x".into()],
            action: LiveAction::Fixed { code: "200".into() },
        });
        let changes = compare(&spec(), &live);
        assert_eq!(
            changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "routes api otherwise",
                "rule for api is priority 2, not 1",
                "rule for admin is priority 1, not 2",
                "has a rule nobody declared (priority 9, path /x, answers 200)"
            ]
        );
    }

    #[test]
    fn port_80s_redirect() {
        let spec = Spec { port: 80, certificate_arn: None, default: Target::Redirect(443), routes: vec![] };
        let live = Facts {
            port: 80,
            protocol: "HTTP".into(),
            certificates: vec![],
            ssl_policy: Some("ELBSecurityPolicy-2016-08".into()),
            default: redirect_of(443),
            rules: vec![],
        };
        assert_eq!(compare(&spec, &live), [], "an emulator's TLS policy on a plain HTTP listener is no difference");
        let forward = Facts { default: LiveAction::Forward(vec!["tg-web".into()]), ..live };
        assert_eq!(compare(&spec, &forward).len(), 1);
    }
}
