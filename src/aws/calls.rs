//! Counts the API calls secep makes (and the attempts, retries included), so every command can report what it
//! cost and a no-op `up` can show it changed nothing; and tells the concurrency window how each attempt was
//! answered, so a throttled account slows the walk down instead of burning retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::window::{Window, Windows};

/// Totals over all clients of one run.
#[derive(Debug, Default)]
pub struct CallCounts {
    pub calls: AtomicU64,
    pub mutating: AtomicU64,
    pub attempts: AtomicU64,
    pub throttled: AtomicU64,
    /// Creates and updates retried because AWS had not propagated an id or role yet (see `propagation.rs`).
    pub propagation: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallSummary {
    pub calls: u64,
    pub mutating: u64,
    /// Attempts beyond the first of each call: throttling, 5xx and timeouts the SDK retried.
    pub retries: u64,
    /// Attempts AWS answered "slow down".
    pub throttled: u64,
    /// Creates and updates retried until a new id or role had propagated.
    pub propagation: u64,
}

impl CallCounts {
    pub fn summary(&self) -> CallSummary {
        let calls = self.calls.load(Ordering::Relaxed);
        CallSummary {
            calls,
            mutating: self.mutating.load(Ordering::Relaxed),
            retries: self.attempts.load(Ordering::Relaxed).saturating_sub(calls),
            throttled: self.throttled.load(Ordering::Relaxed),
            propagation: self.propagation.load(Ordering::Relaxed),
        }
    }
}

/// "12 API calls, 5 mutating, 0 retried", plus how often AWS throttled when it did.
impl std::fmt::Display for CallSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} API calls, {} mutating, {} retried", self.calls, self.mutating, self.retries)?;
        if self.throttled > 0 {
            write!(f, ", {} throttled", self.throttled)?;
        }
        if self.propagation > 0 {
            write!(f, ", {} waited for propagation", self.propagation)?;
        }
        Ok(())
    }
}

/// Read-only operations by AWS naming convention; everything else changes something.
pub fn is_mutating(operation: &str) -> bool {
    !["Describe", "List", "Get", "Discover"].iter().any(|p| operation.starts_with(p))
}

/// The error code of an AWS error response, in whichever protocol the service speaks: the `x-amzn-ErrorType`
/// header or `__type` field (JSON: ECS, Cloud Map, Logs) or the `<Code>` element (query/XML: EC2, IAM).
fn error_code<'a>(error_type_header: Option<&'a str>, body: &'a str) -> Option<&'a str> {
    let strip = |code: &'a str| code.split(':').next().unwrap_or(code).rsplit('#').next().unwrap_or(code).trim();
    if let Some(h) = error_type_header {
        return Some(strip(h));
    }
    if let Some(start) = body.find("<Code>") {
        let rest = &body[start + "<Code>".len()..];
        return rest.find("</Code>").map(|end| rest[..end].trim());
    }
    let start = body.find("\"__type\"")?;
    let rest = &body[start + "\"__type\"".len()..];
    let value = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    value.find('"').map(|end| strip(&value[..end]))
}

/// Whether an HTTP answer means "slow down".
pub fn is_throttling(status: u16, error_type_header: Option<&str>, body: &[u8]) -> bool {
    if status == 429 {
        return true;
    }
    status >= 400
        && error_code(error_type_header, &String::from_utf8_lossy(body))
            .is_some_and(|c| crate::resource::ErrorKind::of(c, "") == crate::resource::ErrorKind::Throttled)
}

/// A quota reached (`LimitExceededException`, `RulesPerSecurityGroupLimitExceeded`, ...) is final: the SDK's
/// retry classifiers count some of those codes as throttling, so without this an account at its limit would be
/// retried with backoff, then reported as slow instead of as the quota it is.
#[derive(Debug)]
pub struct QuotaIsFinal;

