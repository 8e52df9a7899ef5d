//! Acceptance 4 of issue 12 in a real browser: headless Debian Chromium, driven through
//! chromedriver's W3C WebDriver API, loads the dashboard of `anvil broker` (the example
//! foundation applied to the BOSH and Vault simulators, capacity from the CF simulator)
//! and of `anvil serve`, and the test reads the rendered numbers from the DOM: the 4
//! instances under their plans as "n / limit", an environment's status, and the
//! degraded banner once the BOSH simulator is stopped. Screenshots go to
//! `CARGO_TARGET_TMPDIR/dashboard-*.png`.
//!
//! Credentials reach the page as a request header set through the DevTools protocol
//! (`Network.setExtraHTTPHeaders`): the dashboard takes the same auth as the rest of
//! each front-end, and no token ever goes into a URL.
//!
//! Without chromium or chromedriver the test fails, saying to run .ci/setup-chromium.
//! The WebDriver calls are a handful of JSON requests over reqwest (already a
//! dependency), which is all this test needs of a WebDriver client crate.

mod broker_support;
mod common;
mod serve_support;
mod sim_bosh_support;
mod sim_cf_support;
mod sim_vault_support;

use base64::Engine;
use broker_support::{Broker, Peers};
use common::{assert_code, at_simulators, Scratch, BIN};
use serde_json::{json, Value};
use serve_support::{environment_yaml, Serve, TOKEN};
use sim_bosh_support::BoshSim;
use sim_cf_support::{set_cell_vitals, CfSim, CELLS_MANIFEST, CLOUD_CONFIG};
use sim_vault_support::VaultSim;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VAULT_TOKEN: &str = "root";
const USER: &str = "chromium-user";
const PASSWORD: &str = "chromium-password";

/// A program on PATH, else `None`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A running chromedriver; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session over WebDriver.
struct Browser {
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    session: String,
    base: String,
}

impl Browser {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        self.rt.block_on(async {
            let mut r = self.http.request(method, &url);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "{url}: {status} {v}");
            v["value"].clone()
        })
    }

    /// Every request the page makes carries `Authorization: auth` (DevTools protocol).
    fn set_auth(&self, auth: &str) {
        for (cmd, params) in [
            ("Network.enable", json!({})),
            (
                "Network.setExtraHTTPHeaders",
                json!({"headers": {"Authorization": auth}}),
            ),
        ] {
            self.call(
                reqwest::Method::POST,
                "/goog/cdp/execute",
                Some(json!({"cmd": cmd, "params": params})),
            );
        }
    }

    fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Saves a screenshot of the viewport as PNG at `path`; its size.
    fn screenshot(&self, path: &Path) -> usize {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot as base64"))
            .expect("base64 PNG");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
        std::fs::write(path, &png).unwrap();
        png.len()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let http = self.http.clone();
        let _ = self
            .rt
            .block_on(async move { http.delete(url).send().await });
    }
}

/// Starts chromedriver and a headless Chromium session with a fresh profile in `profile`.
fn browser(profile: &Path) -> (Driver, Browser) {
    let (Some(chromedriver), Some(chromium)) = (
        which("chromedriver"),
        which("chromium").or_else(|| which("chromium-browser")),
    ) else {
        panic!(
            "chromium and chromedriver are needed for the dashboard test and were not found on PATH: run `bash .ci/setup-chromium` (Debian's chromium and chromium-driver)"
        );
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", chromedriver.display()));
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    // Wait (bounded) for chromedriver to listen and say it is ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = rt.block_on(async {
            match http.get(format!("{}/status", driver.url)).send().await {
                Ok(r) => r.json::<Value>().await.ok()?["value"]["ready"].as_bool(),
                Err(_) => None,
            }
        });
        if ready == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver at {} did not become ready within 60 s",
            driver.url
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1400",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    }}});
    let session = rt.block_on(async {
        let resp = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .expect("new WebDriver session");
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "new session: {status} {v}");
        v["value"]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string()
    });
    let base = driver.url.clone();
    (
        driver,
        Browser {
            http,
            rt,
            session,
            base,
        },
    )
}

fn start_broker(s: &Scratch, bosh: &BoshSim, vault: &VaultSim, cf: &CfSim) -> Broker {
    let vault_url = vault.url();
    let peers = Peers {
        bosh_url: &bosh.url,
        vault_url: &vault_url,
        vault_token: VAULT_TOKEN,
        user: USER,
        password: PASSWORD,
    };
    broker_support::start(
        s,
        &peers,
        &[
            "--cf-api",
            &cf.url,
            "--cf-password",
            "admin",
            "--capacity-ttl",
            "0s",
            "--bosh-backoff",
            "10ms",
        ],
    )
}

