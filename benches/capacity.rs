//! Capacity service benchmark (issue 12, acceptance 5): `cargo bench --no-default-features
//! --bench capacity`. `anvil sim cf` generates 20,000 apps (one web process each, over 4
//! isolation segments), `anvil sim bosh` holds 2,000 Diego cells (4 deployments of 500
//! `diego_cell` VMs with a cloud config), and `anvil serve --no-workers --cf-api …
//! --bosh-environment …` answers `/api/dashboard`:
//!
//! 1. cold fetch: the server with `--capacity-ttl 0s`, so every request fetches both
//!    APIs (CF pages, 20,000 process stats, the Director's VMs) — 3 requests, each timed
//!    to the last byte of the body;
//! 2. cached: the server with a 1 h TTL, one warm-up request, then `CACHED` sequential
//!    requests over one keep-alive connection, p50 / p99 / max to the last byte (goal
//!    p99 < 5 ms).
//!
//! Results go to stdout as Markdown rows for docs/benchmarks.md.

#[path = "../tests/serve_support/mod.rs"]
mod serve_support;
#[path = "../tests/sim_bosh_support/mod.rs"]
mod sim_bosh_support;
#[path = "../tests/sim_cf_support/mod.rs"]
mod sim_cf_support;

use serde_json::{json, Value};
use serve_support::{Serve, TOKEN};
use sim_bosh_support::BoshSim;
use sim_cf_support::{CfSim, CLOUD_CONFIG};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_anvil");
const APPS: usize = 20_000;
const DEPLOYMENTS: usize = 4;
const CELLS_PER_DEPLOYMENT: usize = 500;
const CACHED: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank: the smallest sample with at least p of them at or below it.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One GET of `/api/dashboard`, timed to the last byte; the body.
async fn fetch(client: &reqwest::Client, url: &str) -> (Duration, usize, Value) {
    let t = Instant::now();
    let resp = client
        .get(format!("{url}/api/dashboard"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /api/dashboard");
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.expect("body");
    let took = t.elapsed();
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    (took, body.len(), v)
}

fn serve(dir: &std::path::Path, cf: &str, bosh: &str, ttl: &str) -> Serve {
    Serve::start_with(
        BIN,
        &dir.join(format!("data-{ttl}")),
        &[
            "--no-workers",
            "--cf-api",
            cf,
            "--cf-password",
            "admin",
            "--bosh-environment",
            bosh,
            "--bosh-client-secret",
            "admin",
            "--capacity-ttl",
            ttl,
        ],
        &dir.join(format!("serve-{ttl}.log")),
        |c| {
            c.env_remove("CF_API")
                .env_remove("BOSH_CA_CERT")
                .env("ANVIL_LOG", "warn");
        },
    )
}

fn main() {
    // `cargo test` runs benches with no arguments; `cargo bench` passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let cf = CfSim::start(&["--apps", &APPS.to_string(), "--segments", "4"]);
    let bosh = BoshSim::start(&[], None);
    bosh.post_json(
        "/configs",
        &json!({"type": "cloud", "name": "default", "content": CLOUD_CONFIG}),
    );
    for d in 0..DEPLOYMENTS {
        bosh.deploy(&format!(
            "name: cf-{d}\ninstance_groups:\n- {{name: diego_cell, instances: {CELLS_PER_DEPLOYMENT}, vm_type: cell, azs: [z1], networks: [{{name: default}}], jobs: [{{name: rep}}]}}\n"
        ));
    }
    eprintln!("simulators seeded in {:.1} s", t.elapsed().as_secs_f64());

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client");

    let cold = serve(dir.path(), &cf.url, &bosh.url, "0s");
    let mut colds = Vec::new();
    for _ in 0..3 {
        let (took, len, v) = rt.block_on(fetch(&client, &cold.url));
        assert_eq!(v["metadata"]["cached"], false);
        assert_eq!(v["metadata"]["bosh_available"], true, "{}", cold.logs());
        assert_eq!(
            v["cells"].as_array().map(Vec::len),
            Some(DEPLOYMENTS * CELLS_PER_DEPLOYMENT)
        );
        assert_eq!(v["apps"].as_array().map(Vec::len), Some(APPS));
        eprintln!("cold fetch: {:.0} ms, {} bytes", ms(took), len);
        colds.push(took);
    }
    drop(cold);
    colds.sort();

    let warm = serve(dir.path(), &cf.url, &bosh.url, "1h");
    let (first, len, _) = rt.block_on(fetch(&client, &warm.url));
    let mut samples = Vec::with_capacity(CACHED);
    let mut cached_len = 0;
    rt.block_on(async {
        for _ in 0..CACHED {
            let (took, n, v) = fetch(&client, &warm.url).await;
            assert_eq!(v["metadata"]["cached"], true);
            samples.push(took);
            cached_len = n;
        }
    });
    samples.sort();
    // The same cached answer through a lean client, as curl to /dev/null would take it:
    // one kept-alive connection, the body read into a reused buffer. The reqwest client
    // above collects each body into a fresh 3.6 MB buffer and parses it, which the server
    // does not pay for.
    let mut lean = Vec::with_capacity(CACHED);
    {
        let host = warm.url.trim_start_matches("http://").to_string();
        let mut conn = std::net::TcpStream::connect(&host).expect("connect");
        conn.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; 2 * len + 64 * 1024];
        let mut body_len = 0;
        for i in 0..=CACHED {
            let (took, n) = raw_get(&mut conn, &host, &mut buf);
            // The first round trip warms the connection, as reqwest's did.
            if i > 0 {
                lean.push(took);
            }
            body_len = n;
        }
        assert_eq!(
            body_len, cached_len,
            "the lean client read another body length"
        );
    }
    lean.sort();
    println!(
        "| `/api/dashboard`, {} cells, {APPS} apps ({} KiB) | cold fetch (TTL 0) min / median / max {:.0} / {:.0} / {:.0} ms (first on the 1 h server {:.0} ms) | cached × {CACHED}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 < 5 ms) |",
        DEPLOYMENTS * CELLS_PER_DEPLOYMENT,
        len / 1024,
        ms(colds[0]),
        ms(colds[1]),
        ms(colds[2]),
        ms(first),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().expect("samples")),
    );
    println!(
        "| same, lean client (one kept-alive connection, body into a reused buffer) | | cached × {CACHED}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 < 5 ms) |",
        ms(percentile(&lean, 0.50)),
        ms(percentile(&lean, 0.99)),
        ms(*lean.last().expect("samples")),
    );
}

