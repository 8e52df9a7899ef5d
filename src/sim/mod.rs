//! Simulators of the services anvil manages (`anvil sim ...`): small, faithful servers
//! that follow the documented APIs (see docs/simulators.md), keep real state in memory
//! and run on loopback, so tests, benchmarks and users' CI need no real Vault or BOSH.

pub mod vault;
