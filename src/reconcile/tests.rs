//! Unit tests of a reconcile run against an in-memory Director and Vault: matching and
//! index rebuild, orphans, backups and retention, the deployment cache, retries and
//! failures that must not mark orphans. Time is tokio's paused clock.

use super::matcher::CatalogPlan;
use super::run::{apply_patches, Patch};
use super::*;
use crate::providers::ErrorKind;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

const A: &str = "6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01";
const B: &str = "1f7e9d3c-5b2a-4c8e-a6d4-3e2f1a0b9c72";
const C: &str = "9c3d5e7f-1a2b-4c6d-8e0f-a1b2c3d4e5f6";

#[derive(Default)]
struct FakeDirector {
    deployments: Mutex<BTreeMap<String, String>>,
    manifest_calls: AtomicU32,
    /// Fail this many manifest calls with a retryable error first.
    flaky: AtomicU32,
    down: Mutex<bool>,
}

#[async_trait]
impl Director for FakeDirector {
    async fn deployment_names(&self) -> Result<Vec<String>, OpError> {
        if *self.down.lock().unwrap() {
            return Err(OpError::new("bosh GET /deployments: down"));
        }
        Ok(self.deployments.lock().unwrap().keys().cloned().collect())
    }
    async fn manifest(&self, name: &str) -> Result<Option<String>, OpError> {
        self.manifest_calls.fetch_add(1, Ordering::SeqCst);
        if self
            .flaky
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(OpError::retryable("bosh GET: 502"));
        }
        Ok(self.deployments.lock().unwrap().get(name).cloned())
    }
}

/// Secrets by path: (version, data).
type Secrets = BTreeMap<String, (u64, Map<String, Value>)>;

#[derive(Default)]
struct MemStore {
    secrets: Mutex<Secrets>,
    /// Paths whose writes fail for good.
    broken: Mutex<Vec<String>>,
    /// Writes to these paths meet this many check-and-set conflicts first.
    cas_conflicts: Mutex<BTreeMap<String, u32>>,
    /// Fail this many deletes with a retryable error first.
    flaky_deletes: AtomicU32,
    /// Called after each successful write, with the path and the secrets (to play a
    /// concurrent writer).
    #[allow(clippy::type_complexity)]
    on_write: Mutex<Option<Box<dyn Fn(&str, &mut Secrets) + Send>>>,
}