/// `GET /api/dashboard` over `conn` (HTTP/1.1, kept alive), the response read into
/// `buf`; the time from the request's first byte to the body's last, and the body's
/// length. Panics unless the answer is a 200 with a Content-Length that fits `buf`.
fn raw_get(conn: &mut std::net::TcpStream, host: &str, buf: &mut [u8]) -> (Duration, usize) {
    use std::io::{Read, Write};
    let req = format!(
        "GET /api/dashboard HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let t = Instant::now();
    conn.write_all(req.as_bytes()).expect("write request");
    let mut filled = 0;
    let (head_end, body_len) = loop {
        let n = conn.read(&mut buf[filled..]).expect("read response");
        assert!(n > 0, "the server closed the connection");
        filled += n;
        if let Some(at) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..at]).expect("ASCII head");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let body_len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or_else(|| panic!("no Content-Length in {head}"));
            break (at + 4, body_len);
        }
    };
    let end = head_end + body_len;
    assert!(
        end <= buf.len(),
        "a {body_len}-byte body does not fit the buffer"
    );
    while filled < end {
        let n = conn.read(&mut buf[filled..end]).expect("read body");
        assert!(n > 0, "the server closed the connection mid-body");
        filled += n;
    }
    let took = t.elapsed();
    assert_eq!(buf[head_end], b'{', "the body is not a JSON object");
    (took, body_len)
}
