//! The one retry/backoff policy of every provider client and the reconciler, on
//! `backon`: exponential backoff with jitter, a bounded number of attempts, and the
//! decision to retry taken from the error's [`ErrorKind`]. Sleeping is tokio's, so tests
//! on a paused clock run it instantly.

use super::{ErrorKind, ProviderError};
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use std::future::Future;
use std::time::Duration;

/// A retry policy: the first delay, the largest delay and how many attempts in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Whether delays are randomised (up to twice as long), so racing writers spread out.
    pub jitter: bool,
}

impl Policy {
    /// HTTP requests to a Director or Vault: 200 ms doubling, 5 attempts.
    pub const HTTP: Policy = Policy {
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(13),
        attempts: 5,
        jitter: false,
    };

    /// Check-and-set conflicts on a shared secret: 5 ms doubling with jitter, 20 attempts.
    pub const CAS: Policy = Policy {
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(320),
        attempts: 20,
        jitter: true,
    };

    /// The backoff this policy stands for.
    #[must_use]
    pub fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.attempts.saturating_sub(1) as usize);
        if self.jitter {
            b.with_jitter()
        } else {
            b
        }
    }

    /// The delays between attempts, for inspection.
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        self.backoff().build()
    }
}

/// Runs `op` until it succeeds, fails with an error `retry_on` does not accept, or the
/// policy's attempts are spent. Returns the last error, and the attempts made.
///
/// # Errors
/// The last error `op` returned.
pub async fn run<T, F, Fut>(
    policy: Policy,
    retry_on: impl Fn(ErrorKind) -> bool,
    op: F,
) -> Result<T, (ProviderError, u32)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    run_with(policy.backoff(), |e: &ProviderError| retry_on(e.kind), op).await
}

/// [`run`] with any backon backoff and a predicate on the whole error (the reconciler's
/// settings-driven delays use this).
///
/// # Errors
/// The last error `op` returned, and the attempts made.
pub async fn run_with<T, E, F, Fut, B>(
    backoff: B,
    retry_if: impl Fn(&E) -> bool,
    op: F,
) -> Result<T, (E, u32)>
where
    B: BackoffBuilder,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let attempts = std::sync::atomic::AtomicU32::new(1);
    op.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| retry_if(e))
        .notify(|_, _| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .await
        .map_err(|e| (e, attempts.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Transient failures (connection errors, 5xx, 429) are retried.
#[must_use]
pub fn transient(kind: ErrorKind) -> bool {
    kind.is_transient()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn http_policy_doubles_and_is_bounded() {
        // backon computes in floating point: compare whole milliseconds.
        let d: Vec<u128> = Policy::HTTP.delays().map(|d| d.as_millis()).collect();
        assert_eq!(d, [200, 400, 800, 1600]);
    }

    #[test]
    fn cas_policy_is_small_jittered_and_bounded() {
        let d: Vec<Duration> = Policy::CAS.delays().collect();
        assert_eq!(d.len(), 19);
        for x in d {
            assert!(
                x >= Duration::from_millis(5) && x <= Duration::from_millis(640),
                "{x:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_what_the_kind_allows() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = run(Policy::HTTP, transient, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::retryable("down"))
        })
        .await;
        let (e, n) = r.unwrap_err();
        assert_eq!((e.message.as_str(), n), ("down", 5));
        assert_eq!(calls.load(Ordering::SeqCst), 5);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = run(Policy::HTTP, transient, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::of(ErrorKind::Auth, "no"))
        })
        .await;
        assert_eq!(r.unwrap_err().1, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_the_policy_delays_on_the_tokio_clock() {
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let r = run(Policy::HTTP, transient, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(ProviderError::of(ErrorKind::Throttled, "slow down"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // On the paused clock the two waits (200 ms, 400 ms) passed as tokio time.
        assert_eq!(start.elapsed().as_millis() / 100, 6);
    }
}
