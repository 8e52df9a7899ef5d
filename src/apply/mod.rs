//! Apply: walks the plan as a graph of provider operations with tokio, recording every
//! step in the state journal.
//!
//! A node starts when every node it depends on is done, with at most `parallelism`
//! operations in flight and at most each provider's own limit. Deletes run in reverse
//! dependency order. A failed node skips everything that depends on it while independent
//! branches go on. Cancellation stops new work and waits for what is in flight. Before
//! each provider call an intent is journalled (and made durable), after it the result, so
//! a run killed at any instant leaves state the next run can finish.

use crate::model::{Address, Lookup, Model, PValue, Reference};
use crate::plan::{self, Action, Plan, ReplaceOrder};
use crate::providers::{
    Applied, CancellationToken, ChangeRequest, ProgressFn, Provider, ProviderError, Registry,
};
use crate::state::{
    fingerprint, Journal, JournalRecord, Operation, RecordedLifecycle, ResourceState, State,
    StateError,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// Remove from state without touching the real object.
    Forget,
}

impl Op {
    pub fn verb(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Forget => "forget",
        }
    }
    fn operation(self) -> Operation {
        match self {
            Op::Create => Operation::Create,
            Op::Update => Operation::Update,
            Op::Delete | Op::Forget => Operation::Delete,
        }
    }
}

/// Progress of a run, for the CLI to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started {
        address: String,
        op: Op,
    },
    Progress {
        address: String,
        message: String,
    },
    Finished {
        address: String,
        op: Op,
        elapsed: Duration,
        id: Option<String>,
    },
    Failed {
        address: String,
        op: Op,
        error: String,
    },
    Skipped {
        address: String,
        op: Op,
        because: String,
    },
}

/// How a run ended, per address.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub done: Vec<(String, Op)>,
    pub failed: Vec<(String, Op, String)>,
    pub skipped: Vec<(String, Op, String)>,
    /// Nodes never started because the run was interrupted.
    pub not_started: Vec<(String, Op)>,
    pub interrupted: bool,
}

impl Report {
    pub fn success(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.is_empty()
            && self.not_started.is_empty()
            && !self.interrupted
    }
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct ApplyConfig {
    pub parallelism: usize,
    /// Addresses whose change an earlier run started and was interrupted before its
    /// result was recorded: their providers are told to look for that attempt's effect
    /// (a BOSH task still running) before acting again.
    pub resumed: std::collections::BTreeSet<String>,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            parallelism: 10,
            resumed: std::collections::BTreeSet::new(),
        }
    }
}

/// Why an apply could not run at all (failures of single resources are in the report).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("internal error: the operations of this plan form a cycle through {0}; please report this with the plan")]
    Cycle(String),
    #[error("{address}: {}", crate::providers::missing_instance(.provider))]
    NoProvider { address: String, provider: String },
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Debug)]
struct Node {
    address: String,
    op: Op,
    /// Delete of the old object of a create-before-destroy replace (`ADDR#deposed`).
    deposed: bool,
    /// The create of a create-before-destroy replace: the recorded object it replaces is
    /// kept aside (`ADDR#deposed`) until its delete runs. A plain create (e.g. of an
    /// object deleted outside anvil) overwrites a stale record instead.
    cbd_create: bool,
    provider: Arc<dyn Provider>,
    provider_name: String,
    succs: Vec<usize>,
    preds: usize,
}

impl std::fmt::Debug for dyn Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Provider({})", self.name())
    }
}

fn deposed_key(address: &str) -> String {
    format!("{address}#deposed")
}

