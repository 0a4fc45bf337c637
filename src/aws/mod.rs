//! AWS client construction: the standard credential and region chains, plus the `--profile`, `--region` and
//! `--endpoint-url` overrides, standard retries with backoff, and bounded timeouts.

mod calls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

pub use calls::{CallCounts, CallSummary, is_mutating};

/// Where and as whom to call AWS.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub profile: Option<String>,
    /// `--region`, else the config's `[stack] region`, else the SDK chain (AWS_REGION, profile).
    pub region: Option<String>,
    /// `--endpoint-url`; without it the SDK still honours AWS_ENDPOINT_URL and per-service variables.
    pub endpoint_url: Option<String>,
    /// Attempts per call, the first included (retries of throttling, 5xx and timeouts); default [`MAX_ATTEMPTS`].
    pub max_attempts: Option<u32>,
}

/// One client per service, sharing one configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub sd: aws_sdk_servicediscovery::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub region: String,
    /// Every call made through these clients.
    pub calls: Arc<CallCounts>,
}

/// Throttling and 5xx are retried with jittered exponential backoff; a handful of attempts survives the bursts of
/// a parallel apply (the SDK default of 3 is known to be too few: remind101/empire#751).
pub const MAX_ATTEMPTS: u32 = 8;

impl Clients {
    pub async fn connect(target: &Target) -> Result<Clients> {
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(target.max_attempts.unwrap_or(MAX_ATTEMPTS))
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(profile) = &target.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &target.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &target.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let conf = loader.load().await;
        let Some(region) = conf.region().map(|r| r.to_string()) else {
            bail!(
                "no AWS region is set\n  hint: pass --region, set `region` under [stack] in the config, or export AWS_REGION"
            );
        };
        check_credentials(&conf, target).await?;
        let calls = Arc::new(CallCounts::default());
        let counter = calls::CallCounter(calls.clone());
        Ok(Clients {
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(&conf).interceptor(counter.clone()).build(),
            ),
            ecs: aws_sdk_ecs::Client::from_conf(
                aws_sdk_ecs::config::Builder::from(&conf).interceptor(counter.clone()).build(),
            ),
            sd: aws_sdk_servicediscovery::Client::from_conf(
                aws_sdk_servicediscovery::config::Builder::from(&conf).interceptor(counter.clone()).build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(&conf).interceptor(counter.clone()).build(),
            ),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(
                aws_sdk_cloudwatchlogs::config::Builder::from(&conf).interceptor(counter).build(),
            ),
            region,
            calls,
        })
    }
}

/// Resolves credentials once up front, so a missing profile or key is one clear error instead of a failure on every
/// call of the first wave.
async fn check_credentials(conf: &aws_config::SdkConfig, target: &Target) -> Result<()> {
    use aws_credential_types::provider::ProvideCredentials;
    let provider = conf.credentials_provider().context("no AWS credentials provider is configured")?;
    provider.provide_credentials().await.map_err(|e| {
        let local = if target.endpoint_url.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some() {
            "; the local emulator accepts any values: export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
        } else {
            ""
        };
        let profile = target.profile.as_deref().map(|p| format!(" (profile `{p}`)")).unwrap_or_default();
        anyhow::anyhow!(
            "no usable AWS credentials{profile}: {}\n  hint: set AWS_PROFILE or --profile, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY{local}",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        )
    })?;
    Ok(())
}
