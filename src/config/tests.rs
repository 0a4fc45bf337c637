use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("t.toml"), text)
}

const SEED: &str = r#"
[stack]
name = "secure-endpoints"

[network]
cidr = "10.0.0.0/16"
max_azs = 2

[namespace]
name = "secure-endpoints.local"

[services.service1]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/service1-image"
port = 8080
calls = ["service2"]
environment = { LOG_LEVEL = "info", WORKERS = 4 }

[services.service2]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/service2-image"
port = 8080
calls = ["service1"]
"#;

#[test]
fn seed_config_reads_with_defaults() {
    let c = parse(SEED).unwrap();
    assert_eq!(c.stack.name, "secure-endpoints");
    assert_eq!(c.network.max_azs, 2);
    let s1 = &c.services["service1"];
    assert_eq!((s1.cpu, s1.memory, s1.desired_count, s1.dns_ttl), (256, 512, 1, 10));
    assert_eq!(s1.environment["WORKERS"], "4");
    assert_eq!(c.endpoint(&c.services["service2"]), "service2.secure-endpoints.local:8080");
}

#[test]
fn every_problem_is_reported_at_once_with_its_line() {
    let text = SEED
        .replace("max_azs = 2", "max_azs = 0\ncolour = \"blue\"")
        .replace("port = 8080\ncalls = [\"service2\"]", "port = 70000\ncalls = [\"nope\"]");
    let err = parse(&text).unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert!(fields.contains(&"network.max_azs"), "{err}");
    assert!(fields.contains(&"network.colour"), "{err}");
    assert!(fields.contains(&"services.service1.port"), "{err}");
    assert!(fields.contains(&"services.service1.calls"), "{err}");
    let line_of = |f: &str| err.problems().iter().find(|p| p.field == f).unwrap().line;
    assert_eq!(line_of("network.colour"), 8);
}

#[test]
fn carving_leaves_room_for_public_subnets() {
    assert_eq!(validate::carve_bits(1), 1);
    assert_eq!(validate::carve_bits(2), 2);
    assert_eq!(validate::carve_bits(3), 3);
}

#[test]
fn fargate_sizes_follow_the_aws_table() {
    assert!(validate::fargate_memory_options(256).unwrap().contains(&2048));
    assert!(!validate::fargate_memory_options(256).unwrap().contains(&4096));
    assert!(validate::fargate_memory_options(300).is_none());
    assert!(validate::fargate_memory_options(16384).unwrap().contains(&122880));
}

#[test]
fn only_private_ecr_images_count_as_pullable_without_nat() {
    use super::validate::pullable_inside_vpc;
    assert!(pullable_inside_vpc("123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1"));
    assert!(pullable_inside_vpc("123456789012.dkr.ecr.eu-west-1.amazonaws.com/ecr-public/docker/library/python:3.12"));
    assert!(pullable_inside_vpc("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/web@sha256:abc"));
    for public in [
        "nginx:1",
        "library/nginx",
        "docker.io/library/nginx:1",
        "public.ecr.aws/nginx/nginx:1.27",
        "ghcr.io/org/app:1",
        "12345.dkr.ecr.us-east-1.amazonaws.com/web:1",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example/web:1",
    ] {
        assert!(!pullable_inside_vpc(public), "{public}");
    }
}

#[test]
fn the_state_table_takes_an_s3_url_and_a_kms_key_and_refuses_a_malformed_one() {
    let c = parse(&format!("{SEED}\n[state]\nurl = \"s3://team-state/prod.json\"\nkms_key_id = \"alias/secep\"\n"))
        .unwrap();
    assert_eq!(c.state.url.unwrap().to_string(), "s3://team-state/prod.json");
    assert_eq!(c.state.kms_key_id.as_deref(), Some("alias/secep"));
    assert_eq!(parse(SEED).unwrap().state, StateConfig::default(), "local by default");

    let err = parse(&format!("{SEED}\n[state]\nurl = \"s3://Team/\"\nbucket = \"x\"\n")).unwrap_err().to_string();
    assert!(err.contains("state.url") && err.contains("not an S3 bucket name"), "{err}");
    assert!(err.contains("bucket"), "unknown keys are named too: {err}");
    let err = parse(&format!("{SEED}\n[state]\nurl = \"state.json\"\nkms_key_id = \"k\"\n")).unwrap_err().to_string();
    assert!(err.contains("state.kms_key_id") && err.contains("only applies to an S3 state"), "{err}");
}

