//! `GET /v2/catalog`: the Foundation's catalog in the OSB shape (ids, names,
//! descriptions, bindable, tags, `plan_updateable`, metadata, parameter schemas).

use super::Shared;
use crate::ops::broker::{CatalogPlan, CatalogService};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// The catalog route.
pub fn routes() -> Router<Shared> {
    Router::new().route("/v2/catalog", get(catalog))
}

async fn catalog(State(state): State<Shared>) -> Json<Value> {
    Json(state.catalog.clone())
}

/// The OSB catalog document of a Foundation.
pub fn document(f: &crate::ops::broker::FoundationDoc) -> Value {
    json!({"services": f.catalog.services.iter().map(service).collect::<Vec<_>>()})
}

/// A description is required by the spec and shown in the marketplace: never empty.
fn described(description: &str, name: &str) -> String {
    if description.trim().is_empty() {
        name.to_string()
    } else {
        description.to_string()
    }
}

fn service(s: &CatalogService) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(s.id));
    m.insert("name".into(), json!(s.name));
    m.insert(
        "description".into(),
        json!(described(&s.description, &s.name)),
    );
    m.insert("bindable".into(), json!(s.bindable));
    m.insert("tags".into(), json!(s.tags));
    m.insert("plan_updateable".into(), json!(s.plan_updateable));
    // `GET /v2/service_instances/:id` and `GET …/service_bindings/:bid` both work.
    m.insert("instances_retrievable".into(), json!(true));
    m.insert("bindings_retrievable".into(), json!(true));
    m.insert("instances_retrievable".into(), json!(true));
    m.insert("bindings_retrievable".into(), json!(true));
    if let Some(md) = &s.metadata {
        m.insert("metadata".into(), Value::Object(md.clone()));
    }
    m.insert(
        "plans".into(),
        Value::Array(s.plans.iter().map(plan).collect()),
    );
    Value::Object(m)
}

fn plan(p: &CatalogPlan) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(p.id));
    m.insert("name".into(), json!(p.name));
    m.insert(
        "description".into(),
        json!(described(&p.description, &p.name)),
    );
    if let Some(md) = &p.metadata {
        m.insert("metadata".into(), Value::Object(md.clone()));
    }
    if let Some(schemas) = &p.schemas {
        if let Ok(v) = serde_json::to_value(schemas) {
            m.insert("schemas".into(), v);
        }
    }
    Value::Object(m)
}
