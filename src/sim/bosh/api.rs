//! The HTTP surface of the simulated Director: routes, authentication, error bodies,
//! fault injection and the `/_sim/` control endpoints.

use super::manifest;
use super::store::{self, latest_config, lock_holder, now, Action, Config, Faults, Vitals};
use super::{AuthMode, BoshSim};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

type Q = Query<HashMap<String, String>>;

/// The Director's JSON error body with its status.
fn error(status: StatusCode, code: u32, description: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "description": description.into()})),
    )
        .into_response()
}

fn not_found(path: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("Endpoint '{path}' not found."),
    )
        .into_response()
}

fn no_deployment(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        70000,
        format!("Deployment '{name}' doesn't exist"),
    )
}

fn unauthorized(path: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Basic realm=\"BOSH Director\""),
            (header::CONTENT_TYPE, "text/plain"),
        ],
        format!("Not authorized: '{path}'"),
    )
        .into_response()
}

fn redirect_task(id: u64) -> Response {
    (
        StatusCode::FOUND,
        [(header::LOCATION, format!("/tasks/{id}"))],
    )
        .into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The authenticated user of a request, if its credentials are good.
fn user_of(sim: &BoshSim, headers: &HeaderMap) -> Option<String> {
    match &sim.config.auth {
        AuthMode::Basic { username, password } => {
            let (u, p) = basic_credentials(headers)?;
            (u == *username && p == *password).then_some(u)
        }
        AuthMode::Uaa { .. } => {
            let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            let (scheme, token) = v.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            let g = sim.store.lock();
            let (user, expires) = g.tokens.get(token.trim())?;
            (tokio::time::Instant::now() < *expires).then(|| user.clone())
        }
    }
}

/// The authenticated user, or an early 401 answer from the handler.
macro_rules! auth {
    ($sim:expr, $headers:expr, $uri:expr) => {
        match user_of(&$sim, &$headers) {
            Some(u) => u,
            None => {
                $sim.store.lock().unauthorized += 1;
                return unauthorized($uri.path());
            }
        }
    };
}

fn is_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/yaml"))
}

fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

/// Builds the router of one simulated Director.
pub fn router(sim: BoshSim) -> Router {
    Router::new()
        .route("/info", get(info))
        .route("/uaa/oauth/token", post(token))
        .route("/deployments", get(list_deployments).post(deploy))
        .route(
            "/deployments/{name}",
            get(get_deployment).delete(delete_deployment),
        )
        .route("/deployments/{name}/diff", post(diff))
        .route("/deployments/{name}/vms", get(vms))
        .route("/tasks", get(list_tasks))
        .route("/tasks/{id}", get(get_task))
        .route("/tasks/{id}/output", get(task_output))
        .route("/task/{id}", delete(cancel_task))
        .route("/releases", get(releases))
        .route("/stemcells", get(stemcells))
        .route("/configs", get(list_configs).post(create_config))
        .route("/locks", get(locks))
        .route("/events", get(events))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/stats", get(get_stats))
        .route("/_sim/reset", post(reset))
        .route(
            "/_sim/vitals/{deployment}/{group}/{index}",
            axum::routing::put(put_vitals),
        )
        .fallback(|uri: Uri| async move { not_found(uri.path()) })
        .method_not_allowed_fallback(|uri: Uri| async move { not_found(uri.path()) })
        .layer(middleware::from_fn_with_state(sim.clone(), inject_faults))
        .with_state(sim)
}

async fn inject_faults(State(sim): State<BoshSim>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/_sim/") {
        let (fail, latency) = {
            let mut g = sim.store.lock();
            g.requests += 1;
            let p = g.faults.fail_rate;
            (g.rng.chance(p), g.faults.latency_ms)
        };
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        }
        if fail {
            return error(StatusCode::INTERNAL_SERVER_ERROR, 100, "simulated failure");
        }
    }
    next.run(req).await
}

async fn info(State(sim): State<BoshSim>, headers: HeaderMap) -> Response {
    let user = user_of(&sim, &headers);
    let auth = match &sim.config.auth {
        AuthMode::Basic { .. } => json!({"type": "basic", "options": {}}),
        AuthMode::Uaa { .. } => {
            let url = format!("{}/uaa", sim.base_url());
            json!({"type": "uaa", "options": {"url": url, "urls": [url]}})
        }
    };
    Json(json!({
        "name": sim.config.name,
        "uuid": sim.config.uuid,
        "version": "281.0.0 (00000000)",
        "user": user,
        "cpi": "dummy",
        "stemcell_os": "ubuntu-jammy",
        "stemcell_version": "1.406",
        "user_authentication": auth,
        "features": {
            "local_dns": {"status": true, "extras": {"domain_name": "bosh"}},
            "snapshots": {"status": false},
            "config_server": {"status": false, "extras": {"urls": []}},
        },
    }))
    .into_response()
}