/// Builds the operation graph of a plan.
fn build_graph(
    plan: &Plan,
    model: &Model,
    state: &State,
    registry: &Registry,
) -> Result<Vec<Node>, ApplyError> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut up: HashMap<&str, usize> = HashMap::new(); // create/update node per address
    let mut down: HashMap<&str, usize> = HashMap::new(); // delete/forget node per address
    let mut dtc: BTreeSet<&str> = BTreeSet::new();
    let provider_for = |c: &plan::ResourceChange| -> Result<Arc<dyn Provider>, ApplyError> {
        registry
            .get(&c.provider)
            .cloned()
            .ok_or_else(|| ApplyError::NoProvider {
                address: c.address.clone(),
                provider: c.provider.clone(),
            })
    };
    let push = |nodes: &mut Vec<Node>,
                address: &str,
                op: Op,
                deposed: bool,
                p: Arc<dyn Provider>,
                name: &str| {
        nodes.push(Node {
            address: address.to_string(),
            op,
            deposed,
            cbd_create: false,
            provider: p,
            provider_name: name.to_string(),
            succs: vec![],
            preds: 0,
        });
        nodes.len() - 1
    };
    for c in &plan.changes {
        let retain = state
            .resources
            .get(&c.address)
            .is_some_and(|r| r.lifecycle.retain_on_delete)
            || Address::parse(&c.address)
                .ok()
                .and_then(|a| model.get(&a))
                .is_some_and(|r| r.lifecycle.retain_on_delete);
        let del_op = if retain { Op::Forget } else { Op::Delete };
        match c.action {
            Action::NoOp => {}
            Action::Create => {
                up.insert(
                    &c.address,
                    push(
                        &mut nodes,
                        &c.address,
                        Op::Create,
                        false,
                        provider_for(c)?,
                        &c.provider,
                    ),
                );
            }
            Action::Update => {
                up.insert(
                    &c.address,
                    push(
                        &mut nodes,
                        &c.address,
                        Op::Update,
                        false,
                        provider_for(c)?,
                        &c.provider,
                    ),
                );
            }
            Action::Delete => {
                down.insert(
                    &c.address,
                    push(
                        &mut nodes,
                        &c.address,
                        del_op,
                        false,
                        provider_for(c)?,
                        &c.provider,
                    ),
                );
            }
            Action::Forget => {
                down.insert(
                    &c.address,
                    push(
                        &mut nodes,
                        &c.address,
                        Op::Forget,
                        false,
                        provider_for(c)?,
                        &c.provider,
                    ),
                );
            }
            Action::Replace => {
                let p = provider_for(c)?;
                let cbd = c.replace_order == Some(ReplaceOrder::CreateThenDelete);
                let d = push(&mut nodes, &c.address, del_op, cbd, p.clone(), &c.provider);
                let u = push(&mut nodes, &c.address, Op::Create, false, p, &c.provider);
                nodes[u].cbd_create = cbd;
                if !cbd {
                    dtc.insert(&c.address);
                }
                down.insert(&c.address, d);
                up.insert(&c.address, u);
            }
        }
    }
    let mut edges: Vec<(usize, usize)> = Vec::new();
    // Create/update after the create/update of what it depends on.
    for (addr, &n) in &up {
        if let Some(r) = Address::parse(addr).ok().and_then(|a| model.get(&a)) {
            for d in &r.dependencies {
                if let Some(&m) = up.get(d.to_string().as_str()) {
                    edges.push((m, n));
                }
            }
        }
        if let Some(&d) = down.get(addr) {
            if dtc.contains(addr) {
                edges.push((d, n));
            } else {
                edges.push((n, d));
            }
        }
    }
    // Deletes in reverse order: an object goes after everything that used it.
    let mut users: HashMap<&str, Vec<&str>> = HashMap::new();
    for (addr, r) in &state.resources {
        for d in &r.dependencies {
            users.entry(d.as_str()).or_default().push(addr.as_str());
        }
    }
    for (addr, &n) in &down {
        let base = addr.split('#').next().unwrap_or(addr);
        let mut dependents: BTreeSet<String> = users
            .get(base)
            .into_iter()
            .flatten()
            .map(|s| s.split('#').next().unwrap_or(s).to_string())
            .collect();
        if let Ok(a) = Address::parse(base) {
            dependents.extend(model.dependents(&a).into_iter().map(|d| d.to_string()));
        }
        for y in dependents {
            if let Some(&m) = down.get(y.as_str()) {
                if m != n {
                    edges.push((m, n));
                }
            }
            if !dtc.contains(base) {
                if let Some(&m) = up.get(y.as_str()) {
                    edges.push((m, n));
                }
            }
        }
    }
    edges.sort_unstable();
    edges.dedup();
    for (a, b) in edges {
        nodes[a].succs.push(b);
        nodes[b].preds += 1;
    }
    // Kahn's check: every node must be reachable in order.
    let mut indeg: Vec<usize> = nodes.iter().map(|n| n.preds).collect();
    let mut queue: VecDeque<usize> = (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
    let mut seen = 0;
    while let Some(i) = queue.pop_front() {
        seen += 1;
        for &s in &nodes[i].succs {
            indeg[s] -= 1;
            if indeg[s] == 0 {
                queue.push_back(s);
            }
        }
    }
    if seen != nodes.len() {
        let mut stuck: Vec<&str> = (0..nodes.len())
            .filter(|&i| indeg[i] > 0)
            .map(|i| nodes[i].address.as_str())
            .collect();
        stuck.dedup();
        stuck.truncate(5);
        return Err(ApplyError::Cycle(stuck.join(", ")));
    }
    Ok(nodes)
}

