//! The `vault` provider: secrets in a Vault KV v2 engine.
//!
//! - `vault_secret` owns one secret: create and update write `data/<path>` (a full
//!   replace), delete removes all versions (`DELETE metadata/<path>`), read compares the
//!   real data by fingerprint so drift shows up as a change. `data` is sensitive.
//! - `vault_index_entry` owns one key of a shared index secret (Blacksmith's `db` map of
//!   instance id → object). Writes read-modify-write the whole index with check-and-set
//!   and retry on a CAS mismatch, so concurrent writers never lose an entry.
//!
//! Configuration comes from the environment on first use (`VAULT_ADDR`, `VAULT_TOKEN` or
//! `VAULT_ROLE_ID` + `VAULT_SECRET_ID`, `VAULT_CACERT`, `VAULT_NAMESPACE`), so specs
//! without vault resources never need it. Each mount is checked to be KV v2 on first use.
//! The HTTP client is [`client`], a thin reqwest client (see its module doc for why).

pub mod client;

use super::{Applied, ChangeRequest, Provider, ProviderError};
use crate::model::{AttrKind, AttrSchema, ResourceSchema};
use crate::state::{fingerprint, ResourceState};
use async_trait::async_trait;
use client::{Client, Config, Secret, VaultError};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};

/// The mount used when a resource sets none.
pub const DEFAULT_MOUNT: &str = "secret";

/// How many times an index write is tried when check-and-set keeps failing.
pub const MAX_CAS_ATTEMPTS: u32 = 20;

/// How many vault operations run at once.
const CONCURRENCY: usize = 10;

/// The `vault` provider.
pub struct VaultProvider {
    /// Explicit configuration; `None` reads the environment on first use.
    config: Option<Config>,
    /// Settings from the spec, by environment variable name, read before the environment.
    settings: BTreeMap<String, String>,
    client: OnceCell<Client>,
    checked_mounts: Mutex<HashSet<String>>,
    /// Group commit and shared reads per index secret (mount, path).
    indexes: std::sync::Mutex<HashMap<(String, String), Arc<IndexQueue>>>,
}

impl Default for VaultProvider {
    fn default() -> Self {
        VaultProvider::new()
    }
}

impl VaultProvider {
    /// A provider configured from the environment on first use.
    #[must_use]
    pub fn new() -> VaultProvider {
        VaultProvider {
            config: None,
            settings: BTreeMap::new(),
            client: OnceCell::new(),
            checked_mounts: Mutex::new(HashSet::new()),
            indexes: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A provider configured on first use from `settings` (environment variable names to
    /// values, e.g. a Foundation's `vault` block), falling back to the environment.
    #[must_use]
    pub fn with_settings(settings: BTreeMap<String, String>) -> VaultProvider {
        VaultProvider {
            settings,
            ..VaultProvider::new()
        }
    }

    /// A provider with an explicit configuration (library use and tests).
    #[must_use]
    pub fn with_config(config: Config) -> VaultProvider {
        VaultProvider {
            config: Some(config),
            ..VaultProvider::new()
        }
    }

    /// The client, connected on first use, after checking that `mount` is KV v2.
    async fn client_for(&self, mount: &str) -> Result<&Client, ProviderError> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let config = match &self.config {
                    Some(c) => c.clone(),
                    None => Config::from_vars(|n| {
                        self.settings
                            .get(n)
                            .cloned()
                            .or_else(|| crate::providers::env_var(n))
                    })?,
                };
                Client::connect(&config).await
            })
            .await
            .map_err(to_provider)?;
        let mut checked = self.checked_mounts.lock().await;
        if !checked.contains(mount) {
            client.check_kv2_mount(mount).await.map_err(to_provider)?;
            checked.insert(mount.to_string());
        }
        Ok(client)
    }

