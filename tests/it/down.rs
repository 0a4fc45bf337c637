//! `secep down` end to end, through the fidelity proxy with its strict AWS rules on: teardown finishes where other
//! deployers get stuck, leaves nothing tagged for the stack, and never deletes what the stack does not own.

use aws_sdk_ecs::types::TaskDefinitionStatus;

use crate::harness::{Aws, Project, Proxy, aws, ec2_filter};

/// Counts live resources of the stack, kind by kind, with independent describe calls. The log group is not one:
/// `down` keeps it unless `--delete-logs` (tests/it/egress.rs checks both).
pub(crate) async fn leftovers(aws: &Aws, p: &Project) -> Vec<String> {
    let mut left = Vec::new();
    let tagged = || ec2_filter("tag:secep:stack", &p.stack);
    for v in aws.ec2.describe_vpcs().filters(tagged()).send().await.unwrap().vpcs() {
        left.push(format!("vpc {}", v.vpc_id().unwrap()));
    }
    for s in aws.ec2.describe_subnets().filters(tagged()).send().await.unwrap().subnets() {
        left.push(format!("subnet {}", s.subnet_id().unwrap()));
    }
    for g in aws.ec2.describe_security_groups().filters(tagged()).send().await.unwrap().security_groups() {
        left.push(format!("security group {}", g.group_id().unwrap()));
    }
    for t in aws.ec2.describe_route_tables().filters(tagged()).send().await.unwrap().route_tables() {
        left.push(format!("route table {}", t.route_table_id().unwrap()));
    }
    for v in aws.ec2.describe_vpc_endpoints().filters(tagged()).send().await.unwrap().vpc_endpoints() {
        // Deleted endpoints stay visible for a while, as on AWS.
        if matches!(v.state().map(|s| s.as_str().to_ascii_lowercase()).as_deref(), Some("deleted" | "deleting")) {
            continue;
        }
        left.push(format!("vpc endpoint {}", v.vpc_endpoint_id().unwrap()));
    }
    for g in aws.ec2.describe_internet_gateways().filters(tagged()).send().await.unwrap().internet_gateways() {
        left.push(format!("internet gateway {}", g.internet_gateway_id().unwrap()));
    }
    for a in aws.ec2.describe_addresses().filters(tagged()).send().await.unwrap().addresses() {
        left.push(format!("elastic ip {}", a.allocation_id().unwrap()));
    }
    for n in aws.ec2.describe_nat_gateways().filter(tagged()).send().await.unwrap().nat_gateways() {
        // moto ignores tag filters on NAT gateways: the tag is checked here.
        let ours = n.tags().iter().any(|t| t.key() == Some("secep:stack") && t.value() == Some(p.stack.as_str()));
        if ours && !matches!(n.state().map(|s| s.as_str()), Some("deleted" | "deleting")) {
            left.push(format!("nat gateway {}", n.nat_gateway_id().unwrap()));
        }
    }
    // Elastic Load Balancing has no tag filter: every load balancer and target group, kept by their tags.
    let lbs = aws.elb.describe_load_balancers().send().await.unwrap();
    let tgs = aws.elb.describe_target_groups().send().await.unwrap();
    let lb_arns = lbs.load_balancers().iter().map(|l| l.load_balancer_arn().unwrap().to_string());
    let tg_arns = tgs.target_groups().iter().map(|t| t.target_group_arn().unwrap().to_string());
    for arn in crate::kill::elb_tagged(aws, p, lb_arns.chain(tg_arns).collect()).await {
        let kind = if arn.contains(":loadbalancer/") { "load balancer" } else { "target group" };
        left.push(format!("{kind} {arn}"));
    }
    let role = format!("{}-ecs-execution", p.stack);
    if aws.iam.get_role().role_name(&role).send().await.is_ok() {
        left.push(format!("iam role {role}"));
    }
    let clusters = aws.ecs.describe_clusters().clusters(&p.stack).send().await.unwrap();
    for c in clusters.clusters().iter().filter(|c| c.status() != Some("INACTIVE")) {
        left.push(format!("cluster {}", c.cluster_name().unwrap()));
    }
    let services = aws.ecs.list_services().cluster(&p.stack).send().await;
    if let Ok(services) = services
        && !services.service_arns().is_empty()
    {
        let described = aws
            .ecs
            .describe_services()
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .cluster(&p.stack)
            .set_services(Some(services.service_arns().to_vec()))
            .send()
            .await
            .unwrap();
        for s in described.services().iter().filter(|s| s.status() != Some("INACTIVE")) {
            left.push(format!("ecs service {}", s.service_name().unwrap()));
        }
    }
    let families = aws.ecs.list_task_definition_families().family_prefix(format!("{}-", p.stack)).send().await.unwrap();
    for family in families.families() {
        let tds = aws
            .ecs
            .list_task_definitions()
            .family_prefix(family)
            .status(TaskDefinitionStatus::Active)
            .send()
            .await
            .unwrap();
        left.extend(tds.task_definition_arns().iter().map(|a| format!("task definition {a}")));
    }
    let namespaces = aws.sd.list_namespaces().send().await.unwrap();
    for ns in namespaces.namespaces().iter().filter(|n| n.name() == Some(p.namespace.as_str())) {
        left.push(format!("namespace {}", ns.id().unwrap()));
    }
    for s in aws.sd.list_services().send().await.unwrap().services() {
        // Other tests share the emulator (whose ListServices ignores filters): their services may vanish meanwhile.
        let Ok(tags) = aws.sd.list_tags_for_resource().resource_arn(s.arn().unwrap()).send().await else { continue };
        if tags.tags().iter().any(|t| t.key() == "secep:stack" && t.value() == p.stack) {
            left.push(format!("cloud map service {}", s.id().unwrap()));
        }
    }
    left
}