impl MemStore {
    fn get(&self, path: &str) -> Option<Value> {
        self.secrets
            .lock()
            .unwrap()
            .get(path)
            .map(|(_, d)| Value::Object(d.clone()))
    }
    fn put(&self, path: &str, v: Value) {
        let mut g = self.secrets.lock().unwrap();
        let version = g.get(path).map_or(0, |(v, _)| *v) + 1;
        g.insert(
            path.to_string(),
            (version, v.as_object().cloned().unwrap_or_default()),
        );
    }
    fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.secrets
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl SecretStore for MemStore {
    async fn read(&self, path: &str) -> Result<Secret, OpError> {
        let g = self.secrets.lock().unwrap();
        Ok(match g.get(path) {
            Some((v, d)) => Secret {
                data: Some(d.clone()),
                version: *v,
            },
            None => Secret {
                data: None,
                version: 0,
            },
        })
    }
    async fn write(
        &self,
        path: &str,
        data: &Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<u64, OpError> {
        if self
            .broken
            .lock()
            .unwrap()
            .iter()
            .any(|b| path.starts_with(b))
        {
            return Err(OpError::new(format!(
                "vault POST {path}: permission denied"
            )));
        }
        if let Some(n) = self.cas_conflicts.lock().unwrap().get_mut(path) {
            if *n > 0 {
                *n -= 1;
                return Err(OpError::of(ErrorKind::Conflict, "check-and-set mismatch"));
            }
        }
        let mut g = self.secrets.lock().unwrap();
        let current = g.get(path).map_or(0, |(v, _)| *v);
        if cas.is_some_and(|c| c != current) {
            return Err(OpError::of(ErrorKind::Conflict, "check-and-set mismatch"));
        }
        g.insert(path.to_string(), (current + 1, data.clone()));
        if let Some(hook) = self.on_write.lock().unwrap().as_ref() {
            hook(path, &mut g);
        }
        Ok(current + 1)
    }
    async fn list(&self, path: &str) -> Result<Vec<String>, OpError> {
        let prefix = format!("{path}/");
        let g = self.secrets.lock().unwrap();
        Ok(g.keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| match rest.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => rest.to_string(),
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect())
    }
    async fn delete(&self, path: &str) -> Result<(), OpError> {
        if self
            .flaky_deletes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(OpError::retryable(format!("vault DELETE {path}: 503")));
        }
        self.secrets.lock().unwrap().remove(path);
        Ok(())
    }
}

fn catalog() -> Catalog {
    let r = |names: &[&str]| Some(names.iter().map(|s| s.to_string()).collect());
    Catalog::new(vec![
        CatalogPlan {
            service_id: "redis".into(),
            plan_id: "redis-small".into(),
            releases: r(&["redis"]),
        },
        CatalogPlan {
            service_id: "redis".into(),
            plan_id: "redis-cluster".into(),
            releases: r(&["redis"]),
        },
        CatalogPlan {
            service_id: "postgresql".into(),
            plan_id: "postgresql-standard".into(),
            releases: r(&["postgres"]),
        },
    ])
}

struct World {
    director: Arc<FakeDirector>,
    store: Arc<MemStore>,
    now: Arc<AtomicI64>,
}

impl World {
    fn new() -> World {
        World {
            director: Arc::new(FakeDirector::default()),
            store: Arc::new(MemStore::default()),
            now: Arc::new(AtomicI64::new(1_800_000_000)),
        }
    }
    fn deploy(&self, name: &str, manifest: &str) {
        self.director
            .deployments
            .lock()
            .unwrap()
            .insert(name.to_string(), manifest.to_string());
    }
    fn undeploy(&self, name: &str) {
        self.director.deployments.lock().unwrap().remove(name);
    }
    fn reconciler(&self, settings: Settings) -> Reconciler {
        let now = self.now.clone();
        Reconciler::new(
            self.director.clone(),
            self.store.clone(),
            catalog(),
            settings,
        )
        .with_clock(Arc::new(move || {
            chrono::DateTime::from_timestamp(now.load(Ordering::SeqCst), 0).unwrap_or_default()
        }))
    }
    fn index(&self) -> Map<String, Value> {
        self.store
            .get("db")
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    }
}

fn fast() -> Settings {
    Settings {
        retry_delay: std::time::Duration::from_millis(10),
        ..Settings::default()
    }
}

/// Three deployments, one per strategy, and one matching nothing.
fn seed(w: &World) {
    w.deploy(&format!("redis-small-{A}"), "releases: [{name: redis}]\n");
    w.deploy(
        "legacy-cluster",
        &format!("properties: {{blacksmith: {{plan_id: redis-cluster, instance_id: {B}}}}}\n"),
    );
    w.deploy(&format!("pg-{C}"), "releases: [{name: postgres}]\n");
    w.deploy("nginx", "releases: [{name: nginx}]\n");
}

#[tokio::test(start_paused = true)]
async fn rebuilds_a_wiped_index_with_every_strategy() {
    let w = World::new();
    seed(&w);
    let r = w.reconciler(fast()).run_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.deployments_scanned, 4);
    assert_eq!(r.by_strategy(), (1, 1, 1));
    assert_eq!(r.unmatched.len(), 1);
    assert_eq!(r.unmatched[0].deployment, "nginx");
    assert_eq!(r.synced, 3);
    assert_eq!(r.rebuilt.len(), 3);
    let idx = w.index();
    assert_eq!(idx[A]["plan_id"], "redis-small");
    assert_eq!(idx[B]["plan_id"], "redis-cluster");
    assert_eq!(idx[B]["deployment_name"], "legacy-cluster");
    assert_eq!(idx[C]["service_id"], "postgresql");
    assert_eq!(idx[A]["reconciled"], true);
    assert_eq!(idx[A]["reconciled_at"], "2027-01-15T08:00:00Z");
    assert_eq!(idx[A]["last_synced_at"], idx[A]["reconciled_at"]);
    let m = w.store.get(&format!("{A}/manifest")).unwrap();
    assert_eq!(m["reconciled"], true);
    assert_eq!(m["manifest"], "releases: [{name: redis}]\n");
    // A backup was written before each update.
    assert_eq!(r.backups_written, 3);
    let b = w.store.get(&format!("{A}/backups/1800000000")).unwrap();
    assert_eq!(b["index"], Value::Null);
    assert_eq!(b["reason"], "reconcile");
}

