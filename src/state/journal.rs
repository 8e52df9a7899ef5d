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
//! serial) plus the few records the checkpoint does not cover (unfinished intents, or
//! results whose serial is above the checkpoint's). A crash between the two steps leaves
//! the new state with the old journal, whose records at or below the state's serial are
//! skipped on replay.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::fsio::{self, Faults};
use super::lock::{LockStatus, HELD, LOST};
use super::{Operation, ResourceState, State, StateError};

/// Journal format version, in the header line.
const JOURNAL_VERSION: u32 = 1;

/// Checkpoint at least this often (in records), or once per resource count if larger.
const MIN_CHECKPOINT_INTERVAL: u64 = 1024;

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

fn header_line(lineage: uuid::Uuid, base_serial: u64) -> Vec<u8> {
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
    state_path: &Path,
    journal_path: &Path,
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
                path: journal_path.to_path_buf(),
                line: 1,
                detail: format!("bad header: {e}"),
            })
        }
    };
    if header.journal != JOURNAL_VERSION {
        return Err(StateError::JournalCorrupt {
            path: journal_path.to_path_buf(),
            line: 1,
            detail: format!(
                "journal format version {} is not supported (expected {JOURNAL_VERSION})",
                header.journal
            ),
        });
    }
    if header.lineage != state.lineage {
        return Err(StateError::LineageMismatch {
            path: state_path.to_path_buf(),
            other: journal_path.to_path_buf(),
            expected: state.lineage,
            found: header.lineage,
        });
    }
    if header.base_serial > state.serial {
        return Err(StateError::JournalAhead {
            path: state_path.to_path_buf(),
            journal: journal_path.to_path_buf(),
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
                    path: journal_path.to_path_buf(),
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
    path: Arc<PathBuf>,
}

impl Commit {
    fn closed(path: &Path) -> StateError {
        StateError::JournalFailed {
            path: path.to_path_buf(),
            detail: "the journal writer thread stopped".into(),
        }
    }

    fn ready(result: Result<(), StateError>, path: Arc<PathBuf>) -> Commit {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Commit { rx, path }
    }

    /// Wait until durable.
    ///
    /// # Errors
    /// The write or fsync failed, the lock was lost, or the writer thread stopped.
    pub async fn wait(self) -> Result<(), StateError> {
        match self.rx.await {
            Ok(r) => r,
            Err(_) => Err(Self::closed(&self.path)),
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
            Err(_) => Err(Self::closed(&self.path)),
        }
    }
}

type Done = oneshot::Sender<Result<(), StateError>>;

/// What the caller computes for a checkpoint: the state bytes plus what the thread needs
/// to decide which journal records the checkpoint covers.
struct Snapshot {
    bytes: Vec<u8>,
    lineage: uuid::Uuid,
    serial: u64,
    pending: BTreeSet<String>,
}

enum Cmd {
    Append {
        line: Vec<u8>,
        meta: Meta,
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

/// What the thread remembers of a record it wrote.
#[derive(Debug, Clone)]
struct Meta {
    address: String,
    /// `Some(serial)` for results, `None` for intents and failures.
    serial: Option<u64>,
    is_intent: bool,
}

/// A record the writer wrote: (write sequence number, what it is, the line).
type Entry = (u64, Meta, Vec<u8>);

/// What replay needs of one address's records since the last checkpoint: the last result
/// (it subsumes earlier ones) and the last intent/failure after it.
#[derive(Debug, Default)]
struct Slot {
    result: Option<Entry>,
    after: Option<Entry>,
}

/// File locations a journal writer needs.
#[derive(Debug, Clone)]
pub(crate) struct JournalFiles {
    pub(crate) state: PathBuf,
    pub(crate) backup: PathBuf,
    pub(crate) journal: PathBuf,
}

/// Appends records to the journal from any thread; see the module docs.
#[derive(Debug)]
pub struct JournalWriter {
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    path: Arc<PathBuf>,
    since_checkpoint: AtomicU64,
    interval: u64,
}

impl JournalWriter {
    /// Create the journal file for `base` (which must already be the stored state) and
    /// start the writer thread.
    pub(crate) fn start(
        files: JournalFiles,
        base: &State,
        lock: Arc<LockStatus>,
        lock_path: PathBuf,
        faults: Faults,
    ) -> Result<JournalWriter, StateError> {
        fsio::atomic_write(
            &files.journal,
            &header_line(base.lineage, base.serial),
            None,
            &faults,
        )?;
        let file = open_append(&files.journal)?;
        let path = Arc::new(files.journal.clone());
        let (tx, rx) = mpsc::channel();
        let worker = Worker {
            files,
            file: Some(file),
            lineage: base.lineage,
            base_serial: base.serial,
            retained: HashMap::new(),
            seq: 0,
            lock,
            lock_path,
            faults,
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name("anvil-journal".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StateError::io("start writer thread for", path.as_ref(), e))?;
        Ok(JournalWriter {
            tx: Some(tx),
            thread: Some(thread),
            path,
            since_checkpoint: AtomicU64::new(0),
            interval: MIN_CHECKPOINT_INTERVAL.max(base.resources.len() as u64),
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, make: impl FnOnce(Done) -> Cmd) -> Commit {
        let (done, rx) = oneshot::channel();
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(make(done)).is_ok());
        if sent {
            Commit {
                rx,
                path: self.path.clone(),
            }
        } else {
            Commit::ready(Err(Commit::closed(&self.path)), self.path.clone())
        }
    }

    /// Queue `record`; the returned [`Commit`] completes once it is fsynced. Records are
    /// written in the order `append` is called.
    pub fn append(&self, record: impl Borrow<JournalRecord>) -> Commit {
        let record = record.borrow();
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                return Commit::ready(
                    Err(StateError::Serialize {
                        path: self.path.to_path_buf(),
                        source: e,
                    }),
                    self.path.clone(),
                )
            }
        };
        line.push(b'\n');
        let meta = Meta {
            address: record.address().to_string(),
            serial: record.serial(),
            is_intent: matches!(record, JournalRecord::Intent { .. }),
        };
        self.since_checkpoint.fetch_add(1, Ordering::Relaxed);
        self.send(|done| Cmd::Append { line, meta, done })
    }

    /// True when enough records were appended since the last checkpoint that the engine
    /// should call [`JournalWriter::checkpoint`] (at least max(1024, resources at start)).
    pub fn checkpoint_due(&self) -> bool {
        self.since_checkpoint.load(Ordering::Relaxed) >= self.interval
    }

    fn snapshot(&self, state: &State) -> Result<Snapshot, StateError> {
        Ok(Snapshot {
            bytes: super::local::encode(state, &self.path)?,
            lineage: state.lineage,
            serial: state.serial,
            pending: state.pending.iter().map(|p| p.address.clone()).collect(),
        })
    }

    /// Write `state` (which must include every result appended so far, or at least carry
    /// their serials correctly) as the new checkpoint and shorten the journal. The state
    /// is serialized here, in the caller; the file work happens on the writer thread after
    /// every record appended before this call.
    pub fn checkpoint(&self, state: &State) -> Commit {
        self.since_checkpoint.store(0, Ordering::Relaxed);
        match self.snapshot(state) {
            Ok(snap) => self.send(|done| Cmd::Checkpoint { snap, done }),
            Err(e) => Commit::ready(Err(e), self.path.clone()),
        }
    }

    /// Final checkpoint of `state`, remove the journal (unless some record is not covered
    /// by `state`, in which case a short journal stays for the next load to replay), and
    /// stop the writer thread.
    ///
    /// # Errors
    /// The checkpoint could not be written; the journal then still holds every record.
    pub fn finish(mut self, state: &State) -> Result<(), StateError> {
        let snap = self.snapshot(state)?;
        let commit = self.send(|done| Cmd::Finish { snap, done });
        let result = commit.wait_blocking();
        self.stop();
        result
    }

    fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
    /// Per address, the records written since the last checkpoint that may still matter.
    retained: HashMap<String, Slot>,
    seq: u64,
    lock: Arc<LockStatus>,
    lock_path: PathBuf,
    faults: Faults,
    /// Set after a failed write or fsync: what is on disk is then unknown, so every later
    /// operation fails rather than risk a journal with holes.
    failed: Option<String>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let mut appends: Vec<(Vec<u8>, Meta, Done)> = Vec::new();
            let mut next = Some(first);
            while let Some(cmd) = next.take().or_else(|| rx.try_recv().ok()) {
                match cmd {
                    Cmd::Append { line, meta, done } => appends.push((line, meta, done)),
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
                path: self.files.journal.clone(),
                detail: detail.clone(),
            });
        }
        match self.lock.get() {
            HELD => Ok(()),
            LOST => Err(StateError::LockLost {
                path: self.lock_path.clone(),
            }),
            _ => Err(StateError::JournalFailed {
                path: self.files.journal.clone(),
                detail: "the state lock was released".into(),
            }),
        }
    }

    fn fail(&mut self, e: &StateError) {
        self.failed = Some(e.to_string());
        self.file = None;
    }

    /// Write a batch of records with one write and one fsync.
    fn flush(&mut self, batch: Vec<(Vec<u8>, Meta, Done)>) {
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
                    path: path.clone(),
                    detail: "the journal file is not open".into(),
                })?;
            let io =
                |action, r: std::io::Result<()>| r.map_err(|e| StateError::io(action, path, e));
            io("write", self.faults.step())?;
            io("write", file.write_all(&buf))?;
            io("fsync", self.faults.step())?;
            io("fsync", file.sync_data())
        });
        match result {
            Ok(()) => {
                for (line, meta, done) in batch {
                    self.seq += 1;
                    let slot = self.retained.entry(meta.address.clone()).or_default();
                    if meta.serial.is_some() {
                        slot.result = Some((self.seq, meta, line));
                        slot.after = None;
                    } else {
                        slot.after = Some((self.seq, meta, line));
                    }
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                if matches!(e, StateError::Io { .. }) {
                    self.fail(&e);
                }
                let detail = e.to_string();
                let mut first = Some(e);
                for (_, _, done) in batch {
                    let err = first.take().unwrap_or_else(|| StateError::JournalFailed {
                        path: self.files.journal.clone(),
                        detail: detail.clone(),
                    });
                    let _ = done.send(Err(err));
                }
            }
        }
    }

    /// Records the snapshot does not cover, in write order.
    fn uncovered(&self, snap: &Snapshot) -> Vec<Entry> {
        let mut keep: Vec<Entry> = Vec::new();
        for (address, slot) in &self.retained {
            let pending = snap.pending.contains(address);
            let mut kept_result = false;
            if let Some(entry @ (_, meta, _)) = &slot.result {
                // A result above the checkpoint's serial happened after the snapshot was
                // taken; one at or below it only matters to clear a pending entry the
                // snapshot still has.
                if meta.serial.is_some_and(|s| s > snap.serial) || (pending && slot.after.is_none())
                {
                    keep.push(entry.clone());
                    kept_result = true;
                }
            }
            if let Some(entry @ (_, meta, _)) = &slot.after {
                // An unfinished intent survives unless the snapshot lists it as pending
                // (and no kept result before it would clear that); a failure only matters
                // if the snapshot still lists the address as pending.
                let needed = if meta.is_intent {
                    !pending || kept_result
                } else {
                    pending
                };
                if needed {
                    keep.push(entry.clone());
                }
            }
        }
        keep.sort_by_key(|(seq, _, _)| *seq);
        keep
    }

    fn checkpoint(&mut self, snap: &Snapshot) -> Result<(), StateError> {
        self.check()?;
        if snap.lineage != self.lineage {
            return Err(StateError::LineageMismatch {
                path: self.files.state.clone(),
                other: self.files.journal.clone(),
                expected: snap.lineage,
                found: self.lineage,
            });
        }
        if snap.serial < self.base_serial {
            return Err(StateError::StaleState {
                path: self.files.state.clone(),
                on_disk: self.base_serial,
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
        self.file = None;
        fsio::atomic_write(&self.files.journal, &content, None, &self.faults)?;
        self.faults
            .step()
            .map_err(|e| StateError::io("open", &self.files.journal, e))?;
        self.file = Some(open_append(&self.files.journal)?);
        self.base_serial = snap.serial;
        self.retained.clear();
        for entry in keep {
            let slot = self.retained.entry(entry.1.address.clone()).or_default();
            if entry.1.serial.is_some() {
                slot.result = Some(entry);
            } else {
                slot.after = Some(entry);
            }
        }
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
