//! Operations: the only door into the engine. One function per command owns its order
//! of steps (load, lock, read state, refresh, plan, previews, saved-plan checks, journal,
//! apply, reconcile); each takes an [`EventSink`] and a [`CancellationToken`] and
//! returns data. Front-ends (`cli`, later a broker and a server) call one of these per
//! command and render what comes back; nothing here prints or needs a terminal.

pub mod broker;
pub mod broker_bind;
pub mod broker_internal;
pub mod capacity;
mod commands;
mod drift;
pub mod environment_doc;
pub mod environments;
mod events;
pub mod instances;
mod outputs;
mod planfile;
pub mod reconcile;
mod state_commands;

pub use self::commands::{
    apply, apply_refresh_only, apply_saved_plan, drift_report, graph, import, plan, schema,
    schema_kinds, spec_args, validate, ApplyOutcome, ApplyRequest, DriftRequest, Graph,
    ImportOutcome, PlanRequest, Planned, RefreshOnlyOutcome, RefreshProposal, Review,
    SavedPlanRequest, Validated,
};
pub use self::drift::{drift, import_object, record_observed, Imported, Recorded};
pub use self::events::{discard, EventSink, OpsEvent};
pub use self::outputs::{outputs, OutputValue, Outputs};
pub use self::planfile::{
    plan_from_document, planfile_arg, read_planfile, show_planfile, write_planfile, SavedPlan,
};
pub use self::state_commands::{
    force_unlock, open_target, read_state, shell_word, state_mv, state_rm, state_show,
    target_flags, ShownState, StateTarget, DEFAULT_STATE_DIR,
};
pub use tokio_util::sync::CancellationToken;

/// The types operations return, for front-ends to render (they import `ops`, not the
/// modules these come from).
pub use crate::apply::{Event as ApplyEvent, Op, Report};
/// PostgreSQL URL parsing and pooling, shared by the state backend and the server's job
/// queue so both read URLs, schemas and passwords alike.
pub(crate) use crate::state::PgTarget;
pub use crate::state::{redact_url, ResourceState, State};

use crate::apply::{self, ApplyConfig, Channels};
use crate::model::{self, Model};
use crate::plan::json::{self as pjson, JsonChange, PlanDocument, SpecBinding, StateBinding};
use crate::plan::{self, Observed, Plan, PlanOptions};
use crate::providers::Registry;
use crate::spec::{self, LoadOptions, SpecErrors};
use crate::state::{self, StateBackend, StateError};
use events::emit;
use futures::StreamExt;
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Why an operation failed. Every message names what it is about and what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Spec(#[from] SpecErrors),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Plan(Vec<plan::PlanError>),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error("refresh of {address} failed: {message}; retry, or skip reading the real world with --refresh=false")]
    Refresh { address: String, message: String },
    /// The provider's message names the address, the ID and where anvil looked.
    #[error("{message}")]
    Import { address: String, message: String },
    #[error("{0}")]
    StalePlan(String),
    #[error("{path}: {message}")]
    PlanFile { path: String, message: String },
    #[error("{0}")]
    Usage(String),
    /// The state is locked by another run; the message names the holder and the
    /// `force-unlock` command that names this state from any directory.
    #[error("{source}; from any directory: `anvil force-unlock {id}{flags}`")]
    Locked {
        source: Box<StateError>,
        id: String,
        flags: String,
    },
    /// `POST /b/{id}/redeploy`: the Director refused the kept manifest or its task
    /// failed; the message names the deployment, the task and the Director's URL.
    #[error("redeploy of deployment {deployment} failed: {message}")]
    Redeploy { deployment: String, message: String },
    /// The caller cancelled before anything was changed.
    #[error("cancelled before anything was changed; run the command again when ready")]
    Cancelled,
    #[error(transparent)]
    Reconcile(#[from] crate::reconcile::ReconcileError),
    /// An environment's apply ran but some change failed or was skipped; what the
    /// state records is kept, so a refresh continues from there.
    #[error("the apply of workspace `{workspace}` ({state}) did not finish: {details}")]
    EnvironmentApply {
        workspace: String,
        state: String,
        details: String,
    },
    /// The charts hook of an environment failed.
    #[error("the bootstrap hook `{hook}` {message}")]
    Bootstrap { hook: String, message: String },
    /// `--metrics-listen ADDR` could not be bound.
    #[error("--metrics-listen {addr}: cannot listen there ({source}); pick a free address such as 127.0.0.1:9190")]
    MetricsListen {
        addr: String,
        source: std::io::Error,
    },
}

/// What the user pointed anvil at.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub paths: Vec<PathBuf>,
    pub vars: Vec<String>,
    pub var_files: Vec<PathBuf>,
    pub state_url: Option<String>,
}

