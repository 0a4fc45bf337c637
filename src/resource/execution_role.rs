//! The stack's task execution role: trusted by ECS tasks, with AWS's managed execution policy attached (ECR pulls,
//! log streams), and when services read secrets, an inline policy granting exactly those ARNs. Made by several calls
//! (CreateRole, AttachRolePolicy, PutRolePolicy): the compare finds a role whose policies are missing.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{
    Compare, Created, Ctx, Deleted, ErrorKind, Found, Kind, OnChange, OrGone, Owner, ReadCx, Resource, Salt, TAG_NODE,
    TAG_LINEAGE, TAG_STACK, View, api_error, is, tag_value,
};
use crate::model::{Node, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// The role name (account-wide, at most 64 characters): `<stack>-ecs-execution`.
    pub name: String,
    /// The managed policy the role must have attached (AmazonECSTaskExecutionRolePolicy).
    pub policy_arn: String,
    /// What the services' secrets need (absent from the digest when nothing, so older roles stay in sync).
    #[serde(skip_serializing_if = "SecretGrants::is_empty")]
    pub secrets: SecretGrants,
}

/// The secrets the tasks' containers get at start: ECS reads them with the execution role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SecretGrants {
    /// Secrets Manager secret ARNs (`secretsmanager:GetSecretValue`).
    pub secrets: BTreeSet<String>,
    /// SSM parameter ARNs (`ssm:GetParameters`).
    pub parameters: BTreeSet<String>,
    /// The customer-managed key that encrypts them (`kms:Decrypt`).
    pub kms_key: Option<String>,
}

impl SecretGrants {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.parameters.is_empty()
    }

    /// The inline policy document: each action only on its ARNs; `None` when no service reads a secret.
    pub fn policy(&self) -> Option<serde_json::Value> {
        if self.is_empty() {
            return None;
        }
        let mut statements = Vec::new();
        if !self.secrets.is_empty() {
            statements.push(serde_json::json!({
                "Sid": "ReadTheServicesSecrets", "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue", "Resource": self.secrets,
            }));
        }
        if !self.parameters.is_empty() {
            statements.push(serde_json::json!({
                "Sid": "ReadTheServicesParameters", "Effect": "Allow",
                "Action": "ssm:GetParameters", "Resource": self.parameters,
            }));
        }
        if let Some(key) = &self.kms_key {
            statements.push(serde_json::json!({
                "Sid": "DecryptThem", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key,
            }));
        }
        Some(serde_json::json!({ "Version": "2012-10-17", "Statement": statements }))
    }
}

/// The name of the inline policy for secrets.
pub const SECRETS_POLICY: &str = "secep-secrets";

#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The ARNs of the managed policies attached to the role.
    pub policies: BTreeSet<String>,
    /// Who the role's `secep:stack` tag says owns it; `None` where the read did not fetch its tags (a recorded
    /// role while converging: the stack's by its record).
    pub owner: Option<Owner>,
    /// The secrets policy as IAM has it (`Some(None)`: none); `None` where the read did not look (no service reads
    /// a secret, and the config did not change).
    pub inline: Option<Option<serde_json::Value>>,
    /// The trust policy as IAM has it, and the account of the role (from its ARN); `None` where not read.
    pub trust: Option<(serde_json::Value, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The policy (ARN) is not attached: a run killed between CreateRole and AttachRolePolicy, or a detach by hand.
    PolicyNotAttached(String),
    /// The secrets policy is missing, differs from the config's secrets, or is left over from removed ones.
    SecretsPolicy,
    /// The trust policy is not ECS tasks of this account only (a role made before the `aws:SourceAccount`
    /// condition, or edited by hand); carries the account.
    TrustPolicy(String),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::PolicyNotAttached(arn) => write!(f, "policy {arn} not attached"),
            Change::SecretsPolicy => write!(f, "inline policy {SECRETS_POLICY} differs from the services' secrets"),
            Change::TrustPolicy(account) => {
                write!(f, "trust policy is not ECS tasks with aws:SourceAccount {account} only")
            }
        }
    }
}

impl super::Change for Change {}

