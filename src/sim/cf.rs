//! `anvil sim cf`: a Cloud Foundry API v3 simulator for capacity reporting. It serves
//! `/` and `/v3/info`, a UAA password-grant token endpoint under `/uaa`, paginated
//! `/v3/apps`, `/v3/processes`, `/v3/apps/{guid}/processes`, `/v3/processes/{guid}/stats`,
//! `/v3/isolation_segments` (with their spaces relationship), `/v3/spaces` and
//! `/v3/spaces/{guid}` (with the isolation segment relationship), from a seed given as a
//! JSON file or generated from flags. Faults as the BOSH simulator's: a failure rate and a
//! latency, changeable through `/_sim/faults`; `/_sim/stats` counts requests.
//!
//! In-process use: [`CfSim::new`] + [`router`]; as a server: [`serve`].

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Errors of the simulator's setup and serving.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator settings: {0}")]
    Config(String),
    #[error("{path}: {message}")]
    Seed { path: PathBuf, message: String },
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// An isolation segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub guid: String,
    pub name: String,
}

/// A space; `isolation_segment` is the guid of its segment, if it has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Space {
    pub guid: String,
    pub name: String,
    #[serde(default)]
    pub isolation_segment: Option<String>,
}

/// A process of an app and what its instances use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub guid: String,
    #[serde(default = "web", rename = "type")]
    pub kind: String,
    pub instances: u32,
    pub memory_in_mb: u64,
    #[serde(default = "disk_default")]
    pub disk_in_mb: u64,
    /// Memory each running instance uses, in MiB (the stats' `usage.mem`).
    #[serde(default)]
    pub mem_used_mb: u64,
}

fn web() -> String {
    "web".into()
}

fn disk_default() -> u64 {
    1024
}

fn started() -> String {
    "STARTED".into()
}

/// An app in a space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub guid: String,
    pub name: String,
    pub space: String,
    #[serde(default = "started")]
    pub state: String,
    #[serde(default)]
    pub processes: Vec<Process>,
}

/// What the simulated Cloud Controller holds (the JSON seed file's shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub isolation_segments: Vec<Segment>,
    #[serde(default)]
    pub spaces: Vec<Space>,
    #[serde(default)]
    pub apps: Vec<App>,
}

fn guid(kind: &str, i: usize) -> String {
    // Stable, UUID-shaped and unique per kind and number.
    let tag = match kind {
        "app" => 0xa,
        "process" => 0xb,
        "space" => 0xc,
        _ => 0xd,
    };
    format!("{tag:08x}-0000-4000-8000-{i:012x}")
}

impl Seed {
    /// A synthetic foundation: `segments` isolation segments besides the shared one, one
    /// space per segment plus one shared space, and `apps` apps spread over the spaces,
    /// each with one web process of 1–4 instances of 256–2048 MiB.
    #[must_use]
    pub fn generate(apps: usize, segments: usize) -> Seed {
        let mut seed = Seed::default();
        for s in 0..segments {
            seed.isolation_segments.push(Segment {
                guid: guid("segment", s),
                name: format!("segment-{s}"),
            });
        }
        seed.spaces.push(Space {
            guid: guid("space", 0),
            name: "shared-space".into(),
            isolation_segment: None,
        });
        for s in 0..segments {
            seed.spaces.push(Space {
                guid: guid("space", s + 1),
                name: format!("space-{s}"),
                isolation_segment: Some(guid("segment", s)),
            });
        }
        for i in 0..apps {
            let memory = 256 << (i % 4);
            seed.apps.push(App {
                guid: guid("app", i),
                name: format!("app-{i}"),
                space: guid("space", i % (segments + 1)),
                state: if i % 10 == 9 { "STOPPED" } else { "STARTED" }.into(),
                processes: vec![Process {
                    guid: guid("process", i),
                    kind: "web".into(),
                    instances: (i % 4) as u32 + 1,
                    memory_in_mb: memory,
                    disk_in_mb: 1024,
                    mem_used_mb: memory * (30 + (i as u64 % 50)) / 100,
                }],
            });
        }
        seed
    }

