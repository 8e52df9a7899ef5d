//! The local backend's broker store: a snapshot plus an append-only journal.
//!
//! `anvil broker` writes its store before every answer, so the write is on the accept
//! path. Rewriting the whole document each time (temporary file, fsync, rename, fsync of
//! the directory) costs O(instances) and two fsyncs per write; instead:
//!
//! - `<state>.broker` is a snapshot `{"broker_store_snapshot": 1, "seq": S, "doc": DOC}`,
//!   replaced atomically ([`fsio::atomic_write`], previous one kept as `.broker.backup`);
//!   a plain JSON document (what anvil wrote before the journal) reads as `seq` 0.
//! - `<state>.broker.journal` starts with a header `{"broker_journal": 1, "base": B}`
//!   (it continues the snapshot of seq B) and then holds one JSON line per write,
//!   `{"seq": N, "put": [[PATH, VALUE]…], "delete": [PATH…]}`, appended and fdatasynced.
//!   PATH is one or two keys. `anvil broker` hands over the instances it changed
//!   ([`BrokerFile::write_changes`]); a whole document ([`BrokerFile::write`]) is diffed
//!   against the last one down to the entries of top-level objects (one instance of
//!   `instances`). Either way a write costs the size of what changed.
//!
//! Loading reads the snapshot, then the journal, and applies the records with a seq above
//! the snapshot's. An unparsable last line is a write torn by a crash and is ignored (it
//! was never acknowledged); an unparsable line before it is corruption, reported with its
//! line number. The first write of a process, and any write once the journal outgrows
//! the snapshot (and [`COMPACT_OVER`]), compacts: a new snapshot with the next seq, then a
//! new journal whose header names it. A crash between the two leaves the new snapshot
//! with the old journal, whose records are all at or below its seq and are skipped. A
//! reader racing a compaction can see an old snapshot and a newer journal (base above the
//! snapshot's seq): it reads again.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::loc;
use super::fsio::{self, Faults};
use super::StateError;

/// Compact once the journal is larger than this and than the snapshot.
pub(crate) const COMPACT_OVER: u64 = 1024 * 1024;

/// How often a reader that raced a compaction reads again before giving up.
const READ_ATTEMPTS: usize = 5;

const SNAPSHOT_VERSION: u32 = 1;
const JOURNAL_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    broker_store_snapshot: u32,
    seq: u64,
    doc: Value,
}

#[derive(Serialize, Deserialize)]
struct Header {
    broker_journal: u32,
    base: u64,
}

/// One write: entries set and entries removed, by path (one or two keys).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Record {
    seq: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    put: Vec<(Vec<String>, Value)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    delete: Vec<Vec<String>>,
}

impl Record {
    fn is_empty(&self) -> bool {
        self.put.is_empty() && self.delete.is_empty()
    }
}

/// The writer's view: what is on disk after this process's last write.
#[derive(Default)]
struct Writer {
    /// The document last written by this process; `None` before its first write (or
    /// after a failed one): the next write compacts.
    last: Option<Value>,
    file: Option<File>,
    /// The seq of the last record or snapshot written.
    seq: u64,
    journal_bytes: u64,
    snapshot_bytes: u64,
}

/// The broker store files of one state file.
#[derive(Clone)]
pub(crate) struct BrokerFile {
    snapshot: PathBuf,
    journal: PathBuf,
    backup: PathBuf,
    faults: Faults,
    compact_over: u64,
    writer: Arc<Mutex<Writer>>,
}

impl std::fmt::Debug for BrokerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerFile")
            .field("snapshot", &self.snapshot)
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

impl BrokerFile {
    /// The store of the state file `state`: `<state>.broker` and `<state>.broker.journal`.
    pub(crate) fn new(state: &Path, faults: Faults) -> BrokerFile {
        let snapshot = fsio::sibling(state, ".broker");
        BrokerFile {
            journal: fsio::sibling(&snapshot, ".journal"),
            backup: fsio::sibling(&snapshot, ".backup"),
            snapshot,
            faults,
            compact_over: COMPACT_OVER,
            writer: Arc::new(Mutex::new(Writer::default())),
        }
    }

