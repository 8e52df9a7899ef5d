//! Tests of the local backend and the journal through the public [`StateBackend`] API,
//! including simulated crashes at every byte and every file-system step.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;

use super::fsio::{self, Faults};
use super::*;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn backend(dir: &Path) -> LocalBackend {
    LocalBackend::new(dir.join("state").join("demo.json")).with_lease(DEFAULT_LEASE)
}

fn res(n: u64) -> ResourceState {
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    ResourceState {
        ty: "vault_mount".into(),
        provider: "vault".into(),
        attributes: BTreeMap::from([("n".to_string(), json!(n))]),
        sensitive: BTreeMap::new(),
        outputs: BTreeMap::new(),
        dependencies: vec![],
        lifecycle: RecordedLifecycle::default(),
        created_at: t,
        updated_at: t,
    }
}

fn intent(addr: &str, op: Operation) -> JournalRecord {
    JournalRecord::Intent {
        address: addr.into(),
        operation: op,
        at: Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap(),
    }
}

/// Apply `rec` to `state` (assigning the next serial to results) and append it.
fn record(state: &mut State, w: &JournalWriter, rec: JournalRecord) -> Result<(), StateError> {
    record_tracked(state, w, rec, &mut None)
}

/// As [`record`], remembering in `attempted` the record whose commit failed: a crash
/// after `write` but before `fsync` may or may not leave it on disk.
fn record_tracked(
    state: &mut State,
    w: &JournalWriter,
    rec: JournalRecord,
    attempted: &mut Option<JournalRecord>,
) -> Result<(), StateError> {
    let rec = match rec {
        JournalRecord::Applied {
            address, resource, ..
        } => JournalRecord::Applied {
            serial: state.next_serial(),
            address,
            resource,
        },
        JournalRecord::Removed { address, .. } => JournalRecord::Removed {
            serial: state.next_serial(),
            address,
        },
        other => other,
    };
    let commit = w.append(&rec);
    if let Err(e) = commit.wait_blocking() {
        *attempted = Some(rec);
        return Err(e);
    }
    state.apply_record(&rec);
    Ok(())
}

fn applied(addr: &str, n: u64) -> JournalRecord {
    JournalRecord::Applied {
        serial: 0,
        address: addr.into(),
        resource: res(n),
    }
}

fn removed(addr: &str) -> JournalRecord {
    JournalRecord::Removed {
        serial: 0,
        address: addr.into(),
    }
}

fn pending_addrs(s: &State) -> Vec<String> {
    let mut v: Vec<_> = s.pending.iter().map(|p| p.address.clone()).collect();
    v.sort();
    v
}

fn assert_same(loaded: &State, expected: &State) {
    assert_eq!(loaded.lineage, expected.lineage);
    assert_eq!(loaded.serial, expected.serial);
    assert_eq!(loaded.resources, expected.resources);
    assert_eq!(pending_addrs(loaded), pending_addrs(expected));
}

#[test]
fn missing_state_is_empty_and_not_written() {
    let d = dir();
    let b = backend(d.path());
    let s = b.load().unwrap();
    assert_eq!(s.serial, 0);
    assert!(s.resources.is_empty());
    assert!(!b.path().exists());
    assert_eq!(b.describe(), format!("file://{}", b.path().display()));
}

#[test]
fn write_round_trips_and_keeps_backup() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = State::new();
    s.serial = 1;
    s.resources.insert("vault_mount.a".into(), res(1));
    b.write(&s, &lock).unwrap();
    assert!(!fsio::sibling(b.path(), ".backup").exists());
    let first = std::fs::read(b.path()).unwrap();
    assert_eq!(first.last(), Some(&b'\n'));
    assert_eq!(b.load().unwrap(), s);

    s.serial = 2;
    s.resources.insert("vault_mount.b".into(), res(2));
    b.write(&s, &lock).unwrap();
    assert_eq!(b.load().unwrap(), s);
    let backup = std::fs::read(fsio::sibling(b.path(), ".backup")).unwrap();
    assert_eq!(backup, first);
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(b.path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
}

#[test]
fn write_refuses_other_lineage_stale_serial_and_foreign_lock() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = State::new();
    s.serial = 5;
    b.write(&s, &lock).unwrap();

    let other = State::new();
    let err = b.write(&other, &lock).unwrap_err();
    assert!(matches!(err, StateError::LineageMismatch { .. }), "{err}");

    let mut old = s.clone();
    old.serial = 4;
    let err = b.write(&old, &lock).unwrap_err();
    assert!(
        matches!(
            err,
            StateError::StaleState {
                stored: 5,
                ours: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&b.path().display().to_string()));

    // The serial that counts includes the journal on top of the state file.
    let mut s6 = s.clone();
    let w = b.journal(&s, &lock).unwrap();
    record(&mut s6, &w, removed("x.gone")).unwrap();
    drop(w);
    let err = b.write(&s, &lock).unwrap_err();
    assert!(
        matches!(
            err,
            StateError::StaleState {
                stored: 6,
                ours: 5,
                ..
            }
        ),
        "{err}"
    );
    b.write(&s6, &lock).unwrap();
    assert!(!fsio::sibling(b.path(), ".journal").exists());
    assert_eq!(b.load().unwrap(), s6);

    let b2 = LocalBackend::new(d.path().join("other.json"));
    let err = b2.write(&s, &lock).unwrap_err();
    assert!(matches!(err, StateError::WrongLock { .. }), "{err}");
}