/// A loaded, checked spec with its model and its state backend.
pub struct Workspace {
    pub name: String,
    /// The spec files read, in order.
    pub files: Vec<PathBuf>,
    /// YAML files a directory scan skipped because they hold no anvil document.
    pub skipped: Vec<PathBuf>,
    pub model: Model,
    pub registry: Registry,
    pub backend: Box<dyn StateBackend>,
    /// The `--state` URL given, if any (for commands anvil suggests).
    pub state_url: Option<String>,
    /// Digest of the spec files and the variables given.
    pub digest: String,
}

/// Loads and checks the spec, builds the model and opens (does not read) the state.
///
/// # Errors
/// Every problem in the spec, located; or a state URL that cannot be used.
pub fn load_workspace(inputs: &Inputs, registry: Registry) -> Result<Workspace, OpsError> {
    load(inputs, registry, false).map(|(ws, _)| ws)
}

/// [`load_workspace`], and the state read alongside (for read-only commands).
///
/// # Errors
/// As [`load_workspace`], or the state cannot be read.
pub async fn load_workspace_and_state(
    inputs: &Inputs,
    registry: Registry,
) -> Result<(Workspace, State), OpsError> {
    let (ws, st) = load(inputs, registry, true)?;
    let st = match st {
        Some(st) => st?,
        None => ws.backend.load().await?,
    };
    Ok((ws, st))
}

type Preloaded = Option<Result<State, StateError>>;

/// Run the backend's async `load` to completion on a plain (non-runtime) thread: on the
/// caller's runtime when there is one (remote backends need its IO driver), else inline.
fn load_blocking(
    backend: &dyn StateBackend,
    runtime: Option<&tokio::runtime::Handle>,
) -> Result<State, StateError> {
    match runtime {
        Some(rt) => rt.block_on(backend.load()),
        None => futures::executor::block_on(backend.load()),
    }
}

