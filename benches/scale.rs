//! Scale benchmark of the core engine: `cargo bench --bench scale [-- N...]`.
//!
//! For N null resources in a binary tree of `depends_on` it times, with the release
//! binary and local state in a scratch directory: validate, plan against empty state,
//! apply from empty, and a no-op plan against the full state, each with its peak RSS.
//! It also times the pathological bad inputs (alias bomb, 100k-deep nesting, garbage).
//! Results go to stdout as a Markdown table for docs/benchmarks.md.
//!
//! The drift case (`cargo bench --bench scale -- drift [N]`, N default 10,000; also run
//! after the core sizes when no word is given) starts `anvil sim vault` on loopback,
//! applies N `vault_secret`s, and times `anvil drift` with nothing changed and again
//! after 1 % of the secrets were rewritten behind anvil's back.
//!
//! `cargo bench --bench scale -- vault [N]` runs only the Vault state backend case (issue
//! 8): N null resources (default 10,000) applied with `--state vault://…` into `anvil sim
//! vault`, then a no-op plan against that state.
//!
//! `cargo bench --bench scale -- postgres [N]` (N default 10,000) starts a throwaway
//! PostgreSQL cluster (tests/pg_support) and times apply from empty and a no-op plan with
//! `--state postgres://…`.
//!
//! `cargo bench --bench scale -- compare OLD_BIN` times the file backend's 10k apply and
//! 100k no-op plan with OLD_BIN and with this build, alternately in one run, for a
//! before/after table.
//!
//! `ANVIL_BENCH_BIN=PATH` runs another anvil binary instead of this build's.
//!
//! `cargo bench --bench scale -- reconcile [N]` runs only the reconciler case (issue 4):
//! N deployments (default 10,000) seeded into `anvil sim bosh` over its HTTP API, then
//! `anvil reconcile` against it and `anvil sim vault`, timed with an empty `db` index
//! (a full rebuild) and again with the index in place.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../tests/pg_support/mod.rs"]
mod pg_support;

const BUILT: &str = env!("CARGO_BIN_EXE_anvil");

thread_local! {
    /// The binary `measure` runs: this build's, `ANVIL_BENCH_BIN`, or a `compare` side.
    static BIN: std::cell::RefCell<String> = std::cell::RefCell::new(
        std::env::var("ANVIL_BENCH_BIN").unwrap_or_else(|_| BUILT.to_string()),
    );
}

fn bin() -> String {
    BIN.with(|b| b.borrow().clone())
}

fn tree_spec(n: usize) -> String {
    let mut s = String::with_capacity(n * 120);
    s.push_str("apiVersion: anvil/v1\nkind: Resources\nmetadata:\n  name: bench\nresources:\n");
    for i in 0..n {
        s.push_str(&format!("  - type: null_resource\n    name: r{i}\n"));
        if i > 0 {
            s.push_str(&format!(
                "    depends_on: [null_resource.r{}]\n",
                (i - 1) / 2
            ));
        }
        s.push_str(&format!(
            "    attributes:\n      triggers:\n        n: \"{i}\"\n"
        ));
    }
    s
}

/// Runs anvil to completion; returns wall time, peak RSS in MiB and the exit code.
fn measure(dir: &Path, args: &[&str]) -> (Duration, f64, i32) {
    measure_with(dir, args, &[])
}

/// [`measure`] with extra environment variables.
fn measure_with(dir: &Path, args: &[&str], envs: &[(&str, String)]) -> (Duration, f64, i32) {
    let start = Instant::now();
    let child = Command::new(bin())
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn anvil");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call with valid pointers to locals; `child` is not waited on elsewhere.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let elapsed = start.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    std::mem::forget(child);
    (elapsed, usage.ru_maxrss as f64 / 1024.0, code)
}

/// A running `anvil sim vault`; killed on drop.
struct VaultSim {
    child: std::process::Child,
    addr: String,
}

