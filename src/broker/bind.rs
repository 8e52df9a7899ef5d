//! Service bindings (`/v2/service_instances/:id/service_bindings/:bid` and their
//! `last_operation`), merged into the broker's router behind the same auth and version
//! checks.
//!
//! Bindings are synchronous (the spec allows it: `201` with the credentials): a bind
//! renders the plan's credentials template against the Director's VMs and the
//! instance's generated secrets and keeps them in Vault (`ops::broker_bind`); nothing
//! about a binding goes to the broker's store or the state. A `PUT` of an existing
//! binding id answers `200` with the same credentials when its attributes match and
//! `409` otherwise; `DELETE` of an unknown binding is `410`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::{ApiError, Shared};
use crate::ops::broker::OpState;
use crate::ops::broker_bind::{BindError, BindOutcome, BindRequest, BindTarget, Clients};

/// The Director and Vault clients, connected on first use (so a broker starts even
/// while Vault or the Director is briefly away; a bind then says which is).
#[derive(Clone, Default)]
pub struct LazyClients(Arc<OnceCell<Clients>>);

impl LazyClients {
    /// The connected clients of the broker's Foundation.
    ///
    /// # Errors
    /// 502 naming the Director or Vault setting or endpoint that failed.
    pub async fn get(&self, state: &Shared) -> Result<&Clients, ApiError> {
        self.0
            .get_or_try_init(|| {
                Clients::connect_env(state.foundation.foundation(), state.foundation.file())
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "BadGateway", e.to_string()))
    }
}

/// The binding routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/v2/service_instances/{id}/service_bindings/{bid}",
            get(fetch).put(bind).delete(unbind),
        )
        .route(
            "/v2/service_instances/{id}/service_bindings/{bid}/last_operation",
            get(last_operation),
        )
        .layer(Extension(LazyClients::default()))
}

/// The OSB error for a failed bind, unbind or fetch.
pub fn api_error(e: BindError) -> ApiError {
    match e {
        BindError::NotBindable { .. }
        | BindError::UnknownService { .. }
        | BindError::UnknownPlan { .. } => ApiError::bad_request(e.to_string()),
        BindError::NoDeployment { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ConcurrencyError",
            e.to_string(),
        ),
        BindError::Render { .. } => ApiError::internal(e.to_string()),
        BindError::Foundation(_) | BindError::Connect(_) | BindError::Provider { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "BadGateway", e.to_string())
        }
    }
}

/// How an instance stands for binding.
enum Lookup {
    /// Bindable now.
    Ready(BindTarget),
    /// Known but an operation on it is in flight or failed (the description says).
    Busy(String),
    /// No such instance (never created, or deprovisioned).
    Missing,
}

/// The instance `id`: a broker instance from the store, else one the spec declares.
fn lookup(state: &Shared, id: &str) -> Lookup {
    if let Some(inst) = state.store.get(id) {
        if inst.gone() || !inst.desired() {
            return if inst.gone() {
                Lookup::Missing
            } else {
                Lookup::Busy(format!(
                    "instance {id} is being deprovisioned ({}); it cannot be bound",
                    inst.operation.description
                ))
            };
        }
        if inst.operation.state != OpState::Succeeded {
            return Lookup::Busy(format!(
                "instance {id}: its {:?} is {} ({}); bind once `last_operation` says succeeded",
                inst.operation.kind,
                inst.operation.state.as_str(),
                inst.operation.description
            ));
        }
        return Lookup::Ready(BindTarget {
            instance_id: inst.id.clone(),
            service_id: inst.service_id.clone(),
            plan_id: inst.plan_id.clone(),
            organization_guid: inst.organization_guid.clone(),
            space_guid: inst.space_guid.clone(),
            parameters: inst.parameters.clone(),
        });
    }
    let f = state.foundation.foundation();
    match f.instances.iter().find(|i| i.id == id) {
        Some(i) => Lookup::Ready(BindTarget {
            instance_id: i.id.clone(),
            service_id: i.service.clone(),
            plan_id: f
                .catalog
                .services
                .iter()
                .filter(|s| s.id == i.service)
                .flat_map(|s| s.plans.iter())
                .find(|p| p.id == i.plan || p.name == i.plan)
                .map_or_else(|| i.plan.clone(), |p| p.id.clone()),
            organization_guid: i.organization_guid.clone(),
            space_guid: i.space_guid.clone(),
            parameters: i.parameters.clone(),
        }),
        None => Lookup::Missing,
    }
}

fn string_field(body: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("`{key}` must be a string"))),
    }
}

