//! Conformance of the `JobQueue` implementations (issue 11): every body runs over each
//! queue through the trait only — submit, idempotency and taken names, list filters and
//! pagination, take / heartbeat / lease expiry (taken again with attempt 2, the old
//! holder refused), finish, destroy and refresh conflicts, events. Leases are short
//! (300 ms) and waited for with a bounded loop; nothing asserts on timing.
//!
//! Both queues run every body: the file queue (embedded mode) and the PostgreSQL queue,
//! each case on a fresh database of one throwaway cluster (tests/pg_support). PostgreSQL
//! only: two queues opened at once on an empty database both create the tables; two
//! queues (two servers) on one database with eight takers racing hand every job to
//! exactly one taker, one job per environment at a time; two servers racing one name
//! and one idempotency key record each once; a job submitted to one server wakes the
//! other's idle worker.

mod pg_support;

use anvil::server::queue::file::FileQueue;
use anvil::server::queue::postgres::PostgresQueue;
use anvil::server::queue::{
    Environment, JobKind, JobOutcome, JobQueue, ListQuery, NewEnvironment, QueueError, Status,
    Submitted,
};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A queue to test, and what keeps its storage alive.
struct Under {
    queue: Arc<dyn JobQueue>,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Clone, Copy)]
enum Kind {
    File,
    Postgres,
}

/// A fresh database on the shared throwaway cluster; its URL.
fn fresh_database() -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let pg = pg_support::PgCluster::shared();
    let name = format!(
        "queue_{}",
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    pg.create_db(&name);
    // A schema of our own, as a server sharing the database with others would use.
    format!("{}?schema=jobs", pg.url(&name))
}

async fn open(kind: Kind) -> Under {
    match kind {
        Kind::File => {
            let dir = tempfile::tempdir().unwrap();
            let q = FileQueue::open(&dir.path().join("queue")).await.unwrap();
            Under {
                queue: Arc::new(q),
                _dir: Some(dir),
            }
        }
        Kind::Postgres => {
            let url = tokio::task::spawn_blocking(fresh_database).await.unwrap();
            Under {
                queue: Arc::new(PostgresQueue::open(&url).await.unwrap()),
                _dir: None,
            }
        }
    }
}

fn new(name: &str, key: Option<&str>) -> NewEnvironment {
    NewEnvironment {
        name: name.into(),
        user_id: "alice".into(),
        document: json!({"metadata": {"name": name}}),
        idempotency_key: key.map(str::to_string),
    }
}

const LEASE: Duration = Duration::from_millis(300);

async fn submit_idempotency_and_names(kind: Kind) {
    let u = open(kind).await;
    let q = &u.queue;
    let a = q.submit(new("a", Some("k1"))).await.unwrap();
    assert!(a.created);
    assert_eq!(a.environment.status, Status::Queued);
    // The same key and document: the same environment, not a new one.
    let again = q.submit(new("a", Some("k1"))).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.environment.id, a.environment.id);
    // The same key with another document is refused.
    let mut other = new("a", Some("k1"));
    other.document = json!({"metadata": {"name": "a"}, "size": "large"});
    assert!(matches!(
        q.submit(other).await,
        Err(QueueError::IdempotencyMismatch { key }) if key == "k1"
    ));
    // The name is taken while the environment is not destroyed.
    match q.submit(new("a", None)).await {
        Err(QueueError::NameTaken { name, id, status }) => {
            assert_eq!(
                (name.as_str(), id, status),
                ("a", a.environment.id, "queued")
            );
        }
        other => panic!("{other:?}"),
    }
    let got = q.get(a.environment.id).await.unwrap();
    assert_eq!(got, a.environment);
    let missing = uuid::Uuid::new_v4();
    assert!(matches!(q.get(missing).await, Err(QueueError::NotFound { id }) if id == missing));
    assert!(matches!(
        q.events(missing, 0).await,
        Err(QueueError::NotFound { .. })
    ));
}

