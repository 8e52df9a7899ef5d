//! The PostgreSQL job queue: [`JobQueue`] over tables that every `anvil serve` given
//! the same `--database` shares, so API servers and workers scale past one machine.
//!
//! | table | row |
//! |---|---|
//! | `anvil_environments` | one environment: status, document, outputs, idempotency key and digest, the next event number |
//! | `anvil_jobs` | one job: kind, `queued`/`running`/`done`/`cancelled`, attempt, worker, `lease_until`, outcome |
//! | `anvil_job_events` | one progress event: environment, per-environment `seq`, kind, message |
//! | `anvil_environment_secrets` | one sensitive output (the kubeconfig) of an environment |
//! | `anvil_workers` | one worker: alive until (its last take or heartbeat plus its lease) |
//!
//! The tables live in the URL's schema (`?schema=NAME`, default `public`) next to the
//! state backend's, and are created when the queue is opened, under a transaction-level
//! advisory lock, so servers starting at once do not collide.
//!
//! Concurrency: `take` locks the oldest takeable job *and its environment* with
//! `FOR UPDATE … SKIP LOCKED`, so two workers never take the same job and never wait for
//! each other. Every other change locks the environment row first (`FOR UPDATE`), so a
//! DELETE racing a take either replaces the queued job or sees it running. Leases are
//! on the database clock (`now()`): a job whose `lease_until` passed is takeable again
//! (attempt + 1) and its old holder's heartbeat, status changes and finish are refused.
//! A job is not taken while another job of its environment is under a live lease.
//!
//! A submit is one statement with no lock of ours: it inserts the environment, its job
//! and its first event, or nothing when a unique index (live name; user and idempotency
//! key) refuses it; then it reads which one did. PostgreSQL's speculative insertion
//! makes two submits of one name wait for each other, and nothing else, so submits
//! commit side by side (their WAL flushes grouped) on every server. `seq` is the order
//! of insertion, not of commit: a `list` walk may miss an environment recorded while it
//! pages (as any keyset pagination does), never show one twice.
//!
//! Waking: after a commit that queued a job, the queue wakes its own idle workers and
//! sends `NOTIFY anvil_jobs` once per burst from a task of its own (not in the
//! transaction: a transaction that notifies takes PostgreSQL's notify-queue lock at its
//! commit, which would make all submits commit one at a time). Every queue keeps one
//! connection `LISTEN`ing and wakes its idle workers, so a job submitted to one server is
//! taken at once by another's workers. If that connection is lost the workers still poll
//! (their idle timeout) while it reconnects.

use super::rules::{
    decode_cursor, destroy_refusal, document_digest, encode_cursor, refresh_refusal, taken_message,
};
use super::{
    Environment, Job, JobEvent, JobKind, JobOutcome, JobQueue, ListQuery, NewEnvironment, Page,
    PlanSummary, QueueError, QueueStats, Status, Submitted,
};
use crate::ops::{CancellationToken, PgTarget};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use deadpool_postgres::{PoolError, Transaction};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

/// Key of the advisory lock that serializes table creation across processes (the
/// state backend's is `…6c00`).
const DDL_LOCK_KEY: i64 = 0x616e_7669_6c01;

/// How often a submit tries again when the environment that refused its name was
/// destroyed before it could be named in the refusal.
const SUBMIT_ATTEMPTS: usize = 3;

/// Connections a queue keeps at most: the API's requests and every worker's take,
/// heartbeat and events share them.
const POOL_SIZE: usize = 16;

/// The notification channel a queued job is announced on.
const CHANNEL: &str = "anvil_jobs";

/// How long the listener waits before reconnecting after its connection was lost.
const RELISTEN: Duration = Duration::from_secs(1);

/// The environment columns every read selects, in [`env_from_row`]'s order.
const ENV_COLUMNS: &str = "id, name, user_id, status, failed_step, error, document, outputs, \
                           last_plan, created_at, updated_at, seq";

/// The PostgreSQL job queue; see the module docs.
pub struct PostgresQueue {
    target: PgTarget,
    /// Schema-qualified table names.
    t: Tables,
    /// Wakes this process's idle workers: a job was queued here or announced by NOTIFY.
    notify: std::sync::Arc<Notify>,
    /// Wakes [`Self::announcer`]: a job was queued here.
    announcing: std::sync::Arc<Notify>,
    /// Stops the listener when the queue is dropped.
    stop: CancellationToken,
}

