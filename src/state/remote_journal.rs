//! The journal of the remote state backends (S3, Vault, PostgreSQL): one front the engine
//! calls and one background task per apply that owns the writes.
//!
//! [`QueuedJournal`] is the front: `append` serializes the record, updates the journal's
//! own view of unfinished operations (as the file journal does) and queues the record to
//! the task; `checkpoint` and `finish` queue a snapshot of the state made in the caller.
//! Every call returns a [`Commit`] that completes when the task has written it.
//!
//! The task ([`run`]) takes everything queued while its last write was in flight and
//! writes it at once (group commit) through a [`Sink`]: PostgreSQL inserts the batch as
//! rows; S3 and Vault write it as one numbered chunk object through [`ChunkWriter`],
//! which owns the chunk numbering, the checkpoints of the state object and the deletion of
//! the chunks a checkpoint covers. Those two backends differ only in their [`ChunkStore`].

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::journal::apply_pending;
use super::vault::chunk_bytes;
use super::{Commit, Journal, JournalRecord, PendingOp, State, StateError};

/// Completes one queued write with its result.
pub(super) type Done = oneshot::Sender<Result<(), StateError>>;

/// One appended record as the task batches it: the JSON line, `(address, serial)` when
/// it is a result record, and its completion.
pub(super) type Batched = (String, Option<(String, u64)>, Done);

/// What the front queues to the task; `P` is the backend's snapshot.
pub(super) enum Cmd<P> {
    Append {
        line: String,
        result: Option<(String, u64)>,
        done: Done,
    },
    Checkpoint {
        snap: P,
        done: Done,
    },
    Finish {
        snap: P,
        done: Done,
    },
}

/// The writing side of a remote journal, driven by [`run`].
#[async_trait]
pub(super) trait Sink: Send + 'static {
    /// A checkpoint's content, made by the front in the caller.
    type Snap: Send + 'static;
    /// Appended bytes after which a batch is written before more are gathered (the
    /// size limit of one chunk object).
    fn max_batch_bytes(&self) -> usize;
    /// Write a batch of records and complete each one's commit.
    async fn flush(&mut self, batch: Vec<Batched>);
    /// Write `snap` as the stored state, covering everything flushed so far.
    async fn checkpoint(&mut self, snap: Self::Snap) -> Result<(), StateError>;
}

/// The task: group commit of whatever is queued, until `Finish` or the front is dropped
/// (then what is queued is still written, so the next load replays it).
pub(super) async fn run<S: Sink>(mut sink: S, mut rx: mpsc::UnboundedReceiver<Cmd<S::Snap>>) {
    while let Some(first) = rx.recv().await {
        // Everything queued while the last write was in flight.
        let mut cmds = vec![first];
        while let Ok(c) = rx.try_recv() {
            cmds.push(c);
        }
        let mut batch: Vec<Batched> = Vec::new();
        let mut bytes = 0;
        for cmd in cmds {
            match cmd {
                Cmd::Append { line, result, done } => {
                    bytes += line.len() + 1;
                    batch.push((line, result, done));
                    if bytes >= sink.max_batch_bytes() {
                        sink.flush(std::mem::take(&mut batch)).await;
                        bytes = 0;
                    }
                }
                Cmd::Checkpoint { snap, done } => {
                    sink.flush(std::mem::take(&mut batch)).await;
                    bytes = 0;
                    let r = sink.checkpoint(snap).await;
                    let _ = done.send(r);
                }
                Cmd::Finish { snap, done } => {
                    sink.flush(std::mem::take(&mut batch)).await;
                    let r = sink.checkpoint(snap).await;
                    let _ = done.send(r);
                    return;
                }
            }
        }
        sink.flush(batch).await;
    }
}

/// When a checkpoint is due.
#[derive(Debug, Clone, Copy)]
pub(super) enum Due {
    /// When the bytes appended since the last checkpoint reach the threshold, which the
    /// task raises to the size of each state it writes.
    Bytes,
    /// When the records appended since the last checkpoint reach the number of
    /// resources in the state (at least `min`).
    Records { min: u64 },
}

