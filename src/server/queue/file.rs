//! The embedded job queue: [`JobQueue`] over files under one directory, for an
//! `anvil serve` without a database (one process).
//!
//! - `queue.json` holds the environments and jobs; every change rewrites it atomically
//!   (temporary sibling, fsync, rename, fsync of the directory), so a killed server
//!   leaves the old or the new version, never a mix. Mode 0600: it holds the sensitive
//!   outputs (kubeconfigs).
//! - `events/<environment id>.jsonl` are the progress events, appended one JSON line at
//!   a time; a torn last line (a kill mid-append) is ignored when read back.
//! - `lock` is `flock`ed for the queue's lifetime, so a second server on the same data
//!   directory is refused instead of corrupting it.
//!
//! Leases are kept in memory only: after a restart every job that was running has an
//! expired lease and is taken again (attempt + 1) by the first idle worker. Workers in
//! this process are woken by a [`Notify`] when a job is queued.

use super::rules::{
    decode_cursor, destroy_refusal, document_digest, encode_cursor, refresh_refusal, taken_message,
};
use super::{
    Environment, Job, JobEvent, JobKind, JobOutcome, JobQueue, ListQuery, NewEnvironment, Page,
    QueueError, QueueStats, Status, Submitted,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

/// The format version of `queue.json`.
const VERSION: u32 = 1;

/// The job queue of embedded mode; see the module docs.
pub struct FileQueue {
    dir: PathBuf,
    inner: Mutex<Inner>,
    notify: Notify,
    /// Held (flocked) while the queue is open.
    _lock: File,
}

impl std::fmt::Debug for FileQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileQueue")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    doc: Doc,
    events: HashMap<Uuid, Vec<JobEvent>>,
    /// Worker → until when it counts as alive.
    workers: HashMap<String, DateTime<Utc>>,
}