/// Drops the interrupted operations recorded in `state.pending` that this plan settles:
/// the plan already accounted for them (refresh read their objects). Only those of
/// resources the plan leaves out (`--target`) are kept. Call before opening the journal,
/// which starts its own view of pending operations from the state it is given.
pub fn settle_pending(plan: &Plan, model: &Model, state: &mut State) {
    state.pending.retain(|p| {
        plan.get(&p.address).is_none()
            && Address::parse(&p.address)
                .ok()
                .is_some_and(|a| model.contains(&a))
    });
}

/// Resolves a reference against what is recorded now (dependencies are already applied).
fn lookup_recorded(state: &State, rf: &Reference) -> Lookup {
    let target = rf.target.to_string();
    let Some(rec) = state.resources.get(&target) else {
        return Lookup::Missing(format!("{target} is not recorded in state"));
    };
    let attr = &rf.attr[0];
    let v = match rec.outputs.get(attr).or_else(|| rec.attributes.get(attr)) {
        Some(v) => v,
        None if rec.sensitive.contains_key(attr) => {
            return Lookup::Missing(format!("`{attr}` is sensitive and not kept in state"))
        }
        None => &Value::Null,
    };
    let mut cur = v;
    for p in &rf.attr[1..] {
        cur = match cur {
            Value::Object(m) => match m.get(p) {
                Some(x) => x,
                None => return Lookup::Missing(format!("no `{p}` in the value")),
            },
            Value::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(x) => x,
                None => return Lookup::Missing(format!("no `{p}` in the value")),
            },
            _ => return Lookup::Missing(format!("no `{p}` in the value")),
        };
    }
    Lookup::Known(cur.clone())
}

/// The real attribute values to send for a create or update.
fn resolve_for_apply(
    model: &Model,
    state: &State,
    address: &str,
) -> Result<BTreeMap<String, Value>, String> {
    let r = Address::parse(address)
        .ok()
        .and_then(|a| model.get(&a))
        .ok_or_else(|| format!("{address} is not in the spec"))?;
    let lookup = |rf: &Reference| lookup_recorded(state, rf);
    let mut vals = plan::resolve_attributes(r, &lookup)?;
    plan::apply_ignore_changes(
        r,
        state.resources.get(address),
        &mut vals,
        plan::Recorded::RealValues,
    );
    let mut out = BTreeMap::new();
    for (k, v) in vals {
        match v {
            PValue::Known(v) => {
                out.insert(k, v);
            }
            _ => {
                return Err(format!(
                    "attributes.{k} is still unknown after its dependencies were applied"
                ))
            }
        }
    }
    Ok(out)
}

