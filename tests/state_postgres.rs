//! The PostgreSQL state backend through the real binary against a throwaway cluster:
//! round trip; ten applies on ten workspaces of one database at once; ten applies on one
//! workspace with `--lock-timeout`, one at a time; bad URLs (unknown scheme, unreachable
//! server, wrong password, a role that may not create tables) exit 1 naming the URL with
//! the password redacted, never print the password and write nothing. Through the
//! library: stale and foreign writes are refused, a lost lock stops writes and journal
//! appends, a dead holder's lease is taken over, and parallel appends round-trip.

mod common;
mod pg_support;
use common::*;
use pg_support::PgCluster;
use std::process::Output;

fn run_pg(s: &Scratch, url: &str, args: &[&str]) -> Output {
    let mut full = vec!["--state", url];
    full.extend_from_slice(args);
    s.run(&full)
}

fn count_rows(pg: &PgCluster, db: &str, sql: &str) -> i64 {
    pg.psql(db, sql).trim().parse().unwrap()
}

#[test]
fn round_trip_plan_apply_state_commands() {
    let pg = PgCluster::shared();
    pg.create_db("roundtrip");
    let url = format!("{}?schema=infra", pg.url("roundtrip"));
    let s = Scratch::new();
    s.write("spec.yaml", &tree_spec("rt", 30, ""));

    let o = run_pg(&s, &url, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(!s.path().join("state").exists(), "no local state files");
    assert_eq!(
        count_rows(
            pg,
            "roundtrip",
            "SELECT count(*) FROM infra.anvil_state WHERE workspace = 'rt'"
        ),
        1
    );
    // The stored document holds every resource; the journal and lock are gone.
    let n = pg.psql(
        "roundtrip",
        "SELECT count(*) FROM json_object_keys((SELECT doc::json->'resources' FROM infra.anvil_state WHERE workspace = 'rt'))",
    );
    assert_eq!(n.trim(), "30");
    assert_eq!(
        count_rows(pg, "roundtrip", "SELECT count(*) FROM infra.anvil_journal"),
        0
    );
    assert_eq!(
        count_rows(pg, "roundtrip", "SELECT count(*) FROM infra.anvil_lock"),
        0
    );

    let o = run_pg(&s, &url, &["plan", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("No changes."), "{}", stdout(&o));

    let o = run_pg(&s, &url, &["state", "list", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("null_resource.r29"), "{}", stdout(&o));

    let o = run_pg(
        &s,
        &url,
        &["state", "rm", "--path", "spec.yaml", "null_resource.r29"],
    );
    assert_code(&o, 0);
    let o = run_pg(&s, &url, &["plan", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("1 to add"), "{}", stdout(&o));

    // force-unlock of a lock that is not there says so.
    let o = run_pg(&s, &url, &["force-unlock", "nope", "spec.yaml"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("not held"), "{}", stderr(&o));
}

#[test]
fn ten_workspaces_in_one_database_at_once() {
    let pg = PgCluster::shared();
    pg.create_db("many");
    let url = pg.url("many");
    let scratches: Vec<Scratch> = (0..10)
        .map(|i| {
            let s = Scratch::new();
            s.write("spec.yaml", &tree_spec(&format!("ws{i}"), 40, ""));
            s
        })
        .collect();
    // All start together, before any has created the tables.
    let children: Vec<_> = scratches
        .iter()
        .map(|s| s.spawn(&["--state", &url, "apply", "--auto-approve", "spec.yaml"]))
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_code(&o, 0);
    }
    let rows = pg.psql(
        "many",
        "SELECT workspace, (SELECT count(*) FROM json_object_keys(doc::json->'resources')) FROM anvil_state ORDER BY workspace",
    );
    let want: String = (0..10).map(|i| format!("ws{i}|40\n")).collect();
    assert_eq!(rows, want);
    for s in &scratches {
        let o = run_pg(s, &url, &["plan", "spec.yaml"]);
        assert_code(&o, 0);
        assert!(stdout(&o).contains("No changes."), "{}", stdout(&o));
    }
}

#[test]
fn ten_applies_on_one_workspace_wait_their_turn() {
    let pg = PgCluster::shared();
    pg.create_db("one");
    let url = pg.url("one");
    // Each process has its own trigger value, so each run changes the workspace and must
    // read what the previous one wrote (a stale read would be refused and exit 1).
    let scratches: Vec<Scratch> = (0..10)
        .map(|i| {
            let s = Scratch::new();
            s.write(
                "spec.yaml",
                &format!(
                    "apiVersion: anvil/v1\nkind: Resources\nmetadata: {{ name: shared }}\nresources:\n  - type: null_resource\n    name: turn\n    attributes: {{ sleep_ms: 200, triggers: {{ who: \"p{i}\" }} }}\n"
                ),
            );
            s
        })
        .collect();
    let children: Vec<_> = scratches
        .iter()
        .map(|s| {
            s.spawn(&[
                "--state",
                &url,
                "apply",
                "--auto-approve",
                "--lock-timeout",
                "60s",
                "spec.yaml",
            ])
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_code(&o, 0);
    }
    // Every run recorded its change on top of the previous one.
    let serial = count_rows(
        pg,
        "one",
        "SELECT serial FROM anvil_state WHERE workspace = 'shared'",
    );
    assert!(serial >= 10, "serial {serial}: a run's change was lost");
    let who = pg.psql(
        "one",
        "SELECT doc::json->'resources'->'null_resource.turn'->'attributes'->'triggers'->>'who' FROM anvil_state WHERE workspace = 'shared'",
    );
    assert!(who.trim().starts_with('p'), "{who}");
    assert_eq!(count_rows(pg, "one", "SELECT count(*) FROM anvil_lock"), 0);
}

/// Exit 1, the redacted URL named, the password nowhere, no panic, no local files.
fn assert_refused(s: &Scratch, o: &Output, redacted: &str, password: &str, hint: &str) {
    assert_code(o, 1);
    let (out, err) = (stdout(o), stderr(o));
    assert!(err.contains(redacted), "{redacted} missing: {err}");
    assert!(err.contains(hint), "{hint:?} missing: {err}");
    assert!(
        !err.contains(password) && !out.contains(password),
        "{err}{out}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!s.path().join("state").exists(), "nothing written locally");
}

#[test]
fn bad_state_urls_exit_1_naming_the_redacted_url() {
    let pg = PgCluster::shared();
    pg.create_db("locked_down");
    pg.create_role("reader", "s3cretpw", false);
    pg.create_role("writer", "rightpw", true);
    let s = Scratch::new();
    s.write("spec.yaml", &tree_spec("bad", 3, ""));
    let apply = ["apply", "--auto-approve", "spec.yaml"];

    // Unknown scheme.
    let o = run_pg(&s, "mysql://u:hunter2@127.0.0.1/db", &apply);
    assert_refused(
        &s,
        &o,
        "mysql://u:***@127.0.0.1/db",
        "hunter2",
        "supported:",
    );

    // Unreachable server: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://anvil:hunter2@127.0.0.1:{port}/db");
    let o = run_pg(&s, &url, &apply);
    let redacted = format!("postgres://anvil:***@127.0.0.1:{port}/db");
    assert_refused(&s, &o, &redacted, "hunter2", "check the host and port");

    // Wrong password.
    let url = pg.url_as("writer", "wrongpw99", "locked_down");
    let o = run_pg(&s, &url, &apply);
    let redacted = url.replace("wrongpw99", "***");
    assert_refused(&s, &o, &redacted, "wrongpw99", "password");

    // A role that may connect but not create tables.
    let url = pg.url_as("reader", "s3cretpw", "locked_down");
    let o = run_pg(&s, &url, &apply);
    let redacted = url.replace("s3cretpw", "***");
    assert_refused(
        &s,
        &o,
        &redacted,
        "s3cretpw",
        "grant CREATE on schema public",
    );
    assert_eq!(
        pg.psql(
            "locked_down",
            "SELECT to_regclass('public.anvil_state') IS NULL"
        )
        .trim(),
        "t",
        "no table was created"
    );

    // A password in a query parameter is redacted too.
    let url = format!("postgres://anvil@127.0.0.1:{port}/db?password=qpw12345");
    let o = run_pg(&s, &url, &apply);
    assert_refused(
        &s,
        &o,
        "password=***",
        "qpw12345",
        "check the host and port",
    );
}

mod library {
    use super::PgCluster;
    use anvil::state::{
        JournalRecord, PostgresBackend, RecordedLifecycle, ResourceState, State, StateBackend,
        StateError,
    };
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn backend(db: &str, ws: &str) -> PostgresBackend {
        let pg = PgCluster::shared();
        PostgresBackend::new(&pg.url(db), ws).unwrap()
    }

    fn res(n: u64) -> ResourceState {
        let t = chrono::Utc::now();
        ResourceState {
            ty: "null_resource".into(),
            provider: "null".into(),
            attributes: BTreeMap::from([("n".to_string(), serde_json::json!(n))]),
            sensitive: BTreeMap::new(),
            outputs: BTreeMap::new(),
            dependencies: vec![],
            lifecycle: RecordedLifecycle::default(),
            created_at: t,
            updated_at: t,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_foreign_and_lost_lock_writes_are_refused() {
        PgCluster::shared().create_db("lib_refuse");
        let b = backend("lib_refuse", "w");
        let other_ws = backend("lib_refuse", "other");
        assert!(!b.exists().await.unwrap());
        let lock = b.lock("test", Duration::ZERO).await.unwrap();
        let mut s = b.load().await.unwrap();
        s.serial = 5;
        b.write(&s, lock.as_ref()).await.unwrap();
        assert!(b.exists().await.unwrap());
        assert!(!other_ws.exists().await.unwrap(), "workspaces are apart");

        // An older serial, or another lineage, is refused.
        let mut stale = s.clone();
        stale.serial = 4;
        let err = b.write(&stale, lock.as_ref()).await.unwrap_err();
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
        let err = b.write(&State::new(), lock.as_ref()).await.unwrap_err();
        assert!(matches!(err, StateError::LineageMismatch { .. }), "{err}");

        // Another workspace's lock is not ours.
        let foreign = other_ws.lock("test", Duration::ZERO).await.unwrap();
        let err = b.write(&s, foreign.as_ref()).await.unwrap_err();
        assert!(matches!(err, StateError::WrongLock { .. }), "{err}");

        // A second locker is told who holds it.
        let err = b.lock("plan", Duration::ZERO).await.unwrap_err();
        let StateError::Locked { info, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(info.id, lock.info().id);
        assert_eq!(info.pid, std::process::id());

        // Force-unlocked: the old holder's journal appends and writes fail.
        let j = b.journal(&s, lock.as_ref()).await.unwrap();
        let err = b.force_unlock("wrong-id").await.unwrap_err();
        assert!(matches!(err, StateError::LockIdMismatch { .. }), "{err}");
        b.force_unlock(&lock.info().id).await.unwrap();
        let rec = JournalRecord::Applied {
            serial: 6,
            address: "null_resource.a".into(),
            resource: res(1),
        };
        let err = j.append(&rec).wait().await.unwrap_err();
        assert!(matches!(err, StateError::LockLost { .. }), "{err}");
        let err = b.write(&s, lock.as_ref()).await.unwrap_err();
        assert!(matches!(err, StateError::LockLost { .. }), "{err}");
        assert_eq!(
            b.load().await.unwrap(),
            s,
            "nothing written after the lock was lost"
        );
        let err = b.force_unlock("x").await.unwrap_err();
        assert!(matches!(err, StateError::NotLocked { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_appends_and_checkpoints_round_trip() {
        PgCluster::shared().create_db("lib_journal");
        let b = backend("lib_journal", "w");
        let lock = b.lock("apply", Duration::ZERO).await.unwrap();
        let mut state = b.load().await.unwrap();
        let j = b.journal(&state, lock.as_ref()).await.unwrap();
        let mut commits = Vec::new();
        for i in 0..3000u64 {
            let rec = JournalRecord::Applied {
                serial: state.next_serial(),
                address: format!("null_resource.r{i}"),
                resource: res(i),
            };
            state.apply_record(&rec);
            commits.push(j.append(&rec));
            if j.checkpoint_due() {
                commits.push(j.checkpoint(&state));
            }
        }
        // An intent left pending survives in the loaded state.
        let intent = JournalRecord::Intent {
            address: "null_resource.r0".into(),
            operation: anvil::state::Operation::Update,
            at: chrono::Utc::now(),
        };
        commits.push(j.append(&intent));
        for c in commits {
            c.wait().await.unwrap();
        }
        assert!(b.has_journal().await);
        let loaded = b.load().await.unwrap();
        assert_eq!(loaded.resources, state.resources);
        assert_eq!(loaded.serial, 3000);
        assert_eq!(loaded.pending.len(), 1);
        j.finish(&state).await.unwrap();
        assert!(!b.has_journal().await);
        let loaded = b.load().await.unwrap();
        assert_eq!(loaded.resources.len(), 3000);
        assert_eq!(
            loaded.pending.len(),
            1,
            "the checkpoint keeps the pending intent"
        );
    }

    #[test]
    fn lease_of_a_dead_holder_is_taken_over() {
        PgCluster::shared().create_db("lib_lease");
        let url = PgCluster::shared().url("lib_lease");
        // The holder "dies": its runtime (and renewal task) goes away and its lock is
        // never released.
        let first = tokio::runtime::Runtime::new().unwrap();
        let id = first.block_on(async {
            let b = PostgresBackend::new(&url, "w")
                .unwrap()
                .with_lease(Duration::from_millis(600));
            let lock = b.lock("apply", Duration::ZERO).await.unwrap();
            let id = lock.info().id.clone();
            std::mem::forget(lock);
            id
        });
        drop(first);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let b = PostgresBackend::new(&url, "w")
                .unwrap()
                .with_lease(Duration::from_millis(600));
            let err = b.lock("apply", Duration::ZERO).await.unwrap_err();
            assert!(matches!(err, StateError::Locked { .. }), "{err}");
            // No force-unlock: waiting past the lease is enough.
            let lock = b.lock("apply", Duration::from_secs(30)).await.unwrap();
            assert_ne!(lock.info().id, id);
            drop(lock);
            // Dropping released it: free at once.
            b.lock("apply", Duration::ZERO).await.unwrap();
        });
    }
}