    /// Read-modify-write of one key of an index secret, retried on CAS mismatches.
    /// `value` None removes the key. Returns the index version written (or read, when
    /// nothing had to change).
    ///
    /// Writers of one index in this process commit as a group: each queues its change,
    /// and whoever holds the index's write turn applies every queued change in one
    /// read-modify-write. So a thousand entries cost a few writes, not a thousand CAS
    /// races. Other processes are still kept honest by check-and-set.
    ///
    /// # Errors
    /// Vault refuses, or CAS kept failing [`MAX_CAS_ATTEMPTS`] times.
    pub async fn index_set(
        &self,
        mount: &str,
        path: &str,
        key: &str,
        value: Option<&Value>,
    ) -> Result<u64, ProviderError> {
        self.index_set_preserving(mount, path, key, value, &[])
            .await
    }

    /// [`VaultProvider::index_set`], keeping the fields named in `preserve` that the
    /// entry has in Vault and `value` lacks (marks other writers own, such as the
    /// reconciler's `reconciled_at` or `orphaned`).
    ///
    /// # Errors
    /// As [`VaultProvider::index_set`].
    pub async fn index_set_preserving(
        &self,
        mount: &str,
        path: &str,
        key: &str,
        value: Option<&Value>,
        preserve: &[String],
    ) -> Result<u64, ProviderError> {
        let q = self.index_queue(mount, path);
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock_plain(&q.pending).push(IndexOp {
            key: key.to_string(),
            value: value.cloned(),
            preserve: preserve.to_vec(),
            done: tx,
        });
        {
            let _turn = q.writer.lock().await;
            let batch = std::mem::take(&mut *lock_plain(&q.pending));
            if !batch.is_empty() {
                let result = self.index_apply(mount, path, &batch).await;
                for op in batch {
                    let _ = op.done.send(result.clone());
                }
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(ProviderError::new(format!(
                "the write of key `{key}` to {mount}/{path} was lost inside anvil: run again"
            )))
        })
    }

    /// One read-modify-write applying `ops` in order, retried on CAS mismatches.
    async fn index_apply(
        &self,
        mount: &str,
        path: &str,
        ops: &[IndexOp],
    ) -> Result<u64, ProviderError> {
        let client = self.client_for(mount).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = client.read(mount, path).await.map_err(to_provider)?;
            let mut merged: Option<Map<String, Value>> = None;
            for op in ops {
                let base = merged.as_ref().or(current.data.as_ref());
                let value = op
                    .value
                    .as_ref()
                    .map(|v| with_preserved(v, base.and_then(|b| b.get(&op.key)), &op.preserve));
                if let Some(m) = merge_index(base, &op.key, value.as_ref()) {
                    merged = Some(m);
                }
            }
            let Some(merged) = merged else {
                return Ok(current.version);
            };
            match client
                .write(mount, path, &merged, Some(current.version))
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) if should_retry_cas(&e, attempt) => {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) if e.cas_mismatch => {
                    return Err(ProviderError::new(format!(
                        "{} (gave up after {attempt} attempts; too many concurrent writers \
                         on this index, run again)",
                        e.message
                    )))
                }
                Err(e) => return Err(to_provider(e)),
            }
        }
    }

    /// Reads an index secret for an entry's refresh. Readers that arrive while a read
    /// is under way wait for the next one to start and share it, so refreshing a
    /// thousand entries of one index reads it a handful of times; every reader still
    /// gets a read that started after it asked.
    async fn index_read(&self, mount: &str, path: &str) -> Result<Arc<Secret>, ProviderError> {
        let q = self.index_queue(mount, path);
        let arrived = q.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = q.last_read.lock().await;
        if let Some((started, secret)) = last.as_ref() {
            if *started > arrived {
                return Ok(secret.clone());
            }
        }
        let started = q.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
        let client = self.client_for(mount).await?;
        let secret = Arc::new(client.read(mount, path).await.map_err(to_provider)?);
        *last = Some((started, secret.clone()));
        Ok(secret)
    }

    fn index_queue(&self, mount: &str, path: &str) -> Arc<IndexQueue> {
        lock_plain(&self.indexes)
            .entry((mount.to_string(), path.to_string()))
            .or_default()
            .clone()
    }
}