async fn token(State(sim): State<BoshSim>, headers: HeaderMap, body: Bytes) -> Response {
    let AuthMode::Uaa { client, secret } = &sim.config.auth else {
        return not_found("/uaa/oauth/token");
    };
    let uaa_error = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    let form: HashMap<String, String> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace('+', " ")))
        .collect();
    // Client credentials come as basic auth, or as form fields.
    let creds = basic_credentials(&headers).or_else(|| {
        Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        ))
    });
    if creds.as_ref() != Some(&(client.clone(), secret.clone())) {
        return uaa_error(StatusCode::UNAUTHORIZED, "unauthorized", "Bad credentials");
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return uaa_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only client_credentials is supported by the simulator",
        );
    }
    let ttl = sim.config.token_ttl;
    let token = {
        let mut g = sim.store.lock();
        let t = format!("{:016x}{:016x}", g.rng.next_u64(), g.rng.next_u64());
        g.tokens_issued += 1;
        g.tokens.insert(
            t.clone(),
            (client.clone(), tokio::time::Instant::now() + ttl),
        );
        t
    };
    Json(json!({
        "token_type": "bearer",
        "access_token": token,
        "expires_in": ttl.as_secs(),
        "scope": "bosh.admin",
        "jti": token,
    }))
    .into_response()
}

fn cloud_config_status(g: &store::Inner, used: Option<u64>) -> &'static str {
    match (latest_config(g, "cloud", "default"), used) {
        (None, _) => "none",
        (Some(c), Some(u)) if c.id == u => "latest",
        _ => "outdated",
    }
}

async fn list_deployments(State(sim): State<BoshSim>, headers: HeaderMap, uri: Uri) -> Response {
    auth!(sim, headers, uri);
    let g = sim.store.lock();
    let list: Vec<Value> = g
        .deployments
        .iter()
        .map(|(name, d)| {
            json!({
                "name": name,
                "cloud_config": cloud_config_status(&g, d.cloud_config_id),
                "releases": d.manifest.releases.iter().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>(),
                "stemcells": d.manifest.stemcells.iter().map(|(n, v, _)| json!({"name": n, "version": v})).collect::<Vec<_>>(),
                "teams": [],
                "locked": lock_holder(&g, name).is_some(),
            })
        })
        .collect();
    Json(list).into_response()
}

async fn get_deployment(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
) -> Response {
    auth!(sim, headers, uri);
    let g = sim.store.lock();
    match g.deployments.get(&name) {
        Some(d) => Json(json!({"manifest": d.manifest.text})).into_response(),
        None => no_deployment(&name),
    }
}

async fn deploy(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Q,
    body: Bytes,
) -> Response {
    // Authentication comes first, as in the Director's filters.
    let user = auth!(sim, headers, uri);
    if !is_yaml(&headers) {
        return not_found(uri.path());
    }
    let text = String::from_utf8_lossy(&body);
    let m = match manifest::parse(&text) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.code, e.description),
    };
    let name = m.name.clone();
    let id = sim.store.start_task(
        "create deployment".into(),
        &name,
        &user,
        q.get("context").cloned().unwrap_or_default(),
        Action::Deploy {
            manifest: m,
            dry_run: flag(&q, "dry_run"),
        },
    );
    redirect_task(id)
}

async fn delete_deployment(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
) -> Response {
    let user = auth!(sim, headers, uri);
    if !sim.store.lock().deployments.contains_key(&name) {
        return no_deployment(&name);
    }
    let id = sim.store.start_task(
        format!("delete deployment {name}"),
        &name,
        &user,
        String::new(),
        Action::Delete,
    );
    redirect_task(id)
}