impl std::fmt::Debug for PostgresQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the config: it holds the password.
        f.debug_struct("PostgresQueue")
            .field("database", &self.target.redacted)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresQueue {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Tables {
    envs: String,
    jobs: String,
    events: String,
    secrets: String,
    workers: String,
    /// The one statement that records a new environment, its provision job and its
    /// first event, or nothing when a unique index (a live name, an idempotency key)
    /// refuses it; built once, prepared once per connection.
    submit: String,
}

impl Tables {
    fn new(schema: &str) -> Tables {
        let envs = format!("{schema}.anvil_environments");
        let jobs = format!("{schema}.anvil_jobs");
        let events = format!("{schema}.anvil_job_events");
        let submit = format!(
            "WITH e AS (\
                INSERT INTO {envs} (id, name, user_id, status, document, idempotency_key, digest, event_seq) \
                VALUES ($1, $2, $3, 'queued', $4, $5, $6, 1) \
                ON CONFLICT DO NOTHING RETURNING {ENV_COLUMNS}), \
             j AS (INSERT INTO {jobs} (id, environment_id, kind, state) \
                SELECT $7, id, 'provision', 'queued' FROM e), \
             v AS (INSERT INTO {events} (environment_id, seq, kind, message) \
                SELECT id, 1, 'status', 'queued' FROM e) \
             SELECT {ENV_COLUMNS} FROM e"
        );
        Tables {
            envs,
            jobs,
            events,
            secrets: format!("{schema}.anvil_environment_secrets"),
            workers: format!("{schema}.anvil_workers"),
            submit,
        }
    }
}

fn kind_str(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Provision => "provision",
        JobKind::Destroy => "destroy",
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl PostgresQueue {
    /// Connects to `url`, creates the tables unless they exist, and starts listening
    /// for queued jobs.
    ///
    /// # Errors
    /// [`QueueError::Storage`] naming the URL (password masked) for a URL that does not
    /// parse, a server that cannot be reached or refuses us, or tables that cannot be
    /// created.
    pub async fn open(url: &str) -> Result<PostgresQueue, QueueError> {
        let target = PgTarget::parse(url, POOL_SIZE).map_err(|e| QueueError::Storage {
            location: crate::ops::redact_url(url),
            message: format!("{e}; fix --database (or ANVIL_SERVE_DATABASE)"),
        })?;
        let t = Tables::new(&target.schema);
        let queue = PostgresQueue {
            target,
            t,
            notify: std::sync::Arc::new(Notify::new()),
            announcing: std::sync::Arc::new(Notify::new()),
            stop: CancellationToken::new(),
        };
        queue.create_tables().await?;
        queue.listen();
        queue.announcer();
        Ok(queue)
    }

    fn storage(&self, message: String) -> QueueError {
        QueueError::Storage {
            location: self.target.redacted.clone(),
            message,
        }
    }

    fn pg(&self, action: &str, e: &tokio_postgres::Error) -> QueueError {
        let (detail, hint) = self.target.explain(e);
        self.storage(format!("cannot {action}: {detail}; {hint}"))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, QueueError> {
        self.target.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => self.pg("connect", &e),
            other => self.storage(format!(
                "cannot connect: {other}; check that the PostgreSQL server runs and accepts connections"
            )),
        })
    }

    async fn create_tables(&self) -> Result<(), QueueError> {
        let mut client = self.client().await?;
        let t = &self.t;
        let exists: bool = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL \
                 AND to_regclass($3) IS NOT NULL AND to_regclass($4) IS NOT NULL \
                 AND to_regclass($5) IS NOT NULL",
                &[&t.envs, &t.jobs, &t.events, &t.secrets, &t.workers],
            )
            .await
            .map_err(|e| self.pg("read the job queue's tables", &e))?
            .get(0);
        if exists {
            return Ok(());
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.pg("create the job queue's tables", &e))?;
        let s = &self.target.schema;
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {envs} (
                seq bigserial PRIMARY KEY,
                id uuid NOT NULL UNIQUE,
                name text NOT NULL,
                user_id text NOT NULL,
                status text NOT NULL,
                failed_step text,
                error text,
                document text NOT NULL,
                outputs text NOT NULL DEFAULT '{{}}',
                last_plan text,
                idempotency_key text,
                digest text NOT NULL,
                event_seq bigint NOT NULL DEFAULT 0,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now());
             CREATE UNIQUE INDEX IF NOT EXISTS anvil_environments_live_name
                ON {envs} (name) WHERE status <> 'destroyed';
             CREATE UNIQUE INDEX IF NOT EXISTS anvil_environments_idempotency
                ON {envs} (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
             CREATE TABLE IF NOT EXISTS {jobs} (
                seq bigserial PRIMARY KEY,
                id uuid NOT NULL UNIQUE,
                environment_id uuid NOT NULL REFERENCES {envs} (id),
                kind text NOT NULL,
                state text NOT NULL,
                attempt integer NOT NULL DEFAULT 0,
                worker text,
                lease_until timestamptz,
                outcome text,
                created_at timestamptz NOT NULL DEFAULT now(),
                started_at timestamptz,
                finished_at timestamptz);
             CREATE INDEX IF NOT EXISTS anvil_jobs_open ON {jobs} (seq)
                WHERE state IN ('queued', 'running');
             CREATE INDEX IF NOT EXISTS anvil_jobs_environment ON {jobs} (environment_id);
             CREATE TABLE IF NOT EXISTS {events} (
                environment_id uuid NOT NULL REFERENCES {envs} (id),
                seq bigint NOT NULL,
                at timestamptz NOT NULL DEFAULT clock_timestamp(),
                kind text NOT NULL,
                message text NOT NULL,
                PRIMARY KEY (environment_id, seq));
             CREATE TABLE IF NOT EXISTS {secrets} (
                environment_id uuid NOT NULL REFERENCES {envs} (id),
                name text NOT NULL,
                value text NOT NULL,
                PRIMARY KEY (environment_id, name));
             CREATE TABLE IF NOT EXISTS {workers} (
                worker text PRIMARY KEY,
                alive_until timestamptz NOT NULL);",
            envs = t.envs,
            jobs = t.jobs,
            events = t.events,
            secrets = t.secrets,
            workers = t.workers,
        );
        let run = async {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK_KEY])
                .await?;
            tx.batch_execute(&ddl).await
        };
        run.await
            .map_err(|e| self.pg("create the job queue's tables", &e))?;
        tx.commit()
            .await
            .map_err(|e| self.pg("create the job queue's tables", &e))
    }

    /// Keeps one connection `LISTEN`ing on [`CHANNEL`] and wakes the idle workers on
    /// each notification; reconnects after a loss until the queue is dropped.
    fn listen(&self) {
        let config = self.target.config.clone();
        let notify = self.notify.clone();
        let stop = self.stop.clone();
        let location = self.target.redacted.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                match config.connect(NoTls).await {
                    Ok((client, mut conn)) => {
                        let messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                        tokio::pin!(messages);
                        let sql = format!("LISTEN {CHANNEL}");
                        let listening = client.batch_execute(&sql);
                        tokio::pin!(listening);
                        let mut listened = false;
                        loop {
                            tokio::select! {
                                () = stop.cancelled() => return,
                                r = &mut listening, if !listened => {
                                    listened = true;
                                    if let Err(e) = r {
                                        tracing::warn!(database = %location, error = %e, "cannot LISTEN for queued jobs; workers poll");
                                        break;
                                    }
                                    // Jobs queued while we were not listening.
                                    wake(&notify);
                                }
                                m = futures::StreamExt::next(&mut messages) => match m {
                                    Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => wake(&notify),
                                    Some(Ok(_)) => {}
                                    Some(Err(e)) => {
                                        tracing::warn!(database = %location, error = %e, "the job queue's LISTEN connection failed; reconnecting");
                                        break;
                                    }
                                    None => break,
                                },
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(database = %location, error = %e, "cannot connect to LISTEN for queued jobs; workers poll meanwhile");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RELISTEN) => {}
                }
            }
        });
    }

    /// Appends an event to the environment's, numbered by its `event_seq`; `false` when
    /// there is no such environment.
    async fn push_event(
        &self,
        c: &impl GenericClient,
        id: Uuid,
        kind: &str,
        message: &str,
    ) -> Result<bool, QueueError> {
        let n = c
            .execute(
                &format!(
                    "WITH u AS (UPDATE {envs} SET event_seq = event_seq + 1 WHERE id = $1 \
                     RETURNING event_seq) \
                     INSERT INTO {events} (environment_id, seq, kind, message) \
                     SELECT $1, u.event_seq, $2, $3 FROM u",
                    envs = self.t.envs,
                    events = self.t.events
                ),
                &[&id, &kind, &message],
            )
            .await
            .map_err(|e| self.pg("record an event", &e))?;
        Ok(n == 1)
    }

    /// After a commit that queued a job: wakes this process's idle workers now and every
    /// server's through [`Self::announcer`].
    fn announce(&self) {
        wake(&self.notify);
        self.announcing.notify_one();
    }

    /// Sends `NOTIFY` on [`CHANNEL`] after jobs were queued, one for each burst: a
    /// `NOTIFY` inside the queuing transaction would take PostgreSQL's notify-queue lock
    /// at its commit and make every submit commit one after another.
    fn announcer(&self) {
        let pool = self.target.pool.clone();
        let pending = self.announcing.clone();
        let stop = self.stop.clone();
        let location = self.target.redacted.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = pending.notified() => {}
                }
                let sent = match pool.get().await {
                    Ok(c) => c
                        .execute("SELECT pg_notify($1, '')", &[&CHANNEL])
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(error) = sent {
                    tracing::warn!(database = %location, %error, "cannot announce a queued job to other servers; their workers poll");
                }
            }
        });
    }

    /// Locks the environment's row for the rest of `tx` and returns its status.
    async fn lock_env(&self, tx: &Transaction<'_>, id: Uuid) -> Result<Status, QueueError> {
        let row = tx
            .query_opt(
                &format!(
                    "SELECT status FROM {} WHERE id = $1 FOR UPDATE",
                    self.t.envs
                ),
                &[&id],
            )
            .await
            .map_err(|e| self.pg("read an environment", &e))?
            .ok_or(QueueError::NotFound { id })?;
        self.status(row.get(0))
    }

    fn status(&self, s: &str) -> Result<Status, QueueError> {
        Status::parse(s).ok_or_else(|| {
            self.storage(format!(
                "the job queue's tables hold status {s:?}, which this anvil does not know; use the anvil that wrote it"
            ))
        })
    }

    /// Under the environment's row lock: the job is still `job.worker`'s.
    async fn owned(&self, tx: &Transaction<'_>, job: &Job) -> Result<(), QueueError> {
        let status = self.lock_env(tx, job.environment_id).await?;
        let held = tx
            .query_opt(
                &format!(
                    "SELECT 1 FROM {} WHERE id = $1 AND state = 'running' AND attempt = $2 \
                     AND worker = $3 FOR UPDATE",
                    self.t.jobs
                ),
                &[&job.id, &attempt_i32(job.attempt), &job.worker],
            )
            .await
            .map_err(|e| self.pg("read a job", &e))?
            .is_some();
        if held {
            return Ok(());
        }
        Err(QueueError::Conflict {
            id: job.environment_id,
            status: status.as_str(),
            what: format!(
                "job {} (attempt {}) is no longer held by worker {}: its lease ran out and it was taken again",
                job.id, job.attempt, job.worker
            ),
        })
    }

    async fn new_job(
        &self,
        tx: &Transaction<'_>,
        environment_id: Uuid,
        kind: JobKind,
    ) -> Result<(), QueueError> {
        tx.execute(
            &format!(
                "INSERT INTO {} (id, environment_id, kind, state) VALUES ($1, $2, $3, 'queued')",
                self.t.jobs
            ),
            &[&Uuid::new_v4(), &environment_id, &kind_str(kind)],
        )
        .await
        .map_err(|e| self.pg("queue a job", &e))?;
        Ok(())
    }

    fn env_from_row(&self, row: &Row) -> Result<Environment, QueueError> {
        let decode = |what: &str, e: serde_json::Error| {
            self.storage(format!(
                "the {what} of an environment in the job queue's tables does not parse ({e}); the table was changed by something else than anvil"
            ))
        };
        let failed_step: Option<String> = row.get(4);
        let document: String = row.get(6);
        let outputs: String = row.get(7);
        let last_plan: Option<String> = row.get(8);
        Ok(Environment {
            id: row.get(0),
            name: row.get(1),
            user_id: row.get(2),
            status: self.status(row.get(3))?,
            failed_step: failed_step.map(|s| self.status(&s)).transpose()?,
            error: row.get(5),
            document: serde_json::from_str(&document).map_err(|e| decode("document", e))?,
            outputs: serde_json::from_str(&outputs).map_err(|e| decode("outputs", e))?,
            last_plan: last_plan
                .map(|p| serde_json::from_str::<PlanSummary>(&p))
                .transpose()
                .map_err(|e| decode("last plan", e))?,
            created_at: row.get::<_, DateTime<Utc>>(9),
            updated_at: row.get::<_, DateTime<Utc>>(10),
        })
    }

    async fn read_env(&self, c: &impl GenericClient, id: Uuid) -> Result<Environment, QueueError> {
        let row = c
            .query_opt(
                &format!("SELECT {ENV_COLUMNS} FROM {} WHERE id = $1", self.t.envs),
                &[&id],
            )
            .await
            .map_err(|e| self.pg("read an environment", &e))?
            .ok_or(QueueError::NotFound { id })?;
        self.env_from_row(&row)
    }

    async fn commit(&self, tx: Transaction<'_>, action: &str) -> Result<(), QueueError> {
        tx.commit().await.map_err(|e| self.pg(action, &e))
    }

    /// Ends `tx` without its changes, then returns `refusal`. Dropping it instead sends
    /// the rollback without waiting for it: another connection's `take` right after
    /// could still find the environment's row locked and skip it.
    async fn refuse<T>(&self, tx: Transaction<'_>, refusal: QueueError) -> Result<T, QueueError> {
        // The refusal is the answer; a rollback that fails ends with its connection.
        let _ = tx.rollback().await;
        Err(refusal)
    }

    async fn begin<'a>(
        &self,
        client: &'a mut deadpool_postgres::Object,
        action: &str,
    ) -> Result<Transaction<'a>, QueueError> {
        client.transaction().await.map_err(|e| self.pg(action, &e))
    }

    /// Renews `worker`'s liveness (for `/health`).
    async fn alive(
        &self,
        c: &impl GenericClient,
        worker: &str,
        lease: Duration,
    ) -> Result<(), QueueError> {
        c.execute(
            &format!(
                "INSERT INTO {} (worker, alive_until) VALUES ($1, now() + make_interval(secs => $2)) \
                 ON CONFLICT (worker) DO UPDATE SET alive_until = EXCLUDED.alive_until",
                self.t.workers
            ),
            &[&worker, &seconds(lease)],
        )
        .await
        .map_err(|e| self.pg("record a worker", &e))?;
        Ok(())
    }
}

