//! Flags of `anvil sim bosh` and the call into `sim::bosh::serve`.

use crate::sim::bosh::{self, AuthMode, Faults, ServeOptions, SimConfig, TlsSource};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Auth {
    Basic,
    Uaa,
}

#[derive(Args, Debug)]
pub(super) struct BoshArgs {
    /// Address to listen on (port 0 picks a free port; the line printed names it).
    #[arg(long, default_value = "127.0.0.1:25555")]
    listen: SocketAddr,
    /// How clients authenticate: HTTP basic, or UAA bearer tokens from /uaa/oauth/token.
    #[arg(long, value_enum, default_value = "basic")]
    auth: Auth,
    /// Basic-auth user name.
    #[arg(long, default_value = "admin")]
    username: String,
    /// Basic-auth password.
    #[arg(long, default_value = "admin")]
    password: String,
    /// UAA client id (client credentials grant).
    #[arg(long, default_value = "admin")]
    client: String,
    /// UAA client secret.
    #[arg(long, default_value = "admin")]
    client_secret: String,
    /// Lifetime of UAA tokens (e.g. 600s, 2s).
    #[arg(long, default_value = "600s", value_parser = super::parse_duration)]
    token_ttl: Duration,
    /// Serve HTTPS with a freshly generated CA and certificate.
    #[arg(long)]
    tls: bool,
    /// Serve HTTPS with this certificate (chain) PEM file (needs --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The private key PEM file of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Write the CA certificate PEM here before announcing the address.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// How long each task stays `processing` (e.g. 0s, 500ms, 5s).
    #[arg(long, default_value = "0s", value_parser = super::parse_duration)]
    task_duration: Duration,
    /// Extra delay before every answer outside /_sim/ (e.g. 200ms).
    #[arg(long, default_value = "0s", value_parser = super::parse_duration)]
    latency: Duration,
    /// Probability (0..1) that any request outside /_sim/ gets a simulated 500.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Probability (0..1) that a deploy or delete task ends in `error`.
    #[arg(long, default_value_t = 0.0)]
    fail_tasks: f64,
    /// Seed for reproducible faults.
    #[arg(long)]
    seed: Option<u64>,
}

/// Runs the simulator until SIGINT or SIGTERM.
pub(super) async fn run(a: BoshArgs) -> Result<i32> {
    if a.tls && a.cert.is_some() {
        bail!("--tls generates a certificate; --cert/--key use yours: give one or the other");
    }
    let tls = match (a.cert, a.key) {
        (Some(cert), Some(key)) => TlsSource::Files { cert, key },
        _ if a.tls => TlsSource::Generate,
        _ => TlsSource::Off,
    };
    let auth = match a.auth {
        Auth::Basic => AuthMode::Basic {
            username: a.username,
            password: a.password,
        },
        Auth::Uaa => AuthMode::Uaa {
            client: a.client,
            secret: a.client_secret,
        },
    };
    let opts = ServeOptions {
        listen: a.listen,
        tls,
        ca_out: a.ca_out,
        sim: SimConfig {
            auth,
            token_ttl: a.token_ttl,
            faults: Faults {
                fail_rate: a.fail_rate,
                fail_tasks: a.fail_tasks,
                task_duration_ms: u64::try_from(a.task_duration.as_millis()).unwrap_or(u64::MAX),
                latency_ms: u64::try_from(a.latency.as_millis()).unwrap_or(u64::MAX),
            },
            seed: a.seed,
            ..SimConfig::default()
        },
    };
    // Registered now, before the address line is printed, so a SIGTERM right after
    // it is a clean stop.
    let mut interrupts = super::Interrupts::register();
    bosh::serve(
        opts,
        |url| {
            println!("anvil sim bosh listening on {url}");
            let _ = std::io::stdout().flush();
        },
        async move { interrupts.next().await },
    )
    .await?;
    Ok(0)
}
