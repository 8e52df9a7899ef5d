//! The `vault://MOUNT/PATH` state backend: a workspace's state, journal and lock as KV v2
//! secrets under `MOUNT/PATH/`, all written with check-and-set.
//!
//! | secret (under the mount) | what |
//! |---|---|
//! | `PATH/<ws>` | the last checkpoint: `{"anvil_state":1,"journal_seq":N,"state":{…}}` |
//! | `PATH/<ws>.journal/<n>` | journal chunk `n` (records since the checkpoint, for `n > N`) |
//! | `PATH/<ws>.lock` | the lock holder ([`LockInfo`]), or a release tombstone |
//!
//! **State.** Written with `cas` = the version read, so a writer that lost its lock can
//! never overwrite a newer state; a stored state of another lineage or a higher serial is
//! refused like the file backend does.
//!
//! **Journal.** Rewriting the whole state per record would make a 10k apply quadratic,
//! so records go into numbered chunk secrets, each created with `cas=0` (a chunk number
//! is written once; two writers cannot both append chunk `n`). A background task owns the
//! chunks: it takes every record queued while the previous write was in flight and writes
//! them as one chunk (group commit). Once the records since the last checkpoint outweigh
//! the state, the engine checkpoints: the state secret is written with `journal_seq` = the
//! last chunk it contains, then those chunks are deleted. Load reads the state and then
//! chunks `N+1, N+2, …` until one is missing. A run killed at any instant leaves either
//! the old state plus chunks (replayed; results at or below the state's serial are
//! skipped) or the new state plus garbage chunks at or below its `journal_seq` (ignored and
//! swept by the next write). Total work stays linear: every record is written once in a
//! chunk, and states are written geometrically less often as they grow.
//!
//! **Lock.** Created with `cas` = the version read when the secret is absent or holds a
//! tombstone (so two takers cannot both win), taken over with `cas` when its lease has
//! expired, renewed by a background task every lease/3 with `cas` (a failed renewal
//! means the lock was lost), released by writing a tombstone with `cas`.
//!
//! Vault is reached only through [`super::vault_kv`]; the token is never printed.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{oneshot, OnceCell};

use super::lock::whoami;
use super::remote_journal::{
    encode_snapshot, ChunkFailure, ChunkStart, ChunkStore, ChunkWriter, Due, QueuedJournal,
    Snapshot,
};
use super::vault_kv::{KvClient, KvConfig, KvError, KvErrorKind, VaultUrl};
use super::{
    parse_duration, Clock, Journal, JournalRecord, Lock, LockInfo, PendingOp, ResourceState, State,
    StateBackend, StateError, SystemClock, DEFAULT_LEASE, STATE_VERSION,
};

/// Format of the state secret (`anvil_state`) and of journal chunks (`anvil_journal`).
pub(super) const FORMAT: u64 = 1;
/// How often a waiting `lock` call looks again.
const POLL: Duration = Duration::from_millis(100);
/// Checkpoint once the journal since the last one holds this many bytes, or the state's
/// size if larger.
const MIN_CHECKPOINT_BYTES: u64 = 256 * 1024;
/// Largest journal chunk (Vault's default request limit is 32 MiB; storage backends
/// prefer entries well under 1 MiB).
const MAX_CHUNK_BYTES: usize = 512 * 1024;
/// Chunk deletions in flight at once after a checkpoint.
const DELETE_CONCURRENCY: usize = 8;

const HELD: u8 = 0;
const LOST: u8 = 1;
const RELEASED: u8 = 2;

/// State, journal and lock in Vault KV v2; see the module docs.
#[derive(Debug)]
pub struct VaultBackend {
    url: VaultUrl,
    workspace: String,
    /// Read from the environment at open; reported on first use.
    config: Result<KvConfig, KvError>,
    /// Built and checked (token, KV v2 mount) on first use.
    client: OnceCell<KvClient>,
    lease: Option<Duration>,
    clock: Arc<dyn Clock>,
    /// The broker store secret's version last read or written (the next write's `cas`)
    /// and the document of the last write attempt (to recognise our own write when an
    /// answer was lost).
    broker: Mutex<BrokerSeen>,
}

