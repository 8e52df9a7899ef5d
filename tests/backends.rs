//! Acceptance: one state-backend conformance suite. The same test bodies run the real
//! `anvil` binary against the `file` backend, `postgres` (a throwaway cluster from
//! tests/pg_support), `vault` (`anvil sim vault` from tests/sim_vault_support) and, with
//! the `aws` feature, `s3` (a bucket per test on the moto server of tests/moto_support):
//! round trip; two concurrent applies (one proceeds, the other fails naming the holder or
//! waits with `--lock-timeout`); a SIGKILLed holder's lock taken over after its lease
//! without force-unlock, and force-unlock by id; 20 SIGKILLs at random moments of a
//! 500-resource apply (state readable every time, the next apply converges, each address
//! recorded once, nothing pending); stale saved plans (serial and lineage) refused.
//!
//! Run one backend with e.g. `cargo test --test backends vault::`.

mod common;
mod moto_support;
mod pg_support;
mod sim_vault_support;

use common::*;
use pg_support::PgCluster;
use sim_vault_support::VaultSim;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Which backend a test body runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    File,
    Postgres,
    Vault,
    /// Only run with the `aws` feature.
    #[allow(dead_code)]
    S3,
}

const VAULT_TOKEN: &str = "conformance-root-token";

/// A scratch directory plus the backend's server (if any) and the environment that points
/// `anvil` at it.
struct Fixture {
    s: Scratch,
    env: Vec<(String, String)>,
    _pg: Option<PgCluster>,
    vault: Option<VaultSim>,
    /// The test's bucket on the shared moto server.
    bucket: Option<String>,
}

impl Fixture {
    fn new(backend: Backend) -> Fixture {
        let s = Scratch::new();
        let mut env = Vec::new();
        let (mut pg, mut vault, mut bucket) = (None, None, None);
        match backend {
            Backend::File => {}
            Backend::Postgres => {
                let c = PgCluster::start();
                c.create_db("anvil");
                env.push(("ANVIL_STATE".into(), c.url("anvil")));
                pg = Some(c);
            }
            Backend::Vault => {
                let v = VaultSim::start(VAULT_TOKEN, &[]);
                env.push(("ANVIL_STATE".into(), "vault://secret/anvil/state".into()));
                env.push(("VAULT_ADDR".into(), v.url()));
                env.push(("VAULT_TOKEN".into(), VAULT_TOKEN.into()));
                vault = Some(v);
            }
            Backend::S3 => {
                // One moto per test binary; each test its own bucket.
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let moto = moto_support::Moto::shared();
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let name = format!("anvil-conformance-{}-{n}", std::process::id());
                moto.create_bucket(&name);
                env.push(("ANVIL_STATE".into(), format!("s3://{name}/anvil/state")));
                for (k, v) in moto.env() {
                    env.push((k.into(), v));
                }
                bucket = Some(name);
            }
        }
        Fixture {
            s,
            env,
            _pg: pg,
            vault,
            bucket,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.s.cmd(args);
        c.env_remove("VAULT_NAMESPACE")
            .env_remove("VAULT_CACERT")
            .env_remove("ANVIL_LOCK_LEASE")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs to completion (a hang guard of 180 s, not a performance assertion).
    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd(args);
        c.envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().expect("spawn anvil");
        wait_output(child, args, Duration::from_secs(180))
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// Starts `anvil ARGS` and returns once a line of its stdout contains `marker`
    /// (e.g. "ing...", as in "Creating..." — printed only after the lock is taken), with its pid.
    fn spawn_until(&self, args: &[&str], env: &[(&str, &str)], marker: &str) -> Running {
        let mut child = self
            .cmd(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn anvil");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let wanted = marker.to_string();
        let reader = std::thread::spawn(move || {
            let mut seen = String::new();
            let mut signalled = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                seen.push_str(&line);
                seen.push('\n');
                if !signalled && line.contains(&wanted) {
                    signalled = true;
                    let _ = tx.send(());
                }
            }
            seen
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            let out = reader.join().unwrap_or_default();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("anvil {args:?} never printed {marker:?}\n--- stdout\n{out}\n--- stderr\n{err}");
        }
        Running { child, reader }
    }

    /// Workspace `ws`'s state as `anvil show --json` prints it (backend-neutral).
    fn state(&self, ws: &str) -> serde_json::Value {
        let o = self.run(&["show", "--json", "-w", ws]);
        assert_code(&o, 0);
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("show --json is not JSON ({e}): {}", stdout(&o)))
    }

    /// `anvil state list -w WS` lines.
    fn listed(&self, ws: &str) -> Vec<String> {
        let o = self.run(&["state", "list", "-w", ws]);
        assert_code(&o, 0);
        stdout(&o).lines().map(str::to_string).collect()
    }
}

/// A spawned `anvil` whose stdout a thread reads.
struct Running {
    child: Child,
    reader: std::thread::JoinHandle<String>,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL: no chance to release anything
        let _ = self.child.wait();
        let _ = self.reader.join();
    }

    fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let status = self.child.wait().expect("wait");
        let out = self.reader.join().unwrap_or_default();
        (status, out, err)
    }
}

