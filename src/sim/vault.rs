//! The Vault simulator (`anvil sim vault`): a KV v2 server over HTTP that follows
//! Vault's API (../shared/fixtures/vault-kv2-api.md, docs/simulators.md) with its
//! state in memory. Tokens: the one given with `--token` and those issued by AppRole
//! login. Paths: `sys/health`, `sys/mounts`, `sys/internal/ui/mounts/*`,
//! `auth/approle/login`, `auth/token/lookup-self` and, under each KV mount, `data/`,
//! `metadata/`, `delete/`, `undelete/`, `destroy/` and `config`.
//!
//! The routing is done by hand in one fallback handler: Vault's custom `LIST` method,
//! its 404 and 405 bodies and its order of checks (token before path) are simpler to
//! follow that way than with per-route handlers.

pub mod kv;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use kv::{ApiError, Mount, Outcome};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The version `sys/health` reports.
pub const VERSION: &str = "1.15.0-anvil-sim";

/// Largest request body accepted (Vault's default `max_request_size`, 32 MiB).
const MAX_REQUEST_BYTES: usize = 32 << 20;

/// Token lifetime AppRole login reports (Vault's default, 768h).
const LOGIN_LEASE_SECONDS: u64 = 2_764_800;

/// Why the simulator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    #[error("the simulator's listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// An AppRole credential pair that `auth/approle/login` accepts (`--approle ROLE:SECRET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRole {
    pub role_id: String,
    pub secret_id: String,
}

impl FromStr for AppRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((r, sec)) if !r.is_empty() && !sec.is_empty() => Ok(Self {
                role_id: r.to_string(),
                secret_id: sec.to_string(),
            }),
            _ => Err(format!("`{s}` is not ROLE_ID:SECRET_ID")),
        }
    }
}

/// What the simulator serves.
#[derive(Debug, Clone)]
pub struct VaultSimConfig {
    /// The root token every request must carry (besides tokens issued by login).
    pub token: String,
    /// KV v2 mounts besides `secret`.
    pub mounts: Vec<String>,
    /// Credentials AppRole login accepts.
    pub approles: Vec<AppRole>,
}

impl VaultSimConfig {
    /// A configuration with the root token `token`, the `secret` mount and no AppRoles.
    #[must_use]
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            mounts: Vec::new(),
            approles: Vec::new(),
        }
    }

    /// The mount names, normalised (no slashes at either end), `secret` first.
    fn mount_names(&self) -> Vec<String> {
        let mut names = vec!["secret".to_string()];
        for m in &self.mounts {
            let m = m.trim_matches('/').to_string();
            if !m.is_empty() && !names.contains(&m) {
                names.push(m);
            }
        }
        names
    }

    /// Checks the token and mount names.
    ///
    /// # Errors
    /// [`SimError::Config`] naming the bad value.
    pub fn check(&self) -> Result<(), SimError> {
        if self.token.is_empty() {
            return Err(SimError::Config("--token must not be empty".into()));
        }
        for m in &self.mounts {
            let name = m.trim_matches('/');
            let first = name.split('/').next().unwrap_or_default();
            if name.is_empty() || ["sys", "auth", "cubbyhole", "identity"].contains(&first) {
                return Err(SimError::Config(format!(
                    "--mount {m}: not a usable mount path (empty or reserved by Vault)"
                )));
            }
        }
        Ok(())
    }
}

struct MountEntry {
    accessor: String,
    uuid: String,
    kv: Mount,
}

struct Sim {
    root_token: String,
    approles: Vec<AppRole>,
    issued: HashSet<String>,
    mounts: BTreeMap<String, MountEntry>,
    cluster_id: String,
}

type Shared = Arc<Mutex<Sim>>;

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// The simulator as an axum router, for in-process use; [`serve`] runs it on a socket.
pub fn router(config: VaultSimConfig) -> Router {
    let mounts = config
        .mount_names()
        .into_iter()
        .map(|name| {
            (
                name,
                MountEntry {
                    accessor: format!("kv_{}", short_id()),
                    uuid: uuid::Uuid::new_v4().to_string(),
                    kv: Mount::default(),
                },
            )
        })
        .collect();
    let sim = Sim {
        root_token: config.token,
        approles: config.approles,
        issued: HashSet::new(),
        mounts,
        cluster_id: uuid::Uuid::new_v4().to_string(),
    };
    Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(Arc::new(Mutex::new(sim)))
}