fn load(
    inputs: &Inputs,
    registry: Registry,
    preload_state: bool,
) -> Result<(Workspace, Preloaded), OpsError> {
    let mut vars = BTreeMap::new();
    let mut errors = Vec::new();
    for f in &inputs.var_files {
        match spec::load_var_file(f) {
            Ok(v) => vars.extend(v),
            Err(e) => errors.extend(e.0),
        }
    }
    for v in &inputs.vars {
        match spec::parse_var_arg(v) {
            Ok((k, val)) => {
                vars.insert(k, val);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(SpecErrors(errors).into());
    }
    let paths = if inputs.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        inputs.paths.clone()
    };
    let opts = LoadOptions {
        vars: vars.clone(),
        env: utf8_env(),
    };
    let t = std::time::Instant::now();
    let spec = spec::load(&paths, &opts)?;
    tracing::debug!(elapsed = ?t.elapsed(), documents = spec.documents.len(), "spec loaded");
    from_spec(
        spec,
        &vars,
        inputs.state_url.as_deref(),
        registry,
        preload_state,
    )
}

/// The workspace of a loaded spec: the broker's instances merged in, the model built,
/// providers configured, the state opened (and read alongside when `preload_state`).
fn from_spec(
    mut spec: spec::Spec,
    vars: &BTreeMap<String, serde_json::Value>,
    state_url: Option<&str>,
    mut registry: Registry,
    preload_state: bool,
) -> Result<(Workspace, Preloaded), OpsError> {
    let inputs_state_url = state_url.map(str::to_string);
    let name = spec.workspace().unwrap_or("default").to_string();
    let backend = state::open(state_url, &name);
    let runtime = tokio::runtime::Handle::try_current().ok();
    // The instances `anvil broker` created are part of the desired state of every
    // command: a GitOps apply must not delete them.
    if let Ok(b) = &backend {
        if spec
            .documents
            .iter()
            .any(|d| matches!(d.body, spec::DocumentBody::Foundation(_)))
        {
            let store = std::thread::scope(|scope| {
                scope
                    .spawn(|| match &runtime {
                        Some(rt) => rt.block_on(broker::read_store(b.as_ref())),
                        None => futures::executor::block_on(broker::read_store(b.as_ref())),
                    })
                    .join()
                    .unwrap_or_else(|_| {
                        Err(StateError::Io {
                            action: "read",
                            location: b.describe(),
                            source: std::io::Error::other("the broker store reader panicked"),
                        })
                    })
            })?;
            broker::merge_instances(&mut spec, &store);
        }
    }
    // Reading state needs only the workspace name: a read-only caller gets it read on
    // the other core while the model is built.
    let (model, preloaded) = std::thread::scope(|scope| {
        let preload = match (&backend, preload_state) {
            (Ok(b), true) => Some(scope.spawn(|| {
                let t = std::time::Instant::now();
                let st = load_blocking(b.as_ref(), runtime.as_ref());
                tracing::debug!(elapsed = ?t.elapsed(), "state loaded");
                st
            })),
            _ => None,
        };
        let t = std::time::Instant::now();
        let model = model::build(&spec, registry.schemas());
        tracing::debug!(elapsed = ?t.elapsed(), "model built");
        let preloaded = preload.map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(StateError::Io {
                    action: "read",
                    location: name.clone(),
                    source: std::io::Error::other("the state reader thread panicked"),
                })
            })
        });
        (model, preloaded)
    });
    let model = model?;
    registry.configure(&model.providers).map_err(|errs| {
        SpecErrors(
            errs.into_iter()
                .map(|(i, e)| model.providers[i].error(e.message))
                .collect(),
        )
    })?;
    let backend = backend?;
    let mut h = sha2::Sha256::new();
    h.update(spec.digest.as_bytes());
    h.update(serde_json::to_string(vars).unwrap_or_default().as_bytes());
    let digest = format!("sha256:{}", hex::encode(h.finalize()));
    let files = spec.files.clone();
    let skipped = spec.skipped.clone();
    // The located YAML trees are only needed for errors, which are all reported by now:
    // free them on another thread while the caller goes on (big specs hold millions of
    // small allocations).
    std::thread::spawn(move || drop(spec));
    Ok((
        Workspace {
            name,
            files,
            skipped,
            model,
            registry,
            backend,
            state_url: inputs_state_url,
            digest,
        },
        preloaded,
    ))
}

/// Reads every recorded resource through its provider, at most `parallelism` at once.
/// Returns only the records that differ from state (`None`: the object is gone).
///
/// # Errors
/// A provider could not be asked.
pub async fn refresh(
    registry: &Registry,
    state: &State,
    parallelism: usize,
) -> Result<Observed, OpsError> {
    refresh_scoped(registry, state, None, parallelism).await
}

