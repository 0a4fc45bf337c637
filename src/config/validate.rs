//! Semantic rules: the ones AWS would enforce later, checked before the first API call.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use ipnet::Ipv4Net;

use super::reader::{Located, Problems};
use super::{Config, Egress, RawService};
use crate::model::peer_env_name;

/// Where the checked values stand in the file.
pub(crate) struct Spans {
    pub stack_name: Option<Range<usize>>,
    pub region: Option<Range<usize>>,
    pub network: Range<usize>,
    /// The CIDR and AZ count were read; subnet checks depend on both.
    pub network_ok: bool,
    pub max_azs: Option<Range<usize>>,
    pub azs: Option<Vec<Range<usize>>>,
    pub subnet_cidrs: Option<Vec<Range<usize>>>,
    pub namespace_name: Option<Range<usize>>,
    pub execution_role_arn: Option<Range<usize>>,
    pub kms_key_arn: Option<Range<usize>>,
    pub egress: EgressSpans,
    pub services: BTreeMap<String, RawService>,
}

/// Where the egress keys stand, for the checks that tie them together.
#[derive(Debug, Clone, Default)]
pub(crate) struct EgressSpans {
    pub egress: Option<Range<usize>>,
    pub nat_gateways: Option<Range<usize>>,
    pub public_subnet_cidrs: Option<Vec<Range<usize>>>,
}

/// Smallest and largest subnet AWS accepts for a VPC or subnet.
const MIN_PREFIX: u8 = 16;
const MAX_PREFIX: u8 = 28;
const MAX_DESIRED_COUNT: i64 = 5000;

/// Reports every problem; returns the warnings (allowed, but probably a mistake).
pub(crate) fn check(config: &Config, spans: &Spans, problems: &mut Problems) -> Vec<String> {
    let mut warnings = Vec::new();
    check_stack(config, spans, problems);
    if spans.network_ok {
        check_network(config, spans, problems);
    }
    if let (Some(span), Err(why)) = (&spans.namespace_name, dns_name(&config.namespace.name)) {
        problems.add("namespace.name", span.clone(), format!("`{}` is not a DNS name: {why}", config.namespace.name));
    }
    for raw in spans.services.values() {
        check_service(config, raw, problems);
        check_secrets(config, raw, problems, &mut warnings);
        check_buckets(config, raw, problems, &mut warnings);
    }
    super::public::check(config, &spans.services, problems, &mut warnings);
    warnings
}

