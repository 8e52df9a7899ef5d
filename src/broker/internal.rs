//! Blacksmith's internal API (`/b/status`, `/b/cleanup`, `/b/{id}/manifest.yml`...):
//! routes added here are merged into the broker's router behind the same basic auth
//! (no `X-Broker-API-Version` needed: it is not OSB).

use super::Shared;
use axum::Router;

/// The `/b/...` routes.
pub fn routes() -> Router<Shared> {
    Router::new()
}
