//! `anvil reconcile`: Blacksmith's reconciler as an engine job (design §6).
//!
//! One run ([`Reconciler::run_once`]) scans every Director deployment, matches each to a
//! plan of the Foundation's catalog ([`matcher`]: by name, then manifest metadata, then
//! releases), and brings Blacksmith's Vault data back into agreement with the Director:
//! for each match it backs up the instance's Vault data (`{id}/backups/{unix_ts}`), then
//! stamps `{id}/manifest` and the instance's `db` index entry with `reconciled`,
//! `reconciled_at` and `last_synced_at` (rebuilding a missing entry with its service,
//! plan and deployment name); index entries whose deployment is gone are marked
//! `orphaned` (their secrets are never deleted), and the mark is cleared when the
//! deployment comes back. Deployments matching no plan are left alone and reported.
//!
//! Each run is idempotent: running it again on an unchanged world only moves the
//! timestamps (and writes one more backup per instance, pruned to the retention).
//! [`watch::watch`] repeats runs on an interval until a stop signal; [`settings`] resolves
//! flags, `ANVIL_RECONCILER_*` variables, a config file and defaults; [`metrics`] keeps
//! the counters and serves them as Prometheus text.
//!
//! The reconciler reaches the Director and Vault through two small traits,
//! [`Director`] and [`SecretStore`]; [`clients`] implements them with the `bosh` and
//! `vault` providers' HTTP clients, and the unit tests with in-memory fakes.

pub mod clients;
pub mod matcher;
pub mod metrics;
mod run;
pub mod settings;
pub mod watch;

#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};

pub use crate::providers::vault::client::Secret;
pub use matcher::{Catalog, Match, Strategy};
pub use metrics::{Metrics, SharedMetrics};
pub use run::{Clock, Reconciler};
pub use settings::{Resolved, Settings, SettingsError, Source};

/// The reason written into `orphaned_reason`.
pub const ORPHANED_REASON: &str = "no_bosh_deployment";

/// A failed call to the Director or Vault: the providers' error, whose kind decides
/// retries (transient errors and check-and-set conflicts are retried).
pub type OpError = crate::providers::ProviderError;

/// The Director, as far as the reconciler needs it.
#[async_trait]
pub trait Director: Send + Sync {
    /// The names of all deployments.
    ///
    /// # Errors
    /// The Director cannot be asked or refuses.
    async fn deployment_names(&self) -> Result<Vec<String>, OpError>;
    /// A deployment's manifest text; `None` when it does not exist (any more).
    ///
    /// # Errors
    /// The Director cannot be asked or refuses.
    async fn manifest(&self, name: &str) -> Result<Option<String>, OpError>;
}

/// Blacksmith's KV v2 mount, as far as the reconciler needs it. Paths are relative to
/// the mount.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The latest version of a secret (data `None` and version 0 when never written).
    ///
    /// # Errors
    /// Vault cannot be asked or refuses.
    async fn read(&self, path: &str) -> Result<Secret, OpError>;
    /// Writes a new version, with check-and-set when `cas` is given (`Some(0)`: only if
    /// absent). Returns the new version.
    ///
    /// # Errors
    /// Vault refuses (kind `Conflict` on a CAS mismatch) or cannot be asked.
    async fn write(
        &self,
        path: &str,
        data: &Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<u64, OpError>;
    /// The keys directly under `path` (folders end in `/`); empty when there are none.
    ///
    /// # Errors
    /// Vault cannot be asked or refuses.
    async fn list(&self, path: &str) -> Result<Vec<String>, OpError>;
    /// Deletes every version and the metadata of a secret; absent is fine.
    ///
    /// # Errors
    /// Vault cannot be asked or refuses.
    async fn delete(&self, path: &str) -> Result<(), OpError>;
}

/// Why `anvil reconcile` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecErrors),
    #[error("{0}")]
    Foundation(String),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("{0}")]
    Connect(String),
}

/// A deployment left alone because it matches no plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmatched {
    pub deployment: String,
    pub reason: String,
}

/// An index entry marked orphaned (now or before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    pub instance_id: String,
    /// The deployment the entry names, when it names one.
    pub deployment_name: Option<String>,
    /// When it was first marked (`orphaned_at`).
    pub orphaned_at: String,
}

/// An index entry or instance left alone because acting on it would be unsafe (a key
/// that is not a UUID, a value that is not a JSON object, an entry removed while the
/// run was going on). Nothing was written for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The `db` index key (or instance id) concerned.
    pub key: String,
    /// Why, and what to do about it.
    pub reason: String,
}

/// One thing that failed during a run; the run went on past it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunError {
    /// What it was about: a deployment, an instance id, `deployments` or `db`.
    pub subject: String,
    pub message: String,
}

/// What one run saw and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    /// 1 for the first run of this process.
    pub run: u64,
    /// RFC 3339 time the run started.
    pub started_at: String,
    /// Unix time the run ended.
    pub finished_at: i64,
    #[serde(rename = "duration_seconds", serialize_with = "as_secs")]
    pub duration: Duration,
    pub deployments_scanned: usize,
    /// Matched deployments, by deployment name.
    pub matches: Vec<Match>,
    /// Deployments matching no plan, left alone.
    pub unmatched: Vec<Unmatched>,
    /// Instances whose Vault data was written back.
    pub synced: usize,
    /// Index entries rebuilt because they were missing.
    pub rebuilt: Vec<String>,
    /// Every index entry marked orphaned after this run.
    pub orphaned: Vec<Orphan>,
    /// Entries this run marked orphaned.
    pub newly_orphaned: Vec<String>,
    /// Entries whose orphan mark this run cleared (their deployment is back).
    pub cleared: Vec<String>,
    pub backups_written: usize,
    pub backups_deleted: usize,
    /// Index entries and instances left alone as unsafe to act on.
    pub skipped: Vec<Skipped>,
    pub errors: Vec<RunError>,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl RunReport {
    /// How many matches each strategy made: (name, metadata, releases).
    #[must_use]
    pub fn by_strategy(&self) -> (usize, usize, usize) {
        let n = |s: Strategy| self.matches.iter().filter(|m| m.strategy == s).count();
        (
            n(Strategy::Name),
            n(Strategy::Metadata),
            n(Strategy::Releases),
        )
    }
}
