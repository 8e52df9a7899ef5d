//! Waiting for asynchronous AWS states (a NAT gateway `available`, an EKS cluster
//! `ACTIVE`, an RDS instance `available`, a deletion finished): one small poll loop over a
//! [`Probe`], reporting each new status once as a progress event, failing on a terminal
//! failure status, on cancellation, and after a timeout. Time is tokio's, so the loop is
//! tested on the paused clock with a fake probe that answers pending states first.

// The SDK-backed probes exist only with the `aws` feature; the loop is tested without it.
#![cfg_attr(not(feature = "aws"), allow(dead_code))]

use crate::providers::{CancellationToken, ErrorKind, ProgressFn, ProviderError};
use async_trait::async_trait;
use std::time::Duration;

/// Asks for the current status of one object.
#[async_trait]
pub trait Probe: Send + Sync {
    /// The object's status (`pending`, `ACTIVE`, ...), or `None` when it does not exist.
    ///
    /// # Errors
    /// AWS could not be asked.
    async fn status(&self) -> Result<Option<String>, ProviderError>;
}

/// What a wait is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One of these statuses.
    Status(&'static [&'static str]),
    /// The object is gone (or in one of these final statuses, e.g. `deleted`).
    Gone(&'static [&'static str]),
}

/// One wait: what it is about (for messages), its target, the statuses that mean it
/// failed, how often to ask and for how long.
#[derive(Debug, Clone)]
pub struct Wait {
    pub what: String,
    pub target: Target,
    pub failed: &'static [&'static str],
    pub interval: Duration,
    pub timeout: Duration,
}

impl Wait {
    /// Waits for one of `statuses`, asking every `interval`, for at most `timeout`.
    #[must_use]
    pub fn status(
        what: impl Into<String>,
        statuses: &'static [&'static str],
        interval: Duration,
        timeout: Duration,
    ) -> Wait {
        Wait {
            what: what.into(),
            target: Target::Status(statuses),
            failed: &[],
            interval,
            timeout,
        }
    }

    /// Waits until the object is gone (or shows one of `final_statuses`).
    #[must_use]
    pub fn gone(
        what: impl Into<String>,
        final_statuses: &'static [&'static str],
        interval: Duration,
        timeout: Duration,
    ) -> Wait {
        Wait {
            what: what.into(),
            target: Target::Gone(final_statuses),
            failed: &[],
            interval,
            timeout,
        }
    }

    /// The statuses that end the wait as a failure (e.g. `failed`, `CREATE_FAILED`).
    #[must_use]
    pub fn failing_on(mut self, failed: &'static [&'static str]) -> Wait {
        self.failed = failed;
        self
    }
}

