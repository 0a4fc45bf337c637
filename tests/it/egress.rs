//! Issue 8: stacks that would start on a real account. For each `network.egress` mode, the way out of the private
//! subnets is exactly as documented (endpoints / NAT / nothing), each service group's egress holds exactly the
//! stated rules, the execution role and log group exist and are what the task definitions use, and `down` leaves
//! nothing behind. All checked with independent describe calls.

use std::collections::BTreeSet;

use crate::harness::{Aws, Project, aws, ec2_filter};

const MESH: &str = r#"[stack]
name = "{stack}"

[network]
cidr = "10.40.0.0/16"
max_azs = 2
EGRESS

[namespace]
name = "{namespace}"

[services.web]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web-image"
port = 8080
calls = ["api"]

[services.api]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api-image"
port = 9090
task_role_arn = "arn:aws:iam::123456789012:role/api-task"
"#;

pub(crate) fn project(prefix: &str, egress: &str) -> Project {
    Project::with_config(prefix, &MESH.replace("EGRESS", egress))
}

fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// The stack's live VPC, groups (by secep:node) and subnets (by secep:node).
pub(crate) struct Stack {
    pub vpc: String,
    pub groups: std::collections::BTreeMap<String, String>,
    pub subnets: std::collections::BTreeMap<String, String>,
}

pub(crate) async fn stack(aws: &Aws, p: &Project) -> Stack {
    let tagged = || ec2_filter("tag:secep:stack", &p.stack);
    let vpcs = aws.ec2.describe_vpcs().filters(tagged()).send().await.unwrap();
    let vpc = vpcs.vpcs()[0].vpc_id().unwrap().to_string();
    let groups = aws.ec2.describe_security_groups().filters(tagged()).send().await.unwrap();
    let groups = groups
        .security_groups()
        .iter()
        .map(|g| (tag(g.tags(), "secep:node").unwrap().to_string(), g.group_id().unwrap().to_string()))
        .collect();
    let subnets = aws.ec2.describe_subnets().filters(tagged()).send().await.unwrap();
    let subnets = subnets
        .subnets()
        .iter()
        .map(|s| (tag(s.tags(), "secep:node").unwrap().to_string(), s.subnet_id().unwrap().to_string()))
        .collect();
    Stack { vpc, groups, subnets }
}

/// Every rule of a group in one direction, as `tcp/PORT peer` (peer: a group id, prefix list id or CIDR).
pub(crate) async fn rules(aws: &Aws, group: &str, egress: bool) -> BTreeSet<String> {
    let out = aws.ec2.describe_security_group_rules().filters(ec2_filter("group-id", group)).send().await.unwrap();
    out.security_group_rules()
        .iter()
        .filter(|r| r.group_id() == Some(group) && r.is_egress() == Some(egress))
        .map(|r| {
            let peer = r
                .referenced_group_info()
                .and_then(|g| g.group_id())
                .or(r.prefix_list_id())
                .or(r.cidr_ipv4())
                .or(r.cidr_ipv6())
                .unwrap_or("?");
            let ports = if r.from_port() == r.to_port() {
                format!("{}", r.from_port().unwrap_or(-1))
            } else {
                format!("{}-{}", r.from_port().unwrap_or(-1), r.to_port().unwrap_or(-1))
            };
            format!("{}/{ports} {peer}", r.ip_protocol().unwrap_or("?"))
        })
        .collect()
}

pub(crate) fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

