//! `anvil reconcile`: its flags and the rendering of its runs. Settings resolution,
//! connecting, the watch loop and the metrics listener are `ops::reconcile`.

use crate::ops::reconcile::{
    reconcile, secs, Metrics, ReconcileOutcome, ReconcileRequest, Resolved, RunReport,
};
use crate::ops::{CancellationToken, EventSink};
use anyhow::Result;
use clap::Args;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct ReconcileArgs {
    /// The Foundation spec (file or directory) whose catalog deployments are matched to.
    #[arg(long)]
    foundation: PathBuf,
    /// Run again every --interval until SIGTERM or SIGINT (the current run finishes first).
    #[arg(long)]
    pub(super) watch: bool,
    /// Print each run's report as JSON (one line per run with --watch).
    #[arg(long)]
    pub(super) json: bool,
    /// A YAML file of settings, snake_case keys (docs/reconciler.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR (GET /metrics) while watching, e.g. 127.0.0.1:9190.
    #[arg(long, value_name = "ADDR", requires = "watch")]
    metrics_listen: Option<String>,
    /// Whether to reconcile at all [env ANVIL_RECONCILER_ENABLED; default true].
    #[arg(long, value_name = "BOOL")]
    enabled: Option<String>,
    /// Time between runs with --watch [env ANVIL_RECONCILER_INTERVAL; default 1h].
    #[arg(long, value_name = "DURATION")]
    interval: Option<String>,
    /// Most operations at once [env ANVIL_RECONCILER_MAX_CONCURRENCY; default 5].
    #[arg(long, value_name = "N")]
    max_concurrency: Option<String>,
    /// Instances per batch [env ANVIL_RECONCILER_BATCH_SIZE; default 10].
    #[arg(long, value_name = "N")]
    batch_size: Option<String>,
    /// Retries of a failed operation [env ANVIL_RECONCILER_RETRY_ATTEMPTS; default 3].
    #[arg(long, value_name = "N")]
    retry_attempts: Option<String>,
    /// Delay before the first retry, growing each time [env ANVIL_RECONCILER_RETRY_DELAY; default 10s].
    #[arg(long, value_name = "DURATION")]
    retry_delay: Option<String>,
    /// How long deployment details are reused [env ANVIL_RECONCILER_CACHE_TTL; default 5m].
    #[arg(long, value_name = "DURATION")]
    cache_ttl: Option<String>,
    /// Back up an instance's Vault data before changing it [env ANVIL_RECONCILER_BACKUP_ENABLED; default true].
    #[arg(long, value_name = "BOOL")]
    backup_enabled: Option<String>,
    /// Backups kept per instance [env ANVIL_RECONCILER_BACKUP_RETENTION; default 10].
    #[arg(long, value_name = "N")]
    backup_retention: Option<String>,
    /// Delete backups beyond the retention [env ANVIL_RECONCILER_BACKUP_CLEANUP; default true].
    #[arg(long, value_name = "BOOL")]
    backup_cleanup: Option<String>,
    /// Path under {instance_id}/ for backups [env ANVIL_RECONCILER_BACKUP_PATH; default backups].
    #[arg(long, value_name = "PATH")]
    backup_path: Option<String>,
}

impl ReconcileArgs {
    /// The settings given as flags, by snake_case key.
    fn flags(&self) -> BTreeMap<String, String> {
        let given = [
            ("enabled", &self.enabled),
            ("interval", &self.interval),
            ("max_concurrency", &self.max_concurrency),
            ("batch_size", &self.batch_size),
            ("retry_attempts", &self.retry_attempts),
            ("retry_delay", &self.retry_delay),
            ("cache_ttl", &self.cache_ttl),
            ("backup_enabled", &self.backup_enabled),
            ("backup_retention", &self.backup_retention),
            ("backup_cleanup", &self.backup_cleanup),
            ("backup_path", &self.backup_path),
        ];
        given
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
            .collect()
    }
}

/// What the terminal says on the first and the second stop signal in watch mode.
pub(super) const STOP_MESSAGES: [&str; 2] = [
    "Stop requested: finishing the current run, then exiting. Signal again to stop at once.",
    "Second stop signal: exiting now. Each step is idempotent; the next run redoes what this one did not finish.",
];