/// Polls `probe` until the wait's target is reached. Each status seen for the first time
/// is reported through `progress` (`NAT gateway nat-1: pending`).
///
/// # Errors
/// A failure status (`Permanent`), the object vanishing while a status is awaited
/// (`NotFound`), the timeout (`Retryable`, naming the last status), cancellation
/// (`Cancelled`), or the probe's own error.
pub async fn until(
    probe: &dyn Probe,
    wait: &Wait,
    progress: &ProgressFn,
    cancel: &CancellationToken,
) -> Result<(), ProviderError> {
    let deadline = tokio::time::Instant::now() + wait.timeout;
    let mut last: Option<Option<String>> = None;
    loop {
        let status = probe.status().await?;
        if last.as_ref() != Some(&status) {
            progress(&format!(
                "{}: {}",
                wait.what,
                status.as_deref().unwrap_or("gone")
            ));
        }
        match (&wait.target, status.as_deref()) {
            (Target::Gone(_), None) => return Ok(()),
            (Target::Gone(finals), Some(s)) if finals.contains(&s) => return Ok(()),
            (Target::Status(_), None) => {
                return Err(ProviderError::of(
                    ErrorKind::NotFound,
                    format!(
                        "{} disappeared while anvil waited for it to become ready",
                        wait.what
                    ),
                ))
            }
            (Target::Status(want), Some(s)) if want.contains(&s) => return Ok(()),
            (_, Some(s)) if wait.failed.contains(&s) => {
                return Err(ProviderError::new(format!(
                    "{} is `{s}`; look at its events in the AWS console, fix the cause and \
                     run apply again",
                    wait.what
                )))
            }
            _ => {}
        }
        last = Some(status);
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let seen = last.flatten().unwrap_or_else(|| "gone".into());
            return Err(ProviderError::retryable(format!(
                "{} is still `{seen}` after {}; run apply again to keep waiting",
                wait.what,
                humantime::format_duration(wait.timeout)
            )));
        }
        let next = (now + wait.interval).min(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = cancel.cancelled() => {
                return Err(ProviderError::cancelled(format!(
                    "stopped waiting for {}: the run was interrupted",
                    wait.what
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A fake AWS object answering a script of statuses, then repeating the last one.
    struct Script {
        answers: Mutex<Vec<Option<&'static str>>>,
        asked: Mutex<u32>,
    }

    impl Script {
        fn new(answers: &[Option<&'static str>]) -> Script {
            let mut a = answers.to_vec();
            a.reverse();
            Script {
                answers: Mutex::new(a),
                asked: Mutex::new(0),
            }
        }
        fn asked(&self) -> u32 {
            *self.asked.lock().unwrap()
        }
    }

    #[async_trait]
    impl Probe for Script {
        async fn status(&self) -> Result<Option<String>, ProviderError> {
            *self.asked.lock().unwrap() += 1;
            let mut a = self.answers.lock().unwrap();
            let s = if a.len() > 1 { a.pop().unwrap() } else { a[0] };
            Ok(s.map(str::to_string))
        }
    }

    fn recorder() -> (ProgressFn, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (
            Arc::new(move |m: &str| s.lock().unwrap().push(m.to_string())),
            seen,
        )
    }

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn waits_through_pending_states_reporting_each_once() {
        let probe = Script::new(&[
            Some("CREATING"),
            Some("CREATING"),
            Some("CREATING"),
            Some("ACTIVE"),
        ]);
        let (progress, seen) = recorder();
        let start = tokio::time::Instant::now();
        let wait =
            Wait::status("EKS cluster c", &["ACTIVE"], 10 * SEC, 600 * SEC).failing_on(&["FAILED"]);
        until(&probe, &wait, &progress, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(probe.asked(), 4);
        assert_eq!(start.elapsed(), 30 * SEC);
        assert_eq!(
            *seen.lock().unwrap(),
            ["EKS cluster c: CREATING", "EKS cluster c: ACTIVE"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_never_ends_times_out_naming_the_last_status() {
        let probe = Script::new(&[Some("pending")]);
        let (progress, _) = recorder();
        let start = tokio::time::Instant::now();
        let wait = Wait::status("NAT gateway nat-1", &["available"], 15 * SEC, 100 * SEC);
        let e = until(&probe, &wait, &progress, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Retryable);
        assert!(
            e.message
                .contains("NAT gateway nat-1 is still `pending` after 1m 40s"),
            "{}",
            e.message
        );
        // It asked at 0, 15, ..., 90 and once more at the deadline.
        assert_eq!(start.elapsed(), 100 * SEC);
        assert_eq!(probe.asked(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn deletions_end_when_gone_or_final_and_failures_are_named() {
        let (progress, seen) = recorder();
        let probe = Script::new(&[Some("deleting"), Some("deleting"), None]);
        let wait = Wait::gone("DB instance db", &[], SEC, 60 * SEC);
        until(&probe, &wait, &progress, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            seen.lock().unwrap().last().map(String::as_str),
            Some("DB instance db: gone")
        );

        let probe = Script::new(&[Some("deleting"), Some("deleted")]);
        let wait = Wait::gone("NAT gateway n", &["deleted"], SEC, 60 * SEC);
        until(&probe, &wait, &progress, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(probe.asked(), 2);

        let probe = Script::new(&[Some("pending"), Some("failed")]);
        let wait =
            Wait::status("NAT gateway n", &["available"], SEC, 60 * SEC).failing_on(&["failed"]);
        let e = until(&probe, &wait, &progress, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(e.message.contains("is `failed`"), "{}", e.message);

        let probe = Script::new(&[Some("creating"), None]);
        let wait = Wait::status("DB instance db", &["available"], SEC, 60 * SEC);
        let e = until(&probe, &wait, &progress, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_the_wait() {
        let probe = Script::new(&[Some("CREATING")]);
        let (progress, _) = recorder();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(25 * SEC).await;
            c.cancel();
        });
        let wait = Wait::status("EKS cluster c", &["ACTIVE"], 10 * SEC, 600 * SEC);
        let e = until(&probe, &wait, &progress, &cancel).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Cancelled);
        assert_eq!(probe.asked(), 3);
    }
}
