//! Conformance of `anvil broker` to the Open Service Broker API 2.17 OpenAPI document
//! (tests/fixtures/osb-openapi-v2.17.yaml, the public spec) with schemathesis (installed
//! into `.venv/` by `.ci/setup-python`): the real broker on the example Foundation, over
//! the BOSH and Vault simulators, must answer no generated request with a 5xx and none
//! with a body the spec's response schemas refuse (issue 9, acceptance 2). Examples are
//! bounded and the seed fixed, so a run is repeatable and takes well under two minutes.
//!
//! A second test points the same command at a deliberately broken stub broker and
//! checks that schemathesis fails it: the conformance test can fail.

mod common;
mod sim_bosh_support;
mod sim_vault_support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const USER: &str = "broker";
const PASSWORD: &str = "conformance-secret";
/// Generated cases per operation and phase: enough to walk every operation's status
/// codes, few enough to keep the run short on a loaded CI machine.
const MAX_EXAMPLES: &str = "10";
const SEED: &str = "20260917";
/// A hang guard for one schemathesis run, not a performance assertion.
const RUN_LIMIT: Duration = Duration::from_secs(600);

fn spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/osb-openapi-v2.17.yaml")
}

/// `$ANVIL_TEST_SCHEMATHESIS`, else the one `.ci/setup-python` installs.
fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("ANVIL_TEST_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis");
    assert!(
        venv.exists(),
        "no schemathesis: set ANVIL_TEST_SCHEMATHESIS or run `bash .ci/setup-python` \
         (installs it into {}) and test again",
        venv.display()
    );
    venv
}

/// `anvil broker` on the example Foundation, over both simulators; every process is
/// killed when dropped.
struct Stack {
    broker: Child,
    url: String,
    _bosh: sim_bosh_support::BoshSim,
    _vault: sim_vault_support::VaultSim,
    scratch: common::Scratch,
}

impl Stack {
    fn start() -> Stack {
        let bosh = sim_bosh_support::BoshSim::start(&[], None);
        let vault = sim_vault_support::VaultSim::start("root", &[]);
        let scratch = common::Scratch::new();
        let foundation = scratch.copy_example("foundation", "foundation");
        let state = scratch.path().join("state/foundation.json");
        let mut cmd = scratch.cmd(&[
            "broker",
            "--foundation",
            &foundation.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
            "--state",
            &state.to_string_lossy(),
        ]);
        common::at_simulators(&mut cmd, &bosh.url, &vault.url(), "root")
            .env("ANVIL_BROKER_USERNAME", USER)
            .env("ANVIL_BROKER_PASSWORD", PASSWORD);
        let mut broker = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start anvil broker");
        let stdout = broker.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            // Keep draining so the broker never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = broker.kill();
                panic!("anvil broker printed no address line within 60s");
            }
        };
        let url = line
            .strip_prefix("anvil broker listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Stack {
            broker,
            url,
            _bosh: bosh,
            _vault: vault,
            scratch,
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

/// Runs `schemathesis run` on the spec against `url` with the checks of acceptance 2,
/// in `cwd` (where it keeps its reports), plus `extra` arguments.
fn run_schemathesis(url: &str, cwd: &Path, extra: &[&str]) -> Output {
    let auth = format!("{USER}:{PASSWORD}");
    let mut child = Command::new(schemathesis())
        .arg("run")
        .arg(spec())
        .args(["--url", url, "--auth", &auth])
        .args(["--header", "X-Broker-API-Version: 2.17"])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        // No example database: a run must not depend on what an earlier one found.
        .args(["--generation-database", "none"])
        .args(["--workers", "1", "--no-color"])
        .args(extra)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("could not run schemathesis ({e}); run `bash .ci/setup-python`")
        });
    // Drain both pipes while waiting, or a chatty child blocks on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("schemathesis did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let stack = Stack::start();
    let out = run_schemathesis(&stack.url, stack.scratch.path(), &[]);
    let stdout = common::stdout(&out);
    let stderr = common::stderr(&out);
    assert!(
        out.status.success(),
        "schemathesis found 5xx answers or responses violating the OSB spec ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // It really tested the broker: every operation of the spec, and some cases passed.
    assert!(
        stdout.contains("10 selected / 10 total"),
        "not every operation of the spec was selected:\n{stdout}"
    );
    assert!(stdout.contains(" passed"), "{stdout}");
}

/// A broker that is wrong on purpose: its catalog has a service without a name and a
/// numeric id (the spec's `Service` requires a string `name` and `id`), and reading an
/// instance crashes with a 500.
fn broken_broker() -> String {
    use axum::routing::get;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/v2/catalog",
                    get(|| async { axum::Json(serde_json::json!({"services": [{"id": 7}]})) }),
                )
                .route(
                    "/v2/service_instances/{id}",
                    get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
                );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    format!("http://{addr}")
}

#[test]
fn schemathesis_fails_a_broker_that_breaks_the_spec() {
    let url = broken_broker();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_schemathesis(
        &url,
        dir.path(),
        &[
            "--include-path-regex",
            "^/v2/catalog$|^/v2/service_instances/\\{instance_id\\}$",
            "--include-method",
            "GET",
            "--phases",
            "examples,fuzzing",
        ],
    );
    let stdout = common::stdout(&out);
    assert!(
        !out.status.success(),
        "schemathesis passed a broker that breaks the spec:\n{stdout}"
    );
    assert!(
        stdout.contains("Response violates schema"),
        "the catalog's schema violation was not reported:\n{stdout}"
    );
    assert!(
        stdout.contains("Server error"),
        "the 500 was not reported:\n{stdout}"
    );
}