/// `queue.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Doc {
    version: u32,
    /// The insertion number of the next environment (list order and cursors).
    next_seq: i64,
    environments: Vec<EnvRecord>,
    /// Every job, in the order queued (done ones are kept as history).
    jobs: Vec<JobRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EnvRecord {
    seq: i64,
    env: Environment,
    idempotency_key: Option<String>,
    digest: String,
    #[serde(default)]
    sensitive: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum JobState {
    Queued,
    Running,
    Done,
    /// A queued provision job replaced by a destroy before any worker took it.
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    id: Uuid,
    environment_id: Uuid,
    kind: JobKind,
    state: JobState,
    attempt: u32,
    worker: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    /// In memory only: after a restart every running job's lease is over.
    #[serde(skip)]
    lease_until: Option<DateTime<Utc>>,
}

impl JobRecord {
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.state == JobState::Running && self.lease_until.is_some_and(|t| t > now)
    }

    fn takeable(&self, now: DateTime<Utc>) -> bool {
        self.state == JobState::Queued || (self.state == JobState::Running && !self.live(now))
    }

    fn held_by(&self, job: &Job) -> bool {
        self.state == JobState::Running
            && self.attempt == job.attempt
            && self.worker.as_deref() == Some(job.worker.as_str())
    }
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

impl Doc {
    fn env(&self, id: Uuid) -> Result<&EnvRecord, QueueError> {
        self.environments
            .iter()
            .find(|e| e.env.id == id)
            .ok_or(QueueError::NotFound { id })
    }

    fn env_mut(&mut self, id: Uuid) -> Result<&mut EnvRecord, QueueError> {
        self.environments
            .iter_mut()
            .find(|e| e.env.id == id)
            .ok_or(QueueError::NotFound { id })
    }

    fn job_mut(&mut self, id: Uuid) -> Option<&mut JobRecord> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    fn new_job(&mut self, environment_id: Uuid, kind: JobKind, now: DateTime<Utc>) {
        self.jobs.push(JobRecord {
            id: Uuid::new_v4(),
            environment_id,
            kind,
            state: JobState::Queued,
            attempt: 0,
            worker: None,
            created_at: now,
            finished_at: None,
            lease_until: None,
        });
    }
}

impl FileQueue {
    /// Opens (creating) the queue in `dir`.
    ///
    /// # Errors
    /// [`QueueError::Storage`] when the directory cannot be created or read, `queue.json`
    /// does not parse, or another process holds the queue.
    pub async fn open(dir: &Path) -> Result<FileQueue, QueueError> {
        let dir = dir.to_path_buf();
        let d = dir.clone();
        let (lock, doc, events) = tokio::task::spawn_blocking(move || open_blocking(&d))
            .await
            .map_err(|e| storage(&dir, format!("the reader task failed: {e}")))??;
        Ok(FileQueue {
            dir,
            inner: Mutex::new(Inner {
                doc,
                events,
                workers: HashMap::new(),
            }),
            notify: Notify::new(),
            _lock: lock,
        })
    }

    /// Writes `doc` as the new `queue.json` and, when it was written, makes it the
    /// queue's: memory never holds what the disk does not.
    async fn commit(&self, inner: &mut Inner, doc: Doc) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec(&doc)
            .map_err(|e| storage(&self.dir, format!("cannot encode the queue: {e}")))?;
        let path = self.dir.join("queue.json");
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || atomic_write(&path, &bytes))
            .await
            .map_err(|e| storage(&dir, format!("the writer task failed: {e}")))?
            .map_err(|e| storage(&self.dir, format!("cannot write queue.json: {e}")))?;
        inner.doc = doc;
        Ok(())
    }

    /// Appends an event to the environment's events file, then to memory.
    async fn push_event(
        &self,
        inner: &mut Inner,
        id: Uuid,
        kind: &str,
        message: &str,
    ) -> Result<(), QueueError> {
        let events = inner.events.entry(id).or_default();
        let event = JobEvent {
            seq: events.last().map_or(1, |e| e.seq + 1),
            at: Utc::now(),
            kind: kind.to_string(),
            message: message.to_string(),
        };
        let mut line = serde_json::to_vec(&event)
            .map_err(|e| storage(&self.dir, format!("cannot encode an event: {e}")))?;
        line.push(b'\n');
        let path = self.dir.join("events").join(format!("{id}.jsonl"));
        let shown = path.clone();
        tokio::task::spawn_blocking(move || append(&path, &line))
            .await
            .map_err(|e| storage(&self.dir, format!("the writer task failed: {e}")))?
            .map_err(|e| storage(&shown, format!("cannot append an event: {e}")))?;
        events.push(event);
        Ok(())
    }

    fn owned_job(doc: &Doc, job: &Job) -> Result<(), QueueError> {
        let held = doc
            .jobs
            .iter()
            .find(|j| j.id == job.id)
            .is_some_and(|j| j.held_by(job));
        if held {
            return Ok(());
        }
        let status = doc.env(job.environment_id)?.env.status;
        Err(QueueError::Conflict {
            id: job.environment_id,
            status: status.as_str(),
            what: format!(
                "job {} (attempt {}) is no longer held by worker {}: its lease ran out and it was taken again",
                job.id, job.attempt, job.worker
            ),
        })
    }
}

fn storage(location: &Path, message: String) -> QueueError {
    QueueError::Storage {
        location: location.display().to_string(),
        message,
    }
}

type Opened = (File, Doc, HashMap<Uuid, Vec<JobEvent>>);