async fn diff(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    Query(q): Q,
    body: Bytes,
) -> Response {
    auth!(sim, headers, uri);
    if !is_yaml(&headers) {
        return not_found(uri.path());
    }
    let redact = q.get("redact").is_none_or(|v| v != "false");
    let g = sim.store.lock();
    let old = g
        .deployments
        .get(&name)
        .map(|d| d.manifest.text.clone())
        .unwrap_or_default();
    let ids = |kind: &str| -> Vec<String> {
        let mut names: Vec<&str> = g
            .configs
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .filter_map(|n| latest_config(&g, kind, n).map(|c| c.id.to_string()))
            .collect()
    };
    let context = json!({"cloud_config_ids": ids("cloud"), "runtime_config_ids": ids("runtime")});
    match manifest::diff(&old, &String::from_utf8_lossy(&body), redact) {
        Ok(diff) => Json(json!({"context": context, "diff": diff})).into_response(),
        Err(e) => Json(json!({"diff": [], "error": format!("Unable to diff manifest: {e}")}))
            .into_response(),
    }
}

async fn vms(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    Query(q): Q,
) -> Response {
    let user = auth!(sim, headers, uri);
    let groups = match sim.store.lock().deployments.get(&name) {
        Some(d) => d.manifest.instance_groups.clone(),
        None => return no_deployment(&name),
    };
    if q.get("format").map(String::as_str) == Some("full") {
        let id = sim.store.start_task(
            "retrieve vm-stats".into(),
            &name,
            &user,
            String::new(),
            Action::Vms,
        );
        return redirect_task(id);
    }
    let list: Vec<Value> = store::vms(&groups, &name)
        .into_iter()
        .map(|v| {
            json!({
                "agent_id": v["agent_id"], "cid": v["vm_cid"], "job": v["job_name"],
                "index": v["index"], "id": v["id"], "az": v["az"], "ips": v["ips"],
                "vm_type": v["vm_type"], "active": true, "vm_created_at": "2026-01-01T00:00:00Z",
            })
        })
        .collect();
    Json(list).into_response()
}

fn task_not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, 10000, format!("Task {id} not found"))
}

async fn get_task(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    auth!(sim, headers, uri);
    let g = sim.store.lock();
    match id.parse::<u64>().ok().and_then(|n| g.tasks.get(&n)) {
        Some(t) => Json(t.to_json()).into_response(),
        None => task_not_found(&id),
    }
}

async fn list_tasks(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Q,
) -> Response {
    auth!(sim, headers, uri);
    let states: Option<Vec<&str>> = q
        .get("state")
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::trim).collect());
    let verbose: u32 = q.get("verbose").and_then(|v| v.parse().ok()).unwrap_or(1);
    let limit: usize = q
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let g = sim.store.lock();
    let list: Vec<Value> = g
        .tasks
        .values()
        .rev()
        .filter(|t| {
            states
                .as_ref()
                .is_none_or(|s| s.contains(&t.state.as_str()))
        })
        .filter(|t| q.get("deployment").is_none_or(|d| *d == t.deployment))
        .filter(|t| verbose >= 2 || !matches!(t.action, Action::Vms))
        .take(limit)
        .map(store::Task::to_json)
        .collect();
    Json(list).into_response()
}

async fn cancel_task(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    auth!(sim, headers, uri);
    let Some(n) = id.parse::<u64>().ok() else {
        return task_not_found(&id);
    };
    match sim.store.cancel(n) {
        None => task_not_found(&id),
        Some(true) => StatusCode::NO_CONTENT.into_response(),
        Some(false) => error(
            StatusCode::BAD_REQUEST,
            10001,
            format!("Cannot cancel task {id}: invalid state"),
        ),
    }
}

async fn task_output(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    auth!(sim, headers, uri);
    let text = {
        let g = sim.store.lock();
        let Some(t) = id.parse::<u64>().ok().and_then(|n| g.tasks.get(&n)) else {
            return task_not_found(&id);
        };
        match q.get("type").map(String::as_str).unwrap_or("debug") {
            "event" => t.event_log.clone(),
            "result" => t.result_log.clone(),
            "debug" => t.debug_log.clone(),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    40000,
                    format!("Invalid log type '{other}'"),
                )
            }
        }
    };
    let plain = |status: StatusCode, body: String| -> Response {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    if text.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let len = text.len();
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, _)| a.trim().parse::<usize>().ok());
    match start {
        None => plain(StatusCode::OK, text),
        Some(s) if s >= len => {
            let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, String::new());
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
        Some(s) => {
            // Byte offsets; the logs are ASCII JSON so slicing by bytes is safe, but
            // fall back to a lossy copy for any other text.
            let body = String::from_utf8_lossy(&text.as_bytes()[s..]).into_owned();
            let mut r = plain(StatusCode::PARTIAL_CONTENT, body);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{}/{len}", len - 1)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
    }
}