/// What this process last saw of the broker store secret.
#[derive(Debug, Default)]
struct BrokerSeen {
    version: Option<u64>,
    attempted: Option<Value>,
}

impl VaultBackend {
    /// The backend for `url` and `workspace`, configured from the environment
    /// (`VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_NAMESPACE`, `VAULT_CACERT`). Nothing is
    /// contacted yet.
    ///
    /// # Errors
    /// [`StateError::InvalidUrl`] for a malformed URL or a workspace name that would
    /// collide with another workspace's journal or lock secret.
    pub fn open(url: &str, workspace: &str) -> Result<VaultBackend, StateError> {
        let parsed = VaultUrl::parse(url).map_err(|e| StateError::InvalidUrl {
            url: e.url.clone(),
            detail: format!("{}; {}", e.detail, e.hint),
        })?;
        if workspace.ends_with(".lock")
            || workspace.ends_with(".journal")
            || workspace.ends_with(".broker")
        {
            return Err(StateError::InvalidUrl {
                url: url.to_string(),
                detail: format!(
                    "workspace name {workspace:?} ends in .lock, .journal or .broker, which the Vault backend uses for another workspace's lock, journal and broker store; rename the workspace (metadata.name)"
                ),
            });
        }
        Ok(VaultBackend {
            config: KvConfig::from_vars(url, |k| std::env::var(k).ok()),
            url: parsed,
            workspace: workspace.to_string(),
            client: OnceCell::new(),
            lease: None,
            clock: Arc::new(SystemClock),
            broker: Mutex::new(BrokerSeen::default()),
        })
    }

