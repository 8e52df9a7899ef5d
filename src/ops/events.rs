//! What an operation tells its caller while it runs: apply progress, lock waits,
//! journal folding, reconcile runs. Operations send [`OpsEvent`]s into an
//! [`EventSink`] and never print, so a terminal, a broker or a server can each show
//! them their own way.

use crate::apply;
use crate::reconcile::{Metrics, Resolved, RunReport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Where an operation sends its events. A sink whose receiver is gone is fine: events
/// are then dropped (a caller that does not care passes [`discard`]).
pub type EventSink = mpsc::UnboundedSender<OpsEvent>;

/// One thing an operation reports while it runs.
#[derive(Debug, Clone)]
pub enum OpsEvent {
    /// The apply walk starts `total` operations; from now on cancelling drains the
    /// operations in flight instead of abandoning the run.
    ApplyStarting { total: usize },
    /// Progress of the apply walk.
    Apply(apply::Event),
    /// Waiting up to `timeout` for the lock on `state`.
    LockWait { state: String, timeout: Duration },
    /// YAML files a directory scan skipped because they hold no anvil document (a
    /// front-end shows them when asked to be verbose).
    SkippedFiles(Vec<std::path::PathBuf>),
    /// A line worth showing the user (e.g. a journal folded into the state).
    Info(String),
    /// Something the user should check (e.g. the lock was lost during a run).
    Warning(String),
    /// `anvil reconcile --watch` serves Prometheus metrics on this address.
    MetricsServing(SocketAddr),
    /// `anvil reconcile --watch` starts its loop.
    Watching { interval: Duration },
    /// A reconcile run starts (numbered from 1).
    ReconcileRunStarted(u64),
    /// A reconcile run in watch mode finished, with the counters after it.
    ReconcileRunFinished {
        report: Box<RunReport>,
        metrics: Box<Metrics>,
        /// The settings every run of the loop uses, and where each came from.
        settings: Arc<Resolved>,
    },
}

/// A sink that drops every event.
#[must_use]
pub fn discard() -> EventSink {
    mpsc::unbounded_channel().0
}

/// Sends `event`; a caller that stopped listening is not an error.
pub(crate) fn emit(sink: &EventSink, event: OpsEvent) {
    let _ = sink.send(event);
}
