//! One reconcile run: scan, match, back up, write back, mark orphans.
//!
//! The order inside a run, and why:
//! 1. List the Director's deployments. If that fails nothing else happens: without the
//!    list, every instance would look orphaned.
//! 2. Fetch each deployment's manifest (reused from the cache while younger than
//!    `cache_ttl`), at most `max_concurrency` at once, and match it to a plan.
//! 3. Read the `db` index once.
//! 4. Work through the matched instances and the newly orphaned entries in batches of
//!    `batch_size`, at most `max_concurrency` at once: back up, then write
//!    `{id}/manifest` (check-and-set against the version just read). A failed instance
//!    is retried `retry_attempts` times with a delay growing by `retry_delay` each time,
//!    then reported; the others go on.
//! 5. Write every index change of the run in one check-and-set read-modify-write of
//!    `db` (the one shared with the `vault_index_entry` type,
//!    `providers::vault::index::read_modify_write`), re-read and re-applied on a CAS
//!    conflict. One write per run, not per
//!    instance, keeps a 10,000-entry index from being rewritten 10,000 times; the
//!    changes are per-key merges, so concurrent writers of other keys lose nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::providers::retry::{self, Policy};
use crate::providers::vault::index;
use crate::providers::ErrorKind;

use super::matcher::{is_uuid, match_deployment, parse_manifest, Catalog, Match};
use super::settings::Settings;
use super::{
    Director, OpError, Orphan, RunError, RunReport, SecretStore, Skipped, Unmatched,
    ORPHANED_REASON,
};
use crate::model::foundation::INDEX_PATH;

/// Where the time comes from (the wall clock; a fixed one in tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How many times the index write is re-read and re-applied after CAS conflicts.
const MAX_CAS_CONFLICTS: u32 = 20;

/// The largest backup name taken for a unix time (9999-12-31T23:59:59Z); larger
/// numeric names are not backups this reconciler wrote and are left alone.
const MAX_BACKUP_TS: i64 = 253_402_300_799;

/// The reconciler: its clients, catalog, settings and the deployment cache that lives
/// across runs in watch mode.
pub struct Reconciler {
    director: Arc<dyn Director>,
    store: Arc<dyn SecretStore>,
    catalog: Catalog,
    settings: Settings,
    cache: Mutex<HashMap<String, (Instant, Arc<str>)>>,
    clock: Clock,
    runs: AtomicU64,
}

/// What was learnt about one listed deployment.
enum Detail {
    Manifest(Arc<str>),
    /// Listed, but gone by the time its manifest was asked for.
    Gone,
    /// Its manifest could not be fetched (an error was recorded).
    Failed,
}

/// Work for one instance.
enum Item {
    Sync(Match, Arc<str>),
    Orphan(String, Option<String>),
}

/// Changes to one index entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Patch {
    pub key: String,
    pub set: Map<String, Value>,
    pub set_if_absent: Map<String, Value>,
    pub remove: Vec<&'static str>,
    /// The entry was missing when this run read the index and the patch rebuilds it:
    /// only then is a missing entry created. Without it, an entry removed since the
    /// read (e.g. by `anvil destroy`) stays removed.
    pub rebuild: bool,
}

/// What applying patches did.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Applied {
    /// Whether the index changed.
    pub changed: bool,
    /// Patches not applied, and why.
    pub skipped: Vec<Skipped>,
}