/// Makes a checkpoint's snapshot from the state and the journal's pending view; the
/// `&str` is the journal's location, for errors.
pub(super) type MakeSnap<P> = fn(&State, &[PendingOp], &str) -> Result<P, StateError>;

struct Inner<P> {
    tx: Option<mpsc::UnboundedSender<Cmd<P>>>,
    /// The journal's own view of unfinished operations: the base's pending list updated
    /// by every queued record (see the file journal).
    pending: Vec<PendingOp>,
}

/// The journal of a remote state; see the module docs.
pub(super) struct QueuedJournal<P> {
    inner: Mutex<Inner<P>>,
    location: Arc<str>,
    /// Bytes or records appended since the last checkpoint (see [`Due`]).
    since: AtomicU64,
    threshold: Arc<AtomicU64>,
    due: Due,
    snapshot: MakeSnap<P>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl<P: Send + 'static> QueuedJournal<P> {
    /// Start the task writing through `sink`; `pending` is the base state's list.
    pub(super) fn start<S: Sink<Snap = P>>(
        sink: S,
        location: Arc<str>,
        pending: Vec<PendingOp>,
        threshold: Arc<AtomicU64>,
        due: Due,
        snapshot: MakeSnap<P>,
    ) -> QueuedJournal<P> {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(sink, rx));
        QueuedJournal {
            inner: Mutex::new(Inner {
                tx: Some(tx),
                pending,
            }),
            location,
            since: AtomicU64::new(0),
            threshold,
            due,
            snapshot,
            task: Some(task),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner<P>> {
        // The mutex guards plain data that is valid after any panic; keep going.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, inner: &Inner<P>, make: impl FnOnce(Done) -> Cmd<P>) -> Commit {
        let (done, rx) = oneshot::channel();
        let sent = inner
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(make(done)).is_ok());
        if sent {
            Commit::new(rx, self.location.clone())
        } else {
            Commit::ready(
                Err(StateError::JournalFailed {
                    journal: self.location.to_string(),
                    detail: "the journal writer stopped".into(),
                }),
                self.location.clone(),
            )
        }
    }

    fn send_snapshot(&self, state: &State, make: impl FnOnce(P, Done) -> Cmd<P>) -> Commit {
        // Snapshotting under the mutex keeps the pending view and the record order in step.
        let inner = self.inner();
        match (self.snapshot)(state, &inner.pending, &self.location) {
            Ok(snap) => self.send(&inner, |done| make(snap, done)),
            Err(e) => Commit::ready(Err(e), self.location.clone()),
        }
    }
}

#[async_trait]
impl<P: Send + 'static> Journal for QueuedJournal<P> {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn append(&self, record: &JournalRecord) -> Commit {
        let line = match serde_json::to_string(record) {
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
        let cost = match self.due {
            Due::Bytes => line.len() as u64 + 1,
            Due::Records { .. } => 1,
        };
        self.since.fetch_add(cost, Ordering::Relaxed);
        let result = record.serial().map(|s| (record.address().to_string(), s));
        let mut inner = self.inner();
        apply_pending(&mut inner.pending, record);
        self.send(&inner, |done| Cmd::Append { line, result, done })
    }

    fn checkpoint_due(&self) -> bool {
        self.since.load(Ordering::Relaxed) >= self.threshold.load(Ordering::Relaxed)
    }

    fn checkpoint(&self, state: &State) -> Commit {
        self.since.store(0, Ordering::Relaxed);
        if let Due::Records { min } = self.due {
            self.threshold
                .store(min.max(state.resources.len() as u64), Ordering::Relaxed);
        }
        self.send_snapshot(state, |snap, done| Cmd::Checkpoint { snap, done })
    }

    async fn finish(mut self: Box<Self>, state: &State) -> Result<(), StateError> {
        let commit = self.send_snapshot(state, |snap, done| Cmd::Finish { snap, done });
        let result = commit.wait().await;
        drop(self.inner().tx.take());
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        result
    }
}

