//! Broker benchmark (issue 9, acceptance 6): `cargo bench --bench broker`.
//!
//! Starts `anvil sim bosh --task-duration 200ms`, `anvil sim vault` and `anvil broker`
//! (the bench-profile binary, local state in a scratch directory) on 127.0.0.1:0 with a
//! Foundation of one unlimited plan and no spec instances, then 100 clients each send one
//! provision (`PUT /v2/service_instances/:id?accepts_incomplete=true`) at the same moment,
//! each on the connection it opened for the catalog burst (3):
//! 1. accept latency: each request's time to its `202`, p50 / p99 / max (goal p99 < 20 ms);
//! 2. end-to-end: from the first request until every instance's `last_operation` says
//!    `succeeded` (polled every 20 ms), against the ideal 100 × 0.2 s / 5 = 4 s (the BOSH
//!    provider runs 5 tasks at once; goal ≤ 1.3×).
//! 3. the same burst of `GET /v2/catalog` (no store, no checks), sent first by the same
//!    clients on new connections (so it is 100 connects at once, too);
//! 4. accept latency without reqwest and tokio on the client side: after 2, 100 more
//!    provisions, each from its own OS thread on a fresh connection, timed from the
//!    connect to the response's last byte.
//! 5. accept latency from a lighter load generator: between 2 and 4, once the first 100
//!    are deployed, 100 more provisions from tokio tasks on plain sockets (no reqwest,
//!    no thread each), timed from the connect to the response's last byte; their
//!    deploys are awaited before 4.
//!
//! For each round, stderr says how long the provision burst took and how much CPU the
//! clients, the broker and the two simulators spent in it (`/proc/PID/task/*/schedstat`).
//! `ANVIL_BENCH_BROKER_LOG=FILE` appends the broker's debug log to FILE (its `broker
//! store written` lines time each group commit).
//!
//! Rounds default to 1; pass another count: `cargo bench --bench broker -- 3`.
//! Results go to stdout as Markdown rows for docs/benchmarks.md.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_anvil");
const CLIENTS: usize = 100;
const TASK: &str = "200ms";
const IDEAL_SECS: f64 = 100.0 * 0.2 / 5.0;
const USER: &str = "bench";
const PASSWORD: &str = "bench-secret";

const TEMPLATE: &str = "releases: [{name: redis, version: latest}]\nstemcells: [{alias: default, os: ubuntu-jammy, version: latest}]\ninstance_groups:\n- name: redis\n  instances: 1\n  vm_type: small\n  azs: [z1]\n  stemcell: default\n  networks: [{name: services}]\n  jobs: [{name: redis, release: redis, properties: {port: ${params.port}}}]\n";

const FOUNDATION: &str = "apiVersion: anvil/v1\nkind: Foundation\nmetadata: { name: bench }\ncatalog:\n  services:\n    - id: redis\n      name: redis\n      bindable: true\n      plans:\n        - id: redis-small\n          name: small\n          manifest: small.yml.tmpl\n          parameters: { port: 6379 }\ninstances: []\n";

/// A child process and the URL it printed first; killed when dropped.
struct Proc(Child, String);

impl Proc {
    fn start(cmd: &mut Command, prefix: &str) -> Proc {
        Proc::start_logged(cmd, prefix, None)
    }

