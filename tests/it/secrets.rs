//! Issue 20, secrets by reference: a service's `secrets` reach its container as `valueFrom` references, never as
//! environment values; the execution role may read exactly those ARNs (and decrypt with the given key); the
//! Secrets Manager, SSM and KMS endpoints exist while some service needs them. Checked with independent describes.

use std::collections::BTreeMap;

use crate::harness::{Aws, Project, aws, ec2_filter};

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
const PARAMETER: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/shop/api-token";
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

const CONFIG: &str = r#"[stack]
name = "{stack}"
region = "us-east-1"
KMS

[network]
cidr = "10.60.0.0/16"
max_azs = 2

[namespace]
name = "{namespace}"

[services.web]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1"
port = 8080
calls = ["api"]
environment = { LOG_LEVEL = "info" }
WEB_SECRETS

[services.api]
image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:1"
port = 9090
API_SECRETS
"#;

pub(crate) fn config(with_secrets: bool) -> String {
    let (kms, web, api) = if with_secrets {
        (
            format!("kms_key_arn = \"{KEY}\""),
            format!("secrets = {{ DB_PASSWORD = \"{SECRET}\", DB_USER = \"{SECRET}:username::\" }}"),
            format!("secrets = {{ API_TOKEN = \"{PARAMETER}\" }}"),
        )
    } else {
        Default::default()
    };
    CONFIG.replace("KMS", &kms).replace("WEB_SECRETS", &web).replace("API_SECRETS", &api)
}

/// The container of the service's current task definition: (environment, secrets).
async fn container(aws: &Aws, p: &Project, service: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let services =
        aws.ecs.describe_services().cluster(&p.stack).services(service).include(aws_sdk_ecs::types::ServiceField::Tags);
    let services = services.send().await.unwrap();
    let td = services.services()[0].task_definition().unwrap().to_string();
    let out = aws.ecs.describe_task_definition().task_definition(td).send().await.unwrap();
    let c = &out.task_definition().unwrap().container_definitions()[0];
    let env = c.environment().iter().map(|kv| (kv.name().unwrap().into(), kv.value().unwrap().into())).collect();
    let secrets = c.secrets().iter().map(|s| (s.name().into(), s.value_from().into())).collect();
    (env, secrets)
}

/// The execution role's inline policy: action → resources, or `None` when it has none.
async fn role_policy(aws: &Aws, p: &Project) -> Option<BTreeMap<String, serde_json::Value>> {
    let role = format!("{}-ecs-execution", p.stack);
    let names = aws.iam.list_role_policies().role_name(&role).send().await.unwrap();
    if names.policy_names().is_empty() {
        return None;
    }
    assert_eq!(names.policy_names(), ["secep-secrets"], "one inline policy, secep's");
    let out = aws.iam.get_role_policy().role_name(&role).policy_name("secep-secrets").send().await.unwrap();
    let text = percent_decode(out.policy_document());
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let mut out = BTreeMap::new();
    for statement in doc["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow");
        out.insert(statement["Action"].as_str().unwrap().to_string(), statement["Resource"].clone());
    }
    Some(out)
}

fn percent_decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