    /// Reads a JSON seed file.
    ///
    /// # Errors
    /// [`SimError::Seed`] naming the file for a file that cannot be read or parsed.
    pub fn from_file(path: &std::path::Path) -> Result<Seed, SimError> {
        let err = |message: String| SimError::Seed {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "line {} column {}: {e}; see docs/simulators.md for the seed's shape",
                e.line(),
                e.column()
            ))
        })
    }

    /// Checks references: every space's segment and every app's space exist, guids are
    /// unique.
    ///
    /// # Errors
    /// A message naming the first bad entry.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        let guids = self
            .isolation_segments
            .iter()
            .map(|s| &s.guid)
            .chain(self.spaces.iter().map(|s| &s.guid))
            .chain(self.apps.iter().map(|a| &a.guid))
            .chain(
                self.apps
                    .iter()
                    .flat_map(|a| a.processes.iter().map(|p| &p.guid)),
            );
        for g in guids {
            if !seen.insert(g.as_str()) {
                return Err(format!("guid {g} is used twice"));
            }
        }
        for s in &self.spaces {
            if let Some(seg) = &s.isolation_segment {
                if !self.isolation_segments.iter().any(|i| &i.guid == seg) {
                    return Err(format!(
                        "space {} names isolation segment {seg}, which is not in isolation_segments",
                        s.name
                    ));
                }
            }
        }
        for a in &self.apps {
            if !self.spaces.iter().any(|s| s.guid == a.space) {
                return Err(format!(
                    "app {} names space {}, which is not in spaces",
                    a.name, a.space
                ));
            }
            if a.state != "STARTED" && a.state != "STOPPED" {
                return Err(format!(
                    "app {} has state {}: use STARTED or STOPPED",
                    a.name, a.state
                ));
            }
        }
        Ok(())
    }
}

/// Faults injected into answers; changeable at run time via `/_sim/faults`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Faults {
    /// Probability (0..=1) that a request outside `/_sim/` gets a simulated 500.
    pub fail_rate: f64,
    /// Extra delay before answering a request outside `/_sim/`, in milliseconds.
    pub latency_ms: u64,
}

impl Faults {
    /// # Errors
    /// A message when `fail_rate` lies outside 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        if (0.0..=1.0).contains(&self.fail_rate) {
            Ok(())
        } else {
            Err(format!(
                "fail_rate must be between 0 and 1, got {}",
                self.fail_rate
            ))
        }
    }
}

/// Settings of one simulated Cloud Controller.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub username: String,
    pub password: String,
    pub faults: Faults,
    /// Seed of the fault dice and tokens; `None` seeds from the clock.
    pub seed: Option<u64>,
    pub data: Seed,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            username: "admin".into(),
            password: "admin".into(),
            faults: Faults::default(),
            seed: None,
            data: Seed::default(),
        }
    }
}

#[derive(Debug)]
struct Counters {
    faults: Faults,
    rng: u64,
    tokens: std::collections::HashSet<String>,
    requests: u64,
    tokens_issued: u64,
    unauthorized: u64,
}

impl Counters {
    /// splitmix64, as the BOSH simulator's dice: reproducible with `--seed`.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

struct Data {
    seed: Seed,
    app_index: HashMap<String, usize>,
    process_index: HashMap<String, (usize, usize)>,
    space_index: HashMap<String, usize>,
}

/// One simulated Cloud Controller: cheap to clone, all clones share the state.
#[derive(Clone)]
pub struct CfSim {
    username: Arc<str>,
    password: Arc<str>,
    data: Arc<Data>,
    counters: Arc<Mutex<Counters>>,
    base_url: Arc<Mutex<String>>,
}

impl std::fmt::Debug for CfSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CfSim")
            .field("apps", &self.data.seed.apps.len())
            .finish()
    }
}

