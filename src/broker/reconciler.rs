//! The reconciler inside the broker (`anvil broker --reconcile-interval DURATION`):
//! `anvil reconcile` run at start and then every interval, or at once when
//! `POST /b/reconciler/run` asks, each run under the state lock (`ops`), with its last
//! result kept for `GET /b/reconciler/status`. Without the flag both endpoints answer
//! 404 saying how to turn it on.

use super::{ApiError, Shared};
use crate::ops::reconcile::ReconcileOutcome;
use crate::ops::{discard, CancellationToken};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The reconciler's schedule and its last result, shared with the endpoints.
pub struct ReconcilerHandle {
    /// Time from one run's start to the next one's.
    pub interval: Duration,
    trigger: Notify,
    status: Mutex<Status>,
}

#[derive(Default)]
struct Status {
    running: bool,
    runs: u64,
    /// The last finished run's summary.
    last: Option<Value>,
    /// When the next run is due (wall clock, RFC 3339), while waiting.
    next_run_at: Option<String>,
}

impl ReconcilerHandle {
    /// A reconciler running every `interval`.
    #[must_use]
    pub fn new(interval: Duration) -> ReconcilerHandle {
        ReconcilerHandle {
            interval,
            trigger: Notify::new(),
            status: Mutex::new(Status::default()),
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks for a run now; `false` when one is running already.
    pub fn trigger(&self) -> bool {
        if self.status().running {
            return false;
        }
        self.trigger.notify_one();
        true
    }

    /// The status document of `GET /b/reconciler/status`.
    #[must_use]
    pub fn document(&self) -> Value {
        let s = self.status();
        json!({
            "interval_seconds": self.interval.as_secs_f64(),
            "running": s.running,
            "runs": s.runs,
            "last_run": s.last.clone(),
            "next_run_at": if s.running { None } else { s.next_run_at.clone() },
        })
    }
}

/// Runs `run` at once, then `interval` after each run's start, or as soon as `handle`
/// is triggered, until `stop` fires (a run in progress finishes first). Returns the
/// number of runs.
pub async fn schedule<R, F>(handle: &ReconcilerHandle, mut run: R, stop: CancellationToken) -> u64
where
    R: FnMut() -> F,
    F: Future<Output = Value>,
{
    let mut next = Instant::now();
    loop {
        {
            let wall = chrono::Utc::now()
                + chrono::TimeDelta::from_std(next.saturating_duration_since(Instant::now()))
                    .unwrap_or(chrono::TimeDelta::MAX);
            handle.status().next_run_at =
                Some(wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = handle.trigger.notified() => {}
            () = stop.cancelled() => break,
        }
        let started = Instant::now();
        handle.status().running = true;
        let summary = run().await;
        {
            let mut s = handle.status();
            s.running = false;
            s.runs += 1;
            s.last = Some(summary);
        }
        if stop.is_cancelled() {
            break;
        }
        // An interval too long to add to the clock means no further timed run.
        next = started
            .checked_add(handle.interval)
            .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 86_400));
    }
    handle.status().runs
}

/// Starts the reconciler loop of the broker (when it was asked for).
pub fn start(state: &Shared) {
    if state.reconciler.is_none() {
        return;
    }
    let state = state.clone();
    // The reconcile run's future is not `Send` (as for `/b/cleanup`): the loop runs on
    // a thread of its own, driven by this runtime.
    let runtime = tokio::runtime::Handle::current();
    let driver = runtime.clone();
    driver.spawn_blocking(move || {
        runtime.block_on(async {
            let Some(handle) = state.reconciler.as_ref() else {
                return;
            };
            let runs = schedule(handle, || one_run(&state), state.stopping.clone()).await;
            tracing::info!(runs, "the broker's reconciler stopped");
        });
    });
}

/// One run, summarised for the status endpoint.
async fn one_run(state: &Shared) -> Value {
    let started_at = crate::ops::broker::now_rfc3339();
    let t = std::time::Instant::now();
    let outcome = crate::ops::broker::reconcile_locked(
        &state.settings.inputs,
        state.settings.lock_timeout,
        &discard(),
        &state.stopping,
    )
    .await;
    let duration = t.elapsed().as_secs_f64();
    let finished_at = crate::ops::broker::now_rfc3339();
    let result = match outcome {
        Ok(ReconcileOutcome::Once { report, .. }) => json!({
            "ok": report.errors.is_empty(),
            "deployments_scanned": report.deployments_scanned,
            "matched": report.matches.len(),
            "unmatched": report.unmatched.len(),
            "synced": report.synced,
            "rebuilt": report.rebuilt.len(),
            "orphaned": report.orphaned.len(),
            "newly_orphaned": report.newly_orphaned.len(),
            "cleared": report.cleared.len(),
            "errors": report.errors.iter().map(|e| format!("{}: {}", e.subject, e.message)).collect::<Vec<_>>(),
        }),
        Ok(_) => json!({
            "ok": true,
            "note": "the reconciler is disabled (ANVIL_RECONCILER_ENABLED): nothing was done",
        }),
        Err(e) => {
            tracing::warn!(error = %e, "a reconciler run failed");
            json!({"ok": false, "errors": [e.to_string()]})
        }
    };
    json!({
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_seconds": duration,
        "result": result,
    })
}

/// `GET /b/reconciler/status` and `POST /b/reconciler/run`.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/b/reconciler/status", get(status))
        .route("/b/reconciler/run", post(run_now))
}

