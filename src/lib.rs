//! anvil: a declarative plan-and-apply engine for Cloud Foundry service foundations
//! and the cloud environments under them.
//!
//! The pipeline is `spec` → `model` → `plan` ← `state`; `apply` drives `providers`;
//! the `cli` sits on top. See `docs/ARCHITECTURE.md` for the code map and invariants.
pub mod state;
