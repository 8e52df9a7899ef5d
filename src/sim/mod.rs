//! Simulators of the services anvil manages (`anvil sim bosh|vault`): small, faithful
//! servers that follow the documented APIs (see docs/simulators.md), keep real state in
//! memory, run on loopback and inject faults on request, so tests, benchmarks and users'
//! CI need no real Director or Vault.

pub mod bosh;
pub mod cf;
pub mod vault;
