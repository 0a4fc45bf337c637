//! How many AWS calls may be in flight at once: an AIMD congestion window, as TCP does it.
//!
//! A fixed concurrency is either too low for a wide graph or too high for a throttled account. The window starts
//! at [`INITIAL`], grows by one per successful call until the first throttling answer (slow start), then by one per
//! window's worth of successes (additive increase); a throttling answer halves it (multiplicative decrease), at
//! most once per [`CUT_INTERVAL`] since the calls already in flight were sent under the old window and will be
//! throttled too. It never exceeds the ceiling (`--parallelism`) and never drops below one.
//!
//! Every attempt, retries included, holds a [`Permit`] while it is on the wire (the HTTP connector takes one), so
//! a shrunk window holds back the retries of the steps already running too, as TCP's window covers retransmits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// TCP's initial window (RFC 6928): wide enough for the first wave of independent steps.
pub const INITIAL: usize = 10;

/// Throttles closer together than this are one congestion event: roughly one round trip plus a first retry.
pub const CUT_INTERVAL: Duration = Duration::from_millis(500);

/// The longest an attempt waits for room before it goes anyway: the window is advice, and the wait counts against
/// the attempt's 30-second timeout. Measured: with 10 s, a teardown against an overloaded emulator (calls taking
/// 20 s) timed attempts out; the SDK's adaptive pacing, which waits outside the attempt, does the fine pacing.
pub const MAX_QUEUED: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Window {
    ceiling: usize,
    state: Mutex<State>,
    /// Woken when a permit is returned or the window grows.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    limit: f64,
    /// Below this the window grows by one per success; above it, by one per window (AIMD proper).
    slow_start_threshold: f64,
    last_cut: Option<Instant>,
    cuts: u32,
}

/// What the window did over a run, for `-v` and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSummary {
    pub limit: usize,
    pub cuts: u32,
}

impl Window {
    /// An adaptive window that may grow up to `ceiling`.
    pub fn adaptive(ceiling: usize) -> Window {
        let ceiling = ceiling.max(1);
        Window::with(ceiling, INITIAL.min(ceiling), ceiling)
    }

    /// A window that stays at `n` unless throttled.
    #[cfg(test)]
    pub fn fixed(n: usize) -> Window {
        let n = n.max(1);
        Window::with(n, n, n)
    }

    fn with(ceiling: usize, initial: usize, threshold: usize) -> Window {
        Window {
            ceiling,
            changed: Notify::new(),
            state: Mutex::new(State {
                in_flight: 0,
                limit: initial as f64,
                slow_start_threshold: threshold as f64,
                last_cut: None,
                cuts: 0,
            }),
        }
    }

    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// Calls that may be in flight now.
    pub fn limit(&self) -> usize {
        Self::limit_of(&self.lock(), self.ceiling)
    }

    fn limit_of(s: &State, ceiling: usize) -> usize {
        (s.limit as usize).clamp(1, ceiling)
    }

