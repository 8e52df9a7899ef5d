//! The stable JSON form of a plan (`anvil plan --json`, and saved plan files), described
//! by `schemas/plan.schema.json`. Sensitive values never appear in it: they are listed in
//! `sensitive_attributes` and left out of `before`/`after`.

use super::{Action, Plan, PlanOptions, ReplaceOrder, ResourceChange, Summary};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;
use std::collections::BTreeMap;

/// Marks a document as an anvil plan.
pub const FORMAT: &str = "anvil-plan";
pub const FORMAT_VERSION: u32 = 1;

/// A plan as JSON; written by `plan --json` and `plan --out`, read by `apply PLANFILE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "anvil plan",
    description = "The JSON form of an anvil plan (`anvil plan --json`, `anvil plan --out FILE`)."
)]
pub struct PlanDocument {
    /// Always `anvil-plan`.
    pub format: String,
    pub format_version: u32,
    pub anvil_version: String,
    /// The workspace (`metadata.name`) planned.
    pub workspace: String,
    /// The state this plan was made against; applying it requires the same.
    pub state: StateBinding,
    /// The spec this plan was made from.
    pub spec: SpecBinding,
    pub options: PlanOptions,
    /// Whether providers were asked for the real objects (`--refresh`).
    pub refresh: bool,
    pub resource_changes: Vec<JsonChange>,
    pub summary: Summary,
    /// `sha256:` digest of every planned value (sensitive ones as fingerprints); apply
    /// recomputes the plan and refuses when this differs.
    pub plan_digest: String,
    /// Refreshed records that differ from state (`null`: gone), so that applying the
    /// plan sees the world as the plan did.
    #[serde(default)]
    pub observed: BTreeMap<String, Option<Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateBinding {
    /// Where the state lives, e.g. `file://state/demo.json`.
    pub backend: String,
    pub lineage: String,
    pub serial: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecBinding {
    /// `sha256:` digest of the spec files and the variables given.
    pub digest: String,
    pub files: Vec<String>,
}

/// One resource's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonChange {
    pub address: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub provider: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replace_order: Option<ReplaceOrder>,
    pub reasons: Vec<String>,
    /// Recorded attributes, without sensitive ones; absent when the object is new.
    pub before: Option<Map<String, Value>>,
    /// Planned attributes, without sensitive ones, unknown values as `null`; absent on
    /// delete.
    pub after: Option<Map<String, Value>>,
    /// Dotted paths in `after` (and output names) known only after apply.
    pub after_unknown: Vec<String>,
    pub sensitive_attributes: Vec<String>,
    pub forces_replacement: Vec<String>,
    /// The provider's own diff of an update (the BOSH Director's), when it gave one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub provider_diff: Option<crate::model::ProviderDiff>,
    /// Where the resource comes from when not a spec file: `broker` for the resources
    /// of an instance `anvil broker` created (its store), absent for spec resources.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub origin: Option<String>,
}

impl JsonChange {
    pub fn from_change(c: &ResourceChange) -> JsonChange {
        let strip = |m: Map<String, Value>| -> Map<String, Value> {
            m.into_iter()
                .filter(|(k, _)| !c.sensitive.contains(k))
                .collect()
        };
        let before = c
            .before
            .as_ref()
            .map(|b| strip(b.iter().map(|(k, v)| (k.clone(), v.clone())).collect()));
        let no_op = c.action == Action::NoOp;
        let mut after_unknown = Vec::new();
        let after = c.after.as_ref().map(|a| {
            for (k, v) in a {
                if !c.sensitive.contains(k) {
                    v.unknown_paths(k, &mut after_unknown);
                }
            }
            strip(
                a.iter()
                    .map(|(k, v)| (k.clone(), v.to_value_lossy()))
                    .collect(),
            )
        });
        // A no-op leaves `before` out of the plan: it equals `after`.
        let before = if no_op { after.clone() } else { before };
        if matches!(c.action, Action::Create | Action::Replace) {
            after_unknown.extend(c.outputs.iter().cloned());
        }
        JsonChange {
            address: c.address.clone(),
            ty: c.ty.clone(),
            provider: c.provider.clone(),
            action: c.action,
            replace_order: c.replace_order,
            reasons: c.reasons.clone(),
            before,
            after,
            after_unknown,
            sensitive_attributes: c.sensitive.iter().cloned().collect(),
            forces_replacement: c.forces_replacement.iter().cloned().collect(),
            provider_diff: c.provider_diff.clone(),
            origin: c.origin.clone(),
        }
    }
}

/// `sha256:` digest of everything a plan decides, sensitive values as fingerprints.
pub fn plan_digest(plan: &Plan) -> String {
    let mut h = sha2::Sha256::new();
    for c in &plan.changes {
        let entry = serde_json::json!([
            c.address,
            c.action,
            c.replace_order,
            c.before,
            c.after.as_ref().map(|a| a
                .iter()
                .map(|(k, v)| {
                    let mut u = Vec::new();
                    v.unknown_paths(k, &mut u);
                    (k.clone(), serde_json::json!([v.to_value_lossy(), u]))
                })
                .collect::<BTreeMap<_, _>>()),
        ]);
        h.update(entry.to_string().as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The JSON Schema of [`PlanDocument`], as checked in at `schemas/plan.schema.json`.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(PlanDocument)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    /// `schemas/plan.schema.json` is generated; `UPDATE_SCHEMAS=1 cargo test` rewrites it.
    #[test]
    fn checked_in_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/plan.schema.json");
        let want = serde_json::to_string_pretty(&super::schema()).unwrap() + "\n";
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas")).unwrap();
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "{path} is stale: run `UPDATE_SCHEMAS=1 cargo test` and commit it"
        );
    }
}
