//! `[services.<name>.public]`: the service behind the stack's one internet-facing application load balancer. Read
//! here, and checked here against the other public services that share the load balancer's listeners.

use std::collections::BTreeMap;
use std::ops::Range;

use ipnet::IpNet;

use super::reader::{Located, Problems, Section};
use super::{Config, RawService};

/// The node name of the load balancer in rules and the reachability matrix (`sg-rule/lb->web`): no service may take
/// it while one is public.
pub const LB_CALLER: &str = "lb";
/// What an ALB's health check asks for when the config does not say.
pub const DEFAULT_HEALTH_CHECK_PATH: &str = "/";
/// Who may connect when the config does not say: everyone (the load balancer is IPv4: the VPC has no IPv6 block).
pub const DEFAULT_ALLOW_CIDRS: [&str; 1] = ["0.0.0.0/0"];

/// A public service: the listener that serves it and how the load balancer finds it healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// The listener port: HTTPS with a certificate, plain HTTP without.
    pub port: u16,
    pub certificate_arn: Option<String>,
    /// Who may connect to the listener (normalised CIDRs, IPv4 and IPv6).
    pub allow_cidrs: Vec<String>,
    pub health_check_path: String,
    /// Port 80 answers a redirect to the HTTPS listener.
    pub redirect_http: bool,
    /// Routing when several public services share a listener (a path pattern, a host pattern, or both); a service
    /// with neither is the listener's default.
    pub path: Option<String>,
    pub host: Option<String>,
}

impl Public {
    pub fn https(&self) -> bool {
        self.certificate_arn.is_some()
    }

    /// Where the internet finds the service: its host (else the load balancer's DNS name), its listener port unless
    /// the scheme's own, and its path without the wildcard.
    pub fn url(&self, load_balancer_dns: Option<&str>) -> String {
        let (scheme, default_port) = if self.https() { ("https", 443) } else { ("http", 80) };
        let host = self.host.as_deref().or(load_balancer_dns).unwrap_or("<load balancer>");
        let port = if self.port == default_port { String::new() } else { format!(":{}", self.port) };
        let path = self.path.as_deref().map_or("/", |p| p.trim_end_matches('*'));
        format!("{scheme}://{host}{port}{path}")
    }
}

/// `[services.<name>.public]` as written.
#[derive(Debug, Clone)]
pub(crate) struct RawPublic {
    pub span: Range<usize>,
    pub port: Option<Located<i64>>,
    pub certificate_arn: Option<Located<String>>,
    pub allow_cidrs: Option<Vec<Located<String>>>,
    pub health_check_path: Option<Located<String>>,
    pub redirect_http: Option<Located<bool>>,
    pub path: Option<Located<String>>,
    pub host: Option<Located<String>>,
}

pub(crate) fn read(mut s: Section<'_, '_>, problems: &mut Problems) -> RawPublic {
    let raw = RawPublic {
        span: s.span(),
        port: s.integer("port", problems),
        certificate_arn: s.string("certificate_arn", problems),
        allow_cidrs: s.string_list("allow_cidrs", problems),
        health_check_path: s.string("health_check_path", problems),
        redirect_http: s.boolean("redirect_http", problems),
        path: s.string("path", problems),
        host: s.string("host", problems),
    };
    if raw.port.is_none() && !problems.0.iter().any(|p| p.field == s.field("port")) {
        problems.add(
            s.field("port"),
            s.span(),
            "missing required key `port` (the listener port: 443 with certificate_arn, or 80 for plain HTTP)",
        );
    }
    s.finish(
        &["port", "certificate_arn", "allow_cidrs", "health_check_path", "redirect_http", "path", "host"],
        problems,
    );
    raw
}

/// The model of a raw table; its semantic checks come later ([`check`]).
pub(crate) fn model(raw: &RawPublic) -> Public {
    let certificate_arn = raw.certificate_arn.as_ref().map(|c| c.value.clone());
    let cidrs = match &raw.allow_cidrs {
        Some(list) => {
            list.iter().map(|c| c.value.parse::<IpNet>().map_or(c.value.clone(), |n| n.to_string())).collect()
        }
        None => DEFAULT_ALLOW_CIDRS.iter().map(|c| c.to_string()).collect(),
    };
    let port = raw.port.as_ref().map_or(0, |p| p.value.clamp(0, u16::MAX as i64) as u16);
    Public {
        port,
        // Port 80 cannot redirect to itself: an HTTPS listener there has no redirect unless asked (and refused then).
        redirect_http: raw.redirect_http.as_ref().map_or(certificate_arn.is_some() && port != 80, |r| r.value),
        certificate_arn,
        allow_cidrs: cidrs,
        health_check_path: raw
            .health_check_path
            .as_ref()
            .map_or(DEFAULT_HEALTH_CHECK_PATH.to_string(), |p| p.value.clone()),
        path: raw.path.as_ref().map(|p| p.value.clone()),
        host: raw.host.as_ref().map(|h| h.value.clone()),
    }
}

