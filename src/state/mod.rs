//! State: the recorded truth of what anvil has applied, and the only module that touches
//! state files.
//!
//! A workspace's state is one JSON document ([`State`]) holding every managed resource by
//! address. It is stored by a [`StateBackend`]; the default [`LocalBackend`] keeps it in
//! `state/<workspace>.json` and writes it atomically with the previous version kept as
//! `<file>.backup`.
//!
//! During `apply` the engine does not rewrite the document per resource (that would make
//! apply quadratic). Instead it appends [`JournalRecord`]s to `<file>.journal` through a
//! [`JournalWriter`] — an intent *before* each provider call, the result after it — and
//! checkpoints the full document every so often. [`StateBackend::load`] replays the
//! journal, so a run killed at any instant leaves state the next run reads without error,
//! with unfinished operations listed in [`State::pending`] for the next plan to refresh.
//!
//! Writers hold an exclusive, leased lock (`<file>.lock`, see [`LockHandle`]).
//!
//! Files of one local state `state/demo.json`:
//!
//! | file | what |
//! |------|------|
//! | `state/demo.json` | the last checkpoint |
//! | `state/demo.json.backup` | the checkpoint before it |
//! | `state/demo.json.journal` | records since the last checkpoint (only while applying, or after a crash) |
//! | `state/demo.json.lock` | the lock holder (JSON), while a writer runs |
//! | `state/demo.json.broker` | `anvil broker`'s store: a snapshot (see `broker_file.rs`) |
//! | `state/demo.json.broker.journal` | the broker store's changes since that snapshot, one line per write |
//!
//! Lock changes are made atomic by briefly flocking the `state/` directory itself, so no
//! guard file is left behind.

mod broker_file;
mod error;
mod fsio;
mod journal;
mod local;
mod lock;
mod postgres;
mod remote_journal;
#[cfg(feature = "aws")]
mod s3;
#[cfg(test)]
mod tests;
mod vault;
mod vault_kv;

pub(crate) use postgres::PgTarget;

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use error::StateError;
pub use journal::{Commit, JournalRecord, JournalWriter};
pub use local::LocalBackend;
pub use lock::{parse_duration, Clock, LockHandle, LockInfo, SystemClock, DEFAULT_LEASE};
pub use postgres::{PgLock, PostgresBackend};
#[cfg(feature = "aws")]
pub use s3::{S3Backend, S3Lock};
pub use vault::{VaultBackend, VaultLock};

/// Format version of the state document this build reads and writes.
pub const STATE_VERSION: u32 = 1;

/// The state document of one workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version, [`STATE_VERSION`].
    pub version: u32,
    /// Identity of this state's history, fixed at creation; saved plans and journals are
    /// bound to it.
    pub lineage: uuid::Uuid,
    /// Bumped on every recorded change.
    pub serial: u64,
    /// Managed resources keyed by address `TYPE.NAME`.
    pub resources: BTreeMap<String, ResourceState>,
    /// Operations that were started but whose outcome was never recorded (a run was
    /// killed). The next plan refreshes these addresses.
    #[serde(default)]
    pub pending: Vec<PendingOp>,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    /// An empty state with a fresh lineage and serial 0.
    pub fn new() -> State {
        State {
            version: STATE_VERSION,
            lineage: uuid::Uuid::new_v4(),
            serial: 0,
            resources: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    /// The serial to put in the next `Applied`/`Removed` record: `serial + 1`.
    pub fn next_serial(&self) -> u64 {
        self.serial + 1
    }

    /// Apply one journal record to this in-memory state, exactly as replay would.
    ///
    /// `Intent` adds a [`PendingOp`]; `Failed` clears it; `Applied`/`Removed` clear it,
    /// change the resource and raise `serial` to the record's serial. The engine keeps its
    /// in-memory state in step with the journal by calling this for every record it
    /// appends (use [`State::next_serial`] for the record's serial).
    pub fn apply_record(&mut self, record: &JournalRecord) {
        self.apply_record_after(record, None);
    }

    /// Like [`State::apply_record`], but resource changes with a serial at or below
    /// `skip_upto` are already contained in this state and only clear pending entries.
    pub(crate) fn apply_record_after(&mut self, record: &JournalRecord, skip_upto: Option<u64>) {
        let fresh = |serial: u64| skip_upto.is_none_or(|s| serial > s);
        match record {
            JournalRecord::Intent {
                address,
                operation,
                at,
            } => {
                self.pending.retain(|p| &p.address != address);
                self.pending.push(PendingOp {
                    address: address.clone(),
                    operation: *operation,
                    started_at: *at,
                });
            }
            JournalRecord::Applied {
                serial,
                address,
                resource,
            } => {
                self.pending.retain(|p| &p.address != address);
                if fresh(*serial) {
                    self.resources.insert(address.clone(), resource.clone());
                    self.serial = self.serial.max(*serial);
                }
            }
            JournalRecord::Removed { serial, address } => {
                self.pending.retain(|p| &p.address != address);
                if fresh(*serial) {
                    self.resources.remove(address);
                    self.serial = self.serial.max(*serial);
                }
            }
            JournalRecord::Failed { address, .. } => {
                self.pending.retain(|p| &p.address != address);
            }
        }
    }
}

/// One managed resource as last applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    /// Resource type, e.g. `bosh_deployment`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Provider that manages it.
    pub provider: String,
    /// Attributes as applied (sensitive ones excluded).
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Sensitive attributes: name → [`fingerprint`] (`sha256:<hex>`). Such attributes are
    /// never stored in `attributes`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitive: BTreeMap<String, String>,
    /// Values the provider reported back (ids, URLs, ...).
    #[serde(default)]
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// Addresses this resource depended on when applied (for delete ordering).
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Lifecycle settings in force when applied.
    #[serde(default)]
    pub lifecycle: RecordedLifecycle,
    /// When the resource was created.
    pub created_at: DateTime<Utc>,
    /// When the resource was last changed.
    pub updated_at: DateTime<Utc>,
}