/// How a run talks to its caller: progress events out, cancellation in.
pub struct Channels {
    pub events: mpsc::UnboundedSender<Event>,
    /// Becomes `true` when the run should stop starting new work.
    pub cancel: watch::Receiver<bool>,
    /// Cancelled when in-flight provider work must stop too (not on a first interrupt,
    /// which drains): handed to every provider call, so a BOSH task being followed
    /// stops waiting.
    pub abort: CancellationToken,
}

type Outcome = Result<Option<Applied>, ProviderError>;

/// Runs the plan.
///
/// `state` must be the state the plan was made from; it is returned updated. Every
/// change is journalled through `journal`, which is finished (checkpointed) at the end.
///
/// # Errors
/// The plan cannot be turned into an operation graph, or the journal cannot be written.
/// Failures of single resources are not errors: they are in the [`Report`].
pub async fn apply(
    plan: &Plan,
    model: &Model,
    registry: &Registry,
    mut state: State,
    journal: Box<dyn Journal>,
    cfg: &ApplyConfig,
    io: Channels,
) -> Result<(State, Report), ApplyError> {
    let Channels {
        events,
        mut cancel,
        abort,
    } = io;
    let nodes = build_graph(plan, model, &state, registry)?;
    let schemas = registry.schemas();
    let mut report = Report::default();
    let mut indeg: Vec<usize> = nodes.iter().map(|n| n.preds).collect();
    let mut ready: VecDeque<usize> = (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
    let mut blocked: Vec<bool> = vec![false; nodes.len()];
    let mut finished: Vec<bool> = vec![false; nodes.len()];
    let mut in_flight: HashMap<String, usize> = HashMap::new();
    let mut running: JoinSet<(usize, Outcome)> = JoinSet::new();
    let mut starts: HashMap<usize, Instant> = HashMap::new();
    let parallelism = cfg.parallelism.max(1);
    let mut cancelled = *cancel.borrow();
    let send = |e: Event| {
        let _ = events.send(e);
    };

    loop {
        // An abort implies a stop, even before the stop signal has reached this loop
        // (the two are fired back to back): nothing new starts once either is set.
        if abort.is_cancelled() || *cancel.borrow() {
            cancelled = true;
        }
        // Start what may start.
        let mut deferred = VecDeque::new();
        while !cancelled && running.len() < parallelism {
            let Some(i) = ready.pop_front() else { break };
            let node = &nodes[i];
            if blocked[i] {
                continue;
            }
            let limit = node.provider.concurrency_limit().max(1);
            let busy = in_flight.get(&node.provider_name).copied().unwrap_or(0);
            if node.op != Op::Forget && busy >= limit {
                deferred.push_back(i);
                continue;
            }
            let key = if node.deposed {
                deposed_key(&node.address)
            } else {
                node.address.clone()
            };
            if node.op == Op::Forget {
                // No provider call: only the record goes.
                send(Event::Started {
                    address: node.address.clone(),
                    op: node.op,
                });
                if state.resources.remove(&key).is_some() {
                    state.serial += 1;
                    note(journal.append(&JournalRecord::Removed {
                        serial: state.serial,
                        address: key,
                    }));
                }
                finished[i] = true;
                report.done.push((node.address.clone(), node.op));
                send(Event::Finished {
                    address: node.address.clone(),
                    op: node.op,
                    elapsed: Duration::ZERO,
                    id: None,
                });
                release(&nodes, i, &mut indeg, &mut ready);
                continue;
            }
            let provider = node.provider.clone();
            let address = node.address.clone();
            let op = node.op;
            let prior = state.resources.get(&key).cloned();
            let attrs = match op {
                Op::Create | Op::Update => match resolve_for_apply(model, &state, &address) {
                    Ok(a) => a,
                    Err(e) => {
                        fail(
                            &nodes,
                            i,
                            e,
                            &mut report,
                            &mut blocked,
                            &mut finished,
                            &send,
                            journal.as_ref(),
                        );
                        continue;
                    }
                },
                _ => BTreeMap::new(),
            };
            let commit = journal.append(&JournalRecord::Intent {
                address: key.clone(),
                operation: op.operation(),
                at: chrono::Utc::now(),
            });
            *in_flight.entry(node.provider_name.clone()).or_default() += 1;
            starts.insert(i, Instant::now());
            send(Event::Started {
                address: address.clone(),
                op,
            });
            let tx = events.clone();
            let progress_addr = address.clone();
            let progress: ProgressFn = Arc::new(move |m: &str| {
                let _ = tx.send(Event::Progress {
                    address: progress_addr.clone(),
                    message: m.to_string(),
                });
            });
            let ty = address.split('.').next().unwrap_or_default().to_string();
            let abort = abort.clone();
            let resumed = cfg.resumed.contains(&key);
            let lineage = state.lineage.to_string();
            // A create-before-destroy create sees the object it replaces, so a provider
            // that looks for its own objects by tag before creating (`aws`) neither adopts
            // nor removes it.
            let replaced = if node.cbd_create { prior.clone() } else { None };
            running.spawn(async move {
                if let Err(e) = commit.wait().await {
                    return (i, Err(ProviderError::new(format!("the state journal could not be written, so {address} was not touched: {e}"))));
                }
                let out = match op {
                    Op::Create => provider.create(ChangeRequest { address: &address, ty: &ty, attributes: &attrs, prior: replaced.as_ref(), progress, lineage: &lineage, cancel: abort, resumed }).await.map(Some),
                    Op::Update => provider.update(ChangeRequest { address: &address, ty: &ty, attributes: &attrs, prior: prior.as_ref(), progress, lineage: &lineage, cancel: abort, resumed }).await.map(Some),
                    Op::Delete => match &prior {
                        Some(p) => provider.delete(&address, p).await.map(|_| None),
                        None => Ok(None),
                    },
                    Op::Forget => Ok(None),
                };
                (i, out)
            });
        }
        ready.extend(deferred);
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let (i, outcome) = match joined {
                    Ok(x) => x,
                    Err(e) => {
                        // A provider panicked: find nothing to attribute it to but the report.
                        report.failed.push(("(unknown)".into(), Op::Create, format!("a provider task panicked: {e}")));
                        continue;
                    }
                };
                let node = &nodes[i];
                if let Some(n) = in_flight.get_mut(&node.provider_name) {
                    *n -= 1;
                }
                let elapsed = starts.remove(&i).map(|s| s.elapsed()).unwrap_or_default();
                match outcome {
                    Ok(applied) => {
                        let id = record_success(&mut state, journal.as_ref(), node, applied, model, schemas);
                        finished[i] = true;
                        report.done.push((node.address.clone(), node.op));
                        send(Event::Finished { address: node.address.clone(), op: node.op, elapsed, id });
                        release(&nodes, i, &mut indeg, &mut ready);
                    }
                    Err(e) => fail(&nodes, i, e.message, &mut report, &mut blocked, &mut finished, &send, journal.as_ref()),
                }
                if journal.checkpoint_due() {
                    let _ = journal.checkpoint(&state);
                }
            }
            changed = cancel.changed(), if !cancelled => {
                if changed.is_err() || *cancel.borrow() {
                    cancelled = true;
                }
            }
        }
    }
    if cancelled {
        report.interrupted = true;
    }
    for (i, n) in nodes.iter().enumerate() {
        if !finished[i] && !blocked[i] {
            report.not_started.push((n.address.clone(), n.op));
        }
    }
    journal.finish(&state).await?;
    Ok((state, report))
}

