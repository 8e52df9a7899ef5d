//! The HTTP API of `anvil serve`: `/api/v1/environments` (create, list, show, destroy,
//! refresh, events — JSON or Server-Sent Events), `/health` and `/metrics`, the JSON
//! error bodies every 4xx/5xx carries, and the request-correlation middleware.
//!
//! Handlers validate their input themselves (bodies, ids, query parameters) instead of
//! using axum's extractors' rejections, so every refusal is a JSON [`ErrorBody`] naming
//! the field. Submitted documents are checked by `ops::environment_doc`, exactly like a
//! spec file, before anything reaches the queue.

use super::auth::UserId;
use super::metrics::Metrics;
use super::queue::{
    Environment, JobEvent, JobQueue, ListQuery, NewEnvironment, PlanSummary, QueueError, Status,
};
use crate::ops::environment_doc::{self, BodyFormat, EnvironmentDocError};
use crate::ops::CancellationToken;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

/// The collection's path.
pub const ENVIRONMENTS: &str = "/api/v1/environments";
/// Request bodies larger than this are refused (413).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// `?limit=` default and ceiling.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;
/// The request-correlation header, echoed on every answer.
pub const REQUEST_ID: &str = "x-request-id";
/// Outputs never shown by the API even if a queue recorded them (the kubeconfig holds a
/// cluster's credentials).
const SENSITIVE_OUTPUTS: &[&str] = &["kubeconfig"];

/// What every handler shares.
pub struct AppState {
    pub queue: Arc<dyn JobQueue>,
    pub metrics: Arc<Metrics>,
    /// Workers this process runs (0 with `--no-workers`), for `/health`.
    pub local_workers: usize,
    /// How often an event stream asks the queue for new events.
    pub events_poll: Duration,
    /// Fired when the server stops: event streams end.
    pub stopping: CancellationToken,
    /// The capacity service, when `--cf-api` is given (`/api/dashboard`… and the
    /// dashboard's cells).
    pub capacity: Option<Arc<crate::ops::capacity::Service>>,
}

/// The shared state handlers get.
pub type Shared = Arc<AppState>;

// ---- bodies ----

/// One environment.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentView {
    pub id: Uuid,
    /// The document's `metadata.name`, also its state workspace.
    pub name: String,
    /// The name of the token that created it.
    pub user_id: String,
    pub status: Status,
    /// The step it failed in (`failed` only).
    pub failed_step: Option<Status>,
    /// Why it failed (`failed` only).
    pub error: Option<String>,
    /// Outputs of the last successful apply (`vpc_id`, `cluster_endpoint`, ...); sensitive
    /// outputs (the kubeconfig) are never shown.
    #[schema(value_type = Object)]
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// What the last applied plan changed.
    pub last_plan: Option<PlanSummary>,
    /// The document as recorded (canonical JSON).
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// This environment's URL and its events' URL.
    pub links: Links,
}

/// Where to find an environment and its events.
#[derive(Debug, Serialize, ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    #[schema(rename = "self")]
    pub this: String,
    pub events: String,
}

impl From<Environment> for EnvironmentView {
    fn from(e: Environment) -> Self {
        let this = format!("{ENVIRONMENTS}/{}", e.id);
        let mut outputs = e.outputs;
        outputs.retain(|k, _| !SENSITIVE_OUTPUTS.contains(&k.as_str()));
        EnvironmentView {
            id: e.id,
            name: e.name,
            user_id: e.user_id,
            status: e.status,
            failed_step: e.failed_step,
            error: e.error,
            outputs,
            last_plan: e.last_plan,
            document: e.document,
            created_at: e.created_at,
            updated_at: e.updated_at,
            links: Links {
                events: format!("{this}/events"),
                this,
            },
        }
    }
}

/// A page of environments, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentList {
    pub items: Vec<EnvironmentView>,
    /// The URL of the next page; `null` on the last.
    pub next: Option<String>,
}

/// An environment's job events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub environment_id: Uuid,
    pub status: Status,
    pub events: Vec<JobEvent>,
}