    /// Like `start`, with the process's stderr appended to `log` when given.
    fn start_logged(cmd: &mut Command, prefix: &str, log: Option<&str>) -> Proc {
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap_or_else(|e| panic!("open {path}: {e}")),
            ),
            None => Stdio::null(),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start anvil");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        std::thread::spawn(move || for _ in lines {});
        let url = line
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Proc(child, url)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The time every thread of process `pid` has spent on a CPU so far
/// (`/proc/PID/task/*/schedstat`, nanoseconds; zero when unreadable).
fn on_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank: the smallest sample with at least p of them at or below it.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn round(round: usize) {
    let bosh = Proc::start(
        Command::new(BIN).args([
            "sim",
            "bosh",
            "--listen",
            "127.0.0.1:0",
            "--task-duration",
            TASK,
        ]),
        "anvil sim bosh listening on ",
    );
    let vault = Proc::start(
        Command::new(BIN).args(["sim", "vault", "--listen", "127.0.0.1:0", "--token", "root"]),
        "anvil sim vault listening on ",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("foundation.yaml"), FOUNDATION).expect("write");
    std::fs::write(dir.path().join("small.yml.tmpl"), TEMPLATE).expect("write");
    let state = dir.path().join("state/bench.json");
    // `ANVIL_BENCH_BROKER_LOG=FILE`: the broker's debug log (its `broker store written`
    // lines time each group commit) is appended to FILE.
    let log = std::env::var("ANVIL_BENCH_BROKER_LOG").ok();
    let broker = Proc::start_logged(
        Command::new(BIN)
            .args(["broker", "--foundation"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--state"])
            .arg(&state)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("BOSH_ENVIRONMENT", &bosh.1)
            .env("BOSH_CLIENT", "admin")
            .env("BOSH_CLIENT_SECRET", "admin")
            .env_remove("BOSH_CA_CERT")
            .env("VAULT_ADDR", &vault.1)
            .env("VAULT_TOKEN", "root")
            .env("ANVIL_BROKER_USERNAME", USER)
            .env("ANVIL_BROKER_PASSWORD", PASSWORD)
            .envs(log.as_ref().map(|_| ("ANVIL_LOG", "anvil=debug"))),
        "anvil broker listening on ",
        log.as_deref(),
    );
    let url = broker.1.clone();
    // One connection pool per client, as 100 platform workers would have. Each opens
    // its connection in the catalog burst (as a platform reads the catalog before it
    // provisions) and keeps it (HTTP/1.1 keep-alive) for its provision.
    let clients: Vec<reqwest::Client> = (0..CLIENTS).map(|_| reqwest::Client::new()).collect();
    let floor = catalog_burst(&url, &clients).await;
    let ids: Vec<String> = (0..CLIENTS)
        .map(|i| format!("00000000-0000-4000-8000-{round:04x}{i:08x}"))
        .collect();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut tasks = Vec::new();
    for (id, client) in ids.iter().zip(&clients) {
        let req = client
            .put(format!(
                "{url}/v2/service_instances/{id}?accepts_incomplete=true"
            ))
            .basic_auth(USER, Some(PASSWORD))
            .header("X-Broker-API-Version", "2.17")
            .json(&serde_json::json!({
                "service_id": "redis",
                "plan_id": "redis-small",
                "organization_guid": "org",
                "space_guid": "space",
            }));
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            let resp = req.send().await.expect("provision request");
            let took = t.elapsed();
            assert_eq!(
                resp.status().as_u16(),
                202,
                "provision: {:?}",
                resp.text().await
            );
            took
        }));
    }
    let pids = [
        ("clients", std::process::id()),
        ("broker", broker.0.id()),
        ("bosh sim", bosh.0.id()),
        ("vault sim", vault.0.id()),
    ];
    let cpu_before: Vec<Duration> = pids.iter().map(|(_, p)| on_cpu(*p)).collect();
    let start = Instant::now();
    let lat = release(&barrier, tasks).await;
    let burst = start.elapsed();
    let spent: Vec<String> = pids
        .iter()
        .zip(&cpu_before)
        .map(|((name, p), before)| {
            format!("{name} {:.1} ms", ms(on_cpu(*p).saturating_sub(*before)))
        })
        .collect();
    eprintln!(
        "round {round}: the provision burst took {:.1} ms; CPU in it: {}",
        ms(burst),
        spent.join(", ")
    );
    wait_succeeded(&url, &ids).await;
    let e2e = start.elapsed().as_secs_f64();
    let (raw, raw_ids) = raw_provision_burst(&url, round).await;
    wait_succeeded(&url, &raw_ids).await;
    let lean = lean_provision_burst(&url, round);
    println!(
        "| {round} | {:.1} | {:.1} | {:.1} | {e2e:.2} | {:.2}× | {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} |",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(lat[lat.len() - 1]),
        e2e / IDEAL_SECS,
        ms(percentile(&floor, 0.50)),
        ms(percentile(&floor, 0.99)),
        ms(percentile(&lean, 0.50)),
        ms(percentile(&lean, 0.99)),
        ms(lean[lean.len() - 1]),
        ms(percentile(&raw, 0.50)),
        ms(percentile(&raw, 0.99)),
        ms(raw[raw.len() - 1]),
    );
}