impl<P> Drop for QueuedJournal<P> {
    fn drop(&mut self) {
        // Closing the channel lets the task write what is queued, then end.
        drop(
            self.inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .tx
                .take(),
        );
    }
}

impl<P> std::fmt::Debug for QueuedJournal<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedJournal")
            .field("location", &self.location)
            .field("due", &self.due)
            .finish_non_exhaustive()
    }
}

// ------------------------------------------------------------------ chunked journals

/// A checkpoint of a chunked journal: the state view, serialized in the caller.
pub(super) struct Snapshot {
    pub(super) bytes: Vec<u8>,
    pub(super) serial: u64,
}

/// The snapshot of S3 and Vault journals: the state with the journal's pending view.
pub(super) fn encode_snapshot(
    state: &State,
    pending: &[PendingOp],
    location: &str,
) -> Result<Snapshot, StateError> {
    Ok(Snapshot {
        bytes: super::vault::encode_view(state, pending, location)?,
        serial: state.serial,
    })
}

/// A chunk write that failed: the error for the caller and the reason every later write
/// of this journal fails with.
pub(super) struct ChunkFailure {
    pub(super) error: StateError,
    pub(super) detail: String,
}

impl From<StateError> for ChunkFailure {
    fn from(error: StateError) -> ChunkFailure {
        let detail = error.to_string();
        ChunkFailure { error, detail }
    }
}

/// The objects of one chunked journal (S3 objects or Vault secrets).
#[async_trait]
pub(super) trait ChunkStore: Send + Sync + 'static {
    /// Create chunk `n`, never overwriting: a chunk number is written once, so two
    /// writers cannot both append it.
    async fn create_chunk(&self, n: u64, data: Vec<u8>) -> Result<(), ChunkFailure>;
    /// Replace the state object with `data` (state of `serial`), conditional on the
    /// version this store last read or wrote, which it then remembers.
    async fn write_head(&mut self, data: Vec<u8>, serial: u64) -> Result<(), StateError>;
    /// Delete chunks `range`, best effort: a leftover chunk at or below the head's
    /// `journal_seq` is ignored by load and swept by the next write.
    async fn delete_chunks(&self, range: RangeInclusive<u64>);
}

/// What a chunked journal's task starts from.
pub(super) struct ChunkStart {
    pub(super) journal_location: Arc<str>,
    pub(super) lock_location: String,
    pub(super) lineage: uuid::Uuid,
    pub(super) base_serial: u64,
    /// The last chunk the stored state covers.
    pub(super) last_seq: u64,
    /// The lock's status, shared with its renewal task.
    pub(super) status: Arc<AtomicU8>,
    /// The lock status meaning "held".
    pub(super) held: u8,
    pub(super) threshold: Arc<AtomicU64>,
    /// The least checkpoint threshold, in bytes.
    pub(super) min_checkpoint_bytes: u64,
    pub(super) max_chunk_bytes: usize,
}

/// The task of an S3 or Vault journal: owns the chunks and the state object.
pub(super) struct ChunkWriter<S> {
    store: S,
    start: ChunkStart,
    /// Serial of the state the next chunk continues.
    base_serial: u64,
    /// Number of the next chunk to write.
    next_seq: u64,
    /// Chunks up to this number are contained in the state object.
    covered_seq: u64,
    /// The latest result record per address among the chunks not yet covered, for
    /// checkpoints made from a state that lags them: (serial, line).
    retained: HashMap<String, (u64, String)>,
    /// Set once a write failed: every later operation fails with it.
    failed: Option<String>,
}

impl<S: ChunkStore> ChunkWriter<S> {
    pub(super) fn new(store: S, start: ChunkStart) -> ChunkWriter<S> {
        ChunkWriter {
            store,
            base_serial: start.base_serial,
            next_seq: start.last_seq + 1,
            covered_seq: start.last_seq,
            retained: HashMap::new(),
            failed: None,
            start,
        }
    }

