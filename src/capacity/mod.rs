//! Capacity of a Cloud Foundry foundation, computed from plain data: Diego cells from the
//! Director's VM vitals, apps from the Cloud Controller's processes and their stats,
//! isolation segments, and the plan-time check of what planned BOSH deployments need
//! (manifests' instance groups × the cloud config's `vm_types`/`disk_types`) against what
//! the cells have free. No IO, no clock: the service in `ops::capacity` fetches, this
//! module computes. The response shapes follow the Diego Capacity Analyzer's API
//! (docs/capacity.md).
//!
//! The trap: the BOSH agent's `vitals.mem.kb` is memory *used*, not the VM's total, and
//! `vitals.mem.percent` is that use in percent of the total. So total = kb × 100 / percent.

mod plan_check;

pub use plan_check::{manifest_requirement, Check, Free, Requirement, VmTypes};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The segment of cells and apps that are in no isolation segment.
pub const SHARED: &str = "shared";

/// One Diego cell, as `/api/cells` gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// `job/index`, e.g. `diego_cell/0`.
    pub name: String,
    pub deployment: String,
    pub isolation_segment: String,
    /// Total memory (from the vitals: `mem.kb` × 100 / `mem.percent`).
    pub memory_mb: u64,
    /// Memory the apps placed on the segment's cells asked for, spread evenly over them.
    pub allocated_mb: u64,
    /// Memory in use on the VM (`mem.kb`).
    pub used_mb: u64,
    /// `cpu.user` + `cpu.sys`.
    pub cpu_percent: f64,
    /// Ephemeral disk size from the cloud config's vm_type, when it says.
    pub disk_mb: Option<u64>,
    /// Ephemeral disk used (`disk.ephemeral.percent` of `disk_mb`).
    pub disk_used_mb: Option<u64>,
}

/// One app, as `/api/apps` gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppReport {
    pub guid: String,
    pub name: String,
    pub state: String,
    /// Instances of all its processes.
    pub instances: u64,
    /// Σ instances × `memory_in_mb` over its processes.
    pub requested_mb: u64,
    /// Σ `usage.mem` of its running instances.
    pub actual_mb: u64,
    pub isolation_segment: String,
}

/// One isolation segment, as `/api/segments` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub guid: String,
    pub name: String,
}

/// `metadata` of `/api/dashboard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// When the data was fetched (RFC 3339).
    pub timestamp: String,
    /// Whether this answer came from the cache.
    pub cached: bool,
    /// Whether the Director answered (false: degraded mode, apps only).
    pub bosh_available: bool,
}

/// `/api/dashboard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    pub cells: Vec<Cell>,
    pub apps: Vec<AppReport>,
    pub segments: Vec<Segment>,
    pub metadata: Metadata,
}

/// A process of an app and the memory its instances use, as the Cloud Controller says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessData {
    pub guid: String,
    pub instances: u64,
    pub memory_in_mb: u64,
    /// `usage.mem` in bytes of each instance the stats list as running.
    pub used_bytes: Vec<u64>,
}

/// An app as the Cloud Controller says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AppData {
    pub guid: String,
    pub name: String,
    pub state: String,
    pub space_guid: String,
    pub processes: Vec<ProcessData>,
}

/// What the Cloud Controller said.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CfData {
    pub apps: Vec<AppData>,
    /// All segments (`shared` included, as the Cloud Controller lists it).
    pub segments: Vec<Segment>,
    /// Space guid → isolation segment guid, for spaces that have one.
    pub space_segments: HashMap<String, String>,
}

/// One VM of a deployment as `vms?format=full` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectorVm {
    pub deployment: String,
    pub vm: Value,
}

/// Whether a BOSH job (instance group) runs Diego cells: its name is or contains
/// `diego_cell` (`diego_cell`, `isolated_diego_cell`, `diego_cell_large`), or is
/// `compute` (Small Footprint TAS).
#[must_use]
pub fn is_cell_job(name: &str) -> bool {
    name.contains("diego_cell") || name == "compute"
}

/// A vitals number: the agent sends strings ("12.5"), tolerate numbers.
fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Total and used memory in KiB from `vitals.mem`: `kb` is used, `percent` is used in
/// percent of the total. `None` when either is missing or the percentage is 0 (then the
/// total cannot be derived).
#[must_use]
pub fn memory_kb(vitals: &Value) -> Option<(u64, u64)> {
    let used = num(vitals.pointer("/mem/kb"))?;
    let percent = num(vitals.pointer("/mem/percent"))?;
    if percent <= 0.0 || used < 0.0 || percent > 100.0 {
        return None;
    }
    let total = used * 100.0 / percent;
    Some((total.round() as u64, used.round() as u64))
}

/// The segment a cell serves: the longest segment name (other than `shared`) that its
/// deployment or job name contains (`p-isolation-segment-prod`, `isolated_diego_cell_prod`),
/// else `shared`.
fn cell_segment(deployment: &str, job: &str, segments: &[Segment]) -> String {
    segments
        .iter()
        .filter(|s| s.name != SHARED && !s.name.is_empty())
        .filter(|s| deployment.contains(&s.name) || job.contains(&s.name))
        .max_by_key(|s| s.name.len())
        .map_or_else(|| SHARED.to_string(), |s| s.name.clone())
}

