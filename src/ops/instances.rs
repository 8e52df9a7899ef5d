//! `anvil instances`: the service instances of a workspace, those its spec files declare
//! and those the broker created, with where each comes from.
//!
//! The spec is loaded and checked as `validate` does (bad input is reported, located,
//! before anything else is read); nothing is written.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::{Inputs, OpsError};
use crate::model::{self, foundation};
use crate::providers::Registry;
use crate::spec::{self, DocumentBody, LoadOptions, SpecErrors};
use crate::state;

/// Where an instance is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// In a Foundation's `instances:` (GitOps).
    Spec,
    /// Created through the broker's OSB API.
    Broker,
}

impl Origin {
    /// `spec` or `broker`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Spec => "spec",
            Origin::Broker => "broker",
        }
    }
}

/// One service instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceRow {
    pub id: String,
    pub service_id: String,
    pub plan_id: String,
    /// `{plan_id}-{id}`.
    pub deployment: String,
    pub origin: Origin,
    /// The Foundation's workspace name.
    pub foundation: String,
    /// A broker instance's last operation and where it is (`provision succeeded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Where a spec instance is declared (`file:line:column`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_at: Option<String>,
}

/// `anvil instances`: every instance the spec declares and every broker instance in
/// the workspace's store (deprovisioned ones left out), sorted by origin then id. Takes
/// no lock: the store is read as last written.
///
/// # Errors
/// Every problem in the spec, located; a state backend that cannot be read.
pub async fn instances(inputs: &Inputs) -> Result<Vec<InstanceRow>, OpsError> {
    let mut vars = BTreeMap::new();
    let mut errors = Vec::new();
    for f in &inputs.var_files {
        match spec::load_var_file(f) {
            Ok(v) => vars.extend(v),
            Err(e) => errors.extend(e.0),
        }
    }
    for v in &inputs.vars {
        match spec::parse_var_arg(v) {
            Ok((k, val)) => {
                vars.insert(k, val);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(SpecErrors(errors).into());
    }
    let paths = if inputs.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        inputs.paths.clone()
    };
    let loaded = spec::load(
        &paths,
        &LoadOptions {
            vars,
            env: super::utf8_env(),
        },
    )?;
    // The same checks as `validate` (unknown plans, limits, UUIDs...), so the list only
    // shows instances a plan would accept.
    model::build(&loaded, Registry::builtin().schemas())?;
    let workspace = loaded.workspace().unwrap_or("default").to_string();
    let backend = state::open(inputs.state_url.as_deref(), &workspace)?;
    let store = super::broker::read_store(backend.as_ref()).await?;
    let mut rows = Vec::new();
    for inst in store.instances.values().filter(|i| !i.gone()) {
        rows.push(InstanceRow {
            id: inst.id.clone(),
            service_id: inst.service_id.clone(),
            plan_id: inst.plan_id.clone(),
            deployment: foundation::deployment_name(&inst.plan_id, &inst.id),
            origin: Origin::Broker,
            foundation: workspace.clone(),
            status: Some(format!(
                "{} {}",
                format!("{:?}", inst.operation.kind).to_lowercase(),
                inst.operation.state.as_str()
            )),
            declared_at: None,
        });
    }
    for doc in &loaded.documents {
        let DocumentBody::Foundation(f) = &doc.body else {
            continue;
        };
        for (i, inst) in f.instances.iter().enumerate() {
            let plan_id = f
                .catalog
                .services
                .iter()
                .find(|s| s.id == inst.service)
                .and_then(|s| {
                    s.plans
                        .iter()
                        .find(|p| p.id == inst.plan)
                        .or_else(|| s.plans.iter().find(|p| p.name == inst.plan))
                })
                .map_or_else(|| inst.plan.clone(), |p| p.id.clone());
            let at = spec::FieldPath::root().key("instances").index(i);
            rows.push(InstanceRow {
                id: inst.id.clone(),
                service_id: inst.service.clone(),
                deployment: foundation::deployment_name(&plan_id, &inst.id),
                plan_id,
                origin: Origin::Spec,
                foundation: f.metadata.name.clone(),
                status: None,
                declared_at: Some(doc.locate(&at).to_string()),
            });
        }
    }
    rows.sort_by(|a, b| (a.origin, &a.id).cmp(&(b.origin, &b.id)));
    Ok(rows)
}
