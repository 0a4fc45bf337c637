//! Counts the API calls secep makes (and the attempts, retries included), so every command can report what it
//! cost and a no-op `up` can show it changed nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Totals over all clients of one run.
#[derive(Debug, Default)]
pub struct CallCounts {
    pub calls: AtomicU64,
    pub mutating: AtomicU64,
    pub attempts: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallSummary {
    pub calls: u64,
    pub mutating: u64,
    /// Attempts beyond the first of each call: throttling, 5xx and timeouts the SDK retried.
    pub retries: u64,
}

impl CallCounts {
    pub fn summary(&self) -> CallSummary {
        let calls = self.calls.load(Ordering::Relaxed);
        CallSummary {
            calls,
            mutating: self.mutating.load(Ordering::Relaxed),
            retries: self.attempts.load(Ordering::Relaxed).saturating_sub(calls),
        }
    }
}

/// Read-only operations by AWS naming convention; everything else changes something.
pub fn is_mutating(operation: &str) -> bool {
    !["Describe", "List", "Get", "Discover"].iter().any(|p| operation.starts_with(p))
}

#[derive(Debug, Clone)]
pub struct CallCounter(pub Arc<CallCounts>);

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
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(meta) = cfg.load::<Metadata>() {
            tracing::debug!(service = meta.service(), operation = meta.name(), "api call");
            if is_mutating(meta.name()) {
                self.0.mutating.fetch_add(1, Ordering::Relaxed);
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
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
