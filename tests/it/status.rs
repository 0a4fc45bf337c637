//! `secep status` and `secep plan`: desired vs recorded vs live, drift named correctly, the reachability audit, and
//! `up` repairing what was changed behind its back. Read-only commands are checked for zero mutating calls through
//! the proxy's call log.

use aws_sdk_ec2::types::{IpPermission, IpRange, UserIdGroupPair};

use crate::harness::{Project, Proxy, Run, aws, ec2_filter};

/// Three services, one-way calls: web -> api -> db.
const CHAIN: &str = r#"[stack]
name = "{stack}"

[network]
cidr = "10.1.0.0/16"
max_azs = 2

[namespace]
name = "{namespace}"

[services.web]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web"
port = 8080
calls = ["api"]

[services.api]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api"
port = 9000
calls = ["db"]

[services.db]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/db"
port = 5432
"#;

fn mutating_calls(proxy: &Proxy) -> Vec<serde_json::Value> {
    proxy.calls().into_iter().filter(|c| c["mutating"] == true).collect()
}

fn verdict<'a>(status: &'a serde_json::Value, node: &str) -> &'a str {
    status["nodes"].as_array().unwrap().iter().find(|n| n["node"] == node).unwrap()["verdict"].as_str().unwrap()
}

/// Ids and the per-test stack name replaced, runs of spaces collapsed: stable across runs.
fn normalise(run: &Run, p: &Project) -> String {
    let text = run.stdout.replace(&p.stack, "STACK");
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| {
                let (open, word) = w.strip_prefix('(').map_or(("", w), |rest| ("(", rest));
                if word.starts_with("sg-rule") {
                    return w.to_string();
                }
                for prefix in ["vpc-", "subnet-", "sgr-", "sg-", "ns-", "srv-", "rtbassoc-", "rtb-", "vpce-", "pl-"] {
                    if let Some(rest) = word.strip_prefix(prefix) {
                        let end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
                        // AWS ids, not node names such as vpc-dns or rtb-assoc/...
                        if end >= 8 {
                            return format!("{open}{prefix}ID{}", &rest[end..]);
                        }
                    }
                }
                w.to_string()
            })
            .collect();
        out.push(words.join(" "));
    }
    out.join("\n")
}

#[tokio::test]
async fn status_after_up_is_in_sync_and_the_matrix_equals_the_declared_graph() {
    let p = Project::with_config("status", CHAIN);
    p.secep(&["up"]).success();
    let proxy = Proxy::start(&[]);
    let human = p.secep_at(&proxy.url, &["status"]);
    assert_eq!(human.code, 0, "{}\n{}", human.stdout, human.stderr);
    insta::assert_snapshot!(normalise(&human, &p));
    assert_columns_line_up(&human.stdout);
    let json = p.secep_at(&proxy.url, &["status", "--json"]).success().json();
    assert_eq!(json["in_sync"], true);
    let allowed: Vec<String> = json["reachability"]["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!("{}->{} {}", p["from"].as_str().unwrap(), p["to"].as_str().unwrap(), p["ports"].as_str().unwrap())
        })
        .collect();
    assert_eq!(allowed, ["api->db tcp/5432", "web->api tcp/9000"]);
    assert!(mutating_calls(&proxy).is_empty(), "status must not change anything");
}

