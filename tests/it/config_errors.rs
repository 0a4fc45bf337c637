//! Bad configs: each is refused with a message naming the file, line and field, exit code 1, and no AWS call at all.

use std::net::TcpListener;

use crate::harness::{Project, Run};

const GOOD: &str = r#"[stack]
name = "{stack}"

[network]
cidr = "10.0.0.0/16"
max_azs = 2

[namespace]
name = "{namespace}"

[services.web]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web-image"
port = 8080
calls = ["api"]

[services.api]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api-image"
port = 9090
"#;

/// Runs `secep up` on the config against an endpoint that records whether anything connected to it.
fn up_without_aws(config: &str) -> (Run, bool) {
    let p = Project::with_config("bad", config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let run = p.secep_at(&endpoint, &["up"]);
    let contacted = listener.accept().is_ok();
    (run, contacted)
}

#[test]
fn each_bad_config_is_refused_with_its_location_and_no_aws_call() {
    // (what is wrong, replace this, with this, expected message fragment)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "unknown key",
            "max_azs = 2",
            "max_azs = 2\ncolour = \"blue\"",
            "secep.toml:7:1: network.colour: unknown key `colour`",
        ),
        ("bad CIDR", "10.0.0.0/16", "10.0.0.0/33", "secep.toml:5:8: network.cidr: `10.0.0.0/33` is not an IPv4 CIDR"),
        ("host bits", "10.0.0.0/16", "10.0.3.0/16", "did you mean 10.0.0.0/16?"),
        ("CIDR too large", "10.0.0.0/16", "10.0.0.0/8", "AWS accepts prefixes from /16 to /28"),
        ("max_azs 0", "max_azs = 2", "max_azs = 0", "secep.toml:6:11: network.max_azs: must be at least 1, got 0"),
        (
            "stack name",
            "name = \"{stack}\"",
            "name = \"my_stack!\"",
            "stack.name: `my_stack!` is not a valid stack name",
        ),
        ("service name", "[services.api]", "[services.Api_Gw]", "`Api_Gw` is not a valid service name"),
        (
            "unknown callee",
            "calls = [\"api\"]",
            "calls = [\"billing\"]",
            "services.web.calls: unknown service `billing`; declared services: api, web",
        ),
        ("self call", "calls = [\"api\"]", "calls = [\"api\", \"web\"]", "`web` calls itself"),
        ("duplicate callee", "calls = [\"api\"]", "calls = [\"api\", \"api\"]", "`api` is listed twice"),
        ("port 0", "port = 9090", "port = 0", "services.api.port: 0 is not a valid port; use 1-65535"),
        ("port too big", "port = 9090", "port = 70000", "70000 is not a valid port"),
        ("port as text", "port = 9090", "port = \"9090\"", "services.api.port: expected an integer, found string"),
        ("fargate cpu", "port = 9090", "port = 9090\ncpu = 300", "300 is not a Fargate CPU size"),
        (
            "fargate memory",
            "port = 9090",
            "port = 9090\ncpu = 256\nmemory = 4096",
            "Fargate does not accept 4096 MiB with cpu = 256; use 512, 1024, 2048",
        ),
        (
            "namespace not DNS",
            "name = \"{namespace}\"",
            "name = \"bad..local\"",
            "namespace.name: `bad..local` is not a DNS name",
        ),
        ("namespace label", "name = \"{namespace}\"", "name = \"-bad.local\"", "starts or ends with a hyphen"),
        (
            "missing image",
            "image = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/api-image\"\n",
            "",
            "services.api.image: missing required key `image`",
        ),
        ("missing network", "[network]\ncidr = \"10.0.0.0/16\"\nmax_azs = 2\n", "", "missing [network] table"),
        (
            "env collides with peer URL",
            "calls = [\"api\"]",
            "calls = [\"api\"]\nenvironment = { API_URL = \"x\" }",
            "`API_URL` is set by secep to a peer's address",
        ),
        (
            "env name",
            "calls = [\"api\"]",
            "calls = [\"api\"]\nenvironment = { \"LOG-LEVEL\" = \"x\" }",
            "`LOG-LEVEL` is not a valid environment variable name",
        ),
        (
            "subnet outside VPC",
            "max_azs = 2",
            "max_azs = 2\nsubnet_cidrs = [\"10.0.0.0/24\", \"10.1.0.0/24\"]",
            "10.1.0.0/24 is not inside the VPC CIDR 10.0.0.0/16",
        ),
        (
            "subnets overlap",
            "max_azs = 2",
            "max_azs = 2\nsubnet_cidrs = [\"10.0.0.0/24\", \"10.0.0.0/25\"]",
            "10.0.0.0/25 overlaps 10.0.0.0/24",
        ),
        (
            "region",
            "name = \"{stack}\"",
            "name = \"{stack}\"\nregion = \"useast1\"",
            "`useast1` is not an AWS region name",
        ),
        ("desired count", "port = 9090", "port = 9090\ndesired_count = -1", "-1 is out of range"),
        ("TTL", "port = 9090", "port = 9090\ndns_ttl = -5", "-5 is not a valid DNS TTL"),
        ("TOML syntax", "max_azs = 2", "max_azs = = 2", "invalid TOML"),
        ("empty AZ list", "max_azs = 2", "azs = []", "network.azs: is empty"),
        (
            "stack not a table",
            "[stack]\nname = \"{stack}\"\n",
            "stack = \"x\"\n",
            "stack: expected a table, found string",
        ),
        ("AZs vs max_azs", "max_azs = 2", "max_azs = 2\nazs = [\"us-east-1a\"]", "lists 1 zones but max_azs is 2"),
        (
            "callee not declared",
            "[services.api]\nimage = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/api-image\"\nport = 9090\n",
            "",
            "unknown service `api`",
        ),
        (
            "egress mode",
            "max_azs = 2",
            "max_azs = 2\negress = \"internet\"",
            "network.egress: `internet` is not an egress mode",
        ),
        (
            "NAT setting without NAT",
            "max_azs = 2",
            "max_azs = 2\nnat_gateways = \"per_az\"",
            "network.nat_gateways: only applies with egress = \"nat\" (egress is \"endpoints\")",
        ),
        (
            "NAT gateway count",
            "max_azs = 2",
            "max_azs = 2\negress = \"nat\"\nnat_gateways = 3",
            "must be 1 (one NAT gateway for all AZs) or \"per_az\"",
        ),
        (
            "public subnets without NAT",
            "max_azs = 2",
            "max_azs = 2\negress = \"none\"\npublic_subnet_cidrs = [\"10.0.200.0/24\", \"10.0.201.0/24\"]",
            "only applies with egress = \"nat\" or a public service",
        ),
        (
            "NAT with explicit private subnets only",
            "max_azs = 2",
            "max_azs = 2\negress = \"nat\"\nsubnet_cidrs = [\"10.0.0.0/24\", \"10.0.1.0/24\"]",
            "list them in public_subnet_cidrs too",
        ),
        (
            "public subnet overlapping a private one",
            "max_azs = 2",
            "max_azs = 2\negress = \"nat\"\nsubnet_cidrs = [\"10.0.0.0/24\", \"10.0.1.0/24\"]\npublic_subnet_cidrs = [\"10.0.1.0/24\", \"10.0.2.0/24\"]",
            "network.public_subnet_cidrs: 10.0.1.0/24 overlaps 10.0.1.0/24",
        ),
        (
            "log retention",
            "[services.web]",
            "[logs]\nretention_days = 10\n\n[services.web]",
            "logs.retention_days: 10 is not a retention CloudWatch Logs accepts",
        ),
        (
            "execution role ARN",
            "name = \"{stack}\"",
            "name = \"{stack}\"\nexecution_role_arn = \"my-role\"",
            "stack.execution_role_arn: `my-role` is not an IAM role ARN",
        ),
        (
            "task role ARN",
            "port = 9090",
            "port = 9090\ntask_role_arn = \"arn:aws:iam::12:role/x\"",
            "services.api.task_role_arn: `arn:aws:iam::12:role/x` is not an IAM role ARN",
        ),
        (
            "S3 bucket given as an ARN",
            "port = 9090",
            "port = 9090\ntask_role_arn = \"arn:aws:iam::123456789012:role/api\"\ns3_buckets = [\"arn:aws:s3:::reports\"]",
            "services.api.s3_buckets: `arn:aws:s3:::reports` is not an S3 bucket name: give the bucket's name alone",
        ),
        (
            "S3 bucket name with capitals",
            "port = 9090",
            "port = 9090\ntask_role_arn = \"arn:aws:iam::123456789012:role/api\"\ns3_buckets = [\"Reports\"]",
            "use lowercase letters, digits, dots and hyphens",
        ),
        (
            "S3 buckets without a task role",
            "port = 9090",
            "port = 9090\ns3_buckets = [\"reports\"]",
            "the tasks need a task role to use S3 buckets (the S3 endpoint admits that role only); set services.api.task_role_arn",
        ),
    ];
    let mut failures = Vec::new();
    for (what, from, to, expected) in cases {
        assert!(GOOD.contains(from), "case `{what}`: the good config has no `{from}`");
        let (run, contacted) = up_without_aws(&GOOD.replacen(from, to, 1));
        if run.code != 1 || !run.stderr.contains(expected) || contacted {
            failures.push(format!(
                "`{what}`: exit {}, AWS contacted: {contacted}, expected `{expected}` in:\n{}",
                run.code, run.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn all_problems_are_listed_together() {
    let config = GOOD
        .replace("max_azs = 2", "max_azs = 0")
        .replace("port = 8080", "port = 0")
        .replace("calls = [\"api\"]", "calls = [\"ghost\"]")
        .replace("name = \"{namespace}\"", "name = \"not a name\"");
    let (run, contacted) = up_without_aws(&config);
    assert_eq!(run.code, 1);
    assert!(!contacted);
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn missing_config_file_says_how_to_pass_one() {
    let p = Project::with_config("nofile", GOOD);
    let run = p.secep(&["up", "-c", "does-not-exist.toml"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("cannot read config file does-not-exist.toml"), "{}", run.stderr);
    assert!(run.stderr.contains("-c/--config"), "{}", run.stderr);
}

#[test]
fn common_flags_work_before_and_after_the_subcommand() {
    let p = Project::with_config("flags", GOOD);
    let before = p.secep(&["-c", "missing-a.toml", "up"]);
    let after = p.secep(&["up", "--config", "missing-b.toml"]);
    assert!(before.stderr.contains("missing-a.toml"), "{}", before.stderr);
    assert!(after.stderr.contains("missing-b.toml"), "{}", after.stderr);
    let bad_flag = p.secep(&["up", "--parallelism", "0"]);
    assert_eq!(bad_flag.code, 1, "a bad flag is an error: {}", bad_flag.stderr);
    assert!(bad_flag.stderr.contains("--parallelism"), "{}", bad_flag.stderr);
}

/// Issue 21: `[services.<name>.public]` is checked before any call, alone and against the other public services.
#[test]
fn bad_public_entry_points_are_refused_before_any_call() {
    let cert = "arn:aws:acm:us-east-1:123456789012:certificate/abc";
    let api =
        |table: &str| GOOD.replacen("port = 9090\n", &format!("port = 9090\n\n[services.api.public]\n{table}\n"), 1);
    let both = |web: &str, api_table: &str| format!("{}\n[services.web.public]\n{web}\n", api(api_table));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "443 without a certificate",
            api("port = 443"),
            "services.api.public.port: 443 serves HTTPS and needs certificate_arn",
        ),
        (
            "not an ACM certificate",
            api("port = 443\ncertificate_arn = \"arn:aws:iam::123456789012:server-certificate/x\""),
            "is not an ACM certificate ARN",
        ),
        (
            "a certificate of another region",
            api(&format!("port = 443\ncertificate_arn = \"{cert}\""))
                .replace("[stack]\n", "[stack]\nregion = \"eu-west-1\"\n"),
            "a load balancer uses certificates of its own region",
        ),
        (
            "a redirect without HTTPS",
            api("port = 80\nredirect_http = true"),
            "redirects port 80 to HTTPS, which needs certificate_arn",
        ),
        ("a bad CIDR", api("port = 80\nallow_cidrs = [\"10.0.0.0/33\"]"), "`10.0.0.0/33` is not a CIDR"),
        ("host bits in a CIDR", api("port = 80\nallow_cidrs = [\"203.0.113.7/24\"]"), "did you mean 203.0.113.0/24?"),
        ("nobody allowed", api("port = 80\nallow_cidrs = []"), "would admit nobody"),
        ("a health check path", api("port = 80\nhealth_check_path = \"healthz\""), "is not a health check path"),
        ("a path pattern", api("port = 80\npath = \"api/*\""), "is not a path pattern: start with `/`"),
        ("no port", api("path = \"/api/*\""), "missing required key `port`"),
        ("an unknown key", api("port = 80\nstickiness = true"), "services.api.public.stickiness: unknown key"),
        (
            "two defaults on one listener",
            both("port = 80", "port = 80"),
            "share listener port 80 and none of them has `path` or `host`",
        ),
        (
            "two certificates on one listener",
            both(
                &format!("port = 443\ncertificate_arn = \"{cert}\""),
                &format!("port = 443\ncertificate_arn = \"{cert}x\"\npath = \"/api/*\""),
            ),
            "share listener port 443 but differ in certificate_arn",
        ),
        (
            "the same route twice",
            both("port = 80\npath = \"/x/*\"", "port = 80\npath = \"/x/*\""),
            "have the same route on listener port 80",
        ),
        (
            "port 80 both a listener and a redirect",
            both("port = 80", &format!("port = 443\ncertificate_arn = \"{cert}\"")),
            "port 80 is another public service's listener",
        ),
        ("one AZ", api("port = 80").replace("max_azs = 2", "max_azs = 1"), "needs subnets in at least two AZs"),
        (
            "a service named lb",
            api("port = 80").replace("[services.web]", "[services.lb]"),
            "`lb` is reserved: it names the load balancer in rules",
        ),
    ];
    let mut failures = Vec::new();
    for (what, config, expected) in cases {
        let (run, contacted) = up_without_aws(&config);
        if run.code != 1 || !run.stderr.contains(expected) || contacted {
            failures.push(format!(
                "`{what}`: exit {}, AWS contacted: {contacted}, expected `{expected}` in:\n{}",
                run.code, run.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
