//! `anvil reconcile` as an operation: resolve its settings (flags > environment >
//! config file > defaults), load the Foundation, connect to the Director and Vault, then
//! one run, or the watch loop with the metrics listener until cancelled. The work of a
//! run is in `crate::reconcile`; this file only orders the steps.

use super::events::{emit, EventSink, OpsEvent};
use super::OpsError;
use crate::reconcile::metrics::{self, SharedMetrics};
use crate::reconcile::settings::{self, ConfigFile};
use crate::reconcile::{clients, watch, ReconcileError, Reconciler};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use crate::reconcile::metrics::secs;
pub use crate::reconcile::{Metrics, Resolved, RunReport};

/// What `anvil reconcile` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct ReconcileRequest {
    /// The Foundation spec (file or directory) whose catalog deployments are matched to.
    pub foundation: PathBuf,
    /// Settings given as flags, by snake_case key (they win over everything else).
    pub flags: BTreeMap<String, String>,
    /// A YAML file of settings.
    pub config: Option<PathBuf>,
    /// Run every `interval` until cancelled, instead of once.
    pub watch: bool,
    /// Serve Prometheus metrics here while watching.
    pub metrics_listen: Option<String>,
}

/// How `anvil reconcile` ended.
pub enum ReconcileOutcome {
    /// `enabled = false`; nothing was done.
    Disabled { resolved: Resolved },
    /// One run: its report and the counters after it.
    Once {
        report: Box<RunReport>,
        metrics: Box<Metrics>,
        resolved: Resolved,
    },
    /// The watch loop stopped after `runs` runs (each reported as an event).
    Watched { runs: u64, resolved: Resolved },
}

fn record(shared: &SharedMetrics, report: &RunReport) -> Metrics {
    let mut m = shared.lock().unwrap_or_else(|p| p.into_inner());
    m.record(report);
    m.clone()
}

/// The settings `request` resolves to, and where each came from.
///
/// # Errors
/// An unreadable config file, or a setting that does not parse (named with its source).
pub fn resolve_settings(request: &ReconcileRequest) -> Result<Resolved, OpsError> {
    let file = request
        .config
        .as_deref()
        .map(ConfigFile::read)
        .transpose()
        .map_err(ReconcileError::Settings)?;
    Ok(
        settings::resolve(&request.flags, crate::providers::env_var, file.as_ref())
            .map_err(ReconcileError::Settings)?,
    )
}

/// `anvil reconcile`: one run, or (with `watch`) runs every interval until `cancel`
/// fires (the current run finishes first). In watch mode each finished run is sent as
/// [`OpsEvent::ReconcileRunFinished`]; the metrics listener serves until the loop ends.
///
/// # Errors
/// Bad settings, an unloadable Foundation, the Director or Vault cannot be reached, or
/// the metrics address cannot be bound.
pub async fn reconcile(
    request: &ReconcileRequest,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<ReconcileOutcome, OpsError> {
    let resolved = resolve_settings(request)?;
    let s = resolved.settings.clone();
    if !s.enabled {
        return Ok(ReconcileOutcome::Disabled { resolved });
    }
    let f = clients::load_foundation(&request.foundation, clients::utf8_env(std::env::vars_os()))?;
    let (director, store) = clients::connect(&f, crate::providers::env_var).await?;
    let rec = Reconciler::new(
        Arc::new(director),
        Arc::new(store),
        f.catalog.clone(),
        s.clone(),
    );
    let shared = SharedMetrics::default();
    if !request.watch {
        let report = rec.run_once().await;
        let m = record(&shared, &report);
        return Ok(ReconcileOutcome::Once {
            report: Box::new(report),
            metrics: Box::new(m),
            resolved,
        });
    }
    let server = match &request.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| OpsError::MetricsListen {
                    addr: addr.clone(),
                    source,
                })?;
            let local = listener
                .local_addr()
                .map_err(|source| OpsError::MetricsListen {
                    addr: addr.clone(),
                    source,
                })?;
            emit(sink, OpsEvent::MetricsServing(local));
            Some(tokio::spawn(metrics::serve(
                listener,
                shared.clone(),
                cancel.clone().cancelled_owned(),
            )))
        }
        None => None,
    };
    emit(
        sink,
        OpsEvent::Watching {
            interval: s.interval,
        },
    );
    let settings = Arc::new(resolved.clone());
    let (rec, shared_ref, settings) = (&rec, &shared, &settings);
    let runs = watch::watch(
        s.interval,
        move || async move {
            let n = shared_ref.lock().map(|m| m.runs_total).unwrap_or_default() + 1;
            emit(sink, OpsEvent::ReconcileRunStarted(n));
            let report = rec.run_once().await;
            let m = record(shared_ref, &report);
            emit(
                sink,
                OpsEvent::ReconcileRunFinished {
                    report: Box::new(report),
                    metrics: Box::new(m),
                    settings: settings.clone(),
                },
            );
        },
        cancel.cancelled(),
    )
    .await;
    if let Some(server) = server {
        server.abort();
    }
    Ok(ReconcileOutcome::Watched { runs, resolved })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_a_bad_setting_is_named() {
        let mut req = ReconcileRequest::default();
        req.flags.insert("batch_size".into(), "7".into());
        let r = resolve_settings(&req).unwrap();
        assert_eq!(r.settings.batch_size, 7);
        req.flags.insert("batch_size".into(), "seven".into());
        let e = resolve_settings(&req).unwrap_err().to_string();
        assert!(e.contains("batch_size"), "{e}");
    }

    #[tokio::test]
    async fn a_disabled_reconciler_does_nothing_and_says_so() {
        let mut req = ReconcileRequest {
            foundation: PathBuf::from("/nonexistent"),
            ..Default::default()
        };
        req.flags.insert("enabled".into(), "false".into());
        let out = reconcile(&req, &super::super::discard(), &CancellationToken::new())
            .await
            .unwrap();
        assert!(matches!(out, ReconcileOutcome::Disabled { .. }));
    }
}
