//! `anvil sim bosh`: a BOSH Director API v1 simulator that follows
//! `shared/fixtures/bosh-director-api.md`. It keeps deployments, tasks, configs, events,
//! releases and stemcells in memory, runs tasks through queued → processing → done or
//! error on tokio's clock, authenticates with basic auth or a built-in UAA token
//! endpoint, serves plain HTTP or TLS (a generated CA or given PEM files), and injects
//! faults that can be changed at run time through `/_sim/faults`.
//!
//! In-process use: [`BoshSim::new`] + [`router`] (drive it with
//! `tower::ServiceExt::oneshot`); as a server: [`serve`].

mod api;
pub mod manifest;
mod store;
pub mod tls;

pub use store::Faults;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;

/// Errors of the simulator's setup and serving.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator settings: {0}")]
    Config(String),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// How clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// HTTP basic auth with one user.
    Basic { username: String, password: String },
    /// Bearer tokens from the built-in UAA endpoint `/uaa/oauth/token`
    /// (client credentials grant with this client).
    Uaa { client: String, secret: String },
}

/// Settings of one simulated Director.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub auth: AuthMode,
    /// Lifetime of UAA tokens.
    pub token_ttl: Duration,
    pub faults: Faults,
    /// Seed of the fault dice and token generator; `None` seeds from the clock.
    pub seed: Option<u64>,
    /// The Director's `name` in `/info`.
    pub name: String,
    /// The Director's `uuid` in `/info`.
    pub uuid: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            auth: AuthMode::Basic {
                username: "admin".into(),
                password: "admin".into(),
            },
            token_ttl: Duration::from_secs(600),
            faults: Faults::default(),
            seed: None,
            name: "anvil-sim-bosh".into(),
            uuid: "00000000-0000-4000-8000-0000000b05a1".into(),
        }
    }
}

/// One simulated Director: cheap to clone, all clones share the state.
#[derive(Debug, Clone)]
pub struct BoshSim {
    config: Arc<SimConfig>,
    store: Arc<Store>,
    base_url: Arc<Mutex<String>>,
}

impl BoshSim {
    /// A Director with no deployments.
    ///
    /// # Errors
    /// [`SimError::Config`] when a fault probability lies outside 0..=1.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.faults.validate().map_err(SimError::Config)?;
        let seed = config.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5eed)
        });
        Ok(BoshSim {
            store: Arc::new(Store::new(config.faults, seed)),
            config: Arc::new(config),
            base_url: Arc::new(Mutex::new("http://127.0.0.1:25555".into())),
        })
    }

    /// The URL the Director advertises for itself (and, under `/uaa`, for its UAA).
    pub fn base_url(&self) -> String {
        self.base_url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets the advertised URL, e.g. once the real port is known.
    pub fn set_base_url(&self, url: &str) {
        *self.base_url.lock().unwrap_or_else(|p| p.into_inner()) = url.to_string();
    }

    /// The fault settings in force.
    pub fn faults(&self) -> Faults {
        self.store.lock().faults
    }
}

/// The axum router of a simulated Director (all endpoints, fault injection, 404s).
pub fn router(sim: BoshSim) -> axum::Router {
    api::router(sim)
}

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Plain HTTP.
    Off,
    /// A CA and server certificate generated at start.
    Generate,
    /// PEM files: the certificate (chain) and its key.
    Files { cert: PathBuf, key: PathBuf },
}

/// Settings of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub tls: TlsSource,
    /// Where to write the CA PEM clients should pin (with `Files`, the certificate file's
    /// content), before the server is announced.
    pub ca_out: Option<PathBuf>,
    pub sim: SimConfig,
}

/// Listens, calls `on_ready` with the base URL (real port included) once the socket is
/// bound and the CA written, and serves until `shutdown` completes; in-flight requests
/// then get a few seconds to finish.
///
/// # Errors
/// Invalid settings, a port that cannot be bound, TLS material that cannot be made or
/// read, a CA file that cannot be written, or a failing server.
pub async fn serve(
    opts: ServeOptions,
    on_ready: impl FnOnce(&str),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    let sim = BoshSim::new(opts.sim)?;
    let listener = std::net::TcpListener::bind(opts.listen).map_err(|source| SimError::Bind {
        addr: opts.listen,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| SimError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: opts.listen,
        source,
    })?;
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|source| SimError::File {
            path: path.clone(),
            source,
        })
    };
    let pem = match &opts.tls {
        TlsSource::Off => None,
        TlsSource::Generate => Some(tls::generate(addr.ip())?),
        TlsSource::Files { cert, key } => {
            let chain = read(cert)?;
            Some(tls::Pem {
                ca: chain.clone(),
                chain,
                key: read(key)?,
            })
        }
    };
    if let Some(path) = &opts.ca_out {
        let ca = pem
            .as_ref()
            .map(|p| p.ca.as_str())
            .ok_or_else(|| SimError::Config("--ca-out needs TLS (--tls or --cert/--key)".into()))?;
        std::fs::write(path, ca).map_err(|source| SimError::File {
            path: path.clone(),
            source,
        })?;
    }
    let scheme = if pem.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    sim.set_base_url(&url);
    let app = router(sim).into_make_service();
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(Duration::from_secs(3)));
    });
    on_ready(&url);
    let served = match pem {
        None => {
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(app)
                .await
        }
        Some(pem) => {
            let config = tls::server_config(&pem.chain, &pem.key)?;
            axum_server::from_tcp_rustls(
                listener,
                axum_server::tls_rustls::RustlsConfig::from_config(config),
            )
            .handle(handle)
            .serve(app)
            .await
        }
    };
    served.map_err(SimError::Serve)
}