    /// Use this lock lease instead of `ANVIL_LOCK_LEASE` / the 30 s default.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Use `clock` for lock times (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn head_key(&self) -> String {
        self.url.key(&self.workspace)
    }

    fn lock_key(&self) -> String {
        self.url.key(&format!("{}.lock", self.workspace))
    }

    fn location(&self) -> String {
        format!("{}/{}", self.url.url.trim_end_matches('/'), self.workspace)
    }

    fn broker_key(&self) -> String {
        self.url.key(&format!("{}.broker", self.workspace))
    }

    fn broker_location(&self) -> String {
        format!("{}.broker", self.location())
    }

    fn broker_seen(&self) -> MutexGuard<'_, BrokerSeen> {
        self.broker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_location(&self) -> String {
        format!("{}.lock", self.location())
    }

    fn journal_location(&self) -> String {
        format!("{}.journal", self.location())
    }

    fn lease(&self) -> Result<Duration, StateError> {
        if let Some(l) = self.lease {
            return Ok(l);
        }
        let Ok(v) = std::env::var("ANVIL_LOCK_LEASE") else {
            return Ok(DEFAULT_LEASE);
        };
        match parse_duration(&v) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(StateError::InvalidLease {
                location: self.lock_location(),
                value: v,
            }),
        }
    }

    /// The checked client: the first call verifies the token and that the mount is KV v2.
    async fn client(&self) -> Result<&KvClient, StateError> {
        self.client
            .get_or_try_init(|| async {
                let config = self
                    .config
                    .clone()
                    .map_err(|e| backend_err("use", &self.location(), e))?;
                let client = KvClient::new(self.url.clone(), &config)
                    .map_err(|e| backend_err("use", &self.location(), e))?;
                client
                    .check()
                    .await
                    .map_err(|e| backend_err("use", &self.location(), e))?;
                Ok(client)
            })
            .await
    }

    /// The state secret: its content (if any) and version.
    async fn read_head(&self) -> Result<Head, StateError> {
        let client = self.client().await?;
        let location = self.location();
        let secret = client
            .read(&self.head_key())
            .await
            .map_err(|e| backend_err("read", &location, e))?;
        let Some(mut data) = secret.data else {
            return Ok(Head {
                state: None,
                seq: 0,
                version: secret.version,
            });
        };
        let format = data.get("anvil_state").and_then(Value::as_u64);
        if format != Some(FORMAT) {
            return Err(StateError::Corrupt {
                location,
                detail: format!(
                    "the secret is not an anvil state (anvil_state = {}, expected {FORMAT})",
                    format.map_or("missing".to_string(), |f| f.to_string())
                ),
            });
        }
        let seq = data.get("journal_seq").and_then(Value::as_u64).unwrap_or(0);
        let state_value = data
            .get_mut("state")
            .map(Value::take)
            .unwrap_or(Value::Null);
        Ok(Head {
            state: Some(decode_state(state_value, &location)?),
            seq,
            version: secret.version,
        })
    }

    /// Chunk `n`, if it exists.
    async fn read_chunk(&self, client: &KvClient, n: u64) -> Result<Option<Chunk>, StateError> {
        let location = chunk_location(&self.journal_location(), n);
        let secret = client
            .read(&chunk_key(&self.url, &self.workspace, n))
            .await
            .map_err(|e| backend_err("read", &location, e))?;
        let Some(data) = secret.data else {
            return Ok(None);
        };
        let chunk: Chunk =
            serde_json::from_value(data).map_err(|e| StateError::JournalCorrupt {
                journal: location.clone(),
                line: 1,
                detail: e.to_string(),
            })?;
        if chunk.anvil_journal != FORMAT {
            return Err(StateError::JournalCorrupt {
                journal: location,
                line: 1,
                detail: format!(
                    "journal format version {} is not supported (expected {FORMAT})",
                    chunk.anvil_journal
                ),
            });
        }
        Ok(Some(chunk))
    }

    /// The stored state with every journal chunk replayed, the head as read, and the
    /// number of the last chunk found.
    async fn load_full(&self) -> Result<(Head, State, u64), StateError> {
        let head = self.read_head().await?;
        let client = self.client().await?;
        let mut state = head.state.clone().unwrap_or_default();
        let covered = state.serial;
        let mut last = head.seq;
        loop {
            let n = last + 1;
            let Some(chunk) = self.read_chunk(client, n).await? else {
                break;
            };
            let location = chunk_location(&self.journal_location(), n);
            if head.state.is_none() {
                return Err(StateError::OrphanJournal {
                    location: self.location(),
                    journal: location,
                });
            }
            if chunk.lineage != state.lineage {
                return Err(StateError::LineageMismatch {
                    location: self.location(),
                    other: location,
                    expected: state.lineage,
                    found: chunk.lineage,
                });
            }
            if chunk.base_serial > covered {
                return Err(StateError::JournalAhead {
                    location: self.location(),
                    journal: location,
                    state_serial: covered,
                    base_serial: chunk.base_serial,
                });
            }
            for record in &chunk.records {
                state.apply_record_after(record, Some(covered));
            }
            last = n;
        }
        Ok((head, state, last))
    }

    fn own_lock<'a>(&self, lock: &'a dyn Lock) -> Result<&'a VaultLock, StateError> {
        let wrong = || StateError::WrongLock {
            location: self.location(),
            lock: lock.location(),
        };
        let own = lock
            .as_any()
            .downcast_ref::<VaultLock>()
            .ok_or_else(wrong)?;
        if own.location != self.lock_location() {
            return Err(wrong());
        }
        if own.status.load(Ordering::SeqCst) != HELD {
            return Err(StateError::LockLost {
                location: self.lock_location(),
            });
        }
        Ok(own)
    }

    /// Refuse to overwrite a stored state of another lineage or with a higher serial.
    fn check_overwrite(
        &self,
        head: &Head,
        current: &State,
        ours: &State,
    ) -> Result<(), StateError> {
        if head.state.is_none() {
            return Ok(());
        }
        if current.lineage != ours.lineage {
            return Err(StateError::LineageMismatch {
                location: self.location(),
                other: self.location(),
                expected: ours.lineage,
                found: current.lineage,
            });
        }
        if current.serial > ours.serial {
            return Err(StateError::StaleState {
                location: self.location(),
                stored: current.serial,
                ours: ours.serial,
            });
        }
        Ok(())
    }

    /// Write `state` as the head covering chunks up to `seq`, with `cas` = `version`;
    /// returns the new version and the state's size.
    async fn write_head(
        &self,
        client: &KvClient,
        state: &State,
        pending: Option<&[PendingOp]>,
        seq: u64,
        version: u64,
    ) -> Result<(u64, u64), StateError> {
        let bytes = encode_view(state, pending.unwrap_or(&state.pending), &self.location())?;
        let len = bytes.len() as u64;
        let v = client
            .write_raw(&self.head_key(), &head_bytes(seq, &bytes), version)
            .await
            .map_err(|e| backend_err("write", &self.location(), e))?;
        Ok((v, len))
    }

    /// Read the lock secret: the holder (None when free) and the version.
    async fn read_lock(&self, client: &KvClient) -> Result<(Option<LockInfo>, u64), StateError> {
        read_lock(client, &self.lock_key(), &self.lock_location()).await
    }
}