async fn releases(State(sim): State<BoshSim>, headers: HeaderMap, uri: Uri) -> Response {
    auth!(sim, headers, uri);
    let g = sim.store.lock();
    let deployed: Vec<&(String, String)> = g
        .deployments
        .values()
        .flat_map(|d| d.manifest.releases.iter())
        .collect();
    let mut by_name: Vec<(String, Vec<Value>)> = Vec::new();
    for (name, version) in g.releases.keys() {
        let v = json!({
            "version": version,
            "currently_deployed": deployed.contains(&&(name.clone(), version.clone())),
            "uncommitted_changes": false,
            "commit_hash": format!("{:08x}", version.len() * 0x1f3d + name.len()),
        });
        match by_name.last_mut() {
            Some((n, list)) if n == name => list.push(v),
            _ => by_name.push((name.clone(), vec![v])),
        }
    }
    Json(
        by_name
            .into_iter()
            .map(|(name, vs)| json!({"name": name, "release_versions": vs}))
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn stemcells(State(sim): State<BoshSim>, headers: HeaderMap, uri: Uri) -> Response {
    auth!(sim, headers, uri);
    let g = sim.store.lock();
    let list: Vec<Value> = g
        .stemcells
        .iter()
        .map(|((name, version), os)| {
            let users: Vec<Value> = g
                .deployments
                .iter()
                .filter(|(_, d)| {
                    d.manifest
                        .stemcells
                        .iter()
                        .any(|(n, v, _)| n == name && v == version)
                })
                .map(|(n, _)| json!({"name": n}))
                .collect();
            json!({"name": name, "version": version, "operating_system": os,
                "cid": format!("stemcell-{name}-{version}"), "deployments": users})
        })
        .collect();
    Json(list).into_response()
}

fn config_json(c: &Config, current: bool) -> Value {
    json!({"id": c.id.to_string(), "name": c.name, "type": c.kind, "content": c.content,
        "created_at": chrono::DateTime::from_timestamp(c.created_at, 0).map(|t| t.to_rfc3339()),
        "team": null, "current": current})
}

async fn list_configs(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Q,
) -> Response {
    auth!(sim, headers, uri);
    let latest_only = flag(&q, "latest");
    let g = sim.store.lock();
    let mut list: Vec<&Config> = g
        .configs
        .iter()
        .filter(|c| q.get("type").is_none_or(|t| *t == c.kind))
        .filter(|c| q.get("name").is_none_or(|n| *n == c.name))
        .collect();
    list.sort_by_key(|c| std::cmp::Reverse(c.id));
    let is_current = |c: &Config| latest_config(&g, &c.kind, &c.name).is_some_and(|l| l.id == c.id);
    let out: Vec<Value> = list
        .into_iter()
        .filter(|c| !latest_only || is_current(c))
        .map(|c| config_json(c, is_current(c)))
        .collect();
    Json(out).into_response()
}

#[derive(Deserialize)]
struct NewConfig {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    content: String,
    expected_latest_id: Option<Value>,
}

async fn create_config(
    State(sim): State<BoshSim>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    auth!(sim, headers, uri);
    let req: NewConfig = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                440010,
                format!("Invalid JSON request body: {e}"),
            )
        }
    };
    if let Err(e) = yaml_rust2::YamlLoader::load_from_str(&req.content) {
        return error(
            StatusCode::BAD_REQUEST,
            440001,
            format!("Config must be valid YAML: {e}"),
        );
    }
    let mut g = sim.store.lock();
    let latest = latest_config(&g, &req.kind, &req.name).cloned();
    if let Some(expected) = &req.expected_latest_id {
        let expected = match expected {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let actual = latest
            .as_ref()
            .map(|c| c.id.to_string())
            .unwrap_or_else(|| "0".into());
        if expected != actual && !(latest.is_none() && expected.is_empty()) {
            return error(
                StatusCode::PRECONDITION_FAILED,
                440012,
                format!("Latest Id: '{actual}' does not match expected latest id: '{expected}'"),
            );
        }
    }
    if let Some(l) = latest.filter(|l| l.content == req.content) {
        return (StatusCode::CREATED, Json(config_json(&l, true))).into_response();
    }
    let c = Config {
        id: g.next_config,
        kind: req.kind,
        name: req.name,
        content: req.content,
        created_at: now(),
    };
    g.next_config += 1;
    g.configs.push(c.clone());
    (StatusCode::CREATED, Json(config_json(&c, true))).into_response()
}

