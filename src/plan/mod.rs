//! Planning: a pure function from (model, state, observed) to the actions that bring the
//! real world to the spec.
//!
//! No IO, no clocks, no tokio. Everything is passed in, so plans are tested with plain
//! data. Sensitive values never enter a [`Plan`]: they are replaced by fingerprints.

pub mod json;
pub mod render;

use crate::model::{Address, Lookup, Model, PValue, Reference, Resource, Schemas};
use crate::state::{fingerprint, ResourceState, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What happens to one resource.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    /// Removed from state only; the real object is kept (`retain_on_delete`).
    Forget,
    NoOp,
}

/// Order of the two halves of a replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceOrder {
    DeleteThenCreate,
    CreateThenDelete,
}

/// The planned change of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceChange {
    pub address: String,
    pub ty: String,
    pub provider: String,
    pub action: Action,
    pub replace_order: Option<ReplaceOrder>,
    pub reasons: Vec<String>,
    /// Recorded attributes (sensitive ones as fingerprints), when the resource exists
    /// and changes (for a no-op they equal `after` and are left out).
    pub before: Option<BTreeMap<String, Value>>,
    /// Recorded outputs, when the resource exists.
    pub before_outputs: BTreeMap<String, Value>,
    /// Planned attributes (sensitive ones as fingerprints), unless deleted.
    pub after: Option<BTreeMap<String, PValue>>,
    /// Output names, for changes (empty for a no-op); on create or replace they are
    /// known only after apply.
    pub outputs: Vec<String>,
    pub sensitive: BTreeSet<String>,
    /// Attributes whose change forces the replacement.
    pub forces_replacement: BTreeSet<String>,
    /// The provider's own diff of an update (added by `ops::preview`, never by `plan`).
    pub provider_diff: Option<crate::model::ProviderDiff>,
    /// Where the declared resource comes from when not a spec file (`broker`: a
    /// broker instance's resource), so a reader tells them apart.
    pub origin: Option<String>,
}

/// A whole plan: one change per resource in scope, sorted by address.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub changes: Vec<ResourceChange>,
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub forget: usize,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1;
                }
                Action::Delete => s.destroy += 1,
                Action::Forget => s.forget += 1,
                Action::NoOp => {}
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }

    pub fn get(&self, address: &str) -> Option<&ResourceChange> {
        self.changes
            .binary_search_by(|c| c.address.as_str().cmp(address))
            .ok()
            .map(|i| &self.changes[i])
    }
}

/// Flags that shape a plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanOptions {
    /// Plan only these addresses and what they depend on.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Leave these addresses and what depends on them out of the plan.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Replace these even if nothing changed.
    #[serde(default)]
    pub replace: Vec<String>,
    /// Plan the destruction of everything in state.
    #[serde(default)]
    pub destroy: bool,
}

/// Why a plan could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("{address}: lifecycle.prevent_destroy is set, but this plan would {what}; change the spec so it is kept, or set `prevent_destroy: false` and apply that first")]
    PreventDestroy { address: String, what: String },
    #[error("{address}: {message}")]
    Resolve { address: String, message: String },
    #[error("{flag} {address}: no such resource in the spec or the state; check the address with `anvil state list`")]
    UnknownAddress { flag: &'static str, address: String },
}

/// Refreshed records: `Some(None)` means the object is gone; a missing key means the
/// address was not refreshed and the state is taken as it is.
pub type Observed = BTreeMap<String, Option<ResourceState>>;