/// Every public service's table, then what the services sharing a listener must agree on.
pub(crate) fn check(
    config: &Config,
    services: &BTreeMap<String, RawService>,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) {
    // Reserved whether or not a service is public: a rule's caller `lb` is the load balancer's group everywhere.
    if let Some(lb) = services.get(LB_CALLER) {
        problems.add(
            format!("services.{LB_CALLER}"),
            lb.name.span.clone(),
            format!("`{LB_CALLER}` is reserved: it names the load balancer in rules (`sg-rule/{LB_CALLER}->web`) and the reachability matrix; rename this service"),
        );
    }
    let public: Vec<(&RawService, &RawPublic)> =
        services.values().filter_map(|s| s.public.as_ref().map(|p| (s, p))).collect();
    if public.is_empty() {
        return;
    }
    if config.network.max_azs < 2 {
        problems.add(
            format!("services.{}.public", public[0].0.name.value),
            public[0].1.span.clone(),
            format!(
                "an application load balancer needs subnets in at least two AZs, and the stack has {}; set network.max_azs = 2 or more",
                config.network.max_azs
            ),
        );
    }
    let first = (format!("services.{}.public", public[0].0.name.value), public[0].1.span.clone());
    if config.stack.name.to_ascii_lowercase().starts_with("internal-") {
        problems.add(
            &first.0,
            first.1.clone(),
            format!("the load balancer is named after the stack, and AWS refuses a name starting with `internal-` (`{}`); choose another stack name", config.stack.name),
        );
    }
    if let Some(prefix) = smallest_public_subnet(config)
        && prefix > 27
    {
        problems.add(
            &first.0,
            first.1.clone(),
            format!("an application load balancer needs public subnets of at least /27 (8 free addresses), and these are /{prefix}; use a larger network.cidr, fewer AZs or larger public_subnet_cidrs"),
        );
    }
    for (svc, raw) in &public {
        check_one(config, svc, raw, problems, warnings);
    }
    check_listeners(config, &public, problems);
    // Every (listener port, CIDR) is one inbound rule of the load balancer's group: AWS's default quota is 60.
    let mut rules = std::collections::BTreeSet::new();
    for (svc, _) in &public {
        let p = public_of(config, &svc.name.value);
        let redirect = (p.redirect_http && p.https()).then_some(80);
        for port in std::iter::once(p.port).chain(redirect) {
            rules.extend(p.allow_cidrs.iter().map(|c| (port, c.clone())));
        }
    }
    if rules.len() > MAX_LB_INGRESS_RULES {
        problems.add(
            &first.0,
            first.1,
            format!("the load balancer's group would need {} inbound rules (listener ports x allow_cidrs), over AWS's default quota of {MAX_LB_INGRESS_RULES} a group; allow fewer, wider CIDRs", rules.len()),
        );
    }
}

/// AWS's default quota of inbound rules per security group.
const MAX_LB_INGRESS_RULES: usize = 60;

/// The prefix length of the smallest public subnet: explicit, or carved.
fn smallest_public_subnet(config: &Config) -> Option<u8> {
    match &config.network.public_subnet_cidrs {
        Some(list) => list.iter().map(|c| c.prefix_len()).max(),
        None => Some(config.network.cidr.prefix_len() + super::validate::carve_bits(config.network.max_azs)),
    }
}