fn release(nodes: &[Node], i: usize, indeg: &mut [usize], ready: &mut VecDeque<usize>) {
    for &s in &nodes[i].succs {
        indeg[s] -= 1;
        if indeg[s] == 0 {
            ready.push_back(s);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn fail(
    nodes: &[Node],
    i: usize,
    error: String,
    report: &mut Report,
    blocked: &mut [bool],
    finished: &mut [bool],
    send: &dyn Fn(Event),
    journal: &dyn Journal,
) {
    let node = &nodes[i];
    finished[i] = true;
    note(journal.append(&JournalRecord::Failed {
        address: node.address.clone(),
        operation: node.op.operation(),
        error: error.clone(),
    }));
    send(Event::Failed {
        address: node.address.clone(),
        op: node.op,
        error: error.clone(),
    });
    report.failed.push((node.address.clone(), node.op, error));
    // Everything downstream is skipped.
    let mut stack: Vec<usize> = node.succs.clone();
    while let Some(s) = stack.pop() {
        if blocked[s] || finished[s] {
            continue;
        }
        blocked[s] = true;
        let because = format!("{} {} failed", node.address, node.op.verb());
        send(Event::Skipped {
            address: nodes[s].address.clone(),
            op: nodes[s].op,
            because: because.clone(),
        });
        report
            .skipped
            .push((nodes[s].address.clone(), nodes[s].op, because));
        stack.extend(nodes[s].succs.iter().copied());
    }
}

fn record_success(
    state: &mut State,
    journal: &dyn Journal,
    node: &Node,
    applied: Option<Applied>,
    model: &Model,
    schemas: &crate::model::Schemas,
) -> Option<String> {
    let now = chrono::Utc::now();
    match node.op {
        Op::Delete | Op::Forget => {
            let key = if node.deposed {
                deposed_key(&node.address)
            } else {
                node.address.clone()
            };
            if state.resources.remove(&key).is_some() {
                state.serial += 1;
                note(journal.append(&JournalRecord::Removed {
                    serial: state.serial,
                    address: key,
                }));
            }
            None
        }
        Op::Create | Op::Update => {
            let applied = applied.unwrap_or_default();
            let r = Address::parse(&node.address)
                .ok()
                .and_then(|a| model.get(&a));
            let ty = node
                .address
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string();
            let schema = schemas.get(&ty);
            let mut attributes = BTreeMap::new();
            let mut sensitive = BTreeMap::new();
            for (k, v) in applied.attributes {
                if schema.is_some_and(|s| s.is_sensitive(&k)) {
                    sensitive.insert(k, fingerprint(&v));
                } else {
                    attributes.insert(k, v);
                }
            }
            let old = state.resources.get(&node.address);
            let created_at = match (node.op, old) {
                (Op::Update, Some(o)) => o.created_at,
                _ => now,
            };
            // Create-before-destroy: the old object is kept aside until its delete runs.
            if node.op == Op::Create && node.cbd_create {
                if let Some(old) = state.resources.remove(&node.address) {
                    let key = deposed_key(&node.address);
                    state.serial += 1;
                    note(journal.append(&JournalRecord::Applied {
                        serial: state.serial,
                        address: key.clone(),
                        resource: old.clone(),
                    }));
                    state.resources.insert(key, old);
                }
            }
            let lifecycle = r.map(|r| RecordedLifecycle {
                prevent_destroy: r.lifecycle.prevent_destroy,
                create_before_destroy: r.lifecycle.create_before_destroy,
                retain_on_delete: r.lifecycle.retain_on_delete,
            });
            let rec = ResourceState {
                ty,
                provider: node.provider_name.clone(),
                attributes,
                sensitive,
                outputs: applied.outputs,
                dependencies: r
                    .map(|r| r.dependencies.iter().map(|d| d.to_string()).collect())
                    .unwrap_or_default(),
                lifecycle: lifecycle.unwrap_or_default(),
                created_at,
                updated_at: now,
            };
            let id = rec
                .outputs
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string);
            state.serial += 1;
            note(journal.append(&JournalRecord::Applied {
                serial: state.serial,
                address: node.address.clone(),
                resource: rec.clone(),
            }));
            state.resources.insert(node.address.clone(), rec);
            id
        }
    }
}

/// A result record needs no wait: the journal is written in order, so it is durable once
/// any later intent is, and `finish` makes the rest durable.
fn note(_commit: crate::state::Commit) {}
#[cfg(test)]
mod tests;