#[tokio::test(start_paused = true)]
async fn keeps_existing_entry_fields_and_only_adds_marks() {
    let w = World::new();
    w.deploy(&format!("redis-small-{A}"), "releases: [{name: redis}]\n");
    w.store.put(
        "db",
        json!({A: {"service_id": "redis", "plan_id": "redis-small", "organization_guid": "o", "created": 5}}),
    );
    w.reconciler(fast()).run_once().await;
    let idx = w.index();
    assert_eq!(idx[A]["organization_guid"], "o");
    assert_eq!(idx[A]["created"], 5);
    assert_eq!(idx[A]["reconciled"], true);
}

#[tokio::test(start_paused = true)]
async fn marks_orphans_keeps_their_secrets_and_clears_the_mark() {
    let w = World::new();
    seed(&w);
    let rec = w.reconciler(fast());
    rec.run_once().await;
    w.store
        .put(&format!("{A}/credentials"), json!({"password": "p"}));
    w.undeploy(&format!("redis-small-{A}"));
    w.undeploy("legacy-cluster");
    w.now.fetch_add(60, Ordering::SeqCst);
    let r = rec.run_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // Sorted by id: B (1f7e…) before A (6a1c…).
    assert_eq!(r.newly_orphaned, vec![B.to_string(), A.to_string()]);
    let idx = w.index();
    for id in [A, B] {
        assert_eq!(idx[id]["orphaned"], true);
        assert_eq!(idx[id]["orphaned_reason"], "no_bosh_deployment");
        assert_eq!(idx[id]["orphaned_at"], "2027-01-15T08:01:00Z");
    }
    assert!(idx[C].get("orphaned").is_none());
    assert!(w.store.get(&format!("{A}/credentials")).is_some());
    assert!(w.store.get(&format!("{A}/manifest")).is_some());

    // A later run keeps the first orphaned_at and marks nothing new.
    w.now.fetch_add(60, Ordering::SeqCst);
    let r = rec.run_once().await;
    assert!(r.newly_orphaned.is_empty());
    assert_eq!(r.orphaned.len(), 2);
    assert_eq!(w.index()[A]["orphaned_at"], "2027-01-15T08:01:00Z");

    // The deployment comes back: the mark goes.
    w.deploy(&format!("redis-small-{A}"), "releases: [{name: redis}]\n");
    let r = rec.run_once().await;
    assert_eq!(r.cleared, vec![A.to_string()]);
    let idx = w.index();
    assert!(idx[A].get("orphaned").is_none());
    assert!(idx[A].get("orphaned_at").is_none());
    assert_eq!(idx[B]["orphaned"], true);
}

#[tokio::test(start_paused = true)]
async fn retention_keeps_the_newest_backups_even_within_one_second() {
    let w = World::new();
    w.deploy(&format!("redis-small-{A}"), "releases: [{name: redis}]\n");
    let mut s = fast();
    s.backup.retention = 3;
    let rec = w.reconciler(s);
    for _ in 0..5 {
        rec.run_once().await;
    }
    let backups = w.store.keys_under(&format!("{A}/backups/"));
    let want: Vec<String> = (1_800_000_002..=1_800_000_004)
        .map(|t| format!("{A}/backups/{t}"))
        .collect();
    assert_eq!(backups, want);
    // The newest backup holds the entry as the fourth run left it.
    let b = w.store.get(&want[2]).unwrap();
    assert_eq!(b["index"]["reconciled"], true);
}

