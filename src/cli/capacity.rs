//! `anvil capacity [--json]`: the flags (CF API and Director endpoints and credentials,
//! TTL, cache file), the call into `ops::capacity::report`, and the text and JSON forms.

use crate::ops::capacity::{self, BoshConfig, CfConfig, DashboardData, Settings};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Where the capacity data comes from: the CF API and the Director, with their
/// credentials (flags or the environment). `anvil capacity`, `anvil serve` and
/// `anvil broker` share them.
#[derive(Args, Debug, Clone)]
pub(super) struct CapacitySource {
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
    /// The first delay between the Director's retries (3 retries, doubling: 1s gives 1/2/4 s).
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    bosh_backoff: Duration,
}

impl CapacitySource {
    /// The service's settings with `ttl`; `None` without a CF API (capacity off).
    pub(super) fn settings(&self, ttl: Duration) -> Option<Settings> {
        let api_url = self.cf_api.clone().filter(|u| !u.trim().is_empty())?;
        let bosh = self
            .bosh_environment
            .clone()
            .filter(|e| !e.trim().is_empty())
            .map(|env| BoshConfig {
                url: crate::ops::capacity::normalize_bosh_url(&env),
                client: self.bosh_client.clone(),
                secret: self.bosh_client_secret.clone(),
                ca_cert: self.bosh_ca_cert.clone(),
            });
        let mut settings = Settings::new(
            CfConfig {
                api_url,
                username: self.cf_username.clone(),
                password: self.cf_password.clone(),
                ca_cert: self.cf_ca_cert.clone(),
            },
            bosh,
        );
        settings.ttl = ttl;
        settings.bosh_backoff = self.bosh_backoff;
        Some(settings)
    }
}

#[derive(Args, Debug)]
pub(super) struct CapacityArgs {
    #[command(flatten)]
    source: CapacitySource,
    /// How long an answer stays fresh in the cache.
    #[arg(long, default_value = "5m", value_parser = super::parse_duration)]
    ttl: Duration,
    /// Keep the last answer in this file; a run within --ttl of it reads the file
    /// instead of asking the APIs (metadata.cached is then true).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Print the dashboard as JSON (the /api/dashboard shape).
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(a: CapacityArgs) -> Result<i32> {
    let Some(settings) = a.source.settings(a.ttl) else {
        bail!("no CF API: give --cf-api URL or set CF_API (e.g. https://api.sys.example.com)");
    };
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
