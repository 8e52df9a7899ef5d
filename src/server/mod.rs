//! `anvil serve`: the environments REST API (`/api/v1/environments`), its job queue and
//! the workers that plan and apply each environment through `ops`, like every other
//! front-end. Several servers share one PostgreSQL database; without one it runs
//! embedded (local state, a file-backed queue).
//!
//! - [`api`]: the routes, JSON error bodies, request correlation; [`auth`]: bearer
//!   tokens; [`metrics`]: Prometheus; [`openapi`]: the generated OpenAPI document.
//! - `queue`: the job queue contract and its implementations; `worker`: the workers.
//! - [`prepare`] opens the queue, [`bind`] the listener, [`serve`] runs the API and the
//!   workers until the shutdown future completes, then drains them.

pub mod api;
pub mod auth;
pub mod capacity;
pub mod dashboard;
pub mod metrics;
pub mod openapi;
pub mod queue;
pub mod worker;

use crate::ops::CancellationToken;
use api::{AppState, Shared};
use auth::{AuthError, Tokens};
use axum::Router;
use metrics::{Metrics, MetricsError};
use queue::{JobQueue, QueueError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `anvil serve`'s settings, as its flags give them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--database postgres://…`: the queue and every environment's state there;
    /// `None`: embedded (files under `data_dir`).
    pub database: Option<String>,
    /// `--data-dir`: the embedded queue and local state.
    pub data_dir: PathBuf,
    /// Workers this process runs (0: `--no-workers`).
    pub workers: usize,
    /// The API's tokens; `None`: `--no-api`.
    pub tokens: Option<Tokens>,
    /// `--bootstrap-hook CMD`: run with `KUBECONFIG` after apply.
    pub bootstrap_hook: Option<String>,
    /// A job's lease; a worker renews it every `lease / 3`.
    pub lease: Duration,
    /// Provider operations a job runs at once.
    pub parallelism: usize,
    /// How often an SSE event stream polls the queue.
    pub events_poll: Duration,
    /// The capacity service (`--cf-api`, `--bosh-environment`…): its `/api/health`,
    /// `/api/dashboard`, `/api/cells|apps|segments` routes and the dashboard's cells;
    /// `None`: those routes are absent.
    pub capacity: Option<crate::ops::capacity::Settings>,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("--listen {addr}: cannot listen there ({source}); pick a free address such as 127.0.0.1:8080")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("the API's HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Usage(String),
}

/// A server ready to run: its queue is open and its shared state built.
pub struct Prepared {
    pub settings: Settings,
    pub app: Shared,
}

/// Checks the settings and opens the queue (creating its tables or files).
///
/// # Errors
/// `--no-api` with `--no-workers`, a queue that cannot be opened.
pub async fn prepare(settings: Settings) -> Result<Prepared, ServeError> {
    if settings.tokens.is_none() && settings.workers == 0 {
        return Err(ServeError::Usage(
            "--no-api with --no-workers would do nothing: drop one of them".into(),
        ));
    }
    let queue = open_queue(&settings).await?;
    prepare_with(settings, queue)
}

/// [`prepare`] over a queue the caller opened (tests, benchmarks).
///
/// # Errors
/// Only on a metrics definition bug.
pub fn prepare_with(settings: Settings, queue: Arc<dyn JobQueue>) -> Result<Prepared, ServeError> {
    let app = Arc::new(AppState {
        queue,
        metrics: Arc::new(Metrics::new()?),
        local_workers: settings.workers,
        events_poll: settings.events_poll,
        stopping: CancellationToken::new(),
        capacity: settings
            .capacity
            .clone()
            .map(|c| Arc::new(crate::ops::capacity::Service::new(c))),
    });
    Ok(Prepared { settings, app })
}

async fn open_queue(settings: &Settings) -> Result<Arc<dyn JobQueue>, ServeError> {
    Ok(queue::open(settings.database.as_deref(), &settings.data_dir).await?)
}

/// The API's routes: `/api/v1/environments…`, the dashboard at `/` and (when capacity
/// is configured) the capacity `/api/…` routes behind the bearer token, `/health` and
/// `/metrics` open; every request correlated and counted.
pub fn router(app: Shared, tokens: Arc<Tokens>) -> Router {
    use axum::routing::{get, post};
    let protected = Router::new()
        .route(api::ENVIRONMENTS, post(api::create).get(api::list))
        .route(
            "/api/v1/environments/{id}",
            get(api::show).delete(api::destroy),
        )
        .route("/api/v1/environments/{id}/refresh", post(api::refresh))
        .route("/api/v1/environments/{id}/events", get(api::events))
        .route(
            "/api/v1/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route("/", get(dashboard::page));
    let protected = match &app.capacity {
        Some(service) => protected.merge(capacity::router(service.clone())),
        None => protected,
    }
    .route_layer(axum::middleware::from_fn_with_state(tokens, auth::require));
    let open = Router::new()
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics));
    let metrics = app.metrics.clone();
    protected
        .merge(open)
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::wrong_method)
        .layer(axum::extract::DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(axum::middleware::from_fn(api::correlate))
        .with_state(app)
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let listen_error = |source| ServeError::Listen {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    Ok((listener, local))
}

/// Runs the workers and (with a listener) the API until `shutdown` completes; then stops
/// taking requests, cancels the workers (each leaves its job for the lease to hand on or
/// finishes recording it) and waits for them.
///
/// # Errors
/// The HTTP server failing.
pub async fn serve(
    prepared: Prepared,
    listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Prepared { settings, app } = prepared;
    let stopping = app.stopping.clone();
    let workers = start_workers(&settings, &app);
    let result = match (listener, settings.tokens.clone()) {
        (Some(listener), Some(tokens)) => {
            let routes = router(app.clone(), Arc::new(tokens));
            let stop = stopping.clone();
            axum::serve(listener, routes)
                .with_graceful_shutdown(async move {
                    shutdown.await;
                    stop.cancel();
                })
                .await
                .map_err(ServeError::Serve)
        }
        _ => {
            shutdown.await;
            Ok(())
        }
    };
    stopping.cancel();
    for w in workers {
        let _ = w.await;
    }
    result
}

/// Starts this process's workers (none with `--no-workers`).
fn start_workers(settings: &Settings, app: &Shared) -> Vec<tokio::task::JoinHandle<()>> {
    if settings.workers == 0 {
        return Vec::new();
    }
    // Unique across servers sharing a database: host and pid.
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let ws = worker::Settings {
        id_prefix: format!("{host}-{}", std::process::id()),
        state_url: settings.database.clone(),
        data_dir: settings.data_dir.clone(),
        lease: settings.lease,
        heartbeat: settings.lease / 3,
        bootstrap_hook: settings.bootstrap_hook.clone(),
        parallelism: settings.parallelism,
    };
    let observer: Arc<dyn worker::Observer> = app.metrics.clone();
    worker::spawn(
        app.queue.clone(),
        ws,
        settings.workers,
        observer,
        app.stopping.clone(),
    )
}
