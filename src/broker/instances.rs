//! Service instances: `PUT/PATCH/DELETE/GET /v2/service_instances/:id` and
//! `GET .../last_operation`. A request is checked against the catalog (ids, the plan's
//! parameter schema, parameters its template uses, limits counting the spec's and the
//! broker's instances), recorded durably in the store and queued for the worker before
//! the 202 goes out.

use super::middleware::REQUEST_IDENTITY;
use super::{ApiError, Shared};
use crate::ops::broker::{
    index_seed, now_rfc3339, InstanceSpec, OpKind, OpState, Operation, RequestProblem,
    StatusChange, StoreChange, StoredInstance,
};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The originating identity header, recorded with the operation.
const ORIGINATING_IDENTITY: &str = "x-broker-api-originating-identity";

/// The instance routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/v2/service_instances/{instance_id}",
            put(provision).patch(update).delete(deprovision).get(fetch),
        )
        .route(
            "/v2/service_instances/{instance_id}/last_operation",
            get(last_operation),
        )
}

#[derive(Debug, Deserialize, Default)]
struct AsyncQuery {
    accepts_incomplete: Option<String>,
}

impl AsyncQuery {
    fn accepts(&self) -> bool {
        self.accepts_incomplete.as_deref() == Some("true")
    }
}

#[derive(Debug, Deserialize)]
struct ProvisionBody {
    service_id: String,
    plan_id: String,
    organization_guid: String,
    space_guid: String,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    service_id: String,
    #[serde(default)]
    plan_id: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    context: Option<Value>,
}

/// Parses a JSON body, answering 400 with serde's words when it does not fit.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the {what} request body is not valid: {e}; see the Open Service Broker API for its fields"
        ))
    })
}

/// `parameters` as a map: absent is empty, anything but an object is a 400.
fn parameters(v: Option<&Value>) -> Result<BTreeMap<String, Value>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => Ok(m.clone().into_iter().collect()),
        Some(other) => Err(ApiError::bad_request(format!(
            "`parameters` must be a JSON object, not {other}"
        ))),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn new_operation(kind: OpKind, headers: &HeaderMap, description: String) -> Operation {
    Operation {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        state: OpState::InProgress,
        description,
        originating_identity: header(headers, ORIGINATING_IDENTITY),
        request_identity: header(headers, REQUEST_IDENTITY),
        previous_plan_id: None,
        requested_at: now_rfc3339(),
        finished_at: None,
        task_id: None,
    }
}

fn problem(p: RequestProblem) -> ApiError {
    match p {
        RequestProblem::Invalid(m) => ApiError::bad_request(m),
        RequestProblem::OverLimit(m) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "LimitReached", m)
        }
    }
}

fn accepted(op: &str) -> Response {
    (StatusCode::ACCEPTED, Json(json!({"operation": op}))).into_response()
}

fn store_failed(e: &crate::ops::OpsError) -> ApiError {
    ApiError::internal(format!(
        "the broker could not record the request durably ({e}); nothing was started, try again"
    ))
}

/// What a provision decided under the store's lock.
enum Provision {
    Accepted(String),
    Identical,
    InProgress(String),
    Refused(ApiError),
}