impl aws_smithy_runtime_api::client::retries::classifiers::ClassifyRetry for QuotaIsFinal {
    fn classify_retry(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::InterceptorContext,
    ) -> aws_smithy_runtime_api::client::retries::classifiers::RetryAction {
        use aws_smithy_runtime_api::client::retries::classifiers::RetryAction;
        let Some(response) = ctx.response() else { return RetryAction::NoActionIndicated };
        let body = String::from_utf8_lossy(response.body().bytes().unwrap_or_default()).into_owned();
        match error_code(response.headers().get("x-amzn-errortype"), &body) {
            Some(code) if crate::resource::ErrorKind::of(code, "") == crate::resource::ErrorKind::Quota => {
                RetryAction::RetryForbidden
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "secep: a quota is not throttling"
    }
}

/// One per client: `service` names that client's concurrency windows (one for its reads, one for its mutating
/// calls: AWS throttles them apart, EC2 with separate token buckets).
#[derive(Debug, Clone)]
pub struct CallCounter {
    pub counts: Arc<CallCounts>,
    pub windows: Arc<Windows>,
    pub service: &'static str,
}

/// The window a request waits in, attached to it for the HTTP connector (see `gate.rs`).
#[derive(Debug, Clone)]
pub struct WindowOf(pub Arc<Window>);

impl CallCounter {
    fn window(&self, cfg: &ConfigBag) -> Arc<Window> {
        let class = match cfg.load::<Metadata>() {
            Some(meta) if !is_mutating(meta.name()) => "read",
            _ => "mutating",
        };
        self.windows.of(&format!("{} {class}", self.service))
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "secep::CallCounter"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.counts.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(meta) = cfg.load::<Metadata>() {
            tracing::debug!(service = meta.service(), operation = meta.name(), "api call");
            if is_mutating(meta.name()) {
                self.counts.mutating.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.counts.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context.request_mut().add_extension(WindowOf(self.window(cfg)));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // No answer at all (timeout, connection reset) says nothing about the rate; neither does a plain 5xx.
        let Some(response) = context.response() else { return Ok(()) };
        let window = self.window(cfg);
        let status = response.status().as_u16();
        let body = response.body().bytes().unwrap_or_default();
        if is_throttling(status, response.headers().get("x-amzn-errortype"), body) {
            self.counts.throttled.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(status, "throttled: halving the concurrency window");
            window.on_throttle();
        } else if status < 500 {
            window.on_success();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_recognised_in_every_protocol_secep_speaks() {
        let ec2 = b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors></Response>";
        assert!(is_throttling(503, None, ec2));
        let iam = b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert!(is_throttling(400, None, iam));
        let ecs = br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
        assert!(is_throttling(400, None, ecs));
        let namespaced = br#"{"__type": "com.amazonaws.servicediscovery#ThrottlingException"}"#;
        assert!(is_throttling(400, None, namespaced));
        assert!(is_throttling(400, Some("ThrottlingException:http://internal.amazon.com/coral/"), b""));
        assert!(is_throttling(429, None, b""));
    }

    #[test]
    fn a_quota_is_not_throttling() {
        for body in [
            &br#"{"__type": "LimitExceededException", "message": "too many"}"#[..],
            b"<Response><Errors><Error><Code>RulesPerSecurityGroupLimitExceeded</Code></Error></Errors></Response>",
        ] {
            assert!(!is_throttling(400, None, body), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn other_errors_and_successes_are_not_throttling() {
        assert!(!is_throttling(400, None, br#"{"__type":"ClientException","message":"Throttling is not it"}"#));
        assert!(!is_throttling(
            400,
            None,
            b"<Response><Errors><Error><Code>InvalidGroup.Duplicate</Code></Error></Errors></Response>"
        ));
        assert!(!is_throttling(500, None, b"<Code>InternalError</Code>"));
        assert!(!is_throttling(200, None, b"<Code>RequestLimitExceeded</Code>"));
    }
}
