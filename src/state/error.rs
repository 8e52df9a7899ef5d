//! Errors of the `state` layer.
//!
//! Every message names the file it is about and says what the user can do next, because
//! these errors surface directly in the CLI (`anvil plan`, `anvil apply`, `anvil
//! force-unlock`) where the user has no other context.

use std::io;
use std::path::PathBuf;

use super::lock::LockInfo;

/// Everything that can go wrong while reading, writing, journalling or locking state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An operating-system call on a state-related file failed.
    #[error("cannot {action} {}: {source}; check that the directory exists, is writable and the disk is not full", path.display())]
    Io {
        /// What we were doing, e.g. "read" or "fsync".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A state document could not be serialized (should not happen for valid data).
    #[error("cannot serialize state for {}: {source}", path.display())]
    Serialize {
        /// The state file being written.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// The state file exists but is not a valid anvil state document.
    #[error("state file {} is corrupted: {detail}; restore the previous version with `cp {}.backup {}` if that backup exists (then run `anvil plan` to refresh), or repair the JSON by hand", path.display(), path.display(), path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// The state file was written by a different (newer or unknown) format version.
    #[error("state file {} has format version {found}, but this anvil only understands version {}; upgrade anvil, or restore {}.backup if the file was damaged", path.display(), super::STATE_VERSION, path.display())]
    UnsupportedVersion {
        /// The state file.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
    },

    /// A line in the middle of the journal is not a valid record.
    #[error("journal {} is corrupted at line {line}: {detail}; move the journal aside to load the last checkpoint in the state file (changes journalled since then are lost, so run `anvil plan` to refresh)", path.display())]
    JournalCorrupt {
        /// The journal file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        detail: String,
    },

    /// Two files that must belong to the same state history do not.
    #[error("{} belongs to state lineage {found}, but {} has lineage {expected}; they come from different states — move the wrong one aside (restore {}.backup if the state file was replaced by mistake)", other.display(), path.display(), path.display())]
    LineageMismatch {
        /// The state file.
        path: PathBuf,
        /// The other file (journal, or the state file itself when writing).
        other: PathBuf,
        /// Lineage of the state file / state being written.
        expected: uuid::Uuid,
        /// Lineage found in `other`.
        found: uuid::Uuid,
    },

    /// The journal continues a newer state than the state file holds.
    #[error("journal {} continues state serial {base_serial}, but {} is only at serial {state_serial}; the state file was replaced by an older copy. Move the journal aside (changes in it cannot be applied to this older state) and run `anvil plan` to refresh", journal.display(), path.display())]
    JournalAhead {
        /// The state file.
        path: PathBuf,
        /// The journal file.
        journal: PathBuf,
        /// Serial of the state file.
        state_serial: u64,
        /// Serial the journal was started from.
        base_serial: u64,
    },

    /// A journal exists but the state file it continues is missing.
    #[error("journal {} exists but state file {} is missing; restore the state file (e.g. from {}.backup) or move the journal aside to start from empty state", journal.display(), path.display(), path.display())]
    OrphanJournal {
        /// The missing state file.
        path: PathBuf,
        /// The journal file.
        journal: PathBuf,
    },

    /// The state on disk is newer than the state being written.
    #[error("state file {} is at serial {on_disk}, newer than the serial {ours} this command read; another run changed it — run the command again", path.display())]
    StaleState {
        /// The state file.
        path: PathBuf,
        /// Serial on disk.
        on_disk: u64,
        /// Serial of the state being written.
        ours: u64,
    },

    /// Another process holds the state lock.
    #[error("state lock {} is held by {} on {} (pid {}) running `{}` since {}, lock id {}; retry with --lock-timeout DURATION, or if that process is gone run `anvil force-unlock {}`; the lease expires by itself at {}", path.display(), info.who, info.host, info.pid, info.operation, info.created.to_rfc3339(), info.id, info.id, info.expires.to_rfc3339())]
    Locked {
        /// The current holder (boxed to keep `Result<_, StateError>` small).
        info: Box<LockInfo>,
        /// The lock file.
        path: PathBuf,
    },

    /// The lock this handle stood for is no longer ours.
    #[error("state lock {} is no longer held by this process (its lease ran out or it was force-unlocked and another run may have taken it); nothing more was written — run the command again", path.display())]
    LockLost {
        /// The lock file.
        path: PathBuf,
    },

    /// A lock handle from another backend was passed.
    #[error("the lock passed for {} belongs to {}; take the lock from the same backend that writes the state", path.display(), lock_path.display())]
    WrongLock {
        /// The lock file of this backend.
        path: PathBuf,
        /// The lock file the handle belongs to.
        lock_path: PathBuf,
    },

    /// `force-unlock` was asked to remove a lock that is not there.
    #[error("state lock {} is not held (no lock file); nothing to unlock", path.display())]
    NotLocked {
        /// The lock file.
        path: PathBuf,
    },

    /// `force-unlock` was given an id that is not the current lock's.
    #[error("state lock {} has id {}, not {requested} (held by {} on {}, pid {}, running `{}`); run `anvil force-unlock {}` if you mean that lock", path.display(), actual.id, actual.who, actual.host, actual.pid, actual.operation, actual.id)]
    LockIdMismatch {
        /// The lock file.
        path: PathBuf,
        /// The id the user gave.
        requested: String,
        /// The lock actually there.
        actual: Box<LockInfo>,
    },

    /// The lock file is not valid JSON.
    #[error("state lock {} is corrupted: {detail}; if no anvil process is running against this state, delete the file", path.display())]
    LockCorrupt {
        /// The lock file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// `ANVIL_LOCK_LEASE` does not hold a valid duration.
    #[error("ANVIL_LOCK_LEASE={value:?} is not a valid lease duration for {}; use a positive duration such as 500ms, 30s or 2m", path.display())]
    InvalidLease {
        /// The lock file the lease is for.
        path: PathBuf,
        /// The value found.
        value: String,
    },

    /// The journal writer failed earlier or has stopped.
    #[error("journal {} cannot accept records: {detail}; the state file holds the last checkpoint — run `anvil plan` to refresh", path.display())]
    JournalFailed {
        /// The journal file.
        path: PathBuf,
        /// Why.
        detail: String,
    },

    /// A `--state` URL names a backend anvil does not have.
    #[error("unsupported state backend {url:?}; supported: file://PATH or a plain PATH (local file; a directory means DIR/<workspace>.json). Remote backends (s3://, vault://, postgres://) are not available in this build")]
    UnsupportedBackend {
        /// The URL given.
        url: String,
    },

    /// The workspace name cannot be used as a file name.
    #[error("workspace name {name:?} cannot be used for the state file state/{name}.json; use letters, digits, '-', '_' or '.' only")]
    InvalidWorkspace {
        /// The name given.
        name: String,
    },
}

impl StateError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StateError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
