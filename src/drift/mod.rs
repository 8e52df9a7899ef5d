//! Drift: what changed outside anvil (the real world against the state) and what differs
//! from the spec (the spec against the state), per address, as plain data.
//!
//! Pure, like `plan`: no IO, no clocks, no tokio. [`compute`] takes the model, the state,
//! the refreshed records ([`Observed`]) and the plan of the spec against the state made
//! *without* refresh, and returns one [`DriftEntry`] per address that drifted. The two
//! axes are kept apart on purpose: a normal `apply` corrects both at once, while
//! `apply --refresh-only` accepts the first into state and leaves the second to apply.
//!
//! Rules:
//! - An address whose refreshed record is gone is `deleted` outside anvil; one whose
//!   attributes (sensitive ones by fingerprint) differ is `modified`. Attributes under
//!   the resource's `lifecycle.ignore_changes` do not count (`all` ignores the resource);
//!   a change of computed outputs alone (e.g. a secret's version) is not drift.
//! - Sensitive values never enter a report: only that they changed.
//! - Multi-line strings (BOSH manifests) carry a unified diff made with `similar`; two
//!   YAML maps are diffed in one canonical YAML style, so formatting never shows.
//!
//! [`DriftReport`] is the stable JSON form (`anvil drift --json`), described by
//! `schemas/drift.schema.json`; [`render`] makes the text and Markdown forms.

pub mod render;
#[cfg(test)]
mod tests;

use crate::model::{Address, Model, PValue};
use crate::plan::json::StateBinding;
use crate::plan::{self, Action, Observed, Plan};
use crate::state::{ResourceState, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Marks a document as an anvil drift report.
pub const FORMAT: &str = "anvil-drift";
pub const FORMAT_VERSION: u32 = 1;

/// The drift of one workspace; printed by `anvil drift --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "anvil drift",
    description = "The JSON form of an anvil drift report (`anvil drift --json`)."
)]
pub struct DriftReport {
    /// Always `anvil-drift`.
    pub format: String,
    pub format_version: u32,
    pub anvil_version: String,
    /// The workspace (`metadata.name`) checked.
    pub workspace: String,
    /// The state compared against.
    pub state: StateBinding,
    /// `true` when nothing drifted (exit code 0; otherwise 2).
    pub clean: bool,
    pub summary: DriftSummary,
    /// Every address that drifted, sorted.
    pub resources: Vec<DriftEntry>,
}

/// Counts of a drift report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftSummary {
    /// Recorded objects that no longer exist.
    pub deleted_outside: usize,
    /// Recorded objects whose attributes were changed outside anvil.
    pub modified_outside: usize,
    /// Declared in the spec, not in state.
    pub to_create: usize,
    /// Spec and state differ in attributes that update in place.
    pub to_update: usize,
    /// Spec and state differ in attributes that force replacement.
    pub to_replace: usize,
    /// In state, no longer in the spec.
    pub to_delete: usize,
    /// In state, no longer in the spec, kept in the real world (`retain_on_delete`).
    pub to_forget: usize,
}

/// How one address drifted; at least one of `outside` and `spec` is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftEntry {
    pub address: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub provider: String,
    /// What changed outside anvil: the real world against the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside: Option<OutsideChange>,
    /// What differs from the spec: the spec against the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<SpecChange>,
}

/// A change made outside anvil.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutsideChange {
    pub kind: OutsideKind,
    /// Attribute differences, `before` from state and `after` from the real world
    /// (empty when deleted).
    pub attributes: Vec<AttrDiff>,
}

/// The kind of a change made outside anvil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OutsideKind {
    /// The recorded object no longer exists.
    Deleted,
    /// The object exists with other attributes than recorded.
    Modified,
}

/// What `apply` would do to bring the state to the spec (ignoring the real world).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecChange {
    /// `create`, `update`, `replace`, `delete` or `forget`.
    pub action: Action,
    pub reasons: Vec<String>,
    /// Attribute differences for updates and replacements, `before` from state and
    /// `after` from the spec.
    pub attributes: Vec<AttrDiff>,
}