pub struct ExecutionRole;

/// Who may assume the role: ECS tasks, and (confused-deputy protection) only on behalf of this account.
pub fn trust_policy(account: Option<&str>) -> serde_json::Value {
    let mut statement = serde_json::json!({
        "Effect": "Allow",
        "Principal": { "Service": "ecs-tasks.amazonaws.com" },
        "Action": "sts:AssumeRole",
    });
    if let Some(account) = account {
        statement["Condition"] = serde_json::json!({ "StringEquals": { "aws:SourceAccount": account } });
    }
    serde_json::json!({ "Version": "2012-10-17", "Statement": [statement] })
}

/// The account of an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:…`).
fn account_of(arn: &str) -> Option<String> {
    arn.split(':').nth(4).filter(|a| a.len() == 12).map(str::to_string)
}

/// What GetRole tells about a role.
struct LiveRole {
    arn: String,
    /// The trust policy, decoded.
    trust: Option<serde_json::Value>,
    stack_tag: Option<String>,
    lineage_tag: Option<String>,
    node_tag: Option<NodeId>,
}

/// A role's ARN and tags, or `None` if there is no such role.
async fn get_role(iam: &aws_sdk_iam::Client, name: &str) -> Result<Option<LiveRole>> {
    let out = iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .map_err(|e| api_error(format!("read IAM role {name}"), e))
        .or_gone()?;
    Ok(out.and_then(|out| {
        out.role().map(|role| {
            let tag = |key: &str| tag_value(role.tags(), key, |t| (Some(t.key()), Some(t.value()))).map(str::to_string);
            LiveRole {
                arn: role.arn().to_string(),
                trust: role.assume_role_policy_document().and_then(|d| serde_json::from_str(&percent_decode(d)).ok()),
                stack_tag: tag(TAG_STACK),
                lineage_tag: tag(TAG_LINEAGE),
                node_tag: tag(TAG_NODE).and_then(|n| n.parse().ok()),
            }
        })
    }))
}

/// The ARNs of the managed policies attached to a role, or `None` if there is no such role.
async fn attached_policies(iam: &aws_sdk_iam::Client, name: &str) -> Result<Option<BTreeSet<String>>> {
    let out = iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| api_error(format!("list the policies of IAM role {name}"), e))
        .or_gone()?;
    Ok(out.map(|o| o.attached_policies().iter().filter_map(|p| p.policy_arn()).map(str::to_string).collect()))
}

/// A role and its policies (GetRole and ListAttachedRolePolicies at once), or `None` if there is no such role.
async fn read_role(iam: &aws_sdk_iam::Client, name: &str) -> Result<Option<(LiveRole, BTreeSet<String>)>> {
    let (role, policies) = tokio::try_join!(get_role(iam, name), attached_policies(iam, name))?;
    Ok(role.zip(policies))
}

/// One role the read looks at.
struct Lookup {
    node: NodeId,
    name: String,
    /// Recorded (with its recorded ARN), or looked up by the name the stack's role has.
    recorded: Option<Option<String>>,
}

fn trust_facts(role: &LiveRole) -> Option<(serde_json::Value, String)> {
    Some((role.trust.clone().unwrap_or(serde_json::Value::Null), account_of(&role.arn)?))
}

