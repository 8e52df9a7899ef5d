//! Foundation benchmark (issue 3): `cargo bench --bench foundation`.
//!
//! Starts `anvil sim bosh` and `anvil sim vault` on 127.0.0.1:0 and, with the release
//! binary and local state in a scratch directory, times:
//! 1. `apply` of 50 instances when every Director task takes 1 s, with the `bosh`
//!    provider's default limit of 5 tasks at once: the ideal is 50 / 5 × 1 s = 10 s.
//! 2. `apply` of 1,000 instances with zero task time, then a no-op `plan` (which reads
//!    every deployment and secret back).
//!
//! Results go to stdout as Markdown rows for docs/benchmarks.md.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_anvil");

const TEMPLATE: &str = "releases: [{name: redis, version: latest}]\nstemcells: [{alias: default, os: ubuntu-jammy, version: latest}]\ninstance_groups:\n- name: redis\n  instances: 1\n  vm_type: small\n  azs: [z1]\n  stemcell: default\n  networks: [{name: services}]\n  jobs: [{name: redis, release: redis, properties: {port: ${params.port}}}]\n";

fn foundation(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: anvil/v1\nkind: Foundation\nmetadata: { name: bench }\ncatalog:\n  services:\n    - id: redis\n      name: redis\n      plans:\n        - id: redis-small\n          name: small\n          manifest: small.yml.tmpl\n          parameters: { port: 6379 }\ninstances:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "  - {{ id: 00000000-0000-4000-8000-{i:012x}, service: redis, plan: small }}\n"
        ));
    }
    s
}

/// A simulator child process and the URL it printed; killed when dropped.
struct Sim(Child, String);

impl Sim {
    fn start(args: &[&str], prefix: &str) -> Sim {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start simulator");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        std::thread::spawn(move || for _ in lines {});
        let url = line
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected simulator line {line:?}"))
            .to_string();
        Sim(child, url)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(dir: &Path, bosh: &Sim, vault: &Sim, args: &[&str]) -> (Duration, i32) {
    let start = Instant::now();
    let status = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("BOSH_ENVIRONMENT", &bosh.1)
        .env("BOSH_CLIENT", "admin")
        .env("BOSH_CLIENT_SECRET", "admin")
        .env_remove("BOSH_CA_CERT")
        .env("VAULT_ADDR", &vault.1)
        .env("VAULT_TOKEN", "root")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run anvil");
    (start.elapsed(), status.code().unwrap_or(-1))
}

fn case(n: usize, task_duration: &str) {
    let bosh = Sim::start(
        &[
            "sim",
            "bosh",
            "--listen",
            "127.0.0.1:0",
            "--task-duration",
            task_duration,
        ],
        "anvil sim bosh listening on ",
    );
    let vault = Sim::start(
        &["sim", "vault", "--listen", "127.0.0.1:0", "--token", "root"],
        "anvil sim vault listening on ",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("foundation.yaml"), foundation(n)).expect("write");
    std::fs::write(dir.path().join("small.yml.tmpl"), TEMPLATE).expect("write");
    let (t, code) = run(dir.path(), &bosh, &vault, &["apply", "--auto-approve", "."]);
    assert_eq!(code, 0, "apply of {n} instances exited {code}");
    println!(
        "| {n} | {task_duration} | apply from empty ({} resources) | {:.2} |",
        n * 4,
        t.as_secs_f64()
    );
    let (t, code) = run(
        dir.path(),
        &bosh,
        &vault,
        &["plan", "--detailed-exitcode", "."],
    );
    assert_eq!(code, 0, "plan after apply of {n} instances exited {code}");
    println!(
        "| {n} | {task_duration} | no-op plan (refresh reads all) | {:.2} |",
        t.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without.
    if !std::env::args().any(|a| a == "--bench") {
        println!("foundation: a benchmark; run it with `cargo bench --bench foundation`");
        return;
    }
    println!("| instances | task time | step | wall time (s) |");
    println!("|---:|---|---|---:|");
    case(50, "1s");
    case(1_000, "0s");
}