/// [`refresh`] of the recorded addresses in `only` (all when `None`).
///
/// # Errors
/// A provider could not be asked.
pub async fn refresh_scoped(
    registry: &Registry,
    state: &State,
    only: Option<&std::collections::BTreeSet<String>>,
    parallelism: usize,
) -> Result<Observed, OpsError> {
    let to_read = state.resources.iter().filter(|(addr, rec)| {
        // Providers without a real world would only hand back the record.
        only.is_none_or(|o| o.contains(*addr))
            && registry
                .get(&rec.provider)
                .is_none_or(|p| p.reads_real_world())
    });
    // Types whose provider reads many objects per request go in batches of the same
    // provider instance and type; every other record is read on its own.
    let mut units: Vec<Vec<(&String, &ResourceState)>> = Vec::new();
    // Instances with the same read scope (an `aws` instance per environment, all with
    // the same account and region) share batches: the batch runs on its first record's
    // instance.
    let mut batches: BTreeMap<(String, &str), Vec<(&String, &ResourceState)>> = BTreeMap::new();
    for (addr, rec) in to_read {
        match registry.get(&rec.provider) {
            Some(p) if p.batches_reads(&rec.ty) => batches
                .entry((
                    p.read_scope()
                        .unwrap_or_else(|| format!("instance {}", rec.provider)),
                    rec.ty.as_str(),
                ))
                .or_default()
                .push((addr, rec)),
            _ => units.push(vec![(addr, rec)]),
        }
    }
    for batch in batches.into_values() {
        units.extend(
            batch
                .chunks(crate::providers::READ_BATCH)
                .map(<[(&String, &ResourceState)]>::to_vec),
        );
    }
    let reads = futures::stream::iter(units.into_iter().map(|unit| async move {
        let (addr, rec) = unit[0];
        let Some(p) = registry.get(&rec.provider) else {
            return Err(OpsError::Refresh {
                address: addr.clone(),
                message: crate::providers::missing_instance(&rec.provider),
            });
        };
        let t = std::time::Instant::now();
        let got = if unit.len() == 1 {
            vec![p.read(addr, rec).await]
        } else {
            let items = unit
                .iter()
                .map(|(a, r)| (a.as_str(), *r))
                .collect::<Vec<_>>();
            match p.read_many(&items).await {
                Ok(got) if got.len() == unit.len() => got.into_iter().map(Ok).collect(),
                Ok(got) => vec![Err(crate::providers::ProviderError::new(format!(
                    "the {} provider answered {} of {} reads",
                    rec.provider,
                    got.len(),
                    unit.len()
                )))],
                Err(e) => vec![Err(e)],
            }
        };
        tracing::trace!(address = %addr, ty = %rec.ty, records = unit.len(), elapsed = ?t.elapsed(), "read");
        unit.iter()
            .zip(got)
            .map(|((addr, _), got)| {
                got.map(|g| (*addr, g)).map_err(|e| OpsError::Refresh {
                    address: (*addr).clone(),
                    message: e.message,
                })
            })
            .collect::<Result<Vec<_>, _>>()
    }))
    .buffer_unordered(parallelism.max(1));
    futures::pin_mut!(reads);
    let mut observed = Observed::new();
    let t = std::time::Instant::now();
    while let Some(r) = reads.next().await {
        for (addr, got) in r? {
            let rec = &state.resources[addr];
            if got.as_ref() != Some(rec) {
                observed.insert(addr.clone(), got);
            }
        }
    }
    tracing::debug!(elapsed = ?t.elapsed(), resources = state.resources.len(), changed = observed.len(), "refreshed");
    Ok(observed)
}

/// Asks each provider for its own diff of the planned updates (the BOSH Director's
/// `/diff`), at most `parallelism` at once, and attaches it to the change. Only updates
/// whose planned attributes are all known are asked, without their sensitive values. A
/// provider that cannot answer does not fail the plan: its change carries the error.
pub async fn preview(registry: &Registry, plan: &mut Plan, parallelism: usize) {
    let asks = plan
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.action == plan::Action::Update)
        .filter_map(|(i, c)| {
            let after = c.after.as_ref()?;
            let mut attrs = crate::providers::Attributes::new();
            for (k, v) in after {
                if c.sensitive.contains(k) {
                    continue;
                }
                let model::PValue::Known(v) = v else {
                    return None;
                };
                attrs.insert(k.clone(), v.clone());
            }
            let p = registry.get(&c.provider)?.clone();
            Some((i, c.address.clone(), c.ty.clone(), attrs, p))
        })
        .collect::<Vec<_>>();
    if asks.is_empty() {
        return;
    }
    let diffs = futures::stream::iter(asks.into_iter().map(|(i, addr, ty, attrs, p)| async move {
        let got = p.preview(&addr, &ty, &attrs).await;
        (i, got)
    }))
    .buffer_unordered(parallelism.max(1))
    .collect::<Vec<_>>()
    .await;
    for (i, got) in diffs {
        plan.changes[i].provider_diff = match got {
            Ok(d) => d,
            Err(e) => Some(model::ProviderDiff {
                source: plan.changes[i].provider.clone(),
                lines: Vec::new(),
                error: Some(e.message),
            }),
        };
    }
}

