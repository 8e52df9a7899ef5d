//! `anvil serve` benchmark (issue 11, acceptance 6): `cargo bench --bench serve`.
//!
//! 1. API accept latency: `anvil serve --no-workers` (embedded file queue in a scratch
//!    directory; with `ANVIL_BENCH_DATABASE=postgres://…` also on PostgreSQL), 50
//!    concurrent clients each POST `WARM_ROUNDS` + `PER_CLIENT` distinct Environment
//!    documents one after the other; each measured request's time to its `201`, p50 /
//!    p99 / max (goal p99 < 20 ms), and the same for all of them.
//! 2. Throughput (only built with the `aws` feature; needs moto from `.venv/`): one
//!    environment applied alone by one worker gives the single-apply time T; then 100
//!    environments posted at once to a server with 4 workers, timed until every one is
//!    `ready`; against the ideal 100 × T / 4 (goal ≤ 1.2×).
//!
//! `ANVIL_BENCH_BIN=path/to/anvil` runs that binary instead of the one built with the
//! bench. moto's CPU time (`/proc/PID/stat`) is reported beside the throughput times:
//! moto serves one request at a time under the GIL, so no run is shorter than that.
//!
//! Results go to stdout as Markdown rows for docs/benchmarks.md.

#[path = "../tests/serve_support/mod.rs"]
mod serve_support;

#[cfg(feature = "aws")]
#[path = "../tests/moto_support/mod.rs"]
mod moto_support;

use serve_support::{environment_yaml, Serve, TOKEN};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_anvil");

/// The anvil binary to run: `ANVIL_BENCH_BIN` (a release binary at hand, when this bench
/// was built in the dev profile to save the release build's time), else the one built
/// with the bench.
fn bin() -> String {
    std::env::var("ANVIL_BENCH_BIN").unwrap_or_else(|_| BIN.to_string())
}
const CLIENTS: usize = 50;
const PER_CLIENT: usize = 20;
/// Requests each client sends before its measured ones (see `accept_latency`).
const WARM_ROUNDS: usize = 5;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank: the smallest sample with at least p of them at or below it.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

async fn post(client: &reqwest::Client, url: &str, name: &str) -> reqwest::Response {
    client
        .post(format!("{url}/api/v1/environments"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/yaml")
        .body(environment_yaml(name))
        .send()
        .await
        .expect("POST")
}

/// Part 1 against a running server; prints two rows: the steady state (each client's
/// requests after its first `WARM_ROUNDS`) and, for the record, every request of the
/// same run including that synchronised start.
async fn accept_latency(label: &str, url: &str) {
    let c = client();
    // Warm-up: the server's first requests (schema compilation, page cache, allocator).
    for i in 0..CLIENTS {
        let r = post(&c, url, &format!("warm-{i}")).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
    // Each client runs one closed loop: `WARM_ROUNDS` requests, then `PER_CLIENT`
    // measured ones. All clients start at the same instant, so their first requests
    // arrive as one burst of `CLIENTS` (and open the pool's other connections); a few
    // rounds later the requests are spread out as a steady stream of clients is.
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let c = c.clone();
            let url = url.to_string();
            tokio::spawn(async move {
                let mut took = Vec::with_capacity(WARM_ROUNDS + PER_CLIENT);
                for j in 0..WARM_ROUNDS + PER_CLIENT {
                    let t = Instant::now();
                    let r = post(&c, &url, &format!("env-{k}-{j}")).await;
                    let status = r.status();
                    let _ = r.bytes().await;
                    assert_eq!(status, 201);
                    took.push((t, t.elapsed()));
                }
                took
            })
        })
        .collect();
    let mut steady = Vec::new();
    let mut everything = Vec::new();
    let (mut first, mut last) = (None::<Instant>, started);
    for t in tasks {
        for (j, (at, took)) in t.await.expect("client task").into_iter().enumerate() {
            everything.push(took);
            if j >= WARM_ROUNDS {
                steady.push(took);
                first = Some(first.map_or(at, |f| f.min(at)));
                last = last.max(at + took);
            }
        }
    }
    let steady_wall = last - first.unwrap_or(started);
    let wall = started.elapsed();
    steady.sort();
    everything.sort();
    latency_row(
        &format!("accept latency, {label}, {CLIENTS} clients × {PER_CLIENT} POSTs after {WARM_ROUNDS} each"),
        &steady,
        steady_wall,
        "goal p99 < 20 ms",
    );
    latency_row(
        &format!(
            "(same run, all {} POSTs including the synchronised start)",
            everything.len()
        ),
        &everything,
        wall,
        "",
    );
}

/// Prints one Markdown row: p50 / p99 / max of `sorted` and its rate over `wall`.
fn latency_row(what: &str, sorted: &[Duration], wall: Duration, goal: &str) {
    println!(
        "| {what} | p50 {:.1} ms | p99 {:.1} ms | max {:.1} ms | {:.0} req/s | {goal} |",
        ms(percentile(sorted, 0.50)),
        ms(percentile(sorted, 0.99)),
        ms(*sorted.last().unwrap_or(&Duration::ZERO)),
        sorted.len() as f64 / wall.as_secs_f64()
    );
}

fn main() {
    // `cargo test` runs benches with no arguments; `cargo bench` passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Serve::start(
                &bin(),
                &dir.path().join("embedded"),
                &["--no-workers"],
                &dir.path().join("embedded.log"),
            );
            accept_latency("embedded (file queue)", &s.url).await;
        }
        match std::env::var("ANVIL_BENCH_DATABASE") {
            Ok(db) => {
                let s = Serve::start(
                    &bin(),
                    &dir.path().join("pg"),
                    &["--no-workers", "--database", &db],
                    &dir.path().join("pg.log"),
                );
                accept_latency("PostgreSQL", &s.url).await;
            }
            Err(_) => println!(
                "(PostgreSQL accept latency skipped: set ANVIL_BENCH_DATABASE=postgres://… to measure it)"
            ),
        }
        throughput(dir.path()).await;
    });
}