/// Locks a std mutex, going on with the data if a holder panicked.
fn lock_plain<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A queued index change and where its result goes.
struct IndexOp {
    key: String,
    /// The new entry, or `None` to remove it.
    value: Option<Value>,
    /// Fields of the entry in Vault to keep when `value` lacks them.
    preserve: Vec<String>,
    done: tokio::sync::oneshot::Sender<Result<u64, ProviderError>>,
}

/// `value` with the `preserve` fields of `current` it lacks copied in.
fn with_preserved(value: &Value, current: Option<&Value>, preserve: &[String]) -> Value {
    let (Value::Object(v), Some(Value::Object(cur))) = (value, current) else {
        return value.clone();
    };
    let mut out = v.clone();
    for k in preserve {
        if let (false, Some(old)) = (out.contains_key(k), cur.get(k)) {
            out.insert(k.clone(), old.clone());
        }
    }
    Value::Object(out)
}

/// Per index secret: the changes waiting to be written, the write turn, and the last
/// shared read.
#[derive(Default)]
struct IndexQueue {
    pending: std::sync::Mutex<Vec<IndexOp>>,
    writer: Mutex<()>,
    /// Counts readers arriving and reads starting, to know which reads are fresh enough.
    arrivals: AtomicU64,
    /// The last read: the count when it started, and what it got.
    last_read: Mutex<Option<(u64, Arc<Secret>)>>,
}

fn to_provider(e: VaultError) -> ProviderError {
    ProviderError {
        message: e.message,
        retryable: e.retryable,
    }
}

/// The index after setting (`Some`) or removing (`None`) `key`; `None` when nothing
/// changes (so no write is needed).
#[must_use]
pub fn merge_index(
    current: Option<&Map<String, Value>>,
    key: &str,
    value: Option<&Value>,
) -> Option<Map<String, Value>> {
    let mut index = current.cloned().unwrap_or_default();
    match value {
        Some(v) => {
            if index.get(key) == Some(v) {
                return None;
            }
            index.insert(key.to_string(), v.clone());
        }
        None => {
            index.remove(key)?;
        }
    }
    Some(index)
}

/// Whether a failed index write should be tried again: only CAS mismatches, and only
/// while attempts remain.
#[must_use]
pub fn should_retry_cas(e: &VaultError, attempt: u32) -> bool {
    e.cas_mismatch && attempt < MAX_CAS_ATTEMPTS
}

/// A small randomized backoff growing with the attempt (5–10 ms, up to ~160–320 ms).
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    let jitter = (uuid::Uuid::new_v4().as_u128() % u128::from(base)) as u64;
    Duration::from_millis(base + jitter)
}

fn str_attr<'a>(
    attrs: &'a BTreeMap<String, Value>,
    name: &str,
    address: &str,
) -> Result<&'a str, ProviderError> {
    attrs.get(name).and_then(Value::as_str).ok_or_else(|| {
        ProviderError::new(format!(
            "{address}: attribute `{name}` must be a string; set it in the spec"
        ))
    })
}

fn map_attr<'a>(
    attrs: &'a BTreeMap<String, Value>,
    name: &str,
    address: &str,
) -> Result<&'a Map<String, Value>, ProviderError> {
    attrs.get(name).and_then(Value::as_object).ok_or_else(|| {
        ProviderError::new(format!(
            "{address}: attribute `{name}` must be a map; set it in the spec"
        ))
    })
}

fn mount_attr(attrs: &BTreeMap<String, Value>) -> &str {
    attrs
        .get("mount")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MOUNT)
}

fn clean_path(p: &str) -> &str {
    p.trim_matches('/')
}

fn prefix(address: &str) -> impl Fn(ProviderError) -> ProviderError + '_ {
    move |e| ProviderError {
        message: format!("{address}: {}", e.message),
        retryable: e.retryable,
    }
}