/// The state secret as read.
#[derive(Debug, Clone)]
struct Head {
    /// `None` when never written.
    state: Option<State>,
    /// Chunks up to this number are contained in `state`.
    seq: u64,
    /// The secret's version (0: never written), the `cas` for the next write.
    version: u64,
}

/// One journal chunk secret (also the S3 backend's chunk object).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Chunk {
    pub(super) anvil_journal: u64,
    pub(super) lineage: uuid::Uuid,
    /// Serial of the state this chunk continues.
    pub(super) base_serial: u64,
    pub(super) records: Vec<JournalRecord>,
}

fn chunk_key(url: &VaultUrl, workspace: &str, n: u64) -> String {
    url.key(&format!("{workspace}.journal/{n}"))
}

fn chunk_location(journal: &str, n: u64) -> String {
    format!("{journal}/{n}")
}

/// A Vault failure as a backend error naming `location` (never the token).
fn backend_err(action: &'static str, location: &str, e: KvError) -> StateError {
    match e.kind {
        KvErrorKind::BadUrl => StateError::InvalidUrl {
            url: e.url,
            detail: format!("{}; {}", e.detail, e.hint),
        },
        _ => StateError::Backend {
            action,
            location: location.to_string(),
            detail: e.detail,
            hint: e.hint,
        },
    }
}

pub(super) fn decode_state(value: Value, location: &str) -> Result<State, StateError> {
    let version = value.get("version").and_then(Value::as_u64);
    match version {
        Some(v) if v == u64::from(STATE_VERSION) => {}
        Some(found) => {
            return Err(StateError::UnsupportedVersion {
                location: location.to_string(),
                found,
            })
        }
        None => {
            return Err(StateError::Corrupt {
                location: location.to_string(),
                detail: "the state has no format version".into(),
            })
        }
    }
    serde_json::from_value(value).map_err(|e| StateError::Corrupt {
        location: location.to_string(),
        detail: e.to_string(),
    })
}

/// A [`State`] with another `pending` list, serialized without cloning the resources.
#[derive(Serialize)]
struct StateView<'a> {
    version: u32,
    lineage: uuid::Uuid,
    serial: u64,
    resources: &'a std::collections::BTreeMap<String, ResourceState>,
    pending: &'a [PendingOp],
}

pub(super) fn encode_view(
    state: &State,
    pending: &[PendingOp],
    location: &str,
) -> Result<Vec<u8>, StateError> {
    let view = StateView {
        version: state.version,
        lineage: state.lineage,
        serial: state.serial,
        resources: &state.resources,
        pending,
    };
    serde_json::to_vec(&view).map_err(|e| StateError::Serialize {
        location: location.to_string(),
        source: e,
    })
}

