//! The plan-time capacity check: what planned BOSH deployments need (their manifests'
//! instance groups × the cloud config's `vm_types` and `disk_types`) against what the
//! cells have free. Pure: manifests and the cloud config come in as text.

use super::Cell;
use std::collections::HashMap;
use yaml_rust2::{Yaml, YamlLoader};

/// What one vm_type gives a VM, in MiB (from `cloud_properties.ram` and
/// `cloud_properties.ephemeral_disk`, the vSphere/warden/dummy CPI keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmSize {
    pub ram_mb: Option<u64>,
    pub ephemeral_disk_mb: Option<u64>,
}

/// The cloud config's `vm_types` and `disk_types` by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmTypes {
    vm_types: HashMap<String, VmSize>,
    disk_types: HashMap<String, u64>,
}

fn int(y: &Yaml) -> Option<u64> {
    match y {
        Yaml::Integer(i) => u64::try_from(*i).ok(),
        Yaml::String(s) | Yaml::Real(s) => s.trim().parse::<f64>().ok().map(|f| f as u64),
        _ => None,
    }
}

fn load(text: &str) -> Result<Yaml, String> {
    YamlLoader::load_from_str(text)
        .map_err(|e| e.to_string())
        .map(|d| d.into_iter().next().unwrap_or(Yaml::Null))
}

impl VmTypes {
    /// Reads a cloud config (YAML text).
    ///
    /// # Errors
    /// The text is not YAML (the message says where).
    pub fn from_cloud_config(text: &str) -> Result<VmTypes, String> {
        let doc = load(text)?;
        let mut out = VmTypes::default();
        if let Some(list) = doc["vm_types"].as_vec() {
            for t in list {
                let Some(name) = t["name"].as_str() else {
                    continue;
                };
                let cp = &t["cloud_properties"];
                out.vm_types.insert(
                    name.to_string(),
                    VmSize {
                        ram_mb: int(&cp["ram"]),
                        ephemeral_disk_mb: int(&cp["ephemeral_disk"]),
                    },
                );
            }
        }
        if let Some(list) = doc["disk_types"].as_vec() {
            for t in list {
                if let (Some(name), Some(size)) = (t["name"].as_str(), int(&t["disk_size"])) {
                    out.disk_types.insert(name.to_string(), size);
                }
            }
        }
        Ok(out)
    }

    /// A vm_type by name.
    #[must_use]
    pub fn vm_type(&self, name: &str) -> Option<VmSize> {
        self.vm_types.get(name).copied()
    }

    /// Adds a vm_type (tests, callers that know sizes otherwise).
    #[must_use]
    pub fn with_vm_type(mut self, name: &str, ram_mb: u64, ephemeral_disk_mb: u64) -> VmTypes {
        self.vm_types.insert(
            name.to_string(),
            VmSize {
                ram_mb: Some(ram_mb),
                ephemeral_disk_mb: Some(ephemeral_disk_mb),
            },
        );
        self
    }
}

/// What deployments need, in MiB; `unknown` names the instance groups whose size could
/// not be told (no such vm_type, or one without `ram`), left out of the sums.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requirement {
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub unknown: Vec<String>,
}

impl Requirement {
    /// The sum of two requirements.
    #[must_use]
    pub fn plus(mut self, other: Requirement) -> Requirement {
        self.memory_mb += other.memory_mb;
        self.disk_mb += other.disk_mb;
        self.unknown.extend(other.unknown);
        self
    }

    /// What `self` needs beyond `old` (a deployment that grows needs only the growth;
    /// one that shrinks needs nothing).
    #[must_use]
    pub fn beyond(mut self, old: &Requirement) -> Requirement {
        self.memory_mb = self.memory_mb.saturating_sub(old.memory_mb);
        self.disk_mb = self.disk_mb.saturating_sub(old.disk_mb);
        self
    }
}