/// Polls each instance's `last_operation` every 20 ms until all say `succeeded`.
async fn wait_succeeded(url: &str, ids: &[String]) {
    let poller = reqwest::Client::new();
    let mut pending: Vec<String> = ids.to_vec();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let body: serde_json::Value = poller
                .get(format!("{url}/v2/service_instances/{id}/last_operation"))
                .basic_auth(USER, Some(PASSWORD))
                .header("X-Broker-API-Version", "2.17")
                .send()
                .await
                .expect("last_operation")
                .json()
                .await
                .expect("last_operation body");
            match body["state"].as_str() {
                Some("succeeded") => {}
                Some("in progress") => still.push(id),
                _ => panic!("instance {id} failed: {body}"),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The accept latency without reqwest and tokio on the client side: 100 more provisions
/// (new ids), each from its own OS thread released by one barrier, each on a fresh
/// connection: connect, write the request, read the response to its last byte, all
/// timed. Sorted latencies.
fn lean_provision_burst(url: &str, round: usize) -> Vec<Duration> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").to_string();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let id = format!("00000000-0000-4000-9000-{round:04x}{i:08x}");
            let request = raw_provision_request(&addr, &id);
            let addr = addr.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
                conn.set_nodelay(true).expect("nodelay");
                conn.write_all(request.as_bytes()).expect("write request");
                // `Connection: close`: the response ends when the broker closes.
                let mut response = Vec::new();
                conn.read_to_end(&mut response).expect("read response");
                let took = t.elapsed();
                let text = String::from_utf8_lossy(&response);
                assert!(text.starts_with("HTTP/1.1 202"), "provision: {text}");
                took
            })
        })
        .collect();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    lat.sort();
    lat
}

/// The accept latency with a load generator that costs little CPU: once the first 100
/// instances are deployed (the broker idle again), 100 more provisions (new ids) from
/// 100 tokio tasks on plain `TcpStream`s (no reqwest, no hyper, no OS thread each),
/// released together; each timed from its connect to the response's last byte. On 2
/// cores shared with the broker, the reqwest clients above take about half the CPU of a
/// burst; this shows the broker's latency with less of its CPU taken by its clients.
/// Sorted latencies, and the ids (to wait for their deploys).
async fn raw_provision_burst(url: &str, round: usize) -> (Vec<Duration>, Vec<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").to_string();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let id = format!("00000000-0000-4000-a000-{round:04x}{i:08x}");
        let request = raw_provision_request(&addr, &id);
        ids.push(id);
        let addr = addr.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            let mut conn = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            conn.set_nodelay(true).expect("nodelay");
            conn.write_all(request.as_bytes())
                .await
                .expect("write request");
            // `Connection: close`: the response ends when the broker closes.
            let mut response = Vec::new();
            conn.read_to_end(&mut response)
                .await
                .expect("read response");
            let took = t.elapsed();
            let text = String::from_utf8_lossy(&response);
            assert!(text.starts_with("HTTP/1.1 202"), "provision: {text}");
            took
        }));
    }
    (release(&barrier, tasks).await, ids)
}

/// The bytes of one async provision of instance `id` to the broker at `addr`
/// (`HOST:PORT`), for the raw-socket bursts: HTTP/1.1 with `Connection: close`, so the
/// response ends when the broker closes the connection.
fn raw_provision_request(addr: &str, id: &str) -> String {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let body = serde_json::json!({
        "service_id": "redis",
        "plan_id": "redis-small",
        "organization_guid": "org",
        "space_guid": "space",
    })
    .to_string();
    format!(
        "PUT /v2/service_instances/{id}?accepts_incomplete=true HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nX-Broker-API-Version: 2.17\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The same burst of `GET /v2/catalog` (reads nothing, writes nothing) from `clients`,
/// each on a new connection that its pool keeps for the provision; sorted latencies.
async fn catalog_burst(url: &str, clients: &[reqwest::Client]) -> Vec<Duration> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut tasks = Vec::new();
    for client in clients {
        let req = client
            .get(format!("{url}/v2/catalog"))
            .basic_auth(USER, Some(PASSWORD))
            .header("X-Broker-API-Version", "2.17");
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            let resp = req.send().await.expect("catalog request");
            let took = t.elapsed();
            assert_eq!(resp.status().as_u16(), 200);
            took
        }));
    }
    release(&barrier, tasks).await
}

/// Releases a burst (the clients wait on `barrier`, whose last party is this caller)
/// and returns each client's latency, sorted.
async fn release(
    barrier: &tokio::sync::Barrier,
    tasks: Vec<tokio::task::JoinHandle<Duration>>,
) -> Vec<Duration> {
    barrier.wait().await;
    let mut lat = Vec::with_capacity(tasks.len());
    for t in tasks {
        lat.push(t.await.expect("client"));
    }
    lat.sort();
    lat
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("broker: a benchmark; run it with `cargo bench --bench broker`");
        return;
    }
    let rounds = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "| round | accept p50 (ms) | accept p99 (ms) | accept max (ms) | 100 instances end-to-end (s) | vs ideal {IDEAL_SECS:.0} s | catalog burst p50 / p99 (ms) | lean-client accept p50 / p99 / max (ms) | raw async client accept p50 / p99 / max (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in 1..=rounds {
        rt.block_on(round(r));
    }
}
