//! The environments job queue: what the API records and the workers take. One trait,
//! [`JobQueue`], with two implementations: `postgres` (several `anvil serve` processes
//! share one database; jobs taken with `FOR UPDATE SKIP LOCKED` under a lease renewed by
//! a heartbeat, so a dead worker's job is taken again after its lease) and `file`
//! (embedded mode: one process, files under a data directory, no database).
//!
//! An environment has at most one job at a time. Its status moves
//! queued → provisioning → bootstrapping → ready, and destroy_queued → destroying →
//! destroyed; `failed` from any step, with the step and the error recorded. A refresh
//! (`POST /{id}/refresh`) queues a provision job again for a ready or failed environment.

pub mod file;
pub mod postgres;
pub(crate) mod rules;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// Where an environment is in its lifecycle (the seeds' names, exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Provisioning,
    Bootstrapping,
    Ready,
    DestroyQueued,
    Destroying,
    Destroyed,
    Failed,
}

impl Status {
    /// The wire name (`destroy_queued`), also the database's.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Provisioning => "provisioning",
            Status::Bootstrapping => "bootstrapping",
            Status::Ready => "ready",
            Status::DestroyQueued => "destroy_queued",
            Status::Destroying => "destroying",
            Status::Destroyed => "destroyed",
            Status::Failed => "failed",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [Status; 8] = [
        Status::Queued,
        Status::Provisioning,
        Status::Bootstrapping,
        Status::Ready,
        Status::DestroyQueued,
        Status::Destroying,
        Status::Destroyed,
        Status::Failed,
    ];

    /// Parses a wire name; `None` for anything else.
    #[must_use]
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Plan and apply the environment, then bootstrap it (also a refresh).
    Provision,
    /// Destroy everything the environment's workspace holds.
    Destroy,
}

/// Counts of the last plan a job applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanSummary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

/// One environment as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub id: Uuid,
    /// The document's `metadata.name`, also its state workspace; unique among the
    /// environments that are not `destroyed`.
    pub name: String,
    /// The token name that created it.
    pub user_id: String,
    pub status: Status,
    /// The status it was in when it failed (`failed` only).
    pub failed_step: Option<Status>,
    /// Why it failed (`failed` only); never holds a secret.
    pub error: Option<String>,
    /// The submitted Environment document, as JSON.
    pub document: serde_json::Value,
    /// Outputs after the last successful apply; sensitive ones are not here.
    pub outputs: BTreeMap<String, serde_json::Value>,
    pub last_plan: Option<PlanSummary>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A POST, validated by the API before it reaches the queue.
#[derive(Debug, Clone)]
pub struct NewEnvironment {
    pub name: String,
    pub user_id: String,
    pub document: serde_json::Value,
    /// The `Idempotency-Key` header: the same key with the same document returns the
    /// environment it created; with another document it is a conflict.
    pub idempotency_key: Option<String>,
}

/// What [`JobQueue::submit`] did.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub environment: Environment,
    /// `false` when an earlier request with the same idempotency key created it.
    pub created: bool,
}

/// A page of [`JobQueue::list`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<Status>,
    /// At most this many (the API clamps it).
    pub limit: usize,
    /// Opaque: the `next` of the previous page.
    pub cursor: Option<String>,
}

/// A page of environments, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Environment>,
    /// Give this as `cursor` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// A job a worker holds under a lease.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub environment_id: Uuid,
    pub kind: JobKind,
    /// How many times a worker has taken it (1 the first time; more after a lease ran out).
    pub attempt: u32,
    /// The worker that holds it.
    pub worker: String,
}

/// One progress event of an environment's jobs (`GET /{id}/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobEvent {
    /// Increasing per environment, from 1.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// `status` (the status changed), `progress` (an apply event) or `error`.
    pub kind: String,
    pub message: String,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    Ready {
        outputs: BTreeMap<String, serde_json::Value>,
        last_plan: Option<PlanSummary>,
    },
    Destroyed,
    Failed {
        step: Status,
        error: String,
    },
}

/// The queue's gauges for `/health` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// Jobs under a live lease.
    pub running: usize,
    /// Workers that heartbeated within their lease.
    pub workers_alive: usize,
}

/// Why a queue call failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no environment {id}; list them with GET /api/v1/environments")]
    NotFound { id: Uuid },
    #[error("environment {id} is {status}: {what}")]
    Conflict {
        id: Uuid,
        status: &'static str,
        what: String,
    },
    #[error("an environment named {name:?} exists ({id}, {status}); destroy it first or pick another metadata.name")]
    NameTaken {
        name: String,
        id: Uuid,
        status: &'static str,
    },
    #[error("Idempotency-Key {key:?} was used for another document; send a new key for a new environment")]
    IdempotencyMismatch { key: String },
    #[error("cursor {cursor:?} is not one this server gave; start again without `cursor`")]
    BadCursor { cursor: String },
    #[error("the job queue at {location}: {message}")]
    Storage { location: String, message: String },
}

