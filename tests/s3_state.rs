//! The `s3://BUCKET/KEY` state backend against moto (tests/moto_support), beyond the
//! conformance suite of tests/backends.rs: bad URLs, a missing region, a missing bucket
//! and an unreachable endpoint exit 1 naming the URL, the endpoint and the AWS error code,
//! make no AWS call where none is needed and write nothing; through the library, stale,
//! foreign-lineage and lost-lock writes are refused, a dead holder's lease is taken over
//! by exactly one of several racing takers, and a journal of thousands of records with
//! checkpoints round-trips and leaves no chunk object behind.
#![cfg(feature = "aws")]

mod common;
mod moto_support;

use common::*;
use moto_support::Moto;
use std::process::Output;

const SPEC: &str = "apiVersion: anvil/v1\nkind: Resources\nmetadata: { name: demo }\nresources:\n  - type: null_resource\n    name: one\n    attributes: { triggers: { a: \"1\" } }\n";

/// `anvil ARGS` with the moto environment (or `endpoint` instead) and `ANVIL_STATE=url`.
fn run(s: &Scratch, moto: &Moto, url: &str, args: &[&str], unset: &[&str]) -> Output {
    let mut c = s.cmd(args);
    moto.apply_env(&mut c);
    c.env("ANVIL_STATE", url).env_remove("ANVIL_LOCK_LEASE");
    for k in unset {
        c.env_remove(k);
    }
    let o = c.output().expect("run anvil");
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!all.contains("panicked"), "{all}");
    o
}

/// Exit 1, the message names each of `must`, no local state written.
fn refused(s: &Scratch, o: &Output, must: &[&str]) {
    assert_code(o, 1);
    let err = stderr(o);
    for m in must {
        assert!(err.contains(m), "missing {m:?} in:\n{err}");
    }
    assert!(!s.path().join("state").exists(), "local state written");
}

#[test]
fn bad_urls_are_refused_before_any_aws_call() {
    let moto = Moto::start();
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    let cases: &[(&str, &str)] = &[
        ("s3://ab/state", "3 to 63"),
        ("s3://Bad_Bucket/state", "lowercase"),
        ("s3://bucket/a//b", "'.' or '..'"),
        ("s3://bucket/k?endpoint=ftp://host", "not an http"),
        ("s3://bucket/k?sse=aws:kms", "unknown parameter \"sse\""),
        (
            "s3://AKIAEXAMPLE:hunter2@bucket/k",
            "credentials in the URL are refused",
        ),
    ];
    for (url, says) in cases {
        for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
            let o = run(&s, &moto, url, args, &[]);
            refused(&s, &o, &[says, "docs/state.md"]);
            assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
        }
    }
    assert!(moto.requests().is_empty(), "{:#?}", moto.requests());
}

#[test]
fn missing_bucket_names_the_code_and_endpoint_and_writes_nothing() {
    let moto = Moto::start();
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    let url = "s3://no-such-anvil-bucket/state";
    let o = run(&s, &moto, url, &["apply", "--auto-approve"], &[]);
    refused(
        &s,
        &o,
        &[
            "s3://no-such-anvil-bucket/state/demo",
            "NoSuchBucket",
            &moto.endpoint(),
            "create the bucket",
        ],
    );
    let buckets = moto.python("result = client('s3').list_buckets()['Buckets']");
    assert_eq!(buckets, serde_json::json!([]));
}

#[test]
fn missing_region_says_how_to_give_one() {
    let moto = Moto::start();
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    let o = run(
        &s,
        &moto,
        "s3://some-bucket/state",
        &["plan"],
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
    );
    refused(
        &s,
        &o,
        &[
            "s3://some-bucket/state/demo.json",
            "no AWS region",
            "?region=",
        ],
    );
    assert!(moto.requests().is_empty(), "{:#?}", moto.requests());
}

#[test]
fn unreachable_endpoint_is_named() {
    let moto = Moto::start();
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let dead = format!("http://127.0.0.1:{port}");
    let url = format!("s3://some-bucket/state?endpoint={dead}");
    let start = std::time::Instant::now();
    let o = run(&s, &moto, &url, &["apply", "--auto-approve"], &[]);
    refused(
        &s,
        &o,
        &["s3://some-bucket/state/demo.", "cannot reach S3", &dead],
    );
    // A hang guard, not a performance assertion: retries are bounded.
    assert!(start.elapsed() < std::time::Duration::from_secs(120));
}

/// Library-level checks on the shared moto, each in its own bucket.
mod library {
    use super::moto_support::Moto;
    use anvil::state::{
        JournalRecord, RecordedLifecycle, ResourceState, S3Backend, State, StateBackend, StateError,
    };
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn backend(bucket: &str, ws: &str) -> S3Backend {
        static ENV: std::sync::Once = std::sync::Once::new();
        let moto = Moto::shared();
        // The backend reads credentials, region and endpoint from the environment, like
        // the binary; set once, before any backend of this binary exists.
        ENV.call_once(|| {
            for (k, v) in moto.env() {
                std::env::set_var(k, v);
            }
        });
        moto.create_bucket(bucket);
        S3Backend::open(&format!("s3://{bucket}/lib"), ws).expect("valid URL")
    }

