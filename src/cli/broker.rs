//! Flags of `anvil broker` and the call into `broker::serve`.

use crate::broker::{self, Settings};
use crate::ops::Inputs;
use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub(super) struct BrokerArgs {
    /// The Foundation the broker serves: a spec file or directory holding one
    /// Foundation document (its catalog is the broker's catalog).
    #[arg(long)]
    foundation: PathBuf,
    /// Address to listen on (port 0 picks a free port; the line printed names it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// State backend URL (default: state/<metadata.name>.json); the broker's instance
    /// store is kept beside the state (file: `<state>.broker`).
    #[arg(long, env = "ANVIL_STATE")]
    state: Option<String>,
    /// Basic-auth user name the platform registers the broker with.
    #[arg(long, env = "ANVIL_BROKER_USERNAME", hide_env_values = true)]
    username: Option<String>,
    /// Basic-auth password (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "ANVIL_BROKER_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM; needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long a batch waits for the state lock another run (`anvil apply`) holds.
    #[arg(long, default_value = "10m", value_parser = super::parse_duration)]
    lock_timeout: Duration,
    /// Provider operations a batch runs at once (the BOSH and Vault providers have
    /// their own limits too).
    #[arg(long, default_value_t = 10)]
    parallelism: usize,
    /// Run the reconciler (`anvil reconcile`) in the broker: at start and then every
    /// DURATION (e.g. 5m), each run under the state lock; `GET /b/reconciler/status`
    /// and `POST /b/reconciler/run` report and trigger it.
    #[arg(long, value_parser = super::parse_duration)]
    reconcile_interval: Option<Duration>,
    /// The dashboard's cells: with --cf-api the page at `/` shows the Diego cells
    /// (and --bosh-environment their vitals; without a Director, apps only).
    #[command(flatten)]
    capacity: super::capacity::CapacitySource,
    /// How long a capacity answer is served from the cache.
    #[arg(long, default_value = "5m", value_parser = super::parse_duration)]
    capacity_ttl: Duration,
}

/// Runs the broker until SIGINT or SIGTERM, then lets the batch in flight finish.
pub(super) async fn run(a: BrokerArgs) -> Result<i32> {
    if a.reconcile_interval.is_some_and(|d| d.is_zero()) {
        anyhow::bail!(
            "--reconcile-interval 0: the reconciler needs a pause between runs; give a duration such as 5m, or leave the flag out to not run it"
        );
    }
    let settings = Settings {
        inputs: Inputs {
            paths: vec![a.foundation],
            vars: Vec::new(),
            var_files: Vec::new(),
            state_url: a.state,
        },
        username: a.username.unwrap_or_default(),
        password: a.password.unwrap_or_default(),
        lock_timeout: a.lock_timeout,
        parallelism: a.parallelism.max(1),
        reconcile_interval: a.reconcile_interval,
        capacity: a.capacity.settings(a.capacity_ttl),
    };
    let tls = a.tls_cert.zip(a.tls_key);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state = broker::prepare(settings).await?;
    let (listener, addr) = broker::bind(&a.listen, tls).await?;
    // Signal handlers first: a test may send SIGTERM as soon as it reads the line.
    let shutdown = shutdown_signal()?;
    println!("anvil broker listening on {scheme}://{addr}");
    std::io::stdout().flush()?;
    broker::serve(state, listener, shutdown).await?;
    Ok(0)
}

/// A future that completes on SIGINT or SIGTERM, with the handlers installed now.
pub(super) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