/// Runs `anvil reconcile` (one `ops` call) and renders its outcome; exit 0, or 1 when a
/// one-shot run had errors. Watch-mode runs are rendered as events arrive.
pub(super) async fn run(
    a: ReconcileArgs,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<i32> {
    let req = ReconcileRequest {
        foundation: a.foundation.clone(),
        flags: a.flags(),
        config: a.config.clone(),
        watch: a.watch,
        metrics_listen: a.metrics_listen.clone(),
    };
    match reconcile(&req, sink, cancel).await? {
        ReconcileOutcome::Disabled { resolved } => {
            println!(
                "The reconciler is disabled (enabled=false, from {}): nothing to do.",
                resolved.sources["enabled"]
            );
            Ok(0)
        }
        ReconcileOutcome::Once {
            report,
            metrics,
            resolved,
        } => {
            print_report(&report, &metrics, &resolved, a.json, false)?;
            Ok(if report.errors.is_empty() { 0 } else { 1 })
        }
        ReconcileOutcome::Watched { runs, .. } => {
            eprintln!("Reconciler stopped after {runs} run(s).");
            Ok(0)
        }
    }
}

/// Prints one run's report: text, or JSON (pretty for a one-shot run, one line per run
/// in watch mode).
pub(super) fn print_report(
    r: &RunReport,
    m: &Metrics,
    resolved: &Resolved,
    json: bool,
    watching: bool,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let sources: BTreeMap<&str, String> = resolved
            .sources
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        let doc = serde_json::json!({
            "report": r,
            "metrics": m,
            "settings": resolved.settings,
            "sources": sources,
        });
        if watching {
            writeln!(out, "{}", serde_json::to_string(&doc)?)?;
        } else {
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
    } else {
        write!(out, "{}", render(r, m))?;
    }
    out.flush()?;
    Ok(())
}

/// Most matched deployments listed one per line; the rest are counted.
const LISTED: usize = 20;

fn render(r: &RunReport, m: &Metrics) -> String {
    let (by_name, by_meta, by_rel) = r.by_strategy();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Reconcile run {}: {} deployment(s) scanned, {} matched ({by_name} by name, {by_meta} by metadata, {by_rel} by releases), {} synced, {} unmatched, {} orphaned, {} error(s), in {}.",
        r.run,
        r.deployments_scanned,
        r.matches.len(),
        r.synced,
        r.unmatched.len(),
        r.orphaned.len(),
        r.errors.len(),
        secs(r.duration)
    );
    for mt in r.matches.iter().take(LISTED) {
        let _ = writeln!(
            s,
            "  matched    {} -> {}/{} instance {} (by {}, confidence {:.1})",
            mt.deployment,
            mt.service_id,
            mt.plan_id,
            mt.instance_id,
            mt.strategy.as_str(),
            mt.confidence
        );
    }
    if r.matches.len() > LISTED {
        let _ = writeln!(
            s,
            "  matched    ... and {} more (see --json)",
            r.matches.len() - LISTED
        );
    }
    for u in &r.unmatched {
        let _ = writeln!(
            s,
            "  unmatched  {}: {} (left alone)",
            u.deployment, u.reason
        );
    }
    for o in &r.orphaned {
        let new = if r.newly_orphaned.contains(&o.instance_id) {
            ", marked now"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  orphaned   {} (deployment {} is gone; since {}{new}; its secrets are kept)",
            o.instance_id,
            o.deployment_name.as_deref().unwrap_or("unknown"),
            o.orphaned_at
        );
    }
    for c in &r.cleared {
        let _ = writeln!(s, "  cleared    {c} (its deployment is back)");
    }
    if !r.rebuilt.is_empty() {
        let _ = writeln!(s, "  rebuilt    {} missing index entries", r.rebuilt.len());
    }
    let _ = writeln!(
        s,
        "  backups    {} written, {} deleted",
        r.backups_written, r.backups_deleted
    );
    for k in &r.skipped {
        let _ = writeln!(s, "  skipped    {}: {} (nothing written)", k.key, k.reason);
    }
    for e in &r.errors {
        let _ = writeln!(s, "  error      {}: {}", e.subject, e.message);
    }
    let _ = writeln!(
        s,
        "Metrics: {} run(s) ({} successful, {} failed), last {}, average {:.2}s, {} error(s) in all.",
        m.runs_total,
        m.runs_successful,
        m.runs_failed,
        secs(std::time::Duration::from_secs_f64(m.last_run_duration_seconds)),
        m.average_run_duration_seconds,
        m.errors_total
    );
    s
}