#[test]
fn write_after_lost_lock_is_refused() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    b.force_unlock(&lock.info().id).unwrap();
    assert!(!lock.renew_now().unwrap());
    let err = b.write(&State::new(), &lock).unwrap_err();
    assert!(matches!(err, StateError::LockLost { .. }), "{err}");
    assert!(!b.path().exists());
}

#[test]
fn corrupt_state_names_file_and_backup() {
    let d = dir();
    let b = backend(d.path());
    std::fs::create_dir_all(b.path().parent().unwrap()).unwrap();
    for content in [
        "",
        "{",
        "not json",
        "{\"version\":1}",
        "[]",
        "{\"version\":1,\"lineage\":\"x\"}",
    ] {
        std::fs::write(b.path(), content).unwrap();
        let err = b.load().unwrap_err();
        assert!(
            matches!(err, StateError::Corrupt { .. }),
            "{content}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&b.path().display().to_string()), "{msg}");
        assert!(msg.contains(".backup"), "{msg}");
    }
}

#[test]
fn unknown_version_is_reported() {
    let d = dir();
    let b = backend(d.path());
    std::fs::create_dir_all(b.path().parent().unwrap()).unwrap();
    let mut v = serde_json::to_value(State::new()).unwrap();
    v["version"] = json!(7);
    std::fs::write(b.path(), v.to_string()).unwrap();
    let err = b.load().unwrap_err();
    assert!(
        matches!(err, StateError::UnsupportedVersion { found: 7, .. }),
        "{err}"
    );
    // A future format that no longer parses as ours is still reported by version.
    std::fs::write(b.path(), r#"{"version":2,"everything":"different"}"#).unwrap();
    let err = b.load().unwrap_err();
    assert!(
        matches!(err, StateError::UnsupportedVersion { found: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade anvil"));
}

#[test]
fn state_serde_shape() {
    let mut s = State::new();
    s.resources.insert("vault_mount.a".into(), res(1));
    let v = serde_json::to_value(&s).unwrap();
    let r = &v["resources"]["vault_mount.a"];
    assert_eq!(r["type"], "vault_mount");
    assert!(
        r.get("sensitive").is_none(),
        "empty sensitive map is omitted"
    );
    // Optional fields default when absent.
    let mut v2 = v.clone();
    v2.as_object_mut().unwrap().remove("pending");
    for k in ["outputs", "dependencies", "lifecycle"] {
        v2["resources"]["vault_mount.a"]
            .as_object_mut()
            .unwrap()
            .remove(k);
    }
    let back: State = serde_json::from_value(v2).unwrap();
    assert_eq!(back, s);
    let rec = serde_json::to_value(intent("a.b", Operation::Delete)).unwrap();
    assert_eq!(rec["record"], "intent");
    assert_eq!(rec["operation"], "delete");
}

#[test]
fn fingerprint_is_canonical() {
    use sha2::{Digest, Sha256};
    let a: serde_json::Value =
        serde_json::from_str(r#"{"b":[1,{"y":2,"x":"s"}],"a":null}"#).unwrap();
    let canonical = r#"{"a":null,"b":[1,{"x":"s","y":2}]}"#;
    let want = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    assert_eq!(fingerprint(&a), want);
    let b: serde_json::Value =
        serde_json::from_str(r#"{ "a" : null, "b":[1,{"x":"s","y":2}]}"#).unwrap();
    assert_eq!(fingerprint(&b), want);
    assert_ne!(
        fingerprint(&json!("secret")),
        fingerprint(&json!("secret2"))
    );
    assert_eq!(fingerprint(&json!("s")).len(), "sha256:".len() + 64);
}

#[test]
fn open_resolves_urls() {
    let b = open(None, "demo").unwrap();
    assert_eq!(b.describe(), "file://state/demo.json");
    let b = open(Some("file:///tmp/x/s.json"), "demo").unwrap();
    assert_eq!(b.describe(), "file:///tmp/x/s.json");
    let b = open(Some("some/dir/"), "demo").unwrap();
    assert_eq!(b.describe(), "file://some/dir/demo.json");
    let d = dir();
    let b = open(Some(d.path().to_str().unwrap()), "demo").unwrap();
    assert_eq!(
        b.describe(),
        format!("file://{}", d.path().join("demo.json").display())
    );
    for url in ["gs://bucket/key", "ftp://host/x", ""] {
        let err = open(Some(url), "demo").err().unwrap();
        assert!(
            matches!(err, StateError::UnsupportedBackend { .. }),
            "{url}"
        );
        let msg = err.to_string();
        assert!(msg.contains(url) && msg.contains("file://"), "{msg}");
        assert!(
            msg.contains("postgres://") && msg.contains("vault://"),
            "{msg}"
        );
    }
    // A password in an unsupported URL is never repeated.
    for url in ["gs://key:hunter2@bucket/x", "s3://key:hunter2@bucket/x"] {
        let msg = open(Some(url), "demo").err().unwrap().to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("://key:***@bucket/x"), "{msg}");
    }
    // s3:// is the S3 backend, or a clear refusal in a build without it.
    match open(Some("s3://bucket/key"), "demo") {
        Ok(b) if cfg!(feature = "aws") => assert_eq!(b.describe(), "s3://bucket/key/demo.json"),
        Ok(b) => panic!("s3:// opened without the aws feature: {}", b.describe()),
        Err(e) if cfg!(feature = "aws") => panic!("s3:// refused with the aws feature: {e}"),
        Err(e) => {
            assert!(matches!(e, StateError::InvalidUrl { .. }), "{e}");
            assert!(
                e.to_string().contains("built without the aws feature"),
                "{e}"
            );
        }
    }
    for ws in ["", "..", "a/b", "x y"] {
        assert!(matches!(
            open(None, ws),
            Err(StateError::InvalidWorkspace { .. })
        ));
    }
}

#[test]
fn lock_via_backend_and_force_unlock() {
    let d = dir();
    let b = backend(d.path());
    let h = b.lock("apply", Duration::ZERO).unwrap();
    let err = b.lock("plan", Duration::ZERO).unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    let err = b.force_unlock("wrong").unwrap_err();
    assert!(err.to_string().contains(&h.info().id));
    b.force_unlock(&h.info().id).unwrap();
    let _h2 = b.lock("plan", Duration::ZERO).unwrap();
}

#[test]
fn journal_replays_results_and_pending() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    let w = b.journal(&s, &lock).unwrap();
    assert!(b.path().exists(), "journal() stores its base state");
    record(&mut s, &w, intent("vault_mount.a", Operation::Create)).unwrap();
    record(&mut s, &w, applied("vault_mount.a", 1)).unwrap();
    record(&mut s, &w, intent("vault_mount.b", Operation::Create)).unwrap();
    record(&mut s, &w, intent("vault_mount.c", Operation::Create)).unwrap();
    record(
        &mut s,
        &w,
        JournalRecord::Failed {
            address: "vault_mount.c".into(),
            operation: Operation::Create,
            error: "boom".into(),
        },
    )
    .unwrap();
    // Simulate a crash: the writer goes away without finishing.
    drop(w);
    let loaded = b.load().unwrap();
    assert_same(&loaded, &s);
    assert_eq!(loaded.serial, 1);
    assert_eq!(pending_addrs(&loaded), vec!["vault_mount.b".to_string()]);
    assert_eq!(loaded.pending[0].operation, Operation::Create);

    // The next run starts a new journal on top; nothing is lost.
    let mut s2 = loaded;
    let w = b.journal(&s2, &lock).unwrap();
    record(&mut s2, &w, removed("vault_mount.a")).unwrap();
    drop(w);
    let loaded = b.load().unwrap();
    assert_same(&loaded, &s2);
    assert!(loaded.resources.is_empty());
    assert_eq!(loaded.serial, 2);
    assert_eq!(pending_addrs(&loaded), vec!["vault_mount.b".to_string()]);
}

#[test]
fn finish_checkpoints_and_removes_journal() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    let w = b.journal(&s, &lock).unwrap();
    let jpath = w.path().to_path_buf();
    for i in 0..10 {
        let a = format!("vault_mount.m{i}");
        record(&mut s, &w, intent(&a, Operation::Create)).unwrap();
        record(&mut s, &w, applied(&a, i)).unwrap();
    }
    w.finish(&s).unwrap();
    assert!(!jpath.exists());
    assert_eq!(b.load().unwrap(), s);
}

#[test]
fn stale_tmp_files_are_cleaned_and_drop_flushes_queue() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    b.write(&s, &lock).unwrap();
    let dead = [".tmp.999999", ".backup.tmp.999999", ".journal.tmp.999999"];
    for suffix in dead {
        std::fs::write(fsio::sibling(b.path(), suffix), "half").unwrap();
    }
    let w = b.journal(&s, &lock).unwrap();
    for suffix in dead {
        assert!(!fsio::sibling(b.path(), suffix).exists(), "{suffix}");
    }
    // Records queued but never awaited are still written when the writer is dropped.
    let recs: Vec<_> = (0..20)
        .map(|i| JournalRecord::Applied {
            serial: i + 1,
            address: format!("x.q{i}"),
            resource: res(i),
        })
        .collect();
    let commits: Vec<_> = recs.iter().map(|r| w.append(r)).collect();
    drop(w);
    for (c, r) in commits.into_iter().zip(&recs) {
        c.wait_blocking().unwrap();
        s.apply_record(r);
    }
    assert_same(&b.load().unwrap(), &s);
}

#[test]
fn finish_with_stale_state_keeps_uncovered_records() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let base = b.load().unwrap();
    let mut s = base.clone();
    let w = b.journal(&base, &lock).unwrap();
    record(&mut s, &w, applied("vault_mount.a", 1)).unwrap();
    record(&mut s, &w, intent("vault_mount.b", Operation::Update)).unwrap();
    // The caller passes a state that misses both records: they must survive.
    w.finish(&base).unwrap();
    assert!(fsio::sibling(b.path(), ".journal").exists());
    assert_same(&b.load().unwrap(), &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_group_commit() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let base = b.load().unwrap();
    let w = Arc::new(b.journal(&base, &lock).unwrap());
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                let serial = t * 1000 + i + 1;
                let rec = JournalRecord::Applied {
                    serial,
                    address: format!("vault_mount.t{t}i{i}"),
                    resource: res(serial),
                };
                w.append(rec).wait().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Group commit: appends waiting at the same time share an fsync.
    assert!(w.fsyncs() < 400, "{} fsyncs for 400 records", w.fsyncs());
    let loaded = b.load().unwrap();
    assert_eq!(loaded.resources.len(), 400);
    assert_eq!(loaded.serial, 7050);
    let w = Arc::try_unwrap(w).unwrap();
    w.finish(&loaded).unwrap();
    assert_eq!(b.load().unwrap(), loaded);
}

#[test]
fn checkpoints_interleaved_with_records() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    let w = b.journal(&s, &lock).unwrap();
    let jpath = w.path().to_path_buf();
    for i in 0..60u64 {
        let a = format!("vault_mount.r{}", i % 7);
        let op = if i % 5 == 4 {
            Operation::Delete
        } else {
            Operation::Create
        };
        record(&mut s, &w, intent(&a, op)).unwrap();
        if i % 11 != 10 {
            let rec = if op == Operation::Delete {
                removed(&a)
            } else {
                applied(&a, i)
            };
            record(&mut s, &w, rec).unwrap();
        }
        if i % 3 == 0 {
            w.checkpoint(&s).wait_blocking().unwrap();
            // After a checkpoint the journal is short: header plus unfinished intents.
            let lines = std::fs::read_to_string(&jpath).unwrap().lines().count();
            assert!(lines <= 1 + s.pending.len(), "{lines} lines");
        }
        assert_same(&b.load().unwrap(), &s);
    }
    assert!(!w.checkpoint_due());
    w.finish(&s).unwrap();
    assert_same(&b.load().unwrap(), &s);
}

#[test]
fn checkpoint_with_snapshot_older_than_records_keeps_them() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    let w = b.journal(&s, &lock).unwrap();
    record(&mut s, &w, applied("vault_mount.a", 1)).unwrap();
    let snapshot = s.clone();
    // Another task records more before the snapshot reaches the writer.
    record(&mut s, &w, applied("vault_mount.b", 2)).unwrap();
    record(&mut s, &w, removed("vault_mount.a")).unwrap();
    w.checkpoint(&snapshot).wait_blocking().unwrap();
    assert_same(&b.load().unwrap(), &s);
    // An even older snapshot than the last checkpoint is refused.
    let err = w.checkpoint(
        &b.load()
            .map(|_| State {
                serial: 0,
                ..snapshot.clone()
            })
            .unwrap(),
    );
    assert!(matches!(
        err.wait_blocking(),
        Err(StateError::StaleState { .. })
    ));
    drop(w);
    assert_same(&b.load().unwrap(), &s);
}

#[test]
fn checkpoint_due_after_interval() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    let w = b.journal(&s, &lock).unwrap();
    let mut commits = Vec::new();
    for i in 0..1024u64 {
        assert!(!w.checkpoint_due());
        let rec = JournalRecord::Removed {
            serial: s.next_serial(),
            address: format!("x.{i}"),
        };
        s.apply_record(&rec);
        commits.push(w.append(rec));
    }
    assert!(w.checkpoint_due());
    for c in commits {
        c.wait_blocking().unwrap();
    }
    w.checkpoint(&s).wait_blocking().unwrap();
    assert!(!w.checkpoint_due());
}

