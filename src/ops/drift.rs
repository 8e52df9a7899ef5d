//! The drift commands' steps: `anvil drift` (read-only: refresh, then the pure
//! [`crate::drift::compute`]), `anvil apply --refresh-only` (record the real world in
//! state under the lock, touching nothing else) and `anvil import` (adopt an existing
//! object into state under the lock).

use super::{make_plan, refresh_scoped, OpsError, Workspace};
use crate::drift::{self, DriftReport};
use crate::model::{Address, Lookup, PValue, Reference};
use crate::plan::json::StateBinding;
use crate::plan::{self, Observed, PlanOptions};
use crate::state::{self, fingerprint, RecordedLifecycle, ResourceState, State};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The addresses a plan with `--target`/`--exclude` covers; `None` when it covers all.
fn scope(opts: &PlanOptions, spec_plan: &plan::Plan) -> Option<BTreeSet<String>> {
    (!opts.targets.is_empty() || !opts.excludes.is_empty()).then(|| {
        spec_plan
            .changes
            .iter()
            .map(|c| c.address.clone())
            .collect()
    })
}

fn binding(ws: &Workspace, state: &State) -> StateBinding {
    StateBinding {
        backend: ws.backend.describe(),
        lineage: state.lineage.to_string(),
        serial: state.serial,
    }
}

/// `anvil drift`: reads every recorded resource in scope (at most `parallelism` at
/// once; not at all without `refresh`, which leaves only the spec's side) and reports what changed outside anvil and what differs from the spec. Takes
/// no lock and writes nothing.
///
/// Returns the report and the refreshed records that differ from state.
///
/// # Errors
/// The plan's own errors, or a provider could not be asked.
pub async fn drift(
    ws: &Workspace,
    state: &State,
    opts: &PlanOptions,
    refresh: bool,
    parallelism: usize,
) -> Result<(DriftReport, Observed), OpsError> {
    let spec_plan = make_plan(ws, state, &Observed::new(), opts)?;
    let only = scope(opts, &spec_plan);
    let observed = if refresh {
        refresh_scoped(&ws.registry, state, only.as_ref(), parallelism).await?
    } else {
        Observed::new()
    };
    let entries = drift::compute(&ws.model, state, &observed, &spec_plan);
    Ok((
        DriftReport::new(&ws.name, binding(ws, state), entries),
        observed,
    ))
}

/// What `apply --refresh-only` recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded {
    /// Records replaced by what the real world has (attributes or outputs).
    pub updated: usize,
    /// Records removed because their object was deleted outside anvil.
    pub removed: usize,
}

/// `apply --refresh-only`: writes the refreshed records into the state read under
/// `lock` (one atomic write, serial + 1), and removes the records of objects that are
/// gone. No provider is asked to change anything.
///
/// # Errors
/// The state cannot be written (it is then unchanged).
pub async fn record_observed(
    ws: &Workspace,
    mut state: State,
    lock: &dyn state::Lock,
    observed: &Observed,
) -> Result<(State, Recorded), OpsError> {
    let mut done = Recorded::default();
    let now = chrono::Utc::now();
    for (addr, real) in observed {
        match real {
            Some(real) => {
                let mut rec = real.clone();
                rec.updated_at = now;
                state.resources.insert(addr.clone(), rec);
                done.updated += 1;
            }
            None => {
                if state.resources.remove(addr).is_some() {
                    done.removed += 1;
                }
            }
        }
    }
    if done != Recorded::default() {
        state.serial += 1;
        ws.backend.write(&state, lock).await?;
    }
    Ok((state, done))
}

/// What `anvil import` recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub address: String,
    pub record: ResourceState,
    /// Whether the spec names the imported object, so the record was read in the shape
    /// the spec gives it (an object that matches the spec then plans as a no-op).
    pub shaped_by_spec: bool,
}

