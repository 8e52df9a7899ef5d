//! The reconciler's metrics: counters over all runs and figures of the last run, as
//! JSON for `--json`, and as Prometheus text served on `--metrics-listen` in watch mode.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::RunReport;

/// Counters since the process started, and the last run's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub runs_total: u64,
    pub runs_successful: u64,
    pub runs_failed: u64,
    /// Seconds the last run took.
    pub last_run_duration_seconds: f64,
    /// Mean seconds per run.
    pub average_run_duration_seconds: f64,
    /// Unix time the last run ended.
    pub last_run_timestamp: i64,
    /// Deployments the last run saw on the Director.
    pub deployments_scanned: u64,
    /// Deployments the last run matched to a plan.
    pub instances_found: u64,
    /// Instances the last run wrote back to Vault.
    pub instances_synced: u64,
    /// Index entries marked orphaned after the last run.
    pub instances_orphaned: u64,
    /// Deployments the last run could not match.
    pub deployments_unmatched: u64,
    /// Errors over all runs.
    pub errors_total: u64,
    #[serde(skip)]
    total_seconds: f64,
}

impl Metrics {
    /// Counts one finished run.
    pub fn record(&mut self, r: &RunReport) {
        self.runs_total += 1;
        if r.errors.is_empty() {
            self.runs_successful += 1;
        } else {
            self.runs_failed += 1;
        }
        let secs = r.duration.as_secs_f64();
        self.total_seconds += secs;
        self.last_run_duration_seconds = secs;
        self.average_run_duration_seconds = self.total_seconds / self.runs_total as f64;
        self.last_run_timestamp = r.finished_at;
        self.deployments_scanned = r.deployments_scanned as u64;
        self.instances_found = r.matches.len() as u64;
        self.instances_synced = r.synced as u64;
        self.instances_orphaned = r.orphaned.len() as u64;
        self.deployments_unmatched = r.unmatched.len() as u64;
        self.errors_total += r.errors.len() as u64;
    }

    /// The Prometheus text exposition format (version 0.0.4).
    #[must_use]
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let mut put = |name: &str, ty: &str, help: &str, value: String| {
            let _ = writeln!(s, "# HELP anvil_reconciler_{name} {help}");
            let _ = writeln!(s, "# TYPE anvil_reconciler_{name} {ty}");
            let _ = writeln!(s, "anvil_reconciler_{name} {value}");
        };
        put(
            "runs_total",
            "counter",
            "Reconcile runs started and finished.",
            self.runs_total.to_string(),
        );
        put(
            "runs_successful_total",
            "counter",
            "Runs that ended without errors.",
            self.runs_successful.to_string(),
        );
        put(
            "runs_failed_total",
            "counter",
            "Runs that had at least one error.",
            self.runs_failed.to_string(),
        );
        put(
            "last_run_duration_seconds",
            "gauge",
            "Duration of the last run.",
            format!("{:.6}", self.last_run_duration_seconds),
        );
        put(
            "average_run_duration_seconds",
            "gauge",
            "Mean duration of all runs.",
            format!("{:.6}", self.average_run_duration_seconds),
        );
        put(
            "last_run_timestamp_seconds",
            "gauge",
            "Unix time the last run ended.",
            self.last_run_timestamp.to_string(),
        );
        put(
            "deployments_scanned",
            "gauge",
            "Director deployments seen by the last run.",
            self.deployments_scanned.to_string(),
        );
        put(
            "instances_found",
            "gauge",
            "Deployments matched to a catalog plan by the last run.",
            self.instances_found.to_string(),
        );
        put(
            "instances_synced",
            "gauge",
            "Instances written back to Vault by the last run.",
            self.instances_synced.to_string(),
        );
        put(
            "instances_orphaned",
            "gauge",
            "Index entries marked orphaned after the last run.",
            self.instances_orphaned.to_string(),
        );
        put(
            "deployments_unmatched",
            "gauge",
            "Deployments the last run could not match to a plan.",
            self.deployments_unmatched.to_string(),
        );
        put(
            "errors_total",
            "counter",
            "Errors over all runs.",
            self.errors_total.to_string(),
        );
        s
    }
}

/// Shared metrics, updated by the runs and read by the server.
pub type SharedMetrics = Arc<Mutex<Metrics>>;

/// Serves `GET /metrics` (Prometheus text) on `listener` until `shutdown` completes.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: SharedMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let text = metrics
                .lock()
                .map(|m| m.prometheus())
                .unwrap_or_else(|p| p.into_inner().prometheus());
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Seconds with millisecond precision, for summaries.
#[must_use]
pub fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_runs_and_renders_prometheus_text() {
        let mut m = Metrics::default();
        let mut r = RunReport {
            duration: Duration::from_secs(2),
            deployments_scanned: 4,
            synced: 3,
            ..RunReport::default()
        };
        m.record(&r);
        r.duration = Duration::from_secs(4);
        r.errors.push(super::super::RunError {
            subject: "x".into(),
            message: "boom".into(),
        });
        m.record(&r);
        assert_eq!((m.runs_total, m.runs_successful, m.runs_failed), (2, 1, 1));
        assert!((m.average_run_duration_seconds - 3.0).abs() < 1e-9);
        assert!((m.last_run_duration_seconds - 4.0).abs() < 1e-9);
        assert_eq!(m.errors_total, 1);
        let text = m.prometheus();
        assert!(
            text.contains(
                "# TYPE anvil_reconciler_runs_total counter\nanvil_reconciler_runs_total 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("anvil_reconciler_instances_synced 3\n"),
            "{text}"
        );
        assert!(
            text.contains("anvil_reconciler_deployments_scanned 4\n"),
            "{text}"
        );
    }
}