#[cfg(not(feature = "aws"))]
async fn throughput(_dir: &std::path::Path) {
    println!(
        "(100 environments / 4 workers skipped: built without the `aws` feature; run `cargo bench --bench serve` with default features and moto in .venv/)"
    );
}

/// Posts `names` and waits until every one is ready; returns the time taken.
#[cfg(feature = "aws")]
async fn provision_all(url: &str, names: &[String]) -> Duration {
    let c = client();
    let started = Instant::now();
    let mut ids = Vec::new();
    for n in names {
        let r = post(&c, url, n).await;
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.expect("json");
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    let limit = Duration::from_secs(3600);
    loop {
        // One list request a round (not one GET per environment), so polling does not
        // compete with the workers for the server's CPU.
        let page: serde_json::Value = c
            .get(format!("{url}/api/v1/environments?limit=200"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let mut ready = 0;
        for v in &items {
            if !ids.iter().any(|id| v["id"] == id.as_str()) {
                continue;
            }
            match v["status"].as_str() {
                Some("ready") => ready += 1,
                Some("failed") => panic!("environment {} failed: {v}", v["id"]),
                _ => {}
            }
        }
        if ready == ids.len() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not all ready within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(feature = "aws")]
async fn throughput(dir: &std::path::Path) {
    let moto = moto_support::Moto::start();
    // moto imports a service's code and builds a region's backend on its first request
    // (seconds here): done before the timing, so it is not in the single apply's T (it
    // would inflate the ideal the 100 are compared with).
    moto.warm_up();
    let before_one = moto.cpu_time();
    let one = {
        let s = Serve::start_with(
            &bin(),
            &dir.join("one"),
            &["--workers", "1"],
            &dir.join("one.log"),
            |c| {
                moto.apply_env(c);
            },
        );
        provision_all(&s.url, &["solo".to_string()]).await
    };
    let moto_one = busy(&moto, before_one);
    moto.reset();
    let names: Vec<String> = (0..100).map(|i| format!("tp-{i}")).collect();
    let before_all = moto.cpu_time();
    let total = {
        let s = Serve::start_with(
            &bin(),
            &dir.join("hundred"),
            &["--workers", "4"],
            &dir.join("hundred.log"),
            |c| {
                moto.apply_env(c);
            },
        );
        provision_all(&s.url, &names).await
    };
    let moto_all = busy(&moto, before_all);
    let ideal = one.as_secs_f64() * 100.0 / 4.0;
    println!(
        "| 100 environments, 4 workers, moto | one alone {:.1} s (moto busy {moto_one} s) | total {:.1} s (moto busy {moto_all} s) | ideal {:.1} s | {:.2}× | goal ≤ 1.2× |",
        one.as_secs_f64(),
        total.as_secs_f64(),
        ideal,
        total.as_secs_f64() / ideal
    );
}

/// moto's CPU time since `before`, in seconds (`?` when unreadable). moto serves one
/// request at a time under the GIL, so a run takes at least this long.
#[cfg(feature = "aws")]
fn busy(moto: &moto_support::Moto, before: Option<Duration>) -> String {
    moto.busy_since(before)
        .map_or_else(|| "?".to_string(), |d| format!("{:.1}", d.as_secs_f64()))
}
