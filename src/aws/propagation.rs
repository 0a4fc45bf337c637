//! AWS's eventual consistency, waited out in one place: a create or update that names an id this run just created
//! (or just read) can be refused for a while as if the id did not exist (`InvalidSubnetID.NotFound` right after
//! `CreateSubnet`), a new ECS service-linked role is "unable to be assumed", a new execution role is refused to a
//! task definition. Those answers are retried here, with backoff, up to a bound; anything else fails at once.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::Result;

use super::CallCounts;
use crate::resource::ErrorKind;
use crate::resource::error::api_error_in;

/// How long a propagating id or role may take before secep gives up: AWS documents seconds, Terraform waits minutes.
pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether an error from a create or update means "not visible yet". A NotFound there names a dependency this run
/// recorded a moment ago (created or read live), so it is propagation, not absence; deletes never come here.
pub fn is_propagating(err: &anyhow::Error) -> bool {
    api_error_in(err).is_some_and(|e| matches!(e.kind, ErrorKind::Propagating | ErrorKind::NotFound))
}

/// Runs `attempt` until it succeeds, fails for another reason, or `timeout` has passed since the first try.
/// Every retry is counted in `counts` (the run's summary shows them) and logged with `-v`.
pub async fn settle<T, F, Fut>(
    what: &str,
    timeout: Duration,
    counts: &CallCounts,
    stop: &crate::graph::StopFlag,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match attempt().await {
            Err(e) if is_propagating(&e) && started.elapsed() + delay <= timeout => {
                counts.propagation.fetch_add(1, Ordering::Relaxed);
                tracing::info!(node = what, error = %e, retry_in = ?delay, "not propagated yet; retrying");
                stop.sleep(delay).await;
                if stop.is_stopped() {
                    return Err(e.context(crate::resource::Interrupted(format!("{what} to propagate"))));
                }
                delay = super::poll_delay(started.elapsed());
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::resource::ApiError;

    fn api(code: &str, message: &str) -> anyhow::Error {
        anyhow::anyhow!(ApiError {
            action: "create subnet".into(),
            code: Some(code.into()),
            kind: ErrorKind::of(code, message),
            detail: message.into(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_not_yet_visible_id_is_retried_until_it_appears() {
        let counts = CallCounts::default();
        let tries = AtomicU32::new(0);
        let out = settle("subnet/a", DEFAULT_PROPAGATION_TIMEOUT, &counts, &Default::default(), || async {
            if tries.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(api("InvalidVpcID.NotFound", "The vpc ID 'vpc-1' does not exist"))
            } else {
                Ok("subnet-1")
            }
        })
        .await
        .unwrap();
        assert_eq!(out, "subnet-1");
        assert_eq!(counts.propagation.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_fail_at_once_and_propagation_gives_up_at_the_bound() {
        let counts = CallCounts::default();
        let err = settle("vpc", DEFAULT_PROPAGATION_TIMEOUT, &counts, &Default::default(), || async {
            Err::<(), _>(api("VpcLimitExceeded", "The maximum number of VPCs has been reached."))
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("VPCs"));
        assert_eq!(counts.propagation.load(Ordering::Relaxed), 0);

        let started = tokio::time::Instant::now();
        let role = "Unable to assume the service linked role. Please verify that the ECS service linked role exists.";
        settle("cluster", Duration::from_secs(10), &counts, &Default::default(), || async {
            Err::<(), _>(api("InvalidParameterException", role))
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() <= Duration::from_secs(10), "waited {:?}", started.elapsed());
        assert!(counts.propagation.load(Ordering::Relaxed) >= 4);
    }
}