    /// Waits until one more call fits in the window, however long it takes.
    #[cfg(test)]
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        self.acquire_within(Duration::MAX).await
    }

    /// Waits until one more call fits in the window, or `patience` has passed: then it is let through anyway
    /// (counted in flight all the same).
    pub async fn acquire_within(self: &Arc<Self>, patience: Duration) -> Permit {
        let deadline = tokio::time::Instant::now().checked_add(patience);
        loop {
            // Registered before the check, so a release between the check and the wait is not missed.
            let changed = self.changed.notified();
            {
                let mut s = self.lock();
                let out_of_patience = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                if s.in_flight < Self::limit_of(&s, self.ceiling) || out_of_patience {
                    s.in_flight += 1;
                    return Permit(self.clone());
                }
            }
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, changed).await;
                }
                None => changed.await,
            }
        }
    }

    /// A call was answered without throttling.
    pub fn on_success(&self) {
        let mut s = self.lock();
        let step = if s.limit < s.slow_start_threshold { 1.0 } else { 1.0 / s.limit };
        s.limit = (s.limit + step).min(self.ceiling as f64);
        drop(s);
        self.changed.notify_waiters();
    }

    /// A call was answered "slow down" (ThrottlingException, RequestLimitExceeded, HTTP 429).
    pub fn on_throttle(&self) {
        self.on_throttle_at(Instant::now());
    }

    fn on_throttle_at(&self, now: Instant) {
        let mut s = self.lock();
        if s.last_cut.is_some_and(|at| now.duration_since(at) < CUT_INTERVAL) {
            return;
        }
        s.limit = (s.limit / 2.0).max(1.0);
        s.slow_start_threshold = s.limit;
        s.last_cut = Some(now);
        s.cuts += 1;
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    pub fn summary(&self) -> WindowSummary {
        WindowSummary { limit: self.limit(), cuts: self.lock().cuts }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few numbers updated in one step each: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One window per AWS service: AWS throttles per service (and API family), so EC2 asking to slow down must not hold
/// back ECS or Cloud Map.
#[derive(Debug)]
pub struct Windows {
    ceiling: usize,
    by_service: Mutex<BTreeMap<String, Arc<Window>>>,
}

impl Windows {
    pub fn new(ceiling: usize) -> Windows {
        Windows { ceiling: ceiling.max(1), by_service: Mutex::new(BTreeMap::new()) }
    }

    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// The window of `service` (its SigV4 signing name), opened on first use.
    pub fn of(&self, service: &str) -> Arc<Window> {
        let mut all = self.by_service.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        all.entry(service.to_string()).or_insert_with(|| Arc::new(Window::adaptive(self.ceiling))).clone()
    }

    /// Each service's window as the run left it.
    pub fn summary(&self) -> BTreeMap<String, WindowSummary> {
        let all = self.by_service.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        all.iter().map(|(service, w)| (service.clone(), w.summary())).collect()
    }
}

/// One call's place in the window, returned on drop.
#[derive(Debug)]
pub struct Permit(Arc<Window>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
        self.0.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_grows_by_one_per_success_up_to_the_ceiling() {
        let w = Window::adaptive(32);
        assert_eq!(w.limit(), INITIAL);
        for _ in 0..5 {
            w.on_success();
        }
        assert_eq!(w.limit(), INITIAL + 5);
        for _ in 0..100 {
            w.on_success();
        }
        assert_eq!(w.limit(), 32, "never above --parallelism");
    }

    #[test]
    fn a_ceiling_below_the_initial_window_is_the_window() {
        assert_eq!(Window::adaptive(1).limit(), 1);
        assert_eq!(Window::adaptive(4).limit(), 4);
    }

    #[test]
    fn throttling_halves_once_per_burst_then_growth_is_additive() {
        let w = Window::adaptive(64);
        for _ in 0..22 {
            w.on_success();
        }
        assert_eq!(w.limit(), 32);
        let t0 = Instant::now();
        w.on_throttle_at(t0);
        // The rest of the burst was sent under the old window: one cut, not four.
        for ms in [10, 50, 200] {
            w.on_throttle_at(t0 + Duration::from_millis(ms));
        }
        assert_eq!(w.limit(), 16);
        // Additive increase: about one full window of successes buys one more slot.
        for _ in 0..17 {
            w.on_success();
        }
        assert_eq!(w.limit(), 17);
        w.on_throttle_at(t0 + CUT_INTERVAL * 2);
        assert_eq!(w.summary(), WindowSummary { limit: 8, cuts: 2 });
    }

    #[tokio::test]
    async fn a_full_window_holds_calls_back_until_a_permit_returns() {
        let w = Arc::new(Window::fixed(2));
        let (a, _b) = (w.acquire().await, w.acquire().await);
        let third = tokio::spawn({
            let w = w.clone();
            async move { w.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "a third call must wait while two are in flight");
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(1), third).await.expect("released").unwrap();
        assert_eq!(w.in_flight(), 2);
    }

    #[tokio::test]
    async fn a_halved_window_admits_nothing_new_until_calls_drain_below_it() {
        let w = Arc::new(Window::fixed(4));
        let permits: Vec<Permit> = acquire_four(&w).await;
        w.on_throttle();
        assert_eq!(w.limit(), 2);
        let mut permits = permits.into_iter();
        drop(permits.next());
        drop(permits.next());
        // Two still in flight: the halved window (2) is full.
        let waiting = tokio::spawn({
            let w = w.clone();
            async move { w.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(permits.next());
        tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("admitted once below the window").unwrap();
    }

    async fn acquire_four(w: &Arc<Window>) -> Vec<Permit> {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(w.acquire().await);
        }
        v
    }

    #[tokio::test]
    async fn a_call_waits_only_so_long_then_goes_anyway() {
        let w = Arc::new(Window::fixed(1));
        let _held = w.acquire().await;
        let started = std::time::Instant::now();
        let _late = w.acquire_within(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited first");
        assert_eq!(w.in_flight(), 2, "counted in flight all the same");
    }

    #[test]
    fn each_service_has_its_own_window() {
        let windows = Windows::new(8);
        windows.of("ec2 mutating").on_throttle();
        assert_eq!(windows.of("ec2 mutating").limit(), 4);
        assert_eq!(windows.of("ec2 read").limit(), 8, "throttled writes do not slow reads down");
        assert_eq!(windows.of("ecs mutating").limit(), 8, "EC2 throttling does not slow ECS down");
    }

    #[test]
    fn never_drops_below_one() {
        let w = Window::fixed(2);
        let t0 = Instant::now();
        for i in 0..10 {
            w.on_throttle_at(t0 + CUT_INTERVAL * (i + 1));
        }
        assert_eq!(w.limit(), 1);
    }
}