fn check_stack(config: &Config, spans: &Spans, problems: &mut Problems) {
    let name = &config.stack.name;
    let Some(name_span) = &spans.stack_name else { return check_region(config, spans, problems) };
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.ends_with('-');
    if !ok {
        problems.add(
            "stack.name",
            name_span.clone(),
            format!("`{name}` is not a valid stack name: use 1-64 letters, digits and hyphens, starting with a letter and not ending with a hyphen (it names the ECS cluster, groups and task families)"),
        );
    }
    if ok && name.to_ascii_lowercase().starts_with("sg-") {
        problems.add(
            "stack.name",
            name_span.clone(),
            format!("`{name}` starts with `sg-`, which AWS forbids at the start of a security group name (the groups are named `<stack>-<service>`); choose another name"),
        );
    }
    check_region(config, spans, problems);
    if let (Some(arn), Some(span)) = (&config.stack.execution_role_arn, &spans.execution_role_arn) {
        check_role_arn("stack.execution_role_arn", arn, span, problems);
    }
    if let (Some(arn), Some(span)) = (&config.stack.kms_key_arn, &spans.kms_key_arn) {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == "kms"
            && parts[4].len() == 12
            && parts[5].strip_prefix("key/").is_some_and(|k| !k.is_empty());
        if !ok {
            problems.add(
                "stack.kms_key_arn",
                span.clone(),
                format!("`{arn}` is not a KMS key ARN such as arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
            );
        } else if let Some(region) = &config.stack.region
            && (parts[3] != region || parts[1] != super::secrets::partition_of(region))
        {
            problems.add("stack.kms_key_arn", span.clone(), format!("`{arn}` is not in the stack's region {region}"));
        }
    }
}

/// Each secret: a well-formed ARN in the stack's region and partition, under a name no other variable takes. A
/// plain environment value under a secret-looking name is a warning naming the `secrets` form.
fn check_secrets(config: &Config, raw: &RawService, problems: &mut Problems, warnings: &mut Vec<String>) {
    let name = &raw.name.value;
    let injected: BTreeSet<String> = raw
        .calls
        .iter()
        .map(|c| peer_env_name(&c.value))
        .chain((raw.calls.len() == 1).then(|| "SERVICE_URL".to_string()))
        .collect();
    for (key, arn) in &raw.secrets {
        let field = format!("services.{name}.secrets");
        check_env_key(&field, key, &injected, problems);
        if raw.environment.iter().any(|(k, _)| k.value == key.value) {
            problems.add(
                format!("{field}.{}", key.value),
                key.span.clone(),
                format!("`{}` is set in both `environment` and `secrets`; keep it in `secrets` only", key.value),
            );
        }
        match super::secrets::SecretArn::parse(&arn.value) {
            Err(why) => problems.add(format!("{field}.{}", key.value), arn.span.clone(), why),
            Ok(secret) => {
                if let Some(region) = &config.stack.region {
                    let partition = super::secrets::partition_of(region);
                    if secret.region != *region || secret.partition != partition {
                        problems.add(
                            format!("{field}.{}", key.value),
                            arn.span.clone(),
                            format!(
                                "`{}` is in {}:{}, but the stack runs in {partition}:{region}; the tasks read secrets from their own region",
                                arn.value, secret.partition, secret.region
                            ),
                        );
                    }
                }
            }
        }
    }
    if !raw.secrets.is_empty() && config.stack.execution_role_arn.is_some() {
        warnings.push(format!(
            "services.{name}.secrets: the execution role is stack.execution_role_arn, which secep does not change; it must allow secretsmanager:GetSecretValue / ssm:GetParameters on these ARNs itself"
        ));
    }
    for (key, _) in &raw.environment {
        if super::secrets::looks_secret(&key.value) {
            warnings.push(format!(
                "services.{name}.environment.{0} looks like a secret, but a plain environment value is stored in clear in the task definition; reference it instead: secrets = {{ {0} = \"arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME\" }}",
                key.value
            ));
        }
    }
}

fn check_region(config: &Config, spans: &Spans, problems: &mut Problems) {
    if let (Some(region), Some(span)) = (&config.stack.region, &spans.region) {
        let parts: Vec<&str> = region.split('-').collect();
        let ok = parts.len() >= 3
            && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
            && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
            && !parts[parts.len() - 1].is_empty();
        if !ok {
            problems.add(
                "stack.region",
                span.clone(),
                format!("`{region}` is not an AWS region name such as `us-east-1`"),
            );
        } else if let Some(why) = super::secrets::unsupported_partition(region) {
            problems.add("stack.region", span.clone(), why.replace("\n  hint:", ";"));
        }
    }
}

fn check_network(config: &Config, spans: &Spans, problems: &mut Problems) {
    let net = &config.network;
    let vpc = net.cidr;
    if let (Some(azs), Some(az_spans)) = (&net.azs, &spans.azs) {
        if let Some(span) = &spans.max_azs
            && azs.len() != net.max_azs
        {
            problems.add(
                "network.azs",
                span.clone(),
                format!(
                    "lists {} zones but max_azs is {}; give one zone per AZ or drop one of the two keys",
                    azs.len(),
                    net.max_azs
                ),
            );
        }
        if azs.is_empty() {
            problems.add(
                "network.azs",
                spans.network.clone(),
                "is empty; list at least one zone, or drop the key to use the region's first max_azs zones",
            );
        }
        let mut seen = BTreeSet::new();
        for (az, span) in azs.iter().zip(az_spans) {
            if !seen.insert(az) {
                problems.add("network.azs", span.clone(), format!("`{az}` is listed twice"));
            }
        }
    }
    if let (Some(subnets), Some(subnet_spans)) = (&net.subnet_cidrs, &spans.subnet_cidrs) {
        check_subnet_list("network.subnet_cidrs", subnets, subnet_spans, &[], config, spans, problems);
    } else {
        let bits = carve_bits(net.max_azs);
        if vpc.prefix_len() + bits > MAX_PREFIX {
            problems.add("network.cidr", spans.network.clone(), format!("{vpc} is too small to carve {} private subnets of at least /{MAX_PREFIX}; use a larger CIDR or fewer AZs", net.max_azs));
        }
    }
    check_egress(config, spans, problems);
}

/// The egress keys agree with each other: NAT settings only with `egress = "nat"`, and public subnets it can place.
fn check_egress(config: &Config, spans: &Spans, problems: &mut Problems) {
    let net = &config.network;
    let e = &spans.egress;
    if net.egress != Egress::Nat {
        let mode = net.egress.as_str();
        if let Some(span) = &e.nat_gateways {
            problems.add(
                "network.nat_gateways",
                span.clone(),
                format!("only applies with egress = \"nat\" (egress is \"{mode}\"); drop it or set egress = \"nat\""),
            );
        }
        if let Some(spans) = e.public_subnet_cidrs.as_ref().filter(|_| !config.has_public_subnets()) {
            let span = spans.first().cloned().unwrap_or_else(|| e.egress.clone().unwrap_or(0..0));
            problems.add(
                "network.public_subnet_cidrs",
                span,
                format!(
                    "only applies with egress = \"nat\" or a public service (egress is \"{mode}\" and no service has a [services.<name>.public] table): the stack has no public subnets"
                ),
            );
        }
        if !config.has_public_subnets() {
            return;
        }
    }
    match (&net.public_subnet_cidrs, &e.public_subnet_cidrs) {
        (Some(public), Some(public_spans)) => {
            let private: Vec<Ipv4Net> = match &net.subnet_cidrs {
                Some(p) => p.clone(),
                None => (0..net.max_azs).filter_map(|i| carved_subnet(net.cidr, net.max_azs, i)).collect(),
            };
            check_subnet_list("network.public_subnet_cidrs", public, public_spans, &private, config, spans, problems);
        }
        _ if net.subnet_cidrs.is_some() => problems.add(
            "network.public_subnet_cidrs",
            e.egress.clone().unwrap_or(spans.network.clone()),
            "the NAT gateways and the load balancer need one public subnet per AZ: with explicit subnet_cidrs, list them in public_subnet_cidrs too",
        ),
        _ => {}
    }
}

/// The i-th carved subnet of a VPC: private ones first, then (for NAT) the public ones.
pub fn carved_subnet(vpc: Ipv4Net, max_azs: usize, index: usize) -> Option<Ipv4Net> {
    vpc.subnets(vpc.prefix_len() + carve_bits(max_azs)).ok()?.nth(index)
}

/// One subnet CIDR per AZ, each inside the VPC, none overlapping another or any of `others`.
fn check_subnet_list(
    field: &str,
    subnets: &[Ipv4Net],
    subnet_spans: &[Range<usize>],
    others: &[Ipv4Net],
    config: &Config,
    spans: &Spans,
    problems: &mut Problems,
) {
    let (vpc, max_azs) = (config.network.cidr, config.network.max_azs);
    if subnets.len() != max_azs {
        problems.add(
            field,
            spans.network.clone(),
            format!("lists {} CIDRs but there are {max_azs} AZs (max_azs); give exactly one per AZ", subnets.len()),
        );
    }
    for (i, (subnet, span)) in subnets.iter().zip(subnet_spans).enumerate() {
        if !vpc.contains(subnet) {
            problems.add(field, span.clone(), format!("{subnet} is not inside the VPC CIDR {vpc}"));
        }
        let overlaps = |o: &&Ipv4Net| o.contains(subnet) || subnet.contains(*o);
        if let Some(other) = subnets[..i].iter().chain(others).find(overlaps) {
            problems.add(field, span.clone(), format!("{subnet} overlaps {other}"));
        }
    }
}

/// `arn:aws:iam::123456789012:role/name` (any partition, any path).
fn check_role_arn(field: &str, arn: &str, span: &Range<usize>, problems: &mut Problems) {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].strip_prefix("role/").is_some_and(|name| !name.is_empty());
    if !ok {
        problems.add(
            field,
            span.clone(),
            format!("`{arn}` is not an IAM role ARN such as arn:aws:iam::123456789012:role/my-role"),
        );
    }
}

