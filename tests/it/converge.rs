//! Converging on config changes: for each kind of change, `plan` lists exactly the expected actions, `up` applies
//! them, the live stack equals the new config (independent describes), a second `up` makes no mutating call, and
//! nothing of the old config is left behind.

use std::collections::BTreeSet;

use aws_sdk_ecs::types::TaskDefinitionStatus;

use crate::harness::{Aws, Project, Proxy, aws};

/// web -> api -> db, as in the status tests.
const BASE: &str = r#"[stack]
name = "{stack}"

[network]
cidr = "10.2.0.0/16"
max_azs = 2

[namespace]
name = "{namespace}"

[services.web]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1"
port = 8080
calls = ["api"]

[services.api]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:1"
port = 9000
calls = ["db"]

[services.db]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/db:1"
port = 5432
"#;

struct Stack {
    p: Project,
    aws: Aws,
}

impl Stack {
    async fn up(prefix: &str) -> Stack {
        let p = Project::with_config(prefix, BASE);
        p.secep(&["up"]).success();
        Stack { p, aws: aws().await }
    }

    /// Rewrites the config (placeholders filled) and returns `plan`'s actions other than no-op, as `action node`.
    fn change(&self, edit: impl Fn(String) -> String) -> Vec<String> {
        let text = edit(BASE.to_string()).replace("{stack}", &self.p.stack).replace("{namespace}", &self.p.namespace);
        self.p.write_config(&text);
        let plan = self.p.secep(&["plan", "--json"]);
        assert_eq!(plan.code, 2, "a change is pending: {}", plan.stderr);
        let mut actions: Vec<String> = plan.json()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["action"] != "no-op")
            .map(|n| format!("{} {}", n["action"].as_str().unwrap(), n["node"].as_str().unwrap()))
            .collect();
        actions.sort();
        actions
    }

    /// `up` applies the change; a second `up` through the proxy is a no-op with zero mutating calls.
    fn apply(&self) -> String {
        let up = self.p.secep(&["up"]).success();
        let proxy = Proxy::start(&[]);
        let again = self.p.secep_at(&proxy.url, &["up"]).success();
        assert!(again.stderr.contains("Up to date"), "{}", again.stderr);
        let mutating: Vec<_> = proxy.calls().into_iter().filter(|c| c["mutating"] == true).collect();
        assert!(mutating.is_empty(), "{mutating:?}");
        assert_eq!(self.p.secep(&["status"]).code, 0, "status is in sync after the change");
        up.stderr
    }

    async fn service(&self, name: &str) -> aws_sdk_ecs::types::Service {
        let out = self
            .aws
            .ecs
            .describe_services()
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .cluster(&self.p.stack)
            .services(name)
            .send()
            .await
            .unwrap();
        out.services()[0].clone()
    }

    async fn container(&self, name: &str) -> aws_sdk_ecs::types::ContainerDefinition {
        let td = self.service(name).await.task_definition().unwrap().to_string();
        let out = self.aws.ecs.describe_task_definition().task_definition(td).send().await.unwrap();
        out.task_definition().unwrap().container_definitions()[0].clone()
    }

    async fn active_revisions(&self, name: &str) -> usize {
        let family = format!("{}-{name}", self.p.stack);
        let out = self
            .aws
            .ecs
            .list_task_definitions()
            .family_prefix(family)
            .status(TaskDefinitionStatus::Active)
            .send()
            .await
            .unwrap();
        out.task_definition_arns().len()
    }

    /// Ingress of a service's group as `caller:port` (callers named by their group's node tag).
    async fn ingress(&self, name: &str) -> BTreeSet<String> {
        let groups = self
            .aws
            .ec2
            .describe_security_groups()
            .filters(crate::harness::ec2_filter("tag:secep:stack", &self.p.stack))
            .send()
            .await
            .unwrap();
        let node_of = |id: &str| {
            groups
                .security_groups()
                .iter()
                .find(|g| g.group_id() == Some(id))
                .and_then(|g| g.tags().iter().find(|t| t.key() == Some("secep:node")).and_then(|t| t.value()))
                .unwrap_or("?")
                .trim_start_matches("sg/")
                .to_string()
        };
        let group = groups
            .security_groups()
            .iter()
            .find(|g| {
                g.tags().iter().any(|t| t.key() == Some("secep:node") && t.value() == Some(&format!("sg/{name}")))
            })
            .unwrap();
        group
            .ip_permissions()
            .iter()
            .flat_map(|p| {
                p.user_id_group_pairs().iter().map(move |u| (p.from_port(), u.group_id().unwrap().to_string()))
            })
            .map(|(port, g)| format!("{}:{}", node_of(&g), port.unwrap()))
            .collect()
    }
}

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

