//! The embedded job queue: [`JobQueue`] over files under one directory, for an
//! `anvil serve` without a database (one process).
//!
//! - `queue.json` is a snapshot of the environments and jobs; `journal.jsonl` the
//!   changes since, one small record per change (the environments and jobs it touched,
//!   whole, so replaying a record twice changes nothing). A change is applied in memory,
//!   appended to the journal and `fdatasync`ed before its call returns; concurrent
//!   changes share one write and one sync (group commit: whoever finds a sync running
//!   waits for it, then the next one syncs everything appended meanwhile), so a POST
//!   costs an append, not a rewrite of the whole queue. Both files are mode 0600: they
//!   hold the sensitive outputs (kubeconfigs).
//! - Each record is `CRC32 JSON\n`; on load, replay stops at the first record that is
//!   torn (no newline, a bad checksum or JSON: a kill mid-append), and everything
//!   before it stands. Opening then compacts: the replayed queue becomes the new
//!   snapshot (temporary sibling, fsync, rename, fsync of the directory) and the journal
//!   is emptied, dropping the torn tail. A crash between the rename and the truncation
//!   leaves records the snapshot already holds, which replay again harmlessly.
//! - While serving, the journal is compacted once it outgrows the snapshot (and 1 MiB),
//!   without holding up the changes made meanwhile: under the locks, the journal is
//!   synced, the queue copied (its records are `Arc`s: a copy of pointers) and new
//!   records switched to `journal.next.jsonl` (created, and its directory entry synced,
//!   first); then, with the locks released, the copy is encoded and written as the
//!   snapshot and `journal.next.jsonl` renamed over `journal.jsonl`.
//!   Opening replays `journal.next.jsonl` after `journal.jsonl`, so every crash point
//!   reads back the same queue: old snapshot + both journals, new snapshot + both
//!   (the first replays what the snapshot holds), or new snapshot + the renamed one.
//! - A failed journal write leaves memory ahead of the disk, so the queue then refuses
//!   every call naming the journal: a restart reloads what was written.
//! - Reads (`get`, `list`, `events`) wait for the changes they could see to be synced,
//!   so nothing is shown that a crash could take back.
//! - `events/<environment id>.jsonl` are the progress events, appended one JSON line at
//!   a time; a torn last line (a kill mid-append) is ignored when read back. The first
//!   event, `queued` at submit, is not in the file (no file is created on the accept
//!   path): it is made again from the environment's record when the queue opens.
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
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

/// The format version of `queue.json`.
const VERSION: u32 = 1;

/// The journal is compacted into the snapshot once it is larger than the snapshot and
/// than this (so compaction costs O(1) per change, amortised).
const COMPACT_MIN_BYTES: u64 = 1 << 20;

const SNAPSHOT: &str = "queue.json";
const JOURNAL: &str = "journal.jsonl";
/// Where records go while a compaction writes the snapshot (then renamed to `JOURNAL`).
const NEXT_JOURNAL: &str = "journal.next.jsonl";

/// The job queue of embedded mode; see the module docs.
pub struct FileQueue {
    dir: PathBuf,
    inner: Mutex<Inner>,
    journal: Journal,
    notify: Notify,
    /// Held (flocked) while the queue is open, and by a compaction still finishing.
    lock: Arc<File>,
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

/// The journal's write side. Lock order: `writer`, then `inner`, then `pending`
/// (changes take `inner` then `pending`, never `writer` while holding `inner`).
struct Journal {
    path: PathBuf,
    /// Records appended in memory and not yet written, and how far the file is synced.
    pending: std::sync::Mutex<Pending>,
    /// Held by the one task writing and syncing: the group commit's leader.
    writer: Mutex<Writer>,
    /// Compaction threshold (a test lowers it).
    compact_min: u64,
    /// Shared with a compaction's second half, which runs with no lock held.
    compaction: Arc<Compaction>,
}

/// A compaction's second half: what [`FileQueue::compact`] leaves to do with no lock
/// held.
struct Finish {
    dir: PathBuf,
    /// The queue as `journal.jsonl` leaves it.
    doc: Doc,
    state: Arc<Compaction>,
    /// The queue's lock: another process opening the queue waits until this is done.
    _lock: Arc<File>,
}

impl Finish {
    /// Writes the snapshot, then renames the next journal over the journal (blocking).
    fn run(self) {
        use std::sync::atomic::Ordering;
        let started = std::time::Instant::now();
        let done = self.write_snapshot().and_then(|n| {
            std::fs::rename(self.dir.join(NEXT_JOURNAL), self.dir.join(JOURNAL))?;
            File::open(&self.dir)?.sync_all()?;
            Ok(n)
        });
        match done {
            Ok(n) => {
                self.state.snapshot_len.store(n, Ordering::Release);
                self.state.running.store(false, Ordering::Release);
                tracing::debug!(took = ?started.elapsed(), bytes = n, "queue compaction: snapshot written, journal renamed");
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot compact the queue journal; it keeps growing until a restart")
            }
        }
    }