impl VaultSim {
    fn start() -> VaultSim {
        use std::io::BufRead;
        let mut child = Command::new(bin())
            .args(["sim", "vault", "--listen", "127.0.0.1:0", "--token", "root"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start anvil sim vault");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        std::thread::spawn(move || for _ in lines {});
        let addr = line
            .strip_prefix("anvil sim vault listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        VaultSim { child, addr }
    }

    /// `POST /v1/secret/data/PATH` over a plain socket.
    fn write(&self, path: &str, body: &str) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.addr).expect("connect");
        let req = format!(
            "POST /v1/secret/data/{path} HTTP/1.1\r\nHost: {}\r\nX-Vault-Token: root\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(req.as_bytes()).expect("write");
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
}

impl Drop for VaultSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `anvil drift` over N vault secrets in the Vault simulator.
fn drift_bench(n: usize) {
    let sim = VaultSim::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = String::with_capacity(n * 120);
    spec.push_str(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata:\n  name: driftbench\nresources:\n",
    );
    for i in 0..n {
        spec.push_str(&format!(
            "  - type: vault_secret\n    name: s{i}\n    attributes:\n      path: bench/s{i}\n      data: {{v: \"{i}\"}}\n"
        ));
    }
    std::fs::write(dir.path().join("spec.yaml"), spec).expect("write spec");
    std::env::set_var("VAULT_ADDR", format!("http://{}", sim.addr));
    std::env::set_var("VAULT_TOKEN", "root");
    println!("\n| N vault_secret (anvil sim vault) | step | wall time (s) | peak RSS (MiB) |");
    println!("|---:|---|---:|---:|");
    let step = |name: &str, argv: &[&str], want: i32| {
        let (t, rss, code) = measure(dir.path(), argv);
        assert_eq!(code, want, "{name} at N={n} exited {code}");
        println!("| {n} | {name} | {:.2} | {rss:.0} |", t.as_secs_f64());
    };
    step(
        "apply from empty",
        &["apply", "--auto-approve", "spec.yaml"],
        0,
    );
    step("drift, nothing changed", &["drift", "spec.yaml"], 0);
    for i in (0..n).step_by(100) {
        sim.write(&format!("bench/s{i}"), r#"{"data":{"v":"changed"}}"#);
    }
    step("drift, 1 % changed outside", &["drift", "spec.yaml"], 2);
    step(
        "drift --json, 1 % changed outside",
        &["drift", "--json", "spec.yaml"],
        2,
    );
    step(
        "drift --parallelism 50, 1 % changed",
        &["drift", "--parallelism", "50", "spec.yaml"],
        2,
    );
}

/// The `vault://` state backend (issue 8): N null resources applied with their state in
/// `anvil sim vault`, then a no-op plan against that state.
fn vault_state_bench(n: usize) {
    let sim = VaultSim::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("spec.yaml"), tree_spec(n)).expect("write spec");
    let envs = [
        ("ANVIL_STATE", "vault://secret/anvil/state".to_string()),
        ("VAULT_ADDR", format!("http://{}", sim.addr)),
        ("VAULT_TOKEN", "root".to_string()),
    ];
    println!("\n| N (state in anvil sim vault) | step | wall time (s) | peak RSS (MiB) |");
    println!("|---:|---|---:|---:|");
    let step = |name: &str, argv: &[&str]| {
        let (t, rss, code) = measure_with(dir.path(), argv, &envs);
        assert_eq!(code, 0, "{name} at N={n} exited {code}");
        println!("| {n} | {name} | {:.2} | {rss:.0} |", t.as_secs_f64());
    };
    step(
        "apply from empty",
        &["apply", "--auto-approve", "spec.yaml"],
    );
    step(
        "no-op plan, full state",
        &["plan", "--detailed-exitcode", "spec.yaml"],
    );
}

/// apply from empty and a no-op plan of N null resources with state in PostgreSQL.
fn postgres_bench(n: usize) {
    let pg = pg_support::PgCluster::start();
    pg.create_db("bench");
    let url = pg.url("bench");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("spec.yaml"), tree_spec(n)).expect("write spec");
    println!("| N (state in PostgreSQL) | step | wall time (s) | peak RSS (MiB) |");
    println!("|---:|---|---:|---:|");
    let steps: [(&str, &[&str], i32); 2] = [
        (
            "apply from empty",
            &["apply", "--state", &url, "--auto-approve", "spec.yaml"],
            0,
        ),
        (
            "no-op plan, full state",
            &["plan", "--state", &url, "--detailed-exitcode", "spec.yaml"],
            0,
        ),
    ];
    for (name, argv, want) in steps {
        let (t, rss, code) = measure(dir.path(), argv);
        assert_eq!(code, want, "{name} at N={n} exited {code}");
        println!("| {n} | {name} | {:.2} | {rss:.0} |", t.as_secs_f64());
    }
}

/// The file backend before and after: 10k apply and 100k no-op plan, old and new binary
/// alternately (so both see the same machine load), five rounds, then the medians. The
/// 10k apply waits on ~2,400 `fdatasync`s, so single runs vary by ±30 % with the disk;
/// compare medians, not rounds.
fn compare_bench(old: &str) {
    const ROUNDS: usize = 5;
    println!("| binary | N | step | wall time (s) | peak RSS (MiB) |");
    println!("|---|---:|---|---:|---:|");
    // (side, step) → times
    let mut times: std::collections::BTreeMap<(&str, &str), Vec<f64>> = Default::default();
    for round in 0..ROUNDS {
        for (label, path) in [("old", old.to_string()), ("new", BUILT.to_string())] {
            BIN.with(|b| *b.borrow_mut() = path.clone());
            for n in [10_000, 100_000] {
                let dir = tempfile::tempdir().expect("tempdir");
                std::fs::write(dir.path().join("spec.yaml"), tree_spec(n)).expect("write spec");
                let (t, rss, code) = measure(dir.path(), &["apply", "--auto-approve", "spec.yaml"]);
                assert_eq!(code, 0, "{label} apply at N={n} exited {code}");
                let (step, t, rss) = if n == 10_000 {
                    ("apply from empty", t, rss)
                } else {
                    let (t, rss, code) =
                        measure(dir.path(), &["plan", "--detailed-exitcode", "spec.yaml"]);
                    assert_eq!(code, 0, "{label} no-op plan at N={n} exited {code}");
                    ("no-op plan, full state", t, rss)
                };
                println!(
                    "| {label} (round {}) | {n} | {step} | {:.2} | {rss:.0} |",
                    round + 1,
                    t.as_secs_f64()
                );
                times
                    .entry((label, step))
                    .or_default()
                    .push(t.as_secs_f64());
            }
        }
    }
    for ((label, step), mut ts) in times {
        ts.sort_by(f64::total_cmp);
        println!(
            "median of {ROUNDS}: {label} {step}: {:.2} s",
            ts[ts.len() / 2]
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, and a test run must not spend minutes on a debug-build benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: a benchmark; run it with `cargo bench --bench scale`");
        return;
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if std::env::args().any(|a| a == "drift") {
        drift_bench(args.first().copied().unwrap_or(10_000));
        return;
    }
    if std::env::args().any(|a| a == "vault") {
        vault_state_bench(args.first().copied().unwrap_or(10_000));
        return;
    }
    if std::env::args().any(|a| a == "postgres") {
        postgres_bench(args.first().copied().unwrap_or(10_000));
        return;
    }
    if let Some(pos) = std::env::args().position(|a| a == "compare") {
        let old = std::env::args().nth(pos + 1).expect("compare OLD_BIN");
        compare_bench(&old);
        return;
    }
    if std::env::args().any(|a| a == "reconcile") {
        reconcile::bench(args.first().copied().unwrap_or(10_000));
        return;
    }
    let sizes = if args.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        args
    };
    println!("| N | step | wall time (s) | peak RSS (MiB) |");
    println!("|---:|---|---:|---:|");
    let mut apply_times = Vec::new();
    for n in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("spec.yaml"), tree_spec(n)).expect("write spec");
        let steps: [(&str, &[&str], i32); 4] = [
            ("validate", &["validate", "spec.yaml"], 0),
            (
                "plan, empty state",
                &["plan", "--detailed-exitcode", "spec.yaml"],
                2,
            ),
            (
                "apply from empty",
                &["apply", "--auto-approve", "spec.yaml"],
                0,
            ),
            (
                "no-op plan, full state",
                &["plan", "--detailed-exitcode", "spec.yaml"],
                0,
            ),
        ];
        for (name, argv, want) in steps {
            let (t, rss, code) = measure(dir.path(), argv);
            assert_eq!(code, want, "{name} at N={n} exited {code}");
            println!("| {n} | {name} | {:.2} | {rss:.0} |", t.as_secs_f64());
            if name == "apply from empty" {
                apply_times.push((n, t));
            }
        }
    }
    for w in apply_times.windows(2) {
        let ((n1, t1), (n2, t2)) = (w[0], w[1]);
        println!(
            "\napply t({n2})/t({n1}) = {:.2} (linear would be {:.0})",
            t2.as_secs_f64() / t1.as_secs_f64(),
            n2 as f64 / n1 as f64
        );
    }

    // Pathological inputs must fail fast.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bomb = String::from("apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: bomb}\nx0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        bomb.push_str(&format!(
            "x{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let deep = format!(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {{name: d}}\nresources: {}",
        "[".repeat(100_000)
    );
    let mut ragged =
        String::from("apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: r}\nx:\n");
    for i in 0..100_000 {
        ragged.push_str(&" ".repeat(i % 60 + 1));
        ragged.push_str("- \n");
    }
    let garbage: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    println!("\n| bad input | wall time (s) | exit |");
    println!("|---|---:|---:|");
    for (name, body) in [
        ("alias bomb (10^9 nodes)", bomb.into_bytes()),
        ("100k-deep nesting", deep.into_bytes()),
        ("1 MB binary garbage", garbage),
    ] {
        std::fs::write(dir.path().join("bad.yaml"), body).expect("write");
        let (t, _, code) = measure(dir.path(), &["validate", "bad.yaml"]);
        println!("| {name} | {:.3} | {code} |", t.as_secs_f64());
    }

