//! `secep iam-policy`: the least-privilege IAM policy the caller needs for this config, printed as JSON. It comes
//! from one table: every AWS operation secep calls → the IAM actions it needs, and how far each can be scoped (by
//! the `secep:stack` tag, or by ARNs with the stack's names). The end-to-end tests run secep's calls, as the proxy
//! logs them, through [`actions_for`] and fail on a call the table (hence the policy) lacks.

use anyhow::Result;
use serde_json::{Value, json};

use super::{Common, exit, state_location};
use crate::config::Config;
use crate::model::{execution_role_name, log_group_name};
use crate::state::Location;

/// How far an action can be narrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Reads: `*`.
    Any,
    /// Writes without resource-level permissions (ECS task definitions): `*`.
    Unscoped,
    /// Creates of tagged resources: only with the request tag `secep:stack=<stack>`.
    Create,
    /// Changes and deletes: only of resources tagged `secep:stack=<stack>`.
    Owned,
    /// Tagging: only with the stack's tag, as part of secep's creates.
    TagOnCreate,
    /// The stack's execution role, by ARN.
    Role,
    /// The ECS service-linked role, once per account.
    LinkedRole,
    /// The stack's log group, by ARN.
    LogGroup,
    /// The rules of the stack's load balancer's listeners, by ARN: a rule made by hand carries no tag, and `up`
    /// must still remove it.
    ListenerRules,
    /// The S3 state object, its lock and backup.
    State,
    StateBucket,
}