/// Applies patches to an index. Never replaces an entry that is not a JSON object, and
/// never re-creates a missing entry unless the patch is a rebuild.
pub(super) fn apply_patches(index: &mut Map<String, Value>, patches: &[Patch]) -> Applied {
    let mut out = Applied::default();
    for p in patches {
        let e = match index.get_mut(&p.key) {
            Some(Value::Object(e)) => e,
            Some(other) => {
                out.skipped.push(Skipped {
                    key: p.key.clone(),
                    reason: format!(
                        "its db index entry is not a JSON object ({}), so it was left as it \
                         is; make it an object or remove it by hand",
                        json_kind(other)
                    ),
                });
                continue;
            }
            None if p.rebuild => {
                out.changed = true;
                index
                    .entry(p.key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                match index.get_mut(&p.key) {
                    Some(Value::Object(e)) => e,
                    _ => continue,
                }
            }
            None => {
                out.skipped.push(Skipped {
                    key: p.key.clone(),
                    reason: "its db index entry was removed while this run was going on \
                             (e.g. by `anvil destroy`), so it was not re-created; the next \
                             run rebuilds it if its deployment still exists"
                        .into(),
                });
                continue;
            }
        };
        let changed = &mut out.changed;
        for (k, v) in &p.set_if_absent {
            if e.get(k).is_none_or(Value::is_null) {
                e.insert(k.clone(), v.clone());
                *changed = true;
            }
        }
        for (k, v) in &p.set {
            if e.get(k) != Some(v) {
                e.insert(k.clone(), v.clone());
                *changed = true;
            }
        }
        for k in &p.remove {
            *changed |= e.remove(*k).is_some();
        }
    }
    out
}

/// A JSON value's kind, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The backups listed under a backup folder that this reconciler may count and prune:
/// names that are the canonical decimal form of a plausible unix time (no sign, no
/// leading zeros). Each comes with the name as listed, which is the one deleted.
fn backup_stamps(listed: &[String]) -> Vec<(i64, String)> {
    listed
        .iter()
        .filter_map(|k| {
            let n: i64 = k.parse().ok()?;
            ((0..=MAX_BACKUP_TS).contains(&n) && n.to_string() == *k).then(|| (n, k.clone()))
        })
        .collect()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What one instance's work produced.
#[derive(Default)]
struct Outcome {
    patch: Option<Patch>,
    synced: bool,
    cleared: Option<String>,
    rebuilt: Option<String>,
    orphan: Option<Orphan>,
    backups_written: usize,
    backups_deleted: usize,
    error: Option<RunError>,
}

impl Reconciler {
    /// A reconciler over these clients, using the wall clock.
    #[must_use]
    pub fn new(
        director: Arc<dyn Director>,
        store: Arc<dyn SecretStore>,
        catalog: Catalog,
        settings: Settings,
    ) -> Reconciler {
        Reconciler {
            director,
            store,
            catalog,
            settings,
            cache: Mutex::new(HashMap::new()),
            clock: Arc::new(Utc::now),
            runs: AtomicU64::new(0),
        }
    }

    /// The same reconciler reading the time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Reconciler {
        self.clock = clock;
        self
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Runs `op` until it succeeds, it fails for good, or `retry_attempts` retries are
    /// spent; the n-th retry waits n × `retry_delay`. Transient errors and
    /// check-and-set conflicts are retried (the one policy's runner, with the settings'
    /// linear delays).
    async fn retry<T, F, Fut>(&self, op: F) -> Result<T, OpError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OpError>>,
    {
        let delay = self.settings.retry_delay;
        let delays = (1..=self.settings.retry_attempts).map(move |n| delay * n);
        retry::run_with(
            delays,
            |e: &OpError| e.is_transient() || e.is_conflict(),
            op,
        )
        .await
        .map_err(|(mut e, attempts)| {
            if attempts > 1 {
                e.message = format!("{} (after {} retries)", e.message, attempts - 1);
            }
            e
        })
    }

    /// One run. Never fails as a whole: what went wrong is in [`RunReport::errors`].
    pub async fn run_once(&self) -> RunReport {
        let t0 = Instant::now();
        let now = (self.clock)();
        let mut report = RunReport {
            run: self.runs.fetch_add(1, Ordering::SeqCst) + 1,
            started_at: rfc3339(now),
            ..RunReport::default()
        };
        self.run_into(now, &mut report).await;
        report
            .matches
            .sort_by(|a, b| a.deployment.cmp(&b.deployment));
        report
            .unmatched
            .sort_by(|a, b| a.deployment.cmp(&b.deployment));
        report
            .orphaned
            .sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        report.newly_orphaned.sort();
        report.cleared.sort();
        report.rebuilt.sort();
        report.skipped.sort_by(|a, b| a.key.cmp(&b.key));
        report.duration = t0.elapsed();
        report.finished_at = (self.clock)().timestamp();
        report
    }

    async fn run_into(&self, now: DateTime<Utc>, report: &mut RunReport) {
        // 1. The deployments.
        let mut names = match self.retry(|| self.director.deployment_names()).await {
            Ok(n) => n,
            Err(e) => {
                report.errors.push(RunError {
                    subject: "deployments".into(),
                    message: format!(
                        "{e}; nothing was changed this run (orphans cannot be told without \
                         the list of deployments)"
                    ),
                });
                return;
            }
        };
        names.sort();
        names.dedup();
        report.deployments_scanned = names.len();
        let phase = Instant::now();

        // 2. Their manifests, and matches.
        let details = self.details(&names, report).await;
        let mut present: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut claimed: BTreeMap<String, (Match, Arc<str>)> = BTreeMap::new();
        let mut fetch_failed = false;
        for (name, detail) in names.iter().zip(details) {
            let text = match detail {
                Detail::Manifest(t) => t,
                Detail::Gone => {
                    present.remove(name.as_str());
                    continue;
                }
                Detail::Failed => {
                    fetch_failed = true;
                    continue;
                }
            };
            match match_deployment(&self.catalog, name, &parse_manifest(&text)) {
                // The matcher only gives UUIDs; checked again because the id becomes
                // part of Vault paths.
                Ok(m) if !is_uuid(&m.instance_id) => report.unmatched.push(Unmatched {
                    deployment: name.clone(),
                    reason: format!(
                        "its instance id `{}` is not a UUID; left alone",
                        m.instance_id.escape_debug()
                    ),
                }),
                Ok(m) => {
                    if let Some((first, _)) = claimed.get(&m.instance_id) {
                        report.unmatched.push(Unmatched {
                            deployment: name.clone(),
                            reason: format!(
                                "it is instance {} by {}, but deployment {} already is; left alone",
                                m.instance_id,
                                m.strategy.as_str(),
                                first.deployment
                            ),
                        });
                    } else {
                        claimed.insert(m.instance_id.clone(), (m, text));
                    }
                }
                Err(reason) => report.unmatched.push(Unmatched {
                    deployment: name.clone(),
                    reason,
                }),
            }
        }
        report.matches = claimed.values().map(|(m, _)| m.clone()).collect();
        tracing::debug!(elapsed = ?phase.elapsed(), deployments = names.len(), matched = report.matches.len(), "deployments scanned and matched");
        let phase = Instant::now();

        // 3. The index, read once.
        let index = match self.retry(|| self.store.read(INDEX_PATH)).await {
            Ok(s) => s.data.unwrap_or_default(),
            Err(e) => {
                report.errors.push(RunError {
                    subject: INDEX_PATH.into(),
                    message: format!("{e}; no instance was written back this run"),
                });
                return;
            }
        };

        // 4. The work: every match, and every entry whose deployment is gone.
        let claimed_ids: std::collections::HashSet<String> = claimed.keys().cloned().collect();
        let mut items: Vec<Item> = Vec::new();
        for (m, text) in claimed.into_values() {
            match index.get(&m.instance_id) {
                Some(v) if !v.is_object() => report.skipped.push(Skipped {
                    key: m.instance_id.clone(),
                    reason: format!(
                        "deployment {} matches it, but its db index entry is not a JSON \
                         object ({}); nothing was written for it: make the entry an object \
                         or remove it by hand",
                        m.deployment,
                        json_kind(v)
                    ),
                }),
                _ => items.push(Item::Sync(m, text)),
            }
        }
        for (id, entry) in &index {
            if claimed_ids.contains(id) {
                continue;
            }
            // Keys become Vault paths (`{id}/backups/…`): only UUIDs are acted on.
            if !is_uuid(id) {
                report.skipped.push(Skipped {
                    key: id.clone(),
                    reason: "this db index key is not an instance UUID (8-4-4-4-12 hex), so \
                             it is never backed up or marked; remove or rename it by hand if \
                             it is not wanted"
                        .into(),
                });
                continue;
            }
            if !entry.is_object() {
                report.skipped.push(Skipped {
                    key: id.clone(),
                    reason: format!(
                        "its db index entry is not a JSON object ({}), so it is never \
                         backed up or marked; make it an object or remove it by hand",
                        json_kind(entry)
                    ),
                });
                continue;
            }
            let deployment = entry
                .get("deployment_name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    entry
                        .get("plan_id")
                        .and_then(Value::as_str)
                        .map(|p| crate::model::foundation::deployment_name(p, id))
                });
            match &deployment {
                Some(d) if present.contains(d.as_str()) => continue,
                // Without a name, a failed fetch could hide the deployment: wait.
                None if fetch_failed => continue,
                _ => {}
            }
            if entry.get("orphaned").and_then(Value::as_bool) == Some(true) {
                report.orphaned.push(Orphan {
                    instance_id: id.clone(),
                    deployment_name: deployment,
                    orphaned_at: entry
                        .get("orphaned_at")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                });
                continue;
            }
            items.push(Item::Orphan(id.clone(), deployment));
        }

        let mut patches = Vec::new();
        let batch = self.settings.batch_size.max(1);
        for chunk in items.chunks(batch) {
            let outcomes: Vec<Outcome> =
                futures::stream::iter(chunk.iter().map(|item| self.process(item, &index, now)))
                    .buffer_unordered(self.settings.max_concurrency.max(1))
                    .collect()
                    .await;
            for o in outcomes {
                patches.extend(o.patch);
                report.synced += usize::from(o.synced);
                report.cleared.extend(o.cleared);
                report.rebuilt.extend(o.rebuilt);
                if let Some(orphan) = o.orphan {
                    report.newly_orphaned.push(orphan.instance_id.clone());
                    report.orphaned.push(orphan);
                }
                report.backups_written += o.backups_written;
                report.backups_deleted += o.backups_deleted;
                report.errors.extend(o.error);
            }
        }

        tracing::debug!(elapsed = ?phase.elapsed(), instances = items.len(), "instances backed up and written back");
        // 5. One index write for the whole run.
        let phase = Instant::now();
        if !patches.is_empty() {
            match self.write_index(&patches).await {
                Ok(skipped) => {
                    for k in skipped {
                        let key = k.key.as_str();
                        report.rebuilt.retain(|x| x != key);
                        report.cleared.retain(|x| x != key);
                        if report.newly_orphaned.iter().any(|x| x == key) {
                            report.newly_orphaned.retain(|x| x != key);
                            report.orphaned.retain(|o| o.instance_id != key);
                        }
                        report.skipped.push(k);
                    }
                }
                Err(e) => {
                    report.errors.push(RunError {
                        subject: INDEX_PATH.into(),
                        message: format!(
                            "{e}; the index changes of this run were not written (the next run \
                         writes them)"
                        ),
                    });
                    report.synced = 0;
                    report.newly_orphaned.clear();
                    report.cleared.clear();
                    report.rebuilt.clear();
                }
            }
        }
        tracing::debug!(elapsed = ?phase.elapsed(), changes = patches.len(), "index written");
    }

    /// Manifests of `names`, from the cache or the Director.
    async fn details(&self, names: &[String], report: &mut RunReport) -> Vec<Detail> {
        let ttl = self.settings.cache_ttl;
        let now = Instant::now();
        let mut out: Vec<Option<Detail>> = Vec::with_capacity(names.len());
        let mut to_fetch = Vec::new();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            cache.retain(|k, _| listed.contains(k.as_str()));
            for (i, n) in names.iter().enumerate() {
                match cache.get(n) {
                    Some((at, text)) if now.duration_since(*at) < ttl => {
                        out.push(Some(Detail::Manifest(text.clone())));
                    }
                    _ => {
                        out.push(None);
                        to_fetch.push(i);
                    }
                }
            }
        }
        let fetched: Vec<(usize, Result<Option<String>, OpError>)> =
            futures::stream::iter(to_fetch.into_iter().map(|i| async move {
                let name = &names[i];
                (i, self.retry(|| self.director.manifest(name)).await)
            }))
            .buffer_unordered(self.settings.max_concurrency.max(1))
            .collect()
            .await;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for (i, r) in fetched {
            let name = &names[i];
            out[i] = Some(match r {
                Ok(Some(text)) => {
                    let text: Arc<str> = Arc::from(text);
                    cache.insert(name.clone(), (Instant::now(), text.clone()));
                    Detail::Manifest(text)
                }
                Ok(None) => {
                    cache.remove(name);
                    Detail::Gone
                }
                Err(e) => {
                    report.errors.push(RunError {
                        subject: name.clone(),
                        message: format!("{e}; the deployment was skipped this run"),
                    });
                    Detail::Failed
                }
            });
        }
        out.into_iter()
            .map(|d| d.unwrap_or(Detail::Failed))
            .collect()
    }

    async fn process(
        &self,
        item: &Item,
        index: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Outcome {
        match item {
            Item::Sync(m, text) => self.sync(m, text, index.get(&m.instance_id), now).await,
            Item::Orphan(id, deployment) => {
                self.orphan(id, deployment.as_deref(), index.get(id), now)
                    .await
            }
        }
    }

    /// Backs up and writes back one matched instance; its index patch on success.
    async fn sync(
        &self,
        m: &Match,
        text: &str,
        entry: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Outcome {
        let id = &m.instance_id;
        let stamp = Value::String(rfc3339(now));
        let stamp = &stamp;
        let manifest_path = format!("{id}/manifest");
        let manifest_path = manifest_path.as_str();
        // The backup is taken once, before the first write: a check-and-set conflict on
        // the manifest below re-reads and re-writes it, but takes no further backup.
        let backed = async {
            let current = self.retry(|| self.store.read(manifest_path)).await?;
            self.backup(
                id,
                &m.deployment,
                entry,
                current.data.as_ref(),
                "reconcile",
                now,
            )
            .await
        }
        .await;
        let (backups_written, backups_deleted) = match backed {
            Ok(x) => x,
            Err(e) => {
                return Outcome {
                    error: Some(RunError {
                        subject: m.deployment.clone(),
                        message: format!(
                            "instance {id}: the backup before writing it back failed: {e}; \
                             nothing was written and its index entry was left as it was"
                        ),
                    }),
                    ..Outcome::default()
                }
            }
        };
        let written = self
            .retry(|| async move {
                let current = self.store.read(manifest_path).await?;
                let mut data = current.data.unwrap_or_default();
                data.insert("manifest".into(), Value::String(text.to_string()));
                data.insert("reconciled".into(), Value::Bool(true));
                data.insert("reconciled_at".into(), stamp.clone());
                data.insert("last_synced_at".into(), stamp.clone());
                self.store
                    .write(manifest_path, &data, Some(current.version))
                    .await
            })
            .await;
        if let Err(e) = written {
            return Outcome {
                error: Some(RunError {
                    subject: m.deployment.clone(),
                    message: format!("instance {id}: {e}; its index entry was left as it was"),
                }),
                backups_written,
                backups_deleted,
                ..Outcome::default()
            };
        }
        let was_orphaned = entry
            .and_then(|e| e.get("orphaned"))
            .is_some_and(|v| v.as_bool() == Some(true));
        let missing = entry.is_none();
        let mut set = Map::new();
        set.insert("reconciled".into(), Value::Bool(true));
        set.insert("reconciled_at".into(), stamp.clone());
        set.insert("last_synced_at".into(), stamp.clone());
        let mut set_if_absent = Map::new();
        set_if_absent.insert("service_id".into(), json!(m.service_id));
        set_if_absent.insert("plan_id".into(), json!(m.plan_id));
        set_if_absent.insert("deployment_name".into(), json!(m.deployment));
        Outcome {
            patch: Some(Patch {
                key: id.clone(),
                set,
                set_if_absent,
                remove: vec!["orphaned", "orphaned_at", "orphaned_reason"],
                rebuild: missing,
            }),
            synced: true,
            cleared: was_orphaned.then(|| id.clone()),
            rebuilt: missing.then(|| id.clone()),
            backups_written,
            backups_deleted,
            ..Outcome::default()
        }
    }

    /// Backs up and marks one entry whose deployment is gone. Its secrets stay.
    async fn orphan(
        &self,
        id: &str,
        deployment: Option<&str>,
        entry: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Outcome {
        let at = rfc3339(now);
        let manifest_path = format!("{id}/manifest");
        // One backup: its steps are retried one by one inside `backup`, never the
        // backup as a whole.
        let backed = async {
            let manifest = if self.settings.backup.enabled {
                self.retry(|| self.store.read(&manifest_path)).await?.data
            } else {
                None
            };
            self.backup(
                id,
                deployment.unwrap_or_default(),
                entry,
                manifest.as_ref(),
                "orphan",
                now,
            )
            .await
        }
        .await;
        let (backups_written, backups_deleted) = match backed {
            Ok(x) => x,
            Err(e) => {
                return Outcome {
                    error: Some(RunError {
                        subject: id.to_string(),
                        message: format!(
                            "instance {id}: its deployment is gone, but the backup before \
                             marking it orphaned failed: {e}; it was not marked"
                        ),
                    }),
                    ..Outcome::default()
                }
            }
        };
        let mut set = Map::new();
        set.insert("orphaned".into(), Value::Bool(true));
        set.insert("orphaned_at".into(), Value::String(at.clone()));
        set.insert("orphaned_reason".into(), json!(ORPHANED_REASON));
        Outcome {
            patch: Some(Patch {
                key: id.to_string(),
                set,
                ..Patch::default()
            }),
            orphan: Some(Orphan {
                instance_id: id.to_string(),
                deployment_name: deployment.map(str::to_string),
                orphaned_at: at,
            }),
            backups_written,
            backups_deleted,
            ..Outcome::default()
        }
    }

    /// Writes `{id}/{backup_path}/{ts}` with the entry, `{id}/manifest` and
    /// `{id}/metadata`, then prunes to the retention. `ts` is the run's unix time, or
    /// one more than the newest backup's when that is not older, so two runs within a
    /// second never overwrite each other's backup. Only listed names that are canonical
    /// plausible unix times count, and pruning deletes them by their listed name. Each
    /// store call is retried on its own, so one call takes at most one backup.
    /// Returns (written, deleted).
    async fn backup(
        &self,
        id: &str,
        deployment: &str,
        entry: Option<&Value>,
        manifest: Option<&Map<String, Value>>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(usize, usize), OpError> {
        let b = &self.settings.backup;
        if !b.enabled {
            return Ok((0, 0));
        }
        let dir = format!("{id}/{}", b.path);
        let listed = self.retry(|| self.store.list(&dir)).await?;
        let mut existing = backup_stamps(&listed);
        let metadata_path = format!("{id}/metadata");
        let metadata = self.retry(|| self.store.read(&metadata_path)).await?.data;
        let ts = existing
            .iter()
            .map(|(n, _)| *n)
            .max()
            .map_or(now.timestamp(), |newest| {
                newest.saturating_add(1).max(now.timestamp())
            });
        let mut data = Map::new();
        data.insert("instance_id".into(), json!(id));
        data.insert("deployment_name".into(), json!(deployment));
        data.insert("taken_at".into(), json!(rfc3339(now)));
        data.insert("reason".into(), json!(reason));
        data.insert("index".into(), entry.cloned().unwrap_or(Value::Null));
        data.insert(
            "manifest".into(),
            manifest.map_or(Value::Null, |m| Value::Object(m.clone())),
        );
        data.insert(
            "metadata".into(),
            metadata.map_or(Value::Null, Value::Object),
        );
        let path = format!("{dir}/{ts}");
        let (path, data) = (&path, &data);
        self.retry(|| async move {
            self.store
                .write(path, data, Some(0))
                .await
                .map_err(|mut e| {
                    // Already there: a retry would not help.
                    if e.is_conflict() {
                        e.kind = ErrorKind::Permanent;
                        e.message = format!(
                            "{} (backup {path} already exists; another reconciler may be \
                             running, run again)",
                            e.message
                        );
                    }
                    e
                })
        })
        .await?;
        let mut deleted = 0;
        if b.cleanup {
            existing.push((ts, ts.to_string()));
            existing.sort_unstable_by_key(|b| std::cmp::Reverse(b.0));
            for (_, old) in existing.iter().skip(b.retention) {
                let old = format!("{dir}/{old}");
                self.retry(|| self.store.delete(&old)).await?;
                deleted += 1;
            }
        }
        Ok((1, deleted))
    }

    /// Applies the run's patches to `db` by the one check-and-set read-modify-write
    /// ([`index::read_modify_write`], shared with the `vault_index_entry` type).
    /// Returns the patches that were not applied, and why.
    async fn write_index(&self, patches: &[Patch]) -> Result<Vec<Skipped>, OpError> {
        let policy = Policy {
            attempts: MAX_CAS_CONFLICTS + 1,
            ..Policy::CAS
        };
        let (_, skipped) = index::read_modify_write(
            policy,
            || self.retry(|| self.store.read(INDEX_PATH)),
            |index, version| async move {
                let index = &index;
                self.retry(|| async move {
                    match self.store.write(INDEX_PATH, index, Some(version)).await {
                        // A conflict is not cured by sending the same write again: it
                        // goes back to the read-modify-write, which reads first.
                        Err(e) if e.is_conflict() => Ok(Err(e)),
                        other => other.map(Ok),
                    }
                })
                .await?
            },
            |current| {
                let mut index = current.cloned().unwrap_or_default();
                let applied = apply_patches(&mut index, patches);
                (applied.changed.then_some(index), applied.skipped)
            },
        )
        .await?;
        Ok(skipped)
    }
}