    drift_bench(10_000);
}

mod reconcile {
    //! The reconciler case: seed the Director simulator, time `anvil reconcile`.

    use super::measure_with;
    use futures::StreamExt;
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    struct Sim(Child);

    impl Drop for Sim {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Starts `anvil sim ARGS --listen 127.0.0.1:0` and returns it with its URL.
    fn start(args: &[&str], prefix: &str) -> (Sim, String) {
        let mut child = Command::new(super::bin())
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start simulator");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        std::thread::spawn(move || for _ in lines {});
        let url = first
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        (Sim(child), url)
    }

    fn uuid(i: usize) -> String {
        format!("00000000-0000-4000-8000-{i:012}")
    }

    /// Deployment `i`: 80% named `{plan}-{uuid}`, 10% matched by metadata, 10% by releases.
    fn deployment(i: usize) -> (String, String) {
        let id = uuid(i);
        let (name, release, extra) = match i % 10 {
            8 => (
                format!("legacy-{i}"),
                "redis",
                format!("properties:\n  blacksmith: {{service_id: redis, plan_id: redis-cluster, instance_id: {id}}}\n"),
            ),
            9 => (format!("pg-import-{id}"), "postgres", String::new()),
            k => {
                let plan = ["redis-small", "redis-cluster", "postgresql-standard"][k % 3];
                let release = if plan.starts_with("redis") { "redis" } else { "postgres" };
                (format!("{plan}-{id}"), release, String::new())
            }
        };
        let manifest = format!(
            "name: {name}\nreleases:\n- {{name: {release}, version: latest}}\nstemcells:\n- {{alias: default, os: ubuntu-jammy, version: latest}}\ninstance_groups:\n- name: main\n  instances: 1\n  vm_type: small\n  azs: [z1]\n  stemcell: default\n  networks: [{{name: services}}]\n  jobs:\n  - {{name: {release}, release: {release}}}\n{extra}"
        );
        (name, manifest)
    }