/// The secrets policy document of a role (`None`: none), or `None` if there is no such role.
async fn inline_policy(iam: &aws_sdk_iam::Client, name: &str) -> Result<Option<Option<serde_json::Value>>> {
    let out = iam.get_role_policy().role_name(name).policy_name(SECRETS_POLICY).send().await;
    match out.map_err(|e| api_error(format!("read inline policy {SECRETS_POLICY} of IAM role {name}"), e)) {
        // IAM answers the document URL-encoded.
        Ok(out) => Ok(Some(serde_json::from_str(&percent_decode(out.policy_document())).ok())),
        Err(e) if is(&e, ErrorKind::NotFound) => Ok(Some(None)),
        Err(e) => Err(e),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex()) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn look(
    iam: aws_sdk_iam::Client,
    stack: String,
    lookup: Lookup,
    teardown: bool,
    secrets: bool,
) -> Result<Option<Found<Facts>>> {
    let Lookup { node, name, recorded } = lookup;
    match recorded {
        // A recorded role is the stack's by its record: its policies are all the compare needs (one call, two
        // when services read secrets).
        Some(arn) if !teardown => {
            let (role, inline) = tokio::try_join!(read_role(&iam, &name), async {
                if secrets { inline_policy(&iam, &name).await } else { Ok(None) }
            })?;
            let Some((role, policies)) = role else { return Ok(None) };
            let trust = trust_facts(&role);
            let facts = Facts { policies, owner: None, inline, trust };
            Ok(Some(Found { node: Some(node), id: name, arn, owner: Owner::Us, lineage: None, facts }))
        }
        recorded => {
            let Some((role, policies)) = read_role(&iam, &name).await? else { return Ok(None) };
            let owner = Owner::from_tag(&stack, role.stack_tag.as_deref());
            // Unrecorded, it is the stack's to tear down only if tagged so (a run killed before its record).
            if recorded.is_none() && teardown && owner != Owner::Us {
                return Ok(None);
            }
            let trust = trust_facts(&role);
            let node = match recorded {
                Some(_) => node,
                None => role.node_tag.filter(|n| n.kind() == Kind::ExecutionRole).unwrap_or(node),
            };
            let inline = if secrets { inline_policy(&iam, &name).await? } else { None };
            let facts = Facts { policies, owner: Some(owner.clone()), inline, trust };
            Ok(Some(Found { node: Some(node), id: name, arn: Some(role.arn), owner, lineage: role.lineage_tag, facts }))
        }
    }
}

fn iam_tags(ctx: &Ctx, node: &NodeId, name: &str) -> Result<Vec<aws_sdk_iam::types::Tag>> {
    ctx.tags(node, name)
        .into_iter()
        .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().context("IAM tag"))
        .collect()
}

async fn detach(ctx: &Ctx, name: &str, arn: &str) -> Result<()> {
    ctx.clients
        .iam
        .detach_role_policy()
        .role_name(name)
        .policy_arn(arn)
        .send()
        .await
        .map_err(|e| api_error(format!("detach {arn} from IAM role {name}"), e))
        .or_gone()?;
    Ok(())
}

async fn delete_role(ctx: &Ctx, name: &str) -> Result<()> {
    ctx.clients
        .iam
        .delete_role()
        .role_name(name)
        .send()
        .await
        .map_err(|e| api_error(format!("delete IAM role {name}"), e))?;
    Ok(())
}

/// Detaches every managed policy and deletes every inline one (IAM refuses to delete a role that has any).
/// `false`: the role is gone.
async fn clear_policies(ctx: &Ctx, name: &str) -> Result<bool> {
    let iam = &ctx.clients.iam;
    let Some(attached) = attached_policies(iam, name).await? else { return Ok(false) };
    for arn in &attached {
        detach(ctx, name, arn).await?;
    }
    let inline = iam
        .list_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| api_error(format!("list the inline policies of IAM role {name}"), e))
        .or_gone()?;
    let Some(inline) = inline else { return Ok(false) };
    for policy in inline.policy_names() {
        iam.delete_role_policy()
            .role_name(name)
            .policy_name(policy)
            .send()
            .await
            .map_err(|e| api_error(format!("delete inline policy {policy} of IAM role {name}"), e))
            .or_gone()?;
    }
    Ok(true)
}

/// Writes the secrets policy, or deletes it when no service reads a secret any more.
async fn put_secrets_policy(ctx: &Ctx, name: &str, policy: Option<serde_json::Value>) -> Result<()> {
    let iam = &ctx.clients.iam;
    match policy {
        Some(document) => {
            iam.put_role_policy()
                .role_name(name)
                .policy_name(SECRETS_POLICY)
                .policy_document(document.to_string())
                .send()
                .await
                .map_err(|e| api_error(format!("put inline policy {SECRETS_POLICY} on IAM role {name}"), e))?;
        }
        None => {
            iam.delete_role_policy()
                .role_name(name)
                .policy_name(SECRETS_POLICY)
                .send()
                .await
                .map_err(|e| api_error(format!("delete inline policy {SECRETS_POLICY} of IAM role {name}"), e))
                .or_gone()?;
        }
    }
    Ok(())
}