/// `anvil import ADDR ID`: adopts an existing object into state, under the lock.
///
/// The provider finds the object by `id` ([`crate::providers::Provider::import`]). When
/// the spec's attributes for `address` name the same object
/// ([`crate::providers::Provider::import_id`]), the object is read once more through
/// [`crate::providers::Provider::read`] with a record built from the spec, which keeps
/// the spec's text where the real object means the same (a manifest formatted
/// differently, a default mount left out); otherwise the provider's record is kept and
/// the next plan shows the difference.
///
/// # Errors
/// The address is malformed, not declared in the spec, or already in state; the lock
/// cannot be taken; the ID is malformed or names no object; the state cannot be written.
pub async fn import_object(
    ws: &Workspace,
    address: &str,
    id: &str,
    lock_timeout: std::time::Duration,
    sink: &super::EventSink,
) -> Result<Imported, OpsError> {
    let addr = Address::parse(address).map_err(|e| OpsError::Usage(e.to_string()))?;
    let Some(resource) = ws.model.get(&addr) else {
        let files: Vec<String> = ws.files.iter().map(|f| f.display().to_string()).collect();
        return Err(OpsError::Usage(format!(
            "{address}: not declared in the spec ({}); add a `{}` resource named `{}` to the spec first, then import it",
            files.join(", "),
            addr.ty,
            addr.name
        )));
    };
    // The instance the spec names (`bosh.east`), so the object is looked for there.
    let provider = ws.registry.get(&resource.provider).ok_or_else(|| {
        OpsError::Usage(format!(
            "{address}: no provider instance `{}` for type `{}` in this build",
            resource.provider, addr.ty
        ))
    })?;
    let lock = ws.backend.lock("import", lock_timeout).await?;
    let mut state = super::load_locked(ws, lock.as_ref(), sink).await?;
    if state.resources.contains_key(address) {
        return Err(OpsError::Usage(format!(
            "{address}: already managed (in state {}); to adopt another object at this address, forget this one first with `anvil state rm {address}`",
            ws.backend.describe()
        )));
    }
    let failed = |e: crate::providers::ProviderError| OpsError::Import {
        address: address.to_string(),
        message: e.message,
    };
    let imported = provider
        .import(address, &addr.ty, id)
        .await
        .map_err(failed)?;
    let mut shaped_by_spec = false;
    let mut record = imported.clone();
    if let Some(candidate) = spec_record(ws, &state, resource, &imported) {
        let same_object = provider.import_id(&addr.ty, &candidate.attributes)
            == provider.import_id(&addr.ty, &imported.attributes);
        if same_object {
            if let Some(real) = provider.read(address, &candidate).await.map_err(failed)? {
                record = real;
                shaped_by_spec = true;
            }
        }
    }
    let now = chrono::Utc::now();
    record.provider = resource.provider.clone();
    record.dependencies = resource
        .dependencies
        .iter()
        .map(|d| d.to_string())
        .collect();
    record.lifecycle = RecordedLifecycle {
        prevent_destroy: resource.lifecycle.prevent_destroy,
        create_before_destroy: resource.lifecycle.create_before_destroy,
        retain_on_delete: resource.lifecycle.retain_on_delete,
    };
    record.created_at = now;
    record.updated_at = now;
    state.resources.insert(address.to_string(), record.clone());
    state.serial += 1;
    ws.backend.write(&state, lock.as_ref()).await?;
    Ok(Imported {
        address: address.to_string(),
        record,
        shaped_by_spec,
    })
}

/// A record holding the spec's attributes for `resource` (sensitive ones as
/// fingerprints) and the imported outputs; `None` when an attribute cannot be known
/// yet (a reference to something not recorded).
fn spec_record(
    ws: &Workspace,
    state: &State,
    resource: &crate::model::Resource,
    imported: &ResourceState,
) -> Option<ResourceState> {
    let lookup = |rf: &Reference| lookup_recorded(state, rf);
    let values = plan::resolve_attributes(resource, &lookup).ok()?;
    let schema = ws.registry.schemas().get(&resource.address.ty);
    let mut attributes = BTreeMap::new();
    let mut sensitive = BTreeMap::new();
    for (k, v) in values {
        let PValue::Known(v) = v else { return None };
        if schema.is_some_and(|s| s.is_sensitive(&k)) {
            sensitive.insert(k, fingerprint(&v));
        } else {
            attributes.insert(k, v);
        }
    }
    Some(ResourceState {
        attributes,
        sensitive,
        ..imported.clone()
    })
}

/// Resolves a reference from what is recorded (outputs first, then attributes).
pub(crate) fn lookup_recorded(state: &State, rf: &Reference) -> Lookup {
    let target = rf.target.to_string();
    let Some(rec) = state.resources.get(&target) else {
        return Lookup::Missing(format!("{target} is not recorded in state"));
    };
    let attr = &rf.attr[0];
    let Some(mut cur) = rec.outputs.get(attr).or_else(|| rec.attributes.get(attr)) else {
        return Lookup::Missing(format!("{target} has no recorded `{attr}`"));
    };
    for p in &rf.attr[1..] {
        let next = match cur {
            Value::Object(m) => m.get(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        let Some(next) = next else {
            return Lookup::Missing(format!("no `{p}` in the value"));
        };
        cur = next;
    }
    Lookup::Known(cur.clone())
}