impl CfSim {
    /// A Cloud Controller holding `config.data`.
    ///
    /// # Errors
    /// [`SimError::Config`] for a fault probability outside 0..=1 or a seed whose
    /// references do not resolve.
    pub fn new(config: SimConfig) -> Result<CfSim, SimError> {
        config.faults.validate().map_err(SimError::Config)?;
        config.data.validate().map_err(SimError::Config)?;
        let seed = config.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5eed)
        });
        let d = config.data;
        let app_index = d
            .apps
            .iter()
            .enumerate()
            .map(|(i, a)| (a.guid.clone(), i))
            .collect();
        let process_index = d
            .apps
            .iter()
            .enumerate()
            .flat_map(|(i, a)| {
                a.processes
                    .iter()
                    .enumerate()
                    .map(move |(j, p)| (p.guid.clone(), (i, j)))
            })
            .collect();
        let space_index = d
            .spaces
            .iter()
            .enumerate()
            .map(|(i, s)| (s.guid.clone(), i))
            .collect();
        Ok(CfSim {
            username: config.username.into(),
            password: config.password.into(),
            data: Arc::new(Data {
                seed: d,
                app_index,
                process_index,
                space_index,
            }),
            counters: Arc::new(Mutex::new(Counters {
                faults: config.faults,
                rng: seed,
                tokens: std::collections::HashSet::new(),
                requests: 0,
                tokens_issued: 0,
                unauthorized: 0,
            })),
            base_url: Arc::new(Mutex::new("http://127.0.0.1:8080".into())),
        })
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves plain counters behind; keep serving.
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The URL the simulator advertises for itself.
    pub fn base_url(&self) -> String {
        self.base_url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets the advertised URL, e.g. once the real port is known.
    pub fn set_base_url(&self, url: &str) {
        *self.base_url.lock().unwrap_or_else(|p| p.into_inner()) = url.to_string();
    }
}

fn cf_error(status: StatusCode, code: u32, title: &str, detail: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"errors": [{"detail": detail.into(), "title": title, "code": code}]})),
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    cf_error(
        StatusCode::NOT_FOUND,
        10010,
        "CF-ResourceNotFound",
        format!("{what} not found"),
    )
}

/// Builds the router of one simulated Cloud Controller.
pub fn router(sim: CfSim) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/v3/info", get(info))
        .route("/uaa/oauth/token", post(token))
        .route("/v3/apps", get(list_apps))
        .route("/v3/apps/{guid}", get(get_app))
        .route("/v3/apps/{guid}/processes", get(app_processes))
        .route("/v3/processes", get(list_processes))
        .route("/v3/processes/{guid}/stats", get(process_stats))
        .route("/v3/isolation_segments", get(list_segments))
        .route(
            "/v3/isolation_segments/{guid}/relationships/spaces",
            get(segment_spaces),
        )
        .route("/v3/spaces", get(list_spaces))
        .route("/v3/spaces/{guid}", get(get_space))
        .route(
            "/v3/spaces/{guid}/relationships/isolation_segment",
            get(space_segment),
        )
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/stats", get(get_stats))
        .fallback(|uri: Uri| async move {
            cf_error(
                StatusCode::NOT_FOUND,
                10000,
                "CF-NotFound",
                format!("Unknown request {}", uri.path()),
            )
        })
        .layer(middleware::from_fn_with_state(sim.clone(), gate))
        .with_state(sim)
}