    /// Encodes and writes the snapshot; returns its length.
    fn write_snapshot(&self) -> std::io::Result<u64> {
        let bytes = serde_json::to_vec(&self.doc)?;
        atomic_write(&self.dir.join(SNAPSHOT), &bytes)?;
        Ok(bytes.len() as u64)
    }
}

/// A compaction's state.
struct Compaction {
    /// A compaction is writing the snapshot; no other starts until it is done. Stays
    /// set when one failed: the journal then grows until a restart folds it in.
    running: std::sync::atomic::AtomicBool,
    /// The snapshot's length when last written (the threshold to outgrow).
    snapshot_len: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The number of the last record appended to `bytes` (records count from 1).
    appended: u64,
    /// The number of the last record synced to the file.
    durable: u64,
    /// Why a journal write failed: the queue is unusable from then on.
    failed: Option<String>,
}

struct Writer {
    file: Arc<File>,
    /// The journal file's length.
    len: u64,
    /// Syncs of the journal so far (group commit makes it fewer than the changes).
    syncs: u64,
}

/// `queue.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Doc {
    version: u32,
    /// The insertion number of the next environment (list order and cursors).
    next_seq: i64,
    /// Shared (`Arc`) so a compaction's copy of the queue costs no deep clone; a change
    /// copies the one record it changes if a compaction still holds it.
    environments: Vec<Arc<EnvRecord>>,
    /// Every job, in the order queued (done ones are kept as history).
    jobs: Vec<Arc<JobRecord>>,
}

/// One journal record: the environments and jobs a change touched, as they are after it.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    next_seq: i64,
    #[serde(default)]
    envs: Vec<Arc<EnvRecord>>,
    #[serde(default)]
    jobs: Vec<Arc<JobRecord>>,
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
    fn env(&self, id: Uuid) -> Result<&Arc<EnvRecord>, QueueError> {
        self.environments
            .iter()
            .find(|e| e.env.id == id)
            .ok_or(QueueError::NotFound { id })
    }

    fn env_mut(&mut self, id: Uuid) -> Result<&mut EnvRecord, QueueError> {
        self.environments
            .iter_mut()
            .find(|e| e.env.id == id)
            .map(Arc::make_mut)
            .ok_or(QueueError::NotFound { id })
    }

    fn job(&self, id: Uuid) -> Option<&Arc<JobRecord>> {
        self.jobs.iter().find(|j| j.id == id)
    }

    fn job_mut(&mut self, id: Uuid) -> Option<&mut JobRecord> {
        self.jobs.iter_mut().find(|j| j.id == id).map(Arc::make_mut)
    }

    fn new_job(&mut self, environment_id: Uuid, kind: JobKind, now: DateTime<Utc>) -> Uuid {
        let id = Uuid::new_v4();
        self.jobs.push(Arc::new(JobRecord {
            id,
            environment_id,
            kind,
            state: JobState::Queued,
            attempt: 0,
            worker: None,
            created_at: now,
            finished_at: None,
            lease_until: None,
        }));
        id
    }

    /// Applies a journal record: each environment and job it holds replaces the one
    /// with its id, or is added.
    fn apply(
        &mut self,
        rec: Record,
        envs: &mut HashMap<Uuid, usize>,
        jobs: &mut HashMap<Uuid, usize>,
    ) {
        self.next_seq = self.next_seq.max(rec.next_seq);
        for e in rec.envs {
            match envs.get(&e.env.id) {
                Some(&i) => self.environments[i] = e,
                None => {
                    envs.insert(e.env.id, self.environments.len());
                    self.environments.push(e);
                }
            }
        }
        for j in rec.jobs {
            match jobs.get(&j.id) {
                Some(&i) => self.jobs[i] = j,
                None => {
                    jobs.insert(j.id, self.jobs.len());
                    self.jobs.push(j);
                }
            }
        }
    }
}

/// `CRC32 JSON\n` of a record.
fn encode_record(rec: &Record) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(rec)?;
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// The records of a journal, up to the first torn one; and whether one was torn.
fn decode_journal(bytes: &[u8]) -> (Vec<Record>, bool) {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            return (records, true);
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let Some(rec) = decode_line(line) else {
            return (records, true);
        };
        records.push(rec);
    }
    (records, false)
}

fn decode_line(line: &[u8]) -> Option<Record> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc != crc32fast::hash(json) {
        return None;
    }
    serde_json::from_slice(json).ok()
}

impl FileQueue {
    /// Opens (creating) the queue in `dir`: loads the snapshot, replays the journal and
    /// compacts the two into a new snapshot.
    ///
    /// # Errors
    /// [`QueueError::Storage`] when the directory cannot be created or read, `queue.json`
    /// does not parse, or another process holds the queue.
    pub async fn open(dir: &Path) -> Result<FileQueue, QueueError> {
        FileQueue::open_with(dir, COMPACT_MIN_BYTES).await
    }

