//! `anvil output`: the spec's outputs (`Resources` documents' `outputs:`, an
//! Environment's `vpc_id`, `cluster_endpoint`, ...) resolved against what the state
//! records. No lock, no refresh, no provider call: the values are those of the last apply.

use serde::Serialize;
use serde_json::Value;

use super::{drift::lookup_recorded, load_workspace_and_state, EventSink, Inputs, OpsError};
use crate::model::PValue;
use crate::providers::Registry;

/// One output and what the state says of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputValue {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The value, when every resource it names is recorded.
    pub value: Option<Value>,
    /// Why there is no value yet (a resource not applied, an attribute not recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// What `anvil output` found.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub workspace: String,
    /// Where the state is (a path or a redacted URL), for messages.
    pub location: String,
    /// Sorted by name.
    pub outputs: Vec<OutputValue>,
}

/// `anvil output [NAME]`: the outputs of the spec, resolved from the state; with `name`,
/// only that one.
///
/// # Errors
/// A spec problem (located), a state that cannot be read, or `name` not being an
/// output of the spec (the message lists those there are).
pub async fn outputs(
    inputs: &Inputs,
    name: Option<&str>,
    sink: &EventSink,
) -> Result<Outputs, OpsError> {
    let _ = sink;
    let (ws, state) = load_workspace_and_state(inputs, Registry::builtin()).await?;
    let location = ws.backend.describe();
    let declared = &ws.model.outputs;
    if let Some(n) = name {
        if !declared.iter().any(|o| o.name == n) {
            let names: Vec<&str> = declared.iter().map(|o| o.name.as_str()).collect();
            return Err(OpsError::Usage(format!(
                "no output `{n}` in workspace `{}`: {}{}",
                ws.name,
                crate::spec::did_you_mean_hint(n, names.iter().copied()),
                if names.is_empty() {
                    "the spec declares none".to_string()
                } else {
                    format!("expected one of {}", names.join(", "))
                }
            )));
        }
    }
    let outputs = resolve(&ws.model, &state, name);
    Ok(Outputs {
        workspace: ws.name,
        location,
        outputs,
    })
}

/// The model's outputs (only `name` when given) resolved against `state`.
pub(crate) fn resolve(
    model: &crate::model::Model,
    state: &crate::state::State,
    name: Option<&str>,
) -> Vec<OutputValue> {
    model
        .outputs
        .iter()
        .filter(|o| name.is_none_or(|n| n == o.name))
        .map(|o| {
            let lookup = |r: &crate::model::Reference| lookup_recorded(state, r);
            let (value, missing) = match o.value.resolve(&lookup) {
                Ok(PValue::Known(v)) => (Some(v), None),
                Ok(_) => (None, Some("not known yet".to_string())),
                Err(e) => (None, Some(e.to_string())),
            };
            OutputValue {
                name: o.name.clone(),
                description: o.description.clone(),
                value,
                missing,
            }
        })
        .collect()
}