/// Write a journal by hand: header then records.
fn write_journal(path: &Path, lineage: uuid::Uuid, base: u64, recs: &[JournalRecord]) {
    let mut out = format!(
        "{}\n",
        json!({"journal": 1, "lineage": lineage, "base_serial": base})
    );
    for r in recs {
        out.push_str(&serde_json::to_string(r).unwrap());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn stale_serial_records_skipped_after_checkpoint_crash() {
    // The checkpoint wrote state at serial 5 but died before replacing the journal, which
    // still starts at serial 3.
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = State::new();
    s.serial = 5;
    s.resources.insert("x.a".into(), res(2));
    s.resources.insert("x.c".into(), res(9));
    b.write(&s, &lock).unwrap();
    let j = |serial, addr: &str, n| JournalRecord::Applied {
        serial,
        address: addr.into(),
        resource: res(n),
    };
    write_journal(
        &fsio::sibling(b.path(), ".journal"),
        s.lineage,
        3,
        &[
            intent("x.a", Operation::Update),
            j(4, "x.a", 1),
            JournalRecord::Removed {
                serial: 5,
                address: "x.b".into(),
            },
            j(3, "x.c", 0),
            intent("x.a", Operation::Update),
            j(6, "x.a", 3),
            intent("x.d", Operation::Create),
        ],
    );
    let loaded = b.load().unwrap();
    assert_eq!(loaded.serial, 6);
    assert_eq!(loaded.resources["x.a"], res(3));
    assert_eq!(
        loaded.resources["x.c"],
        res(9),
        "serial 3 <= 5 is already in state"
    );
    assert_eq!(pending_addrs(&loaded), vec!["x.d".to_string()]);
}

#[test]
fn journal_of_other_lineage_or_ahead_is_an_error() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = State::new();
    s.serial = 2;
    b.write(&s, &lock).unwrap();
    let jpath = fsio::sibling(b.path(), ".journal");
    write_journal(&jpath, uuid::Uuid::new_v4(), 0, &[]);
    let err = b.load().unwrap_err();
    assert!(matches!(err, StateError::LineageMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&jpath.display().to_string()) && msg.contains(&b.path().display().to_string()),
        "{msg}"
    );

    write_journal(&jpath, s.lineage, 3, &[]);
    let err = b.load().unwrap_err();
    assert!(matches!(err, StateError::JournalAhead { .. }), "{err}");

    // A corrupt line in the middle is an error; a torn last line is not.
    let good = serde_json::to_string(&intent("x.a", Operation::Create)).unwrap();
    let header = json!({"journal": 1, "lineage": s.lineage, "base_serial": 2}).to_string();
    std::fs::write(&jpath, format!("{header}\ngarbage\n{good}\n")).unwrap();
    let err = b.load().unwrap_err();
    assert!(
        matches!(err, StateError::JournalCorrupt { line: 2, .. }),
        "{err}"
    );
    std::fs::write(&jpath, format!("{header}\n{good}\n{{\"record\":\"app")).unwrap();
    assert_eq!(pending_addrs(&b.load().unwrap()), vec!["x.a".to_string()]);
    std::fs::write(&jpath, format!("{header}\n{good}\n\0\0\0\0\n")).unwrap();
    assert_eq!(pending_addrs(&b.load().unwrap()), vec!["x.a".to_string()]);
}

#[test]
fn orphan_journal_is_an_error() {
    let d = dir();
    let b = backend(d.path());
    std::fs::create_dir_all(b.path().parent().unwrap()).unwrap();
    let jpath = fsio::sibling(b.path(), ".journal");
    write_journal(&jpath, uuid::Uuid::new_v4(), 0, &[]);
    let err = b.load().unwrap_err();
    assert!(matches!(err, StateError::OrphanJournal { .. }), "{err}");
}

#[test]
fn journal_refuses_records_after_lock_lost() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    let w = b.journal(&s, &lock).unwrap();
    record(&mut s, &w, applied("x.a", 1)).unwrap();
    b.force_unlock(&lock.info().id).unwrap();
    assert!(!lock.renew_now().unwrap());
    let err = record(&mut s, &w, applied("x.b", 2)).unwrap_err();
    assert!(matches!(err, StateError::LockLost { .. }), "{err}");
    assert!(w.finish(&s).is_err());
}