async fn default_vpcs(aws: &Aws) -> usize {
    aws.ec2.describe_vpcs().filters(ec2_filter("is-default", "true")).send().await.unwrap().vpcs().len()
}

/// The order in which `down` printed its deletions.
fn deletion_order(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("deleted "))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn seed_up_then_down_leaves_nothing_and_tears_down_in_a_safe_order() {
    let proxy = Proxy::start(&["--strict"]);
    let p = Project::from_shipped("secure-endpoints.toml", "down-seed");
    let aws = aws().await;
    let default_before = default_vpcs(&aws).await;
    p.secep_at(&proxy.url, &["up"]).success();
    assert!(!leftovers(&aws, &p).await.is_empty());

    let down = p.secep_at(&proxy.url, &["down", "--yes"]).success();
    assert_eq!(leftovers(&aws, &p).await, Vec::<String>::new(), "{}", down.stderr);
    assert_eq!(default_vpcs(&aws).await, default_before, "the default VPC is untouched");
    assert!(!p.state_path().exists(), "the state file is removed once everything is gone");

    // Deletion order: every rule before any group, services before what they use, the VPC last.
    let order = deletion_order(&down.stderr);
    let pos = |id: &str| order.iter().position(|x| x == id).unwrap_or_else(|| panic!("{id} not deleted: {order:?}"));
    for rule in ["sg-rule/service1->service2", "sg-rule/service2->service1"] {
        assert!(pos(rule) < pos("sg/service1") && pos(rule) < pos("sg/service2"), "{order:?}");
    }
    for svc in ["service1", "service2"] {
        let s = pos(&format!("svc/{svc}"));
        assert!(s < pos(&format!("sd/{svc}")) && s < pos(&format!("sg/{svc}")) && s < pos("cluster"), "{order:?}");
        assert!(pos(&format!("sd/{svc}")) < pos("namespace"), "{order:?}");
    }
    assert_eq!(order.last().map(String::as_str), Some("vpc"), "{order:?}");
    // The strict proxy refused nothing for order: the order alone avoided every dependency error. (What AWS holds
    // for a while, tasks' ENIs and Cloud Map instances, is waited out: time, not order.)
    let order_rules = ["rule:sg-referenced", "rule:cluster-contains-services", "rule:sd-namespace-in-use"];
    let refused: Vec<_> = proxy
        .calls()
        .into_iter()
        .filter(|c| c["status"] != 200 && c["injected"].as_str().is_some_and(|i| order_rules.contains(&i)))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
}