    fn keys(bucket: &str) -> Vec<String> {
        let v = Moto::shared().python(&format!(
            "r = client('s3').list_objects_v2(Bucket={bucket:?})\n\
             result = sorted(o['Key'] for o in r.get('Contents', []))"
        ));
        serde_json::from_value(v).expect("keys")
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
        let b = backend("lib-refuse", "w");
        let other_ws = backend("lib-refuse", "other");
        assert!(!b.exists().await.unwrap());
        let lock = b.lock("test", Duration::ZERO).await.unwrap();
        assert_eq!(keys("lib-refuse"), vec!["lib/w.lock".to_string()]);
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
        let StateError::Locked { info, location } = &err else {
            panic!("{err}")
        };
        assert_eq!(info.id, anvil::state::Lock::info(lock.as_ref()).id);
        assert_eq!(info.pid, std::process::id());
        assert_eq!(location, "s3://lib-refuse/lib/w.lock");

        // Force-unlocked: the old holder's journal appends and writes fail, and the
        // holder's renewal notices.
        let j = b.journal(&s, lock.as_ref()).await.unwrap();
        let err = b.force_unlock("wrong-id").await.unwrap_err();
        assert!(matches!(err, StateError::LockIdMismatch { .. }), "{err}");
        b.force_unlock(&lock.info().id).await.unwrap();
        let second = b.lock("apply", Duration::ZERO).await.unwrap();
        // The new holder writes a newer state. The old holder has not noticed yet (its
        // renewal runs every lease/3 = 10 s): its checkpoint is refused by S3 itself,
        // because the state object's ETag is no longer the one it read.
        let mut newer = s.clone();
        newer.serial = 9;
        b.write(&newer, second.as_ref()).await.unwrap();
        let err = j.finish(&s).await.unwrap_err();
        assert!(
            matches!(
                err,
                StateError::StaleState {
                    stored: 9,
                    ours: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            b.load().await.unwrap(),
            newer,
            "the stale writer changed nothing"
        );
        drop(second);
        let err = b.force_unlock("x").await.unwrap_err();
        assert!(matches!(err, StateError::NotLocked { .. }), "{err}");
        drop(lock);
        drop(foreign);
        assert_eq!(
            keys("lib-refuse"),
            vec!["lib/w.json".to_string()],
            "locks released, no journal left"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_appends_and_checkpoints_round_trip() {
        let b = backend("lib-journal", "w");
        let lock = b.lock("apply", Duration::ZERO).await.unwrap();
        let mut state = b.load().await.unwrap();
        let j = b.journal(&state, lock.as_ref()).await.unwrap();
        let mut commits = Vec::new();
        let mut checkpoints = 0;
        for i in 0..3000u64 {
            let rec = JournalRecord::Applied {
                serial: state.next_serial(),
                address: format!("null_resource.r{i}"),
                resource: res(i),
            };
            state.apply_record(&rec);
            commits.push(j.append(&rec));
            if j.checkpoint_due() {
                checkpoints += 1;
                commits.push(j.checkpoint(&state));
            }
        }
        assert!(checkpoints > 0, "3000 records must trigger a checkpoint");
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
        drop(lock);
        assert_eq!(keys("lib-journal"), vec!["lib/w.json".to_string()]);
    }

    #[test]
    fn lease_of_a_dead_holder_is_taken_over_by_exactly_one() {
        let lease = Duration::from_secs(2);
        let open = move || backend("lib-lease", "w").with_lease(lease);
        // The holder "dies": its runtime (and renewal task) goes away and its lock is
        // never released.
        let first = tokio::runtime::Runtime::new().unwrap();
        let (id, taken) = first.block_on(async {
            let lock = open().lock("apply", Duration::ZERO).await.unwrap();
            let id = lock.info().id.clone();
            std::mem::forget(lock);
            (id, std::time::Instant::now())
        });
        drop(first);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            // Still held, unless a loaded machine let the lease run out already: then it
            // must have been taken only after it (that is the takeover; the race below
            // is then for a free lock, which If-None-Match decides).
            match open().lock("apply", Duration::ZERO).await {
                Err(StateError::Locked { info, .. }) => assert_eq!(info.id, id),
                Err(e) => panic!("{e}"),
                Ok(l) => {
                    assert!(taken.elapsed() >= lease, "taken before the lease ran out");
                    drop(l);
                }
            }
            // Eight takers race for the expired lock; the ETag condition lets one win.
            tokio::time::sleep(lease + Duration::from_millis(200)).await;
            let tasks: Vec<_> = (0..8)
                .map(|_| tokio::spawn(async move { open().lock("apply", Duration::ZERO).await }))
                .collect();
            let mut won = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    Ok(l) => won.push(l),
                    Err(StateError::Locked { info, .. }) => assert_ne!(info.id, id),
                    Err(e) => panic!("{e}"),
                }
            }
            // On a loaded machine a winner's lease may run out before its first renewal
            // and be taken over in turn; then its renewal finds the lock lost. After the
            // renewals, exactly one holder is left, and the lock object names it.
            assert!(!won.is_empty(), "nobody took the expired lock");
            tokio::time::sleep(lease * 3).await;
            won.retain(|l| !l.is_lost());
            assert_eq!(won.len(), 1, "exactly one holder is left");
            let err = open().lock("plan", Duration::ZERO).await.unwrap_err();
            let StateError::Locked { info, .. } = &err else {
                panic!("{err}")
            };
            assert_eq!(info.id, won[0].info().id);
            drop(won);
            // Released: free at once.
            let again = open().lock("plan", Duration::ZERO).await.unwrap();
            drop(again);
        });
    }
}
