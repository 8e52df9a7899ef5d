//! Index secrets (Blacksmith's `db`): a map of key → entry shared by many writers.
//!
//! [`read_modify_write`] is the one check-and-set read-modify-write of an index in
//! anvil: the `vault_index_entry` type and `anvil reconcile` both use it. It reads the
//! index, applies a pure change, writes with `cas` = the version read, and on a conflict
//! (someone wrote in between) reads and applies again, with the
//! [`Policy::CAS`](crate::providers::retry::Policy::CAS) backoff.
//!
//! Inside one process writers of one index also commit as a group ([`VaultContext::index_set`]):
//! each queues its change, and whoever holds the index's write turn applies every queued
//! change in one read-modify-write, so a thousand entries cost a few writes, not a
//! thousand CAS races. Readers share reads the same way ([`VaultContext::index_read`]).

use super::client::Secret;
use super::{lock_plain, VaultContext};
use crate::providers::retry::{self, Policy};
use crate::providers::{ErrorKind, ProviderError};
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Reads an index with `read`, applies `change` (the new index, or `None` when nothing
/// changes, plus a result) and writes it with `write(index, version read)`. A
/// [`ErrorKind::Conflict`] from `write` starts again from the read, at most
/// `policy.attempts` times in all. Returns the version written (or read, when nothing
/// changed) and `change`'s result of the attempt that counted.
///
/// # Errors
/// `read` or `write` fail otherwise, or the conflicts outlast the policy (the message
/// says so).
pub async fn read_modify_write<T, R, RF, W, WF, C>(
    policy: Policy,
    read: R,
    write: W,
    change: C,
) -> Result<(u64, T), ProviderError>
where
    R: Fn() -> RF,
    RF: Future<Output = Result<Secret, ProviderError>>,
    W: Fn(Map<String, Value>, u64) -> WF,
    WF: Future<Output = Result<u64, ProviderError>>,
    C: Fn(Option<&Map<String, Value>>) -> (Option<Map<String, Value>>, T),
{
    let once = || async {
        let current = read().await?;
        let (next, result) = change(current.data.as_ref());
        match next {
            None => Ok((current.version, result)),
            Some(index) => write(index, current.version).await.map(|v| (v, result)),
        }
    };
    retry::run(policy, |k| k == ErrorKind::Conflict, once)
        .await
        .map_err(|(e, attempts)| {
            if e.is_conflict() {
                ProviderError {
                    message: format!(
                        "{} (gave up after {attempts} attempts; too many concurrent writers \
                         on the index, run again)",
                        e.message
                    ),
                    ..e
                }
            } else {
                e
            }
        })
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

/// A queued index change and where its result goes.
struct IndexOp {
    key: String,
    /// The new entry, or `None` to remove it.
    value: Option<Value>,
    /// Fields of the entry in Vault to keep when `value` lacks them.
    preserve: Vec<String>,
    done: tokio::sync::oneshot::Sender<Result<u64, ProviderError>>,
}

/// Per index secret: the changes waiting to be written, the write turn, and the last
/// shared read.
#[derive(Default)]
pub(super) struct IndexQueue {
    pending: std::sync::Mutex<Vec<IndexOp>>,
    writer: Mutex<()>,
    /// Counts readers arriving and reads starting, to know which reads are fresh enough.
    arrivals: AtomicU64,
    /// The last read: the count when it started, and what it got.
    last_read: Mutex<Option<(u64, Arc<Secret>)>>,
}

/// The index with `ops` applied in order; `None` when nothing changes.
fn apply_ops(current: Option<&Map<String, Value>>, ops: &[IndexOp]) -> Option<Map<String, Value>> {
    let mut merged: Option<Map<String, Value>> = None;
    for op in ops {
        let base = merged.as_ref().or(current);
        let value = op
            .value
            .as_ref()
            .map(|v| with_preserved(v, base.and_then(|b| b.get(&op.key)), &op.preserve));
        if let Some(m) = merge_index(base, &op.key, value.as_ref()) {
            merged = Some(m);
        }
    }
    merged
}

impl VaultContext {
    /// Sets (`Some`) or removes (`None`) one key of an index secret, keeping the fields
    /// named in `preserve` that the entry has in Vault and `value` lacks (marks other
    /// writers own, such as the reconciler's `reconciled_at` or `orphaned`). Returns the
    /// index version written (or read, when nothing had to change). Writers in this
    /// process commit as a group (see the module doc).
    ///
    /// # Errors
    /// Vault refuses, or check-and-set kept failing.
    pub async fn index_set(
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

    /// One read-modify-write applying `ops` in order.
    async fn index_apply(
        &self,
        mount: &str,
        path: &str,
        ops: &[IndexOp],
    ) -> Result<u64, ProviderError> {
        let client = self.client_for(mount).await?;
        read_modify_write(
            Policy::CAS,
            || client.read(mount, path),
            |index, version| async move { client.write(mount, path, &index, Some(version)).await },
            |current| (apply_ops(current, ops), ()),
        )
        .await
        .map(|(v, ())| v)
    }

    /// Reads an index secret for an entry's refresh. Readers that arrive while a read
    /// is under way wait for the next one to start and share it, so refreshing a
    /// thousand entries of one index reads it a handful of times; every reader still
    /// gets a read that started after it asked.
    ///
    /// # Errors
    /// Vault cannot be asked.
    pub async fn index_read(&self, mount: &str, path: &str) -> Result<Arc<Secret>, ProviderError> {
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
        let secret = Arc::new(client.read(mount, path).await?);
        *last = Some((started, secret.clone()));
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::AtomicU32;

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

    fn conflict() -> ProviderError {
        ProviderError::of(
            ErrorKind::Conflict,
            "vault POST /v1/secret/data/db: check-and-set mismatch",
        )
    }

    /// A store whose first `conflicts` writes lose a race to another writer, which adds
    /// key `other` each time.
    struct Racy {
        index: std::sync::Mutex<(Map<String, Value>, u64)>,
        conflicts: AtomicU32,
        writes: AtomicU32,
    }

    impl Racy {
        fn new(conflicts: u32) -> Racy {
            Racy {
                index: std::sync::Mutex::new((Map::new(), 1)),
                conflicts: AtomicU32::new(conflicts),
                writes: AtomicU32::new(0),
            }
        }
        async fn read(&self) -> Result<Secret, ProviderError> {
            let g = self.index.lock().unwrap();
            Ok(Secret {
                data: Some(g.0.clone()),
                version: g.1,
            })
        }
        async fn write(&self, m: Map<String, Value>, cas: u64) -> Result<u64, ProviderError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            let mut g = self.index.lock().unwrap();
            if self.conflicts.load(Ordering::SeqCst) > 0 {
                self.conflicts.fetch_sub(1, Ordering::SeqCst);
                let n = g.1;
                g.0.insert(format!("other{n}"), json!(n));
                g.1 += 1;
                return Err(conflict());
            }
            assert_eq!(cas, g.1, "written against the version read");
            *g = (m, g.1 + 1);
            Ok(g.1)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn conflicts_are_re_read_and_lose_no_other_writer() {
        let s = Racy::new(3);
        let (v, ()) = read_modify_write(
            Policy::CAS,
            || s.read(),
            |m, cas| s.write(m, cas),
            |cur| (merge_index(cur, "mine", Some(&json!(true))), ()),
        )
        .await
        .unwrap();
        let index = s.index.lock().unwrap().0.clone();
        assert_eq!(v, 5);
        assert_eq!(index.len(), 4, "{index:?}");
        assert_eq!(index["mine"], json!(true));
        assert_eq!(s.writes.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn endless_conflicts_give_up_with_a_message() {
        let s = Racy::new(u32::MAX);
        let e = read_modify_write(
            Policy::CAS,
            || s.read(),
            |m, cas| s.write(m, cas),
            |cur| (merge_index(cur, "mine", Some(&json!(true))), ()),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(
            e.message.contains("gave up after 20 attempts"),
            "{}",
            e.message
        );
        assert_eq!(s.writes.load(Ordering::SeqCst), Policy::CAS.attempts);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_to_change_writes_nothing() {
        let s = Racy::new(0);
        let (v, n) = read_modify_write(
            Policy::CAS,
            || s.read(),
            |m, cas| s.write(m, cas),
            |_| (None, 7),
        )
        .await
        .unwrap();
        assert_eq!((v, n), (1, 7));
        assert_eq!(s.writes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn queued_ops_apply_in_order_and_preserve_marks() {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let (tx2, _rx2) = tokio::sync::oneshot::channel();
        let ops = [
            IndexOp {
                key: "a".into(),
                value: Some(json!({"plan": "p"})),
                preserve: vec!["orphaned".into()],
                done: tx,
            },
            IndexOp {
                key: "b".into(),
                value: None,
                preserve: vec![],
                done: tx2,
            },
        ];
        let cur = obj(json!({"a": {"plan": "o", "orphaned": true}, "b": 1}));
        let m = apply_ops(Some(&cur), &ops).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"a": {"plan": "p", "orphaned": true}})
        );
    }
}