/// Counts, delays, fails and authenticates every request outside `/_sim/`, in that order
/// (as the BOSH simulator, faults come before auth).
async fn gate(State(sim): State<CfSim>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_sim/") {
        return next.run(req).await;
    }
    let (fail, latency) = {
        let mut c = sim.counters();
        c.requests += 1;
        let p = c.faults.fail_rate;
        (c.chance(p), c.faults.latency_ms)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if fail {
        return cf_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            10001,
            "UnknownError",
            "simulated failure",
        );
    }
    if path.starts_with("/v3/") && path != "/v3/info" {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        let mut c = sim.counters();
        match token {
            None => {
                c.unauthorized += 1;
                return cf_error(
                    StatusCode::UNAUTHORIZED,
                    10002,
                    "CF-NotAuthenticated",
                    "No auth token was found, but authentication is required for this endpoint",
                );
            }
            Some(t) if !c.tokens.contains(&t) => {
                c.unauthorized += 1;
                return cf_error(
                    StatusCode::UNAUTHORIZED,
                    1000,
                    "CF-InvalidAuthToken",
                    "Invalid Auth Token",
                );
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

async fn root(State(sim): State<CfSim>) -> Response {
    let base = sim.base_url();
    Json(json!({"links": {
        "self": {"href": base},
        "cloud_controller_v3": {"href": format!("{base}/v3"), "meta": {"version": "3.180.0"}},
        "login": {"href": format!("{base}/uaa")},
        "uaa": {"href": format!("{base}/uaa")},
    }}))
    .into_response()
}

async fn info() -> Response {
    Json(json!({"name": "anvil-sim-cf", "build": "", "version": 0,
        "description": "anvil's Cloud Foundry API v3 simulator", "custom": {},
        "cli_version": {"minimum": null, "recommended": null}}))
    .into_response()
}

/// UAA's password grant for the `cf` client (empty secret), as the cf CLI logs in.
async fn token(State(sim): State<CfSim>, headers: HeaderMap, body: Bytes) -> Response {
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
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect();
    let client = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b)| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|t| t.split_once(':').map(|(u, _)| u.to_string()))
        .or_else(|| form.get("client_id").cloned());
    if client.as_deref() != Some("cf") {
        return uaa_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Bad client credentials: use the client cf with an empty secret",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("password") {
        return uaa_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only the password grant is supported by the simulator",
        );
    }
    if form.get("username").map(String::as_str) != Some(&*sim.username)
        || form.get("password").map(String::as_str) != Some(&*sim.password)
    {
        return uaa_error(StatusCode::UNAUTHORIZED, "unauthorized", "Bad credentials");
    }
    let token = {
        let mut c = sim.counters();
        let t = format!("{:016x}{:016x}", c.next(), c.next());
        c.tokens_issued += 1;
        c.tokens.insert(t.clone());
        t
    };
    Json(
        json!({"access_token": token, "token_type": "bearer", "expires_in": 599,
        "scope": "cloud_controller.read cloud_controller.admin", "jti": token}),
    )
    .into_response()
}

/// `application/x-www-form-urlencoded` value decoding (`+` and `%XX`).
fn decode(v: &str) -> String {
    let v = v.replace('+', " ");
    percent_encoding::percent_decode_str(&v)
        .decode_utf8_lossy()
        .into_owned()
}

type Q = Query<HashMap<String, String>>;

/// One page of `items` as CF v3 paginates: `page` from 1, `per_page` 1..=5000 (default
/// 50); a bad value answers 400 as the Cloud Controller does.
fn paginate(sim: &CfSim, path: &str, q: &HashMap<String, String>, items: Vec<Value>) -> Response {
    let parse = |key: &str, default: usize| -> Result<usize, &'static str> {
        match q.get(key) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 && (key != "per_page" || n <= 5000) => Ok(n),
                _ if key == "per_page" => Err("Per page must be between 1 and 5000"),
                _ => Err("Page must be greater than 0"),
            },
        }
    };
    let (page, per_page) = match (parse("page", 1), parse("per_page", 50)) {
        (Ok(p), Ok(pp)) => (p, pp),
        (Err(e), _) | (_, Err(e)) => {
            return cf_error(StatusCode::BAD_REQUEST, 10008, "CF-UnprocessableEntity", e)
        }
    };
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let base = sim.base_url();
    let href = |p: usize| json!({"href": format!("{base}{path}?page={p}&per_page={per_page}")});
    let resources: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    Json(json!({
        "pagination": {
            "total_results": total,
            "total_pages": pages,
            "first": href(1),
            "last": href(pages),
            "next": if page < pages { href(page + 1) } else { Value::Null },
            "previous": if page > 1 && page <= pages + 1 { href(page - 1) } else { Value::Null },
        },
        "resources": resources,
    }))
    .into_response()
}

const CREATED: &str = "2026-01-01T00:00:00Z";