#[tokio::test]
async fn image_and_environment_changes_roll_a_new_revision_and_keep_only_the_one_before() {
    let s = Stack::up("conv-image").await;
    let image = |tag: &str| format!("image = \"{ECR}/api:{tag}\"");
    let actions = s.change(|c| c.replace(&image("1"), &format!("{}\nenvironment = {{ MODE = \"fast\" }}", image("2"))));
    assert_eq!(actions, ["update svc/api", "update td/api"]);
    s.apply();
    let c = s.container("api").await;
    assert_eq!(c.image(), Some(format!("{ECR}/api:2").as_str()));
    assert!(c.environment().iter().any(|kv| kv.name() == Some("MODE") && kv.value() == Some("fast")));
    // Make before break: the revision the rollout replaced stays, so a rollback has somewhere to go.
    assert_eq!(s.active_revisions("api").await, 2, "the replaced revision is kept for a rollback");
    s.change(|c| c.replace(&image("2"), &image("3")));
    s.apply();
    assert_eq!(s.active_revisions("api").await, 2, "only the one revision before the running one is kept");
}

#[tokio::test]
async fn desired_count_is_updated_in_place() {
    let s = Stack::up("conv-count").await;
    assert_eq!(
        s.change(|c| c.replace(
            "image = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1\"",
            "image = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1\"\ndesired_count = 3"
        )),
        ["update svc/web"]
    );
    s.apply();
    assert_eq!(s.service("web").await.desired_count(), 3);
    assert_eq!(s.active_revisions("web").await, 1);
}

#[tokio::test]
async fn a_desired_count_change_sends_desired_count_alone_and_starts_no_deployment() {
    // Regression: every UpdateService sent the task definition, the network configuration and the registries, and
    // AWS starts a new deployment (every task replaced) for each of them.
    let s = Stack::up("conv-count-only").await;
    s.change(|c| {
        c.replace(
            "image = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1\"",
            "image = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1\"\ndesired_count = 2",
        )
    });
    let proxy = Proxy::start(&[]);
    s.p.secep_at(&proxy.url, &["up"]).success();
    let updates: Vec<_> =
        proxy.calls().into_iter().filter(|c| c["service"] == "ecs" && c["operation"] == "UpdateService").collect();
    assert_eq!(updates.len(), 1, "{updates:?}");
    let sent: Vec<&str> = updates[0]["params"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(sent, ["cluster", "desiredCount", "service"], "{updates:?}");
    assert_eq!(s.service("web").await.desired_count(), 2);
}

#[tokio::test]
async fn call_edges_added_and_removed_move_the_rules_and_the_peer_urls() {
    let s = Stack::up("conv-edges").await;
    // web now calls db directly; api no longer does.
    let actions = s.change(|c| {
        c.replace("calls = [\"api\"]", "calls = [\"api\", \"db\"]").replace("calls = [\"db\"]", "calls = []")
    });
    assert_eq!(
        actions,
        [
            "create sg-rule/web->db",
            "delete sg-rule/api->db",
            // The callers' egress follows their calls.
            "update egress/api",
            "update egress/web",
            "update svc/api",
            "update svc/web",
            "update td/api",
            "update td/web"
        ]
    );
    s.apply();
    assert_eq!(s.ingress("db").await, BTreeSet::from(["web:5432".to_string()]));
    let web_env: Vec<String> =
        s.container("web").await.environment().iter().map(|kv| kv.name().unwrap().to_string()).collect();
    assert!(web_env.contains(&"DB_URL".to_string()) && !web_env.contains(&"SERVICE_URL".to_string()), "{web_env:?}");
    let api_env: Vec<String> =
        s.container("api").await.environment().iter().map(|kv| kv.name().unwrap().to_string()).collect();
    assert!(!api_env.contains(&"DB_URL".to_string()), "{api_env:?}");
}

#[tokio::test]
async fn a_port_change_moves_the_rules_and_tells_the_callers() {
    let s = Stack::up("conv-port").await;
    let actions = s.change(|c| c.replace("port = 5432", "port = 5433"));
    assert_eq!(
        actions,
        [
            "update egress/api",
            "update sg-rule/api->db",
            "update svc/api",
            "update svc/db",
            "update td/api",
            "update td/db"
        ]
    );
    s.apply();
    assert_eq!(s.ingress("db").await, BTreeSet::from(["api:5433".to_string()]), "the old port is revoked");
    let env = s.container("api").await;
    let url = env.environment().iter().find(|kv| kv.name() == Some("DB_URL")).unwrap().value().unwrap().to_string();
    assert!(url.ends_with(":5433"), "{url}");
    assert_eq!(s.container("db").await.port_mappings()[0].container_port(), Some(5433));
}

#[tokio::test]
async fn services_are_added_and_removed_with_their_whole_chain() {
    let s = Stack::up("conv-services").await;
    // db goes away (api stops calling it); cache arrives, called by api.
    let actions = s.change(|c| {
        let c = c.replace(
            "[services.db]\nimage = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/db:1\"\nport = 5432\n",
            "[services.cache]\nimage = \"123456789012.dkr.ecr.us-east-1.amazonaws.com/cache:1\"\nport = 6379\n",
        );
        c.replace("calls = [\"db\"]", "calls = [\"cache\"]")
    });
    assert_eq!(
        actions,
        [
            "create egress/cache",
            "create sd/cache",
            "create sg-rule/api->cache",
            "create sg/cache",
            "create svc/cache",
            "create td/cache",
            "delete egress/db",
            "delete sd/db",
            "delete sg-rule/api->db",
            "delete sg/db",
            "delete svc/db",
            "delete td/db",
            "update egress/api",
            "update svc/api",
            "update td/api",
            // The VPC endpoints admit only the shared clients group: no change there.
        ]
    );
    s.apply();
    assert_eq!(s.ingress("cache").await, BTreeSet::from(["api:6379".to_string()]));
    let db = s
        .aws
        .ecs
        .describe_services()
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .cluster(&s.p.stack)
        .services("db")
        .send()
        .await
        .unwrap();
    assert!(db.services().iter().all(|svc| svc.status() == Some("INACTIVE")), "the removed ECS service is gone");
    assert_eq!(s.active_revisions("db").await, 0, "its task definition is deregistered");
    let groups = s
        .aws
        .ec2
        .describe_security_groups()
        .filters(crate::harness::ec2_filter("tag:secep:node", "sg/db"))
        .filters(crate::harness::ec2_filter("tag:secep:stack", &s.p.stack))
        .send()
        .await
        .unwrap();
    assert!(groups.security_groups().is_empty(), "its group is gone");
}

#[tokio::test]
async fn dns_ttl_changes_in_place() {
    let s = Stack::up("conv-ttl").await;
    assert_eq!(s.change(|c| c.replace("port = 9000", "port = 9000\ndns_ttl = 30")), ["update sd/api"]);
    s.apply();
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.p.state_path()).unwrap()).unwrap();
    let id = state["nodes"]["sd/api"]["id"].as_str().unwrap();
    let sd = s.aws.sd.get_service().id(id).send().await.unwrap();
    assert_eq!(sd.service().unwrap().dns_config().unwrap().dns_records()[0].ttl(), 30);
}

