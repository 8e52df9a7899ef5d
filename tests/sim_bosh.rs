//! `anvil sim bosh`: the simulated BOSH Director driven in-process through its router
//! (paused tokio clock where timing matters) and, black-box, as the real binary over
//! TLS with its CA pinned.

use anvil::sim::bosh::{router, AuthMode, BoshSim, SimConfig};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;

const BASIC: &str = "Basic YWRtaW46YWRtaW4="; // admin:admin

const MANIFEST: &str = "\
name: redis
releases:
- {name: redis, version: \"15.1\"}
stemcells:
- {alias: default, os: ubuntu-jammy, version: \"1.406\"}
instance_groups:
- name: redis
  instances: 3
  vm_type: small
  azs: [z1, z2]
  jobs:
  - {name: redis-server, release: redis}
properties: {password: hunter2}
";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

fn sim_with(f: impl FnOnce(&mut SimConfig)) -> (BoshSim, Router) {
    let mut cfg = SimConfig {
        seed: Some(1),
        ..SimConfig::default()
    };
    f(&mut cfg);
    let sim = BoshSim::new(cfg).unwrap();
    let app = router(sim.clone());
    (sim, app)
}

fn sim() -> Router {
    sim_with(|_| {}).1
}

fn slow(ms: u64) -> Router {
    sim_with(|c| c.faults.task_duration_ms = ms).1
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: &Router, uri: &str) -> Reply {
    call(app, Method::GET, uri, &[("authorization", BASIC)], "").await
}

async fn deploy(app: &Router, manifest: &str) -> u64 {
    let r = call(
        app,
        Method::POST,
        "/deployments",
        &[("authorization", BASIC), ("content-type", "text/yaml")],
        manifest,
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    task_id(&r)
}

fn task_id(r: &Reply) -> u64 {
    r.header("location")
        .strip_prefix("/tasks/")
        .unwrap_or_else(|| panic!("location: {:?}", r.header("location")))
        .parse()
        .unwrap()
}

async fn task(app: &Router, id: u64) -> Value {
    get(app, &format!("/tasks/{id}")).await.json()
}

async fn wait_task(app: &Router, id: u64) -> Value {
    for _ in 0..1000 {
        let t = task(app, id).await;
        if !["queued", "processing", "cancelling"].contains(&t["state"].as_str().unwrap()) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {id} never ended");
}

#[tokio::test(start_paused = true)]
async fn deploy_runs_a_task_then_stores_the_manifest() {
    let app = slow(5_000);
    let id = deploy(&app, MANIFEST).await;
    let t = task(&app, id).await;
    assert_eq!(t["state"], "processing");
    assert_eq!(t["description"], "create deployment");
    assert_eq!(t["deployment"], "redis");
    assert_eq!(t["user"], "admin");
    // Not there until the task is done; locked meanwhile.
    assert_eq!(
        get(&app, "/deployments/redis").await.status,
        StatusCode::NOT_FOUND
    );
    let locks = get(&app, "/locks").await.json();
    assert_eq!(locks[0]["resource"], json!(["redis"]));
    assert_eq!(locks[0]["task_id"], json!(id.to_string()));

    tokio::time::sleep(Duration::from_millis(4_900)).await;
    assert_eq!(task(&app, id).await["state"], "processing");
    let t = wait_task(&app, id).await;
    assert_eq!(t["state"], "done");
    assert_eq!(t["result"], "/deployments/redis");
    let d = get(&app, "/deployments/redis").await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.json()["manifest"], MANIFEST);
    let list = get(&app, "/deployments").await.json();
    assert_eq!(list[0]["name"], "redis");
    assert_eq!(list[0]["locked"], false);
    assert_eq!(
        list[0]["releases"],
        json!([{"name": "redis", "version": "15.1"}])
    );
    assert_eq!(get(&app, "/locks").await.json(), json!([]));
    let events = get(&app, "/events?deployment=redis").await.json();
    assert_eq!(events.as_array().unwrap().len(), 2);
    assert_eq!(events[0]["action"], "create");
    assert_eq!(events[0]["parent_id"], events[1]["id"]);
    let before = get(&app, "/events?before_id=2").await.json();
    assert_eq!(before.as_array().unwrap().len(), 1);
    assert_eq!(
        get(&app, "/events?deployment=other").await.json(),
        json!([])
    );
    let releases = get(&app, "/releases").await.json();
    assert_eq!(
        releases[0]["release_versions"][0]["currently_deployed"],
        true
    );
    let stemcells = get(&app, "/stemcells").await.json();
    assert_eq!(stemcells[0]["operating_system"], "ubuntu-jammy");
}

#[tokio::test(start_paused = true)]
async fn task_output_supports_ranges() {
    let app = slow(1_000);
    let id = deploy(&app, MANIFEST).await;
    let url = format!("/tasks/{id}/output?type=event");
    let first = get(&app, &url).await;
    assert_eq!(first.status, StatusCode::OK);
    let n = first.body.len();
    assert!(first.body.contains("\"stage\":\"Preparing deployment\""));
    let range = format!("bytes={n}-");
    let hdrs = [("authorization", BASIC), ("range", range.as_str())];
    let none = call(&app, Method::GET, &url, &hdrs, "").await;
    assert_eq!(none.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        get(&app, &format!("/tasks/{id}/output?type=result"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    assert_eq!(wait_task(&app, id).await["state"], "done");
    let more = call(&app, Method::GET, &url, &hdrs, "").await;
    assert_eq!(more.status, StatusCode::PARTIAL_CONTENT);
    let total = n + more.body.len();
    assert_eq!(
        more.header("content-range"),
        format!("bytes {n}-{}/{total}", total - 1)
    );
    let lines: Vec<Value> = more
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "3 instances started + finished");
    assert_eq!(lines[0]["stage"], "Updating instance");
    assert_eq!(lines[0]["tags"], json!(["redis"]));
    assert_eq!(lines[0]["task"], "redis/0");
    assert_eq!(lines[0]["total"], 3);
    assert_eq!(lines[5]["state"], "finished");
    assert_eq!(lines[5]["index"], 3);
    let debug = get(&app, &format!("/tasks/{id}/output?type=debug")).await;
    assert!(debug.body.contains("DirectorJobRunner"));
}

#[tokio::test(start_paused = true)]
async fn vms_sync_and_full_format() {
    let app = sim();
    let id = deploy(&app, MANIFEST).await;
    assert_eq!(wait_task(&app, id).await["state"], "done");
    let vms = get(&app, "/deployments/redis/vms").await.json();
    assert_eq!(vms.as_array().unwrap().len(), 3);
    assert_eq!(vms[1]["job"], "redis");
    let r = get(&app, "/deployments/redis/vms?format=full").await;
    assert_eq!(r.status, StatusCode::FOUND);
    let vid = task_id(&r);
    let t = wait_task(&app, vid).await;
    assert_eq!(t["state"], "done");
    assert_eq!(t["description"], "retrieve vm-stats");
    let out = get(&app, &format!("/tasks/{vid}/output?type=result")).await;
    let lines: Vec<Value> = out
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let v = &lines[0];
    assert_eq!(v["job_name"], "redis");
    assert_eq!(v["index"], 0);
    assert_eq!(v["bootstrap"], true);
    assert_eq!(lines[1]["bootstrap"], false);
    assert_eq!(v["az"], "z1");
    assert_eq!(lines[1]["az"], "z2");
    assert_eq!(v["vm_type"], "small");
    assert_eq!(v["job_state"], "running");
    assert_eq!(
        v["processes"],
        json!([{"name": "redis-server", "state": "running"}])
    );
    assert!(v["vitals"]["cpu"]["user"].is_string());
    assert!(v["vitals"]["mem"]["kb"].is_string());
    assert!(v["vitals"]["load"][0].is_string());
    assert!(v["vitals"]["disk"]["persistent"]["percent"].is_string());
    assert!(v["ips"][0].as_str().unwrap().starts_with("10."));
    // The same deployment gives the same VMs.
    assert_eq!(vms[0]["id"], v["id"]);
    // vm-stats tasks are hidden unless verbose=2.
    let listed = get(&app, "/tasks").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let listed = get(&app, "/tasks?verbose=2").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(
        get(&app, "/deployments/nope/vms").await.json()["code"],
        70000
    );
}

#[tokio::test(start_paused = true)]
async fn delete_removes_the_deployment_when_done() {
    let app = slow(2_000);
    let id = deploy(&app, MANIFEST).await;
    wait_task(&app, id).await;
    let r = call(
        &app,
        Method::DELETE,
        "/deployments/redis?force=true",
        &[("authorization", BASIC)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let del = task_id(&r);
    assert_eq!(
        task(&app, del).await["description"],
        "delete deployment redis"
    );
    assert_eq!(get(&app, "/deployments/redis").await.status, StatusCode::OK);
    assert_eq!(wait_task(&app, del).await["state"], "done");
    let gone = get(&app, "/deployments/redis").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        gone.json(),
        json!({"code": 70000, "description": "Deployment 'redis' doesn't exist"})
    );
    assert_eq!(get(&app, "/deployments").await.json(), json!([]));
    let again = call(
        &app,
        Method::DELETE,
        "/deployments/redis",
        &[("authorization", BASIC)],
        "",
    )
    .await;
    assert_eq!(again.json()["code"], 70000);
}

#[tokio::test(start_paused = true)]
async fn diff_against_new_and_existing_deployments() {
    let app = sim();
    let hdrs = [("authorization", BASIC), ("content-type", "text/yaml")];
    let r = call(
        &app,
        Method::POST,
        "/deployments/redis/diff?redact=true",
        &hdrs,
        MANIFEST,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let d = r.json();
    assert_eq!(
        d["context"],
        json!({"cloud_config_ids": [], "runtime_config_ids": []})
    );
    let lines = d["diff"].as_array().unwrap();
    assert!(lines.contains(&json!(["name: redis", "added"])));
    assert!(lines.iter().all(|l| l[1] == "added"));
    assert!(!r.body.contains("hunter2"), "properties are redacted");

    wait_task(&app, deploy(&app, MANIFEST).await).await;
    let changed = MANIFEST.replace("instances: 3", "instances: 5");
    let d = call(
        &app,
        Method::POST,
        "/deployments/redis/diff",
        &hdrs,
        &changed,
    )
    .await
    .json();
    let lines = d["diff"].as_array().unwrap();
    assert!(lines.contains(&json!(["    instances: 5", "added"])), "{d}");
    assert!(
        lines.contains(&json!(["    instances: 3", "removed"])),
        "{d}"
    );
    assert!(lines.contains(&json!(["name: redis", null])));
    let bad = call(
        &app,
        Method::POST,
        "/deployments/redis/diff",
        &hdrs,
        "name: [\n",
    )
    .await;
    assert_eq!(bad.status, StatusCode::OK);
    let bad = bad.json();
    assert_eq!(bad["diff"], json!([]));
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .starts_with("Unable to diff manifest: "));
}

#[tokio::test]
async fn errors_look_like_the_directors() {
    let app = sim();
    let yaml = [("authorization", BASIC), ("content-type", "text/yaml")];
    let r = get(&app, "/deployments/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.json(),
        json!({"code": 70000, "description": "Deployment 'nope' doesn't exist"})
    );
    let r = call(&app, Method::POST, "/deployments", &yaml, "releases: []\n").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json(),
        json!({"code": 40001, "description": "Deployment manifest must have a 'name' key"})
    );
    let r = call(&app, Method::POST, "/deployments", &yaml, "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json(),
        json!({"code": 440001, "description": "Manifest should not be empty"})
    );
    let r = get(&app, "/tasks/999").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["code"], 10000);
    assert_eq!(
        get(&app, "/tasks/999/output?type=event").await.json()["code"],
        10000
    );
    let r = get(&app, "/x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, "Endpoint '/x' not found.");
    let r = call(
        &app,
        Method::POST,
        "/deployments",
        &[
            ("authorization", BASIC),
            ("content-type", "application/json"),
        ],
        MANIFEST,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, "Endpoint '/deployments' not found.");
    // Authentication is checked before the content type.
    let r = call(
        &app,
        Method::POST,
        "/deployments",
        &[("content-type", "application/json")],
        MANIFEST,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for auth in [None, Some("Basic YWRtaW46bm9wZQ==")] {
        let hdrs: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
        let r = call(&app, Method::GET, "/deployments", &hdrs, "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body, "Not authorized: '/deployments'");
        assert_eq!(
            r.header("www-authenticate"),
            "Basic realm=\"BOSH Director\""
        );
    }
    // /info needs no credentials and names the user when there are good ones.
    let info = call(&app, Method::GET, "/info", &[], "").await.json();
    assert_eq!(info["user"], Value::Null);
    assert_eq!(info["version"], "281.0.0 (00000000)");
    assert_eq!(
        info["user_authentication"],
        json!({"type": "basic", "options": {}})
    );
    assert_eq!(get(&app, "/info").await.json()["user"], "admin");
}

#[tokio::test(start_paused = true)]
async fn uaa_tokens_work_until_they_expire() {
    let (sim, app) = sim_with(|c| {
        c.auth = AuthMode::Uaa {
            client: "director".into(),
            secret: "s3cret".into(),
        };
        c.token_ttl = Duration::from_secs(2);
    });
    sim.set_base_url("https://127.0.0.1:9999");
    let info = call(&app, Method::GET, "/info", &[], "").await.json();
    assert_eq!(
        info["user_authentication"],
        json!({"type": "uaa", "options": {"url": "https://127.0.0.1:9999/uaa", "urls": ["https://127.0.0.1:9999/uaa"]}})
    );
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("accept", "application/json"),
    ];
    let bad_creds = [
        form[0],
        form[1],
        ("authorization", "Basic ZGlyZWN0b3I6bm9wZQ=="),
    ];
    let r = call(
        &app,
        Method::POST,
        "/uaa/oauth/token",
        &bad_creds,
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let good = [
        form[0],
        form[1],
        ("authorization", "Basic ZGlyZWN0b3I6czNjcmV0"),
    ]; // director:s3cret
    let r = call(
        &app,
        Method::POST,
        "/uaa/oauth/token",
        &good,
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let tok = r.json();
    assert_eq!(tok["token_type"], "bearer");
    assert_eq!(tok["expires_in"], 2);
    let bearer = format!("bearer {}", tok["access_token"].as_str().unwrap());
    let upper = format!("Bearer {}", tok["access_token"].as_str().unwrap());
    for h in [&bearer, &upper] {
        let r = call(
            &app,
            Method::GET,
            "/deployments",
            &[("authorization", h)],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let info = call(
        &app,
        Method::GET,
        "/info",
        &[("authorization", &bearer)],
        "",
    )
    .await
    .json();
    assert_eq!(info["user"], "director");
    // Basic auth is not accepted by a UAA Director.
    assert_eq!(
        get(&app, "/deployments").await.status,
        StatusCode::UNAUTHORIZED
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = call(
        &app,
        Method::GET,
        "/deployments",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("www-authenticate"),
        "Basic realm=\"BOSH Director\""
    );
}

async fn outcomes(seed: u64) -> Vec<u16> {
    let (_, app) = sim_with(|c| {
        c.faults.fail_rate = 0.5;
        c.seed = Some(seed);
    });
    let mut out = Vec::new();
    for _ in 0..40 {
        let r = get(&app, "/info").await;
        if r.status == StatusCode::INTERNAL_SERVER_ERROR {
            assert_eq!(
                r.json(),
                json!({"code": 100, "description": "simulated failure"})
            );
        }
        out.push(r.status.as_u16());
    }
    // Never on the control endpoints.
    for _ in 0..20 {
        assert_eq!(get(&app, "/_sim/faults").await.status, StatusCode::OK);
    }
    out
}

#[tokio::test]
async fn fail_rate_with_a_seed_is_reproducible() {
    let a = outcomes(42).await;
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
    assert_eq!(a, outcomes(42).await);
}

#[tokio::test(start_paused = true)]
async fn failed_tasks_keep_the_old_manifest() {
    let (_, app) = sim_with(|c| c.faults.fail_tasks = 1.0);
    let id = deploy(&app, MANIFEST).await;
    let t = wait_task(&app, id).await;
    assert_eq!(t["state"], "error");
    assert!(t["result"].as_str().unwrap().contains("'redis'"), "{t}");
    assert_eq!(
        get(&app, "/deployments/redis").await.status,
        StatusCode::NOT_FOUND
    );
    let events = get(&app, &format!("/tasks/{id}/output?type=event"))
        .await
        .body;
    let last: Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], 100);
    assert!(events.contains("\"state\":\"failed\""));

    // Turn task failures off at run time, deploy, then fail an update.
    let put = |body: &'static str| {
        let app = app.clone();
        async move { call(&app, Method::PUT, "/_sim/faults", &[], body).await }
    };
    assert_eq!(put(r#"{"fail_tasks":0}"#).await.status, StatusCode::OK);
    assert_eq!(
        wait_task(&app, deploy(&app, MANIFEST).await).await["state"],
        "done"
    );
    put(r#"{"fail_tasks":1}"#).await;
    let changed = MANIFEST.replace("instances: 3", "instances: 1");
    assert_eq!(
        wait_task(&app, deploy(&app, &changed).await).await["state"],
        "error"
    );
    assert_eq!(
        get(&app, "/deployments/redis").await.json()["manifest"],
        MANIFEST
    );
}

#[tokio::test(start_paused = true)]
async fn faults_change_at_run_time() {
    let app = sim();
    let f = call(&app, Method::GET, "/_sim/faults", &[], "")
        .await
        .json();
    assert_eq!(
        f,
        json!({"fail_rate": 0.0, "fail_tasks": 0.0, "task_duration_ms": 0, "latency_ms": 0})
    );
    let r = call(
        &app,
        Method::PUT,
        "/_sim/faults",
        &[],
        r#"{"fail_rate":1.0,"task_duration_ms":3000}"#,
    )
    .await;
    assert_eq!(r.json()["task_duration_ms"], 3000);
    assert_eq!(
        get(&app, "/info").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    call(&app, Method::PUT, "/_sim/faults", &[], r#"{"fail_rate":0}"#).await;
    assert_eq!(get(&app, "/info").await.status, StatusCode::OK);
    let id = deploy(&app, MANIFEST).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(task(&app, id).await["state"], "processing");
    let bad = call(&app, Method::PUT, "/_sim/faults", &[], r#"{"fail_rate":2}"#).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let r = call(&app, Method::POST, "/_sim/reset", &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(get(&app, "/tasks").await.json(), json!([]));
}

#[tokio::test(start_paused = true)]
async fn latency_delays_answers_but_not_sim_control() {
    let app = sim();
    call(
        &app,
        Method::PUT,
        "/_sim/faults",
        &[],
        r#"{"latency_ms":1500}"#,
    )
    .await;
    let t0 = tokio::time::Instant::now();
    assert_eq!(get(&app, "/info").await.status, StatusCode::OK);
    assert!(t0.elapsed() >= Duration::from_millis(1500));
    let t1 = tokio::time::Instant::now();
    call(&app, Method::GET, "/_sim/faults", &[], "").await;
    assert!(t1.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn configs_refuse_a_stale_expected_latest_id() {
    let app = sim();
    let post = |body: Value| {
        let app = app.clone();
        async move {
            call(
                &app,
                Method::POST,
                "/configs",
                &[
                    ("authorization", BASIC),
                    ("content-type", "application/json"),
                ],
                &body.to_string(),
            )
            .await
        }
    };
    let r = post(json!({"type": "cloud", "name": "default", "content": "azs: []\n"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let first = r.json()["id"].as_str().unwrap().to_string();
    let r = post(json!({"type": "cloud", "name": "default", "content": "azs: [{name: z1}]\n", "expected_latest_id": first})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let second = r.json()["id"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let r = post(json!({"type": "cloud", "name": "default", "content": "azs: []\n", "expected_latest_id": first})).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let latest = get(&app, "/configs?type=cloud&name=default&latest=true")
        .await
        .json();
    assert_eq!(latest.as_array().unwrap().len(), 1);
    assert_eq!(latest[0]["id"], json!(second));
    assert_eq!(latest[0]["current"], true);
    assert_eq!(latest[0]["team"], Value::Null);
    let all = get(&app, "/configs?type=cloud&latest=false").await.json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    // Deployments record the cloud config they were deployed with.
    wait_task(&app, deploy(&app, MANIFEST).await).await;
    assert_eq!(
        get(&app, "/deployments").await.json()[0]["cloud_config"],
        "latest"
    );
    post(json!({"type": "cloud", "name": "default", "content": "azs: [{name: z2}]\n"})).await;
    assert_eq!(
        get(&app, "/deployments").await.json()[0]["cloud_config"],
        "outdated"
    );
}

#[tokio::test(start_paused = true)]
async fn tasks_queue_per_deployment_and_can_be_cancelled() {
    let app = slow(10_000);
    let first = deploy(&app, MANIFEST).await;
    let second = deploy(&app, &MANIFEST.replace("instances: 3", "instances: 2")).await;
    let third = deploy(&app, &MANIFEST.replace("instances: 3", "instances: 1")).await;
    assert_eq!(task(&app, first).await["state"], "processing");
    assert_eq!(task(&app, second).await["state"], "queued");
    let queued = get(&app, "/tasks?state=queued&deployment=redis")
        .await
        .json();
    assert_eq!(queued.as_array().unwrap().len(), 2);
    assert_eq!(get(&app, "/tasks?limit=1").await.json()[0]["id"], third);

    let cancel = |id: u64| {
        let app = app.clone();
        async move {
            call(
                &app,
                Method::DELETE,
                &format!("/task/{id}"),
                &[("authorization", BASIC)],
                "",
            )
            .await
        }
    };
    assert_eq!(cancel(first).await.status, StatusCode::NO_CONTENT);
    // A processing task shows `cancelling` until it stops, and keeps its lock meanwhile.
    assert_eq!(task(&app, first).await["state"], "cancelling");
    // A queued one is cancelled at once.
    assert_eq!(cancel(third).await.status, StatusCode::NO_CONTENT);
    assert_eq!(task(&app, third).await["state"], "cancelled");
    let t = wait_task(&app, first).await;
    assert_eq!(t["state"], "cancelled");
    assert_eq!(t["result"], "Task cancelled");
    let log = get(&app, &format!("/tasks/{first}/output?type=event"))
        .await
        .body;
    assert!(log.lines().last().unwrap().contains("\"error\""));
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert_eq!(task(&app, second).await["state"], "processing");
    let t = wait_task(&app, second).await;
    assert_eq!(t["state"], "done");
    assert_eq!(task(&app, third).await["state"], "cancelled");
    let m = get(&app, "/deployments/redis").await.json();
    assert!(m["manifest"].as_str().unwrap().contains("instances: 2"));
    assert_eq!(cancel(second).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(cancel(99).await.json()["code"], 10000);
}

#[tokio::test(start_paused = true)]
async fn dry_run_and_context_do_not_store() {
    let app = sim();
    let r = call(
        &app,
        Method::POST,
        "/deployments?dry_run=true&context=ctx-1&recreate=true&max_in_flight=2",
        &[
            ("authorization", BASIC),
            ("content-type", "text/yaml; charset=utf-8"),
        ],
        MANIFEST,
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let t = wait_task(&app, task_id(&r)).await;
    assert_eq!(t["state"], "done");
    assert_eq!(t["context_id"], "ctx-1");
    assert_eq!(
        get(&app, "/deployments/redis").await.status,
        StatusCode::NOT_FOUND
    );
}

mod black_box {
    use super::MANIFEST;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    struct Server(Child);
    impl Drop for Server {
        fn drop(&mut self) {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(self.0.id() as i32, libc::SIGTERM);
            }
            let _ = self.0.wait();
        }
    }

    fn start(args: &[&str]) -> (Server, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_anvil"))
            .args(["sim", "bosh", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("anvil sim bosh listening on ")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_string();
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        assert!(!url.ends_with(":0"));
        (Server(child), url)
    }

    impl Server {
        /// SIGTERM, then the exit status (graceful shutdown exits 0).
        fn stop(mut self) -> std::process::ExitStatus {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(self.0.id() as i32, libc::SIGTERM);
            }
            let status = self.0.wait().unwrap();
            std::mem::forget(self);
            status
        }
    }

    fn client(ca_pem: &[u8]) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn real_binary_serves_tls_with_a_pinned_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca_out = dir.path().join("ca.pem");
        let ca_arg = ca_out.to_str().unwrap();
        let (server, url) = start(&["--tls", "--ca-out", ca_arg, "--task-duration", "200ms"]);
        let ca = std::fs::read(&ca_out).unwrap();
        let client = client(&ca);
        let info: serde_json::Value = client
            .get(format!("{url}/info"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["version"], "281.0.0 (00000000)");
        assert_eq!(info["user"], serde_json::Value::Null);

        // A client without the CA refuses the certificate.
        let plain = reqwest::Client::builder().use_rustls_tls().build().unwrap();
        assert!(plain.get(format!("{url}/info")).send().await.is_err());

        // Basic-auth deploy round trip.
        let r = client
            .post(format!("{url}/deployments"))
            .basic_auth("admin", Some("admin"))
            .header("content-type", "text/yaml")
            .body(MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let mut state = String::new();
        for _ in 0..400 {
            let t: serde_json::Value = client
                .get(format!("{url}{loc}"))
                .basic_auth("admin", Some("admin"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            state = t["state"].as_str().unwrap().to_string();
            if state != "queued" && state != "processing" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(state, "done");
        let d: serde_json::Value = client
            .get(format!("{url}/deployments/redis"))
            .basic_auth("admin", Some("admin"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(d["manifest"], MANIFEST);
        assert!(server.stop().success());
    }

    #[tokio::test]
    async fn real_binary_with_given_cert_and_uaa_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let pem = anvil::sim::bosh::tls::generate([127, 0, 0, 1].into()).unwrap();
        let (cert, key, ca_out) = (
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
            dir.path().join("ca.pem"),
        );
        std::fs::write(&cert, &pem.chain).unwrap();
        std::fs::write(&key, &pem.key).unwrap();
        let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let (server, url) = start(&[
            "--cert",
            &s(&cert),
            "--key",
            &s(&key),
            "--ca-out",
            &s(&ca_out),
            "--auth",
            "uaa",
            "--client",
            "director",
            "--client-secret",
            "s3cret",
            "--token-ttl",
            "2s",
        ]);
        assert_eq!(std::fs::read_to_string(&ca_out).unwrap(), pem.chain);
        let client = client(pem.ca.as_bytes());
        let info: serde_json::Value = client
            .get(format!("{url}/info"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let uaa = info["user_authentication"]["options"]["url"]
            .as_str()
            .unwrap();
        assert_eq!(uaa, format!("{url}/uaa"));
        let tok: serde_json::Value = client
            .post(format!("{uaa}/oauth/token"))
            .basic_auth("director", Some("s3cret"))
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bearer = format!("bearer {}", tok["access_token"].as_str().unwrap());
        let deps = |client: reqwest::Client, bearer: String, url: String| async move {
            client
                .get(format!("{url}/deployments"))
                .header("authorization", bearer)
                .send()
                .await
                .unwrap()
                .status()
        };
        assert_eq!(deps(client.clone(), bearer.clone(), url.clone()).await, 200);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(deps(client.clone(), bearer.clone(), url.clone()).await, 401);
        assert!(server.stop().success());
    }
}
