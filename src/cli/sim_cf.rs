//! Flags of `anvil sim cf` and the call into `sim::cf::serve`.

use crate::sim::cf::{self, Faults, Seed, ServeOptions, SimConfig};
use anyhow::{bail, Result};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub(super) struct CfArgs {
    /// Address to listen on (port 0 picks a free port; the line printed names it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The user the UAA password grant accepts (client `cf`, empty secret).
    #[arg(long, default_value = "admin")]
    username: String,
    /// That user's password.
    #[arg(long, default_value = "admin")]
    password: String,
    /// A JSON file with isolation_segments, spaces and apps (docs/simulators.md).
    #[arg(long, conflicts_with_all = ["apps", "segments"])]
    seed_file: Option<PathBuf>,
    /// Generate this many apps (one web process each) instead of reading a seed file.
    #[arg(long, default_value_t = 0)]
    apps: usize,
    /// With --apps: isolation segments besides `shared` (one space each).
    #[arg(long, default_value_t = 0)]
    segments: usize,
    /// Extra delay before every answer outside /_sim/ (e.g. 200ms).
    #[arg(long, default_value = "0s", value_parser = super::parse_duration)]
    latency: Duration,
    /// Probability (0..1) that any request outside /_sim/ gets a simulated 500.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Seed for reproducible faults and tokens.
    #[arg(long)]
    seed: Option<u64>,
}

/// Runs the simulator until SIGINT or SIGTERM.
pub(super) async fn run(a: CfArgs) -> Result<i32> {
    let data = match &a.seed_file {
        Some(path) => Seed::from_file(path)?,
        None => Seed::generate(a.apps, a.segments),
    };
    if a.seed_file.is_none() && a.apps == 0 && a.segments > 0 {
        bail!("--segments needs --apps N (the generated apps fill the segments' spaces)");
    }
    let opts = ServeOptions {
        listen: a.listen,
        sim: SimConfig {
            username: a.username,
            password: a.password,
            faults: Faults {
                fail_rate: a.fail_rate,
                latency_ms: u64::try_from(a.latency.as_millis()).unwrap_or(u64::MAX),
            },
            seed: a.seed,
            data,
        },
    };
    // Registered now, before the address line is printed, so a SIGTERM right after
    // it is a clean stop.
    let mut interrupts = super::Interrupts::register();
    cf::serve(
        opts,
        |url| {
            println!("anvil sim cf listening on {url}");
            let _ = std::io::stdout().flush();
        },
        async move { interrupts.next().await },
    )
    .await?;
    Ok(0)
}
