//! The workers of `anvil serve`: each takes a job from the [`JobQueue`] under a lease,
//! renews it with a heartbeat while it works, and runs it through `ops::environments`
//! (provision: apply, kubeconfig, bootstrap hook; destroy), moving the environment's
//! status along and recording the apply's progress as events.
//!
//! A worker whose heartbeat says the job is no longer its own (its lease ran out and
//! another worker took it) stops at once and records nothing more: the other worker
//! continues from the state the workspace records. On shutdown (the token) a job in
//! flight is left to its lease, so another server, or this one restarted, takes it
//! again.

use super::queue::{Job, JobKind, JobOutcome, JobQueue, PlanSummary, Status};
use crate::ops::environments::{self, BootstrapRequest, EnvironmentJob};
use crate::ops::{ApplyEvent, CancellationToken, OpsError, OpsEvent};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// How long a job waits for its workspace's state lock: longer than a dead worker's
/// lock lease (`ANVIL_LOCK_LEASE`, 30 s by default), after which it expires by itself.
const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// How long an idle worker waits between looks at the queue when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// The sensitive output the kubeconfig is stored as.
pub const KUBECONFIG_OUTPUT: &str = "kubeconfig";

/// How the workers run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Workers are named `{id_prefix}-{n}` (unique across servers: host and pid).
    pub id_prefix: String,
    /// The PostgreSQL state URL every environment's workspace uses; `None`: local state
    /// files under `data_dir/state/`.
    pub state_url: Option<String>,
    pub data_dir: PathBuf,
    /// A job's lease: another worker takes it this long after its worker's last
    /// heartbeat.
    pub lease: Duration,
    /// How often a running job's lease is renewed (well under `lease`).
    pub heartbeat: Duration,
    /// The charts hook (`sh -c`), run with `KUBECONFIG` after apply; `None` skips it.
    pub bootstrap_hook: Option<String>,
    /// Provider calls in flight per job.
    pub parallelism: usize,
}

/// Told about every job a worker ends (the server's metrics).
pub trait Observer: Send + Sync {
    fn job_finished(&self, kind: JobKind, outcome: &JobOutcome, took: Duration);
}

/// An [`Observer`] that ignores everything.
pub struct NoObserver;

impl Observer for NoObserver {
    fn job_finished(&self, _: JobKind, _: &JobOutcome, _: Duration) {}
}

/// Starts `count` workers; they stop when `cancel` fires.
#[must_use]
pub fn spawn(
    queue: Arc<dyn JobQueue>,
    settings: Settings,
    count: usize,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let settings = Arc::new(settings);
    (1..=count)
        .map(|n| {
            let worker = Worker {
                id: format!("{}-{n}", settings.id_prefix),
                queue: queue.clone(),
                settings: settings.clone(),
                observer: observer.clone(),
            };
            let cancel = cancel.clone();
            // The engine's apply future is not `Send` for every lifetime (a rustc limit
            // with higher-ranked closures), so each worker runs on a thread of its own,
            // driven by this runtime (as the broker's worker does).
            let runtime = tokio::runtime::Handle::current();
            let driver = runtime.clone();
            driver.spawn_blocking(move || runtime.block_on(worker.run(cancel)))
        })
        .collect()
}

struct Worker {
    id: String,
    queue: Arc<dyn JobQueue>,
    settings: Arc<Settings>,
    observer: Arc<dyn Observer>,
}

