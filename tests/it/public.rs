//! Issue 21: a public entry point. A service with `[services.<name>.public]` is served by the stack's one
//! internet-facing application load balancer, and nothing else changes: the internet reaches the load balancer only
//! on its listener ports, the load balancer reaches only the public services only on their ports. Every check is an
//! independent describe of the emulator, through a proxy with AWS's rules (an internet-facing load balancer needs an
//! internet gateway, a service's target group a load balancer, a deleted load balancer's ENIs linger).

use std::collections::BTreeSet;

use aws_sdk_elasticloadbalancingv2::types::{Listener, LoadBalancer, TargetGroup};

use crate::egress::{down_leaves_nothing, rules, set, stack};
use crate::harness::{Aws, Project, Proxy, aws, certificate, ec2_filter};

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// The seed's two services; service1 is public (PUBLIC is its table, or nothing).
fn config(public: &str, service2_public: &str) -> String {
    format!(
        r#"[stack]
name = "{{stack}}"

[network]
cidr = "10.0.0.0/16"
max_azs = 2

[namespace]
name = "{{namespace}}"

[services.service1]
image = "{ECR}/service1:latest"
port = 8080
calls = ["service2"]
{public}

[services.service2]
image = "{ECR}/service2:latest"
port = 8080
calls = ["service1"]
{service2_public}
"#
    )
}

fn https(cert: &str) -> String {
    format!("[services.service1.public]\nport = 443\ncertificate_arn = \"{cert}\"\nhealth_check_path = \"/healthz\"\n")
}

async fn load_balancer(aws: &Aws, p: &Project) -> LoadBalancer {
    let out = aws.elb.describe_load_balancers().names(&p.stack).send().await.expect("the load balancer");
    out.load_balancers()[0].clone()
}

async fn listeners(aws: &Aws, lb: &LoadBalancer) -> Vec<Listener> {
    let out = aws.elb.describe_listeners().load_balancer_arn(lb.load_balancer_arn().unwrap()).send().await.unwrap();
    let mut listeners = out.listeners().to_vec();
    listeners.sort_by_key(|l| l.port());
    listeners
}

/// The stack's target groups (those in its VPC), by name.
async fn target_groups(aws: &Aws, vpc: &str) -> Vec<TargetGroup> {
    let out = aws.elb.describe_target_groups().send().await.unwrap();
    let mut groups: Vec<TargetGroup> =
        out.target_groups().iter().filter(|t| t.vpc_id() == Some(vpc)).cloned().collect();
    groups.sort_by(|a, b| a.target_group_name().cmp(&b.target_group_name()));
    groups
}

/// An ECS service's load balancers as (target group, container, port), and its grace period.
async fn ecs_load_balancers(aws: &Aws, p: &Project, service: &str) -> (Vec<(String, String, i32)>, Option<i32>) {
    let out = aws
        .ecs
        .describe_services()
        .cluster(&p.stack)
        .services(service)
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .send()
        .await
        .unwrap();
    let s = &out.services()[0];
    let lbs = s
        .load_balancers()
        .iter()
        .map(|l| {
            (
                l.target_group_arn().unwrap().to_string(),
                l.container_name().unwrap().to_string(),
                l.container_port().unwrap(),
            )
        })
        .collect();
    (lbs, s.health_check_grace_period_seconds())
}