/// The queue both the API and the workers use.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Records a new environment (`queued`) with its provision job, or returns the one
    /// an earlier request with the same idempotency key created.
    ///
    /// # Errors
    /// [`QueueError::NameTaken`], [`QueueError::IdempotencyMismatch`], storage.
    async fn submit(&self, new: NewEnvironment) -> Result<Submitted, QueueError>;

    /// One environment.
    ///
    /// # Errors
    /// [`QueueError::NotFound`], storage.
    async fn get(&self, id: Uuid) -> Result<Environment, QueueError>;

    /// Environments, oldest first, filtered and paginated.
    ///
    /// # Errors
    /// [`QueueError::BadCursor`] for a cursor this queue did not make; storage.
    async fn list(&self, query: &ListQuery) -> Result<Page, QueueError>;

    /// Queues the destroy job (`destroy_queued`).
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::Conflict`] when it is already destroyed or
    /// being destroyed, or a job of it is running (retry after it ends).
    async fn request_destroy(&self, id: Uuid) -> Result<Environment, QueueError>;

    /// Queues a provision job again for a `ready` or `failed` environment (`queued`).
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::Conflict`] in any other status.
    async fn request_refresh(&self, id: Uuid) -> Result<Environment, QueueError>;

    /// The environment's events after `after` (0 for all).
    ///
    /// # Errors
    /// [`QueueError::NotFound`], storage.
    async fn events(&self, id: Uuid, after: u64) -> Result<Vec<JobEvent>, QueueError>;

    /// Gauges for `/health` and `/metrics`.
    ///
    /// # Errors
    /// Storage (the database is down).
    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// Takes the oldest waiting job (or one whose lease ran out) for `worker`, under a
    /// lease of `lease`; moves its environment to provisioning / destroying.
    ///
    /// # Errors
    /// Storage.
    async fn take(&self, worker: &str, lease: Duration) -> Result<Option<Job>, QueueError>;

    /// Renews the lease. `false` when the job is no longer this worker's (its lease ran
    /// out and another took it): the worker must stop working on it.
    ///
    /// # Errors
    /// Storage.
    async fn heartbeat(&self, job: &Job, lease: Duration) -> Result<bool, QueueError>;

    /// Moves the job's environment to `status` (e.g. bootstrapping) and records a
    /// `status` event.
    ///
    /// # Errors
    /// [`QueueError::Conflict`] when the job is no longer this worker's; storage.
    async fn set_status(&self, job: &Job, status: Status) -> Result<(), QueueError>;

    /// Records a `progress` or `error` event.
    ///
    /// # Errors
    /// Storage.
    async fn record_event(&self, job: &Job, kind: &str, message: &str) -> Result<(), QueueError>;

    /// Ends the job: ready, destroyed or failed, and releases the environment.
    ///
    /// # Errors
    /// [`QueueError::Conflict`] when the job is no longer this worker's; storage.
    async fn finish(&self, job: &Job, outcome: JobOutcome) -> Result<(), QueueError>;

    /// Stores a sensitive output of the job's environment (the kubeconfig): kept by the
    /// queue for the environment, never in [`Environment::outputs`], events or logs.
    ///
    /// # Errors
    /// [`QueueError::Conflict`] when the job is no longer this worker's; storage.
    async fn set_sensitive_output(
        &self,
        job: &Job,
        name: &str,
        value: &str,
    ) -> Result<(), QueueError>;

    /// A sensitive output stored by [`JobQueue::set_sensitive_output`].
    ///
    /// # Errors
    /// [`QueueError::NotFound`], storage.
    async fn sensitive_output(&self, id: Uuid, name: &str) -> Result<Option<String>, QueueError>;

    /// Waits until a job may be waiting (one was submitted in this process) or `timeout`
    /// passed, whichever is first: an idle worker calls it between [`JobQueue::take`]s.
    /// Jobs submitted by other processes are seen on the next `take` after `timeout`.
    async fn wait_for_work(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }
}

/// The queue for `anvil serve`: PostgreSQL at `database` (several servers share it),
/// else the file queue under `data_dir/queue` (embedded mode, one process).
///
/// # Errors
/// A database URL that cannot be used, or a data directory that cannot be created or is
/// in use by another `anvil serve`.
pub async fn open(
    database: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn JobQueue>, QueueError> {
    Ok(match database {
        Some(url) => std::sync::Arc::new(postgres::PostgresQueue::open(url).await?),
        None => std::sync::Arc::new(file::FileQueue::open(&data_dir.join("queue")).await?),
    })
}