fn app_json(base: &str, a: &App) -> Value {
    json!({
        "guid": a.guid, "name": a.name, "state": a.state,
        "created_at": CREATED, "updated_at": CREATED,
        "lifecycle": {"type": "buildpack", "data": {"buildpacks": [], "stack": "cflinuxfs4"}},
        "relationships": {"space": {"data": {"guid": a.space}}},
        "metadata": {"labels": {}, "annotations": {}},
        "links": {"self": {"href": format!("{base}/v3/apps/{}", a.guid)},
                  "processes": {"href": format!("{base}/v3/apps/{}/processes", a.guid)}},
    })
}

fn process_json(base: &str, a: &App, p: &Process) -> Value {
    json!({
        "guid": p.guid, "type": p.kind, "command": null,
        "instances": p.instances, "memory_in_mb": p.memory_in_mb, "disk_in_mb": p.disk_in_mb,
        "log_rate_limit_in_bytes_per_second": -1,
        "health_check": {"type": "port", "data": {"timeout": null}},
        "relationships": {"app": {"data": {"guid": a.guid}}, "revision": null},
        "metadata": {"labels": {}, "annotations": {}},
        "created_at": CREATED, "updated_at": CREATED,
        "links": {"self": {"href": format!("{base}/v3/processes/{}", p.guid)},
                  "stats": {"href": format!("{base}/v3/processes/{}/stats", p.guid)},
                  "app": {"href": format!("{base}/v3/apps/{}", a.guid)}},
    })
}

fn space_json(base: &str, s: &Space) -> Value {
    json!({
        "guid": s.guid, "name": s.name, "created_at": CREATED, "updated_at": CREATED,
        "relationships": {"organization": {"data": {"guid": "0d4bde2a-0000-4000-8000-000000000000"}},
                          "quota": {"data": null}},
        "metadata": {"labels": {}, "annotations": {}},
        "links": {"self": {"href": format!("{base}/v3/spaces/{}", s.guid)}},
        // Not in the Cloud Controller's space object (it lives at the relationship
        // endpoint below); given here too so one request shows it.
        "isolation_segment": {"data": s.isolation_segment.as_ref().map(|g| json!({"guid": g}))},
    })
}

async fn list_apps(State(sim): State<CfSim>, Query(q): Q) -> Response {
    let base = sim.base_url();
    let items = sim
        .data
        .seed
        .apps
        .iter()
        .map(|a| app_json(&base, a))
        .collect();
    paginate(&sim, "/v3/apps", &q, items)
}

async fn get_app(State(sim): State<CfSim>, Path(guid): Path<String>) -> Response {
    match sim.data.app_index.get(&guid) {
        Some(&i) => Json(app_json(&sim.base_url(), &sim.data.seed.apps[i])).into_response(),
        None => not_found("App"),
    }
}

async fn app_processes(
    State(sim): State<CfSim>,
    Path(guid): Path<String>,
    Query(q): Q,
) -> Response {
    let Some(&i) = sim.data.app_index.get(&guid) else {
        return not_found("App");
    };
    let base = sim.base_url();
    let a = &sim.data.seed.apps[i];
    let items = a
        .processes
        .iter()
        .map(|p| process_json(&base, a, p))
        .collect();
    paginate(&sim, &format!("/v3/apps/{guid}/processes"), &q, items)
}

async fn list_processes(State(sim): State<CfSim>, Query(q): Q) -> Response {
    let base = sim.base_url();
    let items = sim
        .data
        .seed
        .apps
        .iter()
        .flat_map(|a| a.processes.iter().map(|p| process_json(&base, a, p)))
        .collect();
    paginate(&sim, "/v3/processes", &q, items)
}

