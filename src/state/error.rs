//! Errors of the `state` layer, shared by every backend.
//!
//! Every message names the state it is about — a file path for the local backend, a URL
//! with any password redacted for remote ones (the `location` fields) — and says what the
//! user can do next, because these errors surface directly in the CLI (`anvil plan`,
//! `anvil apply`, `anvil force-unlock`) where the user has no other context. Hints that
//! only make sense for files (`cp X.backup X`) are given only for file locations.

use std::io;

use super::lock::LockInfo;

/// True when `location` is a remote backend's URL rather than a file path.
fn is_remote(location: &str) -> bool {
    location.contains("://") && !location.starts_with("file://")
}

/// "state file X" for files, "state X" for remote backends.
fn what(location: &str) -> String {
    if is_remote(location) {
        format!("state {location}")
    } else {
        format!("state file {location}")
    }
}

/// How to get back the previous version of a damaged state.
fn restore_hint(location: &str) -> String {
    if is_remote(location) {
        "restore the previous version from the database's backups, or repair the stored JSON by hand (see docs/state.md)".to_string()
    } else {
        format!("restore the previous version with `cp {location}.backup {location}` if that backup exists (then run `anvil plan` to refresh), or repair the JSON by hand")
    }
}

/// How to drop a journal that cannot be replayed.
fn journal_hint(journal: &str) -> String {
    if is_remote(journal) {
        "delete the journal rows of this workspace (see docs/state.md) to load the last checkpoint"
            .to_string()
    } else {
        "move the journal aside to load the last checkpoint in the state file".to_string()
    }
}

