//! Issue 20, the caller's own policy: every call secep makes in a whole lifecycle (an `up` with secrets and an S3
//! state, `status`, `plan`, a switch to NAT egress, two public services behind the load balancer, `down`), as the
//! proxy logs it, needs only actions that `secep iam-policy` prints for the config. A call the table does not know
//! fails the test, naming it.

use std::collections::BTreeSet;

use crate::harness::{Project, Proxy, aws};

/// Every action the printed policy grants.
fn granted(p: &Project, args: &[&str]) -> BTreeSet<String> {
    let printed = p.secep(&[&["iam-policy"], args].concat()).success();
    let doc: serde_json::Value = serde_json::from_str(&printed.stdout).unwrap();
    let mut out = BTreeSet::new();
    for statement in doc["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow");
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                out.insert(a.clone());
            }
            serde_json::Value::Array(list) => out.extend(list.iter().map(|a| a.as_str().unwrap().to_string())),
            other => panic!("unexpected Action {other}"),
        }
    }
    assert!(!out.iter().any(|a| a.contains('*')), "no wildcard actions: {out:?}");
    out
}

#[tokio::test]
async fn every_call_of_a_lifecycle_is_allowed_by_the_printed_policy() {
    let aws = aws().await;
    let bucket = crate::harness::unique("secep-policy").to_lowercase();
    aws.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let state = format!("s3://{bucket}/state.json");
    let p = Project::with_config("policy", &crate::secrets::config(true));
    let proxy = Proxy::start(&["--strict"]);
    let run = |args: &[&str]| p.secep_at(&proxy.url, &[args, &["--state", &state]].concat());

    run(&["up"]).success();
    run(&["status"]).success();
    run(&["plan"]).success();
    run(&["state", "show"]).success();
    let nat = crate::secrets::config(true).replace("max_azs = 2", "max_azs = 2\negress = \"nat\"");
    p.write_template(&nat);
    run(&["up"]).success();
    // Both services public behind the load balancer, api on a path; then a new health check.
    let public =
        format!("{nat}\n[services.web.public]\nport = 80\n\n[services.api.public]\nport = 80\npath = \"/api/*\"\n");
    p.write_template(&public);
    run(&["up"]).success();
    p.write_template(&public.replace("path = \"/api/*\"", "path = \"/api/*\"\nhealth_check_path = \"/ready\""));
    run(&["up"]).success();
    run(&["down", "--yes", "--delete-logs"]).success();

    let policy = granted(&p, &["--state", &state]);
    let mut unknown = BTreeSet::new();
    let mut missing = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for call in proxy.calls() {
        let service = call["scope"].as_str().or(call["service"].as_str()).unwrap_or("?").to_string();
        let Some(operation) = call["operation"].as_str() else {
            unknown.insert(format!("{service} {}", call["params"]));
            continue;
        };
        seen.insert(format!("{service}:{operation}"));
        match secep::commands::iam_policy::actions_for(&service, operation) {
            None => {
                unknown.insert(format!("{service}:{operation}"));
            }
            Some(actions) => missing.extend(actions.into_iter().filter(|a| !policy.contains(*a)).map(String::from)),
        }
    }
    assert_eq!(unknown, BTreeSet::new(), "calls the operation → action table does not know");
    assert_eq!(missing, BTreeSet::new(), "actions secep used that `secep iam-policy` does not grant");
    for call in [
        "iam:PutRolePolicy",
        "ec2:CreateNatGateway",
        "s3:PutObject",
        "ecs:CreateService",
        "logs:DeleteLogGroup",
        "elasticloadbalancing:CreateRule",
        "elasticloadbalancing:ModifyTargetGroup",
    ] {
        assert!(seen.contains(call), "the lifecycle exercised {call}: {seen:?}");
    }
    eprintln!("{} distinct operations checked", seen.len());
}