impl Worker {
    async fn run(&self, cancel: CancellationToken) {
        tracing::debug!(worker = %self.id, "worker started");
        let poll = IDLE_POLL.min(self.settings.lease / 2);
        while !cancel.is_cancelled() {
            match self.queue.take(&self.id, self.settings.lease).await {
                Ok(Some(job)) => {
                    let span = tracing::info_span!(
                        "job",
                        environment_id = %job.environment_id,
                        job_id = %job.id,
                        attempt = job.attempt,
                        worker = %self.id
                    );
                    self.run_job(&job, &cancel).instrument(span).await;
                }
                Ok(None) => {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = self.queue.wait_for_work(poll) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %self.id, error = %e, "cannot take a job; trying again");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(poll) => {}
                    }
                }
            }
        }
        tracing::debug!(worker = %self.id, "worker stopped");
    }

    async fn run_job(&self, job: &Job, cancel: &CancellationToken) {
        let started = Instant::now();
        tracing::info!(kind = ?job.kind, "job taken");
        let job_cancel = cancel.child_token();
        let abort = CancellationToken::new();
        let lost = Arc::new(AtomicBool::new(false));
        let done = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            self.queue.clone(),
            job.clone(),
            self.settings.lease,
            self.settings.heartbeat,
            HeartbeatSignals {
                lost: lost.clone(),
                job_cancel: job_cancel.clone(),
                abort: abort.clone(),
                done: done.clone(),
            },
        ));
        let (sink, mut rx) = tokio::sync::mpsc::unbounded_channel::<OpsEvent>();
        let forward = {
            let queue = self.queue.clone();
            let job = job.clone();
            tokio::spawn(
                async move {
                    while let Some(e) = rx.recv().await {
                        let Some(message) = progress_message(&e) else {
                            continue;
                        };
                        if let Err(err) = queue.record_event(&job, "progress", &message).await {
                            tracing::warn!(error = %err, "cannot record a progress event");
                        }
                    }
                }
                .in_current_span(),
            )
        };
        let outcome = self.work(job, &sink, &job_cancel, &abort).await;
        done.cancel();
        let _ = heartbeat.await;
        drop(sink);
        let _ = forward.await;
        let Some(outcome) = outcome else {
            tracing::info!(
                "job abandoned (shutdown or lease lost); it is taken again after its lease"
            );
            return;
        };
        if lost.load(Ordering::SeqCst) {
            tracing::warn!("the job's lease was lost while it ran; another worker finishes it");
            return;
        }
        match self.queue.finish(job, outcome.clone()).await {
            Ok(()) => {
                match &outcome {
                    JobOutcome::Failed { step, error } => {
                        tracing::warn!(step = step.as_str(), %error, "job failed");
                    }
                    _ => tracing::info!(took = ?started.elapsed(), "job done"),
                }
                self.observer
                    .job_finished(job.kind, &outcome, started.elapsed());
            }
            Err(e) => tracing::warn!(error = %e, "cannot record the end of the job"),
        }
    }

    /// The job's steps; `None` when it was abandoned (cancelled or its lease lost).
    async fn work(
        &self,
        job: &Job,
        sink: &crate::ops::EventSink,
        cancel: &CancellationToken,
        abort: &CancellationToken,
    ) -> Option<JobOutcome> {
        let env = match self.queue.get(job.environment_id).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the job's environment");
                return None;
            }
        };
        let state_url = match &self.settings.state_url {
            Some(url) => url.clone(),
            None => self
                .settings
                .data_dir
                .join("state")
                .join(format!("{}.json", env.name))
                .display()
                .to_string(),
        };
        let ejob = EnvironmentJob {
            id: env.id.to_string(),
            document: env.document.clone(),
            state_url,
            parallelism: self.settings.parallelism.max(1),
            lock_timeout: LOCK_TIMEOUT,
            abort: abort.clone(),
        };
        let failed = |step: Status, e: OpsError| match e {
            OpsError::Cancelled => None,
            e => Some(JobOutcome::Failed {
                step,
                error: e.to_string(),
            }),
        };
        if job.kind == JobKind::Destroy {
            return match environments::destroy(&ejob, sink, cancel).await {
                Ok(_) => Some(JobOutcome::Destroyed),
                Err(e) => failed(Status::Destroying, e),
            };
        }
        let provisioned = match environments::provision(&ejob, sink, cancel).await {
            Ok(p) => p,
            Err(e) => return failed(Status::Provisioning, e),
        };
        if cancel.is_cancelled() {
            return None;
        }
        if let Some(k) = &provisioned.kubeconfig {
            if let Err(e) = self
                .queue
                .set_sensitive_output(job, KUBECONFIG_OUTPUT, k)
                .await
            {
                tracing::warn!(error = %e, "cannot store the kubeconfig");
                return None;
            }
        }
        if let Err(e) = self.queue.set_status(job, Status::Bootstrapping).await {
            tracing::warn!(error = %e, "cannot move the environment to bootstrapping");
            return None;
        }
        if let Some(hook) = &self.settings.bootstrap_hook {
            let Some(kubeconfig) = provisioned.kubeconfig.clone() else {
                return Some(JobOutcome::Failed {
                    step: Status::Bootstrapping,
                    error: format!(
                        "the bootstrap hook `{hook}` needs the EKS cluster's kubeconfig, but workspace `{}` records no cluster with an endpoint and a CA; check the apply's events",
                        provisioned.workspace
                    ),
                });
            };
            let _ = sink.send(OpsEvent::Info(format!(
                "running the bootstrap hook `{hook}`"
            )));
            let req = BootstrapRequest {
                hook: hook.clone(),
                kubeconfig,
                environment_id: env.id.to_string(),
                environment_name: env.name.clone(),
                outputs: provisioned.outputs.clone(),
            };
            if let Err(e) = environments::bootstrap(&req, cancel).await {
                return failed(Status::Bootstrapping, e);
            }
            let _ = sink.send(OpsEvent::Info("the bootstrap hook succeeded".into()));
        } else {
            let _ = sink.send(OpsEvent::Info(
                "no bootstrap hook configured (--bootstrap-hook): charts installation skipped"
                    .into(),
            ));
        }
        let c = provisioned.changes;
        Some(JobOutcome::Ready {
            outputs: provisioned.outputs,
            last_plan: Some(PlanSummary {
                add: c.add,
                change: c.change,
                destroy: c.destroy,
            }),
        })
    }
}

struct HeartbeatSignals {
    lost: Arc<AtomicBool>,
    job_cancel: CancellationToken,
    abort: CancellationToken,
    /// The job ended: stop renewing.
    done: CancellationToken,
}

