//! AWS client construction: the standard credential and region chains, plus the `--profile`, `--region` and
//! `--endpoint-url` overrides, standard retries with backoff, and bounded timeouts.

mod calls;
mod gate;
pub mod propagation;
mod window;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime::client::retries::{RetryPartition, TokenBucket};

pub use calls::{CallCounts, CallSummary, is_mutating};
pub use window::{Window, WindowSummary, Windows};

/// How long a wait for AWS (an endpoint, a namespace operation, a rollout, a propagating id) sleeps before it looks
/// again: a twentieth of the time it has waited so far, between 200 ms and 5 s. An exponential backoff that doubles
/// from a fixed start can miss the moment by up to its last step (4 s late on a 4.5 s wait, measured with
/// `benches/bench.py --scenario clock`); this overshoots by about 5% at most, at any scale, for a number of polls that
/// grows only with the log of the wait.
pub fn poll_delay(waited: Duration) -> Duration {
    (waited / 20).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

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
    /// Ceiling of the adaptive concurrency window (`--parallelism`); default [`DEFAULT_PARALLELISM`].
    pub parallelism: Option<usize>,
}

/// One client per service, sharing one configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub sd: aws_sdk_servicediscovery::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub region: String,
    /// The shared configuration, for the S3 client of a state bucket (in the bucket's region).
    pub sdk: aws_config::SdkConfig,
    /// Calls go to an emulator's endpoint (S3 is then addressed by path: no bucket DNS names there).
    pub custom_endpoint: bool,
    /// Every call made through these clients.
    pub calls: Arc<CallCounts>,
    /// How many calls may be in flight at once, per service; every answer from AWS moves them (see [`Window`]).
    pub windows: Arc<Windows>,
}

/// The default ceiling of the concurrency windows. EC2 publishes a burst of 200 mutating requests refilled at 5 per
/// second per account, ECS and Cloud Map 20 to 50 requests per second per action; a 50-service stack makes about
/// 270 mutating EC2 calls. 32 in flight at AWS's ~100 ms latency spend EC2's burst in about a second, and from the
/// first throttling answer on the windows (and the SDK's pacing) hold each service to the rate it accepts.
pub const DEFAULT_PARALLELISM: usize = 32;

/// Throttling and 5xx are retried with jittered exponential backoff, each attempt waiting for room in the
/// concurrency window; a handful of attempts survives the bursts of a parallel apply (the SDK default of 3 is known to be too few: remind101/empire#751).
pub const MAX_ATTEMPTS: u32 = 8;

/// A retry partition whose quota throttled retries do not drain. The SDK's quota (500 tokens, 5 per throttled
/// retry) fails every call once AWS has throttled 100 times, however slowly secep then goes; the concurrency window
/// already paces those retries. 5xx and timeouts still draw on it: it stays the circuit breaker for an outage.
fn retry_partition(service: &'static str) -> RetryPartition {
    let quota = TokenBucket::builder().throttling_retry_cost(0).build();
    RetryPartition::custom(format!("secep-{service}")).token_bucket(quota).build()
}

impl Clients {
    pub async fn connect(target: &Target) -> Result<Clients> {
        let windows = Arc::new(Windows::new(target.parallelism.unwrap_or(DEFAULT_PARALLELISM)));
        let http = gate::gated(
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https(),
        );
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(
                // Adaptive: once a service throttles, the SDK paces that client's attempts at the rate it accepts
                // (a client-side token bucket), below one call per round trip if need be, which no concurrency
                // window can express. Measured at N = 50 behind a 5/s bucket: standard mode ran calls out of
                // attempts; adaptive finished within 1% of the bucket's bound.
                RetryConfig::adaptive()
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
        if let Some(why) = crate::config::secrets::unsupported_partition(&region) {
            bail!(why);
        }
        check_credentials(&conf, target).await?;
        let calls = Arc::new(CallCounts::default());
        let counter = |service| calls::CallCounter { counts: calls.clone(), windows: windows.clone(), service };
        // One client per service, each with its own retry quota and its call counter keyed by the signing name.
        macro_rules! client {
            ($sdk:ident, $service:literal) => {
                $sdk::Client::from_conf(
                    $sdk::config::Builder::from(&conf)
                        .retry_partition(retry_partition($service))
                        .retry_classifier(calls::QuotaIsFinal)
                        .interceptor(counter($service))
                        .build(),
                )
            };
        }
        Ok(Clients {
            ec2: client!(aws_sdk_ec2, "ec2"),
            ecs: client!(aws_sdk_ecs, "ecs"),
            sd: client!(aws_sdk_servicediscovery, "servicediscovery"),
            iam: client!(aws_sdk_iam, "iam"),
            logs: client!(aws_sdk_cloudwatchlogs, "logs"),
            elb: client!(aws_sdk_elasticloadbalancingv2, "elasticloadbalancing"),
            region,
            custom_endpoint: target.endpoint_url.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some(),
            sdk: conf,
            calls,
            windows,
        })
    }

    /// An S3 client in `region` (a state bucket's), counted like the others.
    pub fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        let counter = calls::CallCounter { counts: self.calls.clone(), windows: self.windows.clone(), service: "s3" };
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk)
                .region(Region::new(region.to_string()))
                .force_path_style(self.custom_endpoint)
                .retry_partition(retry_partition("s3"))
                .interceptor(counter)
                .build(),
        )
    }
}

#[cfg(test)]
#[test]
fn polls_look_again_after_a_twentieth_of_the_wait_so_far() {
    assert_eq!(poll_delay(Duration::ZERO), Duration::from_millis(200));
    assert_eq!(poll_delay(Duration::from_secs(8)), Duration::from_millis(400));
    assert_eq!(poll_delay(Duration::from_secs(600)), Duration::from_secs(5));
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
            causes(&e)
        )
    })?;
    Ok(())
}

/// An error and its sources, each as its message (the SDK's own context display ends in a Debug dump of the raw
/// HTTP response, which says nothing to a user).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}
