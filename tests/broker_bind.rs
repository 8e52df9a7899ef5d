//! Bind, unbind and Blacksmith's `/b/…` endpoints of `anvil broker`, black-box: the real
//! binary against `anvil sim bosh` and `anvil sim vault`, on the example Foundation
//! (its spec instances applied first, so they are bindable).
//!
//! Checks: credentials carry the VM's IP and DNS name from the Director and the
//! password generated once per instance (a second binding gets the same one); Vault
//! holds `{id}/credentials` and `{id}/bindings/{bid}`; the same bind again is 200, a
//! different one on the same id 409; unbind removes the binding secret (and keeps the
//! instance's), a second unbind is 410; no password reaches the state directory; bind
//! to a missing instance, of another plan, of a non-bindable service, with a bad body,
//! without the version header or with wrong credentials gets the spec's status and a
//! description; every `/b/` endpoint refuses without auth and answers with it;
//! `creds.yml` is redacted unless `?reveal=true`; cleanup marks an orphan and keeps its
//! secrets.

mod common;
mod sim_bosh_support;
mod sim_vault_support;

use common::*;
use serde_json::{json, Value};
use sim_bosh_support::BoshSim;
use sim_vault_support::VaultSim;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TOKEN: &str = "root";
const USER: &str = "cc";
const PASS: &str = "broker-secret";
const REDIS: &str = "6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01";
const CLUSTER: &str = "1f7e9d3c-5b2a-4c8e-a6d4-3e2f1a0b9c72";
const PG: &str = "9c3d5e7f-1a2b-4c6d-8e0f-a1b2c3d4e5f6";
const MISSING: &str = "00000000-0000-4000-8000-000000000000";

struct Env {
    s: Scratch,
    bosh: BoshSim,
    vault: VaultSim,
}

/// A running broker; killed when dropped.
struct Broker {
    child: Child,
    url: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Env {
    /// Simulators, the example Foundation with postgresql made non-bindable, applied.
    fn new() -> Env {
        let s = Scratch::new();
        let dir = s.copy_example("foundation", "f");
        let path = dir.join("foundation.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replacen(
            "description: Dedicated PostgreSQL servers\n      bindable: true",
            "description: Dedicated PostgreSQL servers\n      bindable: false",
            1,
        );
        assert!(text.contains("bindable: false"));
        std::fs::write(&path, text).unwrap();
        let env = Env {
            s,
            bosh: BoshSim::start(&[], None),
            vault: VaultSim::start(TOKEN, &[]),
        };
        let o = at_simulators(
            &mut env.s.cmd(&["apply", "--auto-approve", "f"]),
            &env.bosh.url,
            &env.vault.url(),
            TOKEN,
        )
        .output()
        .unwrap();
        assert_code(&o, 0);
        env
    }

    fn broker(&self) -> Broker {
        let mut child = at_simulators(
            &mut self.s.cmd(&[
                "broker",
                "--foundation",
                "f",
                "--listen",
                "127.0.0.1:0",
                "--username",
                USER,
                "--password",
                PASS,
            ]),
            &self.bosh.url,
            &self.vault.url(),
            TOKEN,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start anvil broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("anvil broker printed no address line within 60s")
            });
        let url = line
            .strip_prefix("anvil broker listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Broker { child, url }
    }
}

/// One request: (status, body). `auth` and the version header are optional.
fn call(
    b: &Broker,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    version: bool,
    body: Option<&str>,
) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req =
            reqwest::Client::new().request(method.parse().unwrap(), format!("{}{path}", b.url));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        if version {
            req = req.header("X-Broker-API-Version", "2.17");
        }
        if let Some(body) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("broker request");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    })
}

fn osb(b: &Broker, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let text = body.map(Value::to_string);
    let (status, out) = call(b, method, path, Some((USER, PASS)), true, text.as_deref());
    (
        status,
        serde_json::from_str(&out).unwrap_or(Value::String(out)),
    )
}

fn binding_path(id: &str, bid: &str) -> String {
    format!("/v2/service_instances/{id}/service_bindings/{bid}")
}

fn bind_body(service: &str, plan: &str, app: &str) -> Value {
    json!({"service_id": service, "plan_id": plan, "app_guid": app, "bind_resource": {"app_guid": app}})
}

/// The description of an OSB error body, asserted readable.
fn description(v: &Value) -> String {
    let d = v["description"].as_str().unwrap_or_default().to_string();
    assert!(d.len() > 20, "no readable description: {v}");
    d
}