/// Everything that can go wrong while reading, writing, journalling or locking state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An operating-system call on a state-related file failed.
    #[error("cannot {action} {location}: {source}; check that the directory exists, is writable and the disk is not full")]
    Io {
        /// What we were doing, e.g. "read" or "fsync".
        action: &'static str,
        /// The file or directory concerned.
        location: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A remote backend (database, Vault) failed or refused a request.
    #[error("cannot {action} {location}: {detail}; {hint}")]
    Backend {
        /// What we were doing, e.g. "connect to" or "read".
        action: &'static str,
        /// The backend's URL, password redacted.
        location: String,
        /// What the server or client said (never containing a secret).
        detail: String,
        /// What the user can do about it.
        hint: String,
    },

    /// A state document could not be serialized (should not happen for valid data).
    #[error("cannot serialize state for {location}: {source}")]
    Serialize {
        /// The state being written.
        location: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// The stored state exists but is not a valid anvil state document.
    #[error(
        "{} is corrupted: {detail}; {}",
        what(location),
        restore_hint(location)
    )]
    Corrupt {
        /// The state.
        location: String,
        /// What is wrong with it.
        detail: String,
    },

    /// The stored state was written by a different (newer or unknown) format version.
    #[error("{} has format version {found}, but this anvil only understands version {}; upgrade anvil, or {}", what(location), super::STATE_VERSION, restore_hint(location))]
    UnsupportedVersion {
        /// The state.
        location: String,
        /// The version found.
        found: u64,
    },

    /// A record in the middle of the journal is not valid.
    #[error("journal {journal} is corrupted at line {line}: {detail}; {} (changes journalled since then are lost, so run `anvil plan` to refresh)", journal_hint(journal))]
    JournalCorrupt {
        /// The journal (file, or backend location).
        journal: String,
        /// 1-based line (record) number.
        line: usize,
        /// What is wrong with it.
        detail: String,
    },

    /// Two pieces that must belong to the same state history do not.
    #[error("{other} belongs to state lineage {found}, but {location} has lineage {expected}; they come from different states — {}", if is_remote(location) { "check the workspace name and URL, or remove the wrong one (see docs/state.md)".to_string() } else { format!("move the wrong one aside (restore {location}.backup if the state file was replaced by mistake)") })]
    LineageMismatch {
        /// The state.
        location: String,
        /// The other piece (journal, or the stored state itself when writing).
        other: String,
        /// Lineage of the stored state / state being written.
        expected: uuid::Uuid,
        /// Lineage found in `other`.
        found: uuid::Uuid,
    },

    /// The journal continues a newer state than the stored one.
    #[error("journal {journal} continues state serial {base_serial}, but {location} is only at serial {state_serial}; the state was replaced by an older copy. {} (changes in it cannot be applied to this older state) and run `anvil plan` to refresh", journal_hint(journal))]
    JournalAhead {
        /// The state.
        location: String,
        /// The journal.
        journal: String,
        /// Serial of the stored state.
        state_serial: u64,
        /// Serial the journal was started from.
        base_serial: u64,
    },

    /// A journal exists but the state it continues is missing.
    #[error("journal {journal} exists but {} is missing; {}", what(location), if is_remote(location) { "restore the state row or delete the journal rows to start from empty state (see docs/state.md)".to_string() } else { format!("restore the state file (e.g. from {location}.backup) or move the journal aside to start from empty state") })]
    OrphanJournal {
        /// The missing state.
        location: String,
        /// The journal.
        journal: String,
    },

    /// The stored state is newer than the state being written.
    #[error("{} is at serial {stored}, newer than the serial {ours} this command read; another run changed it — run the command again", what(location))]
    StaleState {
        /// The state.
        location: String,
        /// Serial stored.
        stored: u64,
        /// Serial of the state being written.
        ours: u64,
    },

    /// Another process holds the state lock.
    #[error("state lock {location} is held by {} on {} (pid {}) running `{}` since {}, lock id {}; retry with --lock-timeout DURATION, or if that process is gone run `anvil force-unlock {}`; the lease expires by itself at {}", info.who, info.host, info.pid, info.operation, info.created.to_rfc3339(), info.id, info.id, info.expires.to_rfc3339())]
    Locked {
        /// The current holder (boxed to keep `Result<_, StateError>` small).
        info: Box<LockInfo>,
        /// The lock.
        location: String,
    },

    /// The lock this handle stood for is no longer ours.
    #[error("state lock {location} is no longer held by this process (its lease ran out or it was force-unlocked and another run may have taken it); nothing more was written — run the command again")]
    LockLost {
        /// The lock.
        location: String,
    },

    /// A lock handle from another backend was passed.
    #[error("the lock passed for {location} belongs to {lock}; take the lock from the same backend that writes the state")]
    WrongLock {
        /// This backend's state.
        location: String,
        /// The lock the handle belongs to.
        lock: String,
    },

    /// `force-unlock` was asked to remove a lock that is not there.
    #[error("state lock {location} is not held; nothing to unlock")]
    NotLocked {
        /// The lock.
        location: String,
    },

    /// `force-unlock` was given an id that is not the current lock's.
    #[error("state lock {location} has id {}, not {requested} (held by {} on {}, pid {}, running `{}`); run `anvil force-unlock {}` if you mean that lock", actual.id, actual.who, actual.host, actual.pid, actual.operation, actual.id)]
    LockIdMismatch {
        /// The lock.
        location: String,
        /// The id the user gave.
        requested: String,
        /// The lock actually there.
        actual: Box<LockInfo>,
    },

    /// The stored lock is not valid JSON.
    #[error("state lock {location} is corrupted: {detail}; if no anvil process is running against this state, {}", if is_remote(location) { "remove it with `anvil force-unlock` or delete its row (see docs/state.md)" } else { "delete the file" })]
    LockCorrupt {
        /// The lock.
        location: String,
        /// What is wrong with it.
        detail: String,
    },

    /// `ANVIL_LOCK_LEASE` does not hold a valid duration.
    #[error("ANVIL_LOCK_LEASE={value:?} is not a valid lease duration for {location}; use a positive duration such as 500ms, 30s or 2m")]
    InvalidLease {
        /// The lock the lease is for.
        location: String,
        /// The value found.
        value: String,
    },

    /// The journal writer failed earlier or has stopped.
    #[error("journal {journal} cannot accept records: {detail}; the stored state holds the last checkpoint — run `anvil plan` to refresh")]
    JournalFailed {
        /// The journal.
        journal: String,
        /// Why.
        detail: String,
    },

    /// A `--state` URL names a backend anvil does not have.
    #[error("unsupported state backend {url:?}; supported: file://PATH or a plain PATH (local file; a directory means DIR/<workspace>.json), postgres://USER:PASSWORD@HOST:PORT/DB[?schema=NAME] (also postgresql://), vault://MOUNT/PATH, s3://BUCKET/KEY[?region=REGION]; see docs/state.md")]
    UnsupportedBackend {
        /// The URL given, password redacted.
        url: String,
    },

    /// A `--state` URL of a known scheme that cannot be used.
    #[error("state URL {url:?} is not valid: {detail}; see docs/state.md for the URL forms")]
    InvalidUrl {
        /// The URL given, password redacted.
        url: String,
        /// What is wrong with it.
        detail: String,
    },

    /// The workspace name cannot be used as a file name.
    #[error("workspace name {name:?} cannot be used for the state file state/{name}.json; use letters, digits, '-', '_' or '.' only")]
    InvalidWorkspace {
        /// The name given.
        name: String,
    },
}

impl StateError {
    pub(crate) fn io(
        action: &'static str,
        path: impl AsRef<std::path::Path>,
        source: io::Error,
    ) -> Self {
        StateError::Io {
            action,
            location: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// A file path as an error location.
pub(crate) fn loc(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_locations_keep_file_hints_and_urls_do_not() {
        let file = StateError::Corrupt {
            location: "state/demo.json".into(),
            detail: "bad".into(),
        }
        .to_string();
        assert!(file.contains("state file state/demo.json"), "{file}");
        assert!(
            file.contains("cp state/demo.json.backup state/demo.json"),
            "{file}"
        );
        let remote = StateError::Corrupt {
            location: "postgres://anvil:***@127.0.0.1:5432/db#demo".into(),
            detail: "bad".into(),
        }
        .to_string();
        assert!(
            remote.contains("state postgres://anvil:***@127.0.0.1:5432/db#demo"),
            "{remote}"
        );
        assert!(!remote.contains(".backup"), "{remote}");
    }
}