async fn locks(State(sim): State<BoshSim>, headers: HeaderMap, uri: Uri) -> Response {
    auth!(sim, headers, uri);
    let g = sim.store.lock();
    let list: Vec<Value> = g
        .deployments
        .keys()
        .chain(g.tasks.values().map(|t| &t.deployment))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|d| {
            let (task, started) = lock_holder(&g, d)?;
            Some(json!({"type": "deployment", "resource": [d],
                "timeout": format!("{}.0", started + 3600), "task_id": task.to_string()}))
        })
        .collect();
    Json(list).into_response()
}

async fn events(State(sim): State<BoshSim>, headers: HeaderMap, uri: Uri, Query(q): Q) -> Response {
    auth!(sim, headers, uri);
    let before: Option<u64> = q.get("before_id").and_then(|v| v.parse().ok());
    let after: Option<i64> = q.get("after_time").and_then(|v| v.parse().ok());
    let g = sim.store.lock();
    let list: Vec<Value> = g
        .events
        .iter()
        .rev()
        .filter(|e| q.get("deployment").is_none_or(|d| *d == e.deployment))
        .filter(|e| before.is_none_or(|b| e.id < b))
        .filter(|e| after.is_none_or(|a| e.timestamp > a))
        .take(200)
        .map(|e| {
            let mut v = json!({"id": e.id.to_string(), "parent_id": e.parent_id.map(|p| p.to_string()),
                "timestamp": e.timestamp, "user": e.user, "action": e.action,
                "object_type": e.object_type, "object_name": e.object_name, "task": e.task,
                "deployment": e.deployment, "instance": null, "context": e.context});
            if let Some(err) = &e.error {
                v["error"] = json!(err);
            }
            v
        })
        .collect();
    Json(list).into_response()
}

/// Counters tests use to see what clients did: UAA tokens issued, 401s answered.
async fn get_stats(State(sim): State<BoshSim>) -> Response {
    let g = sim.store.lock();
    Json(json!({"tokens_issued": g.tokens_issued, "unauthorized": g.unauthorized, "requests": g.requests}))
        .into_response()
}

async fn get_faults(State(sim): State<BoshSim>) -> Response {
    Json(sim.store.lock().faults).into_response()
}

#[derive(Deserialize)]
struct FaultsPatch {
    fail_rate: Option<f64>,
    fail_tasks: Option<f64>,
    task_duration_ms: Option<u64>,
    latency_ms: Option<u64>,
}

async fn put_faults(State(sim): State<BoshSim>, body: Bytes) -> Response {
    let patch: FaultsPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, 400, format!("bad faults: {e}")),
    };
    let mut g = sim.store.lock();
    let new = Faults {
        fail_rate: patch.fail_rate.unwrap_or(g.faults.fail_rate),
        fail_tasks: patch.fail_tasks.unwrap_or(g.faults.fail_tasks),
        task_duration_ms: patch.task_duration_ms.unwrap_or(g.faults.task_duration_ms),
        latency_ms: patch.latency_ms.unwrap_or(g.faults.latency_ms),
    };
    if let Err(e) = new.validate() {
        return error(StatusCode::BAD_REQUEST, 400, e);
    }
    g.faults = new;
    Json(new).into_response()
}

async fn reset(State(sim): State<BoshSim>) -> Response {
    sim.store.reset();
    StatusCode::NO_CONTENT.into_response()
}

/// Sets one cell VM's vitals (`PUT /_sim/vitals/{deployment}/{group}/{index}`); kept
/// across redeploys, forgotten by `/_sim/reset`.
async fn put_vitals(
    State(sim): State<BoshSim>,
    Path((deployment, group, index)): Path<(String, String, u32)>,
    body: Bytes,
) -> Response {
    let v: Vitals = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, 400, format!("bad vitals: {e}")),
    };
    if let Err(e) = v.validate() {
        return error(StatusCode::BAD_REQUEST, 400, e);
    }
    if !store::is_cell_group(&group) {
        return error(
            StatusCode::BAD_REQUEST,
            400,
            format!("group '{group}' is not a Diego cell group (its name must contain diego_cell, or be compute)"),
        );
    }
    sim.store
        .lock()
        .vitals
        .insert((deployment, group, index), v);
    Json(v).into_response()
}
