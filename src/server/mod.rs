//! `anvil serve`: the environments REST API (`/api/v1/environments`), its job queue and
//! the workers that plan and apply each environment through `ops`, like every other
//! front-end. Several servers share one PostgreSQL database; without one it runs
//! embedded (local state, a file-backed queue).

pub mod queue;
