//! Scale benchmark of the core engine: `cargo bench --bench scale [-- N...]`.
//!
//! For N null resources in a binary tree of `depends_on` it times, with the release
//! binary and local state in a scratch directory: validate, plan against empty state,
//! apply from empty, and a no-op plan against the full state, each with its peak RSS.
//! It also times the pathological bad inputs (alias bomb, 100k-deep nesting, garbage).
//! Results go to stdout as a Markdown table for docs/benchmarks.md.

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
}