/// The answers to concurrent submits: the environments created, the ids answered for a
/// key already used, and how many were refused because "dup" was taken.
async fn tally(
    calls: Vec<tokio::task::JoinHandle<Result<Submitted, QueueError>>>,
) -> (Vec<Environment>, Vec<uuid::Uuid>, usize) {
    let (mut created, mut same_key, mut taken) = (Vec::new(), Vec::new(), 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(s) if s.created => created.push(s.environment),
            Ok(s) => same_key.push(s.environment.id),
            Err(QueueError::NameTaken { name, .. }) if name == "dup" => taken += 1,
            other => panic!("{other:?}"),
        }
    }
    (created, same_key, taken)
}

/// Many submits at once (PostgreSQL inserts them side by side, its unique indexes
/// refusing the duplicates; the file queue shares its syncs): each distinct one is created once, and duplicates
/// arriving together are refused or answered as the same environment exactly as one
/// after the other would be.
async fn concurrent_submits_keep_names_and_keys_unique(kind: Kind) {
    let u = open(kind).await;
    let mut calls = Vec::new();
    for i in 0..40 {
        // Every fifth: the same name ("dup") and no key; every seventh: key "k" with
        // the same document (name "keyed"); the rest distinct.
        let new = if i % 5 == 0 {
            new("dup", None)
        } else if i % 7 == 0 {
            new("keyed", Some("k"))
        } else {
            new(&format!("e{i}"), None)
        };
        let q = u.queue.clone();
        calls.push(tokio::spawn(async move { q.submit(new).await }));
    }
    let (created, same_key, taken) = tally(calls).await;
    // 8 "dup" (one created), 4 "keyed" (one created, the others the same one), 28 distinct.
    assert_eq!(taken, 7);
    assert_eq!(created.len(), 28 + 1 + 1);
    let keyed = created.iter().find(|e| e.name == "keyed").unwrap().id;
    assert_eq!(same_key, vec![keyed; 3]);
    let page = u
        .queue
        .list(&ListQuery {
            limit: 100,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    let mut listed: Vec<_> = page.items.iter().map(|e| e.id).collect();
    let mut ids: Vec<_> = created.iter().map(|e| e.id).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
}

async fn list_filters_and_pages(kind: Kind) {
    let u = open(kind).await;
    let q = &u.queue;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            q.submit(new(&format!("e{i}"), None))
                .await
                .unwrap()
                .environment
                .id,
        );
    }
    q.request_destroy(ids[1]).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = q
            .list(&ListQuery {
                status: None,
                limit: 2,
                cursor: cursor.clone(),
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|e| e.id));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every environment once, oldest first");
    let destroying = q
        .list(&ListQuery {
            status: Some(Status::DestroyQueued),
            limit: 10,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(destroying.items.len(), 1);
    assert_eq!(destroying.items[0].id, ids[1]);
    assert!(destroying.next.is_none());
    assert!(matches!(
        q.list(&ListQuery {
            status: None,
            limit: 2,
            cursor: Some("not-ours".into()),
        })
        .await,
        Err(QueueError::BadCursor { .. })
    ));
}

async fn take_heartbeat_lease_expiry_and_finish(kind: Kind) {
    let u = open(kind).await;
    let q = &u.queue;
    let env = q.submit(new("t", None)).await.unwrap().environment;
    let job = q.take("w1", LEASE).await.unwrap().expect("a job");
    assert_eq!(
        (job.kind, job.attempt, job.environment_id),
        (JobKind::Provision, 1, env.id)
    );
    assert_eq!(q.get(env.id).await.unwrap().status, Status::Provisioning);
    // One job per environment: nothing else to take while it is held.
    assert!(q.take("w2", LEASE).await.unwrap().is_none());
    assert!(q.heartbeat(&job, LEASE).await.unwrap());
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (0, 1));
    assert!(stats.workers_alive >= 1);
    // w1 stops beating: after its lease w2 takes the job again, attempt 2.
    let t = Instant::now();
    let again = loop {
        if let Some(j) = q.take("w2", LEASE).await.unwrap() {
            break j;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the lease never ran out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (again.id, again.attempt, again.worker.as_str()),
        (job.id, 2, "w2")
    );
    // The old holder is told, and cannot move or end the job.
    assert!(!q.heartbeat(&job, LEASE).await.unwrap());
    assert!(matches!(
        q.set_status(&job, Status::Bootstrapping).await,
        Err(QueueError::Conflict { .. })
    ));
    assert!(matches!(
        q.finish(&job, JobOutcome::Destroyed).await,
        Err(QueueError::Conflict { .. })
    ));
    q.set_status(&again, Status::Bootstrapping).await.unwrap();
    q.set_sensitive_output(&again, "kubeconfig", "apiVersion: v1")
        .await
        .unwrap();
    q.record_event(&again, "progress", "aws_vpc.t: create done")
        .await
        .unwrap();
    q.finish(
        &again,
        JobOutcome::Ready {
            outputs: [("vpc_id".to_string(), json!("vpc-1"))].into(),
            last_plan: None,
        },
    )
    .await
    .unwrap();
    let done = q.get(env.id).await.unwrap();
    assert_eq!(done.status, Status::Ready);
    assert_eq!(done.outputs["vpc_id"], "vpc-1");
    assert!(!serde_json::to_string(&done)
        .unwrap()
        .contains("apiVersion: v1"));
    assert_eq!(
        q.sensitive_output(env.id, "kubeconfig")
            .await
            .unwrap()
            .as_deref(),
        Some("apiVersion: v1")
    );
    assert!(
        q.take("w1", LEASE).await.unwrap().is_none(),
        "a finished job is not taken"
    );
    let events = q.events(env.id, 0).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "status")
        .map(|e| e.message.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "queued",
            "provisioning",
            "provisioning",
            "bootstrapping",
            "ready"
        ]
    );
    assert!(events.iter().any(|e| e.kind == "progress"));
    let later = q.events(env.id, 3).await.unwrap();
    assert_eq!(later.first().map(|e| e.seq), Some(4));
}