async fn provision(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<AsyncQuery>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b: ProvisionBody = body(&bytes, "provision")?;
    let params = parameters(b.parameters.as_ref())?;
    if !q.accepts() {
        return Err(ApiError::async_required());
    }
    if state.foundation.declared_in_spec(&id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("instance {id} is declared in the Foundation's spec files ({}); it is managed by GitOps, not by this broker", state.foundation.file().display()),
        ));
    }
    let inst = StoredInstance {
        id: id.clone(),
        service_id: b.service_id,
        plan_id: b.plan_id,
        parameters: params,
        organization_guid: b.organization_guid,
        space_guid: b.space_guid,
        context: b.context,
        operation: new_operation(
            OpKind::Provision,
            &headers,
            "provision accepted: queued for the next apply".to_string(),
        ),
    };
    let raw = b.parameters;
    // Rendering the manifest is the costly check; it needs no store, so it runs before
    // the store's lock (its result is used below, in the same order as before).
    let shape = state
        .foundation
        .check_shape(&inst.spec(), raw.as_ref(), false);
    let st = state.clone();
    let decision = state
        .store
        .update(|store: &mut StoreChange<'_>| {
            if let Some(existing) = store.instances.get(&id).filter(|e| !e.gone()) {
                let same = existing.service_id == inst.service_id
                    && existing.plan_id == inst.plan_id
                    && existing.parameters == inst.parameters
                    && existing.organization_guid == inst.organization_guid
                    && existing.space_guid == inst.space_guid;
                let op = &existing.operation;
                return match (same, op.kind, op.state) {
                    (false, _, _) => (Provision::Refused(ApiError::new(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!(
                            "instance {id} already exists with service `{}`, plan `{}` and other attributes than this request's; use another instance id, or PATCH it to change plan or parameters",
                            existing.service_id, existing.plan_id
                        ),
                    )), false),
                    (true, OpKind::Provision, OpState::InProgress) => {
                        (Provision::InProgress(op.id.clone()), false)
                    }
                    (true, OpKind::Deprovision, _) => (Provision::Refused(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "ConcurrencyError",
                        format!("instance {id} is being deprovisioned; wait for that to finish"),
                    )), false),
                    (true, _, OpState::Failed) if op.kind == OpKind::Provision => {
                        // A failed provision asked for again: try again.
                        let mut again = inst.clone();
                        again.context = existing.context.clone();
                        let op_id = again.operation.id.clone();
                        store.insert(id.clone(), again);
                        (Provision::Accepted(op_id), true)
                    }
                    (true, _, _) => (Provision::Identical, false),
                };
            }
            if let Err(p) = shape.and_then(|()| st.foundation.check_limits(&inst.spec(), store)) {
                return (Provision::Refused(problem(p)), false);
            }
            let op_id = inst.operation.id.clone();
            store.insert(id.clone(), inst.clone());
            (Provision::Accepted(op_id), true)
        })
        .await
        .map_err(|e| store_failed(&e))?;
    match decision {
        Provision::Accepted(op) => {
            if let Some(i) = state.store.get(&id) {
                state.index.queue(vec![StatusChange {
                    id: id.clone(),
                    status: Some("request_received".into()),
                    seed: index_seed(&i),
                }]);
            }
            state.worker.enqueue(&id);
            Ok(accepted(&op))
        }
        Provision::InProgress(op) => Ok(accepted(&op)),
        Provision::Identical => Ok((StatusCode::OK, Json(json!({}))).into_response()),
        Provision::Refused(e) => Err(e),
    }
}