/// Crash safety, part 1: a process killed mid-append leaves a journal cut at an arbitrary
/// byte. Every prefix must load, and contain every record whose line is complete.
#[test]
fn journal_truncated_at_every_byte_loads() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    s.resources.insert("x.base".into(), res(0));
    s.serial = 1;
    let w = b.journal(&s, &lock).unwrap();
    let jpath = w.path().to_path_buf();
    // Expected state after each complete line of the journal.
    let mut after_line = vec![s.clone()];
    let recs = vec![
        intent("x.a", Operation::Create),
        applied("x.a", 1),
        intent("x.base", Operation::Delete),
        removed("x.base"),
        intent("x.b", Operation::Create),
        JournalRecord::Failed {
            address: "x.b".into(),
            operation: Operation::Create,
            error: "quota \"exceeded\"\nline two".into(),
        },
        intent("x.c", Operation::Update),
    ];
    for r in recs {
        record(&mut s, &w, r).unwrap();
        after_line.push(s.clone());
    }
    drop(w);
    let full = std::fs::read(&jpath).unwrap();
    for cut in 0..=full.len() {
        std::fs::write(&jpath, &full[..cut]).unwrap();
        let loaded = b.load().unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        // Complete lines after the header.
        let complete = full[..cut].iter().filter(|c| **c == b'\n').count();
        let expected = &after_line[complete.saturating_sub(1)];
        assert_same(&loaded, expected);
    }
}