/// The state secret's data around already serialized state bytes.
pub(super) fn head_bytes(seq: u64, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(state.len() + 64);
    out.extend_from_slice(
        format!("{{\"anvil_state\":{FORMAT},\"journal_seq\":{seq},\"state\":").as_bytes(),
    );
    out.extend_from_slice(state);
    out.push(b'}');
    out
}

/// A chunk secret's data around already serialized records.
pub(super) fn chunk_bytes(lineage: uuid::Uuid, base_serial: u64, records: &[&[u8]]) -> Vec<u8> {
    let size: usize = records.iter().map(|r| r.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 128);
    out.extend_from_slice(
        format!("{{\"anvil_journal\":{FORMAT},\"lineage\":\"{lineage}\",\"base_serial\":{base_serial},\"records\":[")
            .as_bytes(),
    );
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r);
    }
    out.extend_from_slice(b"]}");
    out
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The lock holder in the lock secret (None when absent or a release tombstone), and the
/// secret's version.
async fn read_lock(
    client: &KvClient,
    key: &str,
    location: &str,
) -> Result<(Option<LockInfo>, u64), StateError> {
    let secret = client
        .read(key)
        .await
        .map_err(|e| backend_err("read", location, e))?;
    let holder = match secret.data {
        Some(data) if data.get("id").is_some() => Some(
            serde_json::from_value::<LockInfo>(data).map_err(|e| StateError::LockCorrupt {
                location: location.to_string(),
                detail: e.to_string(),
            })?,
        ),
        _ => None,
    };
    Ok((holder, secret.version))
}

/// Write a release tombstone if the lock is still `id`'s. Retries when a concurrent
/// renewal changed the version in between. Returns whether the lock was `id`'s.
async fn release_lock(
    client: &KvClient,
    key: &str,
    location: &str,
    id: &str,
) -> Result<bool, StateError> {
    for _ in 0..3 {
        let (holder, version) = read_lock(client, key, location).await?;
        if holder.as_ref().is_none_or(|h| h.id != id) {
            return Ok(false);
        }
        let tombstone =
            serde_json::json!({ "released": Utc::now().to_rfc3339(), "id_released": id });
        match client.write(key, &tombstone, version).await {
            Ok(_) => return Ok(true),
            Err(e) if e.kind == KvErrorKind::CasMismatch => continue,
            Err(e) => return Err(backend_err("release", location, e)),
        }
    }
    Ok(false)
}

#[async_trait]
impl StateBackend for VaultBackend {
    fn describe(&self) -> String {
        self.location()
    }

    async fn load(&self) -> Result<State, StateError> {
        Ok(self.load_full().await?.1)
    }

    async fn exists(&self) -> Result<bool, StateError> {
        let head = self.read_head().await?;
        if head.state.is_some() {
            return Ok(true);
        }
        let client = self.client().await?;
        Ok(self.read_chunk(client, head.seq + 1).await?.is_some())
    }

    async fn load_broker_store(&self) -> Result<Option<Value>, StateError> {
        let client = self.client().await?;
        let location = self.broker_location();
        let secret = client
            .read(&self.broker_key())
            .await
            .map_err(|e| backend_err("read the broker store of", &location, e))?;
        self.broker_seen().version = Some(secret.version);
        Ok(secret.data)
    }