    async fn seed(url: &str, n: usize) {
        // The 302 to the task is the answer; do not follow it.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        let posts = futures::stream::iter((0..n).map(|i| {
            let http = http.clone();
            async move {
                let (_, manifest) = deployment(i);
                let r = http
                    .post(format!("{url}/deployments"))
                    .basic_auth("admin", Some("admin"))
                    .header("Content-Type", "text/yaml")
                    .body(manifest)
                    .send()
                    .await
                    .expect("POST /deployments");
                assert!(r.status().is_redirection(), "deploy {i}: {}", r.status());
            }
        }))
        .buffer_unordered(32);
        posts.collect::<Vec<()>>().await;
        // Tasks end on their own; wait until every deployment exists.
        loop {
            let list: serde_json::Value = http
                .get(format!("{url}/deployments"))
                .basic_auth("admin", Some("admin"))
                .send()
                .await
                .expect("GET /deployments")
                .json()
                .await
                .expect("JSON");
            if list.as_array().map_or(0, Vec::len) >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    fn copy_dir(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).expect("mkdir");
        for e in std::fs::read_dir(src).expect("read_dir") {
            let e = e.expect("entry");
            let to = dst.join(e.file_name());
            if e.file_type().expect("type").is_dir() {
                copy_dir(&e.path(), &to);
            } else {
                std::fs::copy(e.path(), to).expect("copy");
            }
        }
    }

    pub fn bench(n: usize) {
        let (_bosh, bosh_url) = start(&["sim", "bosh"], "anvil sim bosh listening on ");
        let (_vault, vault_url) = start(
            &["sim", "vault", "--token", "root"],
            "anvil sim vault listening on ",
        );
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let t = Instant::now();
        rt.block_on(seed(&bosh_url, n));
        let seeded = t.elapsed();
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/foundation"),
            &dir.path().join("foundation"),
        );
        let envs = [
            ("BOSH_ENVIRONMENT", bosh_url.clone()),
            ("BOSH_CLIENT", "admin".to_string()),
            ("BOSH_CLIENT_SECRET", "admin".to_string()),
            ("VAULT_ADDR", vault_url.clone()),
            ("VAULT_TOKEN", "root".to_string()),
        ];
        println!("seeded {n} deployments in {:.2}s\n", seeded.as_secs_f64());
        println!("| N | step | wall time (s) | peak RSS (MiB) |");
        println!("|---:|---|---:|---:|");
        for step in ["reconcile, empty index", "reconcile, index in place"] {
            let (t, rss, code) = measure_with(
                dir.path(),
                &["reconcile", "--foundation", "foundation"],
                &envs,
            );
            assert_eq!(code, 0, "{step} exited {code}");
            println!("| {n} | {step} | {:.2} | {rss:.0} |", t.as_secs_f64());
        }
    }
}