/// Crash safety, part 2: kill the writer between any two file-system steps of creating
/// the journal, appending, checkpointing and finishing. The state must load and hold
/// every record whose commit completed.
#[test]
fn crash_at_every_step_of_journal_and_checkpoints() {
    let mut completed_without_crash = false;
    for steps in 0.. {
        let d = dir();
        let path = d.path().join("state").join("demo.json");
        // Some earlier history, written without faults.
        let setup = LocalBackend::new(&path).with_lease(DEFAULT_LEASE);
        let lock = setup.lock("apply", Duration::ZERO).unwrap();
        let mut s = State::new();
        s.serial = 3;
        s.resources.insert("x.old".into(), res(0));
        setup.write(&s, &lock).unwrap();
        setup.write(&s, &lock).unwrap();

        let b = LocalBackend::new(&path)
            .with_lease(DEFAULT_LEASE)
            .with_faults(Faults::crash_after(steps));
        let mut expected = s.clone();
        let mut attempted = None;
        let outcome = (|| -> Result<(), StateError> {
            let w = b.journal(&expected, &lock)?;
            let mut rec = |state: &mut State, r| record_tracked(state, &w, r, &mut attempted);
            for i in 0..6u64 {
                let a = format!("x.r{}", i % 4);
                rec(&mut expected, intent(&a, Operation::Create))?;
                if i != 4 {
                    rec(&mut expected, applied(&a, i))?;
                }
                if i % 2 == 1 {
                    w.checkpoint(&expected).wait_blocking()?;
                }
            }
            rec(&mut expected, intent("x.old", Operation::Delete))?;
            rec(&mut expected, removed("x.old"))?;
            w.finish(&expected)
        })();
        let loaded = setup
            .load()
            .unwrap_or_else(|e| panic!("crash after {steps} steps: {e}"));
        let mut or_with_attempted = expected.clone();
        if let Some(r) = &attempted {
            or_with_attempted.apply_record(r);
        }
        let same = |a: &State, b: &State| {
            a.serial == b.serial
                && a.resources == b.resources
                && pending_addrs(a) == pending_addrs(b)
        };
        assert!(
            same(&loaded, &expected) || same(&loaded, &or_with_attempted),
            "crash after {steps} steps ({outcome:?}):\n{loaded:#?}\nexpected {expected:#?}"
        );
        assert_eq!(loaded.lineage, expected.lineage);
        if outcome.is_ok() {
            assert!(!fsio::sibling(&path, ".journal").exists());
            completed_without_crash = true;
            break;
        }
        assert!(steps < 10_000, "never completed");
    }
    assert!(completed_without_crash);
}