fn secret_schema() -> ResourceSchema {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "path".into(),
        AttrSchema::new(
            AttrKind::String,
            "Secret path under the mount, e.g. `app/db`.",
        )
        .required()
        .force_new(),
    );
    attributes.insert(
        "mount".into(),
        AttrSchema::new(AttrKind::String, "KV v2 mount; default `secret`.").force_new(),
    );
    attributes.insert(
        "data".into(),
        AttrSchema::new(
            AttrKind::Map,
            "The secret's key/value data; stored in state only as a fingerprint.",
        )
        .required()
        .sensitive(),
    );
    let mut outputs = BTreeMap::new();
    outputs.insert("version".into(), "The secret's current KV version.");
    ResourceSchema {
        ty: "vault_secret".into(),
        provider: "vault".into(),
        attributes,
        outputs,
    }
}

fn index_schema() -> ResourceSchema {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "path".into(),
        AttrSchema::new(
            AttrKind::String,
            "Path of the shared index secret, e.g. `db`.",
        )
        .required()
        .force_new(),
    );
    attributes.insert(
        "mount".into(),
        AttrSchema::new(AttrKind::String, "KV v2 mount; default `secret`.").force_new(),
    );
    attributes.insert(
        "key".into(),
        AttrSchema::new(AttrKind::String, "The key this entry owns in the index.")
            .required()
            .force_new(),
    );
    attributes.insert(
        "value".into(),
        AttrSchema::new(AttrKind::Map, "The entry's value (not sensitive).").required(),
    );
    attributes.insert(
        "preserve_keys".into(),
        AttrSchema::new(
            AttrKind::List,
            "Fields of the entry that other writers own (e.g. the reconciler's marks): kept from Vault when `value` lacks them. Pair with `ignore_changes: [value.KEY]`.",
        ),
    );
    attributes.insert(
        "stamp_on_create".into(),
        AttrSchema::new(
            AttrKind::Map,
            "Keys of `value` to fill with the time of the first write: key → `unix` (seconds) or `rfc3339`. Pair with `ignore_changes: [value.KEY]`.",
        ),
    );
    let mut outputs = BTreeMap::new();
    outputs.insert(
        "version".into(),
        "The index secret's version after the write.",
    );
    ResourceSchema {
        ty: "vault_index_entry".into(),
        provider: "vault".into(),
        attributes,
        outputs,
    }
}

fn version_outputs(version: u64) -> BTreeMap<String, Value> {
    let mut outputs = BTreeMap::new();
    outputs.insert("version".to_string(), Value::from(version));
    outputs
}