#[tokio::test]
async fn resources_deleted_behind_seceps_back_are_named_and_repaired_by_up() {
    let p = Project::with_config("drift", CHAIN);
    p.secep(&["up"]).success();
    let aws = aws().await;
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p.state_path()).unwrap()).unwrap();
    let subnet = state["nodes"]["subnet/us-east-1a"]["id"].as_str().unwrap().to_string();
    let sd_api = state["nodes"]["sd/api"]["id"].as_str().unwrap().to_string();
    aws.sd.delete_service().id(&sd_api).send().await.unwrap();
    aws.ec2.delete_subnet().subnet_id(&subnet).send().await.unwrap();

    let status = p.secep(&["status", "--json"]);
    assert_eq!(status.code, 2, "{}", status.stderr);
    let json = status.json();
    assert_eq!(verdict(&json, "subnet/us-east-1a"), "missing-live");
    assert_eq!(verdict(&json, "sd/api"), "missing-live");
    assert_eq!(verdict(&json, "sd/web"), "in-sync");

    let plan = p.secep(&["plan"]);
    assert_eq!(plan.code, 2);
    assert!(
        plan.stdout.contains("+ recreate   subnet/us-east-1a") && plan.stdout.contains("+ recreate   sd/api"),
        "{}",
        plan.stdout
    );

    let up = p.secep(&["up"]).success();
    assert!(
        up.stderr.contains("recreated subnet/us-east-1a") && up.stderr.contains("updated svc/api"),
        "{}",
        up.stderr
    );
    let after = p.secep(&["status", "--json"]);
    assert_eq!(after.code, 0, "{}", after.stdout);
    // The services now use the new subnet and the new Cloud Map service (checked live, not from the state).
    let subnets = aws.ec2.describe_subnets().filters(ec2_filter("tag:secep:stack", &p.stack)).send().await.unwrap();
    let live_subnets: Vec<String> = subnets.subnets().iter().map(|s| s.subnet_id().unwrap().to_string()).collect();
    assert!(!live_subnets.contains(&subnet) && live_subnets.len() == 2);
    let svc = aws
        .ecs
        .describe_services()
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .cluster(&p.stack)
        .services("api")
        .send()
        .await
        .unwrap();
    let svc = &svc.services()[0];
    let used: Vec<String> = svc.network_configuration().unwrap().awsvpc_configuration().unwrap().subnets().to_vec();
    assert!(used.iter().all(|s| live_subnets.contains(s)), "{used:?} vs {live_subnets:?}");
    let registry = svc.service_registries()[0].registry_arn().unwrap();
    assert!(!registry.ends_with(&sd_api), "api must be registered in the recreated Cloud Map service");
}

#[tokio::test]
async fn undeclared_paths_are_flagged_and_revoked_by_up() {
    let p = Project::with_config("audit", CHAIN);
    p.secep(&["up"]).success();
    let aws = aws().await;
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p.state_path()).unwrap()).unwrap();
    let group = |svc: &str| state["nodes"][format!("sg/{svc}")]["id"].as_str().unwrap().to_string();
    // A hand-added rule open to the world, and a path between two services that do not call each other.
    aws.ec2
        .authorize_security_group_ingress()
        .group_id(group("api"))
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(9000)
                .to_port(9000)
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    aws.ec2
        .authorize_security_group_ingress()
        .group_id(group("db"))
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(5432)
                .to_port(5432)
                .user_id_group_pairs(UserIdGroupPair::builder().group_id(group("web")).build())
                .build(),
        )
        .send()
        .await
        .unwrap();

    let status = p.secep(&["status", "--json"]);
    assert_eq!(status.code, 2);
    let extra: Vec<String> = status.json()["reachability"]["extra"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!("{}->{} {}", p["from"].as_str().unwrap(), p["to"].as_str().unwrap(), p["ports"].as_str().unwrap())
        })
        .collect();
    assert_eq!(extra, ["anywhere (0.0.0.0/0)->api tcp/9000", "web->db tcp/5432"]);
    let human = p.secep(&["status"]);
    assert!(human.stdout.contains("EXTRA path: anywhere (0.0.0.0/0) -> api on tcp/9000"), "{}", human.stdout);

    let up = p.secep(&["up"]).success();
    assert_eq!(up.stderr.matches("revoked sg-rule").count(), 2, "{}", up.stderr);
    let after = p.secep(&["status", "--json"]);
    assert_eq!(after.code, 0, "{}", after.stdout);
    let api = aws.ec2.describe_security_groups().group_ids(group("api")).send().await.unwrap();
    assert!(api.security_groups()[0].ip_permissions().iter().all(|p| p.ip_ranges().is_empty()), "no CIDR rule is left");
}