/// Compile-time check: the engine shares these across threads and tasks.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<LocalBackend>();
    is::<JournalWriter>();
    is::<LockHandle>();
    is::<Box<dyn StateBackend>>();
    is::<StateError>();
}

mod prop {
    //! Random record sequences with checkpoints from (slightly stale) snapshots: after
    //! every step, loading gives exactly the model state.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Intent(u8, Operation),
        Applied(u8),
        Removed(u8),
        Failed(u8),
        /// Checkpoint the state as it was this many records ago (bounded so snapshots
        /// never go back past the previous checkpoint).
        Checkpoint(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        let op = prop_oneof![
            Just(Operation::Create),
            Just(Operation::Update),
            Just(Operation::Delete)
        ];
        prop_oneof![
            3 => (0u8..5, op).prop_map(|(a, o)| Step::Intent(a, o)),
            3 => (0u8..5).prop_map(Step::Applied),
            1 => (0u8..5).prop_map(Step::Removed),
            1 => (0u8..5).prop_map(Step::Failed),
            2 => (0usize..4).prop_map(Step::Checkpoint),
        ]
    }

    proptest! {
        // Failures found so far are kept as the explicit `lagging_snapshot_*` tests below, so
        // no regression file is written outside `src/state`.
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn load_matches_model(steps in proptest::collection::vec(step(), 1..40)) {
            let d = dir();
            let b = backend(d.path());
            let lock = b.lock("apply", Duration::ZERO).unwrap();
            let mut s = b.load().unwrap();
            let w = b.journal(&s, &lock).unwrap();
            let mut history = vec![s.clone()];
            let mut last_checkpoint = 0usize;
            for st in steps {
                let addr = |a: u8| format!("x.r{a}");
                match st {
                    Step::Intent(a, op) => record(&mut s, &w, intent(&addr(a), op)).unwrap(),
                    Step::Applied(a) => record(&mut s, &w, applied(&addr(a), u64::from(a))).unwrap(),
                    Step::Removed(a) => record(&mut s, &w, removed(&addr(a))).unwrap(),
                    Step::Failed(a) => record(&mut s, &w, JournalRecord::Failed {
                        address: addr(a),
                        operation: Operation::Update,
                        error: "e".into(),
                    }).unwrap(),
                    Step::Checkpoint(lag) => {
                        let idx = history.len().saturating_sub(1 + lag).max(last_checkpoint);
                        last_checkpoint = idx;
                        w.checkpoint(&history[idx]).wait_blocking().unwrap();
                    }
                }
                history.push(s.clone());
                let loaded = b.load().unwrap();
                prop_assert_eq!(loaded.serial, s.serial);
                prop_assert_eq!(&loaded.resources, &s.resources);
                prop_assert_eq!(pending_addrs(&loaded), pending_addrs(&s));
            }
            w.finish(&s).unwrap();
            prop_assert_eq!(b.load().unwrap(), s);
        }
    }
}