fn not_running() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the reconciler does not run in this broker: start `anvil broker` with --reconcile-interval DURATION (e.g. 5m) to run it, or run `anvil reconcile` yourself",
    )
}

async fn status(State(state): State<Shared>) -> Result<Response, ApiError> {
    let handle = state.reconciler.as_ref().ok_or_else(not_running)?;
    Ok(Json(handle.document()).into_response())
}

async fn run_now(State(state): State<Shared>) -> Result<Response, ApiError> {
    let handle = state.reconciler.as_ref().ok_or_else(not_running)?;
    if !handle.trigger() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            "a reconciler run is already running: see GET /b/reconciler/status and ask again once it finished",
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"triggered": true, "status": "/b/reconciler/status"})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const MIN: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn runs_at_start_every_interval_and_when_triggered() {
        let handle = Arc::new(ReconcilerHandle::new(10 * MIN));
        let stop = CancellationToken::new();
        let count = Arc::new(AtomicU64::new(0));
        let (h, s, c) = (handle.clone(), stop.clone(), count.clone());
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let st = starts.clone();
        let task = tokio::spawn(async move {
            schedule(
                &h,
                || {
                    let c = c.clone();
                    let st = st.clone();
                    async move {
                        st.lock().unwrap().push(t0.elapsed());
                        // A run takes a minute.
                        tokio::time::sleep(MIN).await;
                        json!({"run": c.fetch_add(1, Ordering::SeqCst) + 1})
                    }
                },
                s,
            )
            .await
        });
        // The first run starts at once; while it runs the status says so, and a
        // trigger is refused.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(handle.document()["running"], true);
        assert!(handle.document()["next_run_at"].is_null());
        assert!(!handle.trigger());
        // After it: not running, one run, the next one due.
        tokio::time::sleep(2 * MIN).await;
        let doc = handle.document();
        assert_eq!(doc["running"], false);
        assert_eq!(doc["runs"], 1);
        assert_eq!(doc["last_run"]["run"], 1);
        assert!(doc["next_run_at"].is_string());
        // The second run starts one interval after the first one started.
        tokio::time::sleep(8 * MIN).await;
        assert_eq!(handle.document()["runs"], 1);
        tokio::time::sleep(2 * MIN).await;
        assert_eq!(handle.document()["runs"], 2);
        // A trigger runs it now, not at the next interval.
        assert!(handle.trigger());
        tokio::time::sleep(MIN + Duration::from_secs(1)).await;
        assert_eq!(handle.document()["runs"], 3);
        stop.cancel();
        assert_eq!(task.await.unwrap(), 3);
        let starts = starts.lock().unwrap().clone();
        assert_eq!(starts[0], Duration::ZERO);
        assert_eq!(starts[1], 10 * MIN);
        // The trigger came at 12 min 1 s.
        assert_eq!(starts[2], 12 * MIN + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_a_run_lets_it_finish() {
        let handle = Arc::new(ReconcilerHandle::new(MIN));
        let stop = CancellationToken::new();
        let (h, s) = (handle.clone(), stop.clone());
        let task = tokio::spawn(async move {
            schedule(
                &h,
                || async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    json!({})
                },
                s,
            )
            .await
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        assert_eq!(task.await.unwrap(), 1);
        assert_eq!(handle.document()["runs"], 1);
    }
}