    fn fail_error(&self, detail: &str) -> StateError {
        StateError::JournalFailed {
            journal: self.start.journal_location.to_string(),
            detail: detail.to_string(),
        }
    }

    /// An error when the journal cannot take writes: an earlier failure or a lost lock.
    fn blocked(&self) -> Option<StateError> {
        if let Some(f) = &self.failed {
            return Some(self.fail_error(f));
        }
        if self.start.status.load(Ordering::SeqCst) != self.start.held {
            return Some(StateError::LockLost {
                location: self.start.lock_location.clone(),
            });
        }
        None
    }

    /// Create chunk `n` holding `lines`; a failure stops every later write.
    async fn write_chunk(&mut self, n: u64, serial: u64, lines: &[&str]) -> Result<(), StateError> {
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let data = chunk_bytes(self.start.lineage, serial, &lines);
        match self.store.create_chunk(n, data).await {
            Ok(()) => Ok(()),
            Err(f) => {
                self.failed = Some(f.detail);
                Err(f.error)
            }
        }
    }
}

#[async_trait]
impl<S: ChunkStore> Sink for ChunkWriter<S> {
    type Snap = Snapshot;

    fn max_batch_bytes(&self) -> usize {
        self.start.max_chunk_bytes
    }

    /// Write the batched records as the next chunk and complete their commits.
    async fn flush(&mut self, batch: Vec<Batched>) {
        if batch.is_empty() {
            return;
        }
        if let Some(e) = self.blocked() {
            let detail = e.to_string();
            for (_, _, done) in batch {
                let _ = done.send(Err(self.fail_error(&detail)));
            }
            return;
        }
        let lines: Vec<&str> = batch.iter().map(|(l, _, _)| l.as_str()).collect();
        let n = self.next_seq;
        match self.write_chunk(n, self.base_serial, &lines).await {
            Ok(()) => {
                self.next_seq += 1;
                for (line, result, done) in batch {
                    if let Some((address, serial)) = result {
                        self.retained.insert(address, (serial, line));
                    }
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                let detail = e.to_string();
                for (_, _, done) in batch {
                    let _ = done.send(Err(self.fail_error(&detail)));
                }
            }
        }
    }

    /// Store `snap` as the state object, covering every chunk written so far, then delete
    /// those chunks. Results above the snapshot's serial are first re-written in a new
    /// chunk, which the checkpoint does not cover.
    async fn checkpoint(&mut self, snap: Snapshot) -> Result<(), StateError> {
        if let Some(e) = self.blocked() {
            return Err(e);
        }
        let mut keep: Vec<(u64, String)> = self
            .retained
            .drain()
            .filter(|(_, (serial, _))| *serial > snap.serial)
            .map(|(_, v)| v)
            .collect();
        keep.sort_by_key(|(serial, _)| *serial);
        let mut covered = self.next_seq - 1;
        if !keep.is_empty() {
            let lines: Vec<&str> = keep.iter().map(|(_, l)| l.as_str()).collect();
            let n = self.next_seq;
            self.write_chunk(n, snap.serial, &lines).await?;
            covered = self.next_seq - 1;
            self.next_seq += 1;
        }
        let size = snap.bytes.len() as u64;
        let data = super::vault::head_bytes(covered, &snap.bytes);
        if let Err(err) = self.store.write_head(data, snap.serial).await {
            self.failed = Some(err.to_string());
            return Err(err);
        }
        self.start
            .threshold
            .store(self.start.min_checkpoint_bytes.max(size), Ordering::Relaxed);
        self.store
            .delete_chunks((self.covered_seq + 1)..=covered)
            .await;
        self.covered_seq = covered;
        self.base_serial = snap.serial;
        // What was kept lives in the uncovered chunk now.
        for (serial, line) in keep {
            if let Ok(rec) = serde_json::from_str::<JournalRecord>(&line) {
                self.retained
                    .insert(rec.address().to_string(), (serial, line));
            }
        }
        Ok(())
    }
}