#[tokio::test]
async fn a_public_service_is_served_over_https_and_nothing_else_is_reachable() {
    let cert = certificate("shop.example.com");
    let p = Project::with_config("public", &config(&https(&cert), ""));
    // The deleted load balancer's ENIs linger 5 s (not the scaled 0.6 s), so that `down` surely meets them however
    // loaded the machine is.
    let proxy = Proxy::start(&["--strict", "--lb-eni-linger-seconds", "5"]);
    let aws = aws().await;
    let up = p.secep_at(&proxy.url, &["up"]).success();
    assert!(up.stderr.contains("rolled out svc/service1"), "{}", up.stderr);

    let s = stack(&aws, &p).await;
    let lb = load_balancer(&aws, &p).await;
    assert_eq!(lb.scheme().unwrap().as_str(), "internet-facing");
    assert_eq!(lb.r#type().unwrap().as_str(), "application");
    let lb_subnets: BTreeSet<String> =
        lb.availability_zones().iter().map(|z| z.subnet_id().unwrap().to_string()).collect();
    let public: BTreeSet<String> =
        s.subnets.iter().filter(|(node, _)| node.starts_with("public-subnet/")).map(|(_, id)| id.clone()).collect();
    assert_eq!((lb_subnets, public.len()), (public, 2), "the public subnets, one per AZ");
    let lb_group = &s.groups["lb-sg"];
    assert_eq!(lb.security_groups(), std::slice::from_ref(lb_group));
    let attrs = aws
        .elb
        .describe_load_balancer_attributes()
        .load_balancer_arn(lb.load_balancer_arn().unwrap())
        .send()
        .await
        .unwrap();
    let drops = attrs.attributes().iter().find(|a| a.key() == Some("routing.http.drop_invalid_header_fields.enabled"));
    assert_eq!(drops.and_then(|a| a.value()), Some("true"), "invalid header fields are dropped");

    // The public subnets route to the internet gateway; the tasks stay in the private ones.
    let tables = aws.ec2.describe_route_tables().filters(ec2_filter("tag:secep:node", "rtb/public"));
    let tables = tables.filters(ec2_filter("tag:secep:stack", &p.stack)).send().await.unwrap();
    let routes = tables.route_tables()[0].routes();
    assert!(
        routes.iter().any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")
            && r.gateway_id().is_some_and(|g| g.starts_with("igw-")))
    );

    let tgs = target_groups(&aws, &s.vpc).await;
    assert_eq!(tgs.len(), 1, "one target group: service1's");
    let tg = &tgs[0];
    assert_eq!(tg.target_type().unwrap().as_str(), "ip");
    assert_eq!((tg.protocol().unwrap().as_str(), tg.port()), ("HTTP", Some(8080)));
    assert_eq!(tg.health_check_path(), Some("/healthz"));
    let timing = (tg.health_check_interval_seconds(), tg.healthy_threshold_count(), tg.unhealthy_threshold_count());
    assert_eq!(timing, (Some(15), Some(3), Some(3)), "healthy in 45 s, not AWS's default 150 s");
    let attrs = aws.elb.describe_target_group_attributes().target_group_arn(tg.target_group_arn().unwrap());
    let attrs = attrs.send().await.unwrap();
    let delay = attrs.attributes().iter().find(|a| a.key() == Some("deregistration_delay.timeout_seconds"));
    assert_eq!(delay.and_then(|a| a.value()), Some("30"), "a stopping task drains for 30 s, not 300 s");
    let tg_arn = tg.target_group_arn().unwrap().to_string();

    let listeners = listeners(&aws, &lb).await;
    assert_eq!(listeners.iter().map(|l| l.port().unwrap()).collect::<Vec<_>>(), [80, 443]);
    let (http, tls) = (&listeners[0], &listeners[1]);
    assert_eq!(tls.protocol().unwrap().as_str(), "HTTPS");
    assert_eq!(tls.certificates()[0].certificate_arn(), Some(cert.as_str()));
    assert_eq!(tls.ssl_policy(), Some("ELBSecurityPolicy-TLS13-1-2-2021-06"));
    assert_eq!(tls.default_actions()[0].target_group_arn(), Some(tg_arn.as_str()));
    let redirect = http.default_actions()[0].redirect_config().expect("port 80 redirects");
    assert_eq!((redirect.protocol(), redirect.port()), (Some("HTTPS"), Some("443")));
    assert_eq!(redirect.status_code().unwrap().as_str(), "HTTP_301");

    // The groups' exact rules: the internet reaches the load balancer on its listener ports only; the load
    // balancer reaches service1 on its port only; service2 admits only service1.
    let (g1, g2) = (&s.groups["sg/service1"], &s.groups["sg/service2"]);
    assert_eq!(rules(&aws, lb_group, false).await, set(&["tcp/443 0.0.0.0/0".into(), "tcp/80 0.0.0.0/0".into()]));
    assert_eq!(rules(&aws, lb_group, true).await, set(&[format!("tcp/8080 {g1}")]));
    assert_eq!(rules(&aws, g1, false).await, set(&[format!("tcp/8080 {g2}"), format!("tcp/8080 {lb_group}")]));
    assert_eq!(rules(&aws, g2, false).await, set(&[format!("tcp/8080 {g1}")]), "no other service admits the lb");

    let (lbs, _) = ecs_load_balancers(&aws, &p, "service1").await;
    assert_eq!(lbs, [(tg_arn.clone(), "service1".to_string(), 8080)]);
    // moto drops CreateService's grace period; the proxy, standing for AWS, keeps it: asked through the proxy.
    let (_, grace) = ecs_load_balancers(&crate::harness::aws_at(&proxy.url).await, &p, "service1").await;
    assert_eq!(grace, Some(60));
    assert_eq!(ecs_load_balancers(&aws, &p, "service2").await.0, []);
    // moto's ECS starts no task; the proxy's clock runs them and answers for their health (AWS's view).
    let health = crate::harness::aws_at(&proxy.url).await.elb.describe_target_health().target_group_arn(&tg_arn);
    let health = health.send().await.unwrap();
    let healthy = health
        .target_health_descriptions()
        .iter()
        .filter(|d| d.target_health().and_then(|t| t.state()).map(|s| s.as_str()) == Some("healthy"));
    assert_eq!(healthy.count(), 1, "up waited for service1's task to be healthy in its target group");

    // status: the load balancer, its target health, and the internet row: service1 only, through the load balancer.
    let status = p.secep_at(&proxy.url, &["status"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    assert!(status.stdout.contains(lb.dns_name().unwrap()), "{}", status.stdout);
    assert!(status.stdout.contains("1 healthy, 0 unhealthy"), "{}", status.stdout);
    let row = status.stdout.lines().find(|l| l.starts_with("internet")).expect("an internet row");
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["internet", "tcp/443", "via", "lb", "-"]);
    let json = p.secep_at(&proxy.url, &["status", "--json"]).json();
    let internet = &json["reachability"]["internet"];
    assert_eq!(internet, &serde_json::json!([{"from": "internet", "to": "service1", "ports": "tcp/443 via lb"}]));
    assert_eq!(json["load_balancer"]["services"][0]["targets"]["healthy"], 1);

    // Drift: a hand-added rule on the load balancer's group, and the load balancer let into service2.
    let open = aws_sdk_ec2::types::IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build();
    aws.ec2.authorize_security_group_ingress().group_id(lb_group).ip_permissions(open).send().await.unwrap();
    let into_service2 = aws_sdk_ec2::types::IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(8080)
        .to_port(8080)
        .user_id_group_pairs(aws_sdk_ec2::types::UserIdGroupPair::builder().group_id(lb_group).build())
        .build();
    aws.ec2.authorize_security_group_ingress().group_id(g2).ip_permissions(into_service2).send().await.unwrap();
    let drifted = p.secep_at(&proxy.url, &["status"]);
    assert_eq!(drifted.code, 2, "{}", drifted.stdout);
    assert!(drifted.stdout.contains("EXTRA path: lb -> service2 on tcp/8080"), "{}", drifted.stdout);
    let row = drifted.stdout.lines().find(|l| l.starts_with("internet")).unwrap();
    assert!(!row.ends_with(" -"), "the internet reaches service2 through the load balancer now: {row}");
    p.secep_at(&proxy.url, &["up"]).success();
    assert_eq!(rules(&aws, lb_group, false).await, set(&["tcp/443 0.0.0.0/0".into(), "tcp/80 0.0.0.0/0".into()]));
    assert_eq!(rules(&aws, g2, false).await, set(&[format!("tcp/8080 {g1}")]));
    assert_eq!(p.secep_at(&proxy.url, &["status"]).code, 0);

    // down: the listeners, the load balancer (its ENIs linger: the group and subnets wait them out), the target
    // group, then the rest.
    let cleared = proxy.calls().len();
    let down = p.secep_at(&proxy.url, &["down", "--yes", "--delete-logs"]).success();
    assert_eq!(crate::down::leftovers(&aws, &p).await, Vec::<String>::new(), "{}", down.stderr);
    let calls: Vec<serde_json::Value> = proxy.calls().into_iter().skip(cleared).collect();
    let held = calls.iter().any(|c| {
        c["operation"] == "DeleteSecurityGroup"
            && c["error"] == "DependencyViolation"
            && c["params"]["GroupId"] == *lb_group
    });
    assert!(held, "the load balancer's lingering ENIs held its group, and down waited them out");
}

#[tokio::test]
async fn public_and_private_ports_routes_and_health_checks_converge_in_place() {
    let http = "[services.service1.public]\nport = 80\n";
    let p = Project::with_config("pubconv", &config(http, ""));
    let aws = aws().await;
    p.secep(&["up"]).success();
    let s = stack(&aws, &p).await;
    let lb = load_balancer(&aws, &p).await;
    let listener = &listeners(&aws, &lb).await[0];
    assert_eq!((listener.port(), listener.protocol().unwrap().as_str()), (Some(80), "HTTP"));

    // service2 goes public behind /api/*, service1's health check moves.
    let api = "[services.service2.public]\nport = 80\npath = \"/api/*\"\n";
    p.write_template(&config(&format!("{http}health_check_path = \"/ready\"\n"), api));
    let plan = p.secep(&["plan"]);
    assert_eq!(plan.code, 2, "{}", plan.stdout);
    for line in [
        "+ create     tg/service2",
        "+ create     sg-rule/lb->service2",
        "~ update     listener/80",
        "~ update     tg/service1",
    ] {
        assert!(plan.stdout.contains(line), "{line}:\n{}", plan.stdout);
    }
    p.secep(&["up"]).success();
    let tgs = target_groups(&aws, &s.vpc).await;
    let arn_of = |name: &str| {
        tgs.iter()
            .find(|t| t.target_group_name().unwrap().contains(name))
            .unwrap()
            .target_group_arn()
            .unwrap()
            .to_string()
    };
    let (tg1, tg2) = (arn_of("service1"), arn_of("service2"));
    assert!(tgs.iter().any(|t| t.health_check_path() == Some("/ready")), "changed in place");
    let listener = listeners(&aws, &lb).await[0].clone();
    let rules_out = aws.elb.describe_rules().listener_arn(listener.listener_arn().unwrap()).send().await.unwrap();
    let routed: Vec<(String, Vec<String>, String)> = rules_out
        .rules()
        .iter()
        .filter(|r| r.is_default() != Some(true))
        .map(|r| {
            let path = r
                .conditions()
                .iter()
                .flat_map(|c| c.path_pattern_config().map(|p| p.values().to_vec()).unwrap_or_default());
            (r.priority().unwrap().to_string(), path.collect(), r.actions()[0].target_group_arn().unwrap().to_string())
        })
        .collect();
    assert_eq!(routed, [("1".to_string(), vec!["/api/*".to_string()], tg2.clone())]);
    assert_eq!(listener.default_actions()[0].target_group_arn(), Some(tg1.as_str()));
    assert_eq!(ecs_load_balancers(&aws, &p, "service2").await.0, [(tg2.clone(), "service2".to_string(), 8080)]);
    let lb_group = &s.groups["lb-sg"];
    assert_eq!(
        rules(&aws, lb_group, true).await,
        set(&[format!("tcp/8080 {}", s.groups["sg/service1"]), format!("tcp/8080 {}", s.groups["sg/service2"])])
    );

    // HTTPS: a certificate, port 443, and port 80 answers a redirect; only the office may connect.
    let cert = certificate("shop.example.com");
    let office = "allow_cidrs = [\"203.0.113.0/24\"]";
    let tls = format!(
        "[services.service1.public]\nport = 443\ncertificate_arn = \"{cert}\"\nhealth_check_path = \"/ready\"\n{office}\n"
    );
    let api_tls =
        format!("[services.service2.public]\nport = 443\ncertificate_arn = \"{cert}\"\npath = \"/api/*\"\n{office}\n");
    p.write_template(&config(&tls, &api_tls));
    p.secep(&["up"]).success();
    let now = listeners(&aws, &lb).await;
    assert_eq!(now.iter().map(|l| l.port().unwrap()).collect::<Vec<_>>(), [80, 443]);
    assert!(now[0].default_actions()[0].redirect_config().is_some(), "port 80 redirects now");
    assert_eq!(now[1].certificates()[0].certificate_arn(), Some(cert.as_str()));
    let office_only = set(&["tcp/443 203.0.113.0/24".into(), "tcp/80 203.0.113.0/24".into()]);
    assert_eq!(rules(&aws, lb_group, false).await, office_only, "the listener ports from the office only");

    // A new container port: AWS cannot change a target group's port, so a new one stands in and the old one goes.
    p.write_template(&config(&tls, &api_tls).replacen(
        "port = 8080\ncalls = [\"service2\"]",
        "port = 8081\ncalls = [\"service2\"]",
        1,
    ));
    let up = p.secep(&["up"]).success();
    assert!(up.stderr.contains("(replaced)"), "the old target group is deleted after the rollout: {}", up.stderr);
    let tgs = target_groups(&aws, &s.vpc).await;
    assert_eq!(tgs.len(), 2, "{tgs:?}");
    let tg1_new =
        tgs.iter().find(|t| t.port() == Some(8081)).expect("a target group on 8081").target_group_arn().unwrap();
    assert_eq!(ecs_load_balancers(&aws, &p, "service1").await.0, [(tg1_new.to_string(), "service1".to_string(), 8081)]);
    assert_eq!(listeners(&aws, &lb).await[1].default_actions()[0].target_group_arn(), Some(tg1_new));
    assert_eq!(
        rules(&aws, &s.groups["sg/service1"], false).await.iter().filter(|r| r.ends_with(lb_group.as_str())).count(),
        1
    );

    // service2 private again: its rule, its target group and the load balancer's way to it go.
    p.write_template(&config(&tls, "").replacen(
        "port = 8080\ncalls = [\"service2\"]",
        "port = 8081\ncalls = [\"service2\"]",
        1,
    ));
    p.secep(&["up"]).success();
    assert_eq!(target_groups(&aws, &s.vpc).await.len(), 1);
    assert_eq!(ecs_load_balancers(&aws, &p, "service2").await.0, []);
    assert_eq!(
        rules(&aws, &s.groups["sg/service2"], false).await,
        set(&[format!("tcp/8080 {}", s.groups["sg/service1"])])
    );
    assert_eq!(rules(&aws, lb_group, true).await, set(&[format!("tcp/8081 {}", s.groups["sg/service1"])]));
    let status = p.secep(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    down_leaves_nothing(&aws, &p, &["--delete-logs"]).await;
}

#[tokio::test]
async fn tasks_that_fail_the_load_balancers_health_check_fail_up_and_status() {
    let p = Project::with_config(
        "pubsick",
        &config("[services.service1.public]\nport = 80\n", "").replace("service1:latest", "unhealthy:1"),
    );
    let aws = aws().await;
    let up = p.secep(&["up"]);
    assert_eq!(up.code, 1, "{}", up.stderr);
    assert!(up.stderr.contains("Task failed ELB health checks"), "{}", up.stderr);
    let status = p.secep(&["status"]);
    assert_eq!(status.code, 3, "{}", status.stdout);
    down_leaves_nothing(&aws, &p, &["--delete-logs"]).await;
}

/// A run killed right after each call that makes part of the load balancer (SIGKILL by the proxy, as in
/// `kill.rs`): the next `up` adopts what was made by its tags and lineage, makes the rest once, and `down` leaves
/// nothing. The positions come from a probe run of the same config, one call at a time.
#[tokio::test]
async fn killing_up_at_each_load_balancer_create_leaves_no_duplicate() {
    const MAKERS: &[&str] =
        &["CreateTargetGroup", "CreateLoadBalancer", "ModifyLoadBalancerAttributes", "CreateListener", "CreateService"];
    let cert = certificate("shop.example.com");
    let text = config(&https(&cert), "");
    let probe = Project::with_config("pubprobe", &text);
    let proxy = Proxy::start(&[]);
    probe.secep_at(&proxy.url, &["up", "--parallelism", "1"]).success();
    // The account's ECS service-linked role exists after the probe: the killed runs do not make it again.
    let mutating: Vec<String> = proxy
        .calls()
        .iter()
        .filter(|c| c["mutating"] == true && c["status"].as_u64().is_some_and(|s| s < 300))
        .map(|c| c["operation"].as_str().unwrap_or_default().to_string())
        .filter(|op| op != "CreateServiceLinkedRole")
        .collect();
    let positions: Vec<usize> =
        mutating.iter().enumerate().filter(|(_, op)| MAKERS.contains(&op.as_str())).map(|(i, _)| i + 1).collect();
    assert!(positions.len() >= 6, "{mutating:?}");
    probe.secep_at(&proxy.url, &["down", "--yes", "--delete-logs"]).success();
    let mut want = crate::kill::expected(2, 2, 2);
    want.extend([
        ("subnet", 4),
        ("security group", 5),
        ("ingress rule", 4),
        ("route table", 3),
        ("load balancer", 1),
        ("target group", 1),
        ("listener", 2),
    ]);
    let report =
        crate::kill::run_positions(positions, |k| Project::with_config(&format!("pubkill{k}"), &text), want).await;
    assert!(!report.is_empty());
}