async fn update(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<AsyncQuery>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b: UpdateBody = body(&bytes, "update")?;
    let given = parameters(b.parameters.as_ref())?;
    if !q.accepts() {
        return Err(ApiError::async_required());
    }
    if state.foundation.declared_in_spec(&id) {
        return Err(ApiError::bad_request(format!(
            "instance {id} is declared in the Foundation's spec files ({}); change it there",
            state.foundation.file().display()
        )));
    }
    let st = state.clone();
    let raw = b.parameters.clone();
    let decision = state
        .store
        .update(|store: &mut StoreChange<'_>| {
            let Some(existing) = store.instances.get(&id).filter(|e| !e.gone()).cloned() else {
                return (Provision::Refused(ApiError::bad_request(format!(
                    "instance {id} does not exist on this broker; provision it first (PUT)"
                ))), false);
            };
            if existing.operation.state == OpState::InProgress
                || existing.operation.kind == OpKind::Deprovision
            {
                return (Provision::Refused(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "ConcurrencyError",
                    format!(
                        "instance {id} has an operation in progress ({:?} {}); wait until last_operation says it finished",
                        existing.operation.kind, existing.operation.id
                    ),
                )), false);
            }
            if b.service_id != existing.service_id {
                return (Provision::Refused(ApiError::bad_request(format!(
                    "instance {id} belongs to service `{}`, not `{}`; an instance cannot change service",
                    existing.service_id, b.service_id
                ))), false);
            }
            let plan_id = b.plan_id.clone().unwrap_or_else(|| existing.plan_id.clone());
            let plan_changes = plan_id != existing.plan_id;
            if plan_changes {
                let updateable = st
                    .foundation
                    .foundation()
                    .catalog
                    .services
                    .iter()
                    .find(|s| s.id == existing.service_id)
                    .is_none_or(|s| s.plan_updateable);
                if !updateable {
                    return (Provision::Refused(ApiError::bad_request(format!(
                        "service `{}` does not allow plan changes (plan_updateable is false); provision a new instance instead",
                        existing.service_id
                    ))), false);
                }
            }
            let mut params = existing.parameters.clone();
            params.extend(given.clone());
            if !plan_changes && params == existing.parameters {
                return (Provision::Identical, false);
            }
            let mut next = existing.clone();
            next.plan_id = plan_id;
            next.parameters = params;
            if b.context.is_some() {
                next.context = b.context.clone();
            }
            let spec: InstanceSpec = next.spec();
            if let Err(p) =
                st.foundation
                    .check_request(&spec, raw.as_ref(), true, plan_changes, store)
            {
                return (Provision::Refused(problem(p)), false);
            }
            let mut op = new_operation(
                OpKind::Update,
                &headers,
                "update accepted: queued for the next apply".to_string(),
            );
            if plan_changes {
                op.previous_plan_id = Some(existing.plan_id.clone());
            }
            let op_id = op.id.clone();
            next.operation = op;
            store.insert(id.clone(), next);
            (Provision::Accepted(op_id), true)
        })
        .await
        .map_err(|e| store_failed(&e))?;
    match decision {
        Provision::Accepted(op) => {
            if let Some(i) = state.store.get(&id) {
                state.index.queue(vec![StatusChange {
                    id: id.clone(),
                    status: Some("update_requested".into()),
                    seed: index_seed(&i),
                }]);
            }
            state.worker.enqueue(&id);
            Ok(accepted(&op))
        }
        Provision::InProgress(op) => Ok(accepted(&op)),
        Provision::Identical => Ok((StatusCode::OK, Json(json!({}))).into_response()),
        Provision::Refused(e) => Err(e),
    }
}

#[derive(Debug, Deserialize, Default)]
struct DeleteQuery {
    accepts_incomplete: Option<String>,
    service_id: Option<String>,
    plan_id: Option<String>,
}