fn attempt_i32(a: u32) -> i32 {
    i32::try_from(a).unwrap_or(i32::MAX)
}

/// Wakes the idle workers of this process: a job was queued.
fn wake(notify: &Notify) {
    notify.notify_waiters();
    // A worker between `take` and `wait_for_work` is not waiting yet: leave it a permit
    // so it does not sleep through this job.
    notify.notify_one();
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Outputs and plan summaries are plain JSON values: encoding them cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[async_trait]
impl JobQueue for PostgresQueue {
    async fn submit(&self, new: NewEnvironment) -> Result<Submitted, QueueError> {
        const ACTION: &str = "record an environment";
        let digest = document_digest(&new.user_id, &new.document);
        let document = new.document.to_string();
        let client = self.client().await?;
        let record = client
            .prepare_cached(&self.t.submit)
            .await
            .map_err(|e| self.pg(ACTION, &e))?;
        for _ in 0..SUBMIT_ATTEMPTS {
            let inserted = client
                .query_opt(
                    &record,
                    &[
                        &Uuid::new_v4(),
                        &new.name,
                        &new.user_id,
                        &document,
                        &new.idempotency_key,
                        &digest,
                        &Uuid::new_v4(),
                    ],
                )
                .await
                .map_err(|e| self.pg(ACTION, &e))?;
            if let Some(row) = inserted {
                // Committed: announce it whatever the answer.
                self.announce();
                let environment = self.env_from_row(&row)?;
                return Ok(Submitted {
                    environment,
                    created: true,
                });
            }
            // A unique index refused it: tell which, the key's first.
            if let Some(key) = &new.idempotency_key {
                let earlier = client
                    .query_opt(
                        &format!(
                            "SELECT {ENV_COLUMNS}, digest FROM {} \
                             WHERE idempotency_key = $1 AND user_id = $2",
                            self.t.envs
                        ),
                        &[key, &new.user_id],
                    )
                    .await
                    .map_err(|e| self.pg("read an environment", &e))?;
                if let Some(row) = earlier {
                    let d: String = row.get(12);
                    if d != digest {
                        return Err(QueueError::IdempotencyMismatch { key: key.clone() });
                    }
                    return Ok(Submitted {
                        environment: self.env_from_row(&row)?,
                        created: false,
                    });
                }
            }
            let taken = client
                .query_opt(
                    &format!(
                        "SELECT id, status FROM {} WHERE name = $1 AND status <> 'destroyed' LIMIT 1",
                        self.t.envs
                    ),
                    &[&new.name],
                )
                .await
                .map_err(|e| self.pg("read an environment", &e))?;
            if let Some(row) = taken {
                return Err(QueueError::NameTaken {
                    name: new.name,
                    id: row.get(0),
                    status: self.status(row.get(1))?.as_str(),
                });
            }
            // The environment holding the name was destroyed since: try again.
        }
        Err(self.storage(format!(
            "cannot {ACTION} {:?}: its name was taken and freed again {SUBMIT_ATTEMPTS} times while recording it; retry the request",
            new.name
        )))
    }

    async fn get(&self, id: Uuid) -> Result<Environment, QueueError> {
        let client = self.client().await?;
        self.read_env(&client, id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, QueueError> {
        let after = match &query.cursor {
            Some(c) => decode_cursor(c)?,
            None => 0,
        };
        let limit = query.limit.max(1);
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let status = query.status.map(Status::as_str);
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ENV_COLUMNS} FROM {} WHERE seq > $1 \
                     AND ($2::text IS NULL OR status = $2) ORDER BY seq LIMIT $3",
                    self.t.envs
                ),
                &[&after, &status, &fetch],
            )
            .await
            .map_err(|e| self.pg("list environments", &e))?;
        let more = rows.len() > limit;
        let page = &rows[..rows.len().min(limit)];
        let next = match (more, page.last()) {
            (true, Some(last)) => Some(encode_cursor(last.get::<_, i64>(11))),
            _ => None,
        };
        Ok(Page {
            items: page
                .iter()
                .map(|r| self.env_from_row(r))
                .collect::<Result<_, _>>()?,
            next,
        })
    }

    async fn request_destroy(&self, id: Uuid) -> Result<Environment, QueueError> {
        let mut client = self.client().await?;
        let tx = self.begin(&mut client, "queue a destroy").await?;
        let status = self.lock_env(&tx, id).await?;
        if let Some(e) = destroy_refusal(id, status) {
            return self.refuse(tx, e).await;
        }
        // A provision job no worker took yet is simply replaced.
        tx.execute(
            &format!(
                "UPDATE {} SET state = 'cancelled', finished_at = now() \
                 WHERE environment_id = $1 AND state = 'queued'",
                self.t.jobs
            ),
            &[&id],
        )
        .await
        .map_err(|e| self.pg("queue a destroy", &e))?;
        self.new_job(&tx, id, JobKind::Destroy).await?;
        tx.execute(
            &format!(
                "UPDATE {} SET status = 'destroy_queued', updated_at = now() WHERE id = $1",
                self.t.envs
            ),
            &[&id],
        )
        .await
        .map_err(|e| self.pg("queue a destroy", &e))?;
        self.push_event(&tx, id, "status", Status::DestroyQueued.as_str())
            .await?;
        let env = self.read_env(&tx, id).await?;
        self.commit(tx, "queue a destroy").await?;
        self.announce();
        Ok(env)
    }

    async fn request_refresh(&self, id: Uuid) -> Result<Environment, QueueError> {
        let mut client = self.client().await?;
        let tx = self.begin(&mut client, "queue a refresh").await?;
        let status = self.lock_env(&tx, id).await?;
        if let Some(e) = refresh_refusal(id, status) {
            return self.refuse(tx, e).await;
        }
        self.new_job(&tx, id, JobKind::Provision).await?;
        tx.execute(
            &format!(
                "UPDATE {} SET status = 'queued', failed_step = NULL, error = NULL, \
                 updated_at = now() WHERE id = $1",
                self.t.envs
            ),
            &[&id],
        )
        .await
        .map_err(|e| self.pg("queue a refresh", &e))?;
        self.push_event(&tx, id, "status", "queued (refresh)")
            .await?;
        let env = self.read_env(&tx, id).await?;
        self.commit(tx, "queue a refresh").await?;
        self.announce();
        Ok(env)
    }

    async fn events(&self, id: Uuid, after: u64) -> Result<Vec<JobEvent>, QueueError> {
        let client = self.client().await?;
        let exists = client
            .query_opt(
                &format!("SELECT 1 FROM {} WHERE id = $1", self.t.envs),
                &[&id],
            )
            .await
            .map_err(|e| self.pg("read an environment", &e))?;
        if exists.is_none() {
            return Err(QueueError::NotFound { id });
        }
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT seq, at, kind, message FROM {} \
                     WHERE environment_id = $1 AND seq > $2 ORDER BY seq",
                    self.t.events
                ),
                &[&id, &after],
            )
            .await
            .map_err(|e| self.pg("read events", &e))?;
        Ok(rows
            .iter()
            .map(|r| JobEvent {
                seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                at: r.get(1),
                kind: r.get(2),
                message: r.get(3),
            })
            .collect())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT \
                     (SELECT count(*) FROM {jobs} WHERE state = 'queued' \
                        OR (state = 'running' AND lease_until <= now())), \
                     (SELECT count(*) FROM {jobs} WHERE state = 'running' AND lease_until > now()), \
                     (SELECT count(*) FROM {workers} WHERE alive_until > now())",
                    jobs = self.t.jobs,
                    workers = self.t.workers
                ),
                &[],
            )
            .await
            .map_err(|e| self.pg("count jobs", &e))?;
        let n = |i: usize| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(QueueStats {
            queued: n(0),
            running: n(1),
            workers_alive: n(2),
        })
    }

    async fn take(&self, worker: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        let mut client = self.client().await?;
        let tx = self.begin(&mut client, "take a job").await?;
        self.alive(&tx, worker, lease).await?;
        // The job and its environment are locked together, skipping any another
        // transaction holds: no two workers take one job, none waits for another.
        let picked = tx
            .query_opt(
                &format!(
                    "SELECT j.id, j.environment_id, j.kind FROM {jobs} j \
                     JOIN {envs} e ON e.id = j.environment_id \
                     WHERE (j.state = 'queued' OR (j.state = 'running' AND j.lease_until <= now())) \
                     AND NOT EXISTS (SELECT 1 FROM {jobs} o WHERE o.environment_id = j.environment_id \
                        AND o.id <> j.id AND o.state = 'running' AND o.lease_until > now()) \
                     ORDER BY j.seq LIMIT 1 FOR UPDATE OF j, e SKIP LOCKED",
                    jobs = self.t.jobs,
                    envs = self.t.envs
                ),
                &[],
            )
            .await
            .map_err(|e| self.pg("take a job", &e))?;
        let Some(row) = picked else {
            self.commit(tx, "take a job").await?;
            return Ok(None);
        };
        let id: Uuid = row.get(0);
        let environment_id: Uuid = row.get(1);
        let kind = match row.get::<_, &str>(2) {
            "destroy" => JobKind::Destroy,
            _ => JobKind::Provision,
        };
        let attempt: i32 = tx
            .query_one(
                &format!(
                    "UPDATE {} SET state = 'running', attempt = attempt + 1, worker = $2, \
                     lease_until = now() + make_interval(secs => $3), started_at = now() \
                     WHERE id = $1 RETURNING attempt",
                    self.t.jobs
                ),
                &[&id, &worker, &seconds(lease)],
            )
            .await
            .map_err(|e| self.pg("take a job", &e))?
            .get(0);
        let attempt = u32::try_from(attempt).unwrap_or(0);
        let status = match kind {
            JobKind::Provision => Status::Provisioning,
            JobKind::Destroy => Status::Destroying,
        };
        tx.execute(
            &format!(
                "UPDATE {} SET status = $2, updated_at = now() WHERE id = $1",
                self.t.envs
            ),
            &[&environment_id, &status.as_str()],
        )
        .await
        .map_err(|e| self.pg("take a job", &e))?;
        self.push_event(
            &tx,
            environment_id,
            "status",
            &taken_message(status, worker, attempt),
        )
        .await?;
        self.commit(tx, "take a job").await?;
        Ok(Some(Job {
            id,
            environment_id,
            kind,
            attempt,
            worker: worker.to_string(),
        }))
    }

    async fn heartbeat(&self, job: &Job, lease: Duration) -> Result<bool, QueueError> {
        let client = self.client().await?;
        self.alive(&client, &job.worker, lease).await?;
        let n = client
            .execute(
                &format!(
                    "UPDATE {} SET lease_until = now() + make_interval(secs => $4) \
                     WHERE id = $1 AND state = 'running' AND attempt = $2 AND worker = $3",
                    self.t.jobs
                ),
                &[
                    &job.id,
                    &attempt_i32(job.attempt),
                    &job.worker,
                    &seconds(lease),
                ],
            )
            .await
            .map_err(|e| self.pg("renew a job's lease", &e))?;
        Ok(n == 1)
    }

    async fn set_status(&self, job: &Job, status: Status) -> Result<(), QueueError> {
        let mut client = self.client().await?;
        let tx = self.begin(&mut client, "move an environment").await?;
        if let Err(e) = self.owned(&tx, job).await {
            return self.refuse(tx, e).await;
        }
        tx.execute(
            &format!(
                "UPDATE {} SET status = $2, updated_at = now() WHERE id = $1",
                self.t.envs
            ),
            &[&job.environment_id, &status.as_str()],
        )
        .await
        .map_err(|e| self.pg("move an environment", &e))?;
        self.push_event(&tx, job.environment_id, "status", status.as_str())
            .await?;
        self.commit(tx, "move an environment").await
    }

    async fn record_event(&self, job: &Job, kind: &str, message: &str) -> Result<(), QueueError> {
        let client = self.client().await?;
        if self
            .push_event(&client, job.environment_id, kind, message)
            .await?
        {
            Ok(())
        } else {
            Err(QueueError::NotFound {
                id: job.environment_id,
            })
        }
    }

    async fn finish(&self, job: &Job, outcome: JobOutcome) -> Result<(), QueueError> {
        let mut client = self.client().await?;
        let tx = self.begin(&mut client, "end a job").await?;
        if let Err(e) = self.owned(&tx, job).await {
            return self.refuse(tx, e).await;
        }
        let (status, label) = match &outcome {
            JobOutcome::Ready { .. } => (Status::Ready, "ready"),
            JobOutcome::Destroyed => (Status::Destroyed, "destroyed"),
            JobOutcome::Failed { .. } => (Status::Failed, "failed"),
        };
        tx.execute(
            &format!(
                "UPDATE {} SET state = 'done', outcome = $2, finished_at = now(), \
                 lease_until = NULL WHERE id = $1",
                self.t.jobs
            ),
            &[&job.id, &label],
        )
        .await
        .map_err(|e| self.pg("end a job", &e))?;
        let envs = &self.t.envs;
        let id = &job.environment_id;
        let r = match &outcome {
            JobOutcome::Ready { outputs, last_plan } => {
                tx.execute(
                    &format!(
                        "UPDATE {envs} SET status = 'ready', outputs = $2, last_plan = $3, \
                         failed_step = NULL, error = NULL, updated_at = now() WHERE id = $1"
                    ),
                    &[id, &to_json(outputs), &last_plan.as_ref().map(to_json)],
                )
                .await
            }
            JobOutcome::Destroyed => {
                let r = tx
                    .execute(
                        &format!("DELETE FROM {} WHERE environment_id = $1", self.t.secrets),
                        &[id],
                    )
                    .await;
                match r {
                    Err(e) => Err(e),
                    Ok(_) => {
                        tx.execute(
                            &format!(
                                "UPDATE {envs} SET status = 'destroyed', outputs = '{{}}', \
                                 failed_step = NULL, error = NULL, updated_at = now() WHERE id = $1"
                            ),
                            &[id],
                        )
                        .await
                    }
                }
            }
            JobOutcome::Failed { step, error } => {
                tx.execute(
                    &format!(
                        "UPDATE {envs} SET status = 'failed', failed_step = $2, error = $3, \
                         updated_at = now() WHERE id = $1"
                    ),
                    &[id, &step.as_str(), error],
                )
                .await
            }
        };
        r.map_err(|e| self.pg("end a job", &e))?;
        if let JobOutcome::Failed { step, error } = &outcome {
            self.push_event(&tx, *id, "error", error).await?;
            self.push_event(
                &tx,
                *id,
                "status",
                &format!("failed (while {})", step.as_str()),
            )
            .await?;
        } else {
            self.push_event(&tx, *id, "status", status.as_str()).await?;
        }
        self.commit(tx, "end a job").await
    }

    async fn set_sensitive_output(
        &self,
        job: &Job,
        name: &str,
        value: &str,
    ) -> Result<(), QueueError> {
        let mut client = self.client().await?;
        let tx = self.begin(&mut client, "store a sensitive output").await?;
        if let Err(e) = self.owned(&tx, job).await {
            return self.refuse(tx, e).await;
        }
        tx.execute(
            &format!(
                "INSERT INTO {} (environment_id, name, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (environment_id, name) DO UPDATE SET value = EXCLUDED.value",
                self.t.secrets
            ),
            &[&job.environment_id, &name, &value],
        )
        .await
        .map_err(|e| self.pg("store a sensitive output", &e))?;
        self.commit(tx, "store a sensitive output").await
    }

    async fn sensitive_output(&self, id: Uuid, name: &str) -> Result<Option<String>, QueueError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT s.value FROM {envs} e LEFT JOIN {secrets} s \
                     ON s.environment_id = e.id AND s.name = $2 WHERE e.id = $1",
                    envs = self.t.envs,
                    secrets = self.t.secrets
                ),
                &[&id, &name],
            )
            .await
            .map_err(|e| self.pg("read a sensitive output", &e))?
            .ok_or(QueueError::NotFound { id })?;
        Ok(row.get(0))
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_url_or_unreachable_server_names_the_url_not_the_password() {
        let e = PostgresQueue::open("postgres://u:hunter2@h/db?schema=1a")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("u:***@h") && e.contains("schema"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = PostgresQueue::open(&format!("postgres://anvil:hunter2@127.0.0.1:{port}/db"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("postgres://anvil:***@127.0.0.1:{port}/db")),
            "{e}"
        );
        assert!(e.contains("check the host and port"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
