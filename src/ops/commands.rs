//! One function per command that reads or changes a workspace through its spec:
//! `validate`, `graph`, `plan`, `apply` (with a confirmation callback), `apply FILE`,
//! `apply --refresh-only`, `drift` and `import`. Each takes an event sink and a
//! cancellation token and returns data; the front-end renders it.

use super::events::{emit, EventSink, OpsEvent};
use super::planfile::{planfile_arg, read_planfile, write_planfile};
use super::state_commands::{shell_word, StateTarget};
use super::{
    check_saved_plan, load_locked, load_workspace, load_workspace_and_state, make_plan,
    plan_document, preview, refresh, run_apply, Inputs, OpsError, Workspace,
};
use crate::apply::Report;
use crate::drift::DriftReport;
use crate::plan::json::PlanDocument;
use crate::plan::{Observed, Plan, PlanOptions};
use crate::providers::Registry;
use crate::state::{Lock, State};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs `work` unless `cancel` fires first ([`OpsError::Cancelled`] then). Used around
/// the steps that only read (refresh, previews), which can be abandoned at any point.
async fn or_cancelled<T>(
    cancel: &CancellationToken,
    work: impl Future<Output = Result<T, OpsError>>,
) -> Result<T, OpsError> {
    tokio::select! {
        () = cancel.cancelled() => Err(OpsError::Cancelled),
        r = work => r,
    }
}

/// The spec arguments as the user gave them, shell-quoted, for the commands anvil
/// suggests (` examples/foundation --var-file prod.yaml`).
#[must_use]
pub fn spec_args(inputs: &Inputs) -> String {
    let mut s = String::new();
    for p in &inputs.paths {
        s.push(' ');
        s.push_str(&shell_word(&p.display().to_string()));
    }
    for f in &inputs.var_files {
        s.push_str(" --var-file ");
        s.push_str(&shell_word(&f.display().to_string()));
    }
    for v in &inputs.vars {
        s.push_str(" --var ");
        s.push_str(&shell_word(v));
    }
    if let Some(url) = &inputs.state_url {
        s.push_str(" --state ");
        s.push_str(&shell_word(&crate::state::redact_url(url)));
    }
    s
}

/// Loads the workspace and reports the files a directory scan skipped.
fn load_ws(inputs: &Inputs, sink: &EventSink) -> Result<Workspace, OpsError> {
    let ws = load_workspace(inputs, Registry::builtin())?;
    skipped(&ws, sink);
    Ok(ws)
}

fn skipped(ws: &Workspace, sink: &EventSink) {
    if !ws.skipped.is_empty() {
        emit(sink, OpsEvent::SkippedFiles(ws.skipped.clone()));
    }
}

/// What `anvil validate` found.
pub struct Validated {
    pub workspace: String,
    pub resources: usize,
    pub files: usize,
}

/// `anvil validate`: loads and checks the spec; touches neither state nor the real world.
///
/// # Errors
/// Every problem in the spec, located.
pub async fn validate(inputs: &Inputs, sink: &EventSink) -> Result<Validated, OpsError> {
    let ws = load_ws(inputs, sink)?;
    Ok(Validated {
        workspace: ws.name,
        resources: ws.model.len(),
        files: ws.files.len(),
    })
}

/// The resource graph: addresses, and edges dependency → dependent.
pub struct Graph {
    pub nodes: Vec<String>,
    pub edges: Vec<[String; 2]>,
}

/// `anvil graph`: the resource graph of the spec.
///
/// # Errors
/// Every problem in the spec, located.
pub async fn graph(inputs: &Inputs, sink: &EventSink) -> Result<Graph, OpsError> {
    let ws = load_ws(inputs, sink)?;
    let resources = ws.model.resources();
    let nodes = resources.iter().map(|r| r.address.to_string()).collect();
    let edges = resources
        .iter()
        .flat_map(|r| {
            r.dependencies
                .iter()
                .map(move |d| [d.to_string(), r.address.to_string()])
        })
        .collect();
    Ok(Graph { nodes, edges })
}

