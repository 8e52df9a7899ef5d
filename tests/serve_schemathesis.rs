//! Conformance of `anvil serve` to its own generated OpenAPI document
//! (schemas/openapi-environments.json) with schemathesis (installed into `.venv/` by
//! `.ci/setup-python`): the real server, embedded, `--no-workers`, must answer no
//! generated request with a 5xx and none with a body the document's response schemas
//! refuse (issue 11, acceptance 4). Examples are bounded and the seed fixed, so a run is
//! repeatable and short.
//!
//! A second test points the same command at a deliberately broken stub server and
//! checks that schemathesis fails it: the conformance test can fail.

mod common;
mod serve_support;

use serve_support::{Serve, TOKEN};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generated cases per operation and phase: enough to walk every operation's status
/// codes, few enough to keep the run short on a loaded CI machine.
const MAX_EXAMPLES: &str = "20";
const SEED: &str = "20261201";
/// A hang guard for one schemathesis run, not a performance assertion.
const RUN_LIMIT: Duration = Duration::from_secs(600);

fn document() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/openapi-environments.json")
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

/// Runs `schemathesis run` on the document against `url` with the checks of acceptance
/// 4, in `cwd` (where it keeps its reports), plus `extra` arguments.
fn run_schemathesis(url: &str, cwd: &Path, extra: &[&str]) -> Output {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let mut child = Command::new(schemathesis())
        .arg("run")
        .arg(document())
        .args(["--url", url, "--header", &auth])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        // No example database: a run must not depend on what an earlier one found.
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "20", "--workers", "1", "--no-color"])
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
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(
        common::BIN,
        &dir.path().join("data"),
        &["--no-workers"],
        &dir.path().join("serve.log"),
    );
    let out = run_schemathesis(&serve.url, dir.path(), &[]);
    let stdout = common::stdout(&out);
    let stderr = common::stderr(&out);
    assert!(
        out.status.success(),
        "schemathesis found 5xx answers or responses violating the document ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        serve.logs()
    );
    // It really tested the server: every operation of the document, and some passed.
    assert!(
        stdout.contains("8 selected / 8 total"),
        "not every operation was selected:\n{stdout}"
    );
    assert!(stdout.contains(" passed"), "{stdout}");
}

/// A server that is wrong on purpose: `/health` answers 500, and the list's `items` is
/// a number.
fn broken_server() -> String {
    use axum::routing::get;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/api/v1/environments",
                    get(|| async { axum::Json(serde_json::json!({"items": 7, "next": null})) }),
                )
                .route(
                    "/health",
                    get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
                );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    format!("http://{addr}")
}

#[test]
fn schemathesis_fails_a_server_that_breaks_the_document() {
    let url = broken_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_schemathesis(
        &url,
        dir.path(),
        &[
            "--include-path-regex",
            "^/api/v1/environments$|^/health$",
            "--include-method",
            "GET",
            "--phases",
            "examples,fuzzing",
        ],
    );
    let stdout = common::stdout(&out);
    assert!(
        !out.status.success(),
        "schemathesis passed a server that breaks the document:\n{stdout}"
    );
    assert!(
        stdout.contains("Response violates schema"),
        "the list's schema violation was not reported:\n{stdout}"
    );
    assert!(
        stdout.contains("Server error"),
        "the 500 was not reported:\n{stdout}"
    );
}