fn wait_output(mut child: Child, args: &[&str], limit: Duration) -> Output {
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("anvil {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

fn slow_spec(name: &str, ms: u64) -> String {
    format!(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {{ name: {name} }}\nresources:\n  - type: null_resource\n    name: slow\n    attributes: {{ sleep_ms: {ms}, triggers: {{ a: \"1\" }} }}\n  - type: null_resource\n    name: quick\n    attributes: {{ triggers: {{ b: \"1\" }} }}\n"
    )
}

/// A small deterministic generator, so a failing trial can be replayed from its seed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

// ------------------------------------------------------------------ test bodies

/// Apply the quickstart's null resources, plan is empty, the state lists them; state
/// edits (rm, mv) and destroy go through the backend too.
fn round_trip(b: Backend) {
    let f = Fixture::new(b);
    f.s.copy_example("quickstart", ".");
    let o = f.run(&["apply", "--auto-approve"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("Apply complete! Resources: 5 added"),
        "{}",
        stdout(&o)
    );
    let o = f.run(&["plan", "--detailed-exitcode"]);
    assert_code(&o, 0);
    let listed = f.listed("quickstart");
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert!(
        listed.contains(&"null_resource.app".to_string()),
        "{listed:?}"
    );
    let st = f.state("quickstart");
    assert_eq!(st["serial"].as_u64(), Some(5), "{st}");
    assert!(st["pending"].as_array().is_some_and(Vec::is_empty), "{st}");
    let lineage = st["lineage"].as_str().expect("lineage").to_string();

    // Whole-state writes: mv and rm, each bumping the serial, lineage kept.
    assert_code(
        &f.run(&[
            "state",
            "mv",
            "-w",
            "quickstart",
            "null_resource.cache",
            "null_resource.cache2",
        ]),
        0,
    );
    assert_code(
        &f.run(&["state", "rm", "-w", "quickstart", "null_resource.cache2"]),
        0,
    );
    let st = f.state("quickstart");
    assert_eq!(st["lineage"].as_str(), Some(lineage.as_str()));
    assert_eq!(
        st["resources"].as_object().map(|r| r.len()),
        Some(4),
        "{st}"
    );
    assert!(st["serial"].as_u64() > Some(5), "{st}");
    // The next apply creates the forgotten resource again.
    let o = f.run(&["apply", "--auto-approve"]);
    assert_code(&o, 0);
    assert_eq!(f.listed("quickstart").len(), 5);

    if b == Backend::File {
        assert!(f.s.state_file("quickstart").exists());
    } else {
        assert!(
            !f.s.path().join("state").exists(),
            "a remote backend wrote local state files"
        );
    }
    if let Some(v) = &f.vault {
        let doc = v
            .kv_read("anvil/state/quickstart", VAULT_TOKEN)
            .expect("the state secret exists");
        assert!(!doc.to_string().contains(VAULT_TOKEN));
    }
    if let Some(bucket) = &f.bucket {
        // The layout of docs/state.md; the lock is gone once the command ended.
        let keys = moto_support::Moto::shared().python(&format!(
            "r = client('s3').list_objects_v2(Bucket={bucket:?})\n\
             result = sorted(o['Key'] for o in r.get('Contents', []))"
        ));
        assert_eq!(keys, serde_json::json!(["anvil/state/quickstart.json"]));
    }

    let o = f.run(&["destroy", "--auto-approve"]);
    assert_code(&o, 0);
    // `audit_log` is retain_on_delete: forgotten, not deleted; nothing stays recorded.
    assert!(f.listed("quickstart").is_empty());
}

/// Two applies at once: the second fails at once naming the holder; with
/// `--lock-timeout` it waits and proceeds.
///
/// The first apply holds the lock for a window (a slow resource). On a loaded machine the
/// second can start only after the window closed; that attempt shows nothing, so it is
/// made again with a window twice as long (3, 6, 12, 24 s), never judged.
fn concurrent_applies(b: Backend) {
    let mut window = 3000;
    loop {
        if concurrent_applies_within(b, window) {
            return;
        }
        assert!(
            window < 24_000,
            "the second apply never started within a {window} ms window of the first"
        );
        window *= 2;
    }
}

/// One attempt of [`concurrent_applies`]: `false` when the second apply got the lock
/// because the first had already ended, so the attempt is inconclusive.
fn concurrent_applies_within(b: Backend, window: u64) -> bool {
    let f = Fixture::new(b);
    f.s.write("spec.yaml", &slow_spec("locked", window));
    let mut first = f.spawn_until(&["apply", "--auto-approve"], &[], "ing...");
    let first_pid = first.pid();

    let o = f.run(&["apply", "--auto-approve"]);
    if o.status.code() != Some(1) && first.child.try_wait().expect("wait").is_some() {
        // The first ended before the second asked for the lock: no overlap, no verdict.
        let _ = first.finish();
        return false;
    }
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("is held by"), "{err}");
    assert!(
        err.contains(&format!("pid {first_pid}")),
        "holder pid missing: {err}"
    );
    assert!(err.contains("`apply`"), "operation missing: {err}");
    assert!(err.contains("force-unlock"), "{err}");
    assert!(!err.contains(VAULT_TOKEN), "{err}");

    let o = f.run(&["apply", "--auto-approve", "--lock-timeout", "60s"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("No changes."), "{}", stdout(&o));
    let (status, out, err) = first.finish();
    assert!(status.success(), "first apply failed:\n{out}\n{err}");
    assert_eq!(f.listed("locked").len(), 2);
    // Released at the end: a plain apply runs at once.
    assert_code(&f.run(&["apply", "--auto-approve"]), 0);
    true
}

/// A SIGKILLed holder leaves its lock; it expires after its lease (2 s) and the next
/// run takes over without force-unlock. A lock with a long lease is removed by id.
fn killed_holder(b: Backend) {
    let f = Fixture::new(b);
    f.s.write("spec.yaml", &slow_spec("killed", 60_000));
    let lease = [("ANVIL_LOCK_LEASE", "2s")];
    let first = f.spawn_until(&["apply", "--auto-approve"], &lease, "ing...");
    first.kill();
    let killed = Instant::now();

    // The dead holder's lock is still there: refused, naming it. On a loaded machine the
    // 2 s lease may already have run out by the time this starts; then it must have been
    // taken over, never earlier.
    let o = f.run(&["apply", "--auto-approve"]);
    if o.status.code() == Some(0) {
        assert!(
            killed.elapsed() >= Duration::from_secs(2),
            "the lock was taken before its lease ran out"
        );
    } else {
        assert_code(&o, 1);
        assert!(stderr(&o).contains("is held by"), "{}", stderr(&o));
    }

    f.s.write("spec.yaml", &slow_spec("killed", 0));
    let o = f.run(&["apply", "--auto-approve", "--lock-timeout", "30s"]);
    assert_code(&o, 0);
    let st = f.state("killed");
    assert_eq!(
        st["resources"].as_object().map(|r| r.len()),
        Some(2),
        "{st}"
    );
    assert!(st["pending"].as_array().is_some_and(Vec::is_empty), "{st}");

    // A stuck lock (1 h lease): force-unlock with the wrong id is refused, with the
    // right one it is removed.
    f.s.write("spec.yaml", &slow_spec("killed", 60_000));
    let first = f.spawn_until(
        &["apply", "--auto-approve"],
        &[("ANVIL_LOCK_LEASE", "1h")],
        "ing...",
    );
    first.kill();
    let o = f.run(&["apply", "--auto-approve"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    let id = err
        .split("anvil force-unlock ")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .expect("lock id in the error")
        .to_string();
    let o = f.run(&["force-unlock", "not-the-id", "-w", "killed"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains(&id), "{}", stderr(&o));
    assert_code(&f.run(&["force-unlock", &id, "-w", "killed"]), 0);
    f.s.write("spec.yaml", &slow_spec("killed", 0));
    assert_code(&f.run(&["apply", "--auto-approve"]), 0);
}

/// 20 SIGKILLs at random moments of a 500-resource apply (and destroy): the state is
/// readable every time, the next apply converges, each address is recorded exactly once
/// and nothing is left pending.
fn sigkill_500(b: Backend) {
    let f = Fixture::new(b);
    const N: usize = 500;
    f.s.write("spec.yaml", &tree_spec("crash", N, "      sleep_ms: 2\n"));
    let lease = [("ANVIL_LOCK_LEASE", "1s")];
    let apply = [
        "apply",
        "--auto-approve",
        "--parallelism",
        "4",
        "--lock-timeout",
        "30s",
    ];
    let destroy = [
        "destroy",
        "--auto-approve",
        "--parallelism",
        "4",
        "--lock-timeout",
        "30s",
    ];

    // One whole apply and destroy first: the tree works on this backend at all.
    assert_code(&f.run_env(&apply, &lease), 0);
    assert_code(&f.run_env(&destroy, &lease), 0);

    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = Lcg(seed);
    let mut mid_run = 0;
    for trial in 0..20 {
        // Alternate between building up and tearing down, so kills hit creates and deletes.
        let args: &[&str] = if trial % 4 == 3 { &destroy } else { &apply };
        // The moment is picked in the run's own progress, not in wall-clock time, so a
        // loaded machine (a slow start, a lock waited out) cannot push every kill before
        // or after the work: kill after a random number of finished operations (the
        // "… complete after …" lines; 0 kills before any, a number past the end lets the
        // run finish).
        let after = rng.next() % (N as u64 + 10);
        let mut child = f
            .cmd(args)
            .envs(lease)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn anvil");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let mut seen = 0u64;
        while seen < after {
            match lines.next() {
                Some(Ok(line)) => seen += u64::from(line.contains(" complete after ")),
                _ => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        // Every command reads what the killed run left without error.
        let o = f.run_env(&["state", "list", "-w", "crash"], &lease);
        assert_code(&o, 0);
        let recorded = stdout(&o).lines().count();
        if recorded > 0 && recorded < N {
            mid_run += 1;
        }
    }
    // Guard against a vacuous test: some kills must have landed mid-run.
    assert!(mid_run > 0, "no kill landed mid-run (seed {seed})");

    // The next apply (after the dead holder's lease) converges.
    assert_code(&f.run_env(&apply, &lease), 0);
    assert_code(&f.run(&["plan", "--detailed-exitcode"]), 0);
    let st = f.state("crash");
    let keys: Vec<String> = st["resources"]
        .as_object()
        .expect("resources")
        .keys()
        .cloned()
        .collect();
    let mut want: Vec<String> = (0..N).map(|i| format!("null_resource.r{i}")).collect();
    want.sort();
    assert_eq!(
        keys, want,
        "each resource recorded exactly once (seed {seed})"
    );
    let listed = f.listed("crash");
    assert_eq!(listed.len(), N, "state list shows each address once");
    assert!(
        st["pending"].as_array().is_some_and(Vec::is_empty),
        "{}",
        st["pending"]
    );
}

/// A saved plan made before the state moved on is refused (serial), and so is one made
/// for another state history (lineage); nothing is applied.
fn stale_saved_plan(b: Backend) {
    let f = Fixture::new(b);
    f.s.copy_example("quickstart", ".");
    assert_code(&f.run(&["apply", "--auto-approve"]), 0);
    let main = f.s.path().join("main.yaml");
    let text = std::fs::read_to_string(&main).expect("main.yaml");
    std::fs::write(&main, text.replace("replicas: 2", "replicas: 3")).expect("write");

    let o = f.run(&["plan", "--out", "plan.json"]);
    assert_code(&o, 0);
    // Lineage: the same plan, bound to another state history.
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.s.path().join("plan.json")).expect("plan"))
            .expect("plan JSON");
    let lineage = plan["state"]["lineage"]
        .as_str()
        .expect("lineage")
        .to_string();
    let other = std::fs::read_to_string(f.s.path().join("plan.json"))
        .expect("plan")
        .replace(&lineage, "00000000-0000-4000-8000-000000000000");
    f.s.write("other.json", &other);

    assert_code(
        &f.run(&["state", "rm", "-w", "quickstart", "null_resource.audit_log"]),
        0,
    );
    let before = f.state("quickstart");
    let o = f.run(&["apply", "plan.json"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("plan.json: saved plan is stale"), "{err}");
    assert!(err.contains("anvil plan --out plan.json"), "{err}");

    let o = f.run(&["apply", "other.json"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("lineage 00000000-0000-4000-8000-000000000000"),
        "{err}"
    );
    assert!(err.contains(&lineage), "{err}");
    assert_eq!(f.state("quickstart"), before, "a refused plan wrote state");
}

// ------------------------------------------------------------------ one test per pair

macro_rules! conformance {
    ($backend:ident, $variant:expr, $($body:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[test]
                fn $body() {
                    super::$body($variant)
                }
            )+
        }
    };
}

macro_rules! all_backends {
    ($($body:ident),+ $(,)?) => {
        conformance!(file, super::Backend::File, $($body),+);
        conformance!(vault, super::Backend::Vault, $($body),+);
        conformance!(postgres, super::Backend::Postgres, $($body),+);
        #[cfg(feature = "aws")]
        conformance!(s3, super::Backend::S3, $($body),+);
    };
}

all_backends!(
    round_trip,
    concurrent_applies,
    killed_holder,
    sigkill_500,
    stale_saved_plan,
);