/// Lifecycle settings recorded with a resource, so deletes of resources no longer in the
/// spec still honour them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedLifecycle {
    /// Refuse to destroy.
    #[serde(default)]
    pub prevent_destroy: bool,
    /// Replace by creating the new one first.
    #[serde(default)]
    pub create_before_destroy: bool,
    /// Forget instead of deleting.
    #[serde(default)]
    pub retain_on_delete: bool,
}

/// An operation that was started but whose outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOp {
    /// Resource address.
    pub address: String,
    /// What was being done.
    pub operation: Operation,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// A provider operation recorded in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Creating a resource.
    Create,
    /// Updating a resource in place.
    Update,
    /// Deleting a resource.
    Delete,
}

/// `"sha256:" + hex(SHA-256(canonical JSON of value))`; canonical JSON is compact with
/// object keys sorted, so equal values always have equal fingerprints.
pub fn fingerprint(value: &serde_json::Value) -> String {
    let mut buf = Vec::new();
    write_canonical(value, &mut buf);
    format!("sha256:{}", hex::encode(Sha256::digest(&buf)))
}

/// Canonical JSON: sorted keys, no whitespace. Written by hand so the fingerprint cannot
/// change if some dependency turns on serde_json's `preserve_order` feature.
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serializing a string or scalar into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// Where state lives: load it, lock it, write it, journal changes to it.
///
/// Implementations must make [`StateBackend::write`] atomic and must make `load` succeed
/// on whatever a killed writer left behind. Every error names [`StateBackend::describe`]
/// (never a password).
#[async_trait]
pub trait StateBackend: Send + Sync {
    /// A URL-like description for messages, e.g. `file://state/demo.json` or
    /// `postgres://anvil:***@db/anvil#demo`; passwords are always redacted.
    fn describe(&self) -> String;

    /// Read the current state, replaying the journal if one exists. A missing state is an
    /// empty [`State::new`] (nothing is written).
    ///
    /// # Errors
    /// The state or journal cannot be read, is corrupted, has an unknown version, or the
    /// journal belongs to another lineage.
    async fn load(&self) -> Result<State, StateError>;

    /// Whether any state (or a journal) is stored, so read-only commands can say "no state
    /// at X" instead of showing an empty state silently.
    ///
    /// # Errors
    /// The backend cannot be reached.
    async fn exists(&self) -> Result<bool, StateError>;

    /// Take the exclusive write lock for `operation` (e.g. `"apply"`), waiting up to
    /// `timeout` for another holder to release it or for its lease to run out. The lock is
    /// renewed in the background while the returned [`Lock`] lives and released when it
    /// is dropped.
    ///
    /// # Errors
    /// [`StateError::Locked`] naming the holder if still locked after `timeout`; IO or
    /// backend errors.
    async fn lock(&self, operation: &str, timeout: Duration) -> Result<Box<dyn Lock>, StateError>;

    /// Remove the lock with id `id`, whoever holds it.
    ///
    /// # Errors
    /// No lock exists, or the current lock has another id (the error names it).
    async fn force_unlock(&self, id: &str) -> Result<(), StateError>;