fn open_blocking(dir: &Path) -> Result<Opened, QueueError> {
    std::fs::create_dir_all(dir.join("events")).map_err(|e| {
        storage(
            dir,
            format!("cannot create the queue directory ({e}); pick a writable --data-dir"),
        )
    })?;
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| storage(&lock_path, format!("cannot open the queue lock: {e}")))?;
    if lock.try_lock().is_err() {
        return Err(storage(
            dir,
            "another `anvil serve` uses this queue; stop it, or give this one another --data-dir (or a shared --database)".into(),
        ));
    }
    let path = dir.join("queue.json");
    let doc = match std::fs::read(&path) {
        Ok(bytes) => {
            let doc: Doc = serde_json::from_slice(&bytes).map_err(|e| {
                storage(
                    &path,
                    format!("does not parse ({e}); restore it from a backup or move the data directory away"),
                )
            })?;
            if doc.version != VERSION {
                return Err(storage(
                    &path,
                    format!(
                        "format version {} is not {VERSION}, the one this anvil reads; use the anvil that wrote it",
                        doc.version
                    ),
                ));
            }
            doc
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Doc {
            version: VERSION,
            next_seq: 1,
            ..Doc::default()
        },
        Err(e) => return Err(storage(&path, format!("cannot read: {e}"))),
    };
    let mut events = HashMap::new();
    for rec in &doc.environments {
        let p = dir.join("events").join(format!("{}.jsonl", rec.env.id));
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(storage(&p, format!("cannot read: {e}"))),
        };
        // A line that does not parse is the torn tail of a killed append: the events
        // before it stand.
        let list: Vec<JobEvent> = text
            .lines()
            .map_while(|l| serde_json::from_str(l).ok())
            .collect();
        events.insert(rec.env.id, list);
    }
    Ok((lock, doc, events))
}

/// Replaces `path` with `bytes` so a reader sees the old or the new content.
fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn append(path: &Path, line: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(line)
}

#[async_trait]
impl JobQueue for FileQueue {
    async fn submit(&self, new: NewEnvironment) -> Result<Submitted, QueueError> {
        let mut inner = self.inner.lock().await;
        let digest = document_digest(&new.user_id, &new.document);
        if let Some(key) = &new.idempotency_key {
            let earlier = inner.doc.environments.iter().find(|e| {
                e.idempotency_key.as_deref() == Some(key.as_str()) && e.env.user_id == new.user_id
            });
            if let Some(e) = earlier {
                if e.digest != digest {
                    return Err(QueueError::IdempotencyMismatch { key: key.clone() });
                }
                return Ok(Submitted {
                    environment: e.env.clone(),
                    created: false,
                });
            }
        }
        if let Some(e) = inner
            .doc
            .environments
            .iter()
            .find(|e| e.env.name == new.name && e.env.status != Status::Destroyed)
        {
            return Err(QueueError::NameTaken {
                name: new.name,
                id: e.env.id,
                status: e.env.status.as_str(),
            });
        }
        let now = Utc::now();
        let env = Environment {
            id: Uuid::new_v4(),
            name: new.name,
            user_id: new.user_id,
            status: Status::Queued,
            failed_step: None,
            error: None,
            document: new.document,
            outputs: BTreeMap::new(),
            last_plan: None,
            created_at: now,
            updated_at: now,
        };
        let mut doc = inner.doc.clone();
        doc.environments.push(EnvRecord {
            seq: doc.next_seq,
            env: env.clone(),
            idempotency_key: new.idempotency_key,
            digest,
            sensitive: BTreeMap::new(),
        });
        doc.next_seq += 1;
        doc.new_job(env.id, JobKind::Provision, now);
        self.commit(&mut inner, doc).await?;
        self.push_event(&mut inner, env.id, "status", "queued")
            .await?;
        drop(inner);
        self.wake();
        Ok(Submitted {
            environment: env,
            created: true,
        })
    }