/// The cells among the Director's VMs (only `diego_cell`/`compute` jobs), with their
/// memory, CPU and disk from the vitals; a VM without usable memory vitals is listed
/// with 0 MiB. `allocated_mb` is filled in by [`dashboard`].
#[must_use]
pub fn cells(vms: &[DirectorVm], vm_types: &VmTypes, segments: &[Segment]) -> Vec<Cell> {
    let mut out = Vec::new();
    for d in vms {
        let vm = &d.vm;
        let job = vm.get("job_name").and_then(Value::as_str).unwrap_or("");
        if !is_cell_job(job) {
            continue;
        }
        let index = match vm.get("index") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => vm
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
        };
        let vitals = vm.get("vitals").unwrap_or(&Value::Null);
        let (total_kb, used_kb) = memory_kb(vitals).unwrap_or((0, 0));
        let cpu = num(vitals.pointer("/cpu/user")).unwrap_or(0.0)
            + num(vitals.pointer("/cpu/sys")).unwrap_or(0.0);
        let disk_mb = vm
            .get("vm_type")
            .and_then(Value::as_str)
            .and_then(|t| vm_types.vm_type(t))
            .and_then(|t| t.ephemeral_disk_mb);
        let disk_pct = num(vitals.pointer("/disk/ephemeral/percent"));
        let disk_used_mb = match (disk_mb, disk_pct) {
            (Some(total), Some(p)) if (0.0..=100.0).contains(&p) => {
                Some((total as f64 * p / 100.0).round() as u64)
            }
            _ => None,
        };
        out.push(Cell {
            name: format!("{job}/{index}"),
            deployment: d.deployment.clone(),
            isolation_segment: cell_segment(&d.deployment, job, segments),
            memory_mb: total_kb / 1024,
            allocated_mb: 0,
            used_mb: used_kb / 1024,
            cpu_percent: (cpu * 10.0).round() / 10.0,
            disk_mb,
            disk_used_mb: disk_used_mb.map(|u| u.min(disk_mb.unwrap_or(u))),
        });
    }
    out
}

/// The apps with their processes' memory and their isolation segment (by their space).
#[must_use]
pub fn apps(cf: &CfData) -> Vec<AppReport> {
    let names: HashMap<&str, &str> = cf
        .segments
        .iter()
        .map(|s| (s.guid.as_str(), s.name.as_str()))
        .collect();
    cf.apps
        .iter()
        .map(|a| {
            let segment = cf
                .space_segments
                .get(&a.space_guid)
                .and_then(|g| names.get(g.as_str()))
                .map_or(SHARED, |n| n);
            AppReport {
                guid: a.guid.clone(),
                name: a.name.clone(),
                state: a.state.clone(),
                instances: a.processes.iter().map(|p| p.instances).sum(),
                requested_mb: a
                    .processes
                    .iter()
                    .map(|p| p.instances.saturating_mul(p.memory_in_mb))
                    .sum(),
                actual_mb: a
                    .processes
                    .iter()
                    .flat_map(|p| p.used_bytes.iter())
                    .sum::<u64>()
                    / (1 << 20),
                isolation_segment: segment.to_string(),
            }
        })
        .collect()
}

/// The dashboard from what both APIs said; `vms` is `None` in degraded mode (the
/// Director did not answer): apps and segments only. Each cell's `allocated_mb` is the
/// memory started apps of its segment requested, spread evenly over the segment's cells
/// (the Cloud Controller does not say which cell runs which instance).
#[must_use]
pub fn dashboard(
    cf: &CfData,
    vms: Option<(&[DirectorVm], &VmTypes)>,
    timestamp: String,
) -> Dashboard {
    let apps = apps(cf);
    let segments: Vec<Segment> = cf.segments.clone();
    let mut cells = match vms {
        Some((vms, types)) => cells(vms, types, &segments),
        None => Vec::new(),
    };
    let mut requested: BTreeMap<&str, u64> = BTreeMap::new();
    for a in apps.iter().filter(|a| a.state == "STARTED") {
        *requested.entry(a.isolation_segment.as_str()).or_default() += a.requested_mb;
    }
    let mut per_segment: BTreeMap<String, u64> = BTreeMap::new();
    for c in &cells {
        *per_segment.entry(c.isolation_segment.clone()).or_default() += 1;
    }
    for c in &mut cells {
        let n = per_segment.get(&c.isolation_segment).copied().unwrap_or(1);
        let total = requested
            .get(c.isolation_segment.as_str())
            .copied()
            .unwrap_or(0);
        c.allocated_mb = total / n.max(1);
    }
    Dashboard {
        cells,
        apps,
        segments,
        metadata: Metadata {
            timestamp,
            cached: false,
            bosh_available: vms.is_some(),
        },
    }
}

#[cfg(test)]
mod tests;