/// (SigV4 signing name, operation) → IAM actions and their scope. The signing names are the proxy log's `scope`.
const TABLE: &[(&str, &str, &[&str], Scope)] = &[
    // EC2: reads
    ("ec2", "DescribeAddresses", &["ec2:DescribeAddresses"], Scope::Any),
    ("ec2", "DescribeAvailabilityZones", &["ec2:DescribeAvailabilityZones"], Scope::Any),
    ("ec2", "DescribeInternetGateways", &["ec2:DescribeInternetGateways"], Scope::Any),
    ("ec2", "DescribeNatGateways", &["ec2:DescribeNatGateways"], Scope::Any),
    ("ec2", "DescribeNetworkInterfaces", &["ec2:DescribeNetworkInterfaces"], Scope::Any),
    ("ec2", "DescribePrefixLists", &["ec2:DescribePrefixLists"], Scope::Any),
    ("ec2", "DescribeRouteTables", &["ec2:DescribeRouteTables"], Scope::Any),
    ("ec2", "DescribeSecurityGroupRules", &["ec2:DescribeSecurityGroupRules"], Scope::Any),
    ("ec2", "DescribeSecurityGroups", &["ec2:DescribeSecurityGroups"], Scope::Any),
    ("ec2", "DescribeSubnets", &["ec2:DescribeSubnets"], Scope::Any),
    ("ec2", "DescribeVpcAttribute", &["ec2:DescribeVpcAttribute"], Scope::Any),
    ("ec2", "DescribeVpcEndpoints", &["ec2:DescribeVpcEndpoints"], Scope::Any),
    ("ec2", "DescribeVpcs", &["ec2:DescribeVpcs"], Scope::Any),
    // EC2: creates, tagged in the same call
    ("ec2", "AllocateAddress", &["ec2:AllocateAddress"], Scope::Create),
    ("ec2", "CreateInternetGateway", &["ec2:CreateInternetGateway"], Scope::Create),
    ("ec2", "CreateNatGateway", &["ec2:CreateNatGateway"], Scope::Create),
    ("ec2", "CreateRouteTable", &["ec2:CreateRouteTable"], Scope::Create),
    ("ec2", "CreateSecurityGroup", &["ec2:CreateSecurityGroup"], Scope::Create),
    ("ec2", "CreateSubnet", &["ec2:CreateSubnet"], Scope::Create),
    ("ec2", "CreateVpc", &["ec2:CreateVpc"], Scope::Create),
    ("ec2", "CreateVpcEndpoint", &["ec2:CreateVpcEndpoint"], Scope::Create),
    ("ec2", "CreateTags", &["ec2:CreateTags"], Scope::TagOnCreate),
    // EC2: changes and deletes of the stack's own resources
    ("ec2", "AssociateRouteTable", &["ec2:AssociateRouteTable"], Scope::Owned),
    ("ec2", "AttachInternetGateway", &["ec2:AttachInternetGateway"], Scope::Owned),
    ("ec2", "AuthorizeSecurityGroupEgress", &["ec2:AuthorizeSecurityGroupEgress"], Scope::Owned),
    ("ec2", "AuthorizeSecurityGroupIngress", &["ec2:AuthorizeSecurityGroupIngress"], Scope::Owned),
    ("ec2", "CreateRoute", &["ec2:CreateRoute"], Scope::Owned),
    ("ec2", "DeleteInternetGateway", &["ec2:DeleteInternetGateway"], Scope::Owned),
    ("ec2", "DeleteNatGateway", &["ec2:DeleteNatGateway"], Scope::Owned),
    ("ec2", "DeleteRoute", &["ec2:DeleteRoute"], Scope::Owned),
    ("ec2", "DeleteRouteTable", &["ec2:DeleteRouteTable"], Scope::Owned),
    ("ec2", "DeleteSecurityGroup", &["ec2:DeleteSecurityGroup"], Scope::Owned),
    ("ec2", "DeleteSubnet", &["ec2:DeleteSubnet"], Scope::Owned),
    ("ec2", "DeleteVpc", &["ec2:DeleteVpc"], Scope::Owned),
    ("ec2", "DeleteVpcEndpoints", &["ec2:DeleteVpcEndpoints"], Scope::Owned),
    ("ec2", "DetachInternetGateway", &["ec2:DetachInternetGateway"], Scope::Owned),
    ("ec2", "DisassociateRouteTable", &["ec2:DisassociateRouteTable"], Scope::Owned),
    ("ec2", "ModifySubnetAttribute", &["ec2:ModifySubnetAttribute"], Scope::Owned),
    ("ec2", "ModifyVpcAttribute", &["ec2:ModifyVpcAttribute"], Scope::Owned),
    ("ec2", "ModifyVpcEndpoint", &["ec2:ModifyVpcEndpoint"], Scope::Owned),
    ("ec2", "ReleaseAddress", &["ec2:ReleaseAddress"], Scope::Owned),
    ("ec2", "ReplaceRoute", &["ec2:ReplaceRoute"], Scope::Owned),
    ("ec2", "ReplaceRouteTableAssociation", &["ec2:ReplaceRouteTableAssociation"], Scope::Owned),
    ("ec2", "RevokeSecurityGroupEgress", &["ec2:RevokeSecurityGroupEgress"], Scope::Owned),
    ("ec2", "RevokeSecurityGroupIngress", &["ec2:RevokeSecurityGroupIngress"], Scope::Owned),
    // ECS
    ("ecs", "DescribeClusters", &["ecs:DescribeClusters"], Scope::Any),
    ("ecs", "DescribeServices", &["ecs:DescribeServices"], Scope::Any),
    ("ecs", "DescribeTaskDefinition", &["ecs:DescribeTaskDefinition"], Scope::Any),
    ("ecs", "DescribeTasks", &["ecs:DescribeTasks"], Scope::Any),
    ("ecs", "ListServices", &["ecs:ListServices"], Scope::Any),
    ("ecs", "ListTagsForResource", &["ecs:ListTagsForResource"], Scope::Any),
    ("ecs", "ListTaskDefinitionFamilies", &["ecs:ListTaskDefinitionFamilies"], Scope::Any),
    ("ecs", "ListTaskDefinitions", &["ecs:ListTaskDefinitions"], Scope::Any),
    ("ecs", "ListTasks", &["ecs:ListTasks"], Scope::Any),
    // No resource-level permissions (ECS's "supported-iam-actions" table).
    ("ecs", "RegisterTaskDefinition", &["ecs:RegisterTaskDefinition", "ecs:TagResource"], Scope::Unscoped),
    ("ecs", "DeregisterTaskDefinition", &["ecs:DeregisterTaskDefinition"], Scope::Unscoped),
    ("ecs", "CreateCluster", &["ecs:CreateCluster", "ecs:TagResource"], Scope::Create),
    ("ecs", "CreateService", &["ecs:CreateService", "ecs:TagResource"], Scope::Create),
    ("ecs", "UpdateService", &["ecs:UpdateService"], Scope::Owned),
    ("ecs", "DeleteService", &["ecs:DeleteService"], Scope::Owned),
    ("ecs", "DeleteCluster", &["ecs:DeleteCluster"], Scope::Owned),
    // Cloud Map
    ("servicediscovery", "GetNamespace", &["servicediscovery:GetNamespace"], Scope::Any),
    ("servicediscovery", "GetOperation", &["servicediscovery:GetOperation"], Scope::Any),
    ("servicediscovery", "GetService", &["servicediscovery:GetService"], Scope::Any),
    ("servicediscovery", "ListInstances", &["servicediscovery:ListInstances"], Scope::Any),
    ("servicediscovery", "ListNamespaces", &["servicediscovery:ListNamespaces"], Scope::Any),
    ("servicediscovery", "ListServices", &["servicediscovery:ListServices"], Scope::Any),
    ("servicediscovery", "ListTagsForResource", &["servicediscovery:ListTagsForResource"], Scope::Any),
    (
        "servicediscovery",
        "CreatePrivateDnsNamespace",
        &["servicediscovery:CreatePrivateDnsNamespace", "servicediscovery:TagResource"],
        Scope::Create,
    ),
    (
        "servicediscovery",
        "CreateService",
        &["servicediscovery:CreateService", "servicediscovery:TagResource"],
        Scope::Create,
    ),
    ("servicediscovery", "UpdateService", &["servicediscovery:UpdateService"], Scope::Owned),
    ("servicediscovery", "DeregisterInstance", &["servicediscovery:DeregisterInstance"], Scope::Owned),
    ("servicediscovery", "DeleteService", &["servicediscovery:DeleteService"], Scope::Owned),
    ("servicediscovery", "DeleteNamespace", &["servicediscovery:DeleteNamespace"], Scope::Owned),
    // IAM
    ("iam", "ListRoles", &["iam:ListRoles"], Scope::Any),
    ("iam", "CreateServiceLinkedRole", &["iam:CreateServiceLinkedRole"], Scope::LinkedRole),
    ("iam", "GetRole", &["iam:GetRole"], Scope::Role),
    ("iam", "ListAttachedRolePolicies", &["iam:ListAttachedRolePolicies"], Scope::Role),
    ("iam", "ListRolePolicies", &["iam:ListRolePolicies"], Scope::Role),
    ("iam", "GetRolePolicy", &["iam:GetRolePolicy"], Scope::Role),
    ("iam", "CreateRole", &["iam:CreateRole", "iam:TagRole"], Scope::Role),
    ("iam", "AttachRolePolicy", &["iam:AttachRolePolicy"], Scope::Role),
    ("iam", "DetachRolePolicy", &["iam:DetachRolePolicy"], Scope::Role),
    ("iam", "PutRolePolicy", &["iam:PutRolePolicy"], Scope::Role),
    ("iam", "DeleteRolePolicy", &["iam:DeleteRolePolicy"], Scope::Role),
    ("iam", "UpdateAssumeRolePolicy", &["iam:UpdateAssumeRolePolicy"], Scope::Role),
    ("iam", "DeleteRole", &["iam:DeleteRole"], Scope::Role),
    // CloudWatch Logs
    ("logs", "DescribeLogGroups", &["logs:DescribeLogGroups"], Scope::Any),
    ("logs", "ListTagsForResource", &["logs:ListTagsForResource"], Scope::LogGroup),
    ("logs", "CreateLogGroup", &["logs:CreateLogGroup", "logs:TagResource"], Scope::LogGroup),
    ("logs", "PutRetentionPolicy", &["logs:PutRetentionPolicy"], Scope::LogGroup),
    // Only when an account-level retention overrides the group's: the tag remembers it.
    ("logs", "TagResource", &["logs:TagResource"], Scope::LogGroup),
    ("logs", "DeleteLogGroup", &["logs:DeleteLogGroup"], Scope::LogGroup),
    // Elastic Load Balancing (a public service's load balancer)
    ("elasticloadbalancing", "DescribeLoadBalancers", &["elasticloadbalancing:DescribeLoadBalancers"], Scope::Any),
    (
        "elasticloadbalancing",
        "DescribeLoadBalancerAttributes",
        &["elasticloadbalancing:DescribeLoadBalancerAttributes"],
        Scope::Any,
    ),
    ("elasticloadbalancing", "DescribeTargetGroups", &["elasticloadbalancing:DescribeTargetGroups"], Scope::Any),
    ("elasticloadbalancing", "DescribeListeners", &["elasticloadbalancing:DescribeListeners"], Scope::Any),
    ("elasticloadbalancing", "DescribeRules", &["elasticloadbalancing:DescribeRules"], Scope::Any),
    ("elasticloadbalancing", "DescribeTags", &["elasticloadbalancing:DescribeTags"], Scope::Any),
    ("elasticloadbalancing", "DescribeTargetHealth", &["elasticloadbalancing:DescribeTargetHealth"], Scope::Any),
    (
        "elasticloadbalancing",
        "DescribeTargetGroupAttributes",
        &["elasticloadbalancing:DescribeTargetGroupAttributes"],
        Scope::Any,
    ),
    (
        "elasticloadbalancing",
        "CreateLoadBalancer",
        &["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:AddTags"],
        Scope::Create,
    ),
    (
        "elasticloadbalancing",
        "CreateTargetGroup",
        &["elasticloadbalancing:CreateTargetGroup", "elasticloadbalancing:AddTags"],
        Scope::Create,
    ),
    (
        "elasticloadbalancing",
        "CreateListener",
        &["elasticloadbalancing:CreateListener", "elasticloadbalancing:AddTags"],
        Scope::Create,
    ),
    (
        "elasticloadbalancing",
        "CreateRule",
        &["elasticloadbalancing:CreateRule", "elasticloadbalancing:AddTags"],
        Scope::Create,
    ),
    (
        "elasticloadbalancing",
        "ModifyLoadBalancerAttributes",
        &["elasticloadbalancing:ModifyLoadBalancerAttributes"],
        Scope::Owned,
    ),
    ("elasticloadbalancing", "SetSubnets", &["elasticloadbalancing:SetSubnets"], Scope::Owned),
    ("elasticloadbalancing", "SetSecurityGroups", &["elasticloadbalancing:SetSecurityGroups"], Scope::Owned),
    ("elasticloadbalancing", "DeleteLoadBalancer", &["elasticloadbalancing:DeleteLoadBalancer"], Scope::Owned),
    ("elasticloadbalancing", "ModifyTargetGroup", &["elasticloadbalancing:ModifyTargetGroup"], Scope::Owned),
    (
        "elasticloadbalancing",
        "ModifyTargetGroupAttributes",
        &["elasticloadbalancing:ModifyTargetGroupAttributes"],
        Scope::Owned,
    ),
    ("elasticloadbalancing", "DeleteTargetGroup", &["elasticloadbalancing:DeleteTargetGroup"], Scope::Owned),
    ("elasticloadbalancing", "ModifyListener", &["elasticloadbalancing:ModifyListener"], Scope::Owned),
    ("elasticloadbalancing", "DeleteListener", &["elasticloadbalancing:DeleteListener"], Scope::Owned),
    ("elasticloadbalancing", "ModifyRule", &["elasticloadbalancing:ModifyRule"], Scope::ListenerRules),
    ("elasticloadbalancing", "SetRulePriorities", &["elasticloadbalancing:SetRulePriorities"], Scope::ListenerRules),
    ("elasticloadbalancing", "DeleteRule", &["elasticloadbalancing:DeleteRule"], Scope::ListenerRules),
    // S3 (the state)
    ("s3", "GetBucketLocation", &["s3:GetBucketLocation"], Scope::StateBucket),
    ("s3", "GetObject", &["s3:GetObject"], Scope::State),
    ("s3", "HeadObject", &["s3:GetObject"], Scope::State),
    ("s3", "PutObject", &["s3:PutObject"], Scope::State),
    ("s3", "DeleteObject", &["s3:DeleteObject"], Scope::State),
];