async fn bind(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
    Path((id, bid)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the bind request body is not JSON ({e}); send {{\"service_id\": …, \"plan_id\": …}}"
        ))
    })?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the bind request body must be a JSON object with service_id and plan_id",
        ));
    }
    let service_id = string_field(&body, "service_id")?.ok_or_else(|| {
        ApiError::bad_request(
            "the bind request has no `service_id`: send the instance's service id",
        )
    })?;
    let plan_id = string_field(&body, "plan_id")?.ok_or_else(|| {
        ApiError::bad_request("the bind request has no `plan_id`: send the instance's plan id")
    })?;
    for key in ["bind_resource", "parameters", "context"] {
        if body
            .get(key)
            .is_some_and(|v| !v.is_object() && !v.is_null())
        {
            return Err(ApiError::bad_request(format!(
                "`{key}` must be a JSON object"
            )));
        }
    }
    let target = match lookup(&state, &id) {
        Lookup::Ready(t) => t,
        Lookup::Busy(why) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ConcurrencyError",
                why,
            ))
        }
        Lookup::Missing => {
            return Err(ApiError::bad_request(format!(
                "service instance {id} does not exist: provision it first (PUT /v2/service_instances/{id})"
            )))
        }
    };
    if service_id != target.service_id || plan_id != target.plan_id {
        // An existing binding asked for again with other ids is a conflict (409), the
        // answer the spec gives for a binding id reused with other attributes; only a
        // new binding with ids that are not the instance's is a bad request.
        let c = clients.get(&state).await?;
        if c.binding(&id, &bid).await.map_err(api_error)?.is_some() {
            return Err(conflict(&id, &bid));
        }
        return Err(ApiError::bad_request(format!(
            "instance {id} is of service `{}` plan `{}`, not service `{service_id}` plan `{plan_id}`: send the instance's own ids",
            target.service_id, target.plan_id
        )));
    }
    let c = clients.get(&state).await?;
    let request = BindRequest {
        binding_id: bid.clone(),
        service_id,
        plan_id,
        app_guid: string_field(&body, "app_guid")?,
        bind_resource: body.get("bind_resource").cloned().filter(|v| !v.is_null()),
        parameters: body.get("parameters").cloned().filter(|v| !v.is_null()),
    };
    let outcome = c
        .bind(&target, &request, &state.stopping)
        .await
        .map_err(api_error)?;
    Ok(match outcome {
        BindOutcome::Created(creds) => {
            (StatusCode::CREATED, Json(json!({ "credentials": creds }))).into_response()
        }
        BindOutcome::Existing(creds) => {
            (StatusCode::OK, Json(json!({ "credentials": creds }))).into_response()
        }
        BindOutcome::Conflict => conflict(&id, &bid).into_response(),
    })
}

fn conflict(id: &str, bid: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "binding {bid} of instance {id} already exists with different attributes: use a new binding id, or unbind it first"
        ),
    )
}

#[derive(serde::Deserialize)]
struct IdsQuery {
    service_id: Option<String>,
    plan_id: Option<String>,
}

fn require_ids(q: &IdsQuery, what: &str) -> Result<(), ApiError> {
    if q.service_id.as_deref().unwrap_or("").is_empty()
        || q.plan_id.as_deref().unwrap_or("").is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "{what} needs the `service_id` and `plan_id` query parameters of the instance"
        )));
    }
    Ok(())
}

async fn unbind(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
    Path((id, bid)): Path<(String, String)>,
    Query(q): Query<IdsQuery>,
) -> Result<Response, ApiError> {
    require_ids(&q, "an unbind")?;
    if matches!(lookup(&state, &id), Lookup::Missing) {
        return Ok((StatusCode::GONE, Json(json!({}))).into_response());
    }
    let c = clients.get(&state).await?;
    let removed = c.unbind(&id, &bid).await.map_err(api_error)?;
    Ok(if removed {
        (StatusCode::OK, Json(json!({}))).into_response()
    } else {
        (StatusCode::GONE, Json(json!({}))).into_response()
    })
}

async fn fetch(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
    Path((id, bid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("binding {bid} of service instance {id} does not exist"),
        )
    };
    if matches!(lookup(&state, &id), Lookup::Missing) {
        return Err(not_found());
    }
    let c = clients.get(&state).await?;
    match c.binding(&id, &bid).await.map_err(api_error)? {
        Some(b) => {
            let mut body = json!({ "credentials": b.credentials });
            for key in ["parameters"] {
                if let Some(v) = b.attributes.get(key).filter(|v| !v.is_null()) {
                    body[key] = v.clone();
                }
            }
            Ok((StatusCode::OK, Json(body)).into_response())
        }
        None => Err(not_found()),
    }
}

/// Bindings are made synchronously, so a binding that exists has succeeded; one that
/// does not is gone (410), as the spec answers for a finished unbind.
async fn last_operation(
    State(state): State<Shared>,
    Extension(clients): Extension<LazyClients>,
    Path((id, bid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if matches!(lookup(&state, &id), Lookup::Missing) {
        return Ok((StatusCode::GONE, Json(json!({}))).into_response());
    }
    let c = clients.get(&state).await?;
    Ok(match c.binding(&id, &bid).await.map_err(api_error)? {
        Some(_) => (
            StatusCode::OK,
            Json(json!({"state": "succeeded", "description": format!("binding {bid} of instance {id} is ready")})),
        )
            .into_response(),
        None => (StatusCode::GONE, Json(json!({}))).into_response(),
    })
}