#[tokio::test(start_paused = true)]
async fn no_backups_when_disabled_and_all_kept_without_cleanup() {
    let w = World::new();
    w.deploy(&format!("redis-small-{A}"), "releases: [{name: redis}]\n");
    let mut s = fast();
    s.backup.enabled = false;
    let r = w.reconciler(s).run_once().await;
    assert_eq!(r.backups_written, 0);
    assert!(w.store.keys_under(&format!("{A}/backups")).is_empty());
    assert_eq!(w.index()[A]["reconciled"], true);

    let mut s = fast();
    s.backup.retention = 1;
    s.backup.cleanup = false;
    s.backup.path = "snap".into();
    let rec = w.reconciler(s);
    rec.run_once().await;
    rec.run_once().await;
    assert_eq!(w.store.keys_under(&format!("{A}/snap/")).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn deployment_details_are_cached_for_the_ttl() {
    let w = World::new();
    seed(&w);
    let mut s = fast();
    s.cache_ttl = std::time::Duration::from_secs(300);
    let rec = w.reconciler(s);
    rec.run_once().await;
    assert_eq!(w.director.manifest_calls.load(Ordering::SeqCst), 4);
    tokio::time::advance(std::time::Duration::from_secs(299)).await;
    rec.run_once().await;
    assert_eq!(w.director.manifest_calls.load(Ordering::SeqCst), 4);
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    rec.run_once().await;
    assert_eq!(w.director.manifest_calls.load(Ordering::SeqCst), 8);
}

#[tokio::test(start_paused = true)]
async fn retries_with_growing_delay_then_goes_on_past_failures() {
    let w = World::new();
    seed(&w);
    // Two transient failures: retried, no error.
    w.director.flaky.store(2, Ordering::SeqCst);
    let r = w.reconciler(fast()).run_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.synced, 3);

    // A permanently failing instance is reported; the others are synced.
    let w = World::new();
    seed(&w);
    w.store.broken.lock().unwrap().push(format!("{C}/"));
    let r = w.reconciler(fast()).run_once().await;
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].message.contains(C), "{:?}", r.errors);
    assert_eq!(r.synced, 2);
    assert!(w.index().get(C).is_none());
    assert_eq!(w.index()[A]["reconciled"], true);

    // More transient failures than retries: reported after the retries.
    let w = World::new();
    w.deploy(&format!("redis-small-{A}"), "");
    w.director.flaky.store(10, Ordering::SeqCst);
    let mut s = fast();
    s.retry_attempts = 2;
    let r = w.reconciler(s).run_once().await;
    assert_eq!(r.errors.len(), 1);
    assert!(
        r.errors[0].message.contains("after 2 retries"),
        "{:?}",
        r.errors
    );
    assert_eq!(w.director.manifest_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_director_that_cannot_list_changes_nothing() {
    let w = World::new();
    seed(&w);
    let rec = w.reconciler(fast());
    rec.run_once().await;
    let before = w.index();
    *w.director.down.lock().unwrap() = true;
    let r = rec.run_once().await;
    assert_eq!(r.errors.len(), 1);
    assert!(r.errors[0].message.contains("nothing was changed"));
    assert_eq!(w.index(), before);
}

#[tokio::test(start_paused = true)]
async fn batches_and_concurrency_cover_every_instance() {
    let w = World::new();
    let ids: Vec<String> = (0..57)
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    for id in &ids {
        w.deploy(&format!("postgresql-standard-{id}"), "");
    }
    let mut s = fast();
    s.batch_size = 7;
    s.max_concurrency = 3;
    let r = w.reconciler(s).run_once().await;
    assert_eq!(r.synced, 57);
    assert_eq!(w.index().len(), 57);
}

#[test]
fn patches_merge_per_key() {
    let mut idx = json!({"a": {"x": 1, "orphaned": true}, "b": {"y": 2}})
        .as_object()
        .cloned()
        .unwrap();
    let mut set = Map::new();
    set.insert("reconciled".into(), json!(true));
    let mut if_absent = Map::new();
    if_absent.insert("x".into(), json!(9));
    if_absent.insert("plan_id".into(), json!("p"));
    let p = Patch {
        key: "a".into(),
        set,
        set_if_absent: if_absent,
        remove: vec!["orphaned"],
        rebuild: false,
    };
    assert!(apply_patches(&mut idx, std::slice::from_ref(&p)).changed);
    assert_eq!(
        Value::Object(idx.clone()),
        json!({"a": {"x": 1, "reconciled": true, "plan_id": "p"}, "b": {"y": 2}})
    );
    assert!(!apply_patches(&mut idx, &[p]).changed);
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Every stored path, for asserting that nothing was written somewhere unexpected.
fn paths(w: &World) -> Vec<String> {
    w.store.keys_under("")
}

// Finding 1: a metadata instance_id that is not a UUID never becomes a Vault path.
#[tokio::test(start_paused = true)]
async fn a_metadata_instance_id_that_is_not_a_uuid_is_unmatched_and_never_written() {
    let w = World::new();
    w.deploy(
        "legacy-evil",
        "properties: {blacksmith: {plan_id: redis-cluster, instance_id: \"victim?x\"}}\n",
    );
    let r = w.reconciler(fast()).run_once().await;
    assert!(r.matches.is_empty(), "{:?}", r.matches);
    assert_eq!(r.unmatched.len(), 1);
    assert!(
        r.unmatched[0].reason.contains("not a UUID"),
        "{:?}",
        r.unmatched
    );
    assert!(
        paths(&w).iter().all(|p| !p.contains("victim")),
        "{:?}",
        paths(&w)
    );
    assert_eq!(r.synced, 0);
}

// Finding 1: index keys that are not UUIDs are skipped, never backed up or marked.
#[tokio::test(start_paused = true)]
async fn index_keys_that_are_not_uuids_are_skipped_and_never_written() {
    let w = World::new();
    w.store.put(
        "db",
        json!({"victim?x": {"plan_id": "redis-small", "deployment_name": "gone"}}),
    );
    let r = w.reconciler(fast()).run_once().await;
    assert!(r.newly_orphaned.is_empty(), "{:?}", r.newly_orphaned);
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert_eq!(r.skipped[0].key, "victim?x");
    assert!(r.skipped[0].reason.contains("not an instance UUID"));
    assert_eq!(paths(&w), vec!["db".to_string()]);
    assert_eq!(
        w.index()["victim?x"],
        json!({"plan_id": "redis-small", "deployment_name": "gone"})
    );
}

// Finding 2a: index values that are not JSON objects are never replaced.
#[tokio::test(start_paused = true)]
async fn index_values_that_are_not_objects_are_kept_and_reported() {
    let w = World::new();
    w.deploy(&format!("redis-small-{A}"), "releases: [{name: redis}]\n");
    w.store.put(
        "db",
        json!({"legacy-note": "keep me", A: "keep me too", B: 7}),
    );
    let r = w.reconciler(fast()).run_once().await;
    let idx = w.index();
    assert_eq!(idx["legacy-note"], "keep me");
    assert_eq!(idx[A], "keep me too");
    assert_eq!(idx[B], 7);
    let keys: Vec<&str> = r.skipped.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys.len(), 3, "{:?}", r.skipped);
    for k in ["legacy-note", A, B] {
        assert!(keys.contains(&k), "{k} in {:?}", r.skipped);
    }
    assert!(r.newly_orphaned.is_empty());
    assert_eq!(r.synced, 0);
    assert!(w.store.get(&format!("{A}/manifest")).is_none());

    // And apply_patches itself leaves them alone.
    let mut idx = obj(json!({"k": "keep me"}));
    let p = Patch {
        key: "k".into(),
        set: obj(json!({"orphaned": true})),
        rebuild: true,
        ..Patch::default()
    };
    let applied = apply_patches(&mut idx, &[p]);
    assert!(!applied.changed);
    assert_eq!(applied.skipped.len(), 1);
    assert_eq!(idx["k"], "keep me");
}

// Finding 2b: an entry removed between the index read and write is not re-created.
#[tokio::test(start_paused = true)]
async fn an_entry_destroyed_during_the_run_is_not_recreated() {
    let w = World::new();
    w.deploy(&format!("redis-small-{A}"), "releases: [{name: redis}]\n");
    w.store.put(
        "db",
        json!({A: {"plan_id": "redis-small"}, B: {"plan_id": "redis-small", "deployment_name": "gone"}}),
    );
    // `anvil destroy` removes both entries while the instances are being written.
    *w.store.on_write.lock().unwrap() = Some(Box::new(|path: &str, g: &mut Secrets| {
        if path.ends_with("/manifest") || path.contains("/backups/") {
            if let Some((_, db)) = g.get_mut("db") {
                db.remove(A);
                db.remove(B);
            }
        }
    }));
    let r = w.reconciler(fast()).run_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let idx = w.index();
    assert!(idx.get(A).is_none(), "{idx:?}");
    assert!(idx.get(B).is_none(), "{idx:?}");
    assert!(r.newly_orphaned.is_empty(), "{:?}", r.newly_orphaned);
    assert!(r.orphaned.is_empty(), "{:?}", r.orphaned);
    let keys: Vec<&str> = r.skipped.iter().map(|k| k.key.as_str()).collect();
    assert!(keys.contains(&A) && keys.contains(&B), "{:?}", r.skipped);

    // A rebuild patch, decided for a run that found the entry missing, does create it.
    let mut idx = Map::new();
    let p = Patch {
        key: A.into(),
        set: obj(json!({"reconciled": true})),
        rebuild: true,
        ..Patch::default()
    };
    assert!(apply_patches(&mut idx, std::slice::from_ref(&p)).changed);
    assert_eq!(idx[A]["reconciled"], true);
    let mut idx = Map::new();
    let applied = apply_patches(
        &mut idx,
        &[Patch {
            rebuild: false,
            ..p
        }],
    );
    assert!(!applied.changed && idx.is_empty());
    assert_eq!(applied.skipped.len(), 1);
}

// Finding 3: backup names that are not canonical unix times are neither counted nor
// pruned (and i64::MAX does not overflow); pruning deletes by the listed name.
#[tokio::test(start_paused = true)]
async fn odd_backup_names_are_ignored_and_pruning_deletes_listed_names() {
    let w = World::new();
    w.deploy(&format!("redis-small-{A}"), "releases: [{name: redis}]\n");
    for name in ["9223372036854775807", "0010", "+123", "1700000000"] {
        w.store
            .put(&format!("{A}/backups/{name}"), json!({"old": name}));
    }
    let mut s = fast();
    s.backup.retention = 1;
    let r = w.reconciler(s).run_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.backups_written, 1);
    assert_eq!(r.backups_deleted, 1);
    let mut want: Vec<String> = ["+123", "0010", "1800000000", "9223372036854775807"]
        .iter()
        .map(|n| format!("{A}/backups/{n}"))
        .collect();
    want.sort();
    assert_eq!(w.store.keys_under(&format!("{A}/backups/")), want);
}