/// The execution role trusts ECS tasks and carries AWS's managed policy; the log group keeps 30 days; every task
/// definition runs as that role, logs there, and carries its task role when the config gives one.
async fn check_role_and_logs(aws: &Aws, p: &Project) {
    let role_name = format!("{}-ecs-execution", p.stack);
    let role = aws.iam.get_role().role_name(&role_name).send().await.expect("the execution role exists");
    let role = role.role().unwrap();
    // The document may come back URL-encoded; the service name reads the same either way.
    let trust = role.assume_role_policy_document().unwrap_or_default();
    assert!(trust.contains("ecs-tasks.amazonaws.com"), "trust policy: {trust}");
    assert!(role.tags().iter().any(|t| t.key() == "secep:stack" && t.value() == p.stack));
    let attached = aws.iam.list_attached_role_policies().role_name(&role_name).send().await.unwrap();
    let policies: Vec<&str> = attached.attached_policies().iter().filter_map(|a| a.policy_name()).collect();
    assert_eq!(policies, ["AmazonECSTaskExecutionRolePolicy"]);

    let group = format!("/secep/{}", p.stack);
    let groups = aws.logs.describe_log_groups().log_group_name_prefix(&group).send().await.unwrap();
    let live = groups.log_groups().iter().find(|g| g.log_group_name() == Some(group.as_str())).expect("log group");
    assert_eq!(live.retention_in_days(), Some(30));

    for (service, task_role) in [("web", None), ("api", Some("arn:aws:iam::123456789012:role/api-task"))] {
        let td = aws.ecs.describe_task_definition().task_definition(format!("{}-{service}", p.stack)).send().await;
        let td = td.unwrap();
        let td = td.task_definition().unwrap();
        assert_eq!(td.execution_role_arn(), Some(role.arn()), "{service}");
        assert_eq!(td.task_role_arn(), task_role, "{service}");
        let logging = td.container_definitions()[0].log_configuration().expect("awslogs configured");
        assert_eq!(logging.log_driver().as_str(), "awslogs");
        let options = logging.options().unwrap();
        assert_eq!(options.get("awslogs-group"), Some(&group));
        assert_eq!(options.get("awslogs-region").map(String::as_str), Some(crate::harness::REGION));
    }
}

pub(crate) async fn down_leaves_nothing(aws: &Aws, p: &Project, flags: &[&str]) -> String {
    let mut args = vec!["down", "--yes"];
    args.extend(flags);
    let down = p.secep(&args).success();
    assert_eq!(crate::down::leftovers(aws, p).await, Vec::<String>::new(), "{}", down.stderr);
    down.stderr
}

async fn log_group_exists(aws: &Aws, p: &Project) -> bool {
    let group = format!("/secep/{}", p.stack);
    let groups = aws.logs.describe_log_groups().log_group_name_prefix(&group).send().await.unwrap();
    groups.log_groups().iter().any(|g| g.log_group_name() == Some(group.as_str()))
}