#[tokio::test]
async fn mesh_of_six_services_with_mutual_calls_is_torn_down_completely() {
    let proxy = Proxy::start(&["--strict"]);
    let p = Project::from_shipped("shop.toml", "down-mesh");
    let aws = aws().await;
    p.secep_at(&proxy.url, &["up"]).success();
    p.secep_at(&proxy.url, &["down", "--yes", "--json"]).success();
    assert_eq!(leftovers(&aws, &p).await, Vec::<String>::new());
}

#[tokio::test]
async fn down_after_a_partial_up_leaves_nothing() {
    // Fail the Nth create of several kinds; each time `up` stops part way, and `down` cleans up what it made.
    let cases = [
        "CreateSubnet:2",
        "CreateSecurityGroup:1",
        "AuthorizeSecurityGroupIngress:2",
        "CreatePrivateDnsNamespace:1",
        "CreateService:3", // the first two are Cloud Map's CreateService: the third is ECS's
        "RegisterTaskDefinition:2",
    ];
    let aws = aws().await;
    for fail in cases {
        let proxy = Proxy::start(&["--strict", "--fail-nth", &format!("{fail}:InternalError:500")]);
        let p = Project::from_shipped("secure-endpoints.toml", "partial");
        // Without retries the injected error reaches secep, as a persistent failure would.
        let up = p.secep_at(&proxy.url, &["up", "--max-attempts", "1"]);
        assert_eq!(up.code, 1, "{fail}: up must fail\n{}", up.stderr);
        assert!(up.stderr.contains("InternalError"), "{fail}: {}", up.stderr);
        let down = p.secep_at(&proxy.url, &["down", "--yes"]);
        assert_eq!(down.code, 0, "{fail}: {}", down.stderr);
        assert_eq!(leftovers(&aws, &p).await, Vec::<String>::new(), "{fail}");
    }
}

#[tokio::test]
async fn lingering_fargate_enis_are_waited_out() {
    // Regression for hashicorp/terraform-provider-aws#1671 and #3414: groups and subnets refuse deletion with
    // DependencyViolation for a while after the ECS service that used them is gone.
    // A window wide enough that it is still open when the groups are deleted, even on a loaded machine.
    let proxy = Proxy::start(&["--strict", "--eni-linger-seconds", "8"]);
    let p = Project::from_shipped("secure-endpoints.toml", "linger");
    let aws = aws().await;
    p.secep_at(&proxy.url, &["up"]).success();
    let down = p.secep_at(&proxy.url, &["down", "--yes"]).success();
    assert_eq!(leftovers(&aws, &p).await, Vec::<String>::new(), "{}", down.stderr);
    let refused = proxy.calls().into_iter().filter(|c| c["injected"] == "rule:eni-in-use").count();
    assert!(refused > 0, "the linger window must actually have refused some deletes:\n{}", down.stderr);
}

#[tokio::test]
async fn a_foreign_resource_in_the_state_is_never_deleted() {
    let proxy = Proxy::start(&["--strict"]);
    let p = Project::from_shipped("secure-endpoints.toml", "foreign");
    let aws = aws().await;
    // Somebody else's group, not tagged for this stack, in the default VPC.
    let default_vpc = aws.ec2.describe_vpcs().filters(ec2_filter("is-default", "true")).send().await.unwrap().vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let foreign = aws
        .ec2
        .create_security_group()
        .group_name(format!("{}-theirs", p.stack))
        .description("not secep's")
        .vpc_id(default_vpc)
        .send()
        .await
        .unwrap();
    let foreign_id = foreign.group_id().unwrap().to_string();
    p.secep_at(&proxy.url, &["up"]).success();

    // A hand-edited state file points one node at the foreign group.
    let mut state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p.state_path()).unwrap()).unwrap();
    state["nodes"]["sg/intruder"] = serde_json::json!({ "id": foreign_id, "digest": "x" });
    std::fs::write(p.state_path(), serde_json::to_string_pretty(&state).unwrap()).unwrap();

    let down = p.secep_at(&proxy.url, &["down", "--yes"]);
    assert_eq!(down.code, 1, "not deleting something is reported as a failure\n{}", down.stderr);
    assert!(down.stderr.contains("not owned") && down.stderr.contains(&foreign_id), "{}", down.stderr);
    let still = aws.ec2.describe_security_groups().group_ids(&foreign_id).send().await.unwrap();
    assert_eq!(still.security_groups().len(), 1, "the foreign group survives");
    assert_eq!(leftovers(&aws, &p).await, Vec::<String>::new(), "everything the stack owns is gone");
    aws.ec2.delete_security_group().group_id(&foreign_id).send().await.unwrap();
}

