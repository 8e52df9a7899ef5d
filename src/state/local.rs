//! The local file backend: `state/<workspace>.json` and its siblings.
//!
//! See the table in the [`state`](super) module docs for the files. Writes go through
//! [`fsio::atomic_write`]; loads replay the journal ([`super::journal::replay`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::broker_file::BrokerFile;
use super::error::loc;
use super::fsio::{self, Faults};
use super::journal::{self, JournalFiles};
use super::lock::{self, Clock, LockFiles, LockHandle, SystemClock, DEFAULT_LEASE, HELD};
use super::{Journal, JournalWriter, Lock, State, StateBackend, StateError, STATE_VERSION};

/// Serialize a state document: pretty JSON (readable and diffable) plus a final newline.
pub(crate) fn encode(state: &impl serde::Serialize, location: &str) -> Result<Vec<u8>, StateError> {
    let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Serialize {
        location: location.to_string(),
        source: e,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The fields we can read from any version of the document, to explain failures and to
/// check lineage/serial cheaply.
#[derive(Deserialize)]
struct Probe {
    version: u64,
    lineage: Option<uuid::Uuid>,
    serial: Option<u64>,
}

/// Parse a state document read from `location` (shared by every backend).
pub(crate) fn decode(bytes: &[u8], location: &str) -> Result<State, StateError> {
    match serde_json::from_slice::<State>(bytes) {
        Ok(state) if state.version == STATE_VERSION => Ok(state),
        Ok(state) => Err(StateError::UnsupportedVersion {
            location: location.to_string(),
            found: state.version.into(),
        }),
        Err(e) => match serde_json::from_slice::<Probe>(bytes) {
            Ok(p) if p.version != u64::from(STATE_VERSION) => Err(StateError::UnsupportedVersion {
                location: location.to_string(),
                found: p.version,
            }),
            _ => Err(StateError::Corrupt {
                location: location.to_string(),
                detail: e.to_string(),
            }),
        },
    }
}

/// State stored in a local JSON file.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    path: PathBuf,
    lock_files: LockFiles,
    clock: Arc<dyn Clock>,
    lease: Option<Duration>,
    faults: Faults,
    /// The broker store beside the state file (a snapshot and its journal).
    broker: BrokerFile,
}

impl LocalBackend {
    /// A backend for the state file at `path` (need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        LocalBackend {
            lock_files: LockFiles::for_state(&path),
            broker: BrokerFile::new(&path, Faults::none()),
            path,
            clock: Arc::new(SystemClock),
            lease: None,
            faults: Faults::none(),
        }
    }

    /// Use `clock` for lock times (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Use this lock lease instead of `ANVIL_LOCK_LEASE` / the 30 s default.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    #[cfg(test)]
    pub(crate) fn with_faults(mut self, faults: Faults) -> Self {
        self.broker = BrokerFile::new(&self.path, faults.clone());
        self.faults = faults;
        self
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn backup_path(&self) -> PathBuf {
        fsio::sibling(&self.path, ".backup")
    }

    fn journal_path(&self) -> PathBuf {
        fsio::sibling(&self.path, ".journal")
    }

    /// The broker's store: `<state>.broker` beside the state file (its snapshot; the
    /// journal is `<state>.broker.journal`).
    pub fn broker_store_path(&self) -> PathBuf {
        self.broker.snapshot_path().to_path_buf()
    }

    fn lease(&self) -> Result<Duration, StateError> {
        match self.lease {
            Some(l) => Ok(l),
            None => self.lease_from(std::env::var("ANVIL_LOCK_LEASE").ok()),
        }
    }

    /// The lease for an `ANVIL_LOCK_LEASE` value (`None`: unset).
    fn lease_from(&self, env: Option<String>) -> Result<Duration, StateError> {
        let Some(v) = env else {
            return Ok(DEFAULT_LEASE);
        };
        match lock::parse_duration(&v) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(StateError::InvalidLease {
                location: loc(&self.lock_files.lock),
                value: v,
            }),
        }
    }

    fn check_lock(&self, lock: &LockHandle) -> Result<(), StateError> {
        if lock.lock_path() != self.lock_files.lock {
            return Err(StateError::WrongLock {
                location: loc(&self.path),
                lock: loc(lock.lock_path()),
            });
        }
        if lock.status().get() != HELD {
            return Err(StateError::LockLost {
                location: loc(&self.lock_files.lock),
            });
        }
        Ok(())
    }

    fn read_stored(&self) -> Result<Option<Vec<u8>>, StateError> {
        fsio::read_optional(&self.path).map_err(|e| StateError::io("read", &self.path, e))
    }

    /// Refuse to overwrite a stored state of another lineage or with a higher serial than
    /// `state`. The stored serial includes any journal on top of the state file. An
    /// unreadable stored state does not block the write (it is kept as the backup).
    fn check_overwrite(&self, stored: Option<&[u8]>, state: &State) -> Result<(), StateError> {
        let head = match self.load_once() {
            Ok(current) if stored.is_some() => Some((Some(current.lineage), Some(current.serial))),
            Ok(_) => None,
            Err(_) => stored
                .and_then(|b| serde_json::from_slice::<Probe>(b).ok())
                .map(|p| (p.lineage, p.serial)),
        };
        let Some((lineage, serial)) = head else {
            return Ok(());
        };
        if let Some(lineage) = lineage {
            if lineage != state.lineage {
                return Err(StateError::LineageMismatch {
                    location: loc(&self.path),
                    other: loc(&self.path),
                    expected: state.lineage,
                    found: lineage,
                });
            }
        }
        match serial {
            Some(stored) if stored > state.serial => Err(StateError::StaleState {
                location: loc(&self.path),
                stored,
                ours: state.serial,
            }),
            _ => Ok(()),
        }
    }

    /// Remove temporary files a killed writer left behind (`<file>.tmp.PID`,
    /// `<file>.backup.tmp.PID`, `<file>.journal.tmp.PID`). Only lock holders create these,
    /// and the caller holds the lock, so none of them is in use. Best effort.
    fn remove_stale_tmp(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let name = name.to_string_lossy();
        let prefixes = [
            format!("{name}.tmp."),
            format!("{name}.backup.tmp."),
            format!("{name}.journal.tmp."),
        ];
        for entry in entries.flatten() {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if prefixes.iter().any(|p| file.starts_with(p.as_str())) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn load_once(&self) -> Result<State, StateError> {
        let journal_path = self.journal_path();
        let bytes =
            fsio::read_optional(&self.path).map_err(|e| StateError::io("read", &self.path, e))?;
        let Some(bytes) = bytes else {
            let journal = fsio::read_optional(&journal_path)
                .map_err(|e| StateError::io("read", &journal_path, e))?;
            // A journal whose header never made it to disk is harmless; one with content
            // continues a state that has gone missing.
            if journal.is_some_and(|j| j.contains(&b'\n')) {
                return Err(StateError::OrphanJournal {
                    location: loc(&self.path),
                    journal: loc(&journal_path),
                });
            }
            return Ok(State::new());
        };
        let mut state = decode(&bytes, &loc(&self.path))?;
        drop(bytes);
        if let Some(journal) = fsio::read_optional(&journal_path)
            .map_err(|e| StateError::io("read", &journal_path, e))?
        {
            journal::replay(&mut state, &journal, &loc(&self.path), &loc(&journal_path))?;
        }
        Ok(state)
    }
}

/// The synchronous API, which the [`StateBackend`] impl wraps (tests and tools that work
/// on files only may call it directly).
impl LocalBackend {
    /// Whether a journal lies beside the state file.
    pub fn has_journal(&self) -> bool {
        self.journal_path().exists()
    }

    /// `file://PATH`.
    pub fn describe(&self) -> String {
        format!("file://{}", self.path.display())
    }

    /// Whether the state file or a journal exists.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn exists(&self) -> Result<bool, StateError> {
        let journal = self.journal_path();
        Ok(self
            .path
            .try_exists()
            .map_err(|e| StateError::io("stat", &self.path, e))?
            || journal
                .try_exists()
                .map_err(|e| StateError::io("stat", &journal, e))?)
    }

    /// See [`StateBackend::load`].
    ///
    /// # Errors
    /// As for [`StateBackend::load`].
    pub fn load(&self) -> Result<State, StateError> {
        // Loading takes no lock. If a writer checkpoints between our reading the state and
        // the journal, we see an old state with a newer journal; reading again resolves it.
        let mut attempts = 0;
        loop {
            match self.load_once() {
                Err(StateError::JournalAhead { .. }) if attempts < 3 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// See [`StateBackend::lock`]; blocks while waiting.
    ///
    /// # Errors
    /// As for [`StateBackend::lock`].
    pub fn lock(&self, operation: &str, timeout: Duration) -> Result<LockHandle, StateError> {
        let lease = self.lease()?;
        lock::acquire(
            &self.lock_files,
            operation,
            timeout,
            lease,
            self.clock.clone(),
        )
    }

    /// See [`StateBackend::force_unlock`].
    ///
    /// # Errors
    /// As for [`StateBackend::force_unlock`].
    pub fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        self.lock_files.force_unlock(id)
    }

    /// See [`StateBackend::write`].
    ///
    /// # Errors
    /// As for [`StateBackend::write`].
    pub fn write(&self, state: &State, lock: &LockHandle) -> Result<(), StateError> {
        self.check_lock(lock)?;
        self.check_overwrite(self.read_stored()?.as_deref(), state)?;
        self.remove_stale_tmp();
        let bytes = encode(state, &loc(&self.path))?;
        fsio::atomic_write(&self.path, &bytes, Some(&self.backup_path()), &self.faults)?;
        // The written state contains everything the journal recorded.
        fsio::remove_durably(&self.journal_path(), &self.faults)?;
        Ok(())
    }

    /// See [`StateBackend::journal`].
    ///
    /// # Errors
    /// As for [`StateBackend::journal`].
    pub fn journal(&self, base: &State, lock: &LockHandle) -> Result<JournalWriter, StateError> {
        self.check_lock(lock)?;
        let stored = self.read_stored()?;
        self.check_overwrite(stored.as_deref(), base)?;
        self.remove_stale_tmp();
        let journal_path = self.journal_path();
        let old_journal = journal_path
            .try_exists()
            .map_err(|e| StateError::io("stat", &journal_path, e))?;
        // The journal continues the stored state, so that state must be exactly `base`.
        // Write it unless it already is (and no older journal sits on top of it).
        let bytes = encode(base, &loc(&self.path))?;
        if old_journal || stored.as_deref() != Some(bytes.as_slice()) {
            fsio::atomic_write(&self.path, &bytes, Some(&self.backup_path()), &self.faults)?;
        }
        JournalWriter::start(
            JournalFiles {
                state: self.path.clone(),
                backup: self.backup_path(),
                journal: journal_path,
            },
            base,
            lock.status(),
            loc(&self.lock_files.lock),
            self.faults.clone(),
        )
    }

    fn own_lock<'a>(&self, lock: &'a dyn Lock) -> Result<&'a LockHandle, StateError> {
        lock.as_any()
            .downcast_ref::<LockHandle>()
            .ok_or_else(|| StateError::WrongLock {
                location: loc(&self.path),
                lock: lock.location(),
            })
    }
}