/// `s3_buckets`: bucket names, used with a task role (the endpoint policy admits that role to them), over a way
/// out that reaches S3.
fn check_buckets(config: &Config, raw: &RawService, problems: &mut Problems, warnings: &mut Vec<String>) {
    let Some(first) = raw.s3_buckets.first() else { return };
    let field = format!("services.{}.s3_buckets", raw.name.value);
    for bucket in &raw.s3_buckets {
        if let Err(why) = bucket_name(&bucket.value) {
            problems.add(&field, bucket.span.clone(), format!("`{}` is not an S3 bucket name: {why}", bucket.value));
        }
    }
    match config.network.egress {
        Egress::None => problems.add(
            &field,
            first.span.clone(),
            "with egress = \"none\" the tasks cannot reach S3; use egress = \"endpoints\" (the S3 endpoint admits the task role to these buckets only) or remove s3_buckets",
        ),
        Egress::Nat => warnings.push(format!(
            "{field}: with egress = \"nat\" the tasks reach S3 through the NAT gateway, which no endpoint policy narrows; s3_buckets takes effect with egress = \"endpoints\""
        )),
        Egress::Endpoints => {}
    }
    if raw.task_role_arn.is_none() {
        problems.add(
            &field,
            first.span.clone(),
            format!("the tasks need a task role to use S3 buckets (the S3 endpoint admits that role only); set services.{}.task_role_arn", raw.name.value),
        );
    }
}