/// The kinds `anvil schema` knows, lower-case: spec kinds, then `plan` and `drift`.
#[must_use]
pub fn schema_kinds() -> Vec<String> {
    crate::spec::KINDS
        .iter()
        .map(|k| k.to_ascii_lowercase())
        .chain(["plan".to_string(), "drift".to_string()])
        .collect()
}

/// `anvil schema KIND`: the JSON Schema of a spec kind, the plan or the drift report.
///
/// # Errors
/// An unknown kind (the message lists the known ones).
pub fn schema(kind: &str) -> Result<serde_json::Value, OpsError> {
    match kind.to_ascii_lowercase().as_str() {
        "plan" => Ok(crate::plan::json::schema()),
        "drift" => Ok(crate::drift::schema()),
        k => crate::spec::schema_for_kind(k).ok_or_else(|| {
            OpsError::Usage(format!(
                "unknown kind `{kind}`: expected one of {}",
                schema_kinds().join(", ")
            ))
        }),
    }
}

/// How a plan is made: what to plan, and whether and how widely to read the real world.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub inputs: Inputs,
    pub options: PlanOptions,
    /// Read the real objects before planning (and ask providers for their diffs).
    pub refresh: bool,
    pub parallelism: usize,
    /// Build the JSON document (`--json`; implied by `out`).
    pub document: bool,
    /// Save the plan here for `anvil apply FILE`.
    pub out: Option<PathBuf>,
    /// Compare what planned BOSH deployments need with the Director's Diego cells.
    pub capacity_check: super::capacity::CheckMode,
}

/// A plan made by [`plan`].
pub struct Planned {
    pub plan: Plan,
    /// The JSON document, when asked for or saved.
    pub document: Option<PlanDocument>,
    /// Where the plan was saved.
    pub saved_to: Option<PathBuf>,
}

/// Refresh (when asked), plan and previews, on a state already read.
async fn plan_on(
    ws: &Workspace,
    state: &State,
    options: &PlanOptions,
    refresh_first: bool,
    parallelism: usize,
    cancel: &CancellationToken,
) -> Result<(Plan, Observed), OpsError> {
    let observed = if refresh_first {
        or_cancelled(cancel, refresh(&ws.registry, state, parallelism)).await?
    } else {
        Observed::default()
    };
    let mut plan = make_plan(ws, state, &observed, options)?;
    if refresh_first {
        or_cancelled(cancel, async {
            preview(&ws.registry, &mut plan, parallelism).await;
            Ok(())
        })
        .await?;
    }
    Ok((plan, observed))
}

/// `anvil plan`: loads the spec and the state (no lock), refreshes, plans, asks
/// providers for their diffs, and saves the plan when asked.
///
/// # Errors
/// The spec, the state, a refresh, the plan's own errors, cancellation, or the plan file
/// cannot be written.
pub async fn plan(
    req: &PlanRequest,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<Planned, OpsError> {
    let (ws, state) = load_workspace_and_state(&req.inputs, Registry::builtin()).await?;
    skipped(&ws, sink);
    let (plan, observed) = plan_on(
        &ws,
        &state,
        &req.options,
        req.refresh,
        req.parallelism,
        cancel,
    )
    .await?;
    or_cancelled(
        cancel,
        super::capacity::plan_check(&ws.model, &plan, req.capacity_check, sink),
    )
    .await?;
    // The JSON document costs time on big plans: build it only when asked for.
    let document = (req.document || req.out.is_some())
        .then(|| plan_document(&ws, &state, &plan, &observed, &req.options, req.refresh));
    if let (Some(out), Some(doc)) = (&req.out, &document) {
        write_planfile(out, doc)?;
    }
    Ok(Planned {
        plan,
        document,
        saved_to: req.out.clone(),
    })
}

/// How `apply` or `destroy` runs.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    pub inputs: Inputs,
    pub options: PlanOptions,
    pub refresh: bool,
    pub parallelism: usize,
    pub lock_timeout: Duration,
    /// Fired (after the cancellation token) by a front-end that must stop at once:
    /// provider calls in flight stop waiting (a BOSH task is left to the Director) and
    /// are recorded as failed, so the next run reads them back.
    pub abort: CancellationToken,
}