impl Resource for ExecutionRole {
    type Spec = Spec;
    type Facts = Facts;
    type Change = Change;
    const LABEL: &'static str = "iam role";
    // Its name is the stack's and its managed policy fixed: what the config changes (the secrets) is made in place.
    const ON_CHANGE: OnChange = OnChange::InPlace;

    /// Converging: a recorded role by ListAttachedRolePolicies alone; a desired unrecorded one (a run killed after
    /// CreateRole) by GetRole, for its tags and ARN, plus its policies. Tearing down: every recorded role, and the
    /// one named after the stack, by GetRole plus policies, so that the owner is known.
    async fn read(cx: &ReadCx<'_>) -> Result<Vec<Found<Facts>>> {
        let mut lookups: Vec<Lookup> = cx
            .recorded(Kind::ExecutionRole)
            .map(|(node, r)| Lookup { node: node.clone(), name: r.id.clone(), recorded: Some(r.arn.clone()) })
            .collect();
        let mut unrecorded: Vec<(NodeId, String)> = cx
            .desired(Kind::ExecutionRole)
            .filter(|n| cx.record(&n.id).is_none())
            .filter_map(|n| match &n.spec {
                super::Spec::ExecutionRole(s) => Some((n.id.clone(), s.name.clone())),
                _ => None,
            })
            .collect();
        if cx.teardown() {
            unrecorded.push((NodeId::ExecutionRole, crate::model::execution_role_name(cx.stack)));
        }
        for (node, name) in unrecorded {
            if !lookups.iter().any(|l| l.name == name) {
                lookups.push(Lookup { node, name, recorded: None });
            }
        }
        let teardown = cx.teardown();
        // The secrets policy is read only when some service reads a secret: the others pay no call for it.
        let secrets = !teardown
            && cx.desired(Kind::ExecutionRole).any(|n| matches!(&n.spec, super::Spec::ExecutionRole(s) if !s.secrets.is_empty()));
        let found = super::support::all(lookups, |lookup| {
            let (iam, stack) = (cx.clients.iam.clone(), cx.stack.to_string());
            async move { look(iam, stack, lookup, teardown, secrets).await }
        })
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    fn compare(spec: &Spec, facts: &Facts, cx: &Compare<'_>) -> Vec<Change> {
        let mut changes = Vec::new();
        if !facts.policies.contains(&spec.policy_arn) {
            changes.push(Change::PolicyNotAttached(spec.policy_arn.clone()));
        }
        let secrets_differ = match &facts.inline {
            Some(live) => *live != spec.secrets.policy(),
            // Not read: only a config change (secrets added, changed or removed) says it must be written.
            None => cx.config_changed,
        };
        if secrets_differ {
            changes.push(Change::SecretsPolicy);
        }
        if let Some((live, account)) = &facts.trust
            && *live != trust_policy(Some(account))
        {
            changes.push(Change::TrustPolicy(account.clone()));
        }
        changes
    }

    /// CreateRole only, tagged at creation; the policy is attached by the update the engine runs next on the facts
    /// returned here (no policy), so a run killed in between leaves a role the next run completes.
    async fn create(ctx: &Ctx, node: &Node, spec: &Spec, _salt: &Salt) -> Result<(Created, Facts)> {
        let name = &spec.name;
        // The account is known once the ECS service-linked role is recorded (every run but a stack's first, whose
        // role gets the condition by the update that follows, before anything can use it).
        let account = ctx.arn_of(&NodeId::LinkedRole("ecs".into())).ok().and_then(|arn| account_of(&arn));
        let trust = trust_policy(account.as_deref());
        let created = ctx
            .clients
            .iam
            .create_role()
            .role_name(name)
            .path("/secep/")
            .assume_role_policy_document(trust.to_string())
            .description(format!("secep {}: ECS task execution (image pulls, logs)", ctx.stack))
            .set_tags(Some(iam_tags(ctx, &node.id, name)?))
            .send()
            .await;
        match created.map_err(|e| api_error(format!("create IAM role {name}"), e)) {
            Ok(out) => {
                let role = out.role();
                let created = Created::from_answer("CreateRole", role.map(|r| r.role_name()), role.map(|r| r.arn()))?;
                let trust = created.arn.as_deref().and_then(account_of).map(|a| (trust, a));
                let facts = Facts { policies: BTreeSet::new(), owner: Some(Owner::Us), inline: Some(None), trust };
                Ok((created, facts))
            }
            // A run killed after CreateRole left it: ours if tagged so, else a name clash the user must resolve.
            Err(e) if is(&e, ErrorKind::AlreadyExists) => {
                // Deleted in between: the clash reported is the one AWS answered.
                let Some((role, policies)) = read_role(&ctx.clients.iam, name).await? else { return Err(e) };
                let owner = Owner::from_tag(&ctx.stack, role.stack_tag.as_deref());
                if owner != Owner::Us {
                    bail!(
                        "an IAM role named {name} already exists and is not tagged secep:stack={} (it carries {})\n  hint: set stack.execution_role_arn to use an existing role, or rename the stack",
                        ctx.stack,
                        owner.describe()
                    );
                }
                let inline = if spec.secrets.is_empty() { None } else { inline_policy(&ctx.clients.iam, name).await? };
                let trust = trust_facts(&role);
                let facts = Facts { policies, owner: Some(owner), inline, trust };
                Ok((Created::named(name.clone(), Some(role.arn)), facts))
            }
            Err(e) => Err(e),
        }
    }

    async fn update(
        ctx: &Ctx,
        _node: &Node,
        spec: &Spec,
        live: &View<'_, Facts>,
        changes: &[Change],
    ) -> Result<Option<Created>> {
        let name = live.id;
        for change in changes {
            match change {
                Change::SecretsPolicy => put_secrets_policy(ctx, name, spec.secrets.policy()).await?,
                Change::TrustPolicy(account) => {
                    ctx.clients
                        .iam
                        .update_assume_role_policy()
                        .role_name(name)
                        .policy_document(trust_policy(Some(account)).to_string())
                        .send()
                        .await
                        .map_err(|e| api_error(format!("update the trust policy of IAM role {name}"), e))?;
                }
                Change::PolicyNotAttached(arn) => {
                    ctx.clients
                        .iam
                        .attach_role_policy()
                        .role_name(name)
                        .policy_arn(arn)
                        .send()
                        .await
                        .map_err(|e| api_error(format!("attach {arn} to IAM role {name}"), e))?;
                }
            }
        }
        Ok(None)
    }

    /// DeleteRole, after detaching the policies the read found (IAM refuses to delete a role that has any, and
    /// this saves the refused call). On DeleteConflict (policies attached since, or inline ones) every policy is
    /// removed and the delete retried once.
    async fn delete(ctx: &Ctx, live: &View<'_, Facts>) -> Result<Deleted> {
        let name = live.id;
        for arn in &live.facts.policies {
            detach(ctx, name, arn).await?;
        }
        match delete_role(ctx, name).await {
            Ok(()) => Ok(Deleted::Now),
            Err(e) if is(&e, ErrorKind::NotFound) => Ok(Deleted::AlreadyGone),
            Err(e) if is(&e, ErrorKind::DependencyViolation) => {
                if !clear_policies(ctx, name).await? {
                    return Ok(Deleted::AlreadyGone);
                }
                Ok(match delete_role(ctx, name).await.or_gone()? {
                    Some(()) => Deleted::Now,
                    None => Deleted::AlreadyGone,
                })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::Record;

    const POLICY: &str = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy";

    fn spec() -> Spec {
        Spec { name: "demo-ecs-execution".into(), policy_arn: POLICY.into(), secrets: SecretGrants::default() }
    }

    fn compare(facts: &Facts) -> Vec<Change> {
        let spec = spec();
        let node =
            Node { id: NodeId::ExecutionRole, spec: super::super::Spec::ExecutionRole(spec.clone()), deps: vec![] };
        let refs = BTreeMap::<NodeId, Record>::new();
        ExecutionRole::compare(&spec, facts, &Compare { node: &node, refs: &refs, config_changed: false })
    }

    fn facts(policies: &[&str]) -> Facts {
        Facts { policies: policies.iter().map(|p| p.to_string()).collect(), owner: None, inline: None, trust: None }
    }

    #[test]
    fn a_role_with_its_policy_is_in_sync() {
        assert!(compare(&facts(&[POLICY])).is_empty());
        // Policies attached besides it are not secep's business.
        assert!(compare(&facts(&["arn:aws:iam::aws:policy/ReadOnlyAccess", POLICY])).is_empty());
    }

    #[test]
    fn a_missing_policy_is_found() {
        let changes = compare(&facts(&["arn:aws:iam::aws:policy/ReadOnlyAccess"]));
        assert_eq!(changes, [Change::PolicyNotAttached(POLICY.into())]);
        assert_eq!(changes[0].to_string(), format!("policy {POLICY} not attached"));
        assert!(!super::super::Change::replaces(&changes[0]));
    }

    #[test]
    fn a_role_just_created_is_incomplete_until_its_policy_is_attached() {
        // What create returns: the role, no policy yet (a run killed here leaves exactly this).
        let created = Facts { policies: BTreeSet::new(), owner: Some(Owner::Us), inline: Some(None), trust: None };
        assert_eq!(compare(&created), [Change::PolicyNotAttached(POLICY.into())]);
    }

    #[test]
    fn the_secrets_policy_grants_exactly_the_services_arns_and_follows_them() {
        let mut grants = SecretGrants::default();
        grants.secrets.insert("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf".into());
        grants.parameters.insert("arn:aws:ssm:us-east-1:123456789012:parameter/app/token".into());
        grants.kms_key = Some("arn:aws:kms:us-east-1:123456789012:key/k".into());
        let doc = grants.policy().unwrap();
        let actions: Vec<(&str, &serde_json::Value)> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["Action"].as_str().unwrap(), &s["Resource"]))
            .collect();
        assert_eq!(actions.len(), 3);
        assert_eq!(actions[0].0, "secretsmanager:GetSecretValue");
        assert_eq!(actions[0].1, &serde_json::json!(["arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"]));
        assert_eq!(actions[1].0, "ssm:GetParameters");
        assert_eq!(actions[2], ("kms:Decrypt", &serde_json::json!("arn:aws:kms:us-east-1:123456789012:key/k")));
        assert_eq!(SecretGrants::default().policy(), None);

        let mut spec = spec();
        spec.secrets = grants;
        let node = Node { id: NodeId::ExecutionRole, spec: super::super::Spec::ExecutionRole(spec.clone()), deps: vec![] };
        let refs = BTreeMap::<NodeId, Record>::new();
        let cx = Compare { node: &node, refs: &refs, config_changed: false };
        let mut live = facts(&[POLICY]);
        live.inline = Some(None);
        assert_eq!(ExecutionRole::compare(&spec, &live, &cx), [Change::SecretsPolicy], "missing");
        live.inline = Some(spec.secrets.policy());
        assert!(ExecutionRole::compare(&spec, &live, &cx).is_empty(), "in sync");
        assert_eq!(percent_decode("%7B%22a%22%3A1%7D"), r#"{"a":1}"#);
    }

    #[test]
    fn a_trust_policy_without_the_source_account_condition_is_corrected() {
        let account = "123456789012".to_string();
        let mut live = facts(&[POLICY]);
        live.trust = Some((trust_policy(None), account.clone()));
        assert_eq!(compare(&live), [Change::TrustPolicy(account.clone())]);
        live.trust = Some((trust_policy(Some(&account)), account.clone()));
        assert!(compare(&live).is_empty());
        let doc = trust_policy(Some(&account));
        assert_eq!(doc["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"], "123456789012");
        assert_eq!(account_of("arn:aws:iam::123456789012:role/secep/x"), Some(account));
    }
}
