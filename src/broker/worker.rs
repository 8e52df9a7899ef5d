//! The worker: applies queued instances in batches, one at a time. Requests that arrive
//! while a batch runs wait in the queue and form the next batch, so a hundred
//! concurrent provisions cost a few lock takes and applies instead of a hundred runs
//! failing on the lock. Each batch plans and applies only its instances' addresses
//! (through `ops`, under the lock `anvil apply` takes), moves their `db` index statuses
//! along, and records each operation's end in the store. At start every unfinished
//! operation in the store is queued again, so a broker killed mid-operation resumes
//! them; the engine's journal and the BOSH provider's check for the deployment's
//! running task keep an instance from being deployed twice.

use super::bind::LazyClients;
use super::Shared;
use crate::ops::broker::{
    apply_batch, index_seed, now_rfc3339, redeploy, BatchItem, BrokerFoundation, ItemOutcome,
    OpKind, OpState, StatusChange, StoredInstance, PROVISIONED,
};
use crate::ops::{discard, CancellationToken};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the worker is asked to do.
pub enum Job {
    /// Apply the instance's operation in progress (from the store).
    Apply(String),
    /// Deploy an instance's kept manifest again (`POST /b/{id}/redeploy`).
    Redeploy(Redeploy),
}

/// A redeploy: which instance, its deployment and manifest, the clients to reach the
/// Director, and who waits for the task id (or the reason there is none).
pub struct Redeploy {
    pub id: String,
    pub deployment: String,
    pub manifest: String,
    pub clients: LazyClients,
    pub started: oneshot::Sender<Result<Option<u64>, String>>,
}

/// Where handlers queue work.
pub struct WorkerHandle {
    tx: mpsc::UnboundedSender<Job>,
    done: Arc<tokio::sync::Notify>,
    finished: Arc<Mutex<bool>>,
}

/// The receiving end, handed to [`start`].
pub struct Queue(mpsc::UnboundedReceiver<Job>);

/// A new queue.
pub fn channel() -> (WorkerHandle, Queue) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        WorkerHandle {
            tx,
            done: Arc::new(tokio::sync::Notify::new()),
            finished: Arc::new(Mutex::new(false)),
        },
        Queue(rx),
    )
}

impl WorkerHandle {
    /// Queues an instance whose operation is in progress.
    pub fn enqueue(&self, id: &str) {
        let _ = self.tx.send(Job::Apply(id.to_string()));
    }

    /// Queues a redeploy; it runs after the batch in progress, under the state lock.
    /// When the worker has stopped, `started` is dropped unanswered.
    pub fn redeploy(&self, job: Redeploy) {
        let _ = self.tx.send(Job::Redeploy(job));
    }
}

/// Queues every instance whose operation is unfinished in the store.
pub fn resume(state: &Shared) {
    let ids: Vec<String> = state.store.read(|s| {
        s.instances
            .values()
            .filter(|i| i.operation.state == OpState::InProgress)
            .map(|i| i.id.clone())
            .collect()
    });
    if !ids.is_empty() {
        tracing::info!(count = ids.len(), "resuming unfinished broker operations");
    }
    for id in ids {
        state.worker.enqueue(&id);
    }
}

/// Starts the worker loop; it ends when the broker stops (after its batch).
pub fn start(state: Shared, queue: Queue) {
    let Queue(mut rx) = queue;
    // The engine's refresh stream is not `Send` for every lifetime (a rustc limit with
    // higher-ranked closures), so the loop runs on a thread of its own, driven by this
    // runtime.
    let runtime = tokio::runtime::Handle::current();
    let driver = runtime.clone();
    driver.spawn_blocking(move || {
        runtime.block_on(async move {
            loop {
                let first = tokio::select! {
                    () = state.stopping.cancelled() => None,
                    id = rx.recv() => id,
                };
                let Some(first) = first else {
                    break;
                };
                let mut ids = BTreeSet::new();
                let mut redeploys = Vec::new();
                for job in gather(first, &mut rx).await {
                    match job {
                        Job::Apply(id) => {
                            ids.insert(id);
                        }
                        Job::Redeploy(r) => redeploys.push(r),
                    }
                }
                if !ids.is_empty() {
                    run_batch(&state, ids).await;
                }
                for r in redeploys {
                    run_redeploy(&state, r).await;
                }
                if state.stopping.is_cancelled() {
                    break;
                }
            }
            if let Ok(mut f) = state.worker.finished.lock() {
                *f = true;
            }
            state.worker.done.notify_waiters();
        })
    });
}

/// A batch gathers requests until none came for this long...
const GATHER_QUIET: Duration = Duration::from_millis(20);
/// ...or this long after its first one.
const GATHER_MAX: Duration = Duration::from_millis(250);