    async fn write_broker_store(&self, doc: &Value) -> Result<(), StateError> {
        if !doc.is_object() {
            return Err(StateError::Backend {
                action: "write the broker store to",
                location: self.broker_location(),
                detail: "the broker store must be a JSON object to be a Vault secret".into(),
                hint: "this is a bug in anvil; report it".into(),
            });
        }
        let client = self.client().await?;
        let location = self.broker_location();
        let key = self.broker_key();
        let known = self.broker_seen().version;
        let cas = match known {
            Some(v) => v,
            None => {
                client
                    .read(&key)
                    .await
                    .map_err(|e| backend_err("read the broker store of", &location, e))?
                    .version
            }
        };
        let previous = self.broker_seen().attempted.replace(doc.clone());
        // Check-and-set against the version this process last saw: a second broker
        // writing the same workspace's store is refused instead of losing its changes.
        let written = match client.write(&key, doc, cas).await {
            Ok(v) => v,
            Err(e) if e.kind == KvErrorKind::CasMismatch => {
                // The previous write may have landed although its answer was lost: if
                // the stored document is the one we attempted last, continue from it.
                let current = client
                    .read(&key)
                    .await
                    .map_err(|e| backend_err("read the broker store of", &location, e))?;
                let ours = current.data.is_some()
                    && (current.data == previous || current.data.as_ref() == Some(doc));
                if !ours {
                    return Err(StateError::Backend {
                        action: "write the broker store to",
                        location,
                        detail: format!(
                            "another writer changed it (version {} stored, {cas} expected)",
                            current.version
                        ),
                        hint: "run one `anvil broker` per workspace; restart this one to read the store again".into(),
                    });
                }
                client
                    .write(&key, doc, current.version)
                    .await
                    .map_err(|e| backend_err("write the broker store to", &location, e))?
            }
            Err(e) => return Err(backend_err("write the broker store to", &location, e)),
        };
        self.broker_seen().version = Some(written);
        Ok(())
    }

    async fn lock(&self, operation: &str, timeout: Duration) -> Result<Box<dyn Lock>, StateError> {
        let lease = self.lease()?;
        let client = self.client().await?;
        let (who, host) = whoami();
        let id = uuid::Uuid::new_v4().to_string();
        let start = Instant::now();
        loop {
            let (holder, version) = self.read_lock(client).await?;
            let now = self.clock.now();
            let free = holder.as_ref().is_none_or(|h| h.expires <= now);
            if free {
                let me = LockInfo {
                    id: id.clone(),
                    who: who.clone(),
                    host: host.clone(),
                    pid: std::process::id(),
                    operation: operation.to_string(),
                    created: now,
                    expires: add(now, lease),
                };
                let data = serde_json::to_value(&me).unwrap_or(Value::Null);
                match client.write(&self.lock_key(), &data, version).await {
                    Ok(v) => {
                        return Ok(Box::new(VaultLock::start(
                            client.clone(),
                            self.lock_key(),
                            self.lock_location(),
                            me,
                            v,
                            lease,
                            self.clock.clone(),
                        )))
                    }
                    // Someone else took or renewed it between our read and write.
                    Err(e) if e.kind == KvErrorKind::CasMismatch => continue,
                    Err(e) => return Err(backend_err("take the lock", &self.lock_location(), e)),
                }
            }
            let waited = start.elapsed();
            if waited >= timeout {
                if let Some(info) = holder {
                    return Err(StateError::Locked {
                        info: Box::new(info),
                        location: self.lock_location(),
                    });
                }
            }
            tokio::time::sleep(
                POLL.min(
                    timeout
                        .saturating_sub(waited)
                        .max(Duration::from_millis(10)),
                ),
            )
            .await;
        }
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        let client = self.client().await?;
        let (holder, _) = self.read_lock(client).await?;
        let Some(holder) = holder else {
            return Err(StateError::NotLocked {
                location: self.lock_location(),
            });
        };
        if holder.id != id {
            return Err(StateError::LockIdMismatch {
                location: self.lock_location(),
                requested: id.to_string(),
                actual: Box::new(holder),
            });
        }
        if release_lock(client, &self.lock_key(), &self.lock_location(), id).await? {
            Ok(())
        } else {
            Err(StateError::NotLocked {
                location: self.lock_location(),
            })
        }
    }

