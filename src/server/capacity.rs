//! The capacity routes of `anvil serve`, shaped as the Diego Capacity Analyzer's API:
//! `/api/health`, `/api/dashboard`, `/api/cells`, `/api/apps`, `/api/segments`, over one
//! shared `ops::capacity::Service` (its TTL cache and degraded mode). A CF API failure
//! answers 502 with `{"error": "...the CF API URL...", "code": 502}`.

use crate::ops::capacity::{CapacityError, Service};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

/// The routes, to merge into a server's router (whatever that router's state).
pub fn router<S>(service: Arc<Service>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/health", get(health))
        .route("/api/dashboard", get(dashboard))
        .route("/api/cells", get(cells))
        .route("/api/apps", get(apps))
        .route("/api/segments", get(segments))
        .with_state(service)
}

fn failed(e: &CapacityError) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        Json(json!({"error": e.to_string(), "code": 502})),
    )
        .into_response()
}

async fn health(State(s): State<Arc<Service>>) -> Response {
    Json(s.health().await).into_response()
}

async fn dashboard(State(s): State<Arc<Service>>) -> Response {
    match s.dashboard_json().await {
        // The cached body is shared, not copied.
        Ok(body) => (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            axum::body::Bytes::from_owner(body),
        )
            .into_response(),
        Err(e) => failed(&e),
    }
}

async fn cells(State(s): State<Arc<Service>>) -> Response {
    match s.dashboard().await {
        Ok(d) => Json(d.cells).into_response(),
        Err(e) => failed(&e),
    }
}

async fn apps(State(s): State<Arc<Service>>) -> Response {
    match s.dashboard().await {
        Ok(d) => Json(d.apps).into_response(),
        Err(e) => failed(&e),
    }
}

async fn segments(State(s): State<Arc<Service>>) -> Response {
    match s.dashboard().await {
        Ok(d) => Json(d.segments).into_response(),
        Err(e) => failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::capacity::{BoshConfig, CfConfig, Settings};
    use crate::sim::bosh::{self, BoshSim};
    use crate::sim::cf::{self as cfsim, CfSim, Seed};
    use serde_json::Value;

    async fn spawn(router: Router) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
        format!("http://{addr}")
    }

    async fn get(url: &str) -> (u16, Value) {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn routes_answer_and_health_shows_degraded_mode() {
        let cf = CfSim::new(cfsim::SimConfig {
            data: Seed::generate(3, 1),
            seed: Some(1),
            ..cfsim::SimConfig::default()
        })
        .unwrap();
        let cf_url = spawn(cfsim::router(cf.clone())).await;
        cf.set_base_url(&cf_url);
        let director = BoshSim::new(bosh::SimConfig {
            faults: bosh::Faults {
                fail_rate: 1.0,
                ..bosh::Faults::default()
            },
            ..bosh::SimConfig::default()
        })
        .unwrap();
        let bosh_url = spawn(bosh::router(director)).await;
        let service = Arc::new(Service::new(Settings::new(
            CfConfig {
                api_url: cf_url,
                username: "admin".into(),
                password: "admin".into(),
                ca_cert: None,
            },
            Some(BoshConfig {
                url: bosh_url,
                client: "admin".into(),
                secret: "admin".into(),
                ca_cert: None,
            }),
        )));
        let api = spawn(router(service)).await;
        let (s, h) = get(&format!("{api}/api/health")).await;
        assert_eq!(s, 200);
        assert_eq!(h["cf_api"], "unknown");
        let (s, d) = get(&format!("{api}/api/dashboard")).await;
        assert_eq!(s, 200);
        assert_eq!(d["metadata"]["bosh_available"], false);
        assert_eq!(d["apps"].as_array().unwrap().len(), 3);
        let (_, h) = get(&format!("{api}/api/health")).await;
        assert_eq!(h["bosh_api"], "degraded");
        assert_eq!(h["cf_api"], "ok");
        assert_eq!(
            h["cache_status"],
            json!({"cells_cached": false, "apps_cached": true})
        );
        let (_, apps) = get(&format!("{api}/api/apps")).await;
        assert_eq!(apps, d["apps"]);
        let (_, cells) = get(&format!("{api}/api/cells")).await;
        assert_eq!(cells, json!([]));
        let (_, segments) = get(&format!("{api}/api/segments")).await;
        assert_eq!(segments.as_array().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cf_failure_is_a_502_naming_the_api() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let service = Arc::new(Service::new(Settings::new(
            CfConfig {
                api_url: gone.clone(),
                ..CfConfig::default()
            },
            None,
        )));
        let api = spawn(router(service)).await;
        let (s, v) = get(&format!("{api}/api/dashboard")).await;
        assert_eq!(s, 502);
        assert!(v["error"].as_str().unwrap().contains(&gone), "{v}");
        let (_, h) = get(&format!("{api}/api/health")).await;
        assert_eq!(h["cf_api"], "error");
    }
}