#[async_trait]
impl StateBackend for LocalBackend {
    fn describe(&self) -> String {
        LocalBackend::describe(self)
    }

    async fn load(&self) -> Result<State, StateError> {
        LocalBackend::load(self)
    }

    async fn exists(&self) -> Result<bool, StateError> {
        LocalBackend::exists(self)
    }

    async fn lock(&self, operation: &str, timeout: Duration) -> Result<Box<dyn Lock>, StateError> {
        // Waiting polls with sleeps: keep it off the async workers.
        let me = self.clone();
        let operation = operation.to_string();
        let handle = super::blocking(&loc(&self.lock_files.lock), move || {
            LocalBackend::lock(&me, &operation, timeout)
        })
        .await?;
        Ok(Box::new(handle))
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        LocalBackend::force_unlock(self, id)
    }

    async fn write(&self, state: &State, lock: &dyn Lock) -> Result<(), StateError> {
        LocalBackend::write(self, state, self.own_lock(lock)?)
    }

    async fn journal(&self, base: &State, lock: &dyn Lock) -> Result<Box<dyn Journal>, StateError> {
        Ok(Box::new(LocalBackend::journal(
            self,
            base,
            self.own_lock(lock)?,
        )?))
    }

    async fn has_journal(&self) -> bool {
        LocalBackend::has_journal(self)
    }

