//! Flags of `anvil serve` and the call into `server::serve`.

use crate::server::{self, auth::Tokens, Settings};
use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    /// Address the API listens on (port 0 picks a free port; the line printed names it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// PostgreSQL URL shared by every server: the job queue and each environment's state
    /// (workspace = its name). Without it: embedded, files under --data-dir.
    #[arg(long, env = "ANVIL_SERVE_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Where embedded mode keeps its queue and the environments' local state.
    #[arg(long, default_value = "./.anvil-serve")]
    data_dir: PathBuf,
    /// Workers in this process (each runs one job at a time).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Run only workers (no HTTP listener).
    #[arg(long)]
    no_api: bool,
    /// Run only the API (jobs are taken by other servers' workers).
    #[arg(long)]
    no_workers: bool,
    /// Bearer tokens, one `name:token` per line (the name is recorded as user_id);
    /// besides ANVIL_SERVE_TOKEN (named `default`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// A command run after apply with KUBECONFIG set to the cluster's kubeconfig (charts
    /// installation); its exit status decides ready or failed. None: skipped.
    #[arg(long)]
    bootstrap_hook: Option<String>,
    /// How long a job stays a worker's without a heartbeat; after it another worker
    /// takes the job.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    lease: Duration,
    /// Provider operations a job runs at once.
    #[arg(long, default_value_t = 10)]
    parallelism: usize,
    /// Print the OpenAPI document of the API and exit.
    #[arg(long)]
    print_openapi: bool,
    /// The capacity service: with --cf-api the server also answers `/api/health`,
    /// `/api/dashboard`, `/api/cells`, `/api/apps` and `/api/segments` (behind the
    /// token), and the dashboard at `/` shows the cells.
    #[command(flatten)]
    capacity: super::capacity::CapacitySource,
    /// How long a capacity answer is served from the cache.
    #[arg(long, default_value = "5m", value_parser = super::parse_duration)]
    capacity_ttl: Duration,
}

/// Runs the server until SIGINT or SIGTERM, then drains the workers.
pub(super) async fn run(a: ServeArgs) -> Result<i32> {
    if a.print_openapi {
        print!("{}", server::openapi::text());
        return Ok(0);
    }
    let tokens = if a.no_api {
        None
    } else {
        let env = std::env::var("ANVIL_SERVE_TOKEN").ok();
        Some(Tokens::load(env.as_deref(), a.token_file.as_deref())?)
    };
    let settings = Settings {
        database: a.database,
        data_dir: a.data_dir,
        workers: if a.no_workers { 0 } else { a.workers.max(1) },
        tokens,
        bootstrap_hook: a.bootstrap_hook,
        lease: a.lease.max(Duration::from_secs(1)),
        parallelism: a.parallelism.max(1),
        events_poll: Duration::from_millis(250),
        capacity: a.capacity.settings(a.capacity_ttl),
    };
    let prepared = server::prepare(settings).await?;
    let listener = if a.no_api {
        None
    } else {
        Some(server::bind(&a.listen).await?)
    };
    // Signal handlers first: a test may send SIGTERM as soon as it reads the line.
    let shutdown = super::broker::shutdown_signal()?;
    match &listener {
        Some((_, addr)) => println!("anvil serve listening on http://{addr}"),
        None => println!("anvil serve running workers (no API)"),
    }
    std::io::stdout().flush()?;
    server::serve(prepared, listener.map(|(l, _)| l), shutdown).await?;
    Ok(0)
}