impl VaultProvider {
    async fn write(&self, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let attrs = req.attributes;
        let mount = mount_attr(attrs);
        let path = clean_path(str_attr(attrs, "path", req.address)?);
        let version = match req.ty {
            "vault_secret" => {
                let data = map_attr(attrs, "data", req.address)?;
                let client = self.client_for(mount).await?;
                client
                    .write(mount, path, data, None)
                    .await
                    .map_err(to_provider)?
            }
            "vault_index_entry" => {
                let key = str_attr(attrs, "key", req.address)?;
                let mut value = map_attr(attrs, "value", req.address)?.clone();
                stamp(&mut value, attrs, req.address)?;
                let value = Value::Object(value);
                let preserve: Vec<String> = attrs
                    .get("preserve_keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let version = self
                    .index_set_preserving(mount, path, key, Some(&value), &preserve)
                    .await?;
                let mut applied = attrs.clone();
                applied.insert("value".into(), value);
                return Ok(Applied {
                    attributes: applied,
                    outputs: version_outputs(version),
                });
            }
            other => return Err(unknown_type(other)),
        };
        Ok(Applied {
            attributes: attrs.clone(),
            outputs: version_outputs(version),
        })
    }
}

/// Fills the keys named by `stamp_on_create` that the value lacks with the current time:
/// `unix` as seconds, `rfc3339` as text. Keys already present keep their value, so the
/// times written at creation survive updates (the Foundation kind ignores changes to them).
fn stamp(
    value: &mut serde_json::Map<String, Value>,
    attrs: &BTreeMap<String, Value>,
    address: &str,
) -> Result<(), ProviderError> {
    let Some(stamps) = attrs.get("stamp_on_create") else {
        return Ok(());
    };
    let Some(stamps) = stamps.as_object() else {
        return Err(ProviderError::new(format!(
            "{address}: attribute `stamp_on_create` must be a map of key to `unix` or `rfc3339`"
        )));
    };
    let now = chrono::Utc::now();
    for (key, format) in stamps {
        if value.contains_key(key) {
            continue;
        }
        let stamped = match format.as_str() {
            Some("unix") => Value::from(now.timestamp()),
            Some("rfc3339") => Value::from(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            _ => {
                return Err(ProviderError::new(format!(
                    "{address}: stamp_on_create.{key} is {format}: expected `unix` or `rfc3339`"
                )))
            }
        };
        value.insert(key.clone(), stamped);
    }
    Ok(())
}

/// An import ID: `[MOUNT:]PATH` for `vault_secret`, `[MOUNT:]PATH#KEY` for
/// `vault_index_entry`. Returns (mount given, path, key).
fn parse_import_id<'a>(
    address: &str,
    ty: &str,
    id: &'a str,
) -> Result<(Option<&'a str>, &'a str, Option<&'a str>), ProviderError> {
    let form = match ty {
        "vault_secret" => "[MOUNT:]PATH, e.g. `app/creds` or `secret:app/creds`",
        _ => "[MOUNT:]PATH#KEY, e.g. `db#6f0c1e2a` or `secret:db#6f0c1e2a`",
    };
    let bad = |why: &str| {
        ProviderError::new(format!(
            "{address}: import ID `{id}` {why}; a {ty} is imported by {form}"
        ))
    };
    let (rest, key) = match (ty, id.rsplit_once('#')) {
        ("vault_index_entry", Some((rest, key))) if !key.is_empty() => (rest, Some(key)),
        ("vault_index_entry", _) => return Err(bad("names no key (`#KEY` is missing)")),
        (_, Some(_)) => return Err(bad("contains `#`, which only index entries use")),
        _ => (id, None),
    };
    let (mount, path) = match rest.split_once(':') {
        Some((m, p)) => (Some(m.trim_matches('/')), p),
        None => (None, rest),
    };
    let path = clean_path(path);
    if path.is_empty() || mount.is_some_and(str::is_empty) {
        return Err(bad("has an empty mount or path"));
    }
    Ok((mount, path, key))
}

fn unknown_type(ty: &str) -> ProviderError {
    ProviderError::new(format!("the vault provider has no resource type `{ty}`"))
}

#[async_trait]
impl Provider for VaultProvider {
    fn name(&self) -> &'static str {
        "vault"
    }

    fn schemas(&self) -> Vec<ResourceSchema> {
        vec![secret_schema(), index_schema()]
    }

    fn concurrency_limit(&self) -> usize {
        CONCURRENCY
    }

    async fn read(
        &self,
        address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        let attrs = &recorded.attributes;
        let mount = mount_attr(attrs);
        let path = clean_path(str_attr(attrs, "path", address)?);
        let secret = if recorded.ty == "vault_index_entry" {
            self.index_read(mount, path)
                .await
                .map_err(prefix(address))?
        } else {
            let client = self.client_for(mount).await.map_err(prefix(address))?;
            Arc::new(
                client
                    .read(mount, path)
                    .await
                    .map_err(to_provider)
                    .map_err(prefix(address))?,
            )
        };
        let Some(data) = secret.data.as_ref() else {
            return Ok(None);
        };
        let mut observed = recorded.clone();
        match recorded.ty.as_str() {
            "vault_secret" => {
                observed.sensitive.insert(
                    "data".to_string(),
                    fingerprint(&Value::Object(data.clone())),
                );
                observed.outputs = version_outputs(secret.version);
            }
            "vault_index_entry" => {
                let key = str_attr(attrs, "key", address)?;
                let Some(value) = data.get(key) else {
                    return Ok(None);
                };
                observed
                    .attributes
                    .insert("value".to_string(), value.clone());
            }
            other => return Err(unknown_type(other)),
        }
        Ok(Some(observed))
    }