#[tokio::test]
async fn changes_aws_cannot_make_in_place_are_refused_by_name() {
    let s = Stack::up("conv-refuse").await;
    let before = std::fs::read_to_string(s.p.state_path()).unwrap();
    assert_eq!(
        s.change(|c| c.replace("10.2.0.0/16", "10.3.0.0/16")),
        ["replace subnet/us-east-1a", "replace subnet/us-east-1b", "replace vpc"]
    );
    let up = s.p.secep(&["up"]);
    assert_eq!(up.code, 1);
    assert!(
        up.stderr.contains("vpc: the VPC CIDR (now 10.3.0.0/16)") && up.stderr.contains("nothing was changed"),
        "{}",
        up.stderr
    );
    assert_eq!(std::fs::read_to_string(s.p.state_path()).unwrap(), before, "nothing was changed");
}

#[tokio::test]
async fn allow_replace_rebuilds_what_cannot_change_in_place() {
    let s = Stack::up("conv-replace").await;
    let old_ns = s.p.namespace.clone();
    let new_ns = format!("new-{}", s.p.namespace);
    s.p.write_config(&BASE.replace("{stack}", &s.p.stack).replace("{namespace}", &new_ns));
    let refused = s.p.secep(&["up"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("namespace: the namespace name") && refused.stderr.contains("--allow-replace"),
        "{}",
        refused.stderr
    );

    let up = s.p.secep(&["up", "--allow-replace"]).success();
    assert!(up.stderr.contains("deleted namespace") && up.stderr.contains("created namespace"), "{}", up.stderr);
    let names: Vec<String> = s
        .aws
        .sd
        .list_namespaces()
        .send()
        .await
        .unwrap()
        .namespaces()
        .iter()
        .filter_map(|n| n.name())
        .map(str::to_string)
        .collect();
    assert!(names.contains(&new_ns) && !names.contains(&old_ns), "{names:?}");
    // Every ECS service is registered in a Cloud Map service of the new namespace.
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.p.state_path()).unwrap()).unwrap();
    for svc in ["web", "api", "db"] {
        let registry = s.service(svc).await.service_registries()[0].registry_arn().unwrap().to_string();
        let sd = s.aws.sd.get_service().id(registry.rsplit('/').next().unwrap()).send().await.unwrap();
        assert_eq!(sd.service().unwrap().namespace_id(), state["nodes"]["namespace"]["id"].as_str(), "{svc}");
        let url = s
            .container("web")
            .await
            .environment()
            .iter()
            .find(|kv| kv.name() == Some("API_URL"))
            .unwrap()
            .value()
            .unwrap()
            .to_string();
        assert!(url.ends_with(&format!("{new_ns}:9000")), "{url}");
    }
    assert_eq!(s.p.secep(&["status"]).code, 0);
}
