//! Prometheus metrics of `anvil serve` (`GET /metrics`, text format 0.0.4): API requests
//! by route template and status, their latency, and provisioning outcomes and durations
//! (the workers report each finished job through [`Metrics::job_finished`]). The queue's
//! gauges are read at scrape time.

use super::queue::{JobKind, JobOutcome, QueueStats};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    environments: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounter,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    queued: IntGauge,
    running: IntGauge,
    workers_alive: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Why the metrics could not be set up (a name clash: a bug, not bad input).
#[derive(Debug, thiserror::Error)]
#[error("setting up the Prometheus metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Registers every metric.
    ///
    /// # Errors
    /// Only on an invalid metric definition.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let environments = IntCounterVec::new(
            Opts::new(
                "provisioning_environments_total",
                "Environments by the status a job left them in (queued counts submissions)",
            ),
            &["status"],
        )?;
        // Environments take minutes: buckets from 1 s to 2 h.
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "provisioning_duration_seconds",
                "How long provision and destroy jobs took, by kind",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
            ]),
            &["kind"],
        )?;
        let errors = IntCounter::new(
            "provisioning_errors_total",
            "Jobs that ended with the environment failed",
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "api_requests_total",
                "API requests by method, route template and status code",
            ),
            &["method", "endpoint", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "api_request_duration_seconds",
                "API request latency by method and route template",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["method", "endpoint"],
        )?;
        let queued = IntGauge::new("provisioning_jobs_queued", "Jobs waiting for a worker")?;
        let running = IntGauge::new("provisioning_jobs_running", "Jobs under a live lease")?;
        let workers_alive = IntGauge::new(
            "provisioning_workers_alive",
            "Workers (of every server on the queue) that heartbeated within their lease",
        )?;
        registry.register(Box::new(environments.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        registry.register(Box::new(running.clone()))?;
        registry.register(Box::new(workers_alive.clone()))?;
        Ok(Metrics {
            registry,
            environments,
            duration,
            errors,
            requests,
            request_duration,
            queued,
            running,
            workers_alive,
        })
    }

    /// An environment was submitted (counted as `status="queued"`).
    pub fn submitted(&self) {
        self.environments.with_label_values(&["queued"]).inc();
    }

    /// A worker finished a job.
    pub fn job_finished(&self, kind: JobKind, outcome: &JobOutcome, took: Duration) {
        let status = match outcome {
            JobOutcome::Ready { .. } => "ready",
            JobOutcome::Destroyed => "destroyed",
            JobOutcome::Failed { .. } => {
                self.errors.inc();
                "failed"
            }
        };
        self.environments.with_label_values(&[status]).inc();
        let kind = match kind {
            JobKind::Provision => "provision",
            JobKind::Destroy => "destroy",
        };
        self.duration
            .with_label_values(&[kind])
            .observe(took.as_secs_f64());
    }

    /// One API request.
    pub fn request(&self, method: &str, endpoint: &str, status: u16, took: Duration) {
        self.requests
            .with_label_values(&[method, endpoint, &status.to_string()])
            .inc();
        self.request_duration
            .with_label_values(&[method, endpoint])
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the queue's gauges as of `stats` (left as they were
    /// when the queue could not be asked).
    #[must_use]
    pub fn render(&self, stats: Option<QueueStats>) -> String {
        if let Some(s) = stats {
            self.queued.set(gauge(s.queued));
            self.running.set(gauge(s.running));
            self.workers_alive.set(gauge(s.workers_alive));
        }
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail on IO; a failure would be a bad metric, and
        // the partial text is still the best answer.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl super::worker::Observer for Metrics {
    fn job_finished(&self, kind: JobKind, outcome: &JobOutcome, took: Duration) {
        Metrics::job_finished(self, kind, outcome, took);
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The middleware counting every request by its route template (`/api/v1/environments/{id}`,
/// not the id itself, so the label set stays small); unmatched paths count as `unmatched`.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    metrics.request(
        &method,
        &endpoint,
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_metric_is_exposed_with_its_labels() {
        let m = Metrics::new().unwrap();
        m.submitted();
        m.job_finished(
            JobKind::Provision,
            &JobOutcome::Failed {
                step: super::super::queue::Status::Provisioning,
                error: "x".into(),
            },
            Duration::from_secs(3),
        );
        m.request(
            "POST",
            "/api/v1/environments",
            201,
            Duration::from_millis(4),
        );
        let text = m.render(Some(QueueStats {
            queued: 2,
            running: 1,
            workers_alive: 4,
        }));
        for want in [
            "provisioning_environments_total{status=\"queued\"} 1",
            "provisioning_environments_total{status=\"failed\"} 1",
            "provisioning_errors_total 1",
            "provisioning_duration_seconds_bucket{kind=\"provision\",le=\"5\"} 1",
            "api_requests_total{endpoint=\"/api/v1/environments\",method=\"POST\",status=\"201\"} 1",
            "api_request_duration_seconds_count{endpoint=\"/api/v1/environments\",method=\"POST\"} 1",
            "provisioning_jobs_queued 2",
            "provisioning_workers_alive 4",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