#[test]
fn the_china_partition_is_refused_up_front_and_gov_cloud_gets_its_arns() {
    let err =
        parse(&SEED.replace("name = \"secure-endpoints\"\n", "name = \"secure-endpoints\"\nregion = \"cn-north-1\"\n"))
            .unwrap_err()
            .to_string();
    assert!(err.contains("stack.region") && err.contains("China partition"), "{err}");
    let gov = parse(
        &SEED.replace("name = \"secure-endpoints\"\n", "name = \"secure-endpoints\"\nregion = \"us-gov-west-1\"\n"),
    )
    .unwrap();
    assert_eq!(gov.stack.region.as_deref(), Some("us-gov-west-1"));
    assert_eq!(
        crate::model::execution_policy_arn("us-gov-west-1"),
        "arn:aws-us-gov:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
    );
}

#[test]
fn s3_buckets_need_a_task_role_and_a_way_to_s3() {
    let with = |network: &str, service: &str| {
        SEED.replace("max_azs = 2\n", &format!("max_azs = 2\n{network}"))
            .replace("calls = [\"service1\"]\n", &format!("calls = [\"service1\"]\n{service}"))
    };
    let role = "task_role_arn = \"arn:aws:iam::123456789012:role/reports\"\n";
    let buckets = "s3_buckets = [\"reports-2026\", \"exports.example.com\"]\n";
    let c = parse(&with("", &format!("{role}{buckets}"))).unwrap();
    assert_eq!(c.services["service2"].s3_buckets, ["reports-2026", "exports.example.com"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let err = parse(&with("egress = \"none\"\n", &format!("{role}{buckets}"))).unwrap_err().to_string();
    assert!(err.contains("services.service2.s3_buckets") && err.contains("cannot reach S3"), "{err}");
    let nat = parse(&with("egress = \"nat\"\n", &format!("{role}{buckets}"))).unwrap();
    assert!(nat.warnings.iter().any(|w| w.contains("no endpoint policy narrows")), "{:?}", nat.warnings);
    for bad in ["ab", "192.168.1.1", "-reports", "a..b", "s3://reports"] {
        let err = parse(&with("", &format!("{role}s3_buckets = [\"{bad}\"]\n"))).unwrap_err().to_string();
        assert!(err.contains(&format!("`{bad}` is not an S3 bucket name")), "{bad}: {err}");
    }
}

#[test]
fn the_service_name_lb_is_reserved_with_or_without_a_public_service() {
    // Regression (review of issue 21): without a public service, `sg-rule/lb->web` still meant the load balancer's
    // group, so a service named `lb` deployed with its rules silently unenforced.
    let named_lb = SEED.replace("[services.service2]", "[services.lb]").replace("\"service2\"", "\"lb\"");
    let err = parse(&named_lb).unwrap_err().to_string();
    assert!(err.contains("`lb` is reserved"), "{err}");
}

#[test]
fn https_on_port_80_has_no_redirect_to_itself() {
    // Regression (review of issue 21): `redirect_http` defaulted to true with a certificate, and port 80 then had
    // both an HTTPS listener and a redirect listener: two `listener/80` nodes.
    let cert = "arn:aws:acm:us-east-1:123456789012:certificate/c";
    let text = format!("{SEED}\n[services.service1.public]\nport = 80\ncertificate_arn = \"{cert}\"\n");
    let config = parse(&text).unwrap();
    let public: Vec<_> = config.public_services().collect();
    assert!(!public[0].1.redirect_http);
    let listeners = crate::model::listener_specs(&public);
    assert_eq!(listeners.iter().map(|l| l.port).collect::<Vec<_>>(), [80]);
}