    async fn open_with(dir: &Path, compact_min: u64) -> Result<FileQueue, QueueError> {
        let dir = dir.to_path_buf();
        let d = dir.clone();
        let opened = tokio::task::spawn_blocking(move || open_blocking(&d))
            .await
            .map_err(|e| storage(&dir, format!("the reader task failed: {e}")))??;
        Ok(FileQueue {
            journal: Journal {
                path: dir.join(JOURNAL),
                pending: std::sync::Mutex::new(Pending::default()),
                writer: Mutex::new(Writer {
                    file: Arc::new(opened.journal),
                    len: 0,
                    syncs: 0,
                }),
                compact_min,
                compaction: Arc::new(Compaction {
                    running: false.into(),
                    snapshot_len: opened.snapshot_len.into(),
                }),
            },
            dir,
            inner: Mutex::new(Inner {
                doc: opened.doc,
                events: opened.events,
                workers: HashMap::new(),
            }),
            notify: Notify::new(),
            lock: Arc::new(opened.lock),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding it cannot leave `Pending` half-changed (every change
        // is one assignment), so a poisoned lock is still good.
        self.journal
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The error every call returns once a journal write failed.
    fn broken(&self) -> Result<(), QueueError> {
        match &self.pending().failed {
            Some(why) => Err(self.failed_error(why)),
            None => Ok(()),
        }
    }

    fn failed_error(&self, why: &str) -> QueueError {
        storage(
            &self.journal.path,
            format!("a write failed ({why}), so this server no longer trusts its queue in memory; restart anvil serve (it reloads what was written) after fixing the disk"),
        )
    }

    /// Appends the record of a change to the journal's pending bytes (call it holding
    /// `inner`, right after the change, so the journal's order is the changes' order)
    /// and returns its number, for [`FileQueue::settle`].
    fn log(&self, doc: &Doc, envs: &[Uuid], jobs: &[Uuid]) -> Result<u64, QueueError> {
        let rec = Record {
            next_seq: doc.next_seq,
            envs: envs
                .iter()
                .filter_map(|id| doc.env(*id).ok().cloned())
                .collect(),
            jobs: jobs.iter().filter_map(|id| doc.job(*id).cloned()).collect(),
        };
        let mut p = self.pending();
        let line = match encode_record(&rec) {
            Ok(l) => l,
            Err(e) => {
                // Memory already holds the change: the queue cannot go on.
                let why = format!("cannot encode a record: {e}");
                p.failed = Some(why.clone());
                return Err(self.failed_error(&why));
            }
        };
        p.bytes.extend_from_slice(&line);
        p.appended += 1;
        Ok(p.appended)
    }

    /// Waits until record `seq` is synced: syncs everything pending itself unless
    /// another task is already doing so, in which case it waits for that one and
    /// checks again (group commit).
    async fn settle(&self, seq: u64) -> Result<(), QueueError> {
        loop {
            {
                let p = self.pending();
                if let Some(why) = &p.failed {
                    return Err(self.failed_error(why));
                }
                if p.durable >= seq {
                    return Ok(());
                }
            }
            let mut w = self.journal.writer.lock().await;
            let (bytes, upto) = {
                let mut p = self.pending();
                if let Some(why) = &p.failed {
                    return Err(self.failed_error(why));
                }
                if p.durable >= seq {
                    return Ok(());
                }
                (std::mem::take(&mut p.bytes), p.appended)
            };
            self.write_synced(&mut w, bytes, upto).await?;
            if self.outgrown(&w) {
                // The snapshot is written with no lock held; this call waits for it
                // (so a test that reopens the queue finds it done), the others do not.
                if let Some(rest) = self.compact(&mut w).await {
                    drop(w);
                    if let Err(e) = tokio::task::spawn_blocking(move || rest.run()).await {
                        tracing::warn!(error = %e, "the compaction task failed");
                    }
                }
            }
        }
    }

    /// Whether the journal outgrew the snapshot (and the minimum) and no compaction runs.
    fn outgrown(&self, w: &Writer) -> bool {
        use std::sync::atomic::Ordering;
        let c = &self.journal.compaction;
        w.len
            > self
                .journal
                .compact_min
                .max(c.snapshot_len.load(Ordering::Acquire))
            && !c.running.load(Ordering::Acquire)
    }

    /// Appends `bytes` (records up to `upto`) to the journal and syncs it; on failure
    /// the queue is marked failed.
    async fn write_synced(
        &self,
        w: &mut Writer,
        bytes: Vec<u8>,
        upto: u64,
    ) -> Result<(), QueueError> {
        let file = w.file.clone();
        let n = bytes.len() as u64;
        let res = tokio::task::spawn_blocking(move || {
            (&*file).write_all(&bytes)?;
            file.sync_data()
        })
        .await;
        let why = match res {
            Ok(Ok(())) => {
                w.len += n;
                w.syncs += 1;
                let mut p = self.pending();
                p.durable = p.durable.max(upto);
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the writer task failed: {e}"),
        };
        let mut p = self.pending();
        p.failed = Some(why.clone());
        drop(p);
        Err(self.failed_error(&why))
    }

    /// Compacts the journal into the snapshot (see the module docs). The first half
    /// runs here, holding the writer (`w`) throughout and `inner` from the last sync of
    /// the journal to the switch of new records to `journal.next.jsonl`; the second
    /// half, returned, writes the snapshot and renames the next journal over the
    /// journal with no lock held. A failure is only logged: the journals still hold
    /// everything, and compaction stops until a restart folds them in.
    async fn compact(&self, w: &mut Writer) -> Option<Finish> {
        use std::sync::atomic::Ordering;
        let state = self.journal.compaction.clone();
        let stop = |why: String| {
            tracing::warn!(dir = %self.dir.display(), "cannot compact the queue journal ({why}); it keeps growing until a restart");
            state.running.store(true, Ordering::Release);
        };
        // The next journal and its directory entry are on disk before a record goes
        // to it (a synced record in a file a crash unlinks would be lost).
        let dir = self.dir.clone();
        let next = match tokio::task::spawn_blocking(move || {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .append(true)
                .mode(0o600)
                .open(dir.join(NEXT_JOURNAL))?;
            // Opening folded any earlier one in and removed it; a failed compaction
            // stops the next, so this is new and empty.
            f.set_len(0)?;
            File::open(&dir)?.sync_all()?;
            Ok::<_, std::io::Error>(f)
        })
        .await
        {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                stop(format!("{}: {e}", self.dir.join(NEXT_JOURNAL).display()));
                return None;
            }
            Err(e) => {
                stop(format!("the task failed: {e}"));
                return None;
            }
        };
        let inner = self.inner.lock().await;
        let locked = std::time::Instant::now();
        let (bytes, upto) = {
            let mut p = self.pending();
            (std::mem::take(&mut p.bytes), p.appended)
        };
        if !bytes.is_empty() && self.write_synced(w, bytes, upto).await.is_err() {
            return None;
        }
        // The snapshot holds exactly what `journal.jsonl` does (a copy of the record
        // pointers, encoded later); later records go to the next journal.
        let doc = inner.doc.clone();
        w.file = Arc::new(next);
        w.len = 0;
        state.running.store(true, Ordering::Release);
        drop(inner);
        tracing::debug!(held = ?locked.elapsed(), "queue compaction: new records go to the next journal");
        Some(Finish {
            dir: self.dir.clone(),
            doc,
            state,
            _lock: self.lock.clone(),
        })
    }

    /// Waits for every change made so far to be synced (before a read shows it).
    async fn settle_all(&self) -> Result<(), QueueError> {
        let seq = self.pending().appended;
        self.settle(seq).await
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
        if doc.job(job.id).is_some_and(|j| j.held_by(job)) {
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

struct Opened {
    lock: File,
    doc: Doc,
    events: HashMap<Uuid, Vec<JobEvent>>,
    /// The journal, empty and open for appending.
    journal: File,
    snapshot_len: u64,
}

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
    let path = dir.join(SNAPSHOT);
    let (mut doc, mut snapshot_len) = match std::fs::read(&path) {
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
            (doc, bytes.len() as u64)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            Doc {
                version: VERSION,
                next_seq: 1,
                ..Doc::default()
            },
            0,
        ),
        Err(e) => return Err(storage(&path, format!("cannot read: {e}"))),
    };
    let journal_path = dir.join(JOURNAL);
    let journal = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(&journal_path)
        .map_err(|e| storage(&journal_path, format!("cannot open: {e}")))?;
    let bytes = std::fs::read(&journal_path)
        .map_err(|e| storage(&journal_path, format!("cannot read: {e}")))?;
    // A compaction that did not finish left the records after its switch here.
    let next_path = dir.join(NEXT_JOURNAL);
    let next = match std::fs::read(&next_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(storage(&next_path, format!("cannot read: {e}"))),
    };
    if !bytes.is_empty() || next.is_some() {
        let mut records = Vec::new();
        for (path, bytes) in [(&journal_path, Some(&bytes)), (&next_path, next.as_ref())] {
            let Some(bytes) = bytes else { continue };
            let (recs, torn) = decode_journal(bytes);
            if torn {
                // The tail a kill cut short (its call never returned): dropped below.
                tracing::warn!(
                    journal = %path.display(),
                    replayed = recs.len(),
                    "the queue journal ends in a torn record (a kill mid-write); it is ignored"
                );
            }
            records.extend(recs);
        }
        let mut envs = doc
            .environments
            .iter()
            .enumerate()
            .map(|(i, e)| (e.env.id, i))
            .collect();
        let mut jobs = doc
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.id, i))
            .collect();
        for rec in records {
            doc.apply(rec, &mut envs, &mut jobs);
        }
        // Compact: the snapshot takes everything, then the journal starts empty.
        let snapshot = serde_json::to_vec(&doc)
            .map_err(|e| storage(&path, format!("cannot encode the queue: {e}")))?;
        atomic_write(&path, &snapshot)
            .map_err(|e| storage(&path, format!("cannot write the compacted queue: {e}")))?;
        snapshot_len = snapshot.len() as u64;
        journal
            .set_len(0)
            .and_then(|()| journal.sync_data())
            .map_err(|e| storage(&journal_path, format!("cannot empty after compaction: {e}")))?;
        if next.is_some() {
            std::fs::remove_file(&next_path)
                .and_then(|()| File::open(dir)?.sync_all())
                .map_err(|e| storage(&next_path, format!("cannot remove after compaction: {e}")))?;
        }
    }
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
        let mut list: Vec<JobEvent> = text
            .lines()
            .map_while(|l| serde_json::from_str(l).ok())
            .collect();
        // The submit's `queued` event lives in the environment's record (files written
        // before that start with it).
        if list.first().is_none_or(|e| e.seq > 1) {
            list.insert(0, queued_event(&rec.env));
        }
        events.insert(rec.env.id, list);
    }
    Ok(Opened {
        lock,
        doc,
        events,
        journal,
        snapshot_len,
    })
}

/// An environment's first event: `queued`, when it was submitted.
fn queued_event(env: &Environment) -> JobEvent {
    JobEvent {
        seq: 1,
        at: env.created_at,
        kind: "status".to_string(),
        message: Status::Queued.as_str().to_string(),
    }
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
        self.broken()?;
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
                let environment = e.env.clone();
                drop(inner);
                // The first request may still be syncing it.
                self.settle_all().await?;
                return Ok(Submitted {
                    environment,
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
        let doc = &mut inner.doc;
        doc.environments.push(Arc::new(EnvRecord {
            seq: doc.next_seq,
            env: env.clone(),
            idempotency_key: new.idempotency_key,
            digest,
            sensitive: BTreeMap::new(),
        }));
        doc.next_seq += 1;
        let job = doc.new_job(env.id, JobKind::Provision, now);
        let seq = self.log(&inner.doc, &[env.id], &[job])?;
        // The first event is not written to its own file: creating a file per request
        // (an inode each) was a third of the accept path's CPU. The environment's record
        // in the journal implies it, and `open` puts it back.
        inner.events.insert(env.id, vec![queued_event(&env)]);
        drop(inner);
        self.settle(seq).await?;
        self.wake();
        Ok(Submitted {
            environment: env,
            created: true,
        })
    }

    async fn get(&self, id: Uuid) -> Result<Environment, QueueError> {
        self.settle_all().await?;
        let inner = self.inner.lock().await;
        Ok(inner.doc.env(id)?.env.clone())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, QueueError> {
        let after = match &query.cursor {
            Some(c) => decode_cursor(c)?,
            None => 0,
        };
        let limit = query.limit.max(1);
        self.settle_all().await?;
        let inner = self.inner.lock().await;
        let mut matching = inner
            .doc
            .environments
            .iter()
            .filter(|e| e.seq > after && query.status.is_none_or(|s| s == e.env.status));
        let page: Vec<&Arc<EnvRecord>> = matching.by_ref().take(limit).collect();
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
        self.broken()?;
        let mut inner = self.inner.lock().await;
        let status = inner.doc.env(id)?.env.status;
        if let Some(e) = destroy_refusal(id, status) {
            return Err(e);
        }
        let now = Utc::now();
        let doc = &mut inner.doc;
        // A provision job no worker took yet is simply replaced.
        let mut jobs = Vec::new();
        for j in doc.jobs.iter_mut() {
            if j.environment_id == id && j.state == JobState::Queued {
                let j = Arc::make_mut(j);
                j.state = JobState::Cancelled;
                j.finished_at = Some(now);
                jobs.push(j.id);
            }
        }
        jobs.push(doc.new_job(id, JobKind::Destroy, now));
        let rec = doc.env_mut(id)?;
        rec.env.status = Status::DestroyQueued;
        rec.env.updated_at = now;
        let env = rec.env.clone();
        let seq = self.log(&inner.doc, &[id], &jobs)?;
        self.push_event(&mut inner, id, "status", Status::DestroyQueued.as_str())
            .await?;
        drop(inner);
        self.settle(seq).await?;
        self.wake();
        Ok(env)
    }

    async fn request_refresh(&self, id: Uuid) -> Result<Environment, QueueError> {
        self.broken()?;
        let mut inner = self.inner.lock().await;
        let status = inner.doc.env(id)?.env.status;
        if let Some(e) = refresh_refusal(id, status) {
            return Err(e);
        }
        let now = Utc::now();
        let doc = &mut inner.doc;
        let job = doc.new_job(id, JobKind::Provision, now);
        let rec = doc.env_mut(id)?;
        rec.env.status = Status::Queued;
        rec.env.failed_step = None;
        rec.env.error = None;
        rec.env.updated_at = now;
        let env = rec.env.clone();
        let seq = self.log(&inner.doc, &[id], &[job])?;
        self.push_event(&mut inner, id, "status", "queued (refresh)")
            .await?;
        drop(inner);
        self.settle(seq).await?;
        self.wake();
        Ok(env)
    }

    async fn events(&self, id: Uuid, after: u64) -> Result<Vec<JobEvent>, QueueError> {
        self.settle_all().await?;
        let inner = self.inner.lock().await;
        inner.doc.env(id)?;
        Ok(inner
            .events
            .get(&id)
            .map(|v| v.iter().filter(|e| e.seq > after).cloned().collect())
            .unwrap_or_default())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.broken()?;
        let inner = self.inner.lock().await;
        let now = Utc::now();
        Ok(QueueStats {
            queued: inner.doc.jobs.iter().filter(|j| j.takeable(now)).count(),
            running: inner.doc.jobs.iter().filter(|j| j.live(now)).count(),
            workers_alive: inner.workers.values().filter(|t| **t > now).count(),
        })
    }

    async fn take(&self, worker: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        self.broken()?;
        let mut inner = self.inner.lock().await;
        let now = Utc::now();
        inner
            .workers
            .insert(worker.to_string(), lease_end(now, lease));
        let Some(pos) = inner.doc.jobs.iter().position(|j| j.takeable(now)) else {
            return Ok(None);
        };
        let j = Arc::make_mut(&mut inner.doc.jobs[pos]);
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
        let rec = inner.doc.env_mut(job.environment_id)?;
        rec.env.status = status;
        rec.env.updated_at = now;
        let seq = self.log(&inner.doc, &[job.environment_id], &[job.id])?;
        self.push_event(
            &mut inner,
            job.environment_id,
            "status",
            &taken_message(status, worker, job.attempt),
        )
        .await?;
        drop(inner);
        // The worker acts on the job (calls AWS) only once the take is on disk.
        self.settle(seq).await?;
        Ok(Some(job))
    }

    async fn heartbeat(&self, job: &Job, lease: Duration) -> Result<bool, QueueError> {
        self.broken()?;
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
        self.broken()?;
        let mut inner = self.inner.lock().await;
        Self::owned_job(&inner.doc, job)?;
        let rec = inner.doc.env_mut(job.environment_id)?;
        rec.env.status = status;
        rec.env.updated_at = Utc::now();
        let seq = self.log(&inner.doc, &[job.environment_id], &[])?;
        self.push_event(&mut inner, job.environment_id, "status", status.as_str())
            .await?;
        drop(inner);
        self.settle(seq).await
    }

    async fn record_event(&self, job: &Job, kind: &str, message: &str) -> Result<(), QueueError> {
        self.broken()?;
        let mut inner = self.inner.lock().await;
        inner.doc.env(job.environment_id)?;
        self.push_event(&mut inner, job.environment_id, kind, message)
            .await
    }

    async fn finish(&self, job: &Job, outcome: JobOutcome) -> Result<(), QueueError> {
        self.broken()?;
        let mut inner = self.inner.lock().await;
        Self::owned_job(&inner.doc, job)?;
        let now = Utc::now();
        let doc = &mut inner.doc;
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
        let seq = self.log(&inner.doc, &[job.environment_id], &[job.id])?;
        if let Some((step, error)) = error {
            self.push_event(&mut inner, job.environment_id, "error", &error)
                .await?;
            self.push_event(
                &mut inner,
                job.environment_id,
                "status",
                &format!("failed (while {})", step.as_str()),
            )
            .await?;
        } else {
            self.push_event(&mut inner, job.environment_id, "status", status.as_str())
                .await?;
        }
        drop(inner);
        self.settle(seq).await
    }

    async fn set_sensitive_output(
        &self,
        job: &Job,
        name: &str,
        value: &str,
    ) -> Result<(), QueueError> {
        self.broken()?;
        let mut inner = self.inner.lock().await;
        Self::owned_job(&inner.doc, job)?;
        inner
            .doc
            .env_mut(job.environment_id)?
            .sensitive
            .insert(name.to_string(), value.to_string());
        let seq = self.log(&inner.doc, &[job.environment_id], &[])?;
        drop(inner);
        self.settle(seq).await
    }

    async fn sensitive_output(&self, id: Uuid, name: &str) -> Result<Option<String>, QueueError> {
        self.settle_all().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str) -> NewEnvironment {
        NewEnvironment {
            name: name.into(),
            user_id: "u".into(),
            document: serde_json::json!({"metadata": {"name": name}}),
            idempotency_key: None,
        }
    }

    fn journal_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(JOURNAL)).unwrap().len()
    }

    /// Everything a change makes survives a reopen: environments, jobs (a running one
    /// taken again with the next attempt), outputs, sensitive outputs, list order.
    #[tokio::test]
    async fn a_reopened_queue_replays_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let (a, b, job_b) = {
            let q = FileQueue::open(&dir).await.unwrap();
            let a = q.submit(new("a")).await.unwrap().environment.id;
            let b = q.submit(new("b")).await.unwrap().environment.id;
            let lease = Duration::from_secs(3600);
            let ja = q.take("w", lease).await.unwrap().unwrap();
            q.set_sensitive_output(&ja, "kubeconfig", "secret-kc")
                .await
                .unwrap();
            q.finish(
                &ja,
                JobOutcome::Ready {
                    outputs: BTreeMap::from([("vpc_id".into(), serde_json::json!("vpc-1"))]),
                    last_plan: None,
                },
            )
            .await
            .unwrap();
            let jb = q.take("w", lease).await.unwrap().unwrap();
            assert!(journal_len(&dir) > 0, "changes go to the journal");
            (a, b, jb)
        };
        let q = FileQueue::open(&dir).await.unwrap();
        // Opening compacted the journal into the snapshot.
        assert_eq!(journal_len(&dir), 0);
        let got = q.get(a).await.unwrap();
        assert_eq!(got.status, Status::Ready);
        assert_eq!(got.outputs["vpc_id"], "vpc-1");
        assert_eq!(
            q.sensitive_output(a, "kubeconfig")
                .await
                .unwrap()
                .as_deref(),
            Some("secret-kc")
        );
        assert_eq!(q.get(b).await.unwrap().status, Status::Provisioning);
        let again = q
            .take("w2", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.id, again.attempt), (job_b.id, 2));
        let page = q
            .list(&ListQuery {
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        let ids: Vec<Uuid> = page.items.iter().map(|e| e.id).collect();
        assert_eq!(ids, [a, b]);
        // New environments continue the list order after the replayed ones.
        let c = q.submit(new("c")).await.unwrap().environment.id;
        drop(q);
        let q = FileQueue::open(&dir).await.unwrap();
        let page = q
            .list(&ListQuery {
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        let ids: Vec<Uuid> = page.items.iter().map(|e| e.id).collect();
        assert_eq!(ids, [a, b, c]);
    }

    /// Submitting creates no events file; the `queued` event comes back from the
    /// environment's record on reopen, before the events a worker appended.
    #[tokio::test]
    async fn the_queued_event_needs_no_file_and_survives_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let (a, b) = {
            let q = FileQueue::open(&dir).await.unwrap();
            let a = q.submit(new("a")).await.unwrap().environment;
            let b = q.submit(new("b")).await.unwrap().environment;
            let files = std::fs::read_dir(dir.join("events")).unwrap().count();
            assert_eq!(files, 0, "no file per submitted environment");
            let ev = q.events(a.id, 0).await.unwrap();
            assert_eq!(ev.len(), 1);
            assert_eq!((ev[0].seq, ev[0].message.as_str()), (1, "queued"));
            let ja = q
                .take("w", Duration::from_secs(3600))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(ja.environment_id, a.id);
            (a, b)
        };
        let q = FileQueue::open(&dir).await.unwrap();
        let ev = q.events(a.id, 0).await.unwrap();
        let seen: Vec<(u64, &str)> = ev.iter().map(|e| (e.seq, e.message.as_str())).collect();
        assert_eq!(seen, [(1, "queued"), (2, "provisioning (worker w)")]);
        assert_eq!(ev[0].at, a.created_at);
        let ev = q.events(b.id, 0).await.unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].seq, ev[0].at), (1, b.created_at));
        // Only the events after a given seq.
        assert_eq!(q.events(a.id, 1).await.unwrap().len(), 1);
    }