    async fn get(&self, id: Uuid) -> Result<Environment, QueueError> {
        let inner = self.inner.lock().await;
        Ok(inner.doc.env(id)?.env.clone())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, QueueError> {
        let after = match &query.cursor {
            Some(c) => decode_cursor(c)?,
            None => 0,
        };
        let limit = query.limit.max(1);
        let inner = self.inner.lock().await;
        let mut matching = inner
            .doc
            .environments
            .iter()
            .filter(|e| e.seq > after && query.status.is_none_or(|s| s == e.env.status));
        let page: Vec<&EnvRecord> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        Ok(Page {
            next: match (more, page.last()) {
                (true, Some(last)) => Some(encode_cursor(last.seq)),
                _ => None,
            },
            items: page.into_iter().map(|e| e.env.clone()).collect(),
        })
    }

    async fn request_destroy(&self, id: Uuid) -> Result<Environment, QueueError> {
        let mut inner = self.inner.lock().await;
        let status = inner.doc.env(id)?.env.status;
        if let Some(e) = destroy_refusal(id, status) {
            return Err(e);
        }
        let now = Utc::now();
        let mut doc = inner.doc.clone();
        // A provision job no worker took yet is simply replaced.
        for j in doc.jobs.iter_mut() {
            if j.environment_id == id && j.state == JobState::Queued {
                j.state = JobState::Cancelled;
                j.finished_at = Some(now);
            }
        }
        doc.new_job(id, JobKind::Destroy, now);
        let rec = doc.env_mut(id)?;
        rec.env.status = Status::DestroyQueued;
        rec.env.updated_at = now;
        let env = rec.env.clone();
        self.commit(&mut inner, doc).await?;
        self.push_event(&mut inner, id, "status", Status::DestroyQueued.as_str())
            .await?;
        drop(inner);
        self.wake();
        Ok(env)
    }

    async fn request_refresh(&self, id: Uuid) -> Result<Environment, QueueError> {
        let mut inner = self.inner.lock().await;
        let status = inner.doc.env(id)?.env.status;
        if let Some(e) = refresh_refusal(id, status) {
            return Err(e);
        }
        let now = Utc::now();
        let mut doc = inner.doc.clone();
        doc.new_job(id, JobKind::Provision, now);
        let rec = doc.env_mut(id)?;
        rec.env.status = Status::Queued;
        rec.env.failed_step = None;
        rec.env.error = None;
        rec.env.updated_at = now;
        let env = rec.env.clone();
        self.commit(&mut inner, doc).await?;
        self.push_event(&mut inner, id, "status", "queued (refresh)")
            .await?;
        drop(inner);
        self.wake();
        Ok(env)
    }

    async fn events(&self, id: Uuid, after: u64) -> Result<Vec<JobEvent>, QueueError> {
        let inner = self.inner.lock().await;
        inner.doc.env(id)?;
        Ok(inner
            .events
            .get(&id)
            .map(|v| v.iter().filter(|e| e.seq > after).cloned().collect())
            .unwrap_or_default())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let inner = self.inner.lock().await;
        let now = Utc::now();
        Ok(QueueStats {
            queued: inner.doc.jobs.iter().filter(|j| j.takeable(now)).count(),
            running: inner.doc.jobs.iter().filter(|j| j.live(now)).count(),
            workers_alive: inner.workers.values().filter(|t| **t > now).count(),
        })
    }

    async fn take(&self, worker: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        let mut inner = self.inner.lock().await;
        let now = Utc::now();
        inner
            .workers
            .insert(worker.to_string(), lease_end(now, lease));
        let Some(pos) = inner.doc.jobs.iter().position(|j| j.takeable(now)) else {
            return Ok(None);
        };
        let mut doc = inner.doc.clone();
        let j = &mut doc.jobs[pos];
        j.state = JobState::Running;
        j.attempt += 1;
        j.worker = Some(worker.to_string());
        j.lease_until = Some(lease_end(now, lease));
        let job = Job {
            id: j.id,
            environment_id: j.environment_id,
            kind: j.kind,
            attempt: j.attempt,
            worker: worker.to_string(),
        };
        let status = match job.kind {
            JobKind::Provision => Status::Provisioning,
            JobKind::Destroy => Status::Destroying,
        };
        let rec = doc.env_mut(job.environment_id)?;
        rec.env.status = status;
        rec.env.updated_at = now;
        self.commit(&mut inner, doc).await?;
        self.push_event(
            &mut inner,
            job.environment_id,
            "status",
            &taken_message(status, worker, job.attempt),
        )
        .await?;
        Ok(Some(job))
    }

    async fn heartbeat(&self, job: &Job, lease: Duration) -> Result<bool, QueueError> {
        let mut inner = self.inner.lock().await;
        let now = Utc::now();
        inner
            .workers
            .insert(job.worker.clone(), lease_end(now, lease));
        // Lease renewals are not written: leases do not outlive the process.
        match inner.doc.job_mut(job.id) {
            Some(j) if j.held_by(job) => {
                j.lease_until = Some(lease_end(now, lease));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_status(&self, job: &Job, status: Status) -> Result<(), QueueError> {
        let mut inner = self.inner.lock().await;
        Self::owned_job(&inner.doc, job)?;
        let mut doc = inner.doc.clone();
        let rec = doc.env_mut(job.environment_id)?;
        rec.env.status = status;
        rec.env.updated_at = Utc::now();
        self.commit(&mut inner, doc).await?;
        self.push_event(&mut inner, job.environment_id, "status", status.as_str())
            .await
    }

    async fn record_event(&self, job: &Job, kind: &str, message: &str) -> Result<(), QueueError> {
        let mut inner = self.inner.lock().await;
        inner.doc.env(job.environment_id)?;
        self.push_event(&mut inner, job.environment_id, kind, message)
            .await
    }

    async fn finish(&self, job: &Job, outcome: JobOutcome) -> Result<(), QueueError> {
        let mut inner = self.inner.lock().await;
        Self::owned_job(&inner.doc, job)?;
        let now = Utc::now();
        let mut doc = inner.doc.clone();
        if let Some(j) = doc.job_mut(job.id) {
            j.state = JobState::Done;
            j.finished_at = Some(now);
            j.lease_until = None;
        }
        let rec = doc.env_mut(job.environment_id)?;
        let (status, error) = match outcome {
            JobOutcome::Ready { outputs, last_plan } => {
                rec.env.outputs = outputs;
                rec.env.last_plan = last_plan;
                rec.env.failed_step = None;
                rec.env.error = None;
                (Status::Ready, None)
            }
            JobOutcome::Destroyed => {
                rec.env.outputs.clear();
                rec.sensitive.clear();
                rec.env.failed_step = None;
                rec.env.error = None;
                (Status::Destroyed, None)
            }
            JobOutcome::Failed { step, error } => {
                rec.env.failed_step = Some(step);
                rec.env.error = Some(error.clone());
                (Status::Failed, Some((step, error)))
            }
        };
        rec.env.status = status;
        rec.env.updated_at = now;
        self.commit(&mut inner, doc).await?;
        if let Some((step, error)) = error {
            self.push_event(&mut inner, job.environment_id, "error", &error)
                .await?;
            self.push_event(
                &mut inner,
                job.environment_id,
                "status",
                &format!("failed (while {})", step.as_str()),
            )
            .await
        } else {
            self.push_event(&mut inner, job.environment_id, "status", status.as_str())
                .await
        }
    }

    async fn set_sensitive_output(
        &self,
        job: &Job,
        name: &str,
        value: &str,
    ) -> Result<(), QueueError> {
        let mut inner = self.inner.lock().await;
        Self::owned_job(&inner.doc, job)?;
        let mut doc = inner.doc.clone();
        doc.env_mut(job.environment_id)?
            .sensitive
            .insert(name.to_string(), value.to_string());
        self.commit(&mut inner, doc).await
    }

    async fn sensitive_output(&self, id: Uuid, name: &str) -> Result<Option<String>, QueueError> {
        let inner = self.inner.lock().await;
        Ok(inner.doc.env(id)?.sensitive.get(name).cloned())
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }
}

impl FileQueue {
    /// Wakes the idle workers of this process: a job was queued.
    fn wake(&self) {
        self.notify.notify_waiters();
        // A worker between `take` and `wait_for_work` is not waiting yet: leave it a
        // permit so it does not sleep through this job.
        self.notify.notify_one();
    }
}