/// Serves the simulator on `listener` until SIGINT or SIGTERM, then finishes the
/// requests in flight and returns.
///
/// # Errors
/// A bad configuration, or the listener failing.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: VaultSimConfig,
) -> Result<(), SimError> {
    serve_until(listener, config, shutdown_signal()?).await
}

/// As [`serve`], stopping when `shutdown` completes instead of on a signal.
///
/// # Errors
/// A bad configuration, or the listener failing.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    config: VaultSimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    config.check()?;
    axum::serve(listener, router(config))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// A future that completes on SIGINT or SIGTERM. The handlers are installed when this
/// is called (not when first polled), so a signal that arrives after the call, e.g.
/// right after the "listening" line is printed, always stops the server gracefully.
///
/// # Errors
/// The signal handlers could not be installed.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, SimError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

// ---------------------------------------------------------------- answers

fn respond(status: u16, body: Option<Value>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match body {
        Some(b) => (status, b.to_string()).into_response(),
        None => status.into_response(),
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error(e: ApiError) -> Response {
    respond(e.status, Some(json!({ "errors": e.errors })))
}

fn envelope(data: Value, auth: Value) -> Value {
    json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": auth,
    })
}

fn ok(data: Value) -> Response {
    respond(200, Some(envelope(data, Value::Null)))
}

fn outcome(o: Outcome) -> Response {
    match o {
        Outcome::Data(d) => ok(d),
        Outcome::NoContent => respond(204, None),
        Outcome::Deleted(d) => respond(404, Some(envelope(d, Value::Null))),
    }
}

fn unsupported() -> Response {
    error(ApiError {
        status: 405,
        errors: vec!["1 error occurred:\n\t* unsupported operation\n\n".into()],
    })
}

fn permission_denied() -> Response {
    error(ApiError {
        status: 403,
        errors: vec!["permission denied".into()],
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                // Two hex digits make at most 255.
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("failed to parse JSON input: {e}")))
}

fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        return Some(t.to_string());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

// ---------------------------------------------------------------- routing