    /// Compact once the journal is over `bytes` (tests).
    #[cfg(test)]
    pub(crate) fn with_compact_over(mut self, bytes: u64) -> BrokerFile {
        self.compact_over = bytes;
        self
    }

    /// The snapshot file (`<state>.broker`).
    pub(crate) fn snapshot_path(&self) -> &Path {
        &self.snapshot
    }

    /// The journal file (`<state>.broker.journal`).
    pub(crate) fn journal_path(&self) -> &Path {
        &self.journal
    }

    /// The store's document (`None` when none was ever written).
    ///
    /// # Errors
    /// The files cannot be read, a file is corrupt (its path, and the journal's line), or
    /// compactions kept racing this read.
    pub(crate) fn read(&self) -> Result<Option<Value>, StateError> {
        Ok(self.read_with_seq()?.map(|(doc, _)| doc))
    }

    fn read_with_seq(&self) -> Result<Option<(Value, u64)>, StateError> {
        for _ in 0..READ_ATTEMPTS {
            if let Some(found) = self.read_once()? {
                return Ok(found);
            }
        }
        Err(StateError::Corrupt {
            location: loc(&self.journal),
            detail: format!(
                "the broker store was compacted {READ_ATTEMPTS} times while being read; try again (is a broker writing it in a loop?)"
            ),
        })
    }

    /// One read; `Ok(None)` when a compaction raced it (the journal continues a newer
    /// snapshot than the one read).
    #[allow(clippy::option_option)]
    fn read_once(&self) -> Result<Option<Option<(Value, u64)>>, StateError> {
        let snapshot = fsio::read_optional(&self.snapshot)
            .map_err(|e| StateError::io("read", &self.snapshot, e))?;
        let journal = fsio::read_optional(&self.journal)
            .map_err(|e| StateError::io("read", &self.journal, e))?;
        let (mut doc, seq) = match snapshot {
            Some(bytes) => decode_snapshot(&bytes, &loc(&self.snapshot))?,
            None => (None, 0),
        };
        let Some(journal) = journal else {
            return Ok(Some(doc.map(|d| (d, seq))));
        };
        match replay(&mut doc, seq, &journal, &loc(&self.journal))? {
            Replayed::Raced => Ok(None),
            Replayed::Upto(last) => Ok(Some(doc.map(|d| (d, last)))),
        }
    }

    /// Makes `doc` the store's document durably: one appended record of what changed
    /// since this process's last write, or a compaction (the first write of a process,
    /// a journal grown large, a document that is not an object).
    ///
    /// # Errors
    /// IO errors, naming the file; the next write then compacts.
    pub(crate) fn write(&self, doc: &Value) -> Result<(), StateError> {
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let result = self.write_locked(&mut w, doc);
        if result.is_err() {
            // What reached the disk is unknown: start over with a compaction.
            w.last = None;
            w.file = None;
        }
        result
    }

    /// Records changed entries without the whole document: each `(PATH, Some(value))`
    /// is set and each `(PATH, None)` removed (PATH one or two keys), as one appended
    /// record; O(changes). Returns `Ok(false)`, writing nothing, when this process must
    /// write the whole document instead (its first write, a journal due for compaction,
    /// an earlier failed write): the caller then calls [`BrokerFile::write`].
    ///
    /// # Errors
    /// IO errors, naming the file; the next write then compacts.
    pub(crate) fn write_changes(
        &self,
        changes: &[(Vec<String>, Option<Value>)],
    ) -> Result<bool, StateError> {
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if w.last.is_none()
            || w.file.is_none()
            || w.journal_bytes > self.compact_over.max(w.snapshot_bytes)
        {
            return Ok(false);
        }
        let mut record = Record::default();
        for (path, value) in changes {
            match value {
                Some(v) => record.put.push((path.clone(), v.clone())),
                None => record.delete.push(path.clone()),
            }
        }
        if record.is_empty() {
            return Ok(true);
        }
        let result = self.append(&mut w, &mut record).and_then(|()| {
            let last = w.last.as_mut().ok_or_else(|| StateError::Corrupt {
                location: loc(&self.journal),
                detail: "the writer lost its document".into(),
            })?;
            apply(last, &record).map_err(|detail| StateError::Corrupt {
                location: loc(&self.journal),
                detail,
            })
        });
        if result.is_err() {
            w.last = None;
            w.file = None;
        }
        result.map(|()| true)
    }