/// `/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the queue (database) cannot be reached.
    pub status: String,
    /// Jobs waiting for a worker.
    pub queue_depth: Option<usize>,
    /// Jobs under a live lease.
    pub running: Option<usize>,
    /// Workers of every server on this queue that heartbeated within their lease.
    pub workers_alive: Option<usize>,
    /// Workers this process runs.
    pub local_workers: usize,
    /// Why the queue is unavailable.
    pub error: Option<String>,
}

/// Every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `malformed_document`, `invalid_document`,
    /// `unauthorized`, `not_found`, `method_not_allowed`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `unavailable`.
    pub error: String,
    /// What is wrong and what to do.
    pub message: String,
    /// The field, header or parameter at fault, when one is.
    pub field: Option<String>,
    /// Every problem found in a submitted document, located.
    pub errors: Vec<FieldError>,
}

/// One problem in a submitted document.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    /// The field path inside the document, e.g. `network.cidr` (empty: the document).
    pub path: String,
    /// The virtual file the document was checked as, e.g. `environments/request.json`.
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

// ---- errors ----

/// Why a request was refused; each maps to a status and an [`ErrorBody`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    #[error(transparent)]
    Document(#[from] EnvironmentDocError),
    #[error("{0}")]
    Unauthorized(String),
    #[error("no route {method} {path}; the API is under {ENVIRONMENTS} (docs/serve.md)")]
    NoRoute { method: String, path: String },
    #[error("{method} is not allowed on {path}; see docs/serve.md for the methods of each route")]
    MethodNotAllowed { method: String, path: String },
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the body is larger than {MAX_BODY_BYTES} bytes; an Environment document is a few hundred bytes")]
    TooLarge,
    #[error("Content-Type {0:?}: send the document as application/json or application/yaml")]
    MediaType(String),
}

impl ApiError {
    fn bad(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The status and the body.
    #[must_use]
    pub fn parts(&self) -> (StatusCode, ErrorBody) {
        let body = |error: &str, field: Option<&str>| ErrorBody {
            error: error.to_string(),
            message: self.to_string(),
            field: field.map(str::to_string),
            errors: Vec::new(),
        };
        match self {
            ApiError::BadRequest { field, .. } => {
                (StatusCode::BAD_REQUEST, body("bad_request", Some(field)))
            }
            ApiError::Document(EnvironmentDocError::Malformed {
                location, message, ..
            }) => {
                let mut b = body("malformed_document", Some("body"));
                b.errors.push(FieldError {
                    path: String::new(),
                    file: Some(location.file.display().to_string()),
                    line: Some(location.line),
                    column: Some(location.column),
                    message: message.clone(),
                });
                (StatusCode::BAD_REQUEST, b)
            }
            ApiError::Document(EnvironmentDocError::Invalid(errs)) => {
                let first = errs.0.first().map(|e| e.path.clone());
                let mut b = body("invalid_document", first.as_deref());
                b.errors = errs
                    .0
                    .iter()
                    .map(|e| FieldError {
                        path: e.path.clone(),
                        file: e.file.as_ref().map(|f| f.display().to_string()),
                        line: e.location.as_ref().map(|l| l.line),
                        column: e.location.as_ref().map(|l| l.column),
                        message: e.message.clone(),
                    })
                    .collect();
                (StatusCode::UNPROCESSABLE_ENTITY, b)
            }
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                body("unauthorized", Some("Authorization")),
            ),
            ApiError::NoRoute { .. } => (StatusCode::NOT_FOUND, body("not_found", None)),
            ApiError::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                body("method_not_allowed", None),
            ),
            ApiError::Queue(q) => match q {
                QueueError::NotFound { .. } => {
                    (StatusCode::NOT_FOUND, body("not_found", Some("id")))
                }
                QueueError::Conflict { .. } => {
                    (StatusCode::CONFLICT, body("conflict", Some("status")))
                }
                QueueError::NameTaken { .. } => (
                    StatusCode::CONFLICT,
                    body("conflict", Some("metadata.name")),
                ),
                QueueError::IdempotencyMismatch { .. } => (
                    StatusCode::CONFLICT,
                    body("conflict", Some("Idempotency-Key")),
                ),
                QueueError::BadCursor { .. } => {
                    (StatusCode::BAD_REQUEST, body("bad_request", Some("cursor")))
                }
                QueueError::Storage { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, body("unavailable", None))
                }
            },
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                body("payload_too_large", Some("body")),
            ),
            ApiError::MediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                body("unsupported_media_type", Some("Content-Type")),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %body.message, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %body.message, "request refused");
        }
        (status, Json(body)).into_response()
    }
}