async fn destroy_and_refresh_conflicts(kind: Kind) {
    let u = open(kind).await;
    let q = &u.queue;
    let env = q.submit(new("d", None)).await.unwrap().environment;
    // Not ready yet: no refresh. A queued environment's destroy replaces its job.
    assert!(matches!(
        q.request_refresh(env.id).await,
        Err(QueueError::Conflict {
            status: "queued",
            ..
        })
    ));
    assert_eq!(
        q.request_destroy(env.id).await.unwrap().status,
        Status::DestroyQueued
    );
    assert!(matches!(
        q.request_destroy(env.id).await,
        Err(QueueError::Conflict { .. })
    ));
    let job = q.take("w", LEASE).await.unwrap().expect("the destroy job");
    assert_eq!(job.kind, JobKind::Destroy);
    assert!(
        q.take("w", LEASE).await.unwrap().is_none(),
        "the provision job was replaced"
    );
    q.finish(&job, JobOutcome::Destroyed).await.unwrap();
    assert_eq!(q.get(env.id).await.unwrap().status, Status::Destroyed);
    let e = q.request_destroy(env.id).await.unwrap_err().to_string();
    assert!(e.contains("already destroyed"), "{e}");
    assert!(matches!(
        q.request_refresh(env.id).await,
        Err(QueueError::Conflict {
            status: "destroyed",
            ..
        })
    ));
    // The name is free again.
    assert!(q.submit(new("d", None)).await.unwrap().created);

    // A failed environment can be refreshed (the error goes) or destroyed.
    let f = q.submit(new("f", None)).await.unwrap().environment;
    let job = q.take("w", LEASE).await.unwrap().unwrap();
    let job = if job.environment_id == f.id {
        job
    } else {
        // The re-submitted `d` came first: finish it and take `f`.
        q.finish(
            &job,
            JobOutcome::Ready {
                outputs: Default::default(),
                last_plan: None,
            },
        )
        .await
        .unwrap();
        q.take("w", LEASE).await.unwrap().unwrap()
    };
    assert!(matches!(
        q.request_destroy(f.id).await,
        Err(QueueError::Conflict {
            status: "provisioning",
            ..
        })
    ));
    q.finish(
        &job,
        JobOutcome::Failed {
            step: Status::Provisioning,
            error: "aws_vpc.f: refused".into(),
        },
    )
    .await
    .unwrap();
    let failed = q.get(f.id).await.unwrap();
    assert_eq!(
        (failed.status, failed.failed_step, failed.error.as_deref()),
        (
            Status::Failed,
            Some(Status::Provisioning),
            Some("aws_vpc.f: refused")
        )
    );
    let again = q.request_refresh(f.id).await.unwrap();
    assert_eq!((again.status, again.error), (Status::Queued, None));
    let retry = q.take("w", LEASE).await.unwrap().unwrap();
    assert_eq!(
        (retry.environment_id, retry.kind, retry.attempt),
        (f.id, JobKind::Provision, 1)
    );
}