    /// Appends `record` with the next seq and syncs it.
    fn append(&self, w: &mut Writer, record: &mut Record) -> Result<(), StateError> {
        record.seq = w.seq + 1;
        let mut line = serde_json::to_vec(&record).map_err(|source| StateError::Serialize {
            location: loc(&self.journal),
            source,
        })?;
        line.push(b'\n');
        let io = |e| StateError::io("append to", &self.journal, e);
        let file = w
            .file
            .as_mut()
            .ok_or_else(|| io(std::io::Error::other("the journal is not open")))?;
        self.faults.step().map_err(io)?;
        file.write_all(&line).map_err(io)?;
        self.faults.step().map_err(io)?;
        // The file's length changes with each append; fdatasync covers that metadata.
        file.sync_data().map_err(io)?;
        w.seq = record.seq;
        w.journal_bytes += line.len() as u64;
        Ok(())
    }

    fn write_locked(&self, w: &mut Writer, doc: &Value) -> Result<(), StateError> {
        let record = match (&w.last, &w.file) {
            (Some(last), Some(_)) if w.journal_bytes <= self.compact_over.max(w.snapshot_bytes) => {
                diff(last, doc)
            }
            _ => None,
        };
        let Some(mut record) = record else {
            return self.compact(w, doc);
        };
        if record.is_empty() {
            return Ok(());
        }
        self.append(w, &mut record)?;
        w.last = Some(doc.clone());
        Ok(())
    }

    /// A new snapshot of `doc` with the next seq, then a new journal continuing it.
    fn compact(&self, w: &mut Writer, doc: &Value) -> Result<(), StateError> {
        if w.last.is_none() {
            // The first write of this process: continue after whatever is on disk, so a
            // reader never takes the new snapshot for an older one.
            w.seq = w.seq.max(self.read_with_seq()?.map_or(0, |(_, s)| s));
        }
        let seq = w.seq + 1;
        let snapshot = serde_json::to_vec(&Snapshot {
            broker_store_snapshot: SNAPSHOT_VERSION,
            seq,
            doc: doc.clone(),
        })
        .map_err(|source| StateError::Serialize {
            location: loc(&self.snapshot),
            source,
        })?;
        fsio::atomic_write(&self.snapshot, &snapshot, Some(&self.backup), &self.faults)?;
        let mut header = serde_json::to_vec(&Header {
            broker_journal: JOURNAL_VERSION,
            base: seq,
        })
        .map_err(|source| StateError::Serialize {
            location: loc(&self.journal),
            source,
        })?;
        header.push(b'\n');
        fsio::atomic_write(&self.journal, &header, None, &self.faults)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&self.journal)
            .map_err(|e| StateError::io("open", &self.journal, e))?;
        *w = Writer {
            last: Some(doc.clone()),
            file: Some(file),
            seq,
            journal_bytes: header.len() as u64,
            snapshot_bytes: snapshot.len() as u64,
        };
        Ok(())
    }
}