/// S3's rules for a bucket name (general purpose buckets); an ARN or an `s3://` URL is refused with the name form.
fn bucket_name(name: &str) -> Result<(), String> {
    if name.starts_with("arn:") || name.starts_with("s3://") {
        return Err("give the bucket's name alone, without `arn:…:::` or `s3://`".into());
    }
    if !(3..=63).contains(&name.len()) {
        return Err("use 3-63 characters".into());
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-') {
        return Err("use lowercase letters, digits, dots and hyphens".into());
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge(name.chars().next()) || !edge(name.chars().last()) || name.contains("..") {
        return Err("begin and end with a letter or digit, with no two dots in a row".into());
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("a bucket name cannot look like an IP address".into());
    }
    Ok(())
}

/// Whether a task in a private subnet without NAT can pull the image: only from private ECR (a pull-through cache
/// is private ECR too), which the ECR endpoints reach. Docker Hub (also the bare `nginx:1`), ECR Public, GHCR and
/// the rest have no VPC endpoint (aws/containers-roadmap#1160).
pub fn pullable_inside_vpc(image: &str) -> bool {
    let Some((host, _)) = image.split_once('/') else { return false };
    let mut labels = host.split('.');
    let account = labels.next().unwrap_or_default();
    account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && labels.next() == Some("dkr")
        && labels.next().is_some_and(|l| l == "ecr" || l == "ecr-fips")
        && labels.next().is_some_and(|region| !region.is_empty())
        && matches!(labels.collect::<Vec<_>>().join(".").as_str(), "amazonaws.com" | "amazonaws.com.cn")
}

/// Prefix bits added to the VPC's to carve subnets: room for one private and (later) one public subnet per AZ.
pub fn carve_bits(max_azs: usize) -> u8 {
    let slots = (2 * max_azs).next_power_of_two();
    slots.trailing_zeros() as u8
}

fn check_service(config: &Config, raw: &RawService, problems: &mut Problems) {
    let name = &raw.name.value;
    let field = |key: &str| format!("services.{name}.{key}");
    if let Some(arn) = &raw.task_role_arn {
        check_role_arn(&field("task_role_arn"), &arn.value, &arn.span, problems);
    }
    let ok_name = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok_name {
        problems.add(
            format!("services.{name}"),
            raw.name.span.clone(),
            format!("`{name}` is not a valid service name: use 1-63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen (it becomes a DNS label)"),
        );
    }
    if let Some(image) =
        raw.image.as_ref().filter(|i| i.value.trim().is_empty() || i.value.contains(char::is_whitespace))
    {
        problems.add(field("image"), image.span.clone(), "image must be a non-empty image reference without spaces");
    }
    if let Some(image) = &raw.image
        && config.network.egress != Egress::Nat
        && !image.value.trim().is_empty()
        && !pullable_inside_vpc(&image.value)
    {
        let mode = config.network.egress.as_str();
        problems.add(
            field("image"),
            image.span.clone(),
            format!(
                "`{}` is on a public registry, which tasks cannot reach with egress = \"{mode}\" (only ECR has VPC endpoints); use a private ECR image (ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG), an ECR pull-through cache of it, or egress = \"nat\"",
                image.value
            ),
        );
    }
    if let Some(port) = raw.port.as_ref().filter(|p| !(1..=65535).contains(&p.value)) {
        problems.add(field("port"), port.span.clone(), format!("{} is not a valid port; use 1-65535", port.value));
    }
    let cpu = raw.cpu.as_ref().map(|c| c.value).unwrap_or(super::DEFAULT_CPU as i64);
    let memory = raw.memory.as_ref().map(|m| m.value).unwrap_or(super::DEFAULT_MEMORY as i64);
    match fargate_memory_options(cpu) {
        None => {
            let span = raw.cpu.as_ref().map_or(raw.span.clone(), |c| c.span.clone());
            problems.add(
                field("cpu"),
                span,
                format!("{cpu} is not a Fargate CPU size; use 256, 512, 1024, 2048, 4096, 8192 or 16384"),
            );
        }
        Some(options) if !options.contains(&memory) => {
            let span = raw.memory.as_ref().map_or(raw.span.clone(), |m| m.span.clone());
            problems.add(
                field("memory"),
                span,
                format!("Fargate does not accept {memory} MiB with cpu = {cpu}; use {}", describe_options(&options)),
            );
        }
        Some(_) => {}
    }
    if let Some(count) = &raw.desired_count
        && !(0..=MAX_DESIRED_COUNT).contains(&count.value)
    {
        problems.add(
            field("desired_count"),
            count.span.clone(),
            format!("{} is out of range; use 0-{MAX_DESIRED_COUNT}", count.value),
        );
    }
    let mut seen = BTreeSet::new();
    for callee in &raw.calls {
        if callee.value == *name {
            problems.add(
                field("calls"),
                callee.span.clone(),
                format!(
                    "`{name}` calls itself; a service reaches itself without a network rule, remove it from `calls`"
                ),
            );
        } else if !config.services.contains_key(&callee.value) {
            let known: Vec<&str> = config.services.keys().map(String::as_str).collect();
            problems.add(
                field("calls"),
                callee.span.clone(),
                format!("unknown service `{}`; declared services: {}", callee.value, known.join(", ")),
            );
        }
        if !seen.insert(&callee.value) {
            problems.add(field("calls"), callee.span.clone(), format!("`{}` is listed twice", callee.value));
        }
    }
    let injected: BTreeSet<String> = raw
        .calls
        .iter()
        .map(|c| peer_env_name(&c.value))
        .chain((raw.calls.len() == 1).then(|| "SERVICE_URL".to_string()))
        .collect();
    for (key, _) in &raw.environment {
        check_env_key(&field("environment"), key, &injected, problems);
    }
}

fn check_env_key(field: &str, key: &Located<String>, injected: &BTreeSet<String>, problems: &mut Problems) {
    let k = &key.value;
    let valid = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        problems.add(
            format!("{field}.{k}"),
            key.span.clone(),
            format!("`{k}` is not a valid environment variable name; use letters, digits and underscores"),
        );
    } else if injected.contains(k) {
        problems.add(
            format!("{field}.{k}"),
            key.span.clone(),
            format!("`{k}` is set by secep to a peer's address (from `calls`); choose another name"),
        );
    }
}