/// How an apply ended.
pub enum ApplyOutcome {
    /// The plan had nothing to do.
    NoChanges,
    /// The review callback said no; nothing was changed.
    Declined,
    /// The plan ran; `report` says what was done, failed, skipped or not started.
    Applied {
        report: Report,
        /// Whether the state lock was lost during the run (another process may have
        /// taken it after its lease ran out).
        lock_lost: bool,
    },
}

/// Shows a plan to whoever approves it and answers whether to go on. Called once, with
/// every plan an apply makes (also one without changes, so it can be shown); the answer
/// matters only when the plan has changes.
pub type Review<'a> = dyn FnMut(&Plan) -> Result<bool, OpsError> + Send + 'a;

/// `anvil apply` / `anvil destroy` (`options.destroy`): under the lock, reads the state
/// (folding an interrupted run's journal), refreshes, plans, previews, asks `review`,
/// then applies, journalling every step. Cancelling before the walk starts abandons
/// the run; during the walk no new operation starts and those in flight are recorded.
///
/// # Errors
/// The spec, the lock, the state, a refresh, the plan's own errors, cancellation before
/// the walk, the review callback's error, or the journal.
pub async fn apply(
    req: &ApplyRequest,
    review: &mut Review<'_>,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<ApplyOutcome, OpsError> {
    let operation = if req.options.destroy {
        "destroy"
    } else {
        "apply"
    };
    let ws = load_ws(&req.inputs, sink)?;
    let lock = take_lock(&ws, operation, req.lock_timeout, sink).await?;
    let state = load_locked(&ws, lock.as_ref(), sink).await?;
    let (plan, _) = plan_on(
        &ws,
        &state,
        &req.options,
        req.refresh,
        req.parallelism,
        cancel,
    )
    .await?;
    finish(
        &ws,
        state,
        lock.as_ref(),
        &plan,
        req.parallelism,
        review,
        sink,
        cancel,
        &req.abort,
    )
    .await
}

/// How a saved plan is applied: the file, and what the spec it was made from needs
/// again (variables, the state).
#[derive(Debug, Clone)]
pub struct SavedPlanRequest {
    pub path: PathBuf,
    pub vars: Vec<String>,
    pub var_files: Vec<PathBuf>,
    pub state_url: Option<String>,
    pub parallelism: usize,
    pub lock_timeout: Duration,
    /// Fired (after the cancellation token) by a front-end that must stop at once:
    /// provider calls in flight stop waiting (a BOSH task is left to the Director) and
    /// are recorded as failed, so the next run reads them back.
    pub abort: CancellationToken,
}

/// `anvil apply FILE`: reads the saved plan, loads the spec it names, and under the lock
/// checks that state and spec are those it was made from and that they give the same
/// plan; `review` sees the plan (a saved plan was reviewed when it was made, so a
/// front-end normally just shows it), then it is applied.
///
/// # Errors
/// [`OpsError::PlanFile`] for an unreadable file or a spec that cannot be loaded again,
/// [`OpsError::StalePlan`] when the state or spec moved on; then as [`apply`].
pub async fn apply_saved_plan(
    req: &SavedPlanRequest,
    review: &mut Review<'_>,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<ApplyOutcome, OpsError> {
    let doc = read_planfile(&req.path)?;
    let inputs = Inputs {
        paths: doc.spec.files.iter().map(PathBuf::from).collect(),
        vars: req.vars.clone(),
        var_files: req.var_files.clone(),
        state_url: req.state_url.clone(),
    };
    let path = req.path.display().to_string();
    let ws = load_workspace(&inputs, Registry::builtin()).map_err(|e| OpsError::PlanFile {
        path: path.clone(),
        message: format!("the spec this plan was made from cannot be loaded again: {e}"),
    })?;
    let lock = take_lock(&ws, "apply", req.lock_timeout, sink).await?;
    let mut state = load_locked(&ws, lock.as_ref(), sink).await?;
    let (plan, _observed) = check_saved_plan(&ws, &mut state, &doc, &path)?;
    finish(
        &ws,
        state,
        lock.as_ref(),
        &plan,
        req.parallelism,
        review,
        sink,
        cancel,
        &req.abort,
    )
    .await
}