/// The document and seq of a snapshot file's content.
fn decode_snapshot(bytes: &[u8], location: &str) -> Result<(Option<Value>, u64), StateError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        location: location.to_string(),
        detail: format!("the broker store is not JSON ({e})"),
    })?;
    if value.get("broker_store_snapshot").is_none() {
        // A whole document, as anvil wrote the store before the journal.
        return Ok((Some(value), 0));
    }
    let snap: Snapshot = serde_json::from_value(value).map_err(|e| StateError::Corrupt {
        location: location.to_string(),
        detail: format!("the broker store snapshot does not parse ({e})"),
    })?;
    if snap.broker_store_snapshot != SNAPSHOT_VERSION {
        return Err(StateError::Corrupt {
            location: location.to_string(),
            detail: format!(
                "broker store snapshot format {} is not supported (expected {SNAPSHOT_VERSION}); use the anvil that wrote it",
                snap.broker_store_snapshot
            ),
        });
    }
    Ok((Some(snap.doc), snap.seq))
}

enum Replayed {
    /// Applied up to this seq.
    Upto(u64),
    /// The journal continues a newer snapshot than the one read.
    Raced,
}

/// Applies the journal's records above `seq` to `doc`.
fn replay(
    doc: &mut Option<Value>,
    seq: u64,
    bytes: &[u8],
    location: &str,
) -> Result<Replayed, StateError> {
    let corrupt = |line: usize, detail: String| StateError::JournalCorrupt {
        journal: location.to_string(),
        line,
        detail,
    };
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // The piece after the last newline is empty or a torn write.
    lines.pop();
    let count = lines.len();
    let mut lines = lines.into_iter().enumerate();
    let Some((_, first)) = lines.next() else {
        // The header is written with the file (atomically): an empty journal is one
        // that was never started.
        return Ok(Replayed::Upto(seq));
    };
    let header: Header = serde_json::from_slice(first)
        .map_err(|e| corrupt(1, format!("bad broker journal header: {e}")))?;
    if header.broker_journal != JOURNAL_VERSION {
        return Err(corrupt(
            1,
            format!(
                "broker journal format {} is not supported (expected {JOURNAL_VERSION}); use the anvil that wrote it",
                header.broker_journal
            ),
        ));
    }
    if header.base > seq {
        return Ok(Replayed::Raced);
    }
    let mut upto = seq;
    for (i, line) in lines {
        let record: Record = match serde_json::from_slice(line) {
            Ok(r) => r,
            // A torn last record: never acknowledged, so never relied on.
            Err(_) if i + 1 == count => break,
            Err(e) => return Err(corrupt(i + 1, e.to_string())),
        };
        if record.seq <= upto {
            continue;
        }
        let target = doc.get_or_insert_with(|| Value::Object(Map::new()));
        apply(target, &record).map_err(|m| corrupt(i + 1, m))?;
        upto = record.seq;
    }
    Ok(Replayed::Upto(upto))
}

/// Applies one record to `doc`.
fn apply(doc: &mut Value, record: &Record) -> Result<(), String> {
    let Value::Object(top) = doc else {
        return Err("the broker store document is not a JSON object".into());
    };
    for path in &record.delete {
        match path.as_slice() {
            [k] => {
                top.remove(k);
            }
            [k, sub] => {
                if let Some(Value::Object(m)) = top.get_mut(k) {
                    m.remove(sub);
                }
            }
            _ => return Err(format!("a path of {} keys (1 or 2 expected)", path.len())),
        }
    }
    for (path, value) in &record.put {
        match path.as_slice() {
            [k] => {
                top.insert(k.clone(), value.clone());
            }
            [k, sub] => {
                let entry = top
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(m) = entry else {
                    return Err(format!("`{k}` is not a JSON object"));
                };
                m.insert(sub.clone(), value.clone());
            }
            _ => return Err(format!("a path of {} keys (1 or 2 expected)", path.len())),
        }
    }
    Ok(())
}

