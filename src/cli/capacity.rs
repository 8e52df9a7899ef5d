//! `anvil capacity [--json]`: the flags (CF API and Director endpoints and credentials,
//! TTL, cache file), the call into `ops::capacity::report`, and the text and JSON forms.

use crate::ops::capacity::{self, BoshConfig, CfConfig, DashboardData, Settings};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub(super) struct CapacityArgs {
    /// The Cloud Foundry API URL, e.g. https://api.sys.example.com.
    #[arg(long, env = "CF_API")]
    cf_api: Option<String>,
    /// The CF user (UAA password grant with the `cf` client).
    #[arg(long, env = "CF_USERNAME", default_value = "admin")]
    cf_username: String,
    /// That user's password.
    #[arg(long, env = "CF_PASSWORD", hide_env_values = true, default_value = "")]
    cf_password: String,
    /// A PEM CA certificate (file or inline) for the CF API and its UAA.
    #[arg(long, env = "CF_CA_CERT")]
    cf_ca_cert: Option<String>,
    /// The Director URL or host; without it cells are not reported (apps only).
    #[arg(long, env = "BOSH_ENVIRONMENT")]
    bosh_environment: Option<String>,
    /// The Director client.
    #[arg(long, env = "BOSH_CLIENT", default_value = "admin")]
    bosh_client: String,
    /// The Director client secret.
    #[arg(
        long,
        env = "BOSH_CLIENT_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    bosh_client_secret: String,
    /// The Director's CA certificate (file or inline PEM).
    #[arg(long, env = "BOSH_CA_CERT")]
    bosh_ca_cert: Option<String>,
    /// How long an answer stays fresh in the cache.
    #[arg(long, default_value = "5m", value_parser = super::parse_duration)]
    ttl: Duration,
    /// Keep the last answer in this file; a run within --ttl of it reads the file
    /// instead of asking the APIs (metadata.cached is then true).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The first delay between the Director's retries (3 retries, doubling: 1s gives 1/2/4 s).
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    bosh_backoff: Duration,
    /// Print the dashboard as JSON (the /api/dashboard shape).
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(a: CapacityArgs) -> Result<i32> {
    let Some(api_url) = a.cf_api.filter(|u| !u.trim().is_empty()) else {
        bail!("no CF API: give --cf-api URL or set CF_API (e.g. https://api.sys.example.com)");
    };
    let bosh = a
        .bosh_environment
        .filter(|e| !e.trim().is_empty())
        .map(|env| BoshConfig {
            url: crate::ops::capacity::normalize_bosh_url(&env),
            client: a.bosh_client,
            secret: a.bosh_client_secret,
            ca_cert: a.bosh_ca_cert,
        });
    let mut settings = Settings::new(
        CfConfig {
            api_url,
            username: a.cf_username,
            password: a.cf_password,
            ca_cert: a.cf_ca_cert,
        },
        bosh,
    );
    settings.ttl = a.ttl;
    settings.bosh_backoff = a.bosh_backoff;
    let d = capacity::report(settings, a.cache.as_deref()).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", text(&d));
    }
    Ok(0)
}

fn text(d: &DashboardData) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let m = &d.metadata;
    let _ = writeln!(
        s,
        "Capacity at {}{}",
        m.timestamp,
        if m.cached { " (cached)" } else { "" }
    );
    if !m.bosh_available {
        let _ = writeln!(
            s,
            "Degraded: the Director did not answer (or is not configured); apps only."
        );
    }
    if !d.cells.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<32} {:<16} {:>10} {:>10} {:>10} {:>6}",
            "CELL", "SEGMENT", "MEMORY MB", "ALLOC MB", "USED MB", "CPU %"
        );
        for c in &d.cells {
            let _ = writeln!(
                s,
                "{:<32} {:<16} {:>10} {:>10} {:>10} {:>6.1}",
                format!("{}/{}", c.deployment, c.name),
                c.isolation_segment,
                c.memory_mb,
                c.allocated_mb,
                c.used_mb,
                c.cpu_percent
            );
        }
    }
    let requested: u64 = d.apps.iter().map(|a| a.requested_mb).sum();
    let actual: u64 = d.apps.iter().map(|a| a.actual_mb).sum();
    let _ = writeln!(
        s,
        "\n{} apps: {requested} MB requested, {actual} MB in use; {} isolation segments",
        d.apps.len(),
        d.segments.len()
    );
    if !d.cells.is_empty() {
        let total: u64 = d.cells.iter().map(|c| c.memory_mb).sum();
        let used: u64 = d.cells.iter().map(|c| c.used_mb).sum();
        let _ = writeln!(
            s,
            "{} cells: {total} MB memory, {used} MB used, {} MB free",
            d.cells.len(),
            total.saturating_sub(used)
        );
    }
    s
}
