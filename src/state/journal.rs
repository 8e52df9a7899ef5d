//! The apply journal (`<file>.journal`): append-only JSON lines with group commit.
//!
//! Line 1 is a header `{"journal":1,"lineage":...,"base_serial":N}` binding the journal to
//! the state it continues; every further line is one [`JournalRecord`]. The engine appends
//! an `Intent` (and waits for its [`Commit`]) before each provider call and the outcome
//! after it, so a killed run loses nothing it has reported as done.
//!
//! A dedicated thread owns the file. [`JournalWriter::append`] serializes the record in the
//! caller (O(record)) and queues it; the thread takes every queued record, writes them with
//! one `write`, fsyncs once and completes all their commits (group commit), so many
//! parallel provider calls share one fsync.
//!
//! To keep replay short the engine checkpoints every so often
//! ([`JournalWriter::checkpoint_due`]): the thread writes the full state atomically, then
//! atomically replaces the journal with a new header (`base_serial` = the checkpoint's
//! serial) plus any result whose serial is above the checkpoint's (possible when the
//! engine's snapshot lags a concurrent append). A crash between the two steps leaves the
//! new state with the old journal, whose results at or below the state's serial are
//! skipped on replay.
//!
//! The writer keeps its own view of unfinished operations (the base state's `pending` plus
//! the intents queued since, minus those resolved) and stores that view in every
//! checkpoint, so the engine need not track `pending` itself.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::error::loc;
use super::fsio::{self, Faults};
use super::lock::{LockStatus, HELD, LOST};
use super::{Operation, PendingOp, ResourceState, State, StateError};

/// Journal format version, in the header line.
const JOURNAL_VERSION: u32 = 1;

/// Checkpoint at least this often (in records), or once per resource count if larger.
pub(crate) const MIN_CHECKPOINT_INTERVAL: u64 = 1024;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum JournalRecord {
    /// About to call the provider. Written and fsynced before the call.
    Intent {
        /// Resource address.
        address: String,
        /// What is about to be done.
        operation: Operation,
        /// When.
        at: DateTime<Utc>,
    },
    /// A create or update finished; `resource` is the new recorded resource.
    Applied {
        /// State serial after this change.
        serial: u64,
        /// Resource address.
        address: String,
        /// The resource as now recorded.
        resource: ResourceState,
    },
    /// A delete finished (or the resource was forgotten).
    Removed {
        /// State serial after this change.
        serial: u64,
        /// Resource address.
        address: String,
    },
    /// The provider call failed; clears the pending intent.
    Failed {
        /// Resource address.
        address: String,
        /// What was attempted.
        operation: Operation,
        /// The provider's error message.
        error: String,
    },
}

impl JournalRecord {
    /// The resource address the record is about.
    pub fn address(&self) -> &str {
        match self {
            JournalRecord::Intent { address, .. }
            | JournalRecord::Applied { address, .. }
            | JournalRecord::Removed { address, .. }
            | JournalRecord::Failed { address, .. } => address,
        }
    }

