//! `anvil broker`: an Open Service Broker (API 2.13–2.17) over `ops`. Every provision,
//! update and deprovision is a change to the broker's desired-state store (kept by the
//! state backend beside the workspace state) that a worker applies through the same
//! plan-and-apply engine and state lock as `anvil apply`.
//!
//! - [`router`] builds the axum `Router`: the OSB routes (`catalog`, `instances`), the
//!   binding routes (`bind`) and Blacksmith's internal `/b/...` routes (`internal`),
//!   behind basic auth and the `X-Broker-API-Version` check ([`middleware`]).
//! - [`AppState`] is what every handler shares: the settings, the Foundation and its
//!   catalog, the store, the worker's queue and the `db` index status writer.
//! - `worker` applies queued instances in batches and resumes unfinished operations.

pub mod bind;
mod catalog;
mod dashboard;
pub mod error;
mod instances;
pub mod internal;
mod middleware;
pub mod reconciler;
mod worker;

use crate::ops::broker::{BrokerFoundation, IndexStatus, StoreHandle};
use crate::ops::{CancellationToken, Inputs, OpsError};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use error::ApiError;

/// The lowest `X-Broker-API-Version` the broker accepts.
pub const MIN_API_VERSION: (u32, u32) = (2, 13);

/// The broker's settings, as `anvil broker`'s flags give them.
#[derive(Clone)]
pub struct Settings {
    /// The Foundation (file or directory) and the state URL.
    pub inputs: Inputs,
    /// Basic-auth user name the platform uses.
    pub username: String,
    /// Basic-auth password (never logged).
    pub password: String,
    /// How long a batch waits for the state lock (another `anvil apply` may hold it).
    pub lock_timeout: Duration,
    /// How many provider operations a batch runs at once.
    pub parallelism: usize,
    /// Run the reconciler every this long (`--reconcile-interval`); `None`: not at all.
    pub reconcile_interval: Option<Duration>,
    /// The capacity service behind the dashboard's cells (`--cf-api`…); `None`: the
    /// dashboard says it is not configured.
    pub capacity: Option<crate::ops::capacity::Settings>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("inputs", &self.inputs)
            .field("username", &self.username)
            .field("password", &"***")
            .field("lock_timeout", &self.lock_timeout)
            .field("parallelism", &self.parallelism)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Why the broker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error("the broker needs basic-auth credentials: give --username and --password, or set ANVIL_BROKER_USERNAME and ANVIL_BROKER_PASSWORD (the platform registers the broker with them)")]
    NoCredentials,
    #[error("--listen {addr}: cannot listen there ({source}); pick a free address such as 127.0.0.1:8080")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}; give --tls-cert and --tls-key as PEM files (the certificate chain and its private key)")]
    Tls(String),
    #[error("the broker's HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// What every handler shares.
pub struct AppState {
    pub settings: Settings,
    /// The Foundation served and its catalog.
    pub foundation: BrokerFoundation,
    /// The OSB catalog document, built once.
    pub catalog: serde_json::Value,
    /// The broker's desired-state store.
    pub store: StoreHandle,
    /// Blacksmith's statuses in the `db` index.
    pub index: IndexStatus,
    /// The queue of instances to apply.
    pub worker: worker::WorkerHandle,
    /// Fired when the broker stops: the worker finishes its batch and ends.
    pub stopping: CancellationToken,
    /// The reconciler, when the broker runs it (`--reconcile-interval`).
    pub reconciler: Option<reconciler::ReconcilerHandle>,
    /// The capacity service (its cache shared by every dashboard request).
    pub capacity: Option<Arc<crate::ops::capacity::Service>>,
}

/// The shared state handlers get.
pub type Shared = Arc<AppState>;

/// Loads the Foundation (refusing a spec `anvil apply` would refuse), opens the store,
/// connects to Vault's index, starts the worker and queues every unfinished operation
/// found in the store (a broker restarted mid-operation resumes them).
///
/// # Errors
/// Missing credentials, the spec, the store, or Vault's settings.
pub async fn prepare(settings: Settings) -> Result<Shared, BrokerError> {
    if settings.username.is_empty() || settings.password.is_empty() {
        return Err(BrokerError::NoCredentials);
    }
    let foundation = BrokerFoundation::load(&settings.inputs).await?;
    // Vault first: a broker that cannot start writes nothing (opening the store writes
    // an empty one the first time).
    let index = IndexStatus::connect(&foundation).await?;
    let store = StoreHandle::open(&settings.inputs).await?;
    let catalog = catalog::document(foundation.foundation());
    let stopping = CancellationToken::new();
    let (worker, queue) = worker::channel();
    let reconciler = settings
        .reconcile_interval
        .map(reconciler::ReconcilerHandle::new);
    let capacity = settings
        .capacity
        .clone()
        .map(|c| Arc::new(crate::ops::capacity::Service::new(c)));
    let state = Arc::new(AppState {
        settings,
        foundation,
        catalog,
        store,
        index,
        worker,
        stopping,
        reconciler,
        capacity,
    });
    worker::start(state.clone(), queue);
    worker::resume(&state);
    reconciler::start(&state);
    Ok(state)
}

/// The broker's routes over `state`. Binding routes come from [`bind::routes`] and
/// Blacksmith's internal `/b/...` routes from [`internal::routes`]: add routes there.
pub fn router(state: Shared) -> Router {
    Router::new()
        .merge(catalog::routes())
        .merge(instances::routes())
        // Bindings (`/v2/service_instances/:id/service_bindings/:bid`).
        .merge(bind::routes())
        // Blacksmith's internal API (`/b/...`).
        .merge(internal::routes())
        // The reconciler's status and trigger (`/b/reconciler/...`).
        .merge(reconciler::routes())
        // The dashboard page.
        .route("/", axum::routing::get(dashboard::page))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::check,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// Request bodies larger than this are refused (413).
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Where and how the broker listens.
pub enum Listener {
    /// Plain HTTP.
    Plain(tokio::net::TcpListener),
    /// HTTPS with this certificate chain and key (PEM files).
    Tls {
        listener: std::net::TcpListener,
        cert: PathBuf,
        key: PathBuf,
    },
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(
    addr: &str,
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<(Listener, SocketAddr), BrokerError> {
    let listen_error = |source| BrokerError::Listen {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    match tls {
        None => Ok((Listener::Plain(listener), local)),
        Some((cert, key)) => {
            let std = listener.into_std().map_err(listen_error)?;
            Ok((
                Listener::Tls {
                    listener: std,
                    cert,
                    key,
                },
                local,
            ))
        }
    }
}

/// Serves until `shutdown` completes, then stops taking requests, lets the worker
/// finish its batch and returns.
///
/// # Errors
/// TLS files that cannot be used, or the server failing.
pub async fn serve(
    state: Shared,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BrokerError> {
    let app = router(state.clone());
    let stopping = state.stopping.clone();
    match listener {
        Listener::Plain(l) => {
            axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    shutdown.await;
                    stopping.cancel();
                })
                .await
                .map_err(BrokerError::Serve)?;
        }
        Listener::Tls {
            listener,
            cert,
            key,
        } => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .map_err(|e| {
                    BrokerError::Tls(format!("{} / {}: {e}", cert.display(), key.display()))
                })?;
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopping.cancel();
                h.graceful_shutdown(Some(Duration::from_secs(10)));
            });
            axum_server::from_tcp_rustls(listener, config)
                .handle(handle)
                .serve(app.into_make_service())
                .await
                .map_err(BrokerError::Serve)?;
        }
    }
    state.stopping.cancel();
    worker::drained(&state).await;
    Ok(())
}