/// Reads the state under the lock the caller holds and, when an interrupted run left a
/// journal, folds it into the state file so that the file alone is whole again.
///
/// # Errors
/// The state cannot be read or written.
pub async fn load_locked(
    ws: &Workspace,
    lock: &dyn state::Lock,
    sink: &EventSink,
) -> Result<State, OpsError> {
    let st = ws.backend.load().await?;
    if ws.backend.has_journal().await {
        ws.backend.write(&st, lock).await?;
        tracing::info!(state = %ws.backend.describe(), "folded the journal of an interrupted run into the state");
        emit(
            sink,
            OpsEvent::Info(format!(
                "Folded the journal of an interrupted run into {}.",
                ws.backend.describe()
            )),
        );
    }
    Ok(st)
}

/// Computes the plan for a workspace.
///
/// # Errors
/// The plan's own errors (`prevent_destroy`, unresolvable references, unknown addresses).
pub fn make_plan(
    ws: &Workspace,
    state: &State,
    observed: &Observed,
    opts: &PlanOptions,
) -> Result<Plan, OpsError> {
    let t = std::time::Instant::now();
    let plan =
        plan::plan(&ws.model, state, observed, ws.registry.schemas(), opts).map_err(OpsError::Plan);
    tracing::debug!(elapsed = ?t.elapsed(), "planned");
    plan
}

/// The JSON document of a plan, as printed by `--json` and saved by `--out`.
pub fn plan_document(
    ws: &Workspace,
    state: &State,
    plan: &Plan,
    observed: &Observed,
    opts: &PlanOptions,
    refreshed: bool,
) -> PlanDocument {
    PlanDocument {
        format: pjson::FORMAT.to_string(),
        format_version: pjson::FORMAT_VERSION,
        anvil_version: env!("CARGO_PKG_VERSION").to_string(),
        workspace: ws.name.clone(),
        state: StateBinding {
            backend: ws.backend.describe(),
            lineage: state.lineage.to_string(),
            serial: state.serial,
        },
        spec: SpecBinding {
            digest: ws.digest.clone(),
            files: ws.files.iter().map(|f| f.display().to_string()).collect(),
        },
        options: opts.clone(),
        refresh: refreshed,
        resource_changes: plan.changes.iter().map(JsonChange::from_change).collect(),
        summary: plan.summary(),
        plan_digest: pjson::plan_digest(plan),
        observed: observed
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().and_then(|r| serde_json::to_value(r).ok()),
                )
            })
            .collect(),
    }
}

