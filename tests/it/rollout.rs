//! `up` means the services run: it waits for every rollout it started, under AWS's clock (the proxy's pending
//! endpoints, propagating ids and roles, rollouts that take time and fail), and fails loudly, naming the service and
//! why its tasks stopped, when they do not start. Checked with independent describes and the proxy's call log.

use crate::harness::{Project, Proxy, aws};

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

fn two_services(api_image: &str) -> String {
    format!(
        r#"
[stack]
name = "{{stack}}"

[network]
cidr = "10.0.0.0/16"
max_azs = 2

[namespace]
name = "{{namespace}}"

[services.web]
image = "{ECR}/web:1"
port = 8080
calls = ["api"]

[services.api]
image = "{api_image}"
port = 9000
desired_count = 2
"#
    )
}

fn rollout<'a>(up: &'a serde_json::Value, service: &str) -> &'a serde_json::Value {
    up["rollouts"].as_array().unwrap().iter().find(|r| r["service"] == service).unwrap_or_else(|| panic!("{up}"))
}

/// The seed config and a 10-service mesh in a "fresh account": new ids NotFound for half a second, the new
/// service-linked role and execution role refused for a second, endpoints pending, rollouts that take time.
#[tokio::test]
async fn a_fresh_account_deploy_waits_out_propagation_pending_endpoints_and_every_rollout() {
    let proxy = Proxy::start(&[
        "--strict",
        "--clock-scale",
        "0.01",
        "--id-propagation-seconds",
        "0.5",
        "--linked-role-seconds",
        "1",
        "--role-propagation-seconds",
        "1",
    ]);
    let aws = aws().await;
    // A fresh account has no ECS service-linked role (others' tests may recreate it meanwhile: then its rule is
    // simply not exercised this time).
    let _ = aws.iam.delete_service_linked_role().role_name("AWSServiceRoleForECS").send().await;

    let seed = Project::from_shipped("secure-endpoints.toml", "fresh");
    let up = seed.secep_at(&proxy.url, &["up", "--json"]).success();
    let report = up.json();
    assert!(report["api_calls"]["propagation_retries"].as_u64().unwrap() > 0, "{}", up.stderr);
    for service in ["service1", "service2"] {
        assert_eq!(rollout(&report, service)["state"], "completed", "{}", up.stderr);
    }

    // No ECS service was created before the interface endpoints it pulls through were available.
    let calls = proxy.calls();
    let first_endpoint = calls.iter().find(|c| c["operation"] == "CreateVpcEndpoint").unwrap()["ts"].as_f64().unwrap();
    let first_service = calls
        .iter()
        .find(|c| c["service"] == "ecs" && c["operation"] == "CreateService" && c["status"] == 200)
        .unwrap()["ts"]
        .as_f64()
        .unwrap();
    assert!(first_service - first_endpoint >= 0.9, "ECS service {first_service} vs endpoints {first_endpoint}");

    // Independently: both services exist with the circuit breaker on, in the stack's cluster.
    let out = aws
        .ecs
        .describe_services()
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .cluster(&seed.stack)
        .services("service1")
        .services("service2")
        .send()
        .await;
    assert_eq!(out.unwrap().services().len(), 2);
    assert_eq!(seed.secep_at(&proxy.url, &["status"]).code, 0);

    let mut mesh = String::from(
        "[stack]\nname = \"{stack}\"\n[network]\ncidr = \"10.9.0.0/16\"\nmax_azs = 2\n[namespace]\nname = \"{namespace}\"\n",
    );
    for i in 0..10 {
        mesh.push_str(&format!(
            "[services.s{i}]\nimage = \"{ECR}/s{i}:1\"\nport = {}\ncalls = [\"s{}\"]\n",
            8000 + i,
            (i + 1) % 10
        ));
    }
    let mesh = Project::with_config("fresh-mesh", &mesh);
    let up = mesh.secep_at(&proxy.url, &["up", "--json"]).success();
    let report = up.json();
    assert_eq!(report["rollouts"].as_array().unwrap().len(), 10);
    assert!(report["rollouts"].as_array().unwrap().iter().all(|r| r["state"] == "completed"), "{report}");
    mesh.secep_at(&proxy.url, &["down", "--yes"]).success();
    seed.secep_at(&proxy.url, &["down", "--yes"]).success();
}