// ---- helpers ----

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    let id = Uuid::parse_str(raw).map_err(|_| {
        ApiError::bad(
            "id",
            format!("{raw:?} is not an environment id (a UUID as POST returned it)"),
        )
    })?;
    tracing::Span::current().record("environment_id", tracing::field::display(id));
    Ok(id)
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let Some(raw) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::MediaType(String::new()));
    };
    let text = raw.to_str().unwrap_or_default();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Ok(BodyFormat::Yaml)
        }
        e if e.starts_with("application/") && e.ends_with("+json") => Ok(BodyFormat::Json),
        _ => Err(ApiError::MediaType(text.to_string())),
    }
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::bad("body", format!("the body could not be read: {e}"))
        }
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::bad(
            "Idempotency-Key",
            "use 1 to 255 visible ASCII characters (a UUID is a good key)",
        ));
    }
    Ok(Some(key.to_string()))
}

/// Query parameters, percent-decoded, in order.
fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(Vec::new());
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| ApiError::bad("query", "the query string is not UTF-8 once decoded"))
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn status_list() -> String {
    Status::ALL
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- handlers ----

/// Submit an Environment document: it is checked like a spec file, recorded and queued.
#[utoipa::path(
    post,
    path = "/api/v1/environments",
    tag = "environments",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same document returns the environment the first request created (200); with another document, 409.")
    ),
    responses(
        (status = 201, description = "Recorded and queued", body = EnvironmentView,
            headers(("Location" = String, description = "The environment's URL"))),
        (status = 200, description = "An earlier request with this Idempotency-Key created it", body = EnvironmentView),
        (status = 400, description = "The body is not JSON / YAML, or a header is wrong", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "The name is taken, or the Idempotency-Key was used for another document", body = ErrorBody),
        (status = 413, description = "The body is larger than 1 MiB", body = ErrorBody),
        (status = 415, description = "Content-Type is neither JSON nor YAML", body = ErrorBody),
        (status = 422, description = "Not a valid Environment document; `errors` names each field and line:column", body = ErrorBody),
        (status = 503, description = "The queue (database) is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(app): State<Shared>,
    Extension(user): Extension<UserId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let format = body_format(&headers)?;
    let body = body_bytes(body)?;
    let key = idempotency_key(&headers)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad("body", format!("the body is not UTF-8: {e}")))?;
    let checked = environment_doc::check(
        &environment_doc::virtual_file("request", format),
        text,
        format,
    )?;
    let submitted = app
        .queue
        .submit(NewEnvironment {
            name: checked.name,
            user_id: user.0,
            document: checked.document,
            idempotency_key: key,
        })
        .await?;
    let env = submitted.environment;
    tracing::Span::current().record("environment_id", tracing::field::display(env.id));
    let status = if submitted.created {
        app.metrics.submitted();
        tracing::info!(name = %env.name, user_id = %env.user_id, "environment queued");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("{ENVIRONMENTS}/{}", env.id);
    let mut resp = (status, Json(EnvironmentView::from(env))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// List environments, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/environments",
    tag = "environments",
    params(
        ("status" = Option<Status>, Query, description = "Only environments in this status"),
        ("limit" = Option<u32>, Query, description = "Page size, clamped to 1..=200 (default 50)"),
        ("cursor" = Option<String>, Query, description = "The `cursor` of the previous page's `next` link"),
    ),
    responses(
        (status = 200, description = "A page", body = EnvironmentList),
        (status = 400, description = "A bad query parameter (named in `field`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "The queue (database) is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut query = ListQuery {
        limit: DEFAULT_LIMIT,
        ..ListQuery::default()
    };
    for (k, v) in query_pairs(raw.as_deref())? {
        match k.as_str() {
            "status" => {
                query.status = Some(Status::parse(&v).ok_or_else(|| {
                    ApiError::bad(
                        "status",
                        format!("{v:?} is not a status; one of {}", status_list()),
                    )
                })?);
            }
            "limit" => {
                let n: u64 = v.parse().map_err(|_| {
                    ApiError::bad(
                        "limit",
                        format!("{v:?} is not a whole number; give 1 to {MAX_LIMIT}"),
                    )
                })?;
                query.limit = usize::try_from(n).unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT);
            }
            "cursor" => query.cursor = Some(v),
            // Unknown parameters are ignored, as most HTTP APIs do.
            _ => {}
        }
    }
    let page = app.queue.list(&query).await?;
    let next = page.next.map(|c| {
        let mut url = format!("{ENVIRONMENTS}?limit={}&cursor={}", query.limit, encode(&c));
        if let Some(s) = query.status {
            url.push_str(&format!("&status={}", s.as_str()));
        }
        url
    });
    let link = next.as_ref().map(|n| format!("<{n}>; rel=\"next\""));
    let mut resp = Json(EnvironmentList {
        items: page.items.into_iter().map(EnvironmentView::from).collect(),
        next,
    })
    .into_response();
    if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, v);
    }
    Ok(resp)
}

/// One environment: status, outputs, error and failed step, timestamps, last plan.
#[utoipa::path(
    get,
    path = "/api/v1/environments/{id}",
    tag = "environments",
    params(("id" = Uuid, Path, description = "The environment's id (a UUID)")),
    responses(
        (status = 200, description = "The environment", body = EnvironmentView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 503, description = "The queue (database) is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<EnvironmentView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(app.queue.get(id).await?.into()))
}

/// Destroy an environment: its destroy job is queued (`destroy_queued`).
#[utoipa::path(
    delete,
    path = "/api/v1/environments/{id}",
    tag = "environments",
    params(("id" = Uuid, Path, description = "The environment's id (a UUID)")),
    responses(
        (status = 202, description = "The destroy job is queued", body = EnvironmentView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 409, description = "Already destroyed or being destroyed, or a job of it is running", body = ErrorBody),
        (status = 503, description = "The queue (database) is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn destroy(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<EnvironmentView>), ApiError> {
    let id = parse_id(&id)?;
    let env = app.queue.request_destroy(id).await?;
    tracing::info!("destroy queued");
    Ok((StatusCode::ACCEPTED, Json(env.into())))
}

/// Apply the environment again (after drift, or to retry a failure from its recorded state).
#[utoipa::path(
    post,
    path = "/api/v1/environments/{id}/refresh",
    tag = "environments",
    params(("id" = Uuid, Path, description = "The environment's id (a UUID)")),
    responses(
        (status = 202, description = "A provision job is queued", body = EnvironmentView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 409, description = "Not ready or failed", body = ErrorBody),
        (status = 503, description = "The queue (database) is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn refresh(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<EnvironmentView>), ApiError> {
    let id = parse_id(&id)?;
    let env = app.queue.request_refresh(id).await?;
    tracing::info!("refresh queued");
    Ok((StatusCode::ACCEPTED, Json(env.into())))
}

/// The environment's job events; with `Accept: text/event-stream`, a Server-Sent Events
/// stream that follows new events until the job ends.
#[utoipa::path(
    get,
    path = "/api/v1/environments/{id}/events",
    tag = "environments",
    params(
        ("id" = Uuid, Path, description = "The environment's id (a UUID)"),
        ("after" = Option<u64>, Query, description = "Only events after this `seq` (default 0: all)"),
    ),
    responses(
        (status = 200, description = "The events (JSON), or an SSE stream (`event:` the kind, `id:` the seq, `data:` the event as JSON)",
            content((EventList = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "The id is not a UUID, or `after` is not a number", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 503, description = "The queue (database) is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(app): State<Shared>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let mut after = 0u64;
    for (k, v) in query_pairs(raw.as_deref())? {
        if k == "after" {
            after = v.parse().map_err(|_| {
                ApiError::bad(
                    "after",
                    format!("{v:?} is not an event seq (a whole number)"),
                )
            })?;
        }
    }
    if let Some(last) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        after = after.max(last);
    }
    let env = app.queue.get(id).await?;
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        return Ok(stream(app, id, after).into_response());
    }
    let events = app.queue.events(id, after).await?;
    Ok(Json(EventList {
        environment_id: id,
        status: env.status,
        events,
    })
    .into_response())
}

/// Whether no job of an environment in this status is queued or running.
fn settled(s: Status) -> bool {
    matches!(s, Status::Ready | Status::Destroyed | Status::Failed)
}

/// The SSE stream: polls the queue, sends each new event, and ends once the environment
/// settled and every event up to then was sent (or the server stops).
fn stream(
    app: Shared,
    id: Uuid,
    after: u64,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    struct Cursor {
        app: Shared,
        id: Uuid,
        after: u64,
        first: bool,
        done: bool,
    }
    let start = Cursor {
        app,
        id,
        after,
        first: true,
        done: false,
    };
    let polls = futures::stream::unfold(start, |mut c| async move {
        if c.done {
            return None;
        }
        if !c.first {
            tokio::select! {
                () = tokio::time::sleep(c.app.events_poll) => {}
                () = c.app.stopping.cancelled() => return None,
            }
        }
        c.first = false;
        // Status first, then events: events written before it settled are all read.
        let status = match c.app.queue.get(c.id).await {
            Ok(env) => env.status,
            Err(e) => {
                c.done = true;
                return Some((vec![error_event(&e)], c));
            }
        };
        let batch = match c.app.queue.events(c.id, c.after).await {
            Ok(evs) => evs,
            Err(e) => {
                c.done = true;
                return Some((vec![error_event(&e)], c));
            }
        };
        if let Some(last) = batch.last() {
            c.after = last.seq;
        }
        c.done = settled(status);
        let out = batch
            .iter()
            .map(|ev| {
                Event::default()
                    .event(ev.kind.clone())
                    .id(ev.seq.to_string())
                    .json_data(ev)
                    .unwrap_or_else(|_| Event::default().data(ev.message.clone()))
            })
            .collect::<Vec<_>>();
        Some((out, c))
    });
    Sse::new(polls.flat_map(|evs| futures::stream::iter(evs.into_iter().map(Ok))))
        .keep_alive(KeepAlive::default())
}

fn error_event(e: &QueueError) -> Event {
    Event::default().event("error").data(e.to_string())
}

/// Liveness and readiness: the queue (database) reachable, its depth, workers alive.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "The queue is reachable", body = Health),
        (status = 503, description = "The queue (database) is unavailable", body = Health),
    )
)]
pub async fn health(State(app): State<Shared>) -> (StatusCode, Json<Health>) {
    let stats = tokio::time::timeout(Duration::from_secs(5), app.queue.stats()).await;
    match stats {
        Ok(Ok(s)) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
                queue_depth: Some(s.queued),
                running: Some(s.running),
                workers_alive: Some(s.workers_alive),
                local_workers: app.local_workers,
                error: None,
            }),
        ),
        failed => {
            let error = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "the job queue did not answer within 5s".to_string(),
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".into(),
                    queue_depth: None,
                    running: None,
                    workers_alive: None,
                    local_workers: app.local_workers,
                    error: Some(error),
                }),
            )
        }
    }
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain; version=0.0.4", body = String))
)]
pub async fn metrics(State(app): State<Shared>) -> Response {
    let stats = tokio::time::timeout(Duration::from_secs(5), app.queue.stats())
        .await
        .ok()
        .and_then(Result::ok);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        app.metrics.render(stats),
    )
        .into_response()
}

/// Unknown paths: 404 with a JSON body.
pub async fn no_route(req: Request) -> ApiError {
    ApiError::NoRoute {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    }
}

/// Known paths, wrong method: 405 with a JSON body.
pub async fn wrong_method(req: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    }
}

/// The correlation middleware: every request runs in a span carrying `correlation_id`
/// (the client's `X-Request-Id` when it is sane, else a new UUID) and `environment_id`
/// (recorded by the handler once known); the id is echoed in `X-Request-Id`.
pub async fn correlate(req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()));
    let id = given.map_or_else(|| Uuid::new_v4().to_string(), str::to_string);
    let span = tracing::info_span!(
        "request",
        correlation_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        environment_id = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request done"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}