async fn handle(
    State(sim): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(rest) = uri.path().strip_prefix("/v1/") else {
        return error(ApiError::not_found());
    };
    let rest = percent_decode(rest);
    let mut sim = sim.lock().await;
    let is = |m: &[&str]| m.contains(&method.as_str());

    if rest == "sys/health" {
        return if is(&["GET", "HEAD"]) {
            health(&sim)
        } else {
            unsupported()
        };
    }
    if rest == "auth/approle/login" {
        return if is(&["POST", "PUT"]) {
            match parse_body(&body) {
                Ok(b) => login(&mut sim, &b),
                Err(e) => error(e),
            }
        } else {
            unsupported()
        };
    }

    let token = token_of(&headers);
    let authorised = token
        .as_deref()
        .is_some_and(|t| t == sim.root_token || sim.issued.contains(t));
    if !authorised {
        return permission_denied();
    }
    let token = token.unwrap_or_default();

    if rest == "sys/mounts" {
        return if is(&["GET"]) {
            mounts(&sim)
        } else {
            unsupported()
        };
    }
    if let Some(path) = rest.strip_prefix("sys/internal/ui/mounts/") {
        return if is(&["GET"]) {
            ui_mount(&sim, path)
        } else {
            unsupported()
        };
    }
    if rest == "auth/token/lookup-self" {
        return if is(&["GET"]) {
            lookup_self(&sim, &token)
        } else {
            unsupported()
        };
    }

    // The longest mount that is a prefix of the path.
    let Some(mount_name) = sim
        .mounts
        .keys()
        .filter(|m| rest == **m || rest.starts_with(&format!("{m}/")))
        .max_by_key(|m| m.len())
        .cloned()
    else {
        return error(ApiError::not_found());
    };
    let sub = rest[mount_name.len()..].trim_start_matches('/').to_string();
    let (op, path) = sub.split_once('/').unwrap_or((sub.as_str(), ""));
    let Some(entry) = sim.mounts.get_mut(&mount_name) else {
        return error(ApiError::not_found());
    };
    let kv = &mut entry.kv;
    let now = chrono::Utc::now();
    let m = method.as_str();
    let body = match m {
        "POST" | "PUT" | "PATCH" => match parse_body(&body) {
            Ok(b) => b,
            Err(e) => return error(e),
        },
        _ => Value::Null,
    };
    let result: Result<Response, ApiError> = match (op, m) {
        ("config", _) if !path.is_empty() => Err(ApiError::not_found()),
        ("config", "GET") => Ok(ok(kv.read_config())),
        ("config", "POST" | "PUT") => kv.write_config(&body).map(outcome),
        ("config", _) => Ok(unsupported()),
        ("data" | "metadata" | "delete" | "undelete" | "destroy", _)
            if path.is_empty() && !(op == "metadata" && is_list(m, &uri)) =>
        {
            Err(ApiError::not_found())
        }
        ("data", "GET") => match query_param(&uri, "version").filter(|v| !v.is_empty()) {
            None => kv.read(path, None).map(outcome),
            Some(v) => match v.parse::<u64>() {
                Ok(n) => kv.read(path, Some(n)).map(outcome),
                Err(_) => Err(ApiError::bad_request(format!(
                    "error parsing version: strconv.Atoi: parsing {v:?}: invalid syntax"
                ))),
            },
        },
        ("data", "POST" | "PUT") => kv.write(path, &body, now).map(ok),
        ("data", "PATCH") => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if ct.split(';').next().map(str::trim) != Some("application/merge-patch+json") {
                Err(ApiError {
                    status: 415,
                    errors: vec![format!(
                        "PATCH requires Content-Type of application/merge-patch+json, got {ct:?}"
                    )],
                })
            } else {
                kv.patch(path, &body, now).map(ok)
            }
        }
        ("data", "DELETE") => Ok(outcome(kv.delete_latest(path, now))),
        ("metadata", _) if is_list(m, &uri) => kv.list(path).map(ok),
        ("metadata", "GET") => kv.metadata(path).map(ok),
        ("metadata", "POST" | "PUT") => kv.write_metadata(path, &body, false, now).map(outcome),
        ("metadata", "PATCH") => kv.write_metadata(path, &body, true, now).map(outcome),
        ("metadata", "DELETE") => Ok(outcome(kv.delete_metadata(path))),
        ("delete", "POST" | "PUT") => kv.delete_versions(path, &body, now).map(outcome),
        ("undelete", "POST" | "PUT") => kv.undelete(path, &body).map(outcome),
        ("destroy", "POST" | "PUT") => kv.destroy(path, &body).map(outcome),
        ("data" | "metadata" | "delete" | "undelete" | "destroy", _) => Ok(unsupported()),
        _ => Err(ApiError::not_found()),
    };
    result.unwrap_or_else(error)
}

fn is_list(method: &str, uri: &Uri) -> bool {
    method == "LIST"
        || (method == "GET" && query_param(uri, "list").is_some_and(|v| v == "true" || v == "1"))
}

// ---------------------------------------------------------------- sys and auth

fn health(sim: &Sim) -> Response {
    respond(
        200,
        Some(json!({
            "initialized": true,
            "sealed": false,
            "standby": false,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": chrono::Utc::now().timestamp(),
            "version": VERSION,
            "enterprise": false,
            "cluster_name": "anvil-sim",
            "cluster_id": sim.cluster_id,
            "echo_duration_ms": 0,
            "clock_skew_ms": 0,
        })),
    )
}