/// Found by `prop::load_matches_model`: a checkpoint from a snapshot taken before an
/// intent and its failure dropped both; a later, still older-than-the-failure snapshot
/// then resurrected the pending entry. The writer now owns the pending view.
#[test]
fn lagging_snapshot_does_not_resurrect_failed_intent() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    let s0 = s.clone();
    let w = b.journal(&s, &lock).unwrap();
    record(&mut s, &w, intent("x.r2", Operation::Create)).unwrap();
    let s1 = s.clone();
    record(
        &mut s,
        &w,
        JournalRecord::Failed {
            address: "x.r2".into(),
            operation: Operation::Create,
            error: "e".into(),
        },
    )
    .unwrap();
    w.checkpoint(&s0).wait_blocking().unwrap();
    w.checkpoint(&s1).wait_blocking().unwrap();
    assert_same(&b.load().unwrap(), &s);
}

/// Found by `prop::load_matches_model`: a result carried over into the new journal
/// (snapshot older than it) cleared on replay the intent that came after it.
#[test]
fn lagging_snapshot_keeps_intent_after_carried_result() {
    let d = dir();
    let b = backend(d.path());
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    let s0 = s.clone();
    let w = b.journal(&s, &lock).unwrap();
    record(&mut s, &w, applied("x.r4", 4)).unwrap();
    record(&mut s, &w, intent("x.r4", Operation::Update)).unwrap();
    w.checkpoint(&s0).wait_blocking().unwrap();
    let loaded = b.load().unwrap();
    assert_same(&loaded, &s);
    assert_eq!(loaded.pending[0].operation, Operation::Update);
}

/// Environment variable that turns [`sigkill_child`] into the workload of
/// [`sigkill_at_random_instants`].
const CHILD_ENV: &str = "ANVIL_STATE_SIGKILL_CHILD_DIR";

/// Not a test on its own: when [`CHILD_ENV`] is set, runs apply-like journalling until
/// killed, logging each committed serial to `committed.log` (after its commit completed).
#[test]
fn sigkill_child() {
    use std::io::Write as _;
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let b = backend(dir);
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    let mut s = b.load().unwrap();
    let w = b.journal(&s, &lock).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("committed.log"))
        .unwrap();
    for i in 0u64.. {
        let a = format!("x.r{}", i % 50);
        record(&mut s, &w, intent(&a, Operation::Update)).unwrap();
        record(&mut s, &w, applied(&a, i)).unwrap();
        // One write(2) per line: `writeln!` may split it into two, and a SIGKILL between
        // them left a line without its newline that the next child's first line joined
        // ("162" + "163" read back as serial 162163).
        log.write_all(format!("{}\n", s.serial).as_bytes()).unwrap();
        if i % 7 == 0 {
            w.checkpoint(&s).wait_blocking().unwrap();
        }
    }
}