    /// The serial of a result record (`Applied`/`Removed`).
    pub fn serial(&self) -> Option<u64> {
        match self {
            JournalRecord::Applied { serial, .. } | JournalRecord::Removed { serial, .. } => {
                Some(*serial)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    journal: u32,
    lineage: uuid::Uuid,
    base_serial: u64,
}

pub(crate) fn header_line(lineage: uuid::Uuid, base_serial: u64) -> Vec<u8> {
    let h = Header {
        journal: JOURNAL_VERSION,
        lineage,
        base_serial,
    };
    // A struct of plain fields always serializes.
    let mut line = serde_json::to_vec(&h).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Replay `bytes` (a journal's content) onto `state`, which was read from `state_path`.
///
/// Only complete lines count; an unparsable *last* line is a torn write and is ignored.
pub(crate) fn replay(
    state: &mut State,
    bytes: &[u8],
    state_loc: &str,
    journal_loc: &str,
) -> Result<(), StateError> {
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // The piece after the last newline is either empty or a torn write.
    lines.pop();
    let count = lines.len();
    let mut lines = lines.into_iter().enumerate();
    let Some((_, first)) = lines.next() else {
        return Ok(());
    };
    let header: Header = match serde_json::from_slice(first) {
        Ok(h) => h,
        Err(_) if count == 1 => return Ok(()),
        Err(e) => {
            return Err(StateError::JournalCorrupt {
                journal: journal_loc.to_string(),
                line: 1,
                detail: format!("bad header: {e}"),
            })
        }
    };
    if header.journal != JOURNAL_VERSION {
        return Err(StateError::JournalCorrupt {
            journal: journal_loc.to_string(),
            line: 1,
            detail: format!(
                "journal format version {} is not supported (expected {JOURNAL_VERSION})",
                header.journal
            ),
        });
    }
    if header.lineage != state.lineage {
        return Err(StateError::LineageMismatch {
            location: state_loc.to_string(),
            other: journal_loc.to_string(),
            expected: state.lineage,
            found: header.lineage,
        });
    }
    if header.base_serial > state.serial {
        return Err(StateError::JournalAhead {
            location: state_loc.to_string(),
            journal: journal_loc.to_string(),
            state_serial: state.serial,
            base_serial: header.base_serial,
        });
    }
    let covered = state.serial;
    for (i, line) in lines {
        match serde_json::from_slice::<JournalRecord>(line) {
            Ok(rec) => state.apply_record_after(&rec, Some(covered)),
            Err(_) if i + 1 == count => break,
            Err(e) => {
                return Err(StateError::JournalCorrupt {
                    journal: journal_loc.to_string(),
                    line: i + 1,
                    detail: e.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Completion of one journal operation: resolves once the record (or checkpoint) is
/// durable on disk, or with the error that prevented it.
#[derive(Debug)]
#[must_use = "a journal record is only durable once its Commit completes"]
pub struct Commit {
    rx: oneshot::Receiver<Result<(), StateError>>,
    location: Arc<str>,
}

impl Commit {
    fn closed(location: &str) -> StateError {
        StateError::JournalFailed {
            journal: location.to_string(),
            detail: "the journal writer stopped".into(),
        }
    }

    /// A commit that completes when `rx` receives (for backends' journal writers).
    pub(crate) fn new(rx: oneshot::Receiver<Result<(), StateError>>, location: Arc<str>) -> Commit {
        Commit { rx, location }
    }

    /// A commit that is already complete with `result`.
    pub(crate) fn ready(result: Result<(), StateError>, location: Arc<str>) -> Commit {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Commit { rx, location }
    }

    /// Wait until durable.
    ///
    /// # Errors
    /// The write or fsync failed, the lock was lost, or the writer thread stopped.
    pub async fn wait(self) -> Result<(), StateError> {
        match self.rx.await {
            Ok(r) => r,
            Err(_) => Err(Self::closed(&self.location)),
        }
    }

    /// Wait until durable, blocking the thread. Prefer [`Commit::wait`] in async code: this
    /// works there too but blocks a runtime worker meanwhile.
    ///
    /// # Errors
    /// As for [`Commit::wait`].
    pub fn wait_blocking(self) -> Result<(), StateError> {
        // futures' executor, unlike tokio's `blocking_recv`, does not panic when called on
        // a runtime thread; it only blocks that thread.
        match futures::executor::block_on(self.rx) {
            Ok(r) => r,
            Err(_) => Err(Self::closed(&self.location)),
        }
    }
}

type Done = oneshot::Sender<Result<(), StateError>>;

/// An append waiting for the next group commit: line, `(address, serial)` of a result,
/// completion.
type Batched = (Vec<u8>, Option<(String, u64)>, Done);

/// A [`State`] with another `pending` list, serialized without cloning the resources.
/// Field names and order are those of [`State`].
#[derive(Serialize)]
pub(crate) struct StateView<'a> {
    pub(crate) version: u32,
    pub(crate) lineage: uuid::Uuid,
    pub(crate) serial: u64,
    pub(crate) resources: &'a BTreeMap<String, ResourceState>,
    pub(crate) pending: &'a [PendingOp],
}

/// Update a pending list for `record` exactly as [`State::apply_record`] does.
pub(crate) fn apply_pending(pending: &mut Vec<PendingOp>, record: &JournalRecord) {
    pending.retain(|p| p.address != record.address());
    if let JournalRecord::Intent {
        address,
        operation,
        at,
    } = record
    {
        pending.push(PendingOp {
            address: address.clone(),
            operation: *operation,
            started_at: *at,
        });
    }
}

/// What the caller computes for a checkpoint: the state bytes plus what the thread needs
/// to decide which journal records the checkpoint covers.
struct Snapshot {
    bytes: Vec<u8>,
    lineage: uuid::Uuid,
    serial: u64,
    /// The pending view stored in `bytes`.
    pending: Vec<PendingOp>,
}

enum Cmd {
    Append {
        line: Vec<u8>,
        /// `(address, serial)` of a result record.
        result: Option<(String, u64)>,
        done: Done,
    },
    Checkpoint {
        snap: Snapshot,
        done: Done,
    },
    Finish {
        snap: Snapshot,
        done: Done,
    },
}

/// What the thread remembers of a result record it wrote: (address, serial, line).
type Entry = (String, u64, Vec<u8>);

/// File locations a journal writer needs.
#[derive(Debug, Clone)]
pub(crate) struct JournalFiles {
    pub(crate) state: PathBuf,
    pub(crate) backup: PathBuf,
    pub(crate) journal: PathBuf,
}

/// The part of the writer that appends take turns on.
#[derive(Debug)]
struct Inner {
    tx: Option<mpsc::Sender<Cmd>>,
    /// The journal's own view of unfinished operations: the base state's pending list
    /// updated by every record queued so far. Checkpoints store this view, which is
    /// exactly consistent with the records queued before them because both are updated
    /// under the same mutex. Callers therefore need not track `pending` themselves.
    pending: Vec<PendingOp>,
}

/// Appends records to the journal from any thread; see the module docs.
#[derive(Debug)]
pub struct JournalWriter {
    inner: Mutex<Inner>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    location: Arc<str>,
    since_checkpoint: AtomicU64,
    /// Records between checkpoints: max(1024, resources at the last checkpoint), so a
    /// growing state is rewritten geometrically less often and apply stays linear.
    interval: AtomicU64,
    /// Number of journal fsyncs so far (tests check that group commit batches).
    #[cfg_attr(not(test), allow(dead_code))]
    fsyncs: Arc<AtomicU64>,
}

impl JournalWriter {
    /// Create the journal file for `base` (which must already be the stored state) and
    /// start the writer thread.
    pub(crate) fn start(
        files: JournalFiles,
        base: &State,
        lock: Arc<LockStatus>,
        lock_location: String,
        faults: Faults,
    ) -> Result<JournalWriter, StateError> {
        fsio::atomic_write(
            &files.journal,
            &header_line(base.lineage, base.serial),
            None,
            &faults,
        )?;
        let file = open_append(&files.journal)?;
        let path = files.journal.clone();
        let location: Arc<str> = Arc::from(loc(&path));
        let (tx, rx) = mpsc::channel();
        let fsyncs = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            fsyncs: fsyncs.clone(),
            files,
            file: Some(file),
            lineage: base.lineage,
            base_serial: base.serial,
            retained: HashMap::new(),
            lock,
            lock_location,
            faults,
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name("anvil-journal".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StateError::io("start writer thread for", &path, e))?;
        Ok(JournalWriter {
            inner: Mutex::new(Inner {
                tx: Some(tx),
                pending: base.pending.clone(),
            }),
            thread: Some(thread),
            path,
            location,
            since_checkpoint: AtomicU64::new(0),
            interval: AtomicU64::new(MIN_CHECKPOINT_INTERVAL.max(base.resources.len() as u64)),
            fsyncs,
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub(crate) fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::SeqCst)
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // The mutex guards plain data that is valid after any panic; keep going.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, inner: &Inner, make: impl FnOnce(Done) -> Cmd) -> Commit {
        let (done, rx) = oneshot::channel();
        let sent = inner
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(make(done)).is_ok());
        if sent {
            Commit::new(rx, self.location.clone())
        } else {
            Commit::ready(Err(Commit::closed(&self.location)), self.location.clone())
        }
    }

    /// Queue `record`; the returned [`Commit`] completes once it is fsynced. Records are
    /// written in the order `append` is called. The record is serialized here, so the
    /// cost is O(record).
    pub fn append(&self, record: impl Borrow<JournalRecord>) -> Commit {
        let record = record.borrow();
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                return Commit::ready(
                    Err(StateError::Serialize {
                        location: self.location.to_string(),
                        source: e,
                    }),
                    self.location.clone(),
                )
            }
        };
        line.push(b'\n');
        let result = record.serial().map(|s| (record.address().to_string(), s));
        self.since_checkpoint.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner();
        apply_pending(&mut inner.pending, record);
        self.send(&inner, |done| Cmd::Append { line, result, done })
    }

    /// True when enough records were appended since the last checkpoint that the engine
    /// should call [`JournalWriter::checkpoint`] (max(1024, resources at the last checkpoint)).
    pub fn checkpoint_due(&self) -> bool {
        self.since_checkpoint.load(Ordering::Relaxed) >= self.interval.load(Ordering::Relaxed)
    }

    /// Serialize `state` with the journal's pending view and queue `make(snapshot)`.
    fn send_snapshot(&self, state: &State, make: impl FnOnce(Snapshot, Done) -> Cmd) -> Commit {
        // Serializing under the mutex keeps the pending view and the record order in step;
        // it delays concurrent appends once per checkpoint interval, not per record.
        let inner = self.inner();
        let view = StateView {
            version: state.version,
            lineage: state.lineage,
            serial: state.serial,
            resources: &state.resources,
            pending: &inner.pending,
        };
        let snap = match super::local::encode(&view, &self.location) {
            Ok(bytes) => Snapshot {
                bytes,
                lineage: state.lineage,
                serial: state.serial,
                pending: inner.pending.clone(),
            },
            Err(e) => return Commit::ready(Err(e), self.location.clone()),
        };
        self.send(&inner, |done| make(snap, done))
    }

    /// Write `state` as the new checkpoint and shorten the journal; `state` must contain
    /// every result whose serial is at or below `state.serial` (true of the engine's
    /// current state when serials are assigned as changes are made) and must not be older
    /// than a state passed to an earlier checkpoint. Its `pending` list is replaced by the
    /// journal's own view. The state is serialized here, in the caller; the file work
    /// happens on the writer thread after every record appended before this call.
    pub fn checkpoint(&self, state: &State) -> Commit {
        self.since_checkpoint.store(0, Ordering::Relaxed);
        self.interval.store(
            MIN_CHECKPOINT_INTERVAL.max(state.resources.len() as u64),
            Ordering::Relaxed,
        );
        self.send_snapshot(state, |snap, done| Cmd::Checkpoint { snap, done })
    }

    /// Final checkpoint of `state` (as for [`JournalWriter::checkpoint`]), remove the
    /// journal (unless a result is not covered by `state`, in which case a short journal
    /// stays for the next load to replay), and stop the writer thread. Blocks the calling
    /// thread for one checkpoint.
    ///
    /// # Errors
    /// The checkpoint could not be written (the journal then still holds every record),
    /// or the lock was lost.
    pub fn finish(mut self, state: &State) -> Result<(), StateError> {
        let commit = self.send_snapshot(state, |snap, done| Cmd::Finish { snap, done });
        let result = commit.wait_blocking();
        self.stop();
        result
    }

    /// [`JournalWriter::finish`] without blocking the thread.
    ///
    /// # Errors
    /// As for [`JournalWriter::finish`].
    pub async fn finish_async(mut self, state: &State) -> Result<(), StateError> {
        let commit = self.send_snapshot(state, |snap, done| Cmd::Finish { snap, done });
        let result = commit.wait().await;
        // The thread ends right after a Finish, so joining it does not wait for work.
        self.stop();
        result
    }

    fn stop(&mut self) {
        drop(self.inner().tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[async_trait::async_trait]
impl super::Journal for JournalWriter {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn append(&self, record: &JournalRecord) -> Commit {
        JournalWriter::append(self, record)
    }

    fn checkpoint_due(&self) -> bool {
        JournalWriter::checkpoint_due(self)
    }

    fn checkpoint(&self, state: &State) -> Commit {
        JournalWriter::checkpoint(self, state)
    }

    async fn finish(self: Box<Self>, state: &State) -> Result<(), StateError> {
        (*self).finish_async(state).await
    }
}

impl Drop for JournalWriter {
    /// Writes what is queued and stops the thread; the journal stays on disk and is
    /// replayed by the next load.
    fn drop(&mut self) {
        self.stop();
    }
}

fn open_append(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| StateError::io("open", path, e))
}

/// The writer thread's state.
struct Worker {
    files: JournalFiles,
    file: Option<File>,
    lineage: uuid::Uuid,
    /// Serial of the last checkpoint.
    base_serial: u64,
    /// Per address, the last result written since the last checkpoint: a checkpoint from
    /// a state that lags behind it must carry it over into the new journal.
    retained: HashMap<String, Entry>,
    lock: Arc<LockStatus>,
    lock_location: String,
    faults: Faults,
    /// Set after a failed write or fsync: what is on disk is then unknown, so every later
    /// operation fails rather than risk a journal with holes.
    failed: Option<String>,
    fsyncs: Arc<AtomicU64>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let mut appends: Vec<Batched> = Vec::new();
            let mut next = Some(first);
            while let Some(cmd) = next.take().or_else(|| rx.try_recv().ok()) {
                match cmd {
                    Cmd::Append { line, result, done } => appends.push((line, result, done)),
                    Cmd::Checkpoint { snap, done } => {
                        self.flush(std::mem::take(&mut appends));
                        let r = self.checkpoint(&snap);
                        let _ = done.send(r);
                    }
                    Cmd::Finish { snap, done } => {
                        self.flush(std::mem::take(&mut appends));
                        let r = self.checkpoint(&snap).and_then(|()| self.remove_if_empty());
                        let _ = done.send(r);
                        return;
                    }
                }
            }
            self.flush(appends);
        }
    }

    fn check(&self) -> Result<(), StateError> {
        if let Some(detail) = &self.failed {
            return Err(StateError::JournalFailed {
                journal: loc(&self.files.journal),
                detail: detail.clone(),
            });
        }
        match self.lock.get() {
            HELD => Ok(()),
            LOST => Err(StateError::LockLost {
                location: self.lock_location.clone(),
            }),
            _ => Err(StateError::JournalFailed {
                journal: loc(&self.files.journal),
                detail: "the state lock was released".into(),
            }),
        }
    }

    fn fail(&mut self, e: &StateError) {
        self.failed = Some(e.to_string());
        self.file = None;
    }

    /// Write a batch of records with one write and one fsync.
    fn flush(&mut self, batch: Vec<Batched>) {
        if batch.is_empty() {
            return;
        }
        let result = self.check().and_then(|()| {
            let buf: Vec<u8> = batch
                .iter()
                .flat_map(|(l, _, _)| l.iter().copied())
                .collect();
            let path = &self.files.journal;
            let file = self
                .file
                .as_mut()
                .ok_or_else(|| StateError::JournalFailed {
                    journal: loc(path),
                    detail: "the journal file is not open".into(),
                })?;
            let io =
                |action, r: std::io::Result<()>| r.map_err(|e| StateError::io(action, path, e));
            io("write", self.faults.step())?;
            io("write", file.write_all(&buf))?;
            io("fsync", self.faults.step())?;
            io("fsync", file.sync_data())?;
            self.fsyncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        match result {
            Ok(()) => {
                for (line, result, done) in batch {
                    if let Some((address, serial)) = result {
                        self.retained
                            .insert(address.clone(), (address, serial, line));
                    }
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                if matches!(e, StateError::Io { .. }) {
                    self.fail(&e);
                }
                let detail = e.to_string();
                let lost = matches!(e, StateError::LockLost { .. });
                let mut first = Some(e);
                for (_, _, done) in batch {
                    let err = first.take().unwrap_or_else(|| {
                        if lost {
                            StateError::LockLost {
                                location: self.lock_location.clone(),
                            }
                        } else {
                            StateError::JournalFailed {
                                journal: loc(&self.files.journal),
                                detail: detail.clone(),
                            }
                        }
                    });
                    let _ = done.send(Err(err));
                }
            }
        }
    }

    /// Results the snapshot does not cover (serial above the snapshot's).
    fn uncovered(&self, snap: &Snapshot) -> Vec<Entry> {
        let mut keep: Vec<Entry> = self
            .retained
            .values()
            .filter(|(_, serial, _)| *serial > snap.serial)
            .cloned()
            .collect();
        keep.sort_by_key(|(_, serial, _)| *serial);
        keep
    }

    fn checkpoint(&mut self, snap: &Snapshot) -> Result<(), StateError> {
        self.check()?;
        if snap.lineage != self.lineage {
            return Err(StateError::LineageMismatch {
                location: loc(&self.files.state),
                other: loc(&self.files.journal),
                expected: snap.lineage,
                found: self.lineage,
            });
        }
        if snap.serial < self.base_serial {
            return Err(StateError::StaleState {
                location: loc(&self.files.state),
                stored: self.base_serial,
                ours: snap.serial,
            });
        }
        let result = self.checkpoint_inner(snap);
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    fn checkpoint_inner(&mut self, snap: &Snapshot) -> Result<(), StateError> {
        // 1. The new state. Until the journal is replaced below, the old journal's
        //    records at or below snap.serial are skipped on replay.
        fsio::atomic_write(
            &self.files.state,
            &snap.bytes,
            Some(&self.files.backup),
            &self.faults,
        )?;
        // 2. The new journal: header plus what the snapshot does not cover.
        let keep = self.uncovered(snap);
        let mut content = header_line(self.lineage, snap.serial);
        for (_, _, line) in &keep {
            content.extend_from_slice(line);
        }
        // Replaying a carried-over result clears its address's pending entry; if the
        // operation pending now came after that result, restate its intent.
        for op in &snap.pending {
            if keep.iter().any(|(address, _, _)| *address == op.address) {
                let intent = JournalRecord::Intent {
                    address: op.address.clone(),
                    operation: op.operation,
                    at: op.started_at,
                };
                let line = serde_json::to_vec(&intent).map_err(|e| StateError::Serialize {
                    location: loc(&self.files.journal),
                    source: e,
                })?;
                content.extend_from_slice(&line);
                content.push(b'\n');
            }
        }
        self.file = None;
        fsio::atomic_write(&self.files.journal, &content, None, &self.faults)?;
        self.faults
            .step()
            .map_err(|e| StateError::io("open", &self.files.journal, e))?;
        self.file = Some(open_append(&self.files.journal)?);
        self.base_serial = snap.serial;
        self.retained = keep.into_iter().map(|e| (e.0.clone(), e)).collect();
        Ok(())
    }

    fn remove_if_empty(&mut self) -> Result<(), StateError> {
        if self.retained.is_empty() {
            self.file = None;
            fsio::remove_durably(&self.files.journal, &self.faults)?;
        }
        Ok(())
    }
}