/// Checks that a saved plan still applies to this state and spec, and returns the plan
/// recomputed from them (identical to the saved one).
///
/// # Errors
/// The state moved on (another lineage or serial), the spec or variables changed, or the
/// recomputed plan differs.
pub fn check_saved_plan(
    ws: &Workspace,
    state: &mut State,
    doc: &PlanDocument,
    path: &str,
) -> Result<(Plan, Observed), OpsError> {
    // A plan made before any state existed binds to "no state yet" (serial 0): it
    // applies while that is still so, and the new state takes the plan's lineage.
    let fresh = doc.state.serial == 0 && state.serial == 0 && state.resources.is_empty();
    if fresh {
        if let Ok(lineage) = doc.state.lineage.parse() {
            state.lineage = lineage;
        }
    } else if doc.state.lineage != state.lineage.to_string() {
        return Err(OpsError::StalePlan(format!(
            "{path}: this plan was made for state lineage {}, but {} has lineage {}; it belongs to another workspace. Run `anvil plan --out {path}` again",
            doc.state.lineage,
            ws.backend.describe(),
            state.lineage
        )));
    }
    if doc.state.serial != state.serial {
        return Err(OpsError::StalePlan(format!(
            "{path}: saved plan is stale: it was made at state serial {}, but {} is now at serial {} (something was applied since). Run `anvil plan --out {path}` again and review it",
            doc.state.serial,
            ws.backend.describe(),
            state.serial
        )));
    }
    if doc.spec.digest != ws.digest {
        return Err(OpsError::StalePlan(format!(
            "{path}: saved plan is stale: the spec files or variables changed since it was made ({} → {}). Run `anvil plan --out {path}` again",
            doc.spec.digest, ws.digest
        )));
    }
    let mut observed = Observed::new();
    for (k, v) in &doc.observed {
        let rec =
            match v {
                Some(v) => Some(serde_json::from_value::<ResourceState>(v.clone()).map_err(
                    |e| OpsError::PlanFile {
                        path: path.into(),
                        message: format!("observed.{k}: {e}"),
                    },
                )?),
                None => None,
            };
        observed.insert(k.clone(), rec);
    }
    let plan = make_plan(ws, state, &observed, &doc.options)?;
    if pjson::plan_digest(&plan) != doc.plan_digest {
        return Err(OpsError::StalePlan(format!(
            "{path}: saved plan is stale: the same spec and state now give a different plan (an environment variable it reads may have changed). Run `anvil plan --out {path}` again"
        )));
    }
    Ok((plan, observed))
}

/// Applies a plan under the lock the caller holds, journalling every step. Apply
/// progress goes to `sink`; `cancel` stops new operations from starting (those in
/// flight finish and are recorded); `abort`, fired after it, also tells provider calls
/// in flight to stop waiting (they are recorded as failed).
///
/// # Errors
/// The journal could not be opened or written, or the plan cannot be ordered.
#[allow(clippy::too_many_arguments)]
pub async fn run_apply(
    ws: &Workspace,
    state: State,
    lock: &dyn state::Lock,
    plan: &Plan,
    parallelism: usize,
    sink: &EventSink,
    cancel: &CancellationToken,
    abort: &CancellationToken,
) -> Result<(State, apply::Report), OpsError> {
    let mut state = state;
    // Changes an interrupted run started: their providers look for that attempt first.
    let resumed = state
        .pending
        .iter()
        .filter(|p| plan.get(&p.address).is_some())
        .map(|p| p.address.clone())
        .collect();
    apply::settle_pending(plan, &ws.model, &mut state);
    let journal = ws.backend.journal(&state, lock).await?;
    let total = plan
        .changes
        .iter()
        .filter(|c| c.action != plan::Action::NoOp)
        .count();
    emit(sink, OpsEvent::ApplyStarting { total });
    // The walk speaks its own channel types; forward them as ops events.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<apply::Event>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let forward = {
        let sink = sink.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                emit(&sink, OpsEvent::Apply(e));
            }
        })
    };
    let stop = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            let _ = stop_tx.send(true);
        })
    };
    let result = apply::apply(
        plan,
        &ws.model,
        &ws.registry,
        state,
        journal,
        &ApplyConfig {
            parallelism,
            resumed,
        },
        Channels {
            events: tx,
            cancel: stop_rx,
            // Fired by a front-end that must stop at once: provider calls in flight
            // stop waiting and are recorded as failed.
            abort: abort.clone(),
        },
    )
    .await;
    stop.abort();
    // Every event is delivered before the outcome: the walk dropped its sender.
    let _ = forward.await;
    Ok(result?)
}