/// The plan rows as the browser rendered them: plan id → the "n / limit" cell's text.
const PLAN_COUNTS: &str = "const out = {}; \
    for (const tr of document.querySelectorAll('#plans tr[data-plan]')) { \
      out[tr.dataset.plan] = tr.querySelector('td.count').innerText.trim(); } \
    for (const tr of document.querySelectorAll('#services tr[data-service]')) { \
      out['service:' + tr.dataset.service] = tr.querySelector('td.count').innerText.trim(); } \
    return out;";

#[test]
fn chromium_shows_instances_against_limits_an_environment_and_the_degraded_banner() {
    let s = Scratch::new();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, b) = browser(profile.path());
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&shots).unwrap();

    s.copy_example("foundation", "fnd");
    let bosh = BoshSim::start(&[], None);
    bosh.post_json(
        "/configs",
        &json!({"type": "cloud", "name": "default", "content": CLOUD_CONFIG}),
    );
    bosh.deploy(CELLS_MANIFEST);
    set_cell_vitals(&bosh.url, &[25, 50, 95]);
    let vault = VaultSim::start(VAULT_TOKEN, &[]);
    let cf = CfSim::start(&["--apps", "5", "--segments", "1"]);
    let mut apply = s.cmd(&["apply", "--auto-approve", "fnd"]);
    let out = at_simulators(&mut apply, &bosh.url, &vault.url(), VAULT_TOKEN)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let broker = start_broker(&s, &bosh, &vault, &cf);

    // The broker's page, with its basic auth.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    b.set_auth(&basic);
    b.open(&format!("{}/", broker.url));
    assert_eq!(
        b.eval("return document.title;"),
        json!("anvil broker — foundation")
    );
    let counts = b.eval(PLAN_COUNTS);
    assert_eq!(
        counts,
        json!({
            "redis-small": "1 / 5",
            "redis-cluster": "1 / 2",
            "postgresql-standard": "2 / unlimited",
            "service:redis": "2 / unlimited",
            "service:postgresql": "2 / 10",
        }),
        "the example foundation's 4 instances under their plans"
    );
    let cells = b.eval("return document.querySelectorAll('#cells tr[data-cell]').length;");
    assert_eq!(cells, json!(3));
    assert_eq!(
        b.eval("return document.getElementById('degraded') === null;"),
        json!(true)
    );
    assert!(b.screenshot(&shots.join("dashboard-broker.png")) > 1000);

    // anvil serve's page, with its bearer token: an environment and its status.
    let serve = Serve::start_with(
        BIN,
        &s.path().join("serve-data"),
        &["--no-workers"],
        &s.path().join("serve.log"),
        |c| {
            c.env_remove("CF_API").env_remove("BOSH_ENVIRONMENT");
        },
    );
    let created = b.rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/api/v1/environments", serve.url))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Content-Type", "application/yaml")
            .body(environment_yaml("chromium-env"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(created, 201);
    b.set_auth(&format!("Bearer {TOKEN}"));
    b.open(&format!("{}/", serve.url));
    let status = b.eval(
        "const tr = document.querySelector('tr[data-environment=\"chromium-env\"]'); \
         return tr ? tr.querySelector('td.status').innerText.trim() : null;",
    );
    assert_eq!(status, json!("queued"), "the environment's status");
    assert!(b.screenshot(&shots.join("dashboard-serve.png")) > 1000);

    // The BOSH simulator stopped: the broker's page says degraded mode, and still
    // counts the instances (the index is read from Vault alone).
    drop(bosh);
    b.set_auth(&basic);
    b.open(&format!("{}/", broker.url));
    let banner =
        b.eval("const d = document.getElementById('degraded'); return d ? d.innerText : null;");
    let banner = banner
        .as_str()
        .unwrap_or_else(|| panic!("no degraded banner"));
    assert!(banner.contains("Degraded mode"), "{banner}");
    assert_eq!(b.eval(PLAN_COUNTS)["redis-small"], json!("1 / 5"));
    assert_eq!(
        b.eval("return document.querySelectorAll('#cells tr[data-cell]').length;"),
        json!(0)
    );
    let path = shots.join("dashboard-degraded.png");
    assert!(b.screenshot(&path) > 1000);
    eprintln!("screenshots under {}", shots.display());
}
