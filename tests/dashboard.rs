//! Black-box tests of the dashboard and the capacity routes of `anvil serve` and
//! `anvil broker` against the simulators: the capacity `/api/*` routes exist only with
//! `--cf-api` and only behind the bearer token; `/` is the server-rendered page behind
//! each front-end's own auth (bearer in serve, basic in the broker), showing the
//! environments' status (serve), the example foundation's instances under their plans
//! as "n / limit" (broker), the cells, and the degraded banner when the Director is
//! gone. (The same page in a real browser: tests/dashboard_chromium.rs.)

mod broker_support;
mod common;
mod serve_support;
mod sim_bosh_support;
mod sim_cf_support;
mod sim_vault_support;

use broker_support::{Broker, Peers};
use common::{assert_code, at_simulators, Scratch, BIN};
use serde_json::{json, Value};
use serve_support::{environment_yaml, Serve, TOKEN};
use sim_bosh_support::BoshSim;
use sim_cf_support::{set_cell_vitals, CfSim, CELLS_MANIFEST, CLOUD_CONFIG};
use sim_vault_support::VaultSim;

const VAULT_TOKEN: &str = "root";
const USER: &str = "dash-user";
const PASSWORD: &str = "dash-password";

/// GET with optional `Authorization`; status, content type and body.
fn get(url: &str, auth: Option<&str>) -> (u16, String, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = reqwest::Client::new().get(url);
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, ct, resp.text().await.unwrap())
    })
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn basic() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

/// A Director simulator with three Diego cells at 25/50/95 % memory.
fn director() -> BoshSim {
    let bosh = BoshSim::start(&[], None);
    bosh.post_json(
        "/configs",
        &json!({"type": "cloud", "name": "default", "content": CLOUD_CONFIG}),
    );
    bosh.deploy(CELLS_MANIFEST);
    set_cell_vitals(&bosh.url, &[25, 50, 95]);
    bosh
}

fn serve(s: &Scratch, args: &[&str]) -> Serve {
    Serve::start_with(
        BIN,
        &s.path().join(format!("data-{}", args.len())),
        args,
        &s.path().join(format!("serve-{}.log", args.len())),
        |c| {
            c.env_remove("CF_API")
                .env_remove("BOSH_ENVIRONMENT")
                .env_remove("BOSH_CA_CERT");
        },
    )
}