/// One attribute that differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttrDiff {
    pub name: String,
    /// Sensitive: the values are left out (only their fingerprints were compared).
    pub sensitive: bool,
    /// The old value; absent when unset or sensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The new value; absent when unset or sensitive, `null` parts when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// Parts of the new value known only after apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_unknown: Vec<String>,
    /// A unified diff of the two values when either is a multi-line string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl DriftReport {
    /// A report of `entries` (as returned by [`compute`]) for a workspace and state.
    pub fn new(workspace: &str, state: StateBinding, entries: Vec<DriftEntry>) -> DriftReport {
        let mut summary = DriftSummary::default();
        for e in &entries {
            match e.outside.as_ref().map(|o| o.kind) {
                Some(OutsideKind::Deleted) => summary.deleted_outside += 1,
                Some(OutsideKind::Modified) => summary.modified_outside += 1,
                None => {}
            }
            match e.spec.as_ref().map(|s| s.action) {
                Some(Action::Create) => summary.to_create += 1,
                Some(Action::Update) => summary.to_update += 1,
                Some(Action::Replace) => summary.to_replace += 1,
                Some(Action::Delete) => summary.to_delete += 1,
                Some(Action::Forget) => summary.to_forget += 1,
                Some(Action::NoOp) | None => {}
            }
        }
        DriftReport {
            format: FORMAT.to_string(),
            format_version: FORMAT_VERSION,
            anvil_version: env!("CARGO_PKG_VERSION").to_string(),
            workspace: workspace.to_string(),
            state,
            clean: entries.is_empty(),
            summary,
            resources: entries,
        }
    }
}

/// Computes the drift of every address.
///
/// `observed` holds the refreshed records that differ from `state` (`None`: gone);
/// `spec_plan` is the plan of the spec against `state` made with no observations, so it
/// holds only what differs between spec and state.
pub fn compute(
    model: &Model,
    state: &State,
    observed: &Observed,
    spec_plan: &Plan,
) -> Vec<DriftEntry> {
    let mut entries: BTreeMap<String, DriftEntry> = BTreeMap::new();
    for (addr, real) in observed {
        let Some(rec) = state.resources.get(addr) else {
            continue;
        };
        let outside = match real {
            None => Some(OutsideChange {
                kind: OutsideKind::Deleted,
                attributes: Vec::new(),
            }),
            Some(real) => {
                let diffs = outside_diffs(model, addr, rec, real);
                (!diffs.is_empty()).then_some(OutsideChange {
                    kind: OutsideKind::Modified,
                    attributes: diffs,
                })
            }
        };
        if let Some(outside) = outside {
            entries.insert(
                addr.clone(),
                DriftEntry {
                    address: addr.clone(),
                    ty: rec.ty.clone(),
                    provider: rec.provider.clone(),
                    outside: Some(outside),
                    spec: None,
                },
            );
        }
    }
    for c in &spec_plan.changes {
        if c.action == Action::NoOp {
            continue;
        }
        let attributes = if matches!(c.action, Action::Update | Action::Replace) {
            let before = c.before.clone().unwrap_or_default();
            let after = c.after.clone().unwrap_or_default();
            diffs(&before, &after, &c.sensitive)
        } else {
            Vec::new()
        };
        let spec = SpecChange {
            action: c.action,
            reasons: c.reasons.clone(),
            attributes,
        };
        entries
            .entry(c.address.clone())
            .or_insert_with(|| DriftEntry {
                address: c.address.clone(),
                ty: c.ty.clone(),
                provider: c.provider.clone(),
                outside: None,
                spec: None,
            })
            .spec = Some(spec);
    }
    entries.into_values().collect()
}