async fn a_reopened_file_queue_keeps_everything_and_retakes_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue");
    let (id, job) = {
        let q = FileQueue::open(&path).await.unwrap();
        // A second server on the same directory is refused.
        let e = FileQueue::open(&path).await.unwrap_err().to_string();
        assert!(e.contains("another `anvil serve`"), "{e}");
        let id = q.submit(new("r", None)).await.unwrap().environment.id;
        let job = q
            .take("w1", Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        (id, job)
    };
    let q = FileQueue::open(&path).await.unwrap();
    assert_eq!(q.get(id).await.unwrap().status, Status::Provisioning);
    // Leases do not outlive the process: the job is taken again at once.
    let again = q.take("w2", LEASE).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempt), (job.id, 2));
    assert!(q.events(id, 0).await.unwrap().len() >= 3);
}

macro_rules! conformance {
    ($kind:ident, $variant:expr, $($body:ident),+ $(,)?) => {
        mod $kind {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    super::$body($variant).await
                }
            )+
        }
    };
}

conformance!(
    file,
    super::Kind::File,
    submit_idempotency_and_names,
    concurrent_submits_keep_names_and_keys_unique,
    list_filters_and_pages,
    take_heartbeat_lease_expiry_and_finish,
    destroy_and_refresh_conflicts,
);

conformance!(
    postgres,
    super::Kind::Postgres,
    submit_idempotency_and_names,
    concurrent_submits_keep_names_and_keys_unique,
    list_filters_and_pages,
    take_heartbeat_lease_expiry_and_finish,
    destroy_and_refresh_conflicts,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_are_created_once_by_servers_starting_together() {
    let url = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    let (a, b, c) = tokio::join!(
        PostgresQueue::open(&url),
        PostgresQueue::open(&url),
        PostgresQueue::open(&url)
    );
    let (a, b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let id = a.submit(new("x", None)).await.unwrap().environment.id;
    assert_eq!(b.get(id).await.unwrap().status, Status::Queued);
}

/// Two queues on one database (two servers), eight takers racing: every job is taken
/// by exactly one of them, and none while another job of its environment is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_servers_sharing_a_database_take_each_job_once() {
    let url = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    let a: Arc<dyn JobQueue> = Arc::new(PostgresQueue::open(&url).await.unwrap());
    let b: Arc<dyn JobQueue> = Arc::new(PostgresQueue::open(&url).await.unwrap());
    let mut ids = Vec::new();
    for i in 0..20 {
        let q = if i % 2 == 0 { &a } else { &b };
        ids.push(
            q.submit(new(&format!("s{i}"), None))
                .await
                .unwrap()
                .environment
                .id,
        );
    }
    let long = Duration::from_secs(600);
    let takers: Vec<_> = (0..8)
        .map(|n| {
            let q = if n % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(job) = q.take(&format!("w{n}"), long).await.unwrap() {
                    got.push(job);
                }
                got
            })
        })
        .collect();
    let mut taken = Vec::new();
    for t in takers {
        taken.extend(t.await.unwrap());
    }
    let mut envs: Vec<uuid::Uuid> = taken.iter().map(|j| j.environment_id).collect();
    envs.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(envs, want, "every environment's job taken exactly once");
    assert!(taken.iter().all(|j| j.attempt == 1));
    let stats = a.stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (0, 20));
    // A destroy cannot be queued while the provision job runs, so no second job of the
    // environment exists to take; a refresh neither.
    assert!(b.request_destroy(ids[0]).await.is_err());
    assert!(b.take("late", long).await.unwrap().is_none());
    // Ended on one server, seen by the other.
    let job = taken.iter().find(|j| j.environment_id == ids[0]).unwrap();
    b.finish(job, JobOutcome::Destroyed).await.unwrap();
    assert_eq!(a.get(ids[0]).await.unwrap().status, Status::Destroyed);
}