fn check_one(config: &Config, svc: &RawService, raw: &RawPublic, problems: &mut Problems, warnings: &mut Vec<String>) {
    let name = &svc.name.value;
    let field = |key: &str| format!("services.{name}.public.{key}");
    let public = public_of(config, name);
    if let Some(port) = &raw.port {
        if !(1..=65535).contains(&port.value) {
            problems.add(field("port"), port.span.clone(), format!("{} is not a valid port; use 1-65535", port.value));
        } else if port.value == 443 && raw.certificate_arn.is_none() {
            problems.add(
                field("port"),
                port.span.clone(),
                "443 serves HTTPS and needs certificate_arn (an ACM certificate in the stack's region); for plain HTTP use port = 80",
            );
        }
    }
    if let Some(arn) = &raw.certificate_arn
        && let Err(why) = certificate_arn(&arn.value, config.stack.region.as_deref())
    {
        problems.add(field("certificate_arn"), arn.span.clone(), why);
    }
    if let Some(cidrs) = &raw.allow_cidrs {
        if cidrs.is_empty() {
            problems.add(
                field("allow_cidrs"),
                raw.span.clone(),
                "is empty, which would admit nobody; list who may connect (\"0.0.0.0/0\" for everyone) or drop the key",
            );
        }
        for cidr in cidrs {
            match cidr.value.parse::<IpNet>() {
                Err(_) => problems.add(
                    field("allow_cidrs"),
                    cidr.span.clone(),
                    format!("`{}` is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32", cidr.value),
                ),
                Ok(net) if net.trunc() != net => problems.add(
                    field("allow_cidrs"),
                    cidr.span.clone(),
                    format!("`{}` has host bits set; did you mean {}?", cidr.value, net.trunc()),
                ),
                Ok(_) => {}
            }
        }
        if cidrs.iter().any(|c| matches!(c.value.parse::<IpNet>(), Ok(IpNet::V6(_)))) {
            warnings.push(format!(
                "services.{name}.public.allow_cidrs: the load balancer is IPv4-only (the VPC has no IPv6 block), so its IPv6 CIDRs admit no client; they are kept in its group for when it is"
            ));
        }
    }
    if let Some(path) = &raw.health_check_path
        && (!path.value.starts_with('/') || path.value.len() > 1024 || path.value.contains(char::is_whitespace))
    {
        problems.add(
            field("health_check_path"),
            path.span.clone(),
            format!("`{}` is not a health check path: start with `/`, at most 1024 characters, no spaces", path.value),
        );
    }
    if let Some(redirect) = raw.redirect_http.as_ref().filter(|r| r.value) {
        if raw.certificate_arn.is_none() {
            problems.add(
                field("redirect_http"),
                redirect.span.clone(),
                "redirects port 80 to HTTPS, which needs certificate_arn; drop it for a plain HTTP listener",
            );
        } else if public.port == 80 {
            problems.add(
                field("redirect_http"),
                redirect.span.clone(),
                "port 80 is this service's HTTPS listener, so it cannot also answer a redirect; set redirect_http = false or use port 443",
            );
        }
    }
    if let Some(path) = &raw.path
        && let Err(why) = path_pattern(&path.value)
    {
        problems.add(field("path"), path.span.clone(), format!("`{}` is not a path pattern: {why}", path.value));
    }
    if let Some(host) = &raw.host
        && let Err(why) = host_pattern(&host.value)
    {
        problems.add(field("host"), host.span.clone(), format!("`{}` is not a host pattern: {why}", host.value));
    }
}

/// Services on one listener port share its protocol, certificate, allowed CIDRs and redirect, and need distinct
/// routes (at most one serves what no rule matches); a port is either a service's listener or port 80's redirect.
fn check_listeners(config: &Config, public: &[(&RawService, &RawPublic)], problems: &mut Problems) {
    let mut by_port: BTreeMap<u16, Vec<(&str, &Public, &RawPublic)>> = BTreeMap::new();
    for (svc, raw) in public {
        let p = public_of(config, &svc.name.value);
        by_port.entry(p.port).or_default().push((&svc.name.value, p, raw));
    }
    for (port, services) in &by_port {
        let (first, first_public, _) = services[0];
        for (name, p, raw) in &services[1..] {
            let span = raw.port.as_ref().map_or(raw.span.clone(), |p| p.span.clone());
            let field = format!("services.{name}.public");
            let differs = |what: &str| {
                format!(
                    "{name} and {first} share listener port {port} but differ in {what}; give both the same (one listener serves both)"
                )
            };
            if p.certificate_arn != first_public.certificate_arn {
                problems.add(
                    &field,
                    span.clone(),
                    differs("certificate_arn (an ACM certificate may name several hosts)"),
                );
            }
            if p.allow_cidrs != first_public.allow_cidrs {
                problems.add(&field, span.clone(), differs("allow_cidrs"));
            }
            if p.redirect_http != first_public.redirect_http {
                problems.add(&field, span.clone(), differs("redirect_http"));
            }
        }
        let defaults: Vec<&str> =
            services.iter().filter(|(_, p, _)| p.path.is_none() && p.host.is_none()).map(|(n, _, _)| *n).collect();
        if defaults.len() > 1 {
            let (_, _, raw) = services.iter().find(|(n, _, _)| *n == defaults[1]).expect("listed");
            problems.add(
                format!("services.{}.public", defaults[1]),
                raw.span.clone(),
                format!(
                    "{} share listener port {port} and none of them has `path` or `host`; give all but one a route (path = \"/api/*\" or host = \"api.example.com\")",
                    defaults.join(", ")
                ),
            );
        }
        let mut routes: BTreeMap<(Option<&str>, Option<&str>), &str> = BTreeMap::new();
        for (name, p, raw) in services {
            if p.path.is_none() && p.host.is_none() {
                continue;
            }
            if let Some(other) = routes.insert((p.host.as_deref(), p.path.as_deref()), name) {
                problems.add(
                    format!("services.{name}.public"),
                    raw.span.clone(),
                    format!("{name} and {other} have the same route on listener port {port}; the load balancer could send a request to only one of them"),
                );
            }
        }
    }
    let redirected: Vec<(&str, u16)> = public
        .iter()
        .filter_map(|(svc, _)| {
            let p = config.services[&svc.name.value].public.as_ref()?;
            (p.redirect_http && p.https()).then_some((svc.name.value.as_str(), p.port))
        })
        .collect();
    if let Some((other, _)) = redirected.iter().find(|(_, port)| *port != redirected[0].1) {
        let raw = public.iter().find(|(s, _)| s.name.value == *other).map(|(_, r)| *r).expect("listed");
        let span = raw.redirect_http.as_ref().map_or(raw.span.clone(), |r| r.span.clone());
        problems.add(
            format!("services.{other}.public.redirect_http"),
            span,
            format!(
                "port 80 can redirect to one HTTPS port, and {} redirects it to {}; set redirect_http = false on all but one listener port",
                redirected[0].0, redirected[0].1
            ),
        );
    }
    if by_port.contains_key(&80) {
        for (svc, raw) in public {
            let p = public_of(config, &svc.name.value);
            if p.redirect_http && p.port != 80 {
                let span = raw.redirect_http.as_ref().map_or(raw.span.clone(), |r| r.span.clone());
                problems.add(
                    format!("services.{}.public.redirect_http", svc.name.value),
                    span,
                    "port 80 is another public service's listener, so it cannot answer this redirect; set redirect_http = false",
                );
            }
        }
    }
}