    /// Replace the stored state with `state` atomically and drop the journal. The state is
    /// stored as given: callers bump `serial` when content changes.
    ///
    /// # Errors
    /// `lock` is not this backend's or was lost; the stored state has another lineage or a
    /// higher serial; IO or backend errors.
    async fn write(&self, state: &State, lock: &dyn Lock) -> Result<(), StateError>;

    /// Start journalling changes to `base` (normally the state just loaded). Must not be
    /// mixed with [`StateBackend::write`] while the journal lives.
    ///
    /// # Errors
    /// As for [`StateBackend::write`].
    async fn journal(&self, base: &State, lock: &dyn Lock) -> Result<Box<dyn Journal>, StateError>;

    /// Whether a journal left by an interrupted run lies beside the state (its records
    /// are already part of what `load` returns). A lock holder folds it in with `write`.
    async fn has_journal(&self) -> bool {
        false
    }

    /// The broker's desired-state store kept beside this workspace's state (the service
    /// instances `anvil broker` created, with their operations), as the JSON document
    /// last written; `None` when none was ever written. The document is opaque here:
    /// `ops` owns its shape. Backends that cannot keep one answer `None`.
    ///
    /// # Errors
    /// The store exists but cannot be read or is not JSON.
    async fn load_broker_store(&self) -> Result<Option<serde_json::Value>, StateError> {
        Ok(None)
    }

    /// Records some entries of the broker's store durably, without the whole document:
    /// each `(PATH, Some(value))` set, each `(PATH, None)` removed, PATH one key or two
    /// (`["instances", ID]`). O(changes) where a backend can; `Ok(false)` (nothing
    /// written) where it cannot now, and the caller writes the whole document with
    /// [`StateBackend::write_broker_store`]. Default: `Ok(false)`.
    ///
    /// # Errors
    /// IO or backend errors.
    async fn write_broker_changes(
        &self,
        changes: &[(Vec<String>, Option<serde_json::Value>)],
    ) -> Result<bool, StateError> {
        let _ = changes;
        Ok(false)
    }

    /// Replaces the broker's store durably (it is on disk or committed when this
    /// returns). Not under the state lock: the broker is the store's only writer.
    ///
    /// # Errors
    /// IO or backend errors; a backend that cannot keep a store says so.
    async fn write_broker_store(&self, doc: &serde_json::Value) -> Result<(), StateError> {
        let _ = doc;
        Err(StateError::Backend {
            action: "write the broker store to",
            location: self.describe(),
            detail: "this state backend does not keep a broker store".to_string(),
            hint: "run `anvil broker` with a file state (--state PATH), PostgreSQL or Vault"
                .to_string(),
        })
    }
}

/// Proof that this process holds a backend's state lock. Renewed in the background while
/// it lives; dropping it stops renewal and releases the lock (if it is still ours).
pub trait Lock: Send + Sync + std::fmt::Debug {
    /// The lock as written when taken.
    fn info(&self) -> &LockInfo;

    /// True once renewal found that the lock no longer names us (our lease ran out and
    /// someone else took it, or it was force-unlocked).
    fn is_lost(&self) -> bool;

    /// Where the lock lives, for messages (a file path or a redacted URL).
    fn location(&self) -> String;

    /// For backends to recognise their own lock type.
    fn as_any(&self) -> &dyn Any;
}

/// Appends [`JournalRecord`]s durably during an apply, with group commit; see
/// [`JournalWriter`] for the local one.
#[async_trait]
pub trait Journal: Send + Sync {
    /// Where the journal lives, for messages.
    fn location(&self) -> String;

    /// Queue `record`; the returned [`Commit`] completes once it is durable. Records are
    /// stored in the order `append` is called; the cost is O(record).
    fn append(&self, record: &JournalRecord) -> Commit;

    /// True when enough records were appended since the last checkpoint that the engine
    /// should call [`Journal::checkpoint`] (the journal has grown past the state's size).
    fn checkpoint_due(&self) -> bool;

    /// Store `state` as the new checkpoint and shorten the journal; see
    /// [`JournalWriter::checkpoint`] for what `state` must contain.
    fn checkpoint(&self, state: &State) -> Commit;

    /// Final checkpoint of `state`, drop the journal, stop background work.
    ///
    /// # Errors
    /// The checkpoint could not be stored (the journal then still holds every record), or
    /// the lock was lost.
    async fn finish(self: Box<Self>, state: &State) -> Result<(), StateError>;
}

/// Run blocking `f` off the async workers when a tokio runtime is around (lock waits poll
/// with sleeps), inline otherwise (plain tests).
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => match h.spawn_blocking(f).await {
            Ok(r) => r,
            Err(e) => Err(StateError::Io {
                action: "run",
                location: what.to_string(),
                source: std::io::Error::other(format!("the state worker stopped: {e}")),
            }),
        },
        Err(_) => f(),
    }
}