/// The jobs of the next batch: `first` and whatever follows it closely. A burst of
/// requests (a platform provisioning many instances at once) reaches the queue spread
/// over a few store writes; without waiting for its tail, the first batch would hold
/// one instance and keep the Director's other task slots idle for a whole deploy while
/// the rest waited for the state lock. Each batch waits at most [`GATHER_MAX`], next to
/// a deploy's minutes.
async fn gather<T>(first: T, rx: &mut mpsc::UnboundedReceiver<T>) -> Vec<T> {
    crate::ops::broker::gather(first, rx, GATHER_QUIET, GATHER_MAX, |_| false).await
}

/// Waits for the worker loop to end (the caller cancelled `stopping`).
pub async fn drained(state: &Shared) {
    let notified = state.worker.done.notified();
    if state.worker.finished.lock().map(|f| *f).unwrap_or(true) {
        return;
    }
    notified.await;
}

/// The statuses Blacksmith moves an instance through, by kind: (picked up, applying,
/// failed).
fn statuses(kind: OpKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        OpKind::Provision => ("validated", "provisioning_started", "provisioning_failed"),
        OpKind::Update => ("validated", "updating", "update_failed"),
        OpKind::Deprovision => ("deprovisioning", "deprovisioning", "deprovision_failed"),
    }
}

fn status(inst: &StoredInstance, s: &str) -> StatusChange {
    StatusChange {
        id: inst.id.clone(),
        status: Some(s.to_string()),
        seed: index_seed(inst),
    }
}

async fn run_batch(state: &Shared, ids: BTreeSet<String>) {
    // The operations still in progress (a queued id may have finished meanwhile).
    let batch: Vec<StoredInstance> = state.store.read(|s| {
        ids.iter()
            .filter_map(|id| s.instances.get(id))
            .filter(|i| i.operation.state == OpState::InProgress)
            .cloned()
            .collect()
    });
    if batch.is_empty() {
        return;
    }
    tracing::info!(instances = batch.len(), "applying a broker batch");
    let picked: Vec<StatusChange> = batch
        .iter()
        .filter(|i| i.operation.kind != OpKind::Deprovision)
        .map(|i| status(i, statuses(i.operation.kind).0))
        .collect();
    state.index.queue(picked);
    let items: Vec<BatchItem> = batch
        .iter()
        .map(|i| {
            let mut addresses = BrokerFoundation::addresses(&i.id, &i.plan_id);
            if let Some(prev) = i
                .operation
                .previous_plan_id
                .as_ref()
                .filter(|p| **p != i.plan_id)
            {
                addresses.extend(BrokerFoundation::addresses(&i.id, prev));
            }
            BatchItem {
                id: i.id.clone(),
                addresses,
            }
        })
        .collect();
    let applying: Vec<StatusChange> = batch
        .iter()
        .map(|i| status(i, statuses(i.operation.kind).1))
        .collect();
    let index = state.index.clone();
    let before_apply = async move {
        if let Err(e) = index.write(applying).await {
            tracing::warn!(error = %e, "could not write the applying statuses");
        }
    };
    // The batch is never abandoned half-way: a stopping broker lets it finish.
    let never = CancellationToken::new();
    let result = apply_batch(
        &state.settings.inputs,
        &items,
        state.settings.lock_timeout,
        state.settings.parallelism,
        before_apply,
        &discard(),
        &never,
    )
    .await;
    let outcomes: BTreeMap<String, ItemOutcome> = match result {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "a broker batch failed");
            batch
                .iter()
                .map(|i| (i.id.clone(), ItemOutcome::Failed(e.to_string())))
                .collect()
        }
    };
    finish(state, &batch, &outcomes).await;
}

/// Deploys an instance's kept manifest again under the state lock, answers the task id
/// to the waiting request as soon as the Director hands it out, and records the task in
/// the store (a broker instance's operation names it) once it ended.
async fn run_redeploy(state: &Shared, job: Redeploy) {
    let Redeploy {
        id,
        deployment,
        manifest,
        clients,
        started,
    } = job;
    let clients = match clients.get(state).await {
        Ok(c) => c,
        Err(e) => {
            let _ = started.send(Err(e.description));
            return;
        }
    };
    let mut started = Some(started);
    let result = redeploy(
        &state.settings.inputs,
        state.settings.lock_timeout,
        clients,
        &deployment,
        &manifest,
        |task| {
            if let Some(s) = started.take() {
                let _ = s.send(Ok(task));
            }
        },
        &state.stopping,
    )
    .await;
    let description = match &result {
        Ok(Some(t)) => {
            format!("redeploy succeeded: deployment {deployment} deployed by BOSH task {t}")
        }
        Ok(None) => format!("redeploy succeeded: deployment {deployment} was up to date"),
        Err(e) => e.to_string(),
    };
    if let Some(s) = started.take() {
        let _ = s.send(Err(description.clone()));
    }
    match &result {
        Ok(_) => tracing::info!(instance = %id, %description, "redeployed"),
        Err(_) => tracing::warn!(instance = %id, %description, "redeploy failed"),
    }
    let task = result.ok().flatten();
    let recorded = state
        .store
        .update(|store| match store.instance_mut(&id) {
            Some(cur) if cur.operation.state != OpState::InProgress => {
                cur.operation.description = description;
                cur.operation.finished_at = Some(now_rfc3339());
                if task.is_some() {
                    cur.operation.task_id = task;
                }
                ((), true)
            }
            _ => ((), false),
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "could not record the redeploy in the broker store");
    }
}

