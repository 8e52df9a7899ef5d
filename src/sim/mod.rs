//! Simulators of the APIs anvil drives, for tests, benchmarks, the quickstart and
//! users' CI: they follow the documented APIs, keep real state in memory and inject
//! faults on request. See `docs/simulators.md`.

pub mod bosh;
