//! `GET /` of `anvil broker`: the dashboard page (`crate::dashboard`) with the
//! catalog's plans and how many instances the `db` index holds for each against its
//! limit (what `/b/status` computes; read from Vault alone, so it still shows while the
//! Director is down), the broker's recent operations, the reconciler's last run as the
//! drift report, and the Diego cells when capacity is configured. Behind the broker's
//! basic auth, like `/b/…`.

use super::Shared;
use crate::dashboard::{self, DriftView, Instances, Page, PlanRow, RunRow, ServiceRow};
use crate::ops::broker_internal::plans_with_counts;
use axum::extract::State;
use axum::response::Html;
use serde_json::{Map, Value};

/// Operations the page lists, newest first.
const MAX_RUNS: usize = 20;

/// The page.
pub async fn page(State(state): State<Shared>) -> Html<String> {
    let (index, capacity) = tokio::join!(
        state.index.read(),
        dashboard::capacity_view(state.capacity.as_deref())
    );
    let services = &state.foundation.foundation().catalog.services;
    let plans = index.map(|index| rows(&plans_with_counts(services, &index)));
    let page = Page {
        title: format!(
            "anvil broker — {}",
            state.foundation.foundation().metadata.name
        ),
        generated_at: dashboard::now(),
        plans: Some(plans),
        environments: None,
        runs: runs(&state),
        drift: drift(&state),
        capacity,
    };
    Html(dashboard::render(&page))
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn int(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// Plan rows and per-service totals from `plans_with_counts`' records.
fn rows(plans: &[Value]) -> Instances {
    let mut services: Vec<ServiceRow> = Vec::new();
    let mut out = Vec::new();
    for p in plans {
        let count = usize::try_from(int(p, "count")).unwrap_or(0);
        let service = text(p, "service_name");
        match services.iter_mut().find(|s| s.service == service) {
            Some(s) => s.count += count,
            None => services.push(ServiceRow {
                service: service.clone(),
                count,
                limit: int(p, "service_limit"),
            }),
        }
        out.push(PlanRow {
            service,
            plan: text(p, "plan_name"),
            plan_id: text(p, "plan_id"),
            count,
            limit: int(p, "limit"),
        });
    }
    Instances {
        plans: out,
        services,
    }
}

/// The broker's instances' last operations, newest first.
fn runs(state: &Shared) -> Vec<RunRow> {
    let mut runs: Vec<RunRow> = state.store.read(|s| {
        s.instances
            .values()
            .map(|i| RunRow {
                at: i.operation.requested_at.clone(),
                subject: format!("{} ({})", i.id, i.plan_id),
                kind: format!("{:?}", i.operation.kind).to_lowercase(),
                state: i.operation.state.as_str().into(),
                summary: i.operation.description.clone(),
            })
            .collect()
    });
    // RFC 3339 UTC times sort as text.
    runs.sort_by_key(|r| std::cmp::Reverse(r.at.clone()));
    runs.truncate(MAX_RUNS);
    runs
}

/// The reconciler's last run: what the Director holds against the index.
fn drift(state: &Shared) -> Result<DriftView, String> {
    let Some(r) = state.reconciler.as_ref() else {
        return Err("No drift report: the reconciler is off. Start the broker with --reconcile-interval (e.g. 5m) to compare the Director's deployments with the index, or run `anvil drift` against the Foundation.".into());
    };
    let doc = r.document();
    let Some(last) = doc.get("last_run").filter(|v| !v.is_null()) else {
        return Err("No drift report yet: the reconciler has not finished a run.".into());
    };
    let result = last
        .get("result")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(Map::new);
    let lines = result
        .iter()
        .map(|(k, v)| {
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Array(items) if items.is_empty() => "none".into(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            (k.replace('_', " "), shown)
        })
        .collect();
    Ok(DriftView {
        title: "The reconciler's last run (the Director's deployments against the db index)".into(),
        at: last
            .get("finished_at")
            .and_then(Value::as_str)
            .map(str::to_string),
        lines,
    })
}
