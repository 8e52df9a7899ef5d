//! Service bindings (`/v2/service_instances/:id/service_bindings/:bid` and their
//! `last_operation`): routes added here are merged into the broker's router behind the
//! same auth and version checks.

use super::Shared;
use axum::Router;

/// The binding routes.
pub fn routes() -> Router<Shared> {
    Router::new()
}