async fn endpoints(aws: &Aws, p: &Project) -> Vec<String> {
    let out = aws.ec2.describe_vpc_endpoints().filters(ec2_filter("tag:secep:stack", &p.stack)).send().await.unwrap();
    let mut names: Vec<String> = out
        .vpc_endpoints()
        .iter()
        .filter(|e| !matches!(e.state().map(|s| s.as_str()), Some("deleted" | "deleting")))
        .filter_map(|e| e.service_name())
        .map(|n| n.trim_start_matches("com.amazonaws.us-east-1.").to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn secrets_reach_the_container_by_reference_and_the_role_may_read_exactly_them() {
    let aws = aws().await;
    let p = Project::with_config("secrets", &config(true));
    let up = p.secep(&["up"]).success();
    assert!(!up.stderr.contains("looks like a secret"), "no warning for referenced secrets:\n{}", up.stderr);

    let (env, secrets) = container(&aws, &p, "web").await;
    assert_eq!(
        secrets,
        BTreeMap::from([("DB_PASSWORD".into(), SECRET.into()), ("DB_USER".into(), format!("{SECRET}:username::"))])
    );
    assert!(!env.contains_key("DB_PASSWORD") && !env.contains_key("DB_USER"), "never in the environment: {env:?}");
    assert_eq!(container(&aws, &p, "api").await.1, BTreeMap::from([("API_TOKEN".into(), PARAMETER.into())]));

    let policy = role_policy(&aws, &p).await.expect("the execution role has the secrets policy");
    assert_eq!(
        policy,
        BTreeMap::from([
            ("secretsmanager:GetSecretValue".into(), serde_json::json!([SECRET])),
            ("ssm:GetParameters".into(), serde_json::json!([PARAMETER])),
            ("kms:Decrypt".into(), serde_json::json!(KEY)),
        ]),
        "exactly these actions on exactly these ARNs"
    );
    assert_eq!(endpoints(&aws, &p).await, ["ecr.api", "ecr.dkr", "kms", "logs", "s3", "secretsmanager", "ssm"]);
    let status = p.secep(&["status"]);
    assert_eq!(status.code, 0, "in sync after up:\n{}", status.stdout);

    // The role trusts ECS tasks on behalf of this account only; a trust policy edited by hand is drift, put back.
    let role = format!("{}-ecs-execution", p.stack);
    let trust = || async {
        let out = aws.iam.get_role().role_name(&role).send().await.unwrap();
        let role = out.role().unwrap();
        let account = role.arn().split(':').nth(4).unwrap().to_string();
        let doc: serde_json::Value =
            serde_json::from_str(&percent_decode(role.assume_role_policy_document().unwrap())).unwrap();
        (doc, account)
    };
    let (doc, account) = trust().await;
    assert_eq!(doc["Statement"][0]["Principal"]["Service"], "ecs-tasks.amazonaws.com");
    assert_eq!(doc["Statement"][0]["Condition"], serde_json::json!({"StringEquals": {"aws:SourceAccount": account}}));
    let open = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    aws.iam.update_assume_role_policy().role_name(&role).policy_document(open).send().await.unwrap();
    let status = p.secep(&["status"]);
    assert!(status.code == 2 && status.stdout.contains("aws:SourceAccount"), "{}", status.stdout);
    p.secep(&["up"]).success();
    assert_eq!(trust().await.0, doc, "up puts the condition back");

    // Secrets removed from the config: the policy, the references and the endpoints follow.
    p.write_template(&config(false));
    let up = p.secep(&["up"]).success();
    assert!(up.stderr.contains("vpce/secretsmanager"), "the endpoint no service needs is removed:\n{}", up.stderr);
    assert_eq!(role_policy(&aws, &p).await, None, "no inline policy once no service reads a secret");
    assert!(container(&aws, &p, "web").await.1.is_empty());
    assert_eq!(endpoints(&aws, &p).await, ["ecr.api", "ecr.dkr", "logs", "s3"]);
    let plan = p.secep(&["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.stdout);

    p.secep(&["down", "--yes", "--delete-logs"]).success();
    assert_eq!(crate::down::leftovers(&aws, &p).await, Vec::<String>::new());
}

#[tokio::test]
async fn bad_secret_references_are_refused_before_any_call_and_secret_looking_values_warned_about() {
    let bad = config(false).replace(
        "environment = { LOG_LEVEL = \"info\" }",
        r#"environment = { LOG_LEVEL = "info", DB_PASSWORD = "hunter2", API_URL = "x" }
secrets = { DB_PASSWORD = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf", API_URL = "arn:aws:ssm:us-east-1:123456789012:parameter/a", TOKEN = "db-password" }"#,
    );
    let p = Project::with_config("badsecrets", &bad);
    let plan = p.secep(&["plan"]);
    assert_eq!(plan.code, 1, "{}", plan.stderr);
    for says in [
        "`DB_PASSWORD` is set in both `environment` and `secrets`",
        "is in aws:eu-west-1, but the stack runs in aws:us-east-1",
        "`API_URL` is set by secep to a peer's address",
        "`db-password` is not a secret ARN",
    ] {
        assert!(plan.stderr.contains(says), "missing {says:?}:\n{}", plan.stderr);
    }
    assert!(!plan.stderr.contains("hunter2"), "a value is never printed");

    let warned = config(false).replace(
        "environment = { LOG_LEVEL = \"info\" }",
        "environment = { LOG_LEVEL = \"info\", DB_PASSWORD = \"hunter2\" }",
    );
    p.write_template(&warned);
    let plan = p.secep(&["plan"]);
    assert_eq!(plan.code, 2, "a warning does not stop the plan:\n{}", plan.stderr);
    assert!(
        plan.stderr.contains("services.web.environment.DB_PASSWORD looks like a secret")
            && plan.stderr.contains("secrets = { DB_PASSWORD = "),
        "{}",
        plan.stderr
    );
}

#[tokio::test]
async fn a_stack_name_starting_with_sg_is_refused() {
    let p = Project::with_config("sg", &config(false).replace("name = \"{stack}\"", "name = \"sg-payments\""));
    let plan = p.secep(&["plan"]);
    assert!(plan.code == 1 && plan.stderr.contains("starts with `sg-`"), "{}", plan.stderr);
}