    async fn write(&self, state: &State, lock: &dyn Lock) -> Result<(), StateError> {
        self.own_lock(lock)?;
        let client = self.client().await?;
        let (head, current, last) = self.load_full().await?;
        self.check_overwrite(&head, &current, state)?;
        self.write_head(client, state, None, last, head.version)
            .await?;
        // The new head contains every chunk up to `last`: they are garbage now.
        delete_chunks(client, &self.url, &self.workspace, (head.seq + 1)..=last).await;
        Ok(())
    }

    async fn journal(&self, base: &State, lock: &dyn Lock) -> Result<Box<dyn Journal>, StateError> {
        let own = self.own_lock(lock)?;
        let client = self.client().await?;
        let (head, current, last) = self.load_full().await?;
        self.check_overwrite(&head, &current, base)?;
        // The journal continues the stored state, so that state must be exactly `base`.
        let (version, size) = if last > head.seq || head.state.as_ref() != Some(base) {
            let written = self
                .write_head(client, base, None, last, head.version)
                .await?;
            delete_chunks(client, &self.url, &self.workspace, (head.seq + 1)..=last).await;
            written
        } else {
            let size = encode_view(base, &base.pending, &self.location())?.len() as u64;
            (head.version, size)
        };
        Ok(Box::new(start_journal(
            client.clone(),
            self,
            base,
            own.status.clone(),
            last,
            version,
            size,
        )))
    }

    async fn has_journal(&self) -> bool {
        let Ok(head) = self.read_head().await else {
            return false;
        };
        let Ok(client) = self.client().await else {
            return false;
        };
        matches!(self.read_chunk(client, head.seq + 1).await, Ok(Some(_)))
    }
}