/// What Cloud Map does with the caller's rights when it makes or deletes the namespace's hosted zone.
const HOSTED_ZONE_ACTIONS: &[&str] = &[
    "route53:CreateHostedZone",
    "route53:GetHostedZone",
    "route53:ListHostedZonesByName",
    "route53:ChangeResourceRecordSets",
    "route53:DeleteHostedZone",
    "ec2:DescribeVpcs",
    "ec2:DescribeRegions",
];

/// The IAM actions an operation needs (signing name and operation as the proxy logs them); `None` for an
/// operation the table does not know.
pub fn actions_for(service: &str, operation: &str) -> Option<Vec<&'static str>> {
    TABLE.iter().find(|(s, op, _, _)| *s == service && *op == operation).map(|(_, _, actions, _)| actions.to_vec())
}

/// The policy for a config: every action of the table, each statement as narrow as its actions allow.
pub fn policy(config: &Config, region: &str, state: &Location) -> Value {
    let stack = &config.stack.name;
    let account = "${aws:PrincipalAccount}";
    // A region named, its partition; else (`*`) the commercial one.
    let partition = crate::config::secrets::partition_of(region);
    let actions = |scope: Scope| -> Vec<&str> {
        let mut out: Vec<&str> =
            TABLE.iter().filter(|(.., s)| *s == scope).flat_map(|(_, _, actions, _)| actions.iter().copied()).collect();
        out.sort();
        out.dedup();
        // Tagging goes in the statements that allow it only while creating (or on the stack's role and group).
        out.retain(|a| {
            !(a.ends_with(":TagResource")
                || *a == "ec2:CreateTags"
                || *a == "iam:TagRole"
                || *a == "elasticloadbalancing:AddTags")
        });
        out
    };
    let on_stack = json!({ "StringEquals": { "aws:ResourceTag/secep:stack": stack } });
    let mut statements = vec![
        json!({ "Sid": "Read", "Effect": "Allow", "Action": actions(Scope::Any), "Resource": "*" }),
        json!({
            "Sid": "TaskDefinitionsHaveNoResourceLevelPermissions", "Effect": "Allow",
            "Action": actions(Scope::Unscoped), "Resource": "*",
        }),
        json!({
            "Sid": "CreateOnlyTaggedForTheStack", "Effect": "Allow", "Action": actions(Scope::Create), "Resource": "*",
            "Condition": { "StringEquals": { "aws:RequestTag/secep:stack": stack } },
        }),
        json!({
            "Sid": "TagOnlyWhileCreating", "Effect": "Allow",
            "Action": ["ec2:CreateTags", "ecs:TagResource", "elasticloadbalancing:AddTags", "servicediscovery:TagResource"],
            "Resource": "*",
            "Condition": { "StringEquals": { "aws:RequestTag/secep:stack": stack } },
        }),
        json!({
            "Sid": "ChangeOnlyTheStacksOwn", "Effect": "Allow", "Action": actions(Scope::Owned), "Resource": "*",
            "Condition": on_stack,
        }),
        json!({
            "Sid": "CloudMapHostedZone", "Effect": "Allow", "Action": HOSTED_ZONE_ACTIONS, "Resource": "*",
        }),
        json!({
            "Sid": "EcsServiceLinkedRoleOnce", "Effect": "Allow", "Action": actions(Scope::LinkedRole),
            "Resource": format!("arn:{partition}:iam::*:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS"),
            "Condition": { "StringEquals": { "iam:AWSServiceName": "ecs.amazonaws.com" } },
        }),
    ];
    statements.push(json!({
        "Sid": "TheLoadBalancersRules", "Effect": "Allow", "Action": actions(Scope::ListenerRules),
        "Resource": format!(
            "arn:{partition}:elasticloadbalancing:{region}:{account}:listener-rule/app/{}/*",
            crate::resource::elb::lb_name(stack)
        ),
    }));
    if config.public_services().next().is_some() {
        // A region's first load balancer makes Elastic Load Balancing's service-linked role.
        statements.push(json!({
            "Sid": "ElbServiceLinkedRoleOnce", "Effect": "Allow", "Action": "iam:CreateServiceLinkedRole",
            "Resource": format!("arn:{partition}:iam::*:role/aws-service-role/elasticloadbalancing.amazonaws.com/AWSServiceRoleForElasticLoadBalancing"),
            "Condition": { "StringEquals": { "iam:AWSServiceName": "elasticloadbalancing.amazonaws.com" } },
        }));
    }
    let log_group = format!("arn:{partition}:logs:{region}:{account}:log-group:{}", log_group_name(stack));
    let mut log_actions = actions(Scope::LogGroup);
    log_actions.push("logs:TagResource");
    log_actions.sort();
    log_actions.dedup();
    statements.push(json!({
        "Sid": "TheStacksLogGroup", "Effect": "Allow", "Action": log_actions,
        "Resource": [log_group.clone(), format!("{log_group}:*")],
    }));
    let mut passed: Vec<String> = config.services.values().filter_map(|s| s.task_role_arn.clone()).collect();
    match &config.stack.execution_role_arn {
        Some(arn) => passed.push(arn.clone()),
        None => {
            let role = format!("arn:{partition}:iam::{account}:role/secep/{}", execution_role_name(stack));
            let mut role_actions = actions(Scope::Role);
            role_actions.push("iam:TagRole");
            role_actions.sort();
            role_actions.dedup();
            statements.push(json!({
                "Sid": "TheStacksExecutionRole", "Effect": "Allow", "Action": role_actions, "Resource": role.clone(),
            }));
            passed.push(role);
        }
    }
    passed.sort();
    passed.dedup();
    statements.push(json!({
        "Sid": "PassOnlyTheStacksRolesToEcsTasks", "Effect": "Allow", "Action": "iam:PassRole", "Resource": passed,
        "Condition": { "StringEquals": { "iam:PassedToService": "ecs-tasks.amazonaws.com" } },
    }));
    if let Location::S3 { bucket, key } = state {
        statements.push(json!({
            "Sid": "TheState", "Effect": "Allow", "Action": actions(Scope::State),
            "Resource": format!("arn:{partition}:s3:::{bucket}/{key}*"),
        }));
        statements.push(json!({
            "Sid": "TheStateBucketsRegion", "Effect": "Allow", "Action": actions(Scope::StateBucket),
            "Resource": format!("arn:{partition}:s3:::{bucket}"),
        }));
        if let Some(key) = &config.state.kms_key_id {
            statements.push(json!({
                "Sid": "TheStatesKey", "Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": if key.starts_with("arn:") { key.clone() } else { "*".to_string() },
            }));
        }
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

pub fn run(common: &Common) -> Result<u8> {
    let config = Config::load(&common.config)?;
    let region = common.target.region.clone().or_else(|| config.stack.region.clone()).unwrap_or_else(|| "*".into());
    if let Some(why) = crate::config::secrets::unsupported_partition(&region) {
        anyhow::bail!(why);
    }
    let document = policy(&config, &region, &state_location(common, &config));
    println!("{}", serde_json::to_string_pretty(&document).expect("a policy serialises"));
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_of_the_table_is_in_the_policy_once_per_statement() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/secure-endpoints.toml");
        let config = Config::load(&path).unwrap();
        let doc = policy(&config, "us-east-1", &Location::parse("s3://team/k.json").unwrap());
        let granted: Vec<String> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().map(|a| a.as_str().unwrap().to_string()).collect(),
                _ => vec![],
            })
            .collect();
        for (service, op, actions, _) in TABLE {
            for action in *actions {
                assert!(granted.iter().any(|g| g == action), "{service}:{op} needs {action}");
            }
        }
        let gov = policy(&config, "us-gov-west-1", &Location::parse("s3://team/k.json").unwrap()).to_string();
        assert!(gov.contains("arn:aws-us-gov:iam::") && !gov.contains("arn:aws:"), "ARNs in the region's partition");
        let text = doc.to_string();
        assert!(!text.contains("\"Action\":\"*\"") && !text.contains("ec2:*"), "no wildcard actions");
        assert!(text.contains("arn:aws:iam::${aws:PrincipalAccount}:role/secep/secure-endpoints-ecs-execution"));
    }
}