/// Crash safety, part 3: a real process killed with SIGKILL at random instants while
/// appending and checkpointing. Every load succeeds and no committed result is lost.
#[cfg(unix)]
#[test]
fn sigkill_at_random_instants() {
    let exe = std::env::current_exe().unwrap();
    let d = dir();
    let mut last_committed = 0u64;
    for round in 0..6u64 {
        // Free the previous child's lock (it died holding it).
        let b = backend(d.path());
        if let Ok(Some(info)) = std::fs::read(fsio::sibling(b.path(), ".lock"))
            .ok()
            .map(|bytes| serde_json::from_slice::<LockInfo>(&bytes))
            .transpose()
        {
            b.force_unlock(&info.id).unwrap();
        }
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "state::tests::sigkill_child", "--test-threads=1"])
            .env(CHILD_ENV, d.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let loaded = b
            .load()
            .unwrap_or_else(|e| panic!("round {round}: load after SIGKILL failed: {e}"));
        let log = std::fs::read_to_string(d.path().join("committed.log")).unwrap_or_default();
        let committed = log
            .lines()
            .filter_map(|l| l.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        assert!(
            loaded.serial >= committed,
            "round {round}: committed serial {committed} lost (loaded {})",
            loaded.serial
        );
        assert!(committed >= last_committed);
        last_committed = committed;
    }
    assert!(last_committed > 0, "the child never committed anything");
}

#[test]
fn redact_url_hides_passwords_only() {
    for (url, want) in [
        (
            "postgres://anvil:s3cr%40t@db:5432/x",
            "postgres://anvil:***@db:5432/x",
        ),
        ("postgresql://anvil@db/x", "postgresql://anvil@db/x"),
        (
            "postgres://u:p@h/d?schema=a&password=zz",
            "postgres://u:***@h/d?schema=a&password=***",
        ),
        ("postgres://u:p:q@h/d#frag@x", "postgres://u:***@h/d#frag@x"),
        (
            "postgres:///d?host=/tmp&password=pw",
            "postgres:///d?host=/tmp&password=***",
        ),
        ("state/demo.json", "state/demo.json"),
        (
            "postgres://u:p@h/d?mypassword=keep",
            "postgres://u:***@h/d?mypassword=keep",
        ),
    ] {
        assert_eq!(redact_url(url), want, "{url}");
    }
}

#[test]
fn locking_leaves_no_guard_files_and_removes_old_ones() {
    let d = dir();
    let b = backend(d.path());
    let state_dir = b.path().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&state_dir).unwrap();
    // Left behind by an older anvil.
    let legacy = fsio::sibling(b.path(), ".lock.guard");
    std::fs::write(&legacy, "").unwrap();
    let lock = b.lock("apply", Duration::ZERO).unwrap();
    assert!(lock.renew_now().unwrap());
    b.write(&State::new(), &lock).unwrap();
    drop(lock);
    let mut names: Vec<String> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["demo.json".to_string()]);
}

/// The same steps as the CLI takes, through `Box<dyn StateBackend>` and the async traits.
#[test]
fn async_trait_round_trip_through_dyn_backend() {
    futures::executor::block_on(async {
        let d = dir();
        let url = d.path().join("state").join("demo.json");
        let b: Box<dyn StateBackend> = open(Some(url.to_str().unwrap()), "demo").unwrap();
        assert!(!b.exists().await.unwrap());
        let mut s = b.load().await.unwrap();
        let lock = b.lock("apply", Duration::ZERO).await.unwrap();
        assert!(!lock.is_lost());
        assert_eq!(lock.info().operation, "apply");
        assert!(
            lock.location().ends_with("demo.json.lock"),
            "{}",
            lock.location()
        );
        let err = b.lock("plan", Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        let j = b.journal(&s, lock.as_ref()).await.unwrap();
        assert!(j.location().ends_with("demo.json.journal"));
        let rec = JournalRecord::Applied {
            serial: s.next_serial(),
            address: "vault_mount.a".into(),
            resource: res(1),
        };
        s.apply_record(&rec);
        j.append(&rec).wait().await.unwrap();
        assert!(b.has_journal().await);
        j.finish(&s).await.unwrap();
        assert!(!b.has_journal().await);
        assert!(b.exists().await.unwrap());
        assert_eq!(b.load().await.unwrap(), s);

        // A lock of another backend is refused by name.
        let other = LocalBackend::new(d.path().join("other.json"));
        let foreign = StateBackend::lock(&other, "apply", Duration::ZERO)
            .await
            .unwrap();
        let err = b.write(&s, foreign.as_ref()).await.unwrap_err();
        assert!(matches!(err, StateError::WrongLock { .. }), "{err}");
        assert!(err.to_string().contains("other.json.lock"), "{err}");
        drop(lock);
        let id = foreign.info().id.clone();
        StateBackend::force_unlock(&other, &id).await.unwrap();
        // The lock is gone, so it can be taken again at once.
        StateBackend::lock(&other, "apply", Duration::ZERO)
            .await
            .unwrap();
    });
}