/// What changed from `old` to `new`, down to the entries of top-level objects; `None`
/// when either is not an object (the writer then compacts).
fn diff(old: &Value, new: &Value) -> Option<Record> {
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return None;
    };
    let mut record = Record::default();
    for (k, v) in new {
        match (old.get(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => {
                for (sub, bv) in b {
                    if a.get(sub) != Some(bv) {
                        record.put.push((vec![k.clone(), sub.clone()], bv.clone()));
                    }
                }
                for sub in a.keys().filter(|s| !b.contains_key(*s)) {
                    record.delete.push(vec![k.clone(), sub.clone()]);
                }
            }
            (Some(a), b) if a == b => {}
            _ => record.put.push((vec![k.clone()], v.clone())),
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        record.delete.push(vec![k.clone()]);
    }
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(dir: &Path) -> BrokerFile {
        BrokerFile::new(&dir.join("state/ws.json"), Faults::none())
    }

    fn doc(ids: &[(&str, &str)]) -> Value {
        let instances: Map<String, Value> = ids
            .iter()
            .map(|(id, st)| ((*id).to_string(), json!({"id": id, "state": st})))
            .collect();
        json!({"format": "anvil-broker-store", "version": 1, "instances": instances})
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn writes_append_small_records_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert_eq!(s.read().unwrap(), None);
        let d1 = doc(&[]);
        s.write(&d1).unwrap();
        // The first write compacts: a snapshot and a journal holding only its header.
        assert_eq!(
            lines(s.journal_path()),
            vec![r#"{"broker_journal":1,"base":1}"#]
        );
        let d2 = doc(&[("a", "in progress")]);
        let d3 = doc(&[("a", "succeeded"), ("b", "in progress")]);
        s.write(&d2).unwrap();
        s.write(&d3).unwrap();
        // The same document again writes nothing.
        s.write(&d3).unwrap();
        let journal = lines(s.journal_path());
        assert_eq!(journal.len(), 3, "{journal:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&journal[2]).unwrap(),
            json!({"seq": 3, "put": [
                [["instances", "a"], {"id": "a", "state": "succeeded"}],
                [["instances", "b"], {"id": "b", "state": "in progress"}]]})
        );
        assert_eq!(s.read().unwrap(), Some(d3.clone()));
        // Another process (a fresh handle) reads the same.
        assert_eq!(store(dir.path()).read().unwrap(), Some(d3.clone()));
        // Removals and top-level changes.
        let mut d4 = doc(&[("b", "succeeded")]);
        d4["version"] = json!(2);
        s.write(&d4).unwrap();
        assert_eq!(store(dir.path()).read().unwrap(), Some(d4));
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_the_next_writer_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let d1 = doc(&[("a", "in progress")]);
        let d2 = doc(&[("a", "succeeded")]);
        s.write(&doc(&[])).unwrap();
        s.write(&d1).unwrap();
        s.write(&d2).unwrap();
        // A crash in the middle of the last append: cut the journal inside its record.
        let full = std::fs::read(s.journal_path()).unwrap();
        let torn = full.len() - 10;
        std::fs::write(s.journal_path(), &full[..torn]).unwrap();
        assert_eq!(store(dir.path()).read().unwrap(), Some(d1.clone()));
        // With its newline written but the record garbled, the same.
        let mut garbled = full[..torn].to_vec();
        garbled.push(b'\n');
        std::fs::write(s.journal_path(), &garbled).unwrap();
        assert_eq!(store(dir.path()).read().unwrap(), Some(d1.clone()));
        // A restarted writer compacts first, so its records never follow the torn one.
        let next = store(dir.path());
        let d3 = doc(&[("a", "in progress"), ("c", "in progress")]);
        next.write(&d3).unwrap();
        let d4 = doc(&[("a", "in progress"), ("c", "succeeded")]);
        next.write(&d4).unwrap();
        assert_eq!(store(dir.path()).read().unwrap(), Some(d4));
        let journal = lines(next.journal_path());
        assert_eq!(journal.len(), 2, "{journal:?}");
        // Seqs: 1 the first compaction, 2 and 3 (torn) the records, 3 again the
        // restarted writer's compaction (the torn record is gone with the old journal).
        assert!(journal[0].contains(r#""base":3"#), "{journal:?}");
    }

    #[test]
    fn a_garbled_record_before_the_last_is_corruption_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.write(&doc(&[])).unwrap();
        s.write(&doc(&[("a", "x")])).unwrap();
        s.write(&doc(&[("a", "y")])).unwrap();
        let mut journal = lines(s.journal_path());
        journal[1] = "{not json".into();
        std::fs::write(s.journal_path(), journal.join("\n") + "\n").unwrap();
        let err = store(dir.path()).read().unwrap_err().to_string();
        assert!(err.contains("ws.json.broker.journal"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        // A bad header too.
        std::fs::write(s.journal_path(), "{\"broker_journal\": 9, \"base\": 0}\n").unwrap();
        let err = store(dir.path()).read().unwrap_err().to_string();
        assert!(err.contains("format 9"), "{err}");
        // And a snapshot that is not JSON names the snapshot.
        std::fs::write(s.snapshot_path(), "{").unwrap();
        let err = store(dir.path()).read().unwrap_err().to_string();
        assert!(err.contains("ws.json.broker"), "{err}");
        assert!(err.contains("not JSON"), "{err}");
    }

    #[test]
    fn a_large_journal_is_compacted_into_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).with_compact_over(600);
        s.write(&doc(&[])).unwrap();
        let mut ids = Vec::new();
        let mut compactions = 0;
        let mut last_len = 0;
        for i in 0..40 {
            ids.push(format!("i{i:02}"));
            let pairs: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "ok")).collect();
            let d = doc(&pairs);
            s.write(&d).unwrap();
            let len = std::fs::metadata(s.journal_path()).unwrap().len();
            if len < last_len {
                compactions += 1;
                // Right after a compaction the snapshot alone holds everything.
                let (snap, _) =
                    decode_snapshot(&std::fs::read(s.snapshot_path()).unwrap(), "x").unwrap();
                assert_eq!(snap, Some(d.clone()));
            }
            last_len = len;
            assert_eq!(
                store(dir.path()).read().unwrap(),
                Some(d),
                "after write {i}"
            );
        }
        assert!(compactions >= 2, "{compactions} compactions");
        // Never much past the threshold or the snapshot's size.
        let snap = std::fs::metadata(s.snapshot_path()).unwrap().len();
        assert!(last_len <= 600.max(snap) + 200, "{last_len} vs {snap}");
    }

    #[test]
    fn a_reader_between_the_two_steps_of_a_compaction_reads_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.write(&doc(&[])).unwrap();
        s.write(&doc(&[("a", "x")])).unwrap();
        let old_snapshot = std::fs::read(s.snapshot_path()).unwrap();
        // Another process compacts (its first write) with one more change.
        let d = doc(&[("a", "x"), ("b", "y")]);
        store(dir.path()).write(&d).unwrap();
        // A reader that got the old snapshot and then the new journal must not take the
        // old snapshot for the whole story.
        let (old, seq) = decode_snapshot(&old_snapshot, "x").unwrap();
        let mut doc_read = old;
        let journal = std::fs::read(s.journal_path()).unwrap();
        assert!(matches!(
            replay(&mut doc_read, seq, &journal, "j").unwrap(),
            Replayed::Raced
        ));
        // The old snapshot with the old journal (a crash between the steps) is complete:
        // records at or below the new snapshot's seq are skipped.
        assert_eq!(store(dir.path()).read().unwrap(), Some(d));
    }

    #[test]
    fn a_store_written_before_the_journal_reads_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let d1 = doc(&[("a", "succeeded")]);
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(s.snapshot_path(), serde_json::to_vec(&d1).unwrap()).unwrap();
        assert_eq!(s.read().unwrap(), Some(d1.clone()));
        let d2 = doc(&[("a", "succeeded"), ("b", "in progress")]);
        s.write(&d2).unwrap();
        assert_eq!(store(dir.path()).read().unwrap(), Some(d2));
        // The previous snapshot is kept as the backup.
        assert_eq!(
            serde_json::from_slice::<Value>(
                &std::fs::read(dir.path().join("state/ws.json.broker.backup")).unwrap()
            )
            .unwrap(),
            d1
        );
    }

    #[test]
    fn a_failed_append_makes_the_next_write_compact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/ws.json");
        // The steps of the first compaction (two atomic writes of new files), then the
        // crash at the append.
        let s = BrokerFile::new(&path, Faults::crash_after(13));
        s.write(&doc(&[])).unwrap();
        let err = s.write(&doc(&[("a", "x")])).unwrap_err().to_string();
        assert!(err.contains("ws.json.broker.journal"), "{err}");
        assert_eq!(store(dir.path()).read().unwrap(), Some(doc(&[])));
        // What reached the disk is unknown: the writer starts over with a compaction.
        let w = s.writer.lock().unwrap();
        assert!(w.last.is_none() && w.file.is_none());
    }

    #[test]
    fn changes_append_only_what_changed_and_mix_with_whole_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let put = |id: &str, st: &str| {
            (
                vec!["instances".to_string(), id.to_string()],
                Some(json!({"id": id, "state": st})),
            )
        };
        // Before this process's first whole write there is nothing to append to.
        assert!(!s.write_changes(&[put("a", "x")]).unwrap());
        assert_eq!(s.read().unwrap(), None);
        s.write(&doc(&[("a", "in progress")])).unwrap();
        assert!(s
            .write_changes(&[put("a", "succeeded"), put("b", "in progress")])
            .unwrap());
        let journal = lines(s.journal_path());
        assert_eq!(
            serde_json::from_str::<Value>(&journal[1]).unwrap(),
            json!({"seq": 2, "put": [
                [["instances", "a"], {"id": "a", "state": "succeeded"}],
                [["instances", "b"], {"id": "b", "state": "in progress"}]]})
        );
        let both = doc(&[("a", "succeeded"), ("b", "in progress")]);
        assert_eq!(store(dir.path()).read().unwrap(), Some(both.clone()));
        // A removal; nothing at all appends nothing.
        let gone = (vec!["instances".to_string(), "a".to_string()], None);
        assert!(s.write_changes(&[gone]).unwrap());
        assert!(s.write_changes(&[]).unwrap());
        assert_eq!(lines(s.journal_path()).len(), 3);
        let only_b = doc(&[("b", "in progress")]);
        assert_eq!(store(dir.path()).read().unwrap(), Some(only_b.clone()));
        // The writer's document followed the changes: a whole write of the same
        // document appends nothing, and one more change is diffed against it.
        s.write(&only_b).unwrap();
        assert_eq!(lines(s.journal_path()).len(), 3);
        s.write(&doc(&[("b", "succeeded")])).unwrap();
        let journal = lines(s.journal_path());
        assert_eq!(
            serde_json::from_str::<Value>(&journal[3]).unwrap(),
            json!({"seq": 4, "put": [[["instances", "b"], {"id": "b", "state": "succeeded"}]]})
        );
    }

    #[test]
    fn changes_are_refused_when_the_journal_is_due_for_compaction_or_a_write_failed() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).with_compact_over(64);
        s.write(&doc(&[])).unwrap();
        let big = (
            vec!["instances".to_string(), "a".to_string()],
            Some(json!({"id": "a", "state": "x".repeat(200)})),
        );
        assert!(s.write_changes(std::slice::from_ref(&big)).unwrap());
        // Over the threshold: the caller must write the whole document (which compacts).
        assert!(!s.write_changes(std::slice::from_ref(&big)).unwrap());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/ws.json");
        let s = BrokerFile::new(&path, Faults::crash_after(13));
        s.write(&doc(&[])).unwrap();
        let err = s.write_changes(std::slice::from_ref(&big)).unwrap_err();
        assert!(err.to_string().contains("ws.json.broker.journal"), "{err}");
        assert_eq!(store(dir.path()).read().unwrap(), Some(doc(&[])));
        // What reached the disk is unknown: only a whole write is taken now.
        assert!(!s.write_changes(std::slice::from_ref(&big)).unwrap());
    }
}