#[tokio::test]
async fn plan_lists_every_node_as_create_then_nothing_and_never_mutates() {
    let p = Project::with_config("plan", CHAIN);
    let proxy = Proxy::start(&[]);
    let fresh = p.secep_at(&proxy.url, &["plan", "--json"]);
    assert_eq!(fresh.code, 2, "pending changes exit 2: {}", fresh.stderr);
    let json = fresh.json();
    let nodes = json["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 40);
    assert!(nodes.iter().all(|n| n["action"] == "create"), "{nodes:?}");
    assert_eq!(json["summary"]["create"], 40);
    assert!(mutating_calls(&proxy).is_empty(), "plan must not change anything");

    p.secep(&["up"]).success();
    let after = p.secep_at(&proxy.url, &["plan"]);
    assert_eq!(after.code, 0, "{}", after.stdout);
    assert!(
        after.stdout.contains("Plan: 0 to create, 0 to update, 0 to delete, 0 to revoke, 40 unchanged"),
        "{}",
        after.stdout
    );
    assert!(mutating_calls(&proxy).is_empty());
}

/// The node table's columns line up: every row's DESIRED, RECORDED, LIVE and VERDICT cells start under their
/// headers (the snapshot collapses whitespace, so it cannot see this). Regression: the 23-character kind
/// `route table association` overflowed a fixed 19-wide KIND column and pushed its rows out of line.
fn assert_columns_line_up(table: &str) {
    let mut lines = table.lines().skip_while(|l| !l.starts_with("NODE "));
    let header = lines.next().expect("a NODE header");
    let starts: Vec<usize> =
        ["DESIRED", "RECORDED", "LIVE", "VERDICT"].iter().map(|h| header.find(h).unwrap()).collect();
    for row in lines.take_while(|l| !l.trim().is_empty()) {
        for &at in &starts {
            let starts_here = row[..at].ends_with(' ') && !row[at..].starts_with(' ');
            assert!(starts_here, "the cell at column {at} is out of line:\n{header}\n{row}");
        }
    }
}

/// Issue 20: an account-level CloudWatch Logs retention overrides the group's, and DescribeLogGroups reports it
/// (the proxy's `logs_account_retention_days` stands for it). Once `up` has seen the account keep its own value,
/// that is not drift (it was: `status` exited 2 for ever); a retention that later differs again still is.
#[tokio::test]
async fn an_account_level_log_retention_is_not_drift() {
    let p = Project::with_config("acct-retention", CHAIN);
    let proxy = Proxy::start(&[]);
    proxy.configure(r#"{"logs_account_retention_days": 365}"#);
    p.secep_at(&proxy.url, &["up", "--no-wait"]).success();
    let aws = aws().await;
    let name = format!("/secep/{}", p.stack);
    let groups = aws.logs.describe_log_groups().log_group_name_prefix(&name).send().await.unwrap();
    let arn = groups.log_groups()[0].log_group_arn().unwrap().to_string();
    let tags = aws.logs.list_tags_for_resource().resource_arn(&arn).send().await.unwrap();
    assert_eq!(tags.tags().unwrap().get("secep:account-retention").map(String::as_str), Some("365"));
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(30), "secep set the config's retention");

    let status = p.secep_at(&proxy.url, &["status", "--json"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    assert_eq!(verdict(&status.json(), "logs"), "in-sync");
    let up = p.secep_at(&proxy.url, &["up", "--no-wait"]).success();
    assert!(up.stderr.contains("Up to date"), "{}", up.stderr);

    // The account's policy changes: a retention nobody has seen kept is drift, and up takes note of it.
    proxy.configure(r#"{"logs_account_retention_days": 7}"#);
    let status = p.secep_at(&proxy.url, &["status"]);
    assert!(status.code == 2 && status.stdout.contains("retention is 7 days, not 30 days"), "{}", status.stdout);
    p.secep_at(&proxy.url, &["up", "--no-wait"]).success();
    assert_eq!(p.secep_at(&proxy.url, &["status"]).code, 0);
    p.secep_at(&proxy.url, &["down", "--yes", "--delete-logs"]).success();
}