/// The attribute differences between a record and the real object, leaving out what the
/// resource's `ignore_changes` covers (the recorded value is laid over the real one
/// there, exactly as planning does).
fn outside_diffs(
    model: &Model,
    addr: &str,
    rec: &ResourceState,
    real: &ResourceState,
) -> Vec<AttrDiff> {
    let mut after: BTreeMap<String, PValue> = real
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), PValue::Known(v.clone())))
        .collect();
    for (k, fp) in &real.sensitive {
        after.insert(k.clone(), PValue::Known(Value::String(fp.clone())));
    }
    if let Some(r) = Address::parse(addr).ok().and_then(|a| model.get(&a)) {
        plan::apply_ignore_changes(r, Some(rec), &mut after, plan::Recorded::Fingerprints);
    }
    let sensitive: BTreeSet<String> = rec
        .sensitive
        .keys()
        .chain(real.sensitive.keys())
        .cloned()
        .collect();
    diffs(&redacted(rec), &after, &sensitive)
}

/// Recorded attributes with sensitive ones as their fingerprints.
fn redacted(r: &ResourceState) -> BTreeMap<String, Value> {
    let mut m = r.attributes.clone();
    for (k, fp) in &r.sensitive {
        m.insert(k.clone(), Value::String(fp.clone()));
    }
    m
}

/// Every attribute whose value differs between `before` and `after`, sorted by name.
fn diffs(
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, PValue>,
    sensitive: &BTreeSet<String>,
) -> Vec<AttrDiff> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let b = before.get(name).filter(|v| !v.is_null());
        let a = after
            .get(name)
            .filter(|v| !matches!(v, PValue::Known(Value::Null)));
        let same = match (b, a) {
            (None, None) => true,
            (Some(b), Some(PValue::Known(a))) => b == a,
            _ => false,
        };
        if same {
            continue;
        }
        if sensitive.contains(name) {
            out.push(AttrDiff {
                name: name.clone(),
                sensitive: true,
                before: None,
                after: None,
                after_unknown: Vec::new(),
                diff: None,
            });
            continue;
        }
        let mut after_unknown = Vec::new();
        if let Some(a) = a {
            a.unknown_paths(name, &mut after_unknown);
        }
        let after_value = a.map(PValue::to_value_lossy);
        let diff = match (b, &after_value) {
            (Some(Value::String(x)), Some(Value::String(y)))
                if x.contains('\n') || y.contains('\n') =>
            {
                Some(unified_diff(x, y))
            }
            _ => None,
        };
        out.push(AttrDiff {
            name: name.clone(),
            sensitive: false,
            before: b.cloned(),
            after: after_value,
            after_unknown,
            diff,
        });
    }
    out
}

/// A unified diff (3 lines of context) between two texts, without file headers. When
/// both are YAML maps (BOSH manifests, configs) that differ as values, both are first
/// re-emitted in one canonical style, so the diff shows what changed and not how each
/// side happens to be formatted (flow or block style, quoting, indentation).
fn unified_diff(before: &str, after: &str) -> String {
    match (canonical_yaml(before), canonical_yaml(after)) {
        (Some(b), Some(a)) if a != b => text_diff(&b, &a),
        _ => text_diff(before, after),
    }
}

/// A YAML text holding one map, re-emitted by yaml-rust2 (key order kept); `None` for
/// anything else.
fn canonical_yaml(text: &str) -> Option<String> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).ok()?;
    let [doc @ yaml_rust2::Yaml::Hash(_)] = docs.as_slice() else {
        return None;
    };
    let mut out = String::new();
    yaml_rust2::YamlEmitter::new(&mut out).dump(doc).ok()?;
    let mut out = out.strip_prefix("---\n").unwrap_or(&out).to_string();
    out.push('\n');
    Some(out)
}

fn text_diff(before: &str, after: &str) -> String {
    let diff = similar::TextDiff::from_lines(before, after);
    let mut out = String::new();
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        out.push_str(&hunk.to_string());
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The JSON Schema of [`DriftReport`], as checked in at `schemas/drift.schema.json`.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(DriftReport)).unwrap_or(Value::Null)
}