#[tokio::test]
async fn endpoints_mode_reaches_ecr_logs_and_s3_privately_with_least_privilege_egress() {
    let p = project("egress-vpce", "");
    let aws = aws().await;
    p.secep(&["up"]).success();
    let s = stack(&aws, &p).await;
    let (web, api, endpoint_group) = (&s.groups["sg/web"], &s.groups["sg/api"], &s.groups["vpce-sg"]);
    let private: BTreeSet<String> = s.subnets.values().cloned().collect();

    // Interface endpoints for ECR and Logs, in every private subnet, behind the endpoint group, with private DNS.
    let endpoints = aws.ec2.describe_vpc_endpoints().filters(ec2_filter("vpc-id", &s.vpc)).send().await.unwrap();
    let mut names = Vec::new();
    let mut gateway_tables = Vec::new();
    for e in endpoints.vpc_endpoints() {
        let service = e.service_name().unwrap().rsplit_once("us-east-1.").unwrap().1.to_string();
        // Issue 20: no endpoint keeps AWS's default policy (anyone may do anything through it).
        let policy: serde_json::Value = serde_json::from_str(e.policy_document().unwrap_or("null")).unwrap();
        let statements = policy["Statement"].as_array().unwrap_or_else(|| panic!("{service}: no policy: {policy}"));
        assert_eq!(statements.len(), 1, "{service}: {policy}");
        if service == "s3" {
            assert_eq!(e.vpc_endpoint_type().map(|t| t.as_str()), Some("Gateway"));
            gateway_tables = e.route_table_ids().to_vec();
            assert_eq!(statements[0]["Action"], "s3:GetObject", "only image layers through S3");
            assert_eq!(statements[0]["Resource"], "arn:aws:s3:::prod-us-east-1-starport-layer-bucket/*");
        } else {
            let account = e.owner_id().expect("the endpoint's account");
            assert_eq!(
                statements[0]["Condition"],
                serde_json::json!({"StringEquals": {"aws:PrincipalAccount": account}}),
                "{service}: only the account's principals"
            );
            assert_eq!(e.vpc_endpoint_type().map(|t| t.as_str()), Some("Interface"), "{service}");
            assert_eq!(e.private_dns_enabled(), Some(true), "{service}");
            assert_eq!(e.subnet_ids().iter().cloned().collect::<BTreeSet<_>>(), private, "{service}");
            let groups: Vec<&str> = e.groups().iter().filter_map(|g| g.group_id()).collect();
            assert_eq!(groups, [endpoint_group.as_str()], "{service}");
        }
        names.push(service);
    }
    names.sort();
    assert_eq!(names, ["ecr.api", "ecr.dkr", "logs", "s3"]);

    // Each private subnet has its own route table, which S3's gateway endpoint is on; no route leaves the VPC.
    let tables = aws.ec2.describe_route_tables().filters(ec2_filter("vpc-id", &s.vpc)).send().await.unwrap();
    let ours: Vec<_> = tables.route_tables().iter().filter(|t| tag(t.tags(), "secep:stack").is_some()).collect();
    let associated: BTreeSet<String> =
        ours.iter().flat_map(|t| t.associations().iter().filter_map(|a| a.subnet_id().map(str::to_string))).collect();
    assert_eq!(associated, private);
    let our_ids: BTreeSet<String> = ours.iter().map(|t| t.route_table_id().unwrap().to_string()).collect();
    assert_eq!(gateway_tables.iter().cloned().collect::<BTreeSet<_>>(), our_ids);
    for t in &ours {
        assert!(
            t.routes().iter().all(|r| r.destination_cidr_block() != Some("0.0.0.0/0")),
            "no default route in endpoints mode: {t:?}"
        );
    }
    assert!(
        aws.ec2
            .describe_internet_gateways()
            .filters(ec2_filter("attachment.vpc-id", &s.vpc))
            .send()
            .await
            .unwrap()
            .internet_gateways()
            .is_empty()
    );

    // Egress: a service group reaches its peers on their ports; no 0.0.0.0/0 (AWS's default is revoked).
    assert_eq!(rules(&aws, web, true).await, set(&[format!("tcp/9090 {api}")]));
    assert_eq!(rules(&aws, api, true).await, BTreeSet::new());
    // The clients group, on every task, reaches the endpoints and S3 on HTTPS, and admits nothing.
    let clients = &s.groups["vpce-clients-sg"];
    let s3 = aws.ec2.describe_prefix_lists().filters(ec2_filter("prefix-list-name", "com.amazonaws.us-east-1.s3"));
    let s3 = s3.send().await.unwrap().prefix_lists()[0].prefix_list_id().unwrap().to_string();
    assert_eq!(rules(&aws, clients, true).await, set(&[format!("tcp/443 {endpoint_group}"), format!("tcp/443 {s3}")]));
    assert_eq!(rules(&aws, clients, false).await, BTreeSet::new());
    // The endpoints accept HTTPS from the clients group only (one rule however many services), and send nothing.
    assert_eq!(rules(&aws, endpoint_group, false).await, set(&[format!("tcp/443 {clients}")]));
    assert_eq!(rules(&aws, endpoint_group, true).await, BTreeSet::new());
    for (service, own) in [("web", web), ("api", api)] {
        let described = aws.ecs.describe_services().cluster(&p.stack).services(service).send().await.unwrap();
        let vpc = described.services()[0].network_configuration().unwrap().awsvpc_configuration().unwrap();
        let groups: BTreeSet<String> = vpc.security_groups().iter().cloned().collect();
        assert_eq!(groups, set(&[own.clone(), clients.clone()]), "{service}'s tasks: its group and the clients group");
    }
    // Ingress is unchanged by egress: web may call api, nobody may call web.
    assert_eq!(rules(&aws, api, false).await, set(&[format!("tcp/9090 {web}")]));
    assert_eq!(rules(&aws, web, false).await, BTreeSet::new());

    check_role_and_logs(&aws, &p).await;
    let status = p.secep(&["status"]);
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("Egress: VPC endpoints"), "{}", status.stdout);

    // An endpoint policy opened by hand (AWS's default: anything) is drift that `up` narrows again.
    let s3 = endpoints.vpc_endpoints().iter().find(|e| e.service_name().unwrap().ends_with(".s3")).unwrap();
    let s3_id = s3.vpc_endpoint_id().unwrap();
    let open =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}"#;
    aws.ec2.modify_vpc_endpoint().vpc_endpoint_id(s3_id).policy_document(open).send().await.unwrap();
    let status = p.secep(&["status"]);
    assert!(status.code == 2 && status.stdout.contains("policy differs from the config's"), "{}", status.stdout);
    p.secep(&["up"]).success();
    let again = aws.ec2.describe_vpc_endpoints().vpc_endpoint_ids(s3_id).send().await.unwrap();
    let doc = again.vpc_endpoints()[0].policy_document().unwrap().to_string();
    assert!(doc.contains("starport-layer-bucket") && !doc.contains(r#""Action":"*""#), "narrowed again: {doc}");

    // down removes everything but the log group, which it keeps (logs outlive deployments) and says so.
    let stderr = down_leaves_nothing(&aws, &p, &[]).await;
    assert!(stderr.contains("kept logs"), "{stderr}");
    assert!(log_group_exists(&aws, &p).await, "the log group is kept without --delete-logs");
    // A new `up` takes the kept group back instead of failing on its name.
    let again = p.secep(&["up"]).success();
    assert!(again.stderr.contains("adopted logs"), "{}", again.stderr);
    down_leaves_nothing(&aws, &p, &["--delete-logs"]).await;
    assert!(!log_group_exists(&aws, &p).await, "--delete-logs deletes the log group");
}

#[tokio::test]
async fn nat_mode_per_az_routes_each_private_subnet_through_its_own_nat_gateway() {
    let p = project("egress-nat", "egress = \"nat\"\nnat_gateways = \"per_az\"");
    let aws = aws().await;
    p.secep(&["up"]).success();
    let s = stack(&aws, &p).await;
    let az_of = |node: &str| node.rsplit('/').next().unwrap().to_string();

    // One public subnet per AZ, carved after the private ones, inside the VPC.
    let public: Vec<(&String, &String)> = s.subnets.iter().filter(|(n, _)| n.starts_with("public-subnet/")).collect();
    assert_eq!(public.len(), 2, "{:?}", s.subnets);
    let described =
        aws.ec2.describe_subnets().set_subnet_ids(Some(public.iter().map(|(_, id)| (*id).clone()).collect()));
    let cidrs: BTreeSet<String> =
        described.send().await.unwrap().subnets().iter().map(|s| s.cidr_block().unwrap().to_string()).collect();
    assert_eq!(cidrs, set(&["10.40.128.0/18".to_string(), "10.40.192.0/18".to_string()]));

    // An internet gateway attached to the VPC, the public route table's default route.
    let igws = aws.ec2.describe_internet_gateways().filters(ec2_filter("attachment.vpc-id", &s.vpc)).send().await;
    let igws = igws.unwrap();
    assert_eq!(igws.internet_gateways().len(), 1);
    let igw = igws.internet_gateways()[0].internet_gateway_id().unwrap().to_string();

    // A NAT gateway with an elastic IP in each public subnet.
    let nats = aws.ec2.describe_nat_gateways().filter(ec2_filter("vpc-id", &s.vpc)).send().await.unwrap();
    let nats: Vec<_> =
        nats.nat_gateways().iter().filter(|n| n.state().map(|s| s.as_str()) == Some("available")).collect();
    assert_eq!(nats.len(), 2);
    let nat_in = |subnet: &str| {
        let n = nats.iter().find(|n| n.subnet_id() == Some(subnet)).unwrap_or_else(|| panic!("no NAT in {subnet}"));
        assert!(n.nat_gateway_addresses().iter().any(|a| a.allocation_id().is_some()), "NAT has an elastic IP");
        n.nat_gateway_id().unwrap().to_string()
    };

    // Every subnet's route table: public → internet gateway; private → the NAT gateway of its own AZ.
    let tables = aws.ec2.describe_route_tables().filters(ec2_filter("vpc-id", &s.vpc)).send().await.unwrap();
    let default_route_of = |subnet: &str| {
        let table = tables
            .route_tables()
            .iter()
            .find(|t| t.associations().iter().any(|a| a.subnet_id() == Some(subnet)))
            .unwrap_or_else(|| panic!("{subnet} has no route table of its own"));
        let route = table.routes().iter().find(|r| r.destination_cidr_block() == Some("0.0.0.0/0")).unwrap();
        route.nat_gateway_id().or(route.gateway_id()).unwrap().to_string()
    };
    for (node, subnet) in &s.subnets {
        let expected = if node.starts_with("public-subnet/") {
            igw.clone()
        } else {
            nat_in(&s.subnets[&format!("public-subnet/{}", az_of(node))])
        };
        assert_eq!(default_route_of(subnet), expected, "{node}");
    }
    // No VPC endpoints in NAT mode.
    let endpoints = aws.ec2.describe_vpc_endpoints().filters(ec2_filter("vpc-id", &s.vpc)).send().await.unwrap();
    assert!(endpoints.vpc_endpoints().is_empty());

    // Egress: the peers, and HTTPS anywhere (through NAT); nothing else.
    let (web, api) = (&s.groups["sg/web"], &s.groups["sg/api"]);
    let https = "tcp/443 0.0.0.0/0".to_string();
    assert_eq!(rules(&aws, web, true).await, set(&[https.clone(), format!("tcp/9090 {api}")]));
    assert_eq!(rules(&aws, api, true).await, set(&[https]));
    check_role_and_logs(&aws, &p).await;

    down_leaves_nothing(&aws, &p, &["--delete-logs"]).await;
    assert!(!log_group_exists(&aws, &p).await);
}

#[tokio::test]
async fn none_mode_is_isolated_and_status_warns_that_tasks_cannot_pull() {
    let p = project("egress-none", "egress = \"none\"");
    let aws = aws().await;
    p.secep(&["up"]).success();
    let s = stack(&aws, &p).await;
    let endpoints = aws.ec2.describe_vpc_endpoints().filters(ec2_filter("vpc-id", &s.vpc)).send().await.unwrap();
    assert!(endpoints.vpc_endpoints().is_empty());
    let igws = aws.ec2.describe_internet_gateways().filters(ec2_filter("attachment.vpc-id", &s.vpc)).send().await;
    assert!(igws.unwrap().internet_gateways().is_empty());
    let nats = aws.ec2.describe_nat_gateways().filter(ec2_filter("vpc-id", &s.vpc)).send().await.unwrap();
    assert!(nats.nat_gateways().is_empty());
    let tables = aws.ec2.describe_route_tables().filters(ec2_filter("vpc-id", &s.vpc)).send().await.unwrap();
    for t in tables.route_tables() {
        assert!(t.routes().iter().all(|r| r.destination_cidr_block() != Some("0.0.0.0/0")), "{t:?}");
    }
    // Egress: only the peers.
    let (web, api) = (&s.groups["sg/web"], &s.groups["sg/api"]);
    assert_eq!(rules(&aws, web, true).await, set(&[format!("tcp/9090 {api}")]));
    assert_eq!(rules(&aws, api, true).await, BTreeSet::new());
    check_role_and_logs(&aws, &p).await;

    let status = p.secep(&["status"]);
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    assert!(status.stderr.contains("tasks cannot pull images from ECR or Docker Hub"), "{}", status.stderr);
    down_leaves_nothing(&aws, &p, &["--delete-logs"]).await;
}

#[tokio::test]
async fn switching_egress_mode_converges_in_place() {
    let p = project("egress-switch", "");
    let aws = aws().await;
    p.secep(&["up"]).success();
    // endpoints → NAT: endpoints removed, NAT path added, the service groups' egress rewritten, nothing replaced.
    p.write_config(
        &std::fs::read_to_string(p.config_path()).unwrap().replace("max_azs = 2\n", "max_azs = 2\negress = \"nat\"\n"),
    );
    let plan = p.secep(&["plan"]);
    assert_eq!(plan.code, 2, "{}", plan.stdout);
    p.secep(&["up"]).success();
    let s = stack(&aws, &p).await;
    let endpoints = aws.ec2.describe_vpc_endpoints().filters(ec2_filter("vpc-id", &s.vpc)).send().await.unwrap();
    let states: Vec<String> =
        endpoints.vpc_endpoints().iter().map(|v| v.state().unwrap().as_str().to_ascii_lowercase()).collect();
    assert!(states.iter().all(|s| s == "deleted" || s == "deleting"), "the endpoints are gone: {states:?}");
    assert!(!s.groups.contains_key("vpce-sg"), "the endpoint group is gone: {:?}", s.groups);
    let https = "tcp/443 0.0.0.0/0".to_string();
    assert_eq!(rules(&aws, &s.groups["sg/api"], true).await, set(&[https]));
    let status = p.secep(&["status"]);
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    down_leaves_nothing(&aws, &p, &["--delete-logs"]).await;
}

/// Regression: moto ignores tag filters on DescribeNatGateways, so a stack in NAT mode read every other stack's NAT
/// gateway as its own `nat/<az>` (status: EXTRA; `down --adopt`: "not owned"). Two NAT stacks side by side: each
/// sees exactly its own, and tearing one down leaves the other's gateway running.
#[tokio::test]
async fn another_stacks_nat_gateway_is_never_taken_for_this_ones() {
    let aws = aws().await;
    let first = project("nat-first", "egress = \"nat\"");
    let second = project("nat-second", "egress = \"nat\"");
    first.secep(&["up"]).success();
    second.secep(&["up"]).success();
    let status = second.secep(&["status"]);
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    let adopt = second.secep(&["down", "--yes", "--adopt"]);
    assert_eq!(adopt.code, 0, "{}", adopt.stderr);
    assert!(adopt.stderr.contains(", 0 not owned,"), "{}", adopt.stderr);
    let vpc = stack(&aws, &first).await.vpc;
    let nats = aws.ec2.describe_nat_gateways().filter(ec2_filter("vpc-id", &vpc)).send().await.unwrap();
    let available = nats.nat_gateways().iter().filter(|n| n.state().map(|s| s.as_str()) == Some("available")).count();
    assert_eq!(available, 1, "the first stack's NAT gateway survives the second's teardown");
    down_leaves_nothing(&aws, &first, &["--delete-logs"]).await;
    assert_eq!(crate::down::leftovers(&aws, &second).await, Vec::<String>::new());
}

/// Issue 20: the VPC's default security group admits all traffic among its members and lets everything out, until
/// secep revokes both (CIS EC2.2). A rule put back by hand is drift that `up` revokes.
#[tokio::test]
async fn the_vpcs_default_group_keeps_no_rules() {
    let aws = aws().await;
    let p = project("defaultsg", "");
    p.secep(&["up"]).success();
    let vpc = stack(&aws, &p).await.vpc;
    let default_group = || async {
        let out = aws
            .ec2
            .describe_security_groups()
            .filters(ec2_filter("vpc-id", &vpc))
            .filters(ec2_filter("group-name", "default"))
            .send()
            .await
            .unwrap();
        out.security_groups()[0].clone()
    };
    let group = default_group().await;
    assert!(group.ip_permissions().is_empty() && group.ip_permissions_egress().is_empty(), "{group:?}");

    let id = group.group_id().unwrap();
    aws.ec2
        .authorize_security_group_ingress()
        .group_id(id)
        .ip_protocol("-1")
        .cidr_ip("10.40.0.0/16")
        .send()
        .await
        .unwrap();
    let status = p.secep(&["status"]);
    assert!(status.code == 2 && status.stdout.contains("CIS EC2.2"), "{}", status.stdout);
    p.secep(&["up"]).success();
    assert!(default_group().await.ip_permissions().is_empty(), "up revoked the hand-added rule");
    p.secep(&["down", "--yes", "--delete-logs"]).success();
}

/// The S3 gateway endpoint's policy, read back with a describe.
async fn s3_endpoint_policy(aws: &Aws, p: &Project) -> serde_json::Value {
    let out = aws.ec2.describe_vpc_endpoints().filters(ec2_filter("tag:secep:node", "vpce/s3"));
    let out = out.filters(ec2_filter("tag:secep:stack", &p.stack)).send().await.unwrap();
    assert_eq!(out.vpc_endpoints().len(), 1);
    serde_json::from_str(out.vpc_endpoints()[0].policy_document().unwrap()).unwrap()
}

#[tokio::test]
async fn listed_s3_buckets_open_the_s3_endpoint_to_the_services_task_role_only() {
    let p = project("egress-buckets", "");
    let role = "arn:aws:iam::123456789012:role/api-task";
    p.write_config(&std::fs::read_to_string(p.config_path()).unwrap().replace(
        &format!("task_role_arn = \"{role}\"\n"),
        &format!("task_role_arn = \"{role}\"\ns3_buckets = [\"reports-2026\", \"exports.example.com\"]\n"),
    ));
    let aws = aws().await;
    p.secep(&["up"]).success();
    let policy = s3_endpoint_policy(&aws, &p).await;
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "image layers, and api's buckets: {policy}");
    assert_eq!(statements[0]["Resource"], "arn:aws:s3:::prod-us-east-1-starport-layer-bucket/*");
    let grant = &statements[1];
    assert_eq!(grant["Condition"], serde_json::json!({"ArnEquals": {"aws:PrincipalArn": role}}), "api's role only");
    let resources: BTreeSet<&str> = grant["Resource"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert_eq!(
        resources,
        BTreeSet::from([
            "arn:aws:s3:::exports.example.com",
            "arn:aws:s3:::exports.example.com/*",
            "arn:aws:s3:::reports-2026",
            "arn:aws:s3:::reports-2026/*",
        ])
    );
    // web lists no bucket and has no role: nothing in the policy names it, and its group gains no S3 rule.
    let s = stack(&aws, &p).await;
    assert_eq!(rules(&aws, &s.groups["sg/web"], true).await, set(&[format!("tcp/9090 {}", s.groups["sg/api"])]));

    // The list removed: the endpoint narrows back to image layers, in place.
    p.write_config(
        &std::fs::read_to_string(p.config_path())
            .unwrap()
            .replace("s3_buckets = [\"reports-2026\", \"exports.example.com\"]\n", ""),
    );
    let plan = p.secep(&["plan"]);
    assert!(plan.code == 2 && plan.stdout.contains("vpce/s3"), "{}", plan.stdout);
    p.secep(&["up"]).success();
    let policy = s3_endpoint_policy(&aws, &p).await;
    assert_eq!(policy["Statement"].as_array().unwrap().len(), 1, "{policy}");
    assert!(!policy.to_string().contains("reports-2026"), "{policy}");
    down_leaves_nothing(&aws, &p, &["--delete-logs"]).await;
}

/// Issue 20: AWS's default quota is 60 inbound rules per group (moto enforces it). The endpoints admit one clients
/// group that every task carries, not one rule per service group, so a stack of 70 services deploys.
#[tokio::test]
async fn seventy_services_deploy_behind_one_endpoint_rule() {
    let (text, edges) = crate::kill::mesh(70);
    let p = Project::with_config("egress-70", &text);
    let aws = aws().await;
    p.secep(&["up"]).success();
    assert_eq!(crate::kill::census(&aws, &p).await, crate::kill::expected(70, edges, 2), "the whole mesh, once");
    let s = stack(&aws, &p).await;
    let clients = &s.groups["vpce-clients-sg"];
    assert_eq!(rules(&aws, &s.groups["vpce-sg"], false).await, set(&[format!("tcp/443 {clients}")]));
    let names: Vec<String> = (0..70).map(|i| format!("s{i}")).collect();
    for batch in names.chunks(10) {
        let out = aws.ecs.describe_services().cluster(&p.stack).set_services(Some(batch.to_vec())).send().await;
        for svc in out.unwrap().services() {
            let vpc = svc.network_configuration().unwrap().awsvpc_configuration().unwrap();
            let own = &s.groups[&format!("sg/{}", svc.service_name().unwrap())];
            let groups: BTreeSet<String> = vpc.security_groups().iter().cloned().collect();
            assert_eq!(groups, set(&[own.clone(), clients.clone()]), "{:?}", svc.service_name());
        }
    }
    let status = p.secep(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    down_leaves_nothing(&aws, &p, &["--delete-logs"]).await;
}