/// `err`, with a `force-unlock` command that names the state the lock is on (`target`)
/// when it is a lock held by another run.
pub(crate) fn lock_error(err: StateError, target: &StateTarget) -> OpsError {
    match &err {
        StateError::Locked { info, .. } => OpsError::Locked {
            id: info.id.clone(),
            flags: target_flags(target),
            source: Box::new(err),
        },
        _ => OpsError::State(err),
    }
}

/// The environment as text. Variables whose name or value is not UTF-8 are left out (a
/// `${env:NAME}` naming one reports it unset) instead of failing the whole run.
#[must_use]
pub fn utf8_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResourceSchema;
    use crate::providers::resource::{Context, ResourceType, Typed};
    use crate::providers::{Applied, ChangeRequest, ProviderError};
    use async_trait::async_trait;
    use serde_json::{Map, Value};
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// Counts the provider's requests; `gone` objects read as deleted, `fail` batches
    /// fail.
    #[derive(Default)]
    struct Ctx {
        reads: AtomicUsize,
        batch_sizes: Mutex<Vec<usize>>,
        gone: Vec<String>,
        fail: bool,
        scope: Option<String>,
    }

    impl Context for Ctx {
        fn configure(_: &Map<String, Value>) -> Result<Ctx, ProviderError> {
            Ok(Ctx::default())
        }
        fn read_scope(&self) -> Option<String> {
            self.scope.clone()
        }
    }

    /// A type read one object per request, or many (`batched`).
    struct Fake {
        ty: &'static str,
        batched: bool,
    }

    impl Fake {
        fn observe(&self, ctx: &Ctx, address: &str, r: &ResourceState) -> Option<ResourceState> {
            if ctx.gone.iter().any(|g| g == address) {
                return None;
            }
            let mut r = r.clone();
            // Drifted behind anvil's back: `size` is 2 everywhere.
            r.attributes.insert("size".into(), Value::from(2));
            Some(r)
        }
    }

    #[async_trait]
    impl ResourceType<Ctx> for Fake {
        fn schema(&self) -> ResourceSchema {
            ResourceSchema {
                ty: self.ty.into(),
                provider: "fake".into(),
                attributes: BTreeMap::new(),
                outputs: BTreeMap::new(),
            }
        }
        fn batches_reads(&self) -> bool {
            self.batched
        }
        async fn read(
            &self,
            ctx: &Ctx,
            address: &str,
            r: &ResourceState,
        ) -> Result<Option<ResourceState>, ProviderError> {
            ctx.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.observe(ctx, address, r))
        }
        async fn read_many(
            &self,
            ctx: &Ctx,
            items: &[(&str, &ResourceState)],
        ) -> Result<Vec<Option<ResourceState>>, ProviderError> {
            ctx.batch_sizes.lock().unwrap().push(items.len());
            if ctx.fail {
                return Err(ProviderError::new("DescribeFakes: connection refused"));
            }
            Ok(items.iter().map(|(a, r)| self.observe(ctx, a, r)).collect())
        }
        async fn create(&self, _: &Ctx, _: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
            unreachable!("refresh never creates")
        }
        async fn delete(&self, _: &Ctx, _: &str, _: &ResourceState) -> Result<(), ProviderError> {
            unreachable!("refresh never deletes")
        }
    }

    fn setup(ctx: Ctx) -> (Registry, Arc<Typed<Ctx>>, State) {
        let p = Arc::new(
            Typed::new("fake", ctx, 4)
                .with(Fake {
                    ty: "fake_subnet",
                    batched: true,
                })
                .with(Fake {
                    ty: "fake_bucket",
                    batched: false,
                }),
        );
        let mut reg = Registry::default();
        reg.register(p.clone());
        let mut state = State::new();
        let now = chrono::Utc::now();
        let record = |ty: &str| ResourceState {
            ty: ty.into(),
            provider: "fake".into(),
            attributes: BTreeMap::from([("size".into(), Value::from(1))]),
            sensitive: BTreeMap::new(),
            outputs: BTreeMap::new(),
            dependencies: Vec::new(),
            lifecycle: Default::default(),
            created_at: now,
            updated_at: now,
        };
        for i in 0..250 {
            state
                .resources
                .insert(format!("fake_subnet.s{i:03}"), record("fake_subnet"));
        }
        for i in 0..3 {
            state
                .resources
                .insert(format!("fake_bucket.b{i}"), record("fake_bucket"));
        }
        (reg, p, state)
    }

    #[tokio::test]
    async fn refresh_reads_batching_types_in_batches_and_the_rest_one_by_one() {
        let (reg, p, state) = setup(Ctx {
            gone: vec!["fake_subnet.s007".into(), "fake_bucket.b1".into()],
            ..Ctx::default()
        });
        let observed = refresh(&reg, &state, 10).await.unwrap();
        let ctx = p.context();
        let mut sizes = ctx.batch_sizes.lock().unwrap().clone();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![50, 100, 100], "250 subnets in batches of 100");
        assert_eq!(
            ctx.reads.load(Ordering::SeqCst),
            3,
            "each bucket on its own"
        );
        // Every record came back: the gone ones as `None`, the others drifted.
        assert_eq!(observed.len(), 253);
        assert_eq!(observed["fake_subnet.s007"], None);
        assert_eq!(observed["fake_bucket.b1"], None);
        assert_eq!(
            observed["fake_subnet.s100"].as_ref().unwrap().attributes["size"],
            2
        );
        assert_eq!(
            observed["fake_bucket.b2"].as_ref().unwrap().attributes["size"],
            2
        );
        // Scoped to some addresses, only theirs are read.
        let only = BTreeSet::from(["fake_subnet.s001".to_string(), "fake_subnet.s002".into()]);
        let observed = refresh_scoped(&reg, &state, Some(&only), 10).await.unwrap();
        assert_eq!(observed.len(), 2);
        assert_eq!(ctx.batch_sizes.lock().unwrap().last(), Some(&2));
    }

    #[tokio::test]
    async fn instances_with_the_same_read_scope_share_batches() {
        let scoped = |scope: &str| {
            Arc::new(
                Typed::new(
                    "fake",
                    Ctx {
                        scope: Some(scope.into()),
                        ..Ctx::default()
                    },
                    4,
                )
                .with(Fake {
                    ty: "fake_subnet",
                    batched: true,
                }),
            )
        };
        let (east_a, east_b, west) = (scoped("east"), scoped("east"), scoped("west"));
        let mut reg = Registry::default();
        reg.register_as("fake.a", east_a.clone());
        reg.register_as("fake.b", east_b.clone());
        reg.register_as("fake.c", west.clone());
        let (_, _, template) = setup(Ctx::default());
        let mut state = State::new();
        let subnets = template
            .resources
            .into_iter()
            .filter(|(_, r)| r.ty == "fake_subnet");
        for (i, (addr, rec)) in subnets.take(30).enumerate() {
            let mut rec = rec;
            rec.provider = ["fake.a", "fake.b", "fake.c"][i % 3].into();
            state.resources.insert(addr, rec);
        }
        let observed = refresh(&reg, &state, 10).await.unwrap();
        assert_eq!(observed.len(), 30);
        // a and b (same scope) in one batch of 20, run on one of them; c alone.
        let sizes = |p: &Typed<Ctx>| p.context().batch_sizes.lock().unwrap().clone();
        let mut east = sizes(&east_a);
        east.extend(sizes(&east_b));
        assert_eq!(east, vec![20]);
        assert_eq!(sizes(&west), vec![10]);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_the_refresh_naming_an_address_and_the_error() {
        let (reg, _, state) = setup(Ctx {
            fail: true,
            ..Ctx::default()
        });
        let e = refresh(&reg, &state, 10).await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("refresh of fake_subnet.s"), "{msg}");
        assert!(
            msg.contains("more fake_subnet): DescribeFakes: connection refused"),
            "{msg}"
        );
    }
}
