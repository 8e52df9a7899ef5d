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

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_anvil");

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
    let start = Instant::now();
    let child = Command::new(BIN)
        .args(args)
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
        let mut child = Command::new(BIN)
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