    /// A record cut short by a kill (no newline), or one whose checksum does not match,
    /// ends the replay: the records before it stand, and the garbage is gone after the
    /// open's compaction, so later records are not lost behind it.
    #[tokio::test]
    async fn a_torn_journal_tail_is_ignored_and_dropped() {
        for torn in [
            &b"0000abcd {\"next_seq\": 9, \"envs\": [{\"seq\""[..],
            &b"deadbeef {\"next_seq\":9}\n"[..],
            &b"\0\0\0\0\0\0\0\0\0\0\0\0"[..],
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("q");
            let a = {
                let q = FileQueue::open(&dir).await.unwrap();
                q.submit(new("a")).await.unwrap().environment.id
            };
            let mut f = OpenOptions::new()
                .append(true)
                .open(dir.join(JOURNAL))
                .unwrap();
            f.write_all(torn).unwrap();
            drop(f);
            let q = FileQueue::open(&dir).await.unwrap();
            assert_eq!(q.get(a).await.unwrap().status, Status::Queued);
            assert_eq!(journal_len(&dir), 0, "the torn tail is dropped");
            let b = q.submit(new("b")).await.unwrap().environment.id;
            drop(q);
            let q = FileQueue::open(&dir).await.unwrap();
            assert_eq!(q.get(b).await.unwrap().name, "b");
            let page = q
                .list(&ListQuery {
                    limit: 10,
                    ..ListQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(page.items.len(), 2);
        }
    }

    #[test]
    fn decoding_stops_at_the_first_bad_record() {
        let rec = |n| Record {
            next_seq: n,
            envs: Vec::new(),
            jobs: Vec::new(),
        };
        let mut bytes = encode_record(&rec(2)).unwrap();
        bytes.extend(encode_record(&rec(3)).unwrap());
        let (got, torn) = decode_journal(&bytes);
        assert_eq!((got.len(), torn), (2, false));
        // A flipped bit in the second record's JSON: its checksum no longer matches.
        let mut flipped = bytes.clone();
        let at = flipped.len() - 3;
        flipped[at] ^= 1;
        let (got, torn) = decode_journal(&flipped);
        assert_eq!((got.len(), got[0].next_seq, torn), (1, 2, true));
        // Cut anywhere inside the second record: only the first stands.
        let first = encode_record(&rec(2)).unwrap().len();
        for cut in first..bytes.len() {
            let (got, torn) = decode_journal(&bytes[..cut]);
            assert_eq!(got.len(), 1, "cut at {cut}");
            assert_eq!(torn, cut > first, "cut at {cut}");
        }
    }

    /// Once the journal outgrows the snapshot (and the minimum), it is folded into a new
    /// snapshot and emptied, while the queue keeps working; a reopen sees everything.
    #[tokio::test]
    async fn a_large_journal_is_compacted_into_the_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let q = FileQueue::open_with(&dir, 2048).await.unwrap();
        let mut ids = Vec::new();
        let mut compactions = 0;
        let mut last = 0;
        for i in 0..60 {
            ids.push(
                q.submit(new(&format!("e{i}")))
                    .await
                    .unwrap()
                    .environment
                    .id,
            );
            let len = journal_len(&dir);
            if len < last {
                compactions += 1;
            }
            last = len;
            let w = q.journal.writer.lock().await;
            let snapshot_len = q
                .journal
                .compaction
                .snapshot_len
                .load(std::sync::atomic::Ordering::Acquire);
            assert!(
                w.len <= 2048.max(snapshot_len) + 4096,
                "journal {} bytes, snapshot {snapshot_len}",
                w.len,
            );
        }
        assert!(compactions >= 2, "{compactions}");
        let snapshot: Doc =
            serde_json::from_slice(&std::fs::read(dir.join(SNAPSHOT)).unwrap()).unwrap();
        assert!(
            snapshot.environments.len() >= 10,
            "{}",
            snapshot.environments.len()
        );
        drop(q);
        let q = FileQueue::open(&dir).await.unwrap();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(q.get(*id).await.unwrap().name, format!("e{i}"));
        }
    }