/// Computes the plan.
///
/// # Errors
/// A resource protected by `prevent_destroy` would be destroyed, a reference cannot be
/// resolved, or a `--target`/`--exclude`/`--replace` address names nothing.
pub fn plan(
    model: &Model,
    state: &State,
    observed: &Observed,
    schemas: &Schemas,
    opts: &PlanOptions,
) -> Result<Plan, Vec<PlanError>> {
    let mut errors = Vec::new();
    for (flag, list) in [
        ("--target", &opts.targets),
        ("--exclude", &opts.excludes),
        ("--replace", &opts.replace),
    ] {
        for a in list {
            let known = Address::parse(a).ok().is_some_and(|ad| model.contains(&ad))
                || state.resources.contains_key(a);
            if !known {
                errors.push(PlanError::UnknownAddress {
                    flag,
                    address: a.clone(),
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let scope = Scope::new(model, opts);
    let prior_of = |addr: &str| -> Option<&ResourceState> {
        match observed.get(addr) {
            Some(o) => o.as_ref(),
            None => state.resources.get(addr),
        }
    };
    let pending: HashMap<&str, &crate::state::PendingOp> = state
        .pending
        .iter()
        .map(|p| (p.address.as_str(), p))
        .collect();
    let mut changes: BTreeMap<String, ResourceChange> = BTreeMap::new();

    if !opts.destroy {
        for r in model.topo_order() {
            let addr = r.address.to_string();
            if !scope.includes(&addr) {
                continue;
            }
            let Some(schema) = schemas.get(&r.address.ty) else {
                continue;
            };
            let prior = prior_of(&addr);
            let lookup = |rf: &Reference| lookup_planned(rf, &changes, schemas);
            let after = match desired_attributes(r, prior, schemas, &lookup) {
                Ok(a) => a,
                Err(message) => {
                    errors.push(PlanError::Resolve {
                        address: addr.clone(),
                        message,
                    });
                    continue;
                }
            };
            let mut reasons = Vec::new();
            let mut forces = BTreeSet::new();
            let action = match prior {
                None => {
                    if state.resources.contains_key(&addr) {
                        reasons.push("deleted outside anvil".to_string());
                    } else if let Some(p) = pending.get(addr.as_str()) {
                        reasons.push(format!(
                            "an earlier {} was interrupted; it is created again",
                            op_name(p.operation)
                        ));
                    }
                    Action::Create
                }
                Some(prior) => {
                    let mut changed = Vec::new();
                    let names: BTreeSet<&String> = after
                        .keys()
                        .chain(prior.attributes.keys())
                        .chain(prior.sensitive.keys())
                        .collect();
                    for name in names {
                        if attr_changed(prior, name, after.get(name)) {
                            changed.push(name.clone());
                            if schema.forces_new(name) {
                                forces.insert(name.clone());
                            }
                        }
                    }
                    if opts.replace.contains(&addr) {
                        reasons.push("replacement requested with --replace".to_string());
                        Action::Replace
                    } else if !forces.is_empty() {
                        for f in &forces {
                            let mut unknown = Vec::new();
                            if let Some(v) = after.get(f) {
                                v.unknown_paths(f, &mut unknown);
                            }
                            if unknown.is_empty() {
                                reasons.push(format!("`{f}` changed, which forces replacement"));
                            } else {
                                reasons.push(format!(
                                    "`{f}` forces replacement: {} known only after apply",
                                    unknown.join(", ")
                                ));
                            }
                        }
                        Action::Replace
                    } else if !changed.is_empty() {
                        let list: Vec<String> = changed.iter().map(|c| format!("`{c}`")).collect();
                        reasons.push(format!("{} changed", list.join(", ")));
                        Action::Update
                    } else {
                        Action::NoOp
                    }
                }
            };
            if action == Action::Replace && r.lifecycle.prevent_destroy {
                errors.push(PlanError::PreventDestroy {
                    address: addr.clone(),
                    what: "replace it".into(),
                });
            }
            let replace_order =
                (action == Action::Replace).then_some(if r.lifecycle.create_before_destroy {
                    ReplaceOrder::CreateThenDelete
                } else {
                    ReplaceOrder::DeleteThenCreate
                });
            changes.insert(
                addr.clone(),
                ResourceChange {
                    provider_diff: None,
                    address: addr,
                    ty: r.address.ty.clone(),
                    // The instance the spec names (`bosh.east`), recorded on apply.
                    provider: r.provider.clone(),
                    action,
                    replace_order,
                    reasons,
                    // A no-op's before equals its after: not copied (big plans are
                    // mostly no-ops).
                    before: prior
                        .filter(|_| action != Action::NoOp)
                        .map(redacted_before),
                    before_outputs: prior.map(|p| p.outputs.clone()).unwrap_or_default(),
                    after: Some(after),
                    outputs: if action == Action::NoOp {
                        Vec::new()
                    } else {
                        schema.outputs.keys().cloned().collect()
                    },
                    sensitive: schema
                        .attributes
                        .iter()
                        .filter(|(_, a)| a.sensitive)
                        .map(|(k, _)| k.clone())
                        .collect(),
                    forces_replacement: forces,
                    origin: r.origin.clone(),
                },
            );
        }
    }

    // Everything recorded but no longer declared (or everything, when destroying).
    for (addr, rec) in &state.resources {
        let declared = Address::parse(addr)
            .ok()
            .is_some_and(|a| model.contains(&a));
        if (declared && !opts.destroy) || !scope.includes(addr) {
            continue;
        }
        let gone = matches!(observed.get(addr), Some(None));
        let (action, reason) = if gone {
            (
                Action::Forget,
                "deleted outside anvil; only the state record is removed".to_string(),
            )
        } else if rec.lifecycle.retain_on_delete {
            (
                Action::Forget,
                "lifecycle.retain_on_delete: removed from state, the real object is kept"
                    .to_string(),
            )
        } else if addr.contains('#') {
            (
                Action::Delete,
                "left over from an interrupted create_before_destroy replace".to_string(),
            )
        } else if opts.destroy {
            (Action::Delete, "destroy requested".to_string())
        } else {
            (Action::Delete, "no longer in the spec".to_string())
        };
        if action == Action::Delete && rec.lifecycle.prevent_destroy {
            errors.push(PlanError::PreventDestroy {
                address: addr.clone(),
                what: "destroy it".into(),
            });
        }
        let schema = schemas.get(&rec.ty);
        changes.insert(
            addr.clone(),
            ResourceChange {
                provider_diff: None,
                address: addr.clone(),
                ty: rec.ty.clone(),
                provider: rec.provider.clone(),
                action,
                replace_order: None,
                reasons: vec![reason],
                before: Some(redacted_before(rec)),
                before_outputs: rec.outputs.clone(),
                after: None,
                outputs: schema
                    .map(|s| s.outputs.keys().cloned().collect())
                    .unwrap_or_default(),
                sensitive: rec.sensitive.keys().cloned().collect(),
                forces_replacement: BTreeSet::new(),
                origin: None,
            },
        );
    }
    inherit_create_before_destroy(model, &mut changes);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        changes: changes.into_values().collect(),
    })
}

/// A create-before-destroy replacement needs the new objects of everything it depends
/// on before the old ones go, so replaced dependencies inherit that order (as in
/// Terraform); otherwise the two orders would wait on each other.
fn inherit_create_before_destroy(model: &Model, changes: &mut BTreeMap<String, ResourceChange>) {
    let mut work: Vec<(String, String)> = changes
        .values()
        .filter(|c| c.replace_order == Some(ReplaceOrder::CreateThenDelete))
        .map(|c| (c.address.clone(), c.address.clone()))
        .collect();
    while let Some((addr, origin)) = work.pop() {
        let Some(r) = Address::parse(&addr).ok().and_then(|a| model.get(&a)) else {
            continue;
        };
        for d in &r.dependencies {
            let key = d.to_string();
            if let Some(c) = changes.get_mut(&key) {
                if c.action == Action::Replace
                    && c.replace_order != Some(ReplaceOrder::CreateThenDelete)
                {
                    c.replace_order = Some(ReplaceOrder::CreateThenDelete);
                    c.reasons.push(format!("created before the old one is destroyed, because {origin} has lifecycle.create_before_destroy"));
                    work.push((key, origin.clone()));
                }
            }
        }
    }
}

fn op_name(op: crate::state::Operation) -> &'static str {
    match op {
        crate::state::Operation::Create => "create",
        crate::state::Operation::Update => "update",
        crate::state::Operation::Delete => "delete",
    }
}

/// Recorded attributes with sensitive ones as their fingerprints.
fn redacted_before(r: &ResourceState) -> BTreeMap<String, Value> {
    let mut m = r.attributes.clone();
    for (k, fp) in &r.sensitive {
        m.insert(k.clone(), Value::String(fp.clone()));
    }
    m
}

fn attr_changed(prior: &ResourceState, name: &str, after: Option<&PValue>) -> bool {
    if let Some(fp) = prior.sensitive.get(name) {
        return !matches!(after, Some(PValue::Known(Value::String(a))) if a == fp);
    }
    match (prior.attributes.get(name), after) {
        (None | Some(Value::Null), None) => false,
        (None, Some(PValue::Known(Value::Null))) => false,
        (Some(b), Some(PValue::Known(a))) => b != a,
        (_, Some(_)) => true,
        (Some(_), None) => true,
    }
}

/// The attributes a resource should have: its expressions resolved through `lookup`,
/// attributes under `ignore_changes` taken from `prior`, sensitive values replaced by
/// fingerprints.
///
/// # Errors
/// A reference that cannot be resolved, with the reason.
pub fn desired_attributes(
    r: &Resource,
    prior: Option<&ResourceState>,
    schemas: &Schemas,
    lookup: &dyn Fn(&Reference) -> Lookup,
) -> Result<BTreeMap<String, PValue>, String> {
    let mut out = resolve_attributes(r, lookup)?;
    if let Some(schema) = schemas.get(&r.address.ty) {
        for (k, v) in out.iter_mut() {
            if schema.is_sensitive(k) {
                if let PValue::Known(real) = v {
                    *v = PValue::Known(Value::String(fingerprint(real)));
                }
            }
        }
    }
    // After fingerprinting: an ignored sensitive attribute takes the recorded fingerprint.
    apply_ignore_changes(r, prior, &mut out, Recorded::Fingerprints);
    Ok(out)
}

/// Resolves every attribute expression of `r`.
///
/// # Errors
/// A reference that cannot be resolved, with the reason.
pub fn resolve_attributes(
    r: &Resource,
    lookup: &dyn Fn(&Reference) -> Lookup,
) -> Result<BTreeMap<String, PValue>, String> {
    let mut out = BTreeMap::new();
    for (k, e) in &r.attributes {
        out.insert(
            k.clone(),
            e.resolve(lookup)
                .map_err(|e| format!("attributes.{k}: {e}"))?,
        );
    }
    Ok(out)
}

/// What [`apply_ignore_changes`] does with sensitive attributes, of which state keeps
/// only fingerprints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Planning: the values being compared are fingerprints; take the recorded one.
    Fingerprints,
    /// Applying: real values are sent, and the recorded real value is not known, so the
    /// spec's value is kept.
    RealValues,
}

/// Overlays the recorded values of attributes listed in `lifecycle.ignore_changes`.
pub fn apply_ignore_changes(
    r: &Resource,
    prior: Option<&ResourceState>,
    out: &mut BTreeMap<String, PValue>,
    sensitive: Recorded,
) {
    let Some(prior) = prior else { return };
    for ic in &r.lifecycle.ignore_changes {
        if ic == "all" {
            out.retain(|k, _| sensitive == Recorded::RealValues && prior.sensitive.contains_key(k));
            for (k, v) in &prior.attributes {
                out.insert(k.clone(), PValue::Known(v.clone()));
            }
            if sensitive == Recorded::Fingerprints {
                for (k, fp) in &prior.sensitive {
                    out.insert(k.clone(), PValue::Known(Value::String(fp.clone())));
                }
            }
            return;
        }
        let mut segs = ic.split('.');
        let top = segs.next().unwrap_or(ic);
        let rest: Vec<&str> = segs.collect();
        if let Some(fp) = prior.sensitive.get(top) {
            if sensitive == Recorded::Fingerprints {
                out.insert(top.to_string(), PValue::Known(Value::String(fp.clone())));
            }
            continue;
        }
        let recorded = prior.attributes.get(top);
        if rest.is_empty() {
            match recorded {
                Some(v) => {
                    out.insert(top.to_string(), PValue::Known(v.clone()));
                }
                None => {
                    out.remove(top);
                }
            }
        } else if let (Some(PValue::Known(cur)), Some(rec)) = (out.get_mut(top), recorded) {
            let old = pointer(rec, &rest).cloned();
            set_pointer(cur, &rest, old);
        }
    }
}

fn pointer<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    let mut cur = v;
    for p in path {
        cur = match cur {
            Value::Object(m) => m.get(*p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn set_pointer(v: &mut Value, path: &[&str], new: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        cur = match cur {
            Value::Object(m) => match m.get_mut(*p) {
                Some(x) => x,
                None => return,
            },
            _ => return,
        };
    }
    if let Value::Object(m) = cur {
        match new {
            Some(n) => {
                m.insert(last.to_string(), n);
            }
            None => {
                m.remove(*last);
            }
        }
    }
}

/// Resolves a reference against what is planned so far (targets are planned first).
fn lookup_planned(
    rf: &Reference,
    changes: &BTreeMap<String, ResourceChange>,
    schemas: &Schemas,
) -> Lookup {
    let target = rf.target.to_string();
    let Some(c) = changes.get(&target) else {
        return Lookup::Missing(format!("{target} is not part of this plan (excluded or not targeted); include it with --target"));
    };
    let attr = &rf.attr[0];
    let is_output = schemas
        .get(&c.ty)
        .is_some_and(|s| s.outputs.contains_key(attr));
    let base = if is_output {
        if matches!(c.action, Action::Create | Action::Replace) {
            return Lookup::Unknown;
        }
        match c.before_outputs.get(attr) {
            Some(v) => PValue::Known(v.clone()),
            None => {
                return Lookup::Missing(format!(
                    "{target} has no recorded `{attr}`; replace it with --replace {target}"
                ))
            }
        }
    } else {
        match c.after.as_ref().and_then(|a| a.get(attr)) {
            Some(v) => v.clone(),
            None => PValue::Known(Value::Null),
        }
    };
    navigate(&base, &rf.attr[1..], rf)
}

fn navigate(v: &PValue, path: &[String], rf: &Reference) -> Lookup {
    let mut cur = v.clone();
    for p in path {
        cur = match cur {
            PValue::Unknown => return Lookup::Unknown,
            PValue::Known(val) => match pointer(&val, &[p.as_str()]) {
                Some(x) => PValue::Known(x.clone()),
                None => return Lookup::Missing(format!("${{{rf}}}: no `{p}` in the value")),
            },
            PValue::Object(m) => match m.get(p) {
                Some(x) => x.clone(),
                None => return Lookup::Missing(format!("${{{rf}}}: no `{p}` in the value")),
            },
            PValue::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(x) => x.clone(),
                None => return Lookup::Missing(format!("${{{rf}}}: no `{p}` in the value")),
            },
        };
    }
    match cur {
        PValue::Known(v) => Lookup::Known(v),
        _ => Lookup::Unknown,
    }
}

/// Which addresses a plan covers, from `--target` and `--exclude`.
struct Scope {
    included: Option<BTreeSet<String>>,
    excluded: BTreeSet<String>,
}

impl Scope {
    fn new(model: &Model, opts: &PlanOptions) -> Scope {
        let included = (!opts.targets.is_empty()).then(|| {
            let mut set = BTreeSet::new();
            let mut stack: Vec<String> = opts.targets.clone();
            while let Some(a) = stack.pop() {
                if !set.insert(a.clone()) {
                    continue;
                }
                if let Some(r) = Address::parse(&a).ok().and_then(|ad| model.get(&ad)) {
                    stack.extend(r.dependencies.iter().map(|d| d.to_string()));
                }
            }
            set
        });
        let mut excluded = BTreeSet::new();
        let mut stack: Vec<String> = opts.excludes.clone();
        while let Some(a) = stack.pop() {
            if !excluded.insert(a.clone()) {
                continue;
            }
            if let Ok(ad) = Address::parse(&a) {
                stack.extend(model.dependents(&ad).into_iter().map(|d| d.to_string()));
            }
        }
        Scope { included, excluded }
    }

    fn includes(&self, addr: &str) -> bool {
        let base = addr.split('#').next().unwrap_or(addr);
        !self.excluded.contains(base) && self.included.as_ref().is_none_or(|s| s.contains(base))
    }
}

#[cfg(test)]
mod tests;