/// The model of a service whose raw table has a `public` one (read together, so always there).
fn public_of<'a>(config: &'a Config, service: &str) -> &'a Public {
    config.services[service].public.as_ref().expect("read with the raw table")
}

/// `arn:<partition>:acm:<region>:<account>:certificate/<id>`, in the stack's region (a load balancer uses
/// certificates of its own region only).
fn certificate_arn(arn: &str, region: Option<&str>) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "acm"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].strip_prefix("certificate/").is_some_and(|id| !id.is_empty());
    if !ok {
        return Err(format!(
            "`{arn}` is not an ACM certificate ARN such as arn:aws:acm:us-east-1:123456789012:certificate/1234abcd-12ab-34cd-56ef-1234567890ab"
        ));
    }
    if let Some(region) = region
        && (parts[3] != region || parts[1] != super::secrets::partition_of(region))
    {
        return Err(format!(
            "`{arn}` is in {}, but the stack runs in {region}: a load balancer uses certificates of its own region (request or import one there with ACM)",
            parts[3]
        ));
    }
    Ok(())
}

/// An ALB path pattern: starts with `/`, at most 128 characters, `*` and `?` as wildcards, no spaces.
fn path_pattern(pattern: &str) -> Result<(), String> {
    if !pattern.starts_with('/') {
        return Err("start with `/`, e.g. \"/api/*\"".into());
    }
    if pattern.len() > 128 {
        return Err("use at most 128 characters".into());
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("no spaces".into());
    }
    Ok(())
}

/// An ALB host pattern: letters, digits, `-`, `.`, and `*` / `?` wildcards, at most 128 characters.
fn host_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > 128 {
        return Err("use 1-128 characters".into());
    }
    if !pattern.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '?')) {
        return Err("use letters, digits, hyphens, dots and the wildcards * and ?, e.g. \"api.example.com\"".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_arns_are_checked_for_shape_and_region() {
        let good = "arn:aws:acm:us-east-1:123456789012:certificate/abc";
        assert!(certificate_arn(good, Some("us-east-1")).is_ok());
        assert!(certificate_arn(good, Some("eu-west-1")).unwrap_err().contains("its own region"));
        assert!(certificate_arn("arn:aws:iam::123456789012:server-certificate/x", None).is_err());
    }

    #[test]
    fn urls_name_the_host_port_and_path_a_client_uses() {
        let p = Public {
            port: 443,
            certificate_arn: Some("arn:aws:acm:us-east-1:123456789012:certificate/c".into()),
            allow_cidrs: vec!["0.0.0.0/0".into()],
            health_check_path: "/".into(),
            redirect_http: true,
            path: Some("/api/*".into()),
            host: None,
        };
        assert_eq!(p.url(Some("shop-1.elb.amazonaws.com")), "https://shop-1.elb.amazonaws.com/api/");
        let plain = Public { port: 8080, certificate_arn: None, path: None, host: Some("x.example.com".into()), ..p };
        assert_eq!(plain.url(None), "http://x.example.com:8080/");
    }

    #[test]
    fn route_patterns() {
        assert!(path_pattern("/api/*").is_ok());
        assert!(path_pattern("api/*").is_err());
        assert!(host_pattern("*.example.com").is_ok());
        assert!(host_pattern("example.com/x").is_err());
    }
}