pub(super) async fn take_lock(
    ws: &Workspace,
    operation: &str,
    timeout: Duration,
    sink: &EventSink,
) -> Result<Box<dyn Lock>, OpsError> {
    if !timeout.is_zero() {
        emit(
            sink,
            OpsEvent::LockWait {
                state: ws.backend.describe(),
                timeout,
            },
        );
    }
    let target = StateTarget {
        url: ws.state_url.clone(),
        workspace: Some(ws.name.clone()),
    };
    ws.backend
        .lock(operation, timeout)
        .await
        .map_err(|e| super::lock_error(e, &target))
}

/// Review, then the walk: the part `apply` and `apply FILE` share.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ws: &Workspace,
    state: State,
    lock: &dyn Lock,
    plan: &Plan,
    parallelism: usize,
    review: &mut Review<'_>,
    sink: &EventSink,
    cancel: &CancellationToken,
    abort: &CancellationToken,
) -> Result<ApplyOutcome, OpsError> {
    let approved = review(plan)?;
    if !plan.has_changes() {
        return Ok(ApplyOutcome::NoChanges);
    }
    if !approved {
        return Ok(ApplyOutcome::Declined);
    }
    if cancel.is_cancelled() {
        return Err(OpsError::Cancelled);
    }
    let (_state, report) =
        run_apply(ws, state, lock, plan, parallelism, sink, cancel, abort).await?;
    let lock_lost = lock.is_lost();
    if lock_lost {
        emit(sink, OpsEvent::Warning(format!(
            "the state lock on {} was lost during the run (its lease expired and another process took it); check `anvil plan` before running again",
            ws.backend.describe()
        )));
    }
    Ok(ApplyOutcome::Applied { report, lock_lost })
}

/// What `apply --refresh-only` proposes to record, for its review.
pub struct RefreshProposal<'a> {
    pub report: &'a DriftReport,
    /// Records to replace by what the real world has.
    pub to_record: usize,
    /// Records to remove (their objects are gone).
    pub to_remove: usize,
    /// Of `to_record`, those that change only computed outputs (not in the report).
    pub outputs_only: usize,
}

/// How `apply --refresh-only` ended.
pub enum RefreshOnlyOutcome {
    /// The state already matches the real world.
    NothingToRecord,
    /// The review callback said no; nothing was written.
    Declined,
    Recorded(super::Recorded),
}