/// Every file under `dir`, as text.
fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push_str(&all_text(&p));
            } else {
                out.push_str(&String::from_utf8_lossy(
                    &std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    out
}

#[test]
fn bind_unbind_and_blacksmith_endpoints() {
    let env = Env::new();
    let b = env.broker();
    let deployment = format!("redis-small-{REDIS}");

    // The Director's view of the deployment's one VM.
    let (status, _, vms) = env
        .bosh
        .http("GET", &format!("/deployments/{deployment}/vms"), None);
    assert_eq!(status, 200, "{vms}");
    let vms: Value = serde_json::from_str(&vms).unwrap();
    let ip = vms[0]["ips"][0].as_str().unwrap().to_string();

    // First bind: 201 with the VM's address, its DNS name and a generated password.
    let body = bind_body("redis", "redis-small", "app-1");
    let (status, first) = osb(&b, "PUT", &binding_path(REDIS, "b1"), Some(&body));
    assert_eq!(status, 201, "{first}");
    let creds = &first["credentials"];
    assert_eq!(creds["host"], ip.as_str(), "{first}");
    assert_eq!(creds["port"], 6379);
    let hostname = creds["hostname"].as_str().unwrap();
    assert!(
        hostname.ends_with(&format!(".redis.services.{deployment}.bosh")),
        "{hostname}"
    );
    let password = creds["password"].as_str().unwrap().to_string();
    assert_eq!(password.len(), 32, "{password}");
    assert_eq!(
        creds["uri"],
        format!("redis://:{password}@{hostname}:6379").as_str()
    );

    // The same request again: 200 with the same credentials; other attributes: 409.
    let (status, again) = osb(&b, "PUT", &binding_path(REDIS, "b1"), Some(&body));
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["credentials"], first["credentials"]);
    let other = bind_body("redis", "redis-small", "app-2");
    let (status, conflict) = osb(&b, "PUT", &binding_path(REDIS, "b1"), Some(&other));
    assert_eq!(status, 409, "{conflict}");
    assert!(description(&conflict).contains("b1"), "{conflict}");
    // The existing binding id with another plan is a conflict too (the existing binding
    // is compared before the ids are checked against the instance's); a new binding id
    // with that plan is a bad request.
    let other_plan = bind_body("redis", "redis-cluster", "app-1");
    let (status, conflict) = osb(&b, "PUT", &binding_path(REDIS, "b1"), Some(&other_plan));
    assert_eq!(status, 409, "{conflict}");
    assert!(description(&conflict).contains("b1"), "{conflict}");
    let (status, bad) = osb(&b, "PUT", &binding_path(REDIS, "b9"), Some(&other_plan));
    assert_eq!(status, 400, "{bad}");
    assert!(description(&bad).contains("redis-small"), "{bad}");

    // A second binding gets the same instance password.
    let (status, second) = osb(&b, "PUT", &binding_path(REDIS, "b2"), Some(&other));
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["credentials"]["password"], password.as_str());

    // A cluster binding lists every VM.
    let (status, cluster) = osb(
        &b,
        "PUT",
        &binding_path(CLUSTER, "c1"),
        Some(&bind_body("redis", "redis-cluster", "app-3")),
    );
    assert_eq!(status, 201, "{cluster}");
    assert_eq!(cluster["credentials"]["hosts"].as_array().unwrap().len(), 3);
    assert_ne!(cluster["credentials"]["password"], password.as_str());

    // Vault holds the instance's secrets and each binding.
    let secrets = env
        .vault
        .kv_read(&format!("{REDIS}/credentials"), TOKEN)
        .unwrap();
    assert_eq!(secrets["password"], password.as_str());
    let stored = env
        .vault
        .kv_read(&format!("{REDIS}/bindings/b1"), TOKEN)
        .unwrap();
    assert_eq!(stored["credentials"], first["credentials"]);
    assert_eq!(stored["app_guid"], "app-1");

    // GET of the binding and its last_operation.
    let (status, got) = osb(&b, "GET", &binding_path(REDIS, "b1"), None);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["credentials"], first["credentials"]);
    let (status, op) = osb(
        &b,
        "GET",
        &format!("{}/last_operation", binding_path(REDIS, "b1")),
        None,
    );
    assert_eq!(
        (status, op["state"].clone()),
        (200, json!("succeeded")),
        "{op}"
    );

    // No password in the state directory (state, journal, the broker's store).
    let state = all_text(&env.s.path().join("state"));
    assert!(!state.is_empty(), "no state written");
    assert!(!state.contains(&password), "the state holds the password");

    // Unbind: 200, the binding secret goes, the instance's stays; again: 410.
    let q = "?service_id=redis&plan_id=redis-small";
    let (status, out) = osb(
        &b,
        "DELETE",
        &format!("{}{q}", binding_path(REDIS, "b1")),
        None,
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        env.vault.kv_read(&format!("{REDIS}/bindings/b1"), TOKEN),
        None
    );
    assert!(env
        .vault
        .kv_read(&format!("{REDIS}/bindings/b2"), TOKEN)
        .is_some());
    assert!(env
        .vault
        .kv_read(&format!("{REDIS}/credentials"), TOKEN)
        .is_some());
    let (status, out) = osb(
        &b,
        "DELETE",
        &format!("{}{q}", binding_path(REDIS, "b1")),
        None,
    );
    assert_eq!(status, 410, "{out}");
    let (status, out) = osb(&b, "GET", &binding_path(REDIS, "b1"), None);
    assert_eq!(status, 404, "{out}");
    let (status, out) = osb(&b, "DELETE", &binding_path(REDIS, "b2"), None);
    assert_eq!(status, 400, "unbind without service_id/plan_id: {out}");
    description(&out);

    // Bad binds: each with the spec's status and a description.
    let (status, out) = osb(
        &b,
        "PUT",
        &binding_path(MISSING, "x"),
        Some(&bind_body("redis", "redis-small", "a")),
    );
    assert_eq!(status, 400, "{out}");
    assert!(description(&out).contains(MISSING), "{out}");
    let (status, out) = osb(
        &b,
        "PUT",
        &binding_path(REDIS, "x"),
        Some(&bind_body("redis", "redis-cluster", "a")),
    );
    assert_eq!(status, 400, "{out}");
    assert!(description(&out).contains("redis-small"), "{out}");
    let (status, out) = osb(
        &b,
        "PUT",
        &binding_path(PG, "x"),
        Some(&bind_body("postgresql", "postgresql-standard", "a")),
    );
    assert_eq!(status, 400, "{out}");
    assert!(description(&out).contains("not bindable"), "{out}");
    let (status, out) = call(
        &b,
        "PUT",
        &binding_path(REDIS, "x"),
        Some((USER, PASS)),
        true,
        Some("{nope"),
    );
    assert_eq!(status, 400, "{out}");
    let (status, out) = call(
        &b,
        "PUT",
        &binding_path(REDIS, "x"),
        Some((USER, PASS)),
        false,
        Some(&body.to_string()),
    );
    assert_eq!(status, 412, "{out}");
    let (status, out) = call(
        &b,
        "PUT",
        &binding_path(REDIS, "x"),
        Some((USER, "wrong")),
        true,
        Some(&body.to_string()),
    );
    assert_eq!(status, 401, "{out}");
    assert_eq!(
        env.vault.kv_read(&format!("{REDIS}/bindings/x"), TOKEN),
        None
    );
    assert_eq!(
        env.vault.kv_read(&format!("{MISSING}/credentials"), TOKEN),
        None
    );

    // Blacksmith's endpoints: 401 without auth, answers with it.
    let endpoints = [
        ("GET", "/b/status".to_string()),
        ("GET", format!("/b/deployments/{deployment}/vms")),
        ("GET", format!("/b/deployments/{deployment}/events")),
        ("GET", format!("/b/{REDIS}/manifest.yml")),
        ("GET", format!("/b/{REDIS}/creds.yml")),
        ("GET", format!("/b/{REDIS}/task.log")),
        ("POST", format!("/b/{REDIS}/redeploy")),
        ("POST", "/b/cleanup".to_string()),
    ];
    for (method, path) in &endpoints {
        let (status, out) = call(&b, method, path, None, false, None);
        assert_eq!(status, 401, "{method} {path} without auth: {out}");
        let (status, out) = call(&b, method, path, Some((USER, "nope")), false, None);
        assert_eq!(status, 401, "{method} {path} with a wrong password: {out}");
    }
    let admin = Some((USER, PASS));
    let (status, out) = call(&b, "GET", "/b/status", admin, false, None);
    assert_eq!(status, 200, "{out}");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["env"], "foundation");
    assert!(st["version"].is_string());
    assert_eq!(st["instances"].as_object().unwrap().len(), 4, "{st}");
    let small = st["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plan_id"] == "redis-small")
        .unwrap();
    assert_eq!(
        (small["count"].clone(), small["limit"].clone()),
        (json!(1), json!(5))
    );

    let (status, out) = call(&b, "GET", &endpoints[1].1, admin, false, None);
    assert_eq!(status, 200, "{out}");
    let vms: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(vms[0]["ips"][0], ip.as_str());
    let (status, out) = call(&b, "GET", &endpoints[2].1, admin, false, None);
    assert_eq!(status, 200, "{out}");
    assert!(!serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
    let (status, out) = call(&b, "GET", &endpoints[3].1, admin, false, None);
    assert_eq!(status, 200, "{out}");
    assert!(out.contains(&format!("name: {deployment}")), "{out}");

    let (status, redacted) = call(&b, "GET", &endpoints[4].1, admin, false, None);
    assert_eq!(status, 200, "{redacted}");
    assert!(
        redacted.contains("<redacted>") && !redacted.contains(&password),
        "{redacted}"
    );
    assert!(redacted.contains("b2"), "{redacted}");
    let (status, revealed) = call(
        &b,
        "GET",
        &format!("{}?reveal=true", endpoints[4].1),
        admin,
        false,
        None,
    );
    assert_eq!(status, 200, "{revealed}");
    assert!(revealed.contains(&password), "{revealed}");
    let (status, out) = call(
        &b,
        "GET",
        &format!("{}?reveal=maybe", endpoints[4].1),
        admin,
        false,
        None,
    );
    assert_eq!(status, 400, "{out}");

    let (status, log) = call(&b, "GET", &endpoints[5].1, admin, false, None);
    assert_eq!(status, 200, "{log}");
    assert!(
        !log.is_empty()
            && log
                .lines()
                .all(|l| l.starts_with("Task ") && l.split(" | ").count() == 3),
        "{log}"
    );

    let (status, out) = call(&b, "POST", &endpoints[6].1, admin, false, None);
    assert_eq!(status, 202, "{out}");
    assert!(
        serde_json::from_str::<Value>(&out).unwrap()["task_id"].is_u64(),
        "{out}"
    );

    for path in [
        format!("/b/{MISSING}/manifest.yml"),
        format!("/b/{MISSING}/creds.yml"),
        format!("/b/{MISSING}/task.log"),
        "/b/deployments/nope/vms".to_string(),
    ] {
        let (status, out) = call(&b, "GET", &path, admin, false, None);
        assert_eq!(status, 404, "{path}: {out}");
    }

    // Cleanup marks an instance whose deployment is gone, and keeps its secrets.
    env.bosh.delete(&format!("postgresql-standard-{PG}"));
    let (status, out) = call(&b, "POST", "/b/cleanup", admin, false, None);
    assert_eq!(status, 200, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(
        report["orphaned"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["instance_id"] == PG),
        "{report}"
    );
    let index = env.vault.kv_read("db", TOKEN).unwrap();
    assert_eq!(index[PG]["orphaned"], true, "{index}");
    assert!(env
        .vault
        .kv_read(&format!("{PG}/manifest"), TOKEN)
        .is_some());

    // A broker-provisioned instance: listed by `anvil instances` with its origin, and
    // bindable once its provisioning succeeded.
    let fresh = "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7";
    let (status, out) = osb(
        &b,
        "PUT",
        &format!("/v2/service_instances/{fresh}?accepts_incomplete=true"),
        Some(&json!({"service_id": "redis", "plan_id": "redis-small",
            "organization_guid": "org", "space_guid": "space"})),
    );
    assert_eq!(status, 202, "{out}");
    let op = out["operation"].as_str().unwrap_or_default().to_string();
    let mut state = Value::Null;
    for _ in 0..600 {
        let (status, last) = osb(
            &b,
            "GET",
            &format!("/v2/service_instances/{fresh}/last_operation?operation={op}"),
            None,
        );
        assert_eq!(status, 200, "{last}");
        state = last["state"].clone();
        if state != "in progress" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state, "succeeded");
    let o = at_simulators(
        &mut env.s.cmd(&["instances", "f", "--json"]),
        &env.bosh.url,
        &env.vault.url(),
        TOKEN,
    )
    .output()
    .unwrap();
    assert_code(&o, 0);
    let rows: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let origins: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["origin"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(origins.len(), 5, "{rows}");
    assert!(origins[..4].iter().all(|(_, o)| o == "spec"), "{rows}");
    assert_eq!(
        origins[4],
        (fresh.to_string(), "broker".to_string()),
        "{rows}"
    );
    assert_eq!(rows[4]["status"], "provision succeeded", "{rows}");
    let (status, bound) = osb(
        &b,
        "PUT",
        &binding_path(fresh, "f1"),
        Some(&bind_body("redis", "redis-small", "app-9")),
    );
    assert_eq!(status, 201, "{bound}");
    let (_, _, vms) = env.bosh.http(
        "GET",
        &format!("/deployments/redis-small-{fresh}/vms"),
        None,
    );
    let vms: Value = serde_json::from_str(&vms).unwrap();
    assert_eq!(bound["credentials"]["host"], vms[0]["ips"][0]);
    assert_ne!(bound["credentials"]["password"], password.as_str());
}
