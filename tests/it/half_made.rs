//! Issue 16: a resource made by two calls and interrupted between them (or undone by hand) is never trusted: `status`
//! names what is missing, and `up` completes it through the same sync a fresh create runs. Checked live with
//! independent describes.

use crate::harness::{Project, aws, ec2_filter};

const NAT: &str = r#"[stack]
name = "{stack}"

[network]
cidr = "10.41.0.0/16"
max_azs = 2
egress = "nat"
nat_gateways = "one"

[namespace]
name = "{namespace}"

[services.web]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web-image"
port = 8080
"#;

const POLICY: &str = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy";

fn verdict(status: &serde_json::Value, node: &str) -> (String, String) {
    let n = status["nodes"].as_array().unwrap().iter().find(|n| n["node"] == node).unwrap_or_else(|| panic!("{node}"));
    (n["verdict"].as_str().unwrap().to_string(), n["details"].to_string())
}

/// The filters that find one node's EC2 resource by its tags.
fn node_filters(p: &Project, node: &str) -> Option<Vec<aws_sdk_ec2::types::Filter>> {
    Some(vec![ec2_filter("tag:secep:stack", &p.stack), ec2_filter("tag:secep:node", node)])
}

#[tokio::test]
async fn an_unattached_gateway_a_role_without_its_policy_and_a_table_without_its_route_are_completed() {
    let p = Project::with_config("halfmade", NAT);
    let aws = aws().await;
    p.secep(&["up"]).success();
    let az = aws.ec2.describe_subnets().set_filters(node_filters(&p, "subnet/us-east-1a"));
    let subnet = az.send().await.unwrap();
    assert_eq!(subnet.subnets().len(), 1, "the private subnet of us-east-1a");
    let vpc = subnet.subnets()[0].vpc_id().unwrap().to_string();
    let igw = aws.ec2.describe_internet_gateways().set_filters(node_filters(&p, "igw"));
    let igw = igw.send().await.unwrap().internet_gateways()[0].internet_gateway_id().unwrap().to_string();
    let tables = aws.ec2.describe_route_tables().set_filters(node_filters(&p, "rtb/us-east-1a"));
    let table = tables.send().await.unwrap().route_tables()[0].route_table_id().unwrap().to_string();
    let role = format!("{}-ecs-execution", p.stack);

    // What a run killed between the two calls of each leaves behind.
    aws.ec2.detach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc).send().await.unwrap();
    aws.iam.detach_role_policy().role_name(&role).policy_arn(POLICY).send().await.unwrap();
    aws.ec2.delete_route().route_table_id(&table).destination_cidr_block("0.0.0.0/0").send().await.unwrap();

    let status = p.secep(&["status", "--json"]);
    assert_eq!(status.code, 2, "status must not say in sync:\n{}", status.stdout);
    let json = status.json();
    for node in ["igw", "role/execution", "rtb/us-east-1a"] {
        assert_eq!(verdict(&json, node).0, "drifted", "{node}: {:?}", verdict(&json, node));
    }
    assert!(verdict(&json, "role/execution").1.contains("AmazonECSTaskExecutionRolePolicy"));

    let up = p.secep(&["up"]).success();
    assert!(up.stderr.contains("updated igw") && up.stderr.contains("updated role/execution"), "{}", up.stderr);
    let status = p.secep(&["status", "--json"]);
    assert_eq!(status.code, 0, "{}", status.stdout);

    let gateways = aws.ec2.describe_internet_gateways().internet_gateway_ids(&igw).send().await.unwrap();
    let attached: Vec<_> =
        gateways.internet_gateways()[0].attachments().iter().filter_map(|a| a.vpc_id()).map(str::to_string).collect();
    assert_eq!(attached, [vpc]);
    let policies = aws.iam.list_attached_role_policies().role_name(&role).send().await.unwrap();
    assert!(policies.attached_policies().iter().any(|a| a.policy_arn() == Some(POLICY)), "{policies:?}");
    let tables = aws.ec2.describe_route_tables().route_table_ids(&table).send().await.unwrap();
    let route = tables.route_tables()[0].routes().iter().find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"));
    assert!(route.and_then(|r| r.nat_gateway_id()).is_some_and(|n| n.starts_with("nat-")), "{route:?}");
    p.secep(&["down", "--yes"]).success();
}