/// Renews the job's lease every `every` until `done`; when the queue says the job is
/// no longer ours, flags it lost and stops the work at once.
async fn heartbeat(
    queue: Arc<dyn JobQueue>,
    job: Job,
    lease: Duration,
    every: Duration,
    s: HeartbeatSignals,
) {
    loop {
        tokio::select! {
            () = s.done.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match queue.heartbeat(&job, lease).await {
            Ok(true) => {}
            Ok(false) => {
                s.lost.store(true, Ordering::SeqCst);
                s.job_cancel.cancel();
                s.abort.cancel();
                return;
            }
            // A database blip: the next beat may get through before the lease ends;
            // if not, that beat says so.
            Err(e) => tracing::warn!(error = %e, "cannot renew the job's lease"),
        }
    }
}

/// The event line an ops event becomes (`None`: not worth recording).
fn progress_message(e: &OpsEvent) -> Option<String> {
    Some(match e {
        OpsEvent::ApplyStarting { total } => format!("applying {total} change(s)"),
        OpsEvent::Apply(ApplyEvent::Started { address, op }) => {
            format!("{address}: {} started", op.verb())
        }
        OpsEvent::Apply(ApplyEvent::Progress { address, message }) => {
            format!("{address}: {message}")
        }
        OpsEvent::Apply(ApplyEvent::Finished {
            address,
            op,
            elapsed,
            ..
        }) => format!(
            "{address}: {} done in {:.1}s",
            op.verb(),
            elapsed.as_secs_f64()
        ),
        OpsEvent::Apply(ApplyEvent::Failed { address, op, error }) => {
            format!("{address}: {} failed: {error}", op.verb())
        }
        OpsEvent::Apply(ApplyEvent::Skipped {
            address,
            op,
            because,
        }) => format!("{address}: {} skipped: {because}", op.verb()),
        OpsEvent::LockWait { state, timeout } => {
            format!(
                "waiting up to {}s for the state lock on {state}",
                timeout.as_secs()
            )
        }
        OpsEvent::Info(m) => m.clone(),
        OpsEvent::Warning(m) => format!("warning: {m}"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::queue::file::FileQueue;
    use crate::server::queue::NewEnvironment;

    /// A document that fails to load (no `apiVersion`): the worker records `failed`
    /// at `provisioning` with the located error, and the observer hears of it.
    #[tokio::test]
    async fn a_document_that_does_not_load_fails_the_job_at_provisioning() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let queue: Arc<dyn JobQueue> = Arc::new(FileQueue::open(&dir.join("queue")).await.unwrap());
        let env = queue
            .submit(NewEnvironment {
                name: "x".into(),
                user_id: "u".into(),
                document: serde_json::json!({"kind": "Environment"}),
                idempotency_key: None,
            })
            .await
            .unwrap()
            .environment;
        struct Count(std::sync::Mutex<Vec<String>>);
        impl Observer for Count {
            fn job_finished(&self, kind: JobKind, outcome: &JobOutcome, _: Duration) {
                self.0.lock().unwrap().push(format!("{kind:?} {outcome:?}"));
            }
        }
        let seen = Arc::new(Count(std::sync::Mutex::new(Vec::new())));
        let cancel = CancellationToken::new();
        let handles = spawn(
            queue.clone(),
            Settings {
                id_prefix: "t".into(),
                state_url: None,
                data_dir: dir.clone(),
                lease: Duration::from_secs(5),
                heartbeat: Duration::from_secs(1),
                bootstrap_hook: None,
                parallelism: 2,
            },
            2,
            seen.clone(),
            cancel.clone(),
        );
        let mut status = Status::Queued;
        for _ in 0..200 {
            status = queue.get(env.id).await.unwrap().status;
            if status == Status::Failed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        for h in handles {
            h.await.unwrap();
        }
        let got = queue.get(env.id).await.unwrap();
        assert_eq!(status, Status::Failed, "{got:?}");
        assert_eq!(got.failed_step, Some(Status::Provisioning));
        let error = got.error.unwrap();
        assert!(
            error.contains(&format!("environments/{}.yaml", env.id))
                && error.contains("apiVersion"),
            "{error}"
        );
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].starts_with("Provision Failed"), "{seen:?}");
        let events = queue.events(env.id, 0).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(kinds.first(), Some(&"queued"), "{kinds:?}");
        assert!(
            kinds.iter().any(|k| k.starts_with("provisioning")),
            "{kinds:?}"
        );
        assert_eq!(
            kinds.last(),
            Some(&"failed (while provisioning)"),
            "{kinds:?}"
        );
    }

    #[test]
    fn apply_events_become_one_line_each() {
        let e = OpsEvent::Apply(ApplyEvent::Failed {
            address: "aws_vpc.a".into(),
            op: crate::ops::Op::Create,
            error: "boom".into(),
        });
        assert_eq!(
            progress_message(&e).unwrap(),
            "aws_vpc.a: create failed: boom"
        );
        assert!(progress_message(&OpsEvent::SkippedFiles(Vec::new())).is_none());
    }
}