async fn process_stats(State(sim): State<CfSim>, Path(guid): Path<String>) -> Response {
    let Some(&(i, j)) = sim.data.process_index.get(&guid) else {
        return not_found("Process");
    };
    let a = &sim.data.seed.apps[i];
    let p = &a.processes[j];
    let running = a.state == "STARTED";
    let resources: Vec<Value> = (0..p.instances)
        .map(|index| {
            let usage = if running {
                json!({"time": CREATED, "cpu": 0.01, "mem": p.mem_used_mb << 20,
                    "disk": 64u64 << 20, "log_rate": 0})
            } else {
                json!({})
            };
            json!({
                "type": p.kind, "index": index,
                "state": if running { "RUNNING" } else { "DOWN" },
                "host": if running { json!(format!("10.0.{}.{}", index / 250, index % 250 + 2)) } else { Value::Null },
                "uptime": if running { 3600 } else { 0 },
                "mem_quota": p.memory_in_mb << 20, "disk_quota": p.disk_in_mb << 20,
                "fds_quota": 16384, "log_rate_limit": -1, "usage": usage,
                "isolation_segment": space_segment_name(&sim, &a.space),
                "details": null, "instance_ports": [],
            })
        })
        .collect();
    Json(json!({"resources": resources})).into_response()
}

fn space_segment_name(sim: &CfSim, space: &str) -> Value {
    let d = &sim.data;
    d.space_index
        .get(space)
        .and_then(|&i| d.seed.spaces[i].isolation_segment.as_ref())
        .and_then(|g| d.seed.isolation_segments.iter().find(|s| &s.guid == g))
        .map_or(Value::Null, |s| json!(s.name))
}

async fn list_segments(State(sim): State<CfSim>, Query(q): Q) -> Response {
    let base = sim.base_url();
    // The Cloud Controller always has the `shared` segment.
    let shared = Segment {
        guid: "933b4c58-120b-499a-b85d-4b6fc9e2903b".into(),
        name: "shared".into(),
    };
    let items = std::iter::once(&shared)
        .chain(sim.data.seed.isolation_segments.iter())
        .map(|s| {
            json!({"guid": s.guid, "name": s.name, "created_at": CREATED, "updated_at": CREATED,
                "metadata": {"labels": {}, "annotations": {}},
                "links": {"self": {"href": format!("{base}/v3/isolation_segments/{}", s.guid)}}})
        })
        .collect();
    paginate(&sim, "/v3/isolation_segments", &q, items)
}

async fn segment_spaces(State(sim): State<CfSim>, Path(guid): Path<String>) -> Response {
    let d = &sim.data.seed;
    if !d.isolation_segments.iter().any(|s| s.guid == guid) {
        return not_found("Isolation segment");
    }
    let data: Vec<Value> = d
        .spaces
        .iter()
        .filter(|s| s.isolation_segment.as_deref() == Some(&guid))
        .map(|s| json!({"guid": s.guid}))
        .collect();
    Json(json!({"data": data, "links": {"self": {"href": format!("{}/v3/isolation_segments/{guid}/relationships/spaces", sim.base_url())}}}))
        .into_response()
}

async fn list_spaces(State(sim): State<CfSim>, Query(q): Q) -> Response {
    let base = sim.base_url();
    let items = sim
        .data
        .seed
        .spaces
        .iter()
        .map(|s| space_json(&base, s))
        .collect();
    paginate(&sim, "/v3/spaces", &q, items)
}

async fn get_space(State(sim): State<CfSim>, Path(guid): Path<String>) -> Response {
    match sim.data.space_index.get(&guid) {
        Some(&i) => Json(space_json(&sim.base_url(), &sim.data.seed.spaces[i])).into_response(),
        None => not_found("Space"),
    }
}

async fn space_segment(State(sim): State<CfSim>, Path(guid): Path<String>) -> Response {
    match sim.data.space_index.get(&guid) {
        Some(&i) => {
            let s = &sim.data.seed.spaces[i];
            Json(json!({
                "data": s.isolation_segment.as_ref().map(|g| json!({"guid": g})),
                "links": {"self": {"href": format!("{}/v3/spaces/{guid}/relationships/isolation_segment", sim.base_url())}},
            }))
            .into_response()
        }
        None => not_found("Space"),
    }
}

/// Counters tests use to see what clients did.
async fn get_stats(State(sim): State<CfSim>) -> Response {
    let c = sim.counters();
    Json(json!({"requests": c.requests, "tokens_issued": c.tokens_issued, "unauthorized": c.unauthorized}))
        .into_response()
}