/// Memory sizes (MiB) Fargate accepts for a CPU size, or None if the CPU size itself is invalid.
/// Source: the "Task CPU and memory" table of the Amazon ECS developer guide.
pub fn fargate_memory_options(cpu: i64) -> Option<Vec<i64>> {
    let gib = |n: i64| n * 1024;
    let range = |lo: i64, hi: i64, step: i64| (lo..=hi).step_by(step as usize).collect::<Vec<_>>();
    match cpu {
        256 => Some(vec![512, 1024, 2048]),
        512 => Some(range(gib(1), gib(4), gib(1))),
        1024 => Some(range(gib(2), gib(8), gib(1))),
        2048 => Some(range(gib(4), gib(16), gib(1))),
        4096 => Some(range(gib(8), gib(30), gib(1))),
        8192 => Some(range(gib(16), gib(60), gib(4))),
        16384 => Some(range(gib(32), gib(120), gib(8))),
        _ => None,
    }
}

fn describe_options(options: &[i64]) -> String {
    if options.len() <= 3 {
        options.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
    } else {
        format!("{} to {} in steps of {}", options[0], options[options.len() - 1], options[1] - options[0])
    }
}

pub(crate) fn parse_cidr(field: &str, value: &Located<String>, problems: &mut Problems) -> Option<Ipv4Net> {
    let text = value.value.trim();
    let net: Ipv4Net = match text.parse() {
        Ok(net) => net,
        Err(_) => {
            problems.add(field, value.span.clone(), format!("`{text}` is not an IPv4 CIDR such as 10.0.0.0/16"));
            return None;
        }
    };
    if net.network() != net.addr() {
        problems.add(field, value.span.clone(), format!("`{text}` has host bits set; did you mean {}?", net.trunc()));
        return None;
    }
    if !(MIN_PREFIX..=MAX_PREFIX).contains(&net.prefix_len()) {
        problems.add(
            field,
            value.span.clone(),
            format!("`{text}`: AWS accepts prefixes from /{MIN_PREFIX} to /{MAX_PREFIX}"),
        );
        return None;
    }
    Some(net)
}

pub(crate) fn ttl(field: &str, value: &Located<i64>, problems: &mut Problems) -> Option<u32> {
    if (0..=i64::from(i32::MAX)).contains(&value.value) {
        Some(value.value as u32)
    } else {
        problems.add(
            field,
            value.span.clone(),
            format!("{} is not a valid DNS TTL; use 0-2147483647 seconds", value.value),
        );
        None
    }
}

/// Checks a DNS domain name (RFC 1035 labels), returning why it is not one.
pub fn dns_name(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (two dots in a row?)".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("label `{label}` may only contain letters, digits and hyphens"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with a hyphen"));
        }
    }
    Ok(())
}