    /// A compaction holds up no change: records made while it writes the snapshot go to
    /// `journal.next.jsonl`. Whatever point a crash stops it at, a reopen reads back
    /// every environment, in order: before the snapshot is written (old snapshot and
    /// both journals), after it (new snapshot, both journals) and after the rename.
    #[tokio::test]
    async fn a_compaction_crashed_at_any_point_loses_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let q = FileQueue::open_with(&dir, u64::MAX).await.unwrap();
        let mut names = Vec::new();
        for i in 0..5 {
            names.push(format!("a{i}"));
            q.submit(new(&names[i])).await.unwrap();
        }
        let finish = {
            let mut w = q.journal.writer.lock().await;
            q.compact(&mut w).await.expect("a compaction starts")
        };
        // Changes go on while the snapshot is not written yet.
        for i in 0..3 {
            names.push(format!("b{i}"));
            q.submit(new(names.last().unwrap())).await.unwrap();
        }
        assert!(std::fs::metadata(dir.join(NEXT_JOURNAL)).unwrap().len() > 0);
        let copy = |name: &str| {
            let to = tmp.path().join(name);
            std::fs::create_dir_all(to.join("events")).unwrap();
            for f in [SNAPSHOT, JOURNAL, NEXT_JOURNAL] {
                if dir.join(f).exists() {
                    std::fs::copy(dir.join(f), to.join(f)).unwrap();
                }
            }
            to
        };
        let mut crashed = vec![copy("before-snapshot")];
        finish.write_snapshot().unwrap();
        crashed.push(copy("before-rename"));
        finish.run();
        assert!(!dir.join(NEXT_JOURNAL).exists());
        // After the rename the records keep going to the (renamed) journal.
        names.push("c0".into());
        q.submit(new("c0")).await.unwrap();
        crashed.push(copy("after-rename"));
        let all = ListQuery {
            limit: 100,
            ..ListQuery::default()
        };
        for (k, d) in crashed.iter().enumerate() {
            let r = FileQueue::open(d).await.unwrap();
            let got: Vec<String> = r
                .list(&all)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|e| e.name)
                .collect();
            let want = if k < 2 { &names[..8] } else { &names[..] };
            assert_eq!(got, want, "{}", d.display());
            // Opening folded everything into the snapshot.
            assert!(!d.join(NEXT_JOURNAL).exists());
            assert_eq!(journal_len(d), 0);
        }
        assert!(!q
            .journal
            .compaction
            .running
            .load(std::sync::atomic::Ordering::Acquire));
    }

    /// Records appended while no sync runs are written and synced together by the next
    /// one: one sync for all of them (group commit).
    #[tokio::test]
    async fn one_sync_covers_every_record_appended_before_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let q = FileQueue::open(&dir).await.unwrap();
        let inner = q.inner.lock().await;
        let seqs: Vec<u64> = (0..5)
            .map(|_| q.log(&inner.doc, &[], &[]).unwrap())
            .collect();
        drop(inner);
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(q.journal.writer.lock().await.syncs, 0);
        q.settle(3).await.unwrap();
        assert_eq!(q.journal.writer.lock().await.syncs, 1);
        assert_eq!(q.pending().durable, 5);
        // Everything is synced already: no further write.
        q.settle(5).await.unwrap();
        assert_eq!(q.journal.writer.lock().await.syncs, 1);
        let (records, torn) = decode_journal(&std::fs::read(dir.join(JOURNAL)).unwrap());
        assert_eq!((records.len(), torn), (5, false));
    }

    /// Concurrent submits all return durable: a reopen sees every one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submits_are_all_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let q = Arc::new(FileQueue::open(&dir).await.unwrap());
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let q = q.clone();
                tokio::spawn(async move {
                    q.submit(new(&format!("c{i}")))
                        .await
                        .unwrap()
                        .environment
                        .id
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        let syncs = q.journal.writer.lock().await.syncs;
        assert!((1..=40).contains(&syncs), "{syncs}");
        drop(q);
        let q = FileQueue::open(&dir).await.unwrap();
        for id in ids {
            assert_eq!(q.get(id).await.unwrap().status, Status::Queued);
        }
    }

    /// A journal write that fails leaves memory ahead of the disk: every later call is
    /// refused, naming the journal and saying to restart.
    #[tokio::test]
    async fn a_failed_journal_write_stops_the_queue() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        let q = FileQueue::open(&dir).await.unwrap();
        q.submit(new("a")).await.unwrap();
        // A read-only handle: the next append fails.
        q.journal.writer.lock().await.file = Arc::new(File::open(dir.join(JOURNAL)).unwrap());
        let e = q.submit(new("b")).await.unwrap_err().to_string();
        assert!(
            e.contains(JOURNAL) && e.contains("restart anvil serve"),
            "{e}"
        );
        let e = q.submit(new("c")).await.unwrap_err().to_string();
        assert!(e.contains("restart anvil serve"), "{e}");
        assert!(q.stats().await.is_err());
        drop(q);
        // What was synced stands; the failed change is not there.
        let q = FileQueue::open(&dir).await.unwrap();
        let page = q
            .list(&ListQuery {
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        let names: Vec<&str> = page.items.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a"]);
    }
}