#[test]
fn serve_mounts_the_capacity_routes_behind_the_token_only_when_configured() {
    let s = Scratch::new();
    let cf = CfSim::start(&["--apps", "6", "--segments", "1"]);
    let bosh = director();
    let srv = serve(
        &s,
        &[
            "--no-workers",
            "--cf-api",
            &cf.url,
            "--cf-password",
            "admin",
            "--bosh-environment",
            &bosh.url,
            "--bosh-client-secret",
            "admin",
            "--bosh-backoff",
            "10ms",
        ],
    );
    for route in [
        "/api/health",
        "/api/dashboard",
        "/api/cells",
        "/api/apps",
        "/api/segments",
        "/",
    ] {
        let (status, _, body) = get(&format!("{}{route}", srv.url), None);
        assert_eq!(status, 401, "{route} without a token: {body}");
        let (status, _, _) = get(&format!("{}{route}", srv.url), Some("Bearer wrong"));
        assert_eq!(status, 401, "{route} with a wrong token");
    }
    let (status, ct, body) = get(&format!("{}/api/dashboard", srv.url), Some(&bearer()));
    assert_eq!(status, 200, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["metadata"]["bosh_available"], true);
    assert_eq!(d["metadata"]["cached"], false);
    let cells = d["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3, "the router is no cell: {d}");
    assert_eq!(cells[0]["memory_mb"], 32768);
    assert_eq!(cells[0]["used_mb"], 8192);
    assert_eq!(d["apps"].as_array().unwrap().len(), 6);
    // Within the TTL the other routes come from the cache: the CF simulator is not asked.
    let asked = cf.requests();
    let (_, _, cells_body) = get(&format!("{}/api/cells", srv.url), Some(&bearer()));
    let (_, _, apps_body) = get(&format!("{}/api/apps", srv.url), Some(&bearer()));
    let (_, _, segments_body) = get(&format!("{}/api/segments", srv.url), Some(&bearer()));
    assert_eq!(cf.requests(), asked);
    assert_eq!(
        serde_json::from_str::<Value>(&cells_body).unwrap(),
        d["cells"]
    );
    assert_eq!(
        serde_json::from_str::<Value>(&apps_body).unwrap(),
        d["apps"]
    );
    assert_eq!(
        serde_json::from_str::<Value>(&segments_body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2,
        "shared and the generated one"
    );
    let (_, _, health) = get(&format!("{}/api/health", srv.url), Some(&bearer()));
    let h: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        (h["cf_api"].clone(), h["bosh_api"].clone()),
        (json!("ok"), json!("ok"))
    );

    // The page: the cells with their bars, and an environment with its status.
    let posted = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            reqwest::Client::new()
                .post(format!("{}/api/v1/environments", srv.url))
                .header("Authorization", bearer())
                .header("Content-Type", "application/yaml")
                .body(environment_yaml("dash-env"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    assert_eq!(posted, 201);
    let (status, ct, page) = get(&format!("{}/", srv.url), Some(&bearer()));
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(page.contains("data-environment=\"dash-env\""), "{page}");
    assert!(page.contains("status-queued\">queued<"), "{page}");
    assert!(page.contains("3 cells"), "{page}");
    assert!(page.contains("8192 / 32768 MB"), "{page}");
    assert!(page.contains("bar hot"), "the 95 % cell: {page}");
    assert!(!page.contains("id=\"degraded\""), "{page}");
    // The open endpoints stay open.
    assert_eq!(get(&format!("{}/health", srv.url), None).0, 200);
    drop(srv);

    // Without --cf-api: no capacity routes (404 with the token), the page says so.
    let plain = serve(&s, &["--no-workers"]);
    let (status, _, body) = get(&format!("{}/api/dashboard", plain.url), Some(&bearer()));
    assert_eq!(status, 404, "{body}");
    let (status, _, page) = get(&format!("{}/", plain.url), Some(&bearer()));
    assert_eq!(status, 200);
    assert!(
        page.contains("Capacity is not configured") && page.contains("--cf-api"),
        "{page}"
    );
    assert!(page.contains("No environments yet"), "{page}");
}

#[test]
fn serve_with_a_cf_api_that_is_down_answers_502_naming_it_and_the_page_says_so() {
    let s = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", port.local_addr().unwrap());
    drop(port);
    let srv = serve(&s, &["--no-workers", "--cf-api", &gone]);
    let (status, _, body) = get(&format!("{}/api/dashboard", srv.url), Some(&bearer()));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains(&gone), "{body}");
    let (status, _, page) = get(&format!("{}/", srv.url), Some(&bearer()));
    assert_eq!(status, 200);
    assert!(page.contains("id=\"capacity-error\""), "{page}");
    assert!(page.contains(&gone), "{page}");

    // Bad flag values are refused before anything starts.
    let out = s
        .cmd(&["serve", "--no-workers", "--capacity-ttl", "soon"])
        .output()
        .unwrap();
    assert_code(&out, 1);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--capacity-ttl"), "{e}");
}

fn broker(s: &Scratch, bosh: &BoshSim, vault: &VaultSim, extra: &[&str]) -> Broker {
    let vault_url = vault.url();
    let peers = Peers {
        bosh_url: &bosh.url,
        vault_url: &vault_url,
        vault_token: VAULT_TOKEN,
        user: USER,
        password: PASSWORD,
    };
    broker_support::start(s, &peers, extra)
}

#[test]
fn broker_page_counts_the_example_instances_against_limits_and_shows_degraded_mode() {
    let s = Scratch::new();
    s.copy_example("foundation", "fnd");
    let bosh = director();
    let vault = VaultSim::start(VAULT_TOKEN, &[]);
    let cf = CfSim::start(&["--apps", "3", "--segments", "1"]);
    let mut apply = s.cmd(&["apply", "--auto-approve", "fnd"]);
    let out = at_simulators(&mut apply, &bosh.url, &vault.url(), VAULT_TOKEN)
        .output()
        .unwrap();
    assert_code(&out, 0);

    let b = broker(
        &s,
        &bosh,
        &vault,
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
    );
    let (status, _, body) = get(&format!("{}/", b.url), None);
    assert_eq!(status, 401, "{body}");
    let wrong = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:nope"))
        )
    };
    assert_eq!(get(&format!("{}/", b.url), Some(&wrong)).0, 401);
    let (status, ct, page) = get(&format!("{}/", b.url), Some(&basic()));
    assert_eq!(status, 200, "{page}");
    assert!(ct.starts_with("text/html"), "{ct}");
    for (plan, shown) in [
        ("redis-small", "1 / 5"),
        ("redis-cluster", "1 / 2"),
        ("postgresql-standard", "2 / unlimited"),
    ] {
        let row = format!("data-plan=\"{plan}\"");
        let at = page
            .find(&row)
            .unwrap_or_else(|| panic!("no {row}: {page}"));
        let rest = &page[at..];
        let end = rest.find("</tr>").unwrap();
        assert!(
            rest[..end].contains(&format!(">{shown}<")),
            "{plan}: {}",
            &rest[..end]
        );
    }
    assert!(
        page.contains(
            "data-service=\"postgresql\"><td>postgresql</td><td class=\"num count\">2 / 10<"
        ),
        "{page}"
    );
    assert!(page.contains("anvil broker — foundation"), "{page}");
    assert!(page.contains("3 cells"), "{page}");
    assert!(page.contains("the reconciler is off"), "{page}");
    assert!(!page.contains("id=\"degraded\""), "{page}");

    // The Director gone: the instances still show (Vault alone), the banner appears.
    drop(bosh);
    let (status, _, page) = get(&format!("{}/", b.url), Some(&basic()));
    assert_eq!(status, 200);
    assert!(page.contains("id=\"degraded\""), "{page}");
    assert!(page.contains("did not answer"), "{page}");
    assert!(page.contains(">1 / 5<"), "{page}");
}