fn kv_mount_json(name: &str, e: &MountEntry) -> Value {
    json!({
        "accessor": e.accessor,
        "config": {"default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0},
        "description": if name == "secret" { "key/value secret storage" } else { "" },
        "external_entropy_access": false,
        "local": false,
        "options": {"version": "2"},
        "path": format!("{name}/"),
        "plugin_version": "",
        "running_plugin_version": "v0.16.1+builtin",
        "running_sha256": "",
        "seal_wrap": false,
        "type": "kv",
        "uuid": e.uuid,
    })
}

fn mounts(sim: &Sim) -> Response {
    let mut data = serde_json::Map::new();
    for (name, e) in &sim.mounts {
        let mut v = kv_mount_json(name, e);
        if let Some(o) = v.as_object_mut() {
            o.remove("path");
        }
        data.insert(format!("{name}/"), v);
    }
    for (path, ty, desc) in [
        (
            "cubbyhole/",
            "cubbyhole",
            "per-token private secret storage",
        ),
        ("identity/", "identity", "identity store"),
        (
            "sys/",
            "system",
            "system endpoints used for control, policy and debugging",
        ),
    ] {
        data.insert(
            path.into(),
            json!({
                "accessor": format!("{ty}_{}", &sim.cluster_id[..8]),
                "config": {"default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0},
                "description": desc,
                "external_entropy_access": false,
                "local": ty == "cubbyhole",
                "options": null,
                "plugin_version": "",
                "running_plugin_version": format!("v{VERSION}+builtin.vault"),
                "running_sha256": "",
                "seal_wrap": ty == "system",
                "type": ty,
                "uuid": sim.cluster_id,
            }),
        );
    }
    // Vault also repeats the mounts at the top level of the body (legacy clients).
    let mut body = envelope(Value::Object(data.clone()), Value::Null);
    if let Some(o) = body.as_object_mut() {
        for (k, v) in data {
            o.insert(k, v);
        }
    }
    respond(200, Some(body))
}

fn ui_mount(sim: &Sim, path: &str) -> Response {
    let path = path.trim_start_matches('/');
    let found = sim
        .mounts
        .iter()
        .filter(|(m, _)| path == m.as_str() || path.starts_with(&format!("{m}/")))
        .max_by_key(|(m, _)| m.len());
    match found {
        Some((name, e)) => ok(kv_mount_json(name, e)),
        None => error(ApiError {
            status: 403,
            errors: vec![format!(
                "preflight capability check returned 403, please ensure client's policies grant access to path \"{}/\"",
                path.trim_end_matches('/')
            )],
        }),
    }
}

fn login(sim: &mut Sim, body: &Value) -> Response {
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    let (role_id, secret_id) = (field("role_id"), field("secret_id"));
    if role_id.is_empty() {
        return error(ApiError::bad_request("missing role_id"));
    }
    let Some(role) = sim
        .approles
        .iter()
        .find(|r| r.role_id == role_id && r.secret_id == secret_id)
        .cloned()
    else {
        return error(ApiError::bad_request("invalid role or secret ID"));
    };
    let token = format!("hvs.{}", &uuid::Uuid::new_v4().simple().to_string()[..24]);
    sim.issued.insert(token.clone());
    respond(
        200,
        Some(envelope(
            Value::Null,
            json!({
                "client_token": token,
                "accessor": short_id(),
                "policies": ["default"],
                "token_policies": ["default"],
                "metadata": {"role_name": role.role_id},
                "lease_duration": LOGIN_LEASE_SECONDS,
                "renewable": true,
                "entity_id": "",
                "token_type": "service",
                "orphan": true,
                "mfa_requirement": null,
                "num_uses": 0,
            }),
        )),
    )
}

fn lookup_self(sim: &Sim, token: &str) -> Response {
    let root = token == sim.root_token;
    ok(json!({
        "accessor": "",
        "creation_time": 0,
        "creation_ttl": 0,
        "display_name": if root { "token" } else { "approle" },
        "entity_id": "",
        "expire_time": null,
        "explicit_max_ttl": 0,
        "id": token,
        "meta": null,
        "num_uses": 0,
        "orphan": true,
        "path": if root { "auth/token/root" } else { "auth/approle/login" },
        "policies": if root { vec!["root"] } else { vec!["default"] },
        "renewable": !root,
        "ttl": if root { 0 } else { LOGIN_LEASE_SECONDS },
        "type": "service",
    }))
}