/// Delete chunk secrets `range` (best effort: a leftover chunk at or below the head's
/// `journal_seq` is ignored by load and swept by the next write).
async fn delete_chunks(
    client: &KvClient,
    url: &VaultUrl,
    workspace: &str,
    range: std::ops::RangeInclusive<u64>,
) {
    futures::stream::iter(range)
        .map(|n| {
            let key = chunk_key(url, workspace, n);
            async move {
                if let Err(e) = client.delete_all(&key).await {
                    tracing::debug!("deleting journal chunk {key}: {e}");
                }
            }
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

// ------------------------------------------------------------------ lock

/// The Vault state lock, renewed by a background task while it lives.
#[derive(Debug)]
pub struct VaultLock {
    info: LockInfo,
    location: String,
    key: String,
    status: Arc<AtomicU8>,
    client: KvClient,
    stop: Option<oneshot::Sender<()>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl VaultLock {
    fn start(
        client: KvClient,
        key: String,
        location: String,
        info: LockInfo,
        version: u64,
        lease: Duration,
        clock: Arc<dyn Clock>,
    ) -> VaultLock {
        let status = Arc::new(AtomicU8::new(HELD));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let interval = (lease / 3).max(Duration::from_millis(10));
        let renewer = {
            let client = client.clone();
            let key = key.clone();
            let status = status.clone();
            let mut info = info.clone();
            tokio::spawn(async move {
                let mut version = version;
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        () = tokio::time::sleep(interval) => {}
                    }
                    let mut next = info.clone();
                    next.expires = add(clock.now(), lease);
                    let data = serde_json::to_value(&next).unwrap_or(Value::Null);
                    match client.write(&key, &data, version).await {
                        Ok(v) => {
                            version = v;
                            info = next;
                        }
                        Err(e) if e.kind == KvErrorKind::CasMismatch => {
                            // Someone took it over (our lease ran out) or force-unlocked it.
                            let _ = status.compare_exchange(
                                HELD,
                                LOST,
                                Ordering::SeqCst,
                                Ordering::SeqCst,
                            );
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("renewing the state lock: {e}");
                            if clock.now() >= info.expires {
                                let _ = status.compare_exchange(
                                    HELD,
                                    LOST,
                                    Ordering::SeqCst,
                                    Ordering::SeqCst,
                                );
                                return;
                            }
                        }
                    }
                }
            })
        };
        VaultLock {
            info,
            location,
            key,
            status,
            client,
            stop: Some(stop),
            renewer: Some(renewer),
        }
    }
}

impl Lock for VaultLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    fn is_lost(&self) -> bool {
        self.status.load(Ordering::SeqCst) == LOST
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for VaultLock {
    fn drop(&mut self) {
        let was = self.status.swap(RELEASED, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if was != HELD {
            return;
        }
        // Drop cannot await, and may run on a runtime worker: release on a thread of its
        // own with its own small runtime and a fresh HTTP client, and wait for it so the
        // lock is free when the command returns.
        let client = self.client.fresh();
        let (key, location, id) = (
            self.key.clone(),
            self.location.clone(),
            self.info.id.clone(),
        );
        let released = std::thread::Builder::new()
            .name("anvil-lock-release".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => {
                        if let Err(e) = rt.block_on(release_lock(&client, &key, &location, &id)) {
                            tracing::warn!("releasing state lock: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("releasing state lock {location}: {e}"),
                }
            });
        if let Ok(t) = released {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------ journal

/// The journal's secrets: chunks under `<ws>.journal/` and the state secret.
struct VaultChunks {
    client: KvClient,
    url: VaultUrl,
    workspace: String,
    head_key: String,
    state_location: String,
    journal_location: Arc<str>,
    /// Version of the state secret (the `cas` of the next checkpoint).
    head_version: u64,
}

#[async_trait]
impl ChunkStore for VaultChunks {
    async fn create_chunk(&self, n: u64, data: Vec<u8>) -> Result<(), ChunkFailure> {
        let key = chunk_key(&self.url, &self.workspace, n);
        match self.client.write_raw(&key, &data, 0).await {
            Ok(_) => Ok(()),
            Err(e) => {
                Err(backend_err("append to", &chunk_location(&self.journal_location, n), e).into())
            }
        }
    }

    async fn write_head(&mut self, data: Vec<u8>, _serial: u64) -> Result<(), StateError> {
        match self
            .client
            .write_raw(&self.head_key, &data, self.head_version)
            .await
        {
            Ok(v) => {
                self.head_version = v;
                Ok(())
            }
            Err(e) => Err(backend_err("write", &self.state_location, e)),
        }
    }

    async fn delete_chunks(&self, range: std::ops::RangeInclusive<u64>) {
        delete_chunks(&self.client, &self.url, &self.workspace, range).await;
    }
}

/// The journal of a Vault state: chunks written by a [`ChunkWriter`]; see the module docs.
fn start_journal(
    client: KvClient,
    backend: &VaultBackend,
    base: &State,
    status: Arc<AtomicU8>,
    last_seq: u64,
    head_version: u64,
    state_size: u64,
) -> QueuedJournal<Snapshot> {
    let location: Arc<str> = Arc::from(backend.journal_location());
    let threshold = Arc::new(AtomicU64::new(MIN_CHECKPOINT_BYTES.max(state_size)));
    let chunks = VaultChunks {
        client,
        url: backend.url.clone(),
        workspace: backend.workspace.clone(),
        head_key: backend.head_key(),
        state_location: backend.location(),
        journal_location: location.clone(),
        head_version,
    };
    let start = ChunkStart {
        journal_location: location.clone(),
        lock_location: backend.lock_location(),
        lineage: base.lineage,
        base_serial: base.serial,
        last_seq,
        status,
        held: HELD,
        threshold: threshold.clone(),
        min_checkpoint_bytes: MIN_CHECKPOINT_BYTES,
        max_chunk_bytes: MAX_CHUNK_BYTES,
    };
    QueuedJournal::start(
        ChunkWriter::new(chunks, start),
        location,
        base.pending.clone(),
        threshold,
        Due::Bytes,
        encode_snapshot,
    )
}
