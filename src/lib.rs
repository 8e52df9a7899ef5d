//! anvil: a declarative plan-and-apply engine for Cloud Foundry service foundations
//! and the cloud environments under them.
//!
//! The pipeline is `spec` → `model` → `plan` ← `state`; `apply` drives `providers`;
//! `ops` orders the steps of each command and the `cli` sits on top. See
//! `docs/ARCHITECTURE.md` for the code map and invariants.

pub mod apply;
pub mod broker;
pub mod capacity;
pub mod cli;
pub mod dashboard;
pub mod drift;
pub mod model;
pub mod ops;
pub mod plan;
pub mod providers;
pub mod reconcile;
pub mod server;
pub mod sim;
pub mod spec;
pub mod state;