/// Two servers recording the same name and the same idempotency key at once (no lock of
/// anvil's: the unique indexes decide): one environment each, every other submit of the
/// name refused and every other one of the key answered with that environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_servers_racing_one_name_and_one_key_record_each_once() {
    let url = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    let a: Arc<dyn JobQueue> = Arc::new(PostgresQueue::open(&url).await.unwrap());
    let b: Arc<dyn JobQueue> = Arc::new(PostgresQueue::open(&url).await.unwrap());
    let calls: Vec<_> = (0..24)
        .map(|i| {
            let q = if i % 2 == 0 { a.clone() } else { b.clone() };
            let new = if i % 3 == 0 {
                new("keyed", Some("k"))
            } else {
                new("dup", None)
            };
            tokio::spawn(async move { q.submit(new).await })
        })
        .collect();
    let (created, same_key, taken) = tally(calls).await;
    let mut names: Vec<_> = created.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["dup", "keyed"]);
    assert_eq!(taken, 16 - 1);
    let keyed = created.iter().find(|e| e.name == "keyed").unwrap().id;
    assert_eq!(same_key, vec![keyed; 8 - 1]);
    // Each created environment has exactly its one job.
    let stats = b.stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (2, 0));
}

/// A job submitted to one server wakes the other's idle worker (its `LISTEN`
/// connection hears the `NOTIFY` sent after the commit), round after round. The first
/// round may also be woken by the listener's own start; the later ones only by the
/// `NOTIFY`. The outer timeout only keeps a broken wake from hanging the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_job_submitted_to_one_server_wakes_the_others_idle_worker() {
    let url = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    let a: Arc<dyn JobQueue> = Arc::new(PostgresQueue::open(&url).await.unwrap());
    let b: Arc<dyn JobQueue> = Arc::new(PostgresQueue::open(&url).await.unwrap());
    for round in 0..3 {
        // Use up any wake left from before (the listener's first, the last round's).
        b.wait_for_work(Duration::ZERO).await;
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_for_work(Duration::from_secs(3600)).await })
        };
        let id = a
            .submit(new(&format!("w{round}"), None))
            .await
            .unwrap()
            .environment
            .id;
        tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .unwrap_or_else(|_| panic!("round {round}: b's idle worker was never woken"))
            .unwrap();
        let job = b
            .take("w", Duration::from_secs(600))
            .await
            .unwrap()
            .expect("the job a queued");
        assert_eq!((job.environment_id, job.kind), (id, JobKind::Provision));
    }
}

#[tokio::test]
async fn file_queue_reopens() {
    a_reopened_file_queue_keeps_everything_and_retakes_running_jobs().await;
}