/// Regression: `up` said "Deployed" while ECS could not start a single task. Now it fails naming the service, the
/// circuit breaker's reason and the stopped tasks' reason; `status` fails the same way; a fixed image converges.
#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_up_and_status_by_name_and_a_fixed_one_converges() {
    let p = Project::with_config("unpullable", &two_services(&format!("{ECR}/unpullable:1")));
    let up = p.secep(&["up"]);
    assert_eq!(up.code, 1, "{}", up.stderr);
    assert!(up.stderr.contains("did not roll out: api"), "{}", up.stderr);
    assert!(up.stderr.contains("circuit breaker"), "{}", up.stderr);
    assert!(up.stderr.contains("CannotPullContainerError"), "{}", up.stderr);
    assert!(up.stderr.contains("rolled out svc/web"), "the other service runs: {}", up.stderr);

    let status = p.secep(&["status"]);
    assert_eq!(status.code, 3, "{}\n{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("api: rollout FAILED"), "{}", status.stdout);
    assert!(status.stdout.contains("CannotPullContainerError"), "{}", status.stdout);

    p.write_config(
        &two_services(&format!("{ECR}/api:1")).replace("{stack}", &p.stack).replace("{namespace}", &p.namespace),
    );
    let up = p.secep(&["up", "--json"]).success();
    assert_eq!(rollout(&up.json(), "api")["state"], "completed", "{}", up.stderr);
    assert_eq!(p.secep(&["status"]).code, 0);
    let aws = aws().await;
    let api = aws
        .ecs
        .describe_services()
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .cluster(&p.stack)
        .services("api")
        .send()
        .await
        .unwrap();
    let td = api.services()[0].task_definition().unwrap().to_string();
    let td = aws.ecs.describe_task_definition().task_definition(td).send().await.unwrap();
    assert_eq!(td.task_definition().unwrap().container_definitions()[0].image(), Some(format!("{ECR}/api:1").as_str()));
}

/// A bad image on a running service: ECS rolls back to the revision that worked, `up` says so, and that revision
/// is still registered (it is only retired once a newer one has rolled out).
#[tokio::test]
async fn a_failed_update_is_rolled_back_and_the_working_revision_is_kept() {
    let p = Project::with_config("rollback", &two_services(&format!("{ECR}/api:1")));
    p.secep(&["up"]).success();
    p.write_config(
        &two_services(&format!("{ECR}/unpullable:2")).replace("{stack}", &p.stack).replace("{namespace}", &p.namespace),
    );
    let up = p.secep(&["up", "--json"]);
    assert_eq!(up.code, 1, "{}", up.stderr);
    assert_eq!(rollout(&up.json(), "api")["state"], "rolled_back", "{}", up.stderr);
    assert!(up.stderr.contains("rolled back svc/api"), "{}", up.stderr);
    let aws = aws().await;
    let revisions = aws
        .ecs
        .list_task_definitions()
        .family_prefix(format!("{}-api", p.stack))
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .send()
        .await
        .unwrap();
    assert_eq!(revisions.task_definition_arns().len(), 2, "the revision ECS rolled back to is still registered");
}

/// Make before break: on a port change, the callee's old-port rule and the caller's old-port egress stay until
/// the new tasks run; then they are revoked.
#[tokio::test]
async fn a_port_change_revokes_the_old_rules_only_after_the_rollouts_completed() {
    let proxy = Proxy::start(&["--clock-scale", "0.01", "--rule", "rollout"]);
    let p = Project::with_config("mbb", &two_services(&format!("{ECR}/api:1")));
    p.secep_at(&proxy.url, &["up"]).success();
    let text = two_services(&format!("{ECR}/api:1")).replace("port = 9000", "port = 9001");
    p.write_config(&text.replace("{stack}", &p.stack).replace("{namespace}", &p.namespace));
    let cleared = proxy.calls().len();
    p.secep_at(&proxy.url, &["up"]).success();
    let calls: Vec<serde_json::Value> = proxy.calls().into_iter().skip(cleared).collect();
    let ts = |c: &serde_json::Value| c["ts"].as_f64().unwrap();
    let update_api = calls
        .iter()
        .filter(|c| c["operation"] == "UpdateService" && c["params"]["service"] == "api")
        .map(ts)
        .next()
        .expect("api is updated");
    let revokes: Vec<f64> = calls
        .iter()
        .filter(|c| matches!(c["operation"].as_str(), Some("RevokeSecurityGroupIngress" | "RevokeSecurityGroupEgress")))
        .map(ts)
        .collect();
    assert!(!revokes.is_empty(), "the old port's rules are revoked");
    // A rollout takes 1.2 s here: every revoke comes after it.
    assert!(revokes.iter().all(|t| t - update_api >= 1.2), "revoked at {revokes:?}, api updated at {update_api}");
    p.secep_at(&proxy.url, &["down", "--yes"]).success();
}
