//! Secrets by reference: a service's `secrets` name Secrets Manager secrets (or one JSON key of one) and SSM
//! parameters by ARN. ECS fetches them into the container at start (`valueFrom`), so they never appear in the task
//! definition, and the execution role may read exactly those ARNs.

/// Where a secret is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Store {
    SecretsManager,
    Parameter,
}

/// A parsed `valueFrom` ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretArn {
    pub store: Store,
    pub partition: String,
    pub region: String,
    /// What IAM grants on: the secret's ARN without a JSON key, version stage or version id (with `-??????` for
    /// the random suffix when the ARN leaves it out), or the parameter's ARN.
    pub resource: String,
}

impl SecretArn {
    pub fn parse(arn: &str) -> Result<SecretArn, String> {
        let example = "arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf (a JSON key: …:secret:NAME-AbCdEf:KEY::) or arn:aws:ssm:REGION:ACCOUNT:parameter/PATH";
        let parts: Vec<&str> = arn.split(':').collect();
        let well_formed = parts.len() >= 6
            && parts[0] == "arn"
            && partition_ok(parts[1])
            && !parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].chars().all(|c| c.is_ascii_digit());
        if !well_formed {
            return Err(format!("`{arn}` is not a secret ARN: use {example}"));
        }
        let (partition, region) = (parts[1].to_string(), parts[3].to_string());
        match parts[2] {
            "secretsmanager" if parts.len() >= 7 && parts[5] == "secret" && !parts[6].is_empty() => {
                // NAME, then optionally :json-key:version-stage:version-id.
                if parts.len() != 7 && parts.len() != 10 {
                    return Err(format!(
                        "`{arn}` has {} fields after the secret name; a JSON key is written …:secret:NAME-AbCdEf:KEY:: (key, version stage, version id; the last two may be empty)",
                        parts.len() - 7
                    ));
                }
                let name = parts[6];
                let suffixed = name.rsplit_once('-').is_some_and(|(_, s)| s.len() == 6);
                let base = parts[..7].join(":");
                let resource = if suffixed { base } else { format!("{base}-??????") };
                Ok(SecretArn { store: Store::SecretsManager, partition, region, resource })
            }
            "ssm" if parts.len() == 6 && parts[5].strip_prefix("parameter/").is_some_and(|p| !p.is_empty()) => {
                Ok(SecretArn { store: Store::Parameter, partition, region, resource: arn.to_string() })
            }
            _ => Err(format!("`{arn}` is not a Secrets Manager secret or SSM parameter ARN: use {example}")),
        }
    }
}

fn partition_ok(p: &str) -> bool {
    matches!(p, "aws" | "aws-cn" | "aws-us-gov")
}

/// The partition a region belongs to.
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Partitions other than these are refused before any call: the China partition's endpoint service names differ
/// (`cn.com.amazonaws.…` for some services) and nobody has deployed secep there.
pub fn unsupported_partition(region: &str) -> Option<String> {
    (partition_of(region) == "aws-cn").then(|| {
        format!(
            "region {region} is in the AWS China partition (aws-cn), which secep does not support: its VPC endpoint service names differ and are untested\n  hint: deploy to a region of the aws or aws-us-gov partition"
        )
    })
}

/// An environment variable name that looks like it holds a secret.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASSWORD", "SECRET", "TOKEN"].iter().any(|w| upper.contains(w)) || upper.ends_with("_KEY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_and_parameter_arns_parse_to_what_iam_grants_on() {
        let sm = SecretArn::parse("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf").unwrap();
        assert_eq!((sm.store, sm.region.as_str()), (Store::SecretsManager, "us-east-1"));
        assert_eq!(sm.resource, "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf");
        let key =
            SecretArn::parse("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf:password::").unwrap();
        assert_eq!(key.resource, sm.resource, "a JSON key is granted through its secret");
        let partial = SecretArn::parse("arn:aws:secretsmanager:us-east-1:123456789012:secret:db").unwrap();
        assert_eq!(partial.resource, "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-??????");
        let p = SecretArn::parse("arn:aws-cn:ssm:cn-north-1:123456789012:parameter/app/token").unwrap();
        assert_eq!((p.store, p.partition.as_str()), (Store::Parameter, "aws-cn"));
    }

    #[test]
    fn malformed_arns_are_refused_with_the_shape_to_use() {
        for arn in [
            "db-password",
            "arn:aws:secretsmanager:us-east-1:1234:secret:db",
            "arn:aws:s3:::bucket/key",
            "arn:aws:ssm:us-east-1:123456789012:document/x",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db:key",
            "arn:azure:ssm:us-east-1:123456789012:parameter/x",
        ] {
            let err = SecretArn::parse(arn).unwrap_err();
            assert!(err.contains("arn:aws:secretsmanager:REGION") || err.contains("JSON key"), "{arn}: {err}");
        }
    }

    #[test]
    fn names_that_look_secret() {
        for name in ["DB_PASSWORD", "api_token", "CLIENT_SECRET", "STRIPE_KEY"] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["LOG_LEVEL", "KEYCLOAK_URL", "WORKERS"] {
            assert!(!looks_secret(name), "{name}");
        }
    }
}