async fn get_faults(State(sim): State<CfSim>) -> Response {
    Json(sim.counters().faults).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsPatch {
    fail_rate: Option<f64>,
    latency_ms: Option<u64>,
}

async fn put_faults(State(sim): State<CfSim>, body: Bytes) -> Response {
    let patch: FaultsPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return cf_error(
                StatusCode::BAD_REQUEST,
                10008,
                "CF-UnprocessableEntity",
                format!("bad faults: {e}"),
            )
        }
    };
    let mut c = sim.counters();
    let new = Faults {
        fail_rate: patch.fail_rate.unwrap_or(c.faults.fail_rate),
        latency_ms: patch.latency_ms.unwrap_or(c.faults.latency_ms),
    };
    if let Err(e) = new.validate() {
        return cf_error(StatusCode::BAD_REQUEST, 10008, "CF-UnprocessableEntity", e);
    }
    c.faults = new;
    Json(new).into_response()
}

/// Settings of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub sim: SimConfig,
}

/// Listens, calls `on_ready` with the base URL once the socket is bound, and serves
/// until `shutdown` completes; in-flight requests then get a few seconds to finish.
///
/// # Errors
/// Invalid settings, a port that cannot be bound, or a failing server.
pub async fn serve(
    opts: ServeOptions,
    on_ready: impl FnOnce(&str),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    let sim = CfSim::new(opts.sim)?;
    let bind_err = |source| SimError::Bind {
        addr: opts.listen,
        source,
    };
    let listener = std::net::TcpListener::bind(opts.listen).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let url = format!("http://{addr}");
    sim.set_base_url(&url);
    let app = router(sim).into_make_service();
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(Duration::from_secs(3)));
    });
    on_ready(&url);
    axum_server::from_tcp(listener)
        .handle(handle)
        .serve(app)
        .await
        .map_err(SimError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn seed() -> Seed {
        Seed {
            isolation_segments: vec![Segment {
                guid: "seg-1".into(),
                name: "prod".into(),
            }],
            spaces: vec![
                Space {
                    guid: "sp-1".into(),
                    name: "dev".into(),
                    isolation_segment: None,
                },
                Space {
                    guid: "sp-2".into(),
                    name: "prod".into(),
                    isolation_segment: Some("seg-1".into()),
                },
            ],
            apps: (0..3)
                .map(|i| App {
                    guid: format!("app-{i}"),
                    name: format!("a{i}"),
                    space: if i == 0 { "sp-2" } else { "sp-1" }.into(),
                    state: "STARTED".into(),
                    processes: vec![Process {
                        guid: format!("p-{i}"),
                        kind: "web".into(),
                        instances: 2,
                        memory_in_mb: 512,
                        disk_in_mb: 1024,
                        mem_used_mb: 100,
                    }],
                })
                .collect(),
        }
    }

    async fn call(
        sim: &CfSim,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("Authorization", format!("bearer {t}"));
        }
        if method == "POST" {
            req = req
                .header("Authorization", "Basic Y2Y6")
                .header("Content-Type", "application/x-www-form-urlencoded");
        }
        let resp = router(sim.clone())
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn login(sim: &CfSim) -> String {
        let (s, v) = call(
            sim,
            "POST",
            "/uaa/oauth/token",
            None,
            "grant_type=password&username=admin&password=admin",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    fn sim() -> CfSim {
        CfSim::new(SimConfig {
            data: seed(),
            seed: Some(1),
            ..SimConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn pages_apps_and_refuses_bad_pages() {
        let sim = sim();
        let t = login(&sim).await;
        let (s, v) = call(&sim, "GET", "/v3/apps?per_page=2", Some(&t), "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["pagination"]["total_results"], 3);
        assert_eq!(v["pagination"]["total_pages"], 2);
        assert_eq!(v["resources"].as_array().unwrap().len(), 2);
        assert!(v["pagination"]["next"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/v3/apps?page=2&per_page=2"));
        let (_, v) = call(&sim, "GET", "/v3/apps?per_page=2&page=2", Some(&t), "").await;
        assert_eq!(v["resources"][0]["guid"], "app-2");
        assert!(v["pagination"]["next"].is_null());
        for bad in ["per_page=0", "per_page=5001", "page=0", "page=x"] {
            let (s, v) = call(&sim, "GET", &format!("/v3/apps?{bad}"), Some(&t), "").await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
            assert_eq!(v["errors"][0]["title"], "CF-UnprocessableEntity");
        }
    }

    #[tokio::test]
    async fn needs_a_token_from_the_password_grant() {
        let sim = sim();
        let (s, v) = call(&sim, "GET", "/v3/apps", None, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(v["errors"][0]["title"], "CF-NotAuthenticated");
        let (s, _) = call(&sim, "GET", "/v3/apps", Some("forged"), "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, v) = call(
            &sim,
            "POST",
            "/uaa/oauth/token",
            None,
            "grant_type=password&username=admin&password=wrong",
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
        let (s, _) = call(
            &sim,
            "POST",
            "/uaa/oauth/token",
            None,
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, v) = call(&sim, "GET", "/_sim/stats", None, "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["unauthorized"], 2);
        assert_eq!(v["tokens_issued"], 0);
        assert_eq!(v["requests"], 4);
    }

    #[tokio::test]
    async fn processes_stats_and_segments() {
        let sim = sim();
        let t = login(&sim).await;
        let (_, v) = call(&sim, "GET", "/v3/apps/app-0/processes", Some(&t), "").await;
        assert_eq!(v["resources"][0]["memory_in_mb"], 512);
        let (_, v) = call(&sim, "GET", "/v3/processes/p-0/stats", Some(&t), "").await;
        assert_eq!(v["resources"].as_array().unwrap().len(), 2);
        assert_eq!(v["resources"][1]["usage"]["mem"], 100u64 << 20);
        assert_eq!(v["resources"][1]["isolation_segment"], "prod");
        let (_, v) = call(&sim, "GET", "/v3/isolation_segments", Some(&t), "").await;
        let names: Vec<&str> = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["shared", "prod"]);
        let (_, v) = call(
            &sim,
            "GET",
            "/v3/isolation_segments/seg-1/relationships/spaces",
            Some(&t),
            "",
        )
        .await;
        assert_eq!(v["data"], json!([{"guid": "sp-2"}]));
        let (_, v) = call(
            &sim,
            "GET",
            "/v3/spaces/sp-2/relationships/isolation_segment",
            Some(&t),
            "",
        )
        .await;
        assert_eq!(v["data"]["guid"], "seg-1");
        let (_, v) = call(
            &sim,
            "GET",
            "/v3/spaces/sp-1/relationships/isolation_segment",
            Some(&t),
            "",
        )
        .await;
        assert!(v["data"].is_null());
        let (s, _) = call(&sim, "GET", "/v3/processes/nope/stats", Some(&t), "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn injects_failures_changeable_at_run_time() {
        let sim = sim();
        let (s, _) = call(&sim, "PUT", "/_sim/faults", None, r#"{"fail_rate":1.0}"#).await;
        assert_eq!(s, StatusCode::OK);
        let (s, v) = call(&sim, "GET", "/v3/info", None, "").await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
        let (s, _) = call(&sim, "PUT", "/_sim/faults", None, r#"{"fail_rate":1.5}"#).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = call(&sim, "PUT", "/_sim/faults", None, r#"{"fail_rate":0}"#).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = call(&sim, "GET", "/v3/info", None, "").await;
        assert_eq!(s, StatusCode::OK);
    }

    #[test]
    fn bad_seeds_are_refused_with_what_is_wrong() {
        let mut s = seed();
        s.apps[0].space = "nowhere".into();
        assert!(s.validate().unwrap_err().contains("names space nowhere"));
        let mut s = seed();
        s.spaces[1].isolation_segment = Some("x".into());
        assert!(s.validate().unwrap_err().contains("isolation segment x"));
        let mut s = seed();
        s.apps[1].guid = "app-0".into();
        assert!(s.validate().unwrap_err().contains("used twice"));
        assert!(Seed::generate(100, 3).validate().is_ok());
    }
}