/// `anvil apply --refresh-only`: under the lock, reads the real world, asks `review`,
/// and records what it has in state (one atomic write). No provider changes anything.
///
/// # Errors
/// A saved plan or `refresh = false` given (usage errors), then as [`apply`].
pub async fn apply_refresh_only(
    req: &ApplyRequest,
    review: &mut (dyn FnMut(&RefreshProposal<'_>) -> Result<bool, OpsError> + Send),
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<RefreshOnlyOutcome, OpsError> {
    if planfile_arg(&req.inputs.paths).is_some() {
        return Err(OpsError::Usage("--refresh-only reads the real world itself and cannot apply a saved plan; run `anvil apply --refresh-only PATH` with the spec path".into()));
    }
    if !req.refresh {
        return Err(OpsError::Usage("--refresh-only records what the real world has, so it must read it: drop --refresh=false".into()));
    }
    let ws = load_ws(&req.inputs, sink)?;
    let lock = take_lock(&ws, "apply --refresh-only", req.lock_timeout, sink).await?;
    let state = load_locked(&ws, lock.as_ref(), sink).await?;
    let (report, observed) = or_cancelled(
        cancel,
        super::drift(&ws, &state, &req.options, true, req.parallelism),
    )
    .await?;
    if observed.is_empty() {
        return Ok(RefreshOnlyOutcome::NothingToRecord);
    }
    let to_remove = observed.values().filter(|o| o.is_none()).count();
    let shown = report
        .resources
        .iter()
        .filter(|e| e.outside.is_some())
        .count();
    let proposal = RefreshProposal {
        report: &report,
        to_record: observed.len() - to_remove,
        to_remove,
        outputs_only: observed.len().saturating_sub(shown),
    };
    if !review(&proposal)? {
        return Ok(RefreshOnlyOutcome::Declined);
    }
    if cancel.is_cancelled() {
        return Err(OpsError::Cancelled);
    }
    let (_, done) = super::record_observed(&ws, state, lock.as_ref(), &observed).await?;
    Ok(RefreshOnlyOutcome::Recorded(done))
}

/// How `anvil drift` reads the world.
#[derive(Debug, Clone)]
pub struct DriftRequest {
    pub inputs: Inputs,
    pub options: PlanOptions,
    pub refresh: bool,
    pub parallelism: usize,
}

/// `anvil drift`: loads spec and state (no lock, no write), refreshes what is in scope
/// and reports what changed outside anvil and what differs from the spec.
///
/// # Errors
/// The spec, the state, the plan's own errors, a refresh, or cancellation.
pub async fn drift_report(
    req: &DriftRequest,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<DriftReport, OpsError> {
    let (ws, state) = load_workspace_and_state(&req.inputs, Registry::builtin()).await?;
    skipped(&ws, sink);
    let (report, _) = or_cancelled(
        cancel,
        super::drift(&ws, &state, &req.options, req.refresh, req.parallelism),
    )
    .await?;
    Ok(report)
}

/// What `anvil import` did, and where.
pub struct ImportOutcome {
    pub imported: super::Imported,
    /// The state it was recorded in.
    pub state: String,
}

/// `anvil import ADDR ID`: adopts an existing object into state, under the lock.
///
/// # Errors
/// As [`super::import`], or the spec cannot be loaded, or cancellation.
pub async fn import(
    inputs: &Inputs,
    address: &str,
    id: &str,
    lock_timeout: Duration,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<ImportOutcome, OpsError> {
    let ws = load_ws(inputs, sink)?;
    if !lock_timeout.is_zero() {
        emit(
            sink,
            OpsEvent::LockWait {
                state: ws.backend.describe(),
                timeout: lock_timeout,
            },
        );
    }
    let imported = or_cancelled(
        cancel,
        super::import_object(&ws, address, id, lock_timeout, sink),
    )
    .await?;
    Ok(ImportOutcome {
        imported,
        state: ws.backend.describe(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::discard;

    #[test]
    fn suggested_spec_arguments_are_runnable_as_printed() {
        let inputs = Inputs {
            paths: vec![
                PathBuf::from("examples/foundation"),
                PathBuf::from("my specs"),
            ],
            vars: vec!["size=2".into()],
            var_files: vec![PathBuf::from("prod.yaml")],
            state_url: Some("file:///tmp/s.json".into()),
        };
        assert_eq!(
            spec_args(&inputs),
            " examples/foundation 'my specs' --var-file prod.yaml --var size=2 --state file:///tmp/s.json"
        );
        assert_eq!(spec_args(&Inputs::default()), "");
    }

    #[test]
    fn schema_kinds_name_every_kind_and_unknown_ones_are_refused() {
        let kinds = schema_kinds();
        assert!(kinds.contains(&"plan".to_string()) && kinds.contains(&"drift".to_string()));
        for k in &kinds {
            assert!(schema(k).is_ok(), "{k}");
        }
        let e = schema("nope").unwrap_err().to_string();
        assert!(
            e.contains("unknown kind `nope`") && e.contains("plan, drift"),
            "{e}"
        );
    }

    /// A workspace of two null resources in a temporary directory, its state there too.
    fn workspace() -> (tempfile::TempDir, ApplyRequest) {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.yaml");
        std::fs::write(&spec, "apiVersion: anvil/v1\nkind: Resources\nmetadata: { name: t }\nresources:\n  - { type: null_resource, name: a }\n  - { type: null_resource, name: b, attributes: { triggers: { x: \"${null_resource.a.id}\" } } }\n").unwrap();
        let req = ApplyRequest {
            inputs: Inputs {
                paths: vec![spec],
                state_url: Some(dir.path().join("t.json").display().to_string()),
                ..Inputs::default()
            },
            options: PlanOptions::default(),
            refresh: true,
            parallelism: 4,
            lock_timeout: Duration::ZERO,
            abort: CancellationToken::new(),
        };
        (dir, req)
    }

    #[tokio::test]
    async fn apply_reports_progress_as_events_and_returns_the_report() {
        let (dir, req) = workspace();
        let (sink, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut shown = 0;
        let mut review = |p: &Plan| {
            shown = p.summary().add;
            Ok(true)
        };
        let out = apply(&req, &mut review, &sink, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(shown, 2);
        let ApplyOutcome::Applied { report, lock_lost } = out else {
            panic!("not applied")
        };
        assert!(report.success() && !lock_lost);
        assert_eq!(report.done.len(), 2);
        drop(sink);
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        assert!(
            matches!(events.first(), Some(OpsEvent::ApplyStarting { total: 2 })),
            "{events:?}"
        );
        let finished = events
            .iter()
            .filter(|e| matches!(e, OpsEvent::Apply(crate::apply::Event::Finished { .. })))
            .count();
        assert_eq!(finished, 2, "{events:?}");
        assert!(dir.path().join("t.json").exists());
        // The same spec again: nothing to do, and the review still sees the plan.
        let mut seen = false;
        let mut review = |p: &Plan| {
            seen = !p.has_changes();
            Ok(false)
        };
        let out = apply(&req, &mut review, &discard(), &CancellationToken::new())
            .await
            .unwrap();
        assert!(seen && matches!(out, ApplyOutcome::NoChanges));
    }

    #[tokio::test]
    async fn a_declined_or_cancelled_apply_changes_nothing() {
        let (dir, req) = workspace();
        let mut no = |_: &Plan| Ok(false);
        let out = apply(&req, &mut no, &discard(), &CancellationToken::new())
            .await
            .unwrap();
        assert!(matches!(out, ApplyOutcome::Declined));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut yes = |_: &Plan| Ok(true);
        let r = apply(&req, &mut yes, &discard(), &cancel).await;
        assert!(matches!(r, Err(OpsError::Cancelled)), "{:?}", r.err());
        assert!(!dir.path().join("t.json").exists(), "nothing was written");
        // The review's own error ends the run the same way.
        let mut fails = |_: &Plan| Err(OpsError::Usage("no terminal".into()));
        let r = apply(&req, &mut fails, &discard(), &CancellationToken::new()).await;
        assert!(matches!(r, Err(OpsError::Usage(m)) if m == "no terminal"));
        assert!(!dir.path().join("t.json").exists());
    }

    #[tokio::test]
    async fn a_cancelled_token_abandons_a_read_only_step() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let r: Result<(), OpsError> =
            or_cancelled(&cancel, std::future::pending::<Result<(), OpsError>>()).await;
        assert!(matches!(r, Err(OpsError::Cancelled)));
    }
}