    /// `vault_secret` by `[MOUNT:]PATH`, `vault_index_entry` by `[MOUNT:]PATH#KEY`.
    async fn import(
        &self,
        address: &str,
        ty: &str,
        id: &str,
    ) -> Result<ResourceState, ProviderError> {
        if !matches!(ty, "vault_secret" | "vault_index_entry") {
            return Err(prefix(address)(unknown_type(ty)));
        }
        let (given_mount, path, key) = parse_import_id(address, ty, id)?;
        let mount = given_mount.unwrap_or(DEFAULT_MOUNT);
        let client = self.client_for(mount).await.map_err(prefix(address))?;
        let secret = client
            .read(mount, path)
            .await
            .map_err(to_provider)
            .map_err(prefix(address))?;
        let where_ = format!(
            "{}/v1/{mount}/data/{path}",
            client.addr().trim_end_matches('/')
        );
        let Some(data) = secret.data else {
            return Err(ProviderError::new(format!(
                "{address}: no secret at {where_} (import ID `{id}`); check the path with `vault kv get -mount={mount} {path}`"
            )));
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("path".to_string(), Value::String(path.to_string()));
        if let Some(m) = given_mount {
            attributes.insert("mount".to_string(), Value::String(m.to_string()));
        }
        let rec = match key {
            Some(key) => {
                let Some(value) = data.get(key) else {
                    return Err(ProviderError::new(format!(
                        "{address}: the index at {where_} has no key `{key}` (import ID `{id}`); check it with `vault kv get -mount={mount} {path}`"
                    )));
                };
                attributes.insert("key".to_string(), Value::String(key.to_string()));
                attributes.insert("value".to_string(), value.clone());
                super::imported_record(ty, "vault", attributes, version_outputs(secret.version))
            }
            None => {
                let mut rec = super::imported_record(
                    ty,
                    "vault",
                    attributes,
                    version_outputs(secret.version),
                );
                rec.sensitive
                    .insert("data".to_string(), fingerprint(&Value::Object(data)));
                rec
            }
        };
        Ok(rec)
    }

    fn import_id(&self, ty: &str, attributes: &BTreeMap<String, Value>) -> Option<String> {
        let path = clean_path(attributes.get("path")?.as_str()?);
        let mount = mount_attr(attributes);
        match ty {
            "vault_secret" => Some(format!("{mount}:{path}")),
            "vault_index_entry" => {
                let key = attributes.get("key")?.as_str()?;
                Some(format!("{mount}:{path}#{key}"))
            }
            _ => None,
        }
    }

    async fn create(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let address = req.address;
        self.write(&req).await.map_err(prefix(address))
    }

    async fn update(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let address = req.address;
        self.write(&req).await.map_err(prefix(address))
    }

    async fn delete(&self, address: &str, recorded: &ResourceState) -> Result<(), ProviderError> {
        let attrs = &recorded.attributes;
        let mount = mount_attr(attrs);
        let path = clean_path(str_attr(attrs, "path", address)?);
        let result = match recorded.ty.as_str() {
            "vault_secret" => match self.client_for(mount).await {
                Ok(client) => client.delete_all(mount, path).await.map_err(to_provider),
                Err(e) => Err(e),
            },
            "vault_index_entry" => {
                let key = str_attr(attrs, "key", address)?;
                self.index_set(mount, path, key, None).await.map(|_| ())
            }
            other => Err(unknown_type(other)),
        };
        result.map_err(prefix(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn merge_inserts_into_absent_index() {
        let v = json!({"plan": "small"});
        let m = merge_index(None, "a", Some(&v)).unwrap();
        assert_eq!(Value::Object(m), json!({"a": {"plan": "small"}}));
    }

    #[test]
    fn merge_keeps_other_keys() {
        let cur = obj(json!({"a": 1, "b": 2}));
        let v = json!({"x": true});
        let m = merge_index(Some(&cur), "c", Some(&v)).unwrap();
        assert_eq!(Value::Object(m), json!({"a": 1, "b": 2, "c": {"x": true}}));
        let m = merge_index(Some(&cur), "a", None).unwrap();
        assert_eq!(Value::Object(m), json!({"b": 2}));
    }

    #[test]
    fn merge_reports_no_change() {
        let cur = obj(json!({"a": {"x": 1}}));
        assert!(merge_index(Some(&cur), "a", Some(&json!({"x": 1}))).is_none());
        assert!(merge_index(Some(&cur), "zz", None).is_none());
        assert!(merge_index(None, "zz", None).is_none());
    }

    fn err(cas_mismatch: bool) -> VaultError {
        VaultError {
            message: "m".into(),
            status: Some(400),
            cas_mismatch,
            retryable: false,
        }
    }

    #[test]
    fn retries_only_cas_mismatches_and_only_so_often() {
        assert!(should_retry_cas(&err(true), 1));
        assert!(should_retry_cas(&err(true), MAX_CAS_ATTEMPTS - 1));
        assert!(!should_retry_cas(&err(true), MAX_CAS_ATTEMPTS));
        assert!(!should_retry_cas(&err(false), 1));
    }

    #[test]
    fn backoff_is_small_and_bounded() {
        for a in 1..=MAX_CAS_ATTEMPTS {
            let d = backoff(a);
            assert!(d >= Duration::from_millis(5) && d < Duration::from_millis(641));
        }
    }

    #[test]
    fn import_ids_parse_or_say_what_they_should_be() {
        let p = |ty, id| parse_import_id("a.b", ty, id);
        assert_eq!(
            p("vault_secret", "app/creds").unwrap(),
            (None, "app/creds", None)
        );
        assert_eq!(
            p("vault_secret", "kv:/app/creds/").unwrap(),
            (Some("kv"), "app/creds", None)
        );
        assert_eq!(
            p("vault_index_entry", "secret:db#i1").unwrap(),
            (Some("secret"), "db", Some("i1"))
        );
        for (ty, id, want) in [
            ("vault_index_entry", "db", "`#KEY` is missing"),
            ("vault_index_entry", "db#", "`#KEY` is missing"),
            ("vault_secret", "db#i1", "only index entries"),
            ("vault_secret", "", "empty mount or path"),
            ("vault_secret", ":x", "empty mount or path"),
        ] {
            let e = p(ty, id).unwrap_err().message;
            assert!(e.contains(want) && e.contains("[MOUNT:]PATH"), "{id}: {e}");
        }
        let v = VaultProvider::new();
        let attrs = |j: Value| j.as_object().unwrap().clone().into_iter().collect();
        assert_eq!(
            v.import_id("vault_secret", &attrs(json!({"path": "/app/creds"}))),
            Some("secret:app/creds".into())
        );
        assert_eq!(
            v.import_id(
                "vault_index_entry",
                &attrs(json!({"path": "db", "mount": "kv", "key": "i1"}))
            ),
            Some("kv:db#i1".into())
        );
    }

    #[test]
    fn schemas_mark_data_sensitive() {
        let s = secret_schema();
        assert!(s.attributes["data"].sensitive);
        assert!(s.attributes["path"].force_new);
        let i = index_schema();
        assert!(!i.attributes["value"].sensitive);
        assert!(i.attributes["key"].force_new);
    }
}