/// Records each operation's end in the store and the index.
async fn finish(
    state: &Shared,
    batch: &[StoredInstance],
    outcomes: &BTreeMap<String, ItemOutcome>,
) {
    let mut index = Vec::new();
    for i in batch {
        match outcomes.get(&i.id) {
            Some(ItemOutcome::Done { .. }) if i.operation.kind == OpKind::Deprovision => {
                // Gone from the index even when the apply had no entry to delete.
                index.push(StatusChange {
                    id: i.id.clone(),
                    status: None,
                    seed: serde_json::Map::new(),
                });
            }
            Some(ItemOutcome::Done { .. }) => {
                index.push(status(i, PROVISIONED));
            }
            Some(ItemOutcome::Failed(_)) | None => {
                index.push(status(i, statuses(i.operation.kind).2));
            }
        }
    }
    if let Err(e) = state.index.write(index).await {
        tracing::warn!(error = %e, "could not write the final statuses to the db index");
    }
    let recorded = state
        .store
        .update(|store| {
            let mut changed = false;
            for i in batch {
                let Some(cur) = store.instance_mut(&i.id) else {
                    continue;
                };
                // A newer request replaced the operation meanwhile: it is queued itself.
                if cur.operation.id != i.operation.id {
                    continue;
                }
                let deployment = crate::ops::broker::deployment_name(&i.plan_id, &i.id);
                let verb = match i.operation.kind {
                    OpKind::Provision => "provision",
                    OpKind::Update => "update",
                    OpKind::Deprovision => "deprovision",
                };
                let (st, description, task) = match outcomes.get(&i.id) {
                    Some(ItemOutcome::Done { task_id }) => {
                        let what = match (i.operation.kind, task_id) {
                            (OpKind::Deprovision, _) => {
                                format!("deployment {deployment} deleted")
                            }
                            (_, Some(t)) => {
                                format!("deployment {deployment} deployed by BOSH task {t}")
                            }
                            (_, None) => format!("deployment {deployment} is up to date"),
                        };
                        (
                            OpState::Succeeded,
                            format!("{verb} succeeded: {what}"),
                            *task_id,
                        )
                    }
                    Some(ItemOutcome::Failed(m)) => (
                        OpState::Failed,
                        format!("{verb} of deployment {deployment} failed: {m}"),
                        None,
                    ),
                    None => (
                        OpState::Failed,
                        format!(
                            "{verb} of deployment {deployment} failed: the batch did not report it"
                        ),
                        None,
                    ),
                };
                cur.operation.state = st;
                cur.operation.description = description;
                cur.operation.finished_at = Some(now_rfc3339());
                if task.is_some() {
                    cur.operation.task_id = task;
                }
                changed = true;
            }
            ((), changed)
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "could not record the batch's outcome in the broker store; it is applied again on restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_batch_gathers_a_burst_until_quiet_or_its_limit() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // A burst every 10 ms (closer than GATHER_QUIET) for 40 ms, then a pause.
        let feeder = tokio::spawn(async move {
            for i in 1..=4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                tx.send(i).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(99).unwrap();
            tx
        });
        let t0 = tokio::time::Instant::now();
        assert_eq!(gather(0, &mut rx).await, vec![0, 1, 2, 3, 4]);
        // It stopped GATHER_QUIET after the last one of the burst.
        assert_eq!(t0.elapsed(), Duration::from_millis(40) + GATHER_QUIET);
        assert_eq!(rx.recv().await, Some(99));
        let tx = feeder.await.unwrap();

        // A steady stream stops at GATHER_MAX.
        let stream = tokio::spawn(async move {
            for i in 0..1000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if tx.send(i).is_err() {
                    break;
                }
            }
        });
        let t0 = tokio::time::Instant::now();
        let got = gather(-1, &mut rx).await;
        assert_eq!(t0.elapsed(), GATHER_MAX);
        assert!(got.len() > 40 && got.len() <= 51, "{}", got.len());
        drop(rx);
        stream.await.unwrap();
    }
}