    async fn load_broker_store(&self) -> Result<Option<serde_json::Value>, StateError> {
        self.broker.read()
    }

    async fn write_broker_store(&self, doc: &serde_json::Value) -> Result<(), StateError> {
        // An fsync per write: off the async workers.
        let broker = self.broker.clone();
        let doc = doc.clone();
        super::blocking(&loc(broker.journal_path()), move || broker.write(&doc)).await
    }

    async fn write_broker_changes(
        &self,
        changes: &[(Vec<String>, Option<serde_json::Value>)],
    ) -> Result<bool, StateError> {
        let broker = self.broker.clone();
        let changes = changes.to_vec();
        super::blocking(&loc(broker.journal_path()), move || {
            broker.write_changes(&changes)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_from_env_value() {
        let b = LocalBackend::new("s.json");
        assert_eq!(b.lease_from(None).unwrap(), DEFAULT_LEASE);
        assert_eq!(
            b.lease_from(Some("500ms".into())).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            b.lease_from(Some("1m".into())).unwrap(),
            Duration::from_secs(60)
        );
        for bad in ["soon", "0s", ""] {
            let err = b.lease_from(Some(bad.into())).unwrap_err();
            assert!(matches!(err, StateError::InvalidLease { .. }), "{bad}");
            assert!(err.to_string().contains("ANVIL_LOCK_LEASE"));
            assert!(err.to_string().contains("s.json.lock"));
        }
        let explicit = b.with_lease(Duration::from_secs(2));
        assert_eq!(explicit.lease().unwrap(), Duration::from_secs(2));
    }

    #[test]
    fn bare_file_name_lives_in_cwd() {
        assert_eq!(fsio::parent_dir(Path::new("demo.json")), Path::new("."));
        assert_eq!(
            fsio::sibling(Path::new("state/demo.json"), ".lock"),
            Path::new("state/demo.json.lock")
        );
    }
}
