//! `GET /` of `anvil serve`: the dashboard page (`crate::dashboard`) with the
//! environments and their status, their latest runs (the last job's plan summary) and,
//! when capacity is configured, the Diego cells. Behind the bearer token like the API.

use super::api::{AppState, Shared};
use super::queue::{Environment, ListQuery, Status};
use crate::dashboard::{self, EnvironmentRow, Page, RunRow};
use axum::extract::State;
use axum::response::Html;

/// Environments the page lists (the oldest first, as the queue pages them; the API
/// pages through the rest).
const MAX_ENVIRONMENTS: usize = super::api::MAX_LIMIT;
/// Runs the page lists.
const MAX_RUNS: usize = 20;

/// The page.
pub async fn page(State(app): State<Shared>) -> Html<String> {
    let (environments, capacity) = tokio::join!(
        environments(&app),
        dashboard::capacity_view(app.capacity.as_deref())
    );
    let runs = environments.as_ref().map(|e| runs(e)).unwrap_or_default();
    let page = Page {
        title: "anvil serve".into(),
        generated_at: dashboard::now(),
        plans: None,
        environments: Some(environments.map(|e| e.iter().map(row).collect())),
        runs,
        drift: Err("No drift report is recorded by anvil serve: `anvil drift` reports an environment's workspace, and a refresh (POST /api/v1/environments/{id}/refresh) applies the spec again.".into()),
        capacity,
    };
    Html(dashboard::render(&page))
}

async fn environments(app: &AppState) -> Result<Vec<Environment>, String> {
    let query = ListQuery {
        limit: MAX_ENVIRONMENTS,
        ..ListQuery::default()
    };
    app.queue
        .list(&query)
        .await
        .map(|p| p.items)
        .map_err(|e| e.to_string())
}

fn row(e: &Environment) -> EnvironmentRow {
    EnvironmentRow {
        name: e.name.clone(),
        id: e.id.to_string(),
        status: e.status.as_str().to_string(),
        last_plan: e
            .last_plan
            .map(|p| format!("+{} ~{} -{}", p.add, p.change, p.destroy)),
        error: e.error.clone(),
        updated_at: e
            .updated_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// The environments' latest jobs, newest first: an environment's record is its last
/// run (what it did, where it got, the plan it applied).
fn runs(envs: &[Environment]) -> Vec<RunRow> {
    let mut sorted: Vec<&Environment> = envs.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.updated_at));
    sorted
        .into_iter()
        .take(MAX_RUNS)
        .map(|e| {
            let kind = match e.status {
                Status::DestroyQueued | Status::Destroying | Status::Destroyed => "destroy",
                Status::Failed if e.failed_step == Some(Status::Destroying) => "destroy",
                _ => "provision",
            };
            let summary = match (&e.error, e.last_plan) {
                (Some(err), _) => format!(
                    "failed at {}: {err}",
                    e.failed_step.map_or("?", Status::as_str)
                ),
                (None, Some(p)) => format!(
                    "{} to add, {} to change, {} to destroy",
                    p.add, p.change, p.destroy
                ),
                (None, None) => String::new(),
            };
            RunRow {
                at: e
                    .updated_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                subject: e.name.clone(),
                kind: kind.into(),
                state: e.status.as_str().into(),
                summary,
            }
        })
        .collect()
}