#[tokio::test]
async fn down_twice_is_a_no_op_the_second_time() {
    let p = Project::from_shipped("secure-endpoints.toml", "twice");
    p.secep(&["up"]).success();
    p.secep(&["down", "--yes"]).success();
    let second = p.secep(&["down", "--yes"]).success();
    assert!(second.stderr.contains("Nothing to delete"), "{}", second.stderr);
    let never = Project::from_shipped("secure-endpoints.toml", "never");
    let run = never.secep(&["down"]).success();
    assert!(run.stderr.contains("Nothing to delete") && run.stderr.contains("--adopt"), "{}", run.stderr);
}

#[tokio::test]
async fn lost_state_is_recovered_by_adopting_tagged_resources() {
    let proxy = Proxy::start(&["--strict"]);
    let p = Project::from_shipped("secure-endpoints.toml", "adopt");
    let aws = aws().await;
    p.secep_at(&proxy.url, &["up"]).success();
    std::fs::remove_file(p.state_path()).unwrap();
    let down = p.secep_at(&proxy.url, &["down", "--yes", "--adopt"]).success();
    // Everything but what is account-wide (the linked role, the prefix list) and the kept log group.
    assert!(down.stderr.contains("Adopted 28 resource(s)"), "{}", down.stderr);
    assert_eq!(leftovers(&aws, &p).await, Vec::<String>::new(), "{}", down.stderr);
}

#[tokio::test]
async fn down_without_a_terminal_needs_yes() {
    let p = Project::from_shipped("secure-endpoints.toml", "confirm");
    p.secep(&["up"]).success();
    let refused = p.secep(&["down"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("pass --yes"), "{}", refused.stderr);
    assert!(p.state_path().exists(), "nothing was deleted");
    p.secep(&["down", "--yes"]).success();
}

#[tokio::test]
async fn a_lost_create_response_leaves_a_twin_that_is_named_and_removed() {
    // CreateVpc has no idempotency token: when its response is lost, the SDK's retry creates a second VPC. The first
    // carries the stack's tags and the state file's lineage, so it is never lost: status names it, and a plain
    // down removes it with the rest.
    let proxy = Proxy::start(&["--strict", "--fail-after-nth", "CreateVpc:1"]);
    let p = Project::from_shipped("secure-endpoints.toml", "twin");
    let aws = aws().await;
    p.secep_at(&proxy.url, &["up"]).success();
    let vpcs = aws.ec2.describe_vpcs().filters(ec2_filter("tag:secep:stack", &p.stack)).send().await.unwrap();
    assert_eq!(vpcs.vpcs().len(), 2, "the lost response made a twin (this is what the test is about)");

    let status = p.secep_at(&proxy.url, &["status", "--json"]);
    assert_eq!(status.code, 2);
    let extra: Vec<String> = status.json()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["verdict"] == "extra")
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect();
    assert!(extra.len() == 1 && extra[0].starts_with("vpc#vpc-"), "{extra:?}");

    let down = p.secep_at(&proxy.url, &["down", "--yes"]).success();
    assert!(
        down.stderr.contains("Found 1 resource(s) this state file's runs made but never recorded"),
        "{}",
        down.stderr
    );
    assert_eq!(leftovers(&aws, &p).await, Vec::<String>::new(), "{}", down.stderr);
}