/// `url` with any password replaced by `***` (userinfo `user:PASSWORD@` and a
/// `password=` query or key-value parameter), for messages. Text that is not a URL is
/// returned unchanged.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &out[rest_start..];
        // The authority ends at the first '/', '?' or '#'; userinfo is before its last '@'.
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let auth = &rest[..auth_end];
        if let Some(at) = auth.rfind('@') {
            let userinfo = &auth[..at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                let end = rest_start + at;
                out.replace_range(start..end, "***");
            }
        }
    }
    // `password=...` in a query string or a key-value connection string.
    let lower = out.to_ascii_lowercase();
    let mut result = String::with_capacity(out.len());
    let mut i = 0;
    while let Some(pos) = lower[i..].find("password=") {
        let key_start = i + pos;
        let value_start = key_start + "password=".len();
        let boundary_ok =
            key_start == 0 || matches!(out.as_bytes()[key_start - 1], b'?' | b'&' | b' ' | b';');
        result.push_str(&out[i..value_start]);
        let value_end = out[value_start..]
            .find(['&', ' ', ';', '#'])
            .map_or(out.len(), |e| value_start + e);
        if boundary_ok {
            result.push_str("***");
        } else {
            result.push_str(&out[value_start..value_end]);
        }
        i = value_end;
    }
    result.push_str(&out[i..]);
    result
}

/// Open the state backend for `url` (from `--state` / `ANVIL_STATE`) and `workspace`.
/// Nothing is read or connected yet.
///
/// * `None` → local file `state/<workspace>.json`, relative to the current directory;
/// * `file://PATH` or a plain `PATH` → local file `PATH`, or `PATH/<workspace>.json` when
///   `PATH` ends with `/` or is an existing directory;
/// * `postgres://…` / `postgresql://…` → tables in a PostgreSQL database, one row set per
///   workspace (see docs/state.md);
/// * `vault://MOUNT/PATH` → a KV v2 secret per workspace;
/// * `s3://BUCKET/KEY[?region=R][&endpoint=URL]` → objects `KEY/<workspace>.json` (and
///   `.lock`, `.journal/N`) in an S3 bucket (needs the `aws` feature);
/// * any other `scheme://` → [`StateError::UnsupportedBackend`].
///
/// # Errors
/// Unsupported URL scheme, an invalid URL, or a workspace name that is not a plain file
/// name.
pub fn open(url: Option<&str>, workspace: &str) -> Result<Box<dyn StateBackend>, StateError> {
    let valid_ws = !workspace.is_empty()
        && workspace != "."
        && workspace != ".."
        && workspace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_ws {
        return Err(StateError::InvalidWorkspace {
            name: workspace.to_string(),
        });
    }
    let file_name = format!("{workspace}.json");
    let path = match url {
        None => Path::new("state").join(file_name),
        Some(url) => {
            let raw = if let Some(rest) = url.strip_prefix("file://") {
                rest
            } else if let Some(backend) = remote(url, workspace) {
                return backend;
            } else if url.contains("://") || url.is_empty() {
                return Err(StateError::UnsupportedBackend {
                    url: redact_url(url),
                });
            } else {
                url
            };
            if raw.is_empty() {
                return Err(StateError::UnsupportedBackend {
                    url: redact_url(url),
                });
            }
            let p = PathBuf::from(raw);
            if raw.ends_with('/') || p.is_dir() {
                p.join(file_name)
            } else {
                p
            }
        }
    };
    Ok(Box::new(LocalBackend::new(path)))
}

/// The remote backend for `url`, if its scheme names one.
fn remote(url: &str, workspace: &str) -> Option<Result<Box<dyn StateBackend>, StateError>> {
    let scheme = url.split_once("://")?.0.to_ascii_lowercase();
    match scheme.as_str() {
        "postgres" | "postgresql" => {
            Some(PostgresBackend::new(url, workspace).map(|b| Box::new(b) as Box<dyn StateBackend>))
        }
        "vault" => {
            Some(VaultBackend::open(url, workspace).map(|b| Box::new(b) as Box<dyn StateBackend>))
        }
        #[cfg(feature = "aws")]
        "s3" => Some(S3Backend::open(url, workspace).map(|b| Box::new(b) as Box<dyn StateBackend>)),
        #[cfg(not(feature = "aws"))]
        "s3" => Some(Err(StateError::InvalidUrl {
            url: redact_url(url.split('?').next().unwrap_or(url)),
            detail: "this anvil was built without the aws feature, which the S3 state backend needs; use a build with the default features (cargo build --features aws)".into(),
        })),
        _ => None,
    }
}