/// What one manifest's instance groups need: per group, instances × (the vm_type's
/// `ram`; its `ephemeral_disk` + the group's `persistent_disk` or its
/// `persistent_disk_type`'s `disk_size`). A group's `vm_resources` (`ram`,
/// `ephemeral_disk_size`) is used when it has no `vm_type`.
///
/// # Errors
/// The manifest is not YAML.
pub fn manifest_requirement(manifest: &str, types: &VmTypes) -> Result<Requirement, String> {
    let doc = load(manifest)?;
    let deployment = doc["name"].as_str().unwrap_or("(unnamed)");
    let mut req = Requirement::default();
    let Some(groups) = doc["instance_groups"].as_vec() else {
        return Ok(req);
    };
    for g in groups {
        let name = g["name"].as_str().unwrap_or("?");
        let instances = int(&g["instances"]).unwrap_or(0);
        if instances == 0 {
            continue;
        }
        let size = match g["vm_type"].as_str() {
            Some(t) => types.vm_type(t),
            None => {
                let r = &g["vm_resources"];
                int(&r["ram"]).map(|ram| VmSize {
                    ram_mb: Some(ram),
                    ephemeral_disk_mb: int(&r["ephemeral_disk_size"]),
                })
            }
        };
        let Some(ram) = size.and_then(|s| s.ram_mb) else {
            req.unknown.push(format!("{deployment}/{name}"));
            continue;
        };
        let persistent = int(&g["persistent_disk"])
            .or_else(|| {
                g["persistent_disk_type"]
                    .as_str()
                    .and_then(|t| types.disk_types.get(t).copied())
            })
            .unwrap_or(0);
        let ephemeral = size.and_then(|s| s.ephemeral_disk_mb).unwrap_or(0);
        req.memory_mb += instances * ram;
        req.disk_mb += instances * (ephemeral + persistent);
    }
    Ok(req)
}

/// What the cells have free, in MiB: memory = Σ (total − used); disk = Σ over cells whose
/// disk size is known of (size − used), `None` when no cell's is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Free {
    pub memory_mb: u64,
    pub disk_mb: Option<u64>,
    pub cells: usize,
}

impl Free {
    /// Sums the cells' free memory and disk.
    #[must_use]
    pub fn of(cells: &[Cell]) -> Free {
        let mut disk: Option<u64> = None;
        for c in cells {
            if let (Some(total), Some(used)) = (c.disk_mb, c.disk_used_mb) {
                *disk.get_or_insert(0) += total.saturating_sub(used);
            }
        }
        Free {
            memory_mb: cells
                .iter()
                .map(|c| c.memory_mb.saturating_sub(c.used_mb))
                .sum(),
            disk_mb: disk,
            cells: cells.len(),
        }
    }
}

/// The verdict of the plan-time check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Nothing to say: no cells to compare with, nothing needed, or enough room.
    Fits,
    /// Not enough room: one sentence per resource short, both numbers in each.
    Short(Vec<String>),
}

/// MiB as GiB for people: whole numbers without decimals, else one decimal.
#[must_use]
pub fn gib(mb: u64) -> String {
    if mb.is_multiple_of(1024) {
        format!("{} GiB", mb / 1024)
    } else {
        format!("{:.1} GiB", mb as f64 / 1024.0)
    }
}

impl Check {
    /// Compares what the plan needs with what the cells have free. With no cells at all
    /// there is nothing to compare with (a Director without Diego cells), so it fits.
    #[must_use]
    pub fn of(need: &Requirement, free: &Free) -> Check {
        if free.cells == 0 {
            return Check::Fits;
        }
        let mut short = Vec::new();
        if need.memory_mb > free.memory_mb {
            short.push(format!(
                "this plan needs {} of memory; cells have {} free",
                gib(need.memory_mb),
                gib(free.memory_mb)
            ));
        }
        if let Some(disk) = free.disk_mb {
            if need.disk_mb > disk {
                short.push(format!(
                    "this plan needs {} of disk; cells have {} free",
                    gib(need.disk_mb),
                    gib(disk)
                ));
            }
        }
        if short.is_empty() {
            Check::Fits
        } else {
            Check::Short(short)
        }
    }
}
