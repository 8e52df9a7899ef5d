//! Blacksmith's internal API, behind the broker's basic auth (no
//! `X-Broker-API-Version`: it is not OSB): `GET /b/status`, `POST /b/cleanup`,
//! `GET /b/deployments/{name}/vms|events`, and per instance `GET /b/{id}/manifest.yml`,
//! `GET /b/{id}/creds.yml` (values redacted unless `?reveal=true`), `GET
//! /b/{id}/task.log`, `POST /b/{id}/redeploy`.
//!
//! Who may reveal credentials: the admin, which is whoever holds the broker's own
//! basic-auth credentials — the only credentials the broker accepts, so every caller
//! that passes auth is the admin; `reveal=true` is an explicit opt-in so a dashboard
//! or a log of responses does not show secrets by default.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::bind::{api_error, LazyClients};
use super::worker::Redeploy;
use super::{ApiError, Shared};
use crate::ops::broker::OpState;
use crate::ops::broker_bind::BindError;

/// The `/b/...` routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/b/status", get(status))
        .route("/b/cleanup", post(cleanup))
        .route("/b/deployments/{name}/vms", get(vms))
        .route("/b/deployments/{name}/events", get(events))
        .route("/b/{id}/manifest.yml", get(manifest))
        .route("/b/{id}/creds.yml", get(creds))
        .route("/b/{id}/task.log", get(task_log))
        .route("/b/{id}/redeploy", post(redeploy))
        .layer(Extension(LazyClients::default()))
}

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NotFound", what)
}

fn text(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn status(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
) -> Result<Response, ApiError> {
    let c = clients.get(&state).await?;
    let index = c.index().await.map_err(api_error)?;
    let plans = c.plans_with_counts(&index);
    let log: Vec<String> = state.store.read(|s| {
        s.instances
            .values()
            .map(|i| {
                format!(
                    "{} {} {:?} {}: {}",
                    i.operation.requested_at,
                    i.id,
                    i.operation.kind,
                    i.operation.state.as_str(),
                    i.operation.description
                )
            })
            .collect()
    });
    Ok(Json(json!({
        "env": state.foundation.foundation().metadata.name,
        "version": env!("CARGO_PKG_VERSION"),
        "instances": index,
        "plans": plans,
        "log": log.join("\n"),
    }))
    .into_response())
}

async fn cleanup(State(state): State<Shared>) -> Result<Response, ApiError> {
    let request = crate::ops::reconcile::ReconcileRequest {
        foundation: state.foundation.file().to_path_buf(),
        ..Default::default()
    };
    // The reconcile run's future is not `Send` (it borrows across awaits in ways the
    // compiler cannot prove thread-safe), so it runs on a blocking thread of its own.
    let handle = tokio::runtime::Handle::current();
    let stopping = state.stopping.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            crate::ops::reconcile::reconcile(&request, &crate::ops::discard(), &stopping).await
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("the cleanup run stopped: {e}")))?
    .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "BadGateway", e.to_string()))?;
    Ok(match outcome {
        crate::ops::reconcile::ReconcileOutcome::Once { report, .. } => Json(json!({
            "orphaned": report.orphaned.iter().map(|o| json!({
                "instance_id": o.instance_id,
                "deployment_name": o.deployment_name,
                "orphaned_at": o.orphaned_at,
            })).collect::<Vec<_>>(),
            "newly_orphaned": report.newly_orphaned,
            "cleared": report.cleared,
            "errors": report.errors.iter().map(|e| format!("{}: {}", e.subject, e.message)).collect::<Vec<_>>(),
            "note": "orphans are marked in the index (orphaned, orphaned_at); their secrets are kept",
        }))
        .into_response(),
        _ => Json(json!({"orphaned": [], "note": "the reconciler is disabled (ANVIL_RECONCILER_ENABLED)"}))
            .into_response(),
    })
}

async fn vms(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let c = clients.get(&state).await?;
    match c.vms(&name, &state.stopping).await.map_err(api_error)? {
        Some(v) => Ok(Json(Value::Array(v)).into_response()),
        None => Err(not_found(format!(
            "deployment {name} is not on the Director ({})",
            c.director.url()
        ))),
    }
}

async fn events(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let c = clients.get(&state).await?;
    let events = c.director.events(&name).await.map_err(|source| {
        api_error(BindError::Provider {
            context: format!("the events of deployment {name}"),
            source,
        })
    })?;
    Ok(Json(Value::Array(events)).into_response())
}

async fn manifest(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = clients.get(&state).await?;
    match c.manifest_of(&id).await.map_err(api_error)? {
        Some(m) => Ok(text("text/yaml", m)),
        None => Err(not_found(format!(
            "instance {id} has no manifest (no {}/{id}/manifest in Vault and no deployment on the Director)",
            c.mount
        ))),
    }
}

#[derive(serde::Deserialize)]
struct Reveal {
    reveal: Option<String>,
}

async fn creds(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
    Path(id): Path<String>,
    Query(q): Query<Reveal>,
) -> Result<Response, ApiError> {
    let reveal = match q.reveal.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "reveal={other}: expected reveal=true or reveal=false"
            )))
        }
    };
    let c = clients.get(&state).await?;
    match c.creds_yaml(&id, reveal).await.map_err(api_error)? {
        Some(y) => Ok(text("text/yaml", y)),
        None => Err(not_found(format!(
            "instance {id} is unknown: it has no index entry and no {}/{id}/credentials",
            c.mount
        ))),
    }
}

async fn task_log(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = clients.get(&state).await?;
    match c.task_log(&id).await.map_err(api_error)? {
        Some(log) => Ok(text("text/plain; charset=utf-8", log)),
        None => Err(not_found(format!(
            "instance {id} has no BOSH task (unknown instance, or nothing deployed yet)"
        ))),
    }
}

/// Deploys the instance's kept manifest again (Blacksmith's redeploy) through the
/// worker's queue, so it runs under the state lock after the batch in progress and is
/// recorded like any operation: `202` with the BOSH task id once the Director handed it
/// out; `422` while the instance's own operation is in progress.
async fn redeploy(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(inst) = state.store.get(&id) {
        if inst.operation.state == OpState::InProgress {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ConcurrencyError",
                format!(
                    "instance {id}: its {:?} is in progress ({}); redeploy once `last_operation` says succeeded",
                    inst.operation.kind, inst.operation.description
                ),
            ));
        }
    }
    let c = clients.get(&state).await?;
    let entry = c.entry(&id).await.map_err(api_error)?;
    let Some(entry) = entry else {
        return Err(not_found(format!(
            "instance {id} is not in the index ({}/db): nothing to redeploy",
            c.mount
        )));
    };
    let deployment = entry
        .get("deployment_name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            entry
                .get("plan_id")
                .and_then(Value::as_str)
                .map(|p| format!("{p}-{id}"))
        })
        .unwrap_or_default();
    let Some(manifest) = c.manifest_of(&id).await.map_err(api_error)? else {
        return Err(not_found(format!(
            "instance {id} has no manifest to redeploy"
        )));
    };
    let (started, answer) = tokio::sync::oneshot::channel();
    state.worker.redeploy(Redeploy {
        id: id.clone(),
        deployment: deployment.clone(),
        manifest,
        clients: clients.clone(),
        started,
    });
    match answer.await {
        Ok(Ok(task)) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"instance_id": id, "deployment": deployment, "task_id": task})),
        )
            .into_response()),
        Ok(Err(why)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "BadGateway", why)),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("the broker is stopping: redeploy of instance {id} was not started; send it again once the broker is back"),
        )),
    }
}