// Finding 3: an interval too long for the clock does not panic; the stop ends the wait.
#[tokio::test(start_paused = true)]
async fn an_interval_beyond_the_clock_waits_for_the_stop() {
    let runs = super::watch::watch(
        std::time::Duration::MAX,
        || async {},
        tokio::time::sleep(std::time::Duration::from_secs(5)),
    )
    .await;
    assert_eq!(runs, 1);
}

// Finding 3: environment variables that are not UTF-8 are skipped, not a panic.
#[test]
#[cfg(unix)]
fn environment_variables_that_are_not_utf8_are_skipped() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let vars = vec![
        (OsString::from("GOOD"), OsString::from("v")),
        (
            OsString::from("BAD_VALUE"),
            OsString::from_vec(vec![0xff, 0xfe]),
        ),
        (OsString::from_vec(vec![0x80]), OsString::from("x")),
    ];
    let env = clients::utf8_env(vars);
    assert_eq!(env.len(), 1);
    assert_eq!(env["GOOD"], "v");
}

// Finding 4: a CAS conflict on the manifest takes no further backup.
#[tokio::test(start_paused = true)]
async fn a_manifest_cas_conflict_takes_one_backup() {
    let w = World::new();
    w.deploy(&format!("redis-small-{A}"), "releases: [{name: redis}]\n");
    w.store
        .cas_conflicts
        .lock()
        .unwrap()
        .insert(format!("{A}/manifest"), 2);
    let r = w.reconciler(fast()).run_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.synced, 1);
    assert_eq!(r.backups_written, 1);
    assert_eq!(w.store.keys_under(&format!("{A}/backups/")).len(), 1);
    assert_eq!(
        w.store.get(&format!("{A}/manifest")).unwrap()["reconciled"],
        true
    );
}

// Finding 4: in orphan marking, a transient failure while pruning retries the delete,
// not the whole backup.
#[tokio::test(start_paused = true)]
async fn an_orphan_backup_is_taken_once_despite_a_transient_failure() {
    let w = World::new();
    w.store.put(
        "db",
        json!({A: {"plan_id": "redis-small", "deployment_name": "gone"}}),
    );
    w.store
        .put(&format!("{A}/backups/1700000000"), json!({"old": true}));
    w.store.flaky_deletes.store(1, Ordering::SeqCst);
    let mut s = fast();
    s.backup.retention = 1;
    let r = w.reconciler(s).run_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.newly_orphaned, vec![A.to_string()]);
    assert_eq!(r.backups_written, 1);
    assert_eq!(
        w.store.keys_under(&format!("{A}/backups/")),
        vec![format!("{A}/backups/1800000000")]
    );
}