async fn deprovision(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (Some(service_id), Some(plan_id)) = (q.service_id.as_deref(), q.plan_id.as_deref()) else {
        return Err(ApiError::bad_request(
            "deprovision needs the service_id and plan_id query parameters of the instance",
        ));
    };
    if state.foundation.declared_in_spec(&id) {
        return Err(ApiError::bad_request(format!(
            "instance {id} is declared in the Foundation's spec files ({}); remove it there and run `anvil apply`",
            state.foundation.file().display()
        )));
    }
    let gone = || {
        Err(ApiError::new(
            StatusCode::GONE,
            "Gone",
            format!(
                "instance {id} does not exist (already deprovisioned, or never provisioned here)"
            ),
        ))
    };
    let Some(existing) = state.store.get(&id).filter(|e| !e.gone()) else {
        return gone();
    };
    if existing.service_id != service_id || existing.plan_id != plan_id {
        return Err(ApiError::bad_request(format!(
            "instance {id} has service `{}` and plan `{}`, not `{service_id}` and `{plan_id}`",
            existing.service_id, existing.plan_id
        )));
    }
    if q.accepts_incomplete.as_deref() != Some("true") {
        return Err(ApiError::async_required());
    }
    let decision = state
        .store
        .update(|store: &mut StoreChange<'_>| {
            let Some(existing) = store.instance_mut(&id).filter(|e| !e.gone()) else {
                return (Provision::Refused(ApiError::new(
                    StatusCode::GONE,
                    "Gone",
                    format!("instance {id} does not exist"),
                )), false);
            };
            let op = &existing.operation;
            if op.kind == OpKind::Deprovision && op.state == OpState::InProgress {
                return (Provision::InProgress(op.id.clone()), false);
            }
            if op.state == OpState::InProgress {
                return (Provision::Refused(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "ConcurrencyError",
                    format!(
                        "instance {id} has an operation in progress ({}); deprovision it once last_operation says it finished",
                        op.id
                    ),
                )), false);
            }
            let op = new_operation(
                OpKind::Deprovision,
                &headers,
                "deprovision accepted: queued for the next apply".to_string(),
            );
            let op_id = op.id.clone();
            existing.operation = op;
            (Provision::Accepted(op_id), true)
        })
        .await
        .map_err(|e| store_failed(&e))?;
    match decision {
        Provision::Accepted(op) => {
            state.index.queue(vec![StatusChange {
                id: id.clone(),
                status: Some("deprovision_requested".into()),
                seed: index_seed(&existing),
            }]);
            state.worker.enqueue(&id);
            Ok(accepted(&op))
        }
        Provision::InProgress(op) => Ok(accepted(&op)),
        Provision::Identical => Ok((StatusCode::OK, Json(json!({}))).into_response()),
        Provision::Refused(e) => Err(e),
    }
}

async fn fetch(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("instance {id} does not exist"),
        )
    };
    if let Some(i) = state
        .foundation
        .foundation()
        .instances
        .iter()
        .find(|i| i.id == id)
    {
        let plan_id = state
            .foundation
            .plan(&i.service, &i.plan)
            .map_or_else(|_| i.plan.clone(), |(_, p)| p.id.clone());
        return Ok(Json(json!({
            "service_id": i.service,
            "plan_id": plan_id,
            "parameters": Value::Object(i.parameters.clone().into_iter().collect::<Map<_, _>>()),
        }))
        .into_response());
    }
    let Some(i) = state.store.get(&id).filter(|e| !e.gone()) else {
        return Err(not_found());
    };
    let op = &i.operation;
    if op.state == OpState::InProgress && op.kind == OpKind::Provision {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("instance {id} is still being provisioned; poll last_operation"),
        ));
    }
    if op.state == OpState::InProgress && op.kind == OpKind::Update {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ConcurrencyError",
            format!("instance {id} is being updated; poll last_operation"),
        ));
    }
    Ok(Json(json!({
        "service_id": i.service_id,
        "plan_id": i.plan_id,
        "parameters": Value::Object(i.parameters.clone().into_iter().collect::<Map<_, _>>()),
    }))
    .into_response())
}

#[derive(Debug, Deserialize, Default)]
struct LastOpQuery {
    operation: Option<String>,
}

async fn last_operation(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<LastOpQuery>,
) -> Result<Response, ApiError> {
    let gone = || {
        ApiError::new(
            StatusCode::GONE,
            "Gone",
            format!("instance {id} does not exist on this broker"),
        )
    };
    let Some(i) = state.store.get(&id) else {
        return Err(gone());
    };
    let op = &i.operation;
    if let Some(asked) = q.operation.as_deref() {
        if asked != op.id {
            return Err(ApiError::bad_request(format!(
                "operation {asked} is not instance {id}'s last operation (that is {}); poll with the operation id the 202 gave",
                op.id
            )));
        }
    } else if i.gone() {
        return Err(gone());
    }
    Ok(Json(json!({"state": op.state.as_str(), "description": op.description})).into_response())
}
