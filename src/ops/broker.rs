//! What `anvil broker` asks of the engine: the Foundation's catalog and request checks,
//! the broker's desired-state store (service instances it created, with their
//! operations) kept by the state backend beside the workspace state, the merge of those
//! instances into every command's Foundation, the batched targeted apply of instances,
//! and Blacksmith's statuses in the `db` index.
//!
//! The store is written with group commit: concurrent requests change the in-memory
//! document and wait for one durable write that includes their change, so a hundred
//! provisions cost a handful of fsyncs, and every change is on disk before the broker
//! answers.

use super::events::EventSink;
use super::{load_locked, load_workspace, make_plan, refresh_scoped, run_apply, Inputs, OpsError};
use crate::model::foundation::{self, BROKER_DONE, INDEX_PATH};
use crate::plan::PlanOptions;
use crate::providers::retry::Policy;
use crate::providers::vault::client as vault;
use crate::providers::vault::index::read_modify_write;
use crate::providers::Registry;
use crate::spec::{self, Document, DocumentBody, LoadOptions, Spec};
use crate::state::{StateBackend, StateError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use crate::spec::{
    FoundationDoc, InstanceSpec, PlanSpec as CatalogPlan, ServiceSpec as CatalogService,
};

/// The store document's format name and version.
pub const STORE_FORMAT: &str = "anvil-broker-store";
/// The store document's version this anvil writes and reads.
pub const STORE_VERSION: u64 = 1;

/// The broker's desired-state store: the instances it created, by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerStore {
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub instances: BTreeMap<String, StoredInstance>,
}

/// One broker-created instance and its last operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredInstance {
    pub id: String,
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, Value>,
    #[serde(default)]
    pub organization_guid: String,
    #[serde(default)]
    pub space_guid: String,
    /// The OSB `context` object of the request, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    pub operation: Operation,
}

impl StoredInstance {
    /// Whether the instance belongs in the desired state (not being or been deprovisioned).
    #[must_use]
    pub fn desired(&self) -> bool {
        self.operation.kind != OpKind::Deprovision
    }

    /// Whether the instance is gone (deprovisioned).
    #[must_use]
    pub fn gone(&self) -> bool {
        self.operation.kind == OpKind::Deprovision && self.operation.state == OpState::Succeeded
    }

    /// The instance as a Foundation instance.
    #[must_use]
    pub fn spec(&self) -> InstanceSpec {
        InstanceSpec {
            id: self.id.clone(),
            service: self.service_id.clone(),
            plan: self.plan_id.clone(),
            parameters: self.parameters.clone(),
            organization_guid: self.organization_guid.clone(),
            space_guid: self.space_guid.clone(),
            from_broker: true,
        }
    }
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Provision,
    Update,
    Deprovision,
}

/// Where an operation is, in the OSB `last_operation` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpState {
    #[serde(rename = "in progress")]
    InProgress,
    #[serde(rename = "succeeded")]
    Succeeded,
    #[serde(rename = "failed")]
    Failed,
}

impl OpState {
    /// The OSB wording.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::InProgress => "in progress",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
        }
    }
}

/// An instance's last operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// The id handed to the platform in the 202.
    pub id: String,
    pub kind: OpKind,
    pub state: OpState,
    /// What the platform sees in `last_operation`: names the deployment and BOSH task.
    #[serde(default)]
    pub description: String,
    /// `X-Broker-API-Originating-Identity` of the request, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originating_identity: Option<String>,
    /// `X-Broker-API-Request-Identity` of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_identity: Option<String>,
    /// The plan before an update that changes it (its deployment goes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_plan_id: Option<String>,
    /// When the request was accepted (RFC 3339).
    pub requested_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The BOSH task that deployed the instance, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<u64>,
}

/// The current time as RFC 3339 seconds.
#[must_use]
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn decode_store(doc: Option<Value>, location: &str) -> Result<BrokerStore, StateError> {
    let Some(doc) = doc else {
        return Ok(BrokerStore::default());
    };
    let store: BrokerStore = serde_json::from_value(doc).map_err(|e| StateError::Corrupt {
        location: location.to_string(),
        detail: format!("the broker store does not parse ({e})"),
    })?;
    if store.format != STORE_FORMAT || store.version != STORE_VERSION {
        return Err(StateError::Corrupt {
            location: location.to_string(),
            detail: format!(
                "the broker store is `{}` version {}, expected `{STORE_FORMAT}` version {STORE_VERSION}",
                store.format, store.version
            ),
        });
    }
    Ok(store)
}

/// Adds the desired broker instances to the Foundation document whose catalog offers
/// their plan (an id the spec files already declare stays theirs). Pure: the model is
/// built from the result as from any spec.
pub fn merge_instances(spec: &mut Spec, store: &BrokerStore) {
    for inst in store.instances.values().filter(|i| i.desired()) {
        let declared = spec.documents.iter().any(|d| {
            matches!(&d.body, DocumentBody::Foundation(f) if f.instances.iter().any(|i| i.id == inst.id))
        });
        if declared {
            continue;
        }
        let home = spec.documents.iter_mut().find_map(|d| match &mut d.body {
            DocumentBody::Foundation(f)
                if f.catalog.services.iter().any(|s| {
                    s.id == inst.service_id && s.plans.iter().any(|p| p.id == inst.plan_id)
                }) =>
            {
                Some(f)
            }
            _ => None,
        });
        match home {
            Some(f) => f.instances.push(inst.spec()),
            None => tracing::warn!(
                instance = %inst.id,
                plan = %inst.plan_id,
                "a broker instance's plan is in no Foundation's catalog; it is left out of the plan"
            ),
        }
    }
}

/// Reads the broker store of `backend` (empty when none was written).
///
/// # Errors
/// The store cannot be read or does not parse.
pub async fn read_store(backend: &dyn StateBackend) -> Result<BrokerStore, StateError> {
    let doc = backend.load_broker_store().await?;
    decode_store(doc, &backend.describe())
}

/// The broker's store, in memory and durable: [`StoreHandle::update`] changes it and
/// returns once a write holding the change is durable.
pub struct StoreHandle {
    backend: Box<dyn StateBackend>,
    doc: Mutex<Tracked>,
    /// Bumped by every change (under `doc`'s lock).
    generation: AtomicU64,
    /// The generation last made durable; holding it is the write turn.
    written: tokio::sync::Mutex<u64>,
}

/// The store in memory and what the next write must carry.
struct Tracked {
    store: BrokerStore,
    /// Instances changed since the last write.
    touched: BTreeSet<String>,
    /// The next write must be the whole document (after a failed write).
    whole: bool,
}

/// A change to the store inside [`StoreHandle::update`]: reads go through `Deref`,
/// writes through its methods, which note the instances they touch so the write records
/// only those (O(changes), not O(instances)).
pub struct StoreChange<'a> {
    store: &'a mut BrokerStore,
    touched: &'a mut BTreeSet<String>,
}

impl std::ops::Deref for StoreChange<'_> {
    type Target = BrokerStore;

    fn deref(&self) -> &BrokerStore {
        self.store
    }
}

impl StoreChange<'_> {
    /// The instance `id`, to change in place.
    pub fn instance_mut(&mut self, id: &str) -> Option<&mut StoredInstance> {
        let found = self.store.instances.get_mut(id);
        if found.is_some() {
            self.touched.insert(id.to_string());
        }
        found
    }

    /// Adds or replaces the instance `id`.
    pub fn insert(&mut self, id: String, instance: StoredInstance) {
        self.touched.insert(id.clone());
        self.store.instances.insert(id, instance);
    }
}

/// What one store write carries.
enum StoreWrite {
    /// The changed instances: `["instances", ID]` → the instance (`None`: removed).
    Changes(Vec<(Vec<String>, Option<Value>)>),
    Whole(Value),
}

impl StoreHandle {
    /// Opens the store of the workspace `inputs` name (its state backend).
    ///
    /// # Errors
    /// The spec does not load, or the store cannot be read.
    pub async fn open(inputs: &Inputs) -> Result<StoreHandle, OpsError> {
        let ws = load_workspace(inputs, Registry::builtin())?;
        let doc = ws.backend.load_broker_store().await?;
        let mut store = decode_store(doc, &ws.backend.describe())?;
        // Written once at start, so the first request's write does not pay for creating
        // the file (and its directory) or for the local backend's compaction of its
        // journal, and a backend that cannot keep a store is reported before the broker
        // listens.
        store.format = STORE_FORMAT.to_string();
        store.version = STORE_VERSION;
        let doc = serde_json::to_value(&store).map_err(|source| StateError::Serialize {
            location: ws.backend.describe(),
            source,
        })?;
        ws.backend.write_broker_store(&doc).await?;
        Ok(StoreHandle {
            backend: ws.backend,
            doc: Mutex::new(Tracked {
                store,
                touched: BTreeSet::new(),
                whole: false,
            }),
            generation: AtomicU64::new(0),
            written: tokio::sync::Mutex::new(0),
        })
    }

    /// Where the store is kept (for messages).
    #[must_use]
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracked> {
        self.doc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of one instance.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<StoredInstance> {
        self.lock().store.instances.get(id).cloned()
    }

    /// Runs `read` on the store as it is in memory.
    pub fn read<R>(&self, read: impl FnOnce(&BrokerStore) -> R) -> R {
        read(&self.lock().store)
    }

    /// Changes the store with `change` (which returns its result and whether it changed
    /// anything) and, when it changed something, waits until a write including the
    /// change is durable. The write records only the instances the change touched where
    /// the backend can append them (the file backend's journal), the whole document
    /// otherwise.
    ///
    /// # Errors
    /// The store could not be written (the change stays in memory and goes out with
    /// the next write).
    pub async fn update<R>(
        &self,
        change: impl FnOnce(&mut StoreChange<'_>) -> (R, bool),
    ) -> Result<R, OpsError> {
        let (result, mine) = {
            let mut doc = self.lock();
            let Tracked { store, touched, .. } = &mut *doc;
            let (r, changed) = change(&mut StoreChange { store, touched });
            if !changed {
                return Ok(r);
            }
            (r, self.generation.fetch_add(1, Ordering::SeqCst) + 1)
        };
        let waited = std::time::Instant::now();
        let mut written = self.written.lock().await;
        if *written >= mine {
            // A writer that came after this change already made it durable.
            tracing::debug!(waited = ?waited.elapsed(), "broker store: change made durable by another write");
            return Ok(result);
        }
        let wait = waited.elapsed();
        let t = std::time::Instant::now();
        let (what, generation) = self.take_write(false).inspect_err(|_| {
            self.lock().whole = true;
        })?;
        let outcome = match what {
            StoreWrite::Changes(changes) => {
                match self.backend.write_broker_changes(&changes).await {
                    Ok(true) => Ok(()),
                    // The backend needs the whole document now (the file backend's
                    // first write or a compaction): the changes just taken are in it.
                    Ok(false) => match self.take_write(true) {
                        Ok((StoreWrite::Whole(doc), _)) => self
                            .backend
                            .write_broker_store(&doc)
                            .await
                            .map_err(Into::into),
                        Ok((StoreWrite::Changes(_), _)) => unreachable!("a whole write was asked"),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e.into()),
                }
            }
            StoreWrite::Whole(doc) => self
                .backend
                .write_broker_store(&doc)
                .await
                .map_err(Into::into),
        };
        if let Err(e) = outcome {
            // What reached the backend is unknown: the next write carries everything.
            self.lock().whole = true;
            return Err(e);
        }
        tracing::debug!(waited = ?wait, write = ?t.elapsed(), changes = generation - *written, "broker store written");
        *written = generation;
        Ok(result)
    }

    /// What the next write carries, taken under the lock with the generation it covers:
    /// the touched instances, or the whole document when `whole` is asked or an earlier
    /// write failed.
    fn take_write(&self, whole: bool) -> Result<(StoreWrite, u64), OpsError> {
        let mut doc = self.lock();
        let serialize = |source| StateError::Serialize {
            location: self.backend.describe(),
            source,
        };
        let touched = std::mem::take(&mut doc.touched);
        let what = if whole || doc.whole {
            doc.store.format = STORE_FORMAT.to_string();
            doc.store.version = STORE_VERSION;
            let v = serde_json::to_value(&doc.store).map_err(serialize)?;
            doc.whole = false;
            StoreWrite::Whole(v)
        } else {
            let mut changes = Vec::with_capacity(touched.len());
            for id in touched {
                let v = match doc.store.instances.get(&id) {
                    Some(i) => Some(serde_json::to_value(i).map_err(serialize)?),
                    None => None,
                };
                changes.push((vec!["instances".to_string(), id], v));
            }
            StoreWrite::Changes(changes)
        };
        Ok((what, self.generation.load(Ordering::SeqCst)))
    }
}

/// The Foundation a broker serves: its document (with templates) and how to reach its
/// Vault index.
pub struct BrokerFoundation {
    doc: Document,
    /// The Foundation in `doc` (a copy, so it can be had without matching).
    f: FoundationDoc,
    /// Vault's typed settings (unset fields from `VAULT_*`).
    vault: vault::Settings,
    mount: String,
    /// Spec-declared instances per plan and per service, for limits.
    spec_plan_counts: BTreeMap<String, usize>,
    spec_service_counts: BTreeMap<String, usize>,
    spec_ids: BTreeSet<String>,
}

/// Why a request does not fit the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestProblem {
    /// Unknown service or plan, bad parameters: 400.
    Invalid(String),
    /// Over a plan's or service's limit: 422 / 400.
    OverLimit(String),
}

impl BrokerFoundation {
    /// Loads the one Foundation document of `inputs` and checks the whole workspace
    /// (spec instances and the broker store's together) builds.
    ///
    /// # Errors
    /// The spec does not load or build, or it holds no Foundation or more than one.
    pub async fn load(inputs: &Inputs) -> Result<BrokerFoundation, OpsError> {
        let mut vars = BTreeMap::new();
        for v in &inputs.vars {
            let (k, val) = spec::parse_var_arg(v).map_err(|e| spec::SpecErrors(vec![e]))?;
            vars.insert(k, val);
        }
        for f in &inputs.var_files {
            vars.extend(spec::load_var_file(f)?);
        }
        let spec = spec::load(
            &inputs.paths,
            &LoadOptions {
                vars,
                env: super::utf8_env(),
            },
        )?;
        let mut found: Vec<Document> = spec
            .documents
            .into_iter()
            .filter(|d| matches!(d.body, DocumentBody::Foundation(_)))
            .collect();
        let doc = match found.len() {
            1 => found.remove(0),
            n => {
                return Err(OpsError::Usage(format!(
                    "--foundation {}: expected exactly one Foundation document, found {n}; point --foundation at the one the broker serves",
                    inputs
                        .paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                )))
            }
        };
        // The whole workspace, with the store's instances, must build: a broker never
        // starts on a spec `anvil apply` would refuse.
        load_workspace(inputs, Registry::builtin())?;
        let DocumentBody::Foundation(f) = &doc.body else {
            return Err(OpsError::Usage("not a Foundation document".into()));
        };
        let f: FoundationDoc = (**f).clone();
        let f = &f;
        let (_, vault_settings) = foundation::provider_settings(f);
        let vault: vault::Settings = serde_json::from_value(Value::Object(vault_settings))
            .map_err(|e| {
                OpsError::Usage(format!(
                    "{}: the `vault` block does not fit ({e}); fix the Foundation",
                    doc.file.display()
                ))
            })?;
        let mount = f
            .vault
            .mount
            .clone()
            .unwrap_or_else(|| foundation::DEFAULT_MOUNT.to_string());
        let mut spec_plan_counts = BTreeMap::new();
        let mut spec_service_counts = BTreeMap::new();
        let mut spec_ids = BTreeSet::new();
        for i in &f.instances {
            let plan_id = f
                .catalog
                .services
                .iter()
                .filter(|s| s.id == i.service)
                .flat_map(|s| s.plans.iter())
                .find(|p| p.id == i.plan || p.name == i.plan)
                .map_or_else(|| i.plan.clone(), |p| p.id.clone());
            *spec_plan_counts.entry(plan_id).or_insert(0) += 1;
            *spec_service_counts.entry(i.service.clone()).or_insert(0) += 1;
            spec_ids.insert(i.id.clone());
        }
        Ok(BrokerFoundation {
            f: f.clone(),
            doc,
            vault,
            mount,
            spec_plan_counts,
            spec_service_counts,
            spec_ids,
        })
    }

    /// The Foundation document.
    #[must_use]
    pub fn foundation(&self) -> &FoundationDoc {
        &self.f
    }

    /// The file the Foundation was read from.
    #[must_use]
    pub fn file(&self) -> &std::path::Path {
        &self.doc.file
    }

    /// The KV v2 mount of the index and instance secrets.
    #[must_use]
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Whether the spec files declare an instance with this id.
    #[must_use]
    pub fn declared_in_spec(&self, id: &str) -> bool {
        self.spec_ids.contains(id)
    }

    /// The service and plan of a request, by id.
    ///
    /// # Errors
    /// [`RequestProblem::Invalid`] naming the unknown id and the known ones.
    pub fn plan(
        &self,
        service_id: &str,
        plan_id: &str,
    ) -> Result<(&CatalogService, &CatalogPlan), RequestProblem> {
        let f = self.foundation();
        let Some(service) = f.catalog.services.iter().find(|s| s.id == service_id) else {
            let known: Vec<&str> = f.catalog.services.iter().map(|s| s.id.as_str()).collect();
            return Err(RequestProblem::Invalid(format!(
                "unknown service_id `{service_id}`: this broker offers {}{}",
                known.join(", "),
                spec::did_you_mean_hint(service_id, known.iter().copied())
            )));
        };
        let Some(plan) = service.plans.iter().find(|p| p.id == plan_id) else {
            let known: Vec<&str> = service.plans.iter().map(|p| p.id.as_str()).collect();
            return Err(RequestProblem::Invalid(format!(
                "unknown plan_id `{plan_id}` for service `{service_id}`: its plans are {}{}",
                known.join(", "),
                spec::did_you_mean_hint(plan_id, known.iter().copied())
            )));
        };
        Ok((service, plan))
    }

    /// Checks a provision or update against the catalog: service and plan, the plan's
    /// parameter schema (`create` or `update`), parameters the plan uses, a manifest
    /// that renders; and, for a new instance or a plan change, the plan's and service's
    /// limits counting spec instances and `store`'s together.
    ///
    /// # Errors
    /// The first kind of problem found, with every message of that kind.
    pub fn check_request(
        &self,
        inst: &InstanceSpec,
        raw_parameters: Option<&Value>,
        updating: bool,
        counts_change: bool,
        store: &BrokerStore,
    ) -> Result<(), RequestProblem> {
        self.check_shape(inst, raw_parameters, updating)?;
        if counts_change {
            self.check_limits(inst, store)?;
        }
        Ok(())
    }

    /// The part of [`BrokerFoundation::check_request`] that needs no store: service and
    /// plan, the parameter schema, the parameters the plan uses and a manifest that
    /// renders. The broker runs it before taking the store's lock, as rendering the
    /// manifest is the costly part of a provision's checks.
    ///
    /// # Errors
    /// The first kind of problem found, with every message of that kind.
    pub fn check_shape(
        &self,
        inst: &InstanceSpec,
        raw_parameters: Option<&Value>,
        updating: bool,
    ) -> Result<(), RequestProblem> {
        let (_, plan) = self.plan(&inst.service, &inst.plan)?;
        if let (Some(schema), Some(params)) = (
            plan.schemas
                .as_ref()
                .and_then(|s| s.service_instance.as_ref())
                .and_then(|s| {
                    if updating {
                        s.update.as_ref()
                    } else {
                        s.create.as_ref()
                    }
                }),
            raw_parameters,
        ) {
            let validator = jsonschema::validator_for(&schema.parameters).map_err(|e| {
                RequestProblem::Invalid(format!(
                    "plan `{}`'s parameter schema in {} is not a valid JSON Schema ({e}); fix the catalog",
                    plan.id,
                    self.doc.file.display()
                ))
            })?;
            let errors: Vec<String> = validator
                .iter_errors(params)
                .map(|e| {
                    let at = e.instance_path.to_string();
                    if at.is_empty() {
                        e.to_string()
                    } else {
                        format!("{at}: {e}")
                    }
                })
                .collect();
            if !errors.is_empty() {
                return Err(RequestProblem::Invalid(format!(
                    "parameters do not match plan `{}`'s schema: {}",
                    plan.id,
                    errors.join("; ")
                )));
            }
        }
        foundation::check_instance(&self.doc, self.foundation(), inst)
            .map_err(|m| RequestProblem::Invalid(m.join("; ")))?;
        Ok(())
    }

    /// The part of [`BrokerFoundation::check_request`] that counts: the plan's and the
    /// service's limits, spec instances and `store`'s together (`inst` itself not
    /// counted).
    ///
    /// # Errors
    /// Over a limit, or an unknown service or plan.
    pub fn check_limits(
        &self,
        inst: &InstanceSpec,
        store: &BrokerStore,
    ) -> Result<(), RequestProblem> {
        let (service, plan) = self.plan(&inst.service, &inst.plan)?;
        let broker_plan = store
            .instances
            .values()
            .filter(|i| i.desired() && i.plan_id == plan.id && i.id != inst.id)
            .count();
        let broker_service = store
            .instances
            .values()
            .filter(|i| i.desired() && i.service_id == service.id && i.id != inst.id)
            .count();
        let in_plan = self.spec_plan_counts.get(&plan.id).copied().unwrap_or(0) + broker_plan;
        let in_service = self
            .spec_service_counts
            .get(&service.id)
            .copied()
            .unwrap_or(0)
            + broker_service;
        let full = |limit: i64, have: usize| {
            limit < 0 || (limit > 0 && i64::try_from(have).unwrap_or(i64::MAX) >= limit)
        };
        if full(plan.limit, in_plan) {
            return Err(RequestProblem::OverLimit(limit_message(
                "plan", &plan.id, plan.limit, in_plan,
            )));
        }
        if full(service.limit, in_service) {
            return Err(RequestProblem::OverLimit(limit_message(
                "service",
                &service.id,
                service.limit,
                in_service,
            )));
        }
        Ok(())
    }

    /// The addresses an instance's resources have under `plan_id`.
    #[must_use]
    pub fn addresses(id: &str, plan_id: &str) -> Vec<String> {
        vec![
            format!(
                "bosh_deployment.{}",
                foundation::deployment_name(plan_id, id)
            ),
            format!("vault_index_entry.{id}"),
            format!("vault_secret.{id}-manifest"),
            format!("vault_secret.{id}-metadata"),
        ]
    }
}

fn limit_message(what: &str, id: &str, limit: i64, have: usize) -> String {
    if limit < 0 {
        format!("{what} `{id}` allows no instances (its limit is {limit}); choose another {what}")
    } else {
        format!(
            "{what} `{id}` is at its limit of {limit} instance(s) ({have} exist, counting the spec's and the broker's); deprovision one or ask the operator to raise the limit"
        )
    }
}

/// One instance of a batch: its id and the addresses to apply (its resources under its
/// plan, and under the plan it leaves).
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub id: String,
    pub addresses: Vec<String>,
}

/// How one instance of a batch ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOutcome {
    /// Applied; the BOSH task that deployed it, when one ran.
    Done { task_id: Option<u64> },
    /// Failed; the message names the address and what went wrong.
    Failed(String),
}

/// Applies the part of the graph of `items` in one run under the state lock (the lock
/// `anvil apply` takes): read the state, refresh the batch's recorded addresses, plan
/// only their addresses, apply. `before_apply` runs once the plan is made, before the
/// walk (the broker writes its statuses there).
///
/// # Errors
/// The spec, the lock (waited for up to `lock_timeout`), the state, a refresh, the
/// plan or the journal; then every instance of the batch failed.
pub async fn apply_batch(
    inputs: &Inputs,
    items: &[BatchItem],
    lock_timeout: Duration,
    parallelism: usize,
    before_apply: impl std::future::Future<Output = ()>,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<BTreeMap<String, ItemOutcome>, OpsError> {
    let ws = load_workspace(inputs, Registry::builtin())?;
    let lock = super::commands::take_lock(&ws, "broker apply", lock_timeout, sink).await?;
    let state = load_locked(&ws, lock.as_ref(), sink).await?;
    // Only addresses the spec or the state knows can be targeted (an instance that never
    // got far has nothing recorded).
    let targets: Vec<String> = items
        .iter()
        .flat_map(|i| i.addresses.iter())
        .filter(|a| {
            state.resources.contains_key(*a)
                || crate::model::Address::parse(a)
                    .ok()
                    .is_some_and(|ad| ws.model.contains(&ad))
        })
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut outcome: BTreeMap<String, ItemOutcome> = BTreeMap::new();
    if targets.is_empty() {
        before_apply.await;
        for i in items {
            outcome.insert(i.id.clone(), ItemOutcome::Done { task_id: None });
        }
        return Ok(outcome);
    }
    let scope: BTreeSet<String> = targets.iter().cloned().collect();
    let observed = refresh_scoped(&ws.registry, &state, Some(&scope), parallelism).await?;
    let options = PlanOptions {
        targets,
        ..PlanOptions::default()
    };
    let plan = make_plan(&ws, &state, &observed, &options)?;
    before_apply.await;
    let abort = CancellationToken::new();
    let (after, report) = if plan.has_changes() {
        run_apply(
            &ws,
            state,
            lock.as_ref(),
            &plan,
            parallelism,
            sink,
            cancel,
            &abort,
        )
        .await?
    } else {
        (state, crate::apply::Report::default())
    };
    for item in items {
        let failed: Vec<String> = report
            .failed
            .iter()
            .filter(|(a, _, _)| item.addresses.contains(a))
            .map(|(a, _, m)| format!("{a}: {m}"))
            .chain(
                report
                    .skipped
                    .iter()
                    .filter(|(a, _, _)| item.addresses.contains(a))
                    .map(|(a, _, m)| format!("{a} skipped: {m}")),
            )
            .chain(
                report
                    .not_started
                    .iter()
                    .filter(|(a, _)| item.addresses.contains(a))
                    .map(|(a, _)| format!("{a} was not started (the broker is stopping)")),
            )
            .collect();
        let result = if failed.is_empty() {
            let task_id = item
                .addresses
                .iter()
                .filter(|a| a.starts_with("bosh_deployment."))
                .filter_map(|a| after.resources.get(a))
                .find_map(|r| r.outputs.get("task_id").and_then(Value::as_u64));
            ItemOutcome::Done { task_id }
        } else {
            ItemOutcome::Failed(failed.join("; "))
        };
        outcome.insert(item.id.clone(), result);
    }
    Ok(outcome)
}

/// Deploys an instance's kept `manifest` again as `deployment` (Blacksmith's redeploy),
/// under the state lock `anvil apply` and the broker's batches take, so it never runs
/// beside another change of the same Foundation. `started` gets the BOSH task id (or
/// `None` when the Director already had this manifest and started nothing) as soon as
/// the Director hands it out; the call returns once the task ended. The deployment's
/// recorded attributes do not change (the same manifest), so the state stays true.
///
/// # Errors
/// The spec, the lock (waited for up to `lock_timeout`), or the Director refusing the
/// manifest or failing the task ([`OpsError::Redeploy`] naming the task).
pub async fn redeploy(
    inputs: &Inputs,
    lock_timeout: Duration,
    clients: &super::broker_bind::Clients,
    deployment: &str,
    manifest: &str,
    started: impl FnOnce(Option<u64>),
    cancel: &CancellationToken,
) -> Result<Option<u64>, OpsError> {
    let ws = load_workspace(inputs, Registry::builtin())?;
    let _lock =
        super::commands::take_lock(&ws, "broker redeploy", lock_timeout, &super::discard()).await?;
    let failed = |e: crate::providers::ProviderError| OpsError::Redeploy {
        deployment: deployment.to_string(),
        message: e.to_string(),
    };
    let task = clients
        .director
        .deploy(deployment, manifest, |_| false, false)
        .await
        .map_err(failed)?;
    started(task);
    if let Some(id) = task {
        clients
            .director
            .follow_task(id, deployment, &|_| {}, cancel)
            .await
            .map_err(failed)?;
    }
    Ok(task)
}

/// One reconciler run (`anvil reconcile` once, with the Foundation's settings from the
/// environment) under the state lock, so it never runs beside an apply or a broker
/// batch of the same workspace.
///
/// # Errors
/// The spec, the lock (waited for up to `lock_timeout`), the reconciler's settings, or
/// the Director or Vault being unreachable.
pub async fn reconcile_locked(
    inputs: &Inputs,
    lock_timeout: Duration,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<super::reconcile::ReconcileOutcome, OpsError> {
    let ws = load_workspace(inputs, Registry::builtin())?;
    let _lock = super::commands::take_lock(&ws, "broker reconcile", lock_timeout, sink).await?;
    let request = super::reconcile::ReconcileRequest {
        foundation: inputs.paths.first().cloned().unwrap_or_default(),
        ..Default::default()
    };
    super::reconcile::reconcile(&request, sink, cancel).await
}

/// One status change of an index entry.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub id: String,
    /// Blacksmith's status word (`request_received`, `validated`, ...); `None` removes
    /// the entry.
    pub status: Option<String>,
    /// Fields an entry that does not exist yet starts with.
    pub seed: Map<String, Value>,
}

/// Writes Blacksmith's statuses to the `db` index: changes queued from anywhere are
/// applied in order, many per check-and-set write.
#[derive(Clone)]
pub struct IndexStatus {
    tx: tokio::sync::mpsc::UnboundedSender<StatusRequest>,
    /// The same Vault client, for reads (the dashboard counts instances with Vault
    /// alone, so it still does while the Director is down).
    client: vault::Client,
    mount: String,
}

/// Queued index statuses are written once none came for this long...
const INDEX_QUIET: Duration = Duration::from_millis(20);
/// ...or this long after the first, whichever is sooner.
const INDEX_MAX: Duration = Duration::from_millis(100);

/// `first` and what follows it closely on `rx`: items are taken until none came for
/// `quiet`, `max` after the first, the channel closed, or an item is `urgent` (it is
/// kept, and the batch ends at once). Batches a burst of requests into one piece of work
/// (the broker worker's deploys, the index writer's read-modify-write).
pub async fn gather<T>(
    first: T,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    quiet: Duration,
    max: Duration,
    urgent: impl Fn(&T) -> bool,
) -> Vec<T> {
    let mut now = urgent(&first);
    let mut items = vec![first];
    let until = tokio::time::Instant::now() + max;
    loop {
        // What is already queued always joins.
        while let Ok(more) = rx.try_recv() {
            now |= urgent(&more);
            items.push(more);
        }
        if now {
            return items;
        }
        let wait = (tokio::time::Instant::now() + quiet).min(until);
        match tokio::time::timeout_at(wait, rx.recv()).await {
            Ok(Some(more)) => {
                now = urgent(&more);
                items.push(more);
            }
            // Quiet for `quiet`, past `max`, or the channel closed.
            Ok(None) | Err(_) => return items,
        }
    }
}

/// Changes to write, and who waits for the write.
type StatusRequest = (
    Vec<StatusChange>,
    Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
);

impl IndexStatus {
    /// Connects to the Foundation's Vault and starts the writer (which ends when every
    /// handle is dropped).
    ///
    /// # Errors
    /// Vault's settings are missing or it cannot be reached.
    pub async fn connect(f: &BrokerFoundation) -> Result<IndexStatus, OpsError> {
        let env = super::utf8_env();
        let config = vault::Config::resolve(&f.vault, |n| env.get(n).cloned()).map_err(|e| {
            OpsError::Usage(format!(
                "{}: Vault: {} (or set `vault.addr` in the Foundation)",
                f.file().display(),
                e.message
            ))
        })?;
        let client = vault::Client::connect(&config)
            .await
            .map_err(|e| OpsError::Usage(e.message))?;
        let mount = f.mount().to_string();
        let reader = (client.clone(), mount.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<StatusRequest>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Queued statuses (a provision's `request_received`) wait for the rest of
                // their burst, so a burst costs one read-modify-write of the index, not
                // one per store write; a caller waiting for its write is not kept.
                let batch = gather(first, &mut rx, INDEX_QUIET, INDEX_MAX, |(_, done)| {
                    done.is_some()
                })
                .await;
                let changes: Vec<StatusChange> =
                    batch.iter().flat_map(|(c, _)| c.iter().cloned()).collect();
                let result = read_modify_write(
                    Policy::CAS,
                    || client.read(&mount, INDEX_PATH),
                    |index, version| {
                        let client = &client;
                        let mount = &mount;
                        async move { client.write(mount, INDEX_PATH, &index, Some(version)).await }
                    },
                    |current| (apply_status_changes(current, &changes), ()),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.message);
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "could not write statuses to the db index");
                }
                for (_, done) in batch {
                    if let Some(done) = done {
                        let _ = done.send(result.clone());
                    }
                }
            }
        });
        Ok(IndexStatus {
            tx,
            client: reader.0,
            mount: reader.1,
        })
    }

    /// The `db` index as Vault has it now (empty when there is none).
    ///
    /// # Errors
    /// Vault refused or could not be reached (the message names the endpoint).
    pub async fn read(&self) -> Result<Map<String, Value>, String> {
        self.client
            .read(&self.mount, INDEX_PATH)
            .await
            .map(|s| s.data.unwrap_or_default())
            .map_err(|e| {
                format!(
                    "reading the index {}/{INDEX_PATH}: {}",
                    self.mount, e.message
                )
            })
    }

    /// Queues `changes` without waiting.
    pub fn queue(&self, changes: Vec<StatusChange>) {
        let _ = self.tx.send((changes, None));
    }

    /// Writes `changes` and waits for the write.
    ///
    /// # Errors
    /// Vault refused or could not be reached (the message names the endpoint).
    pub async fn write(&self, changes: Vec<StatusChange>) -> Result<(), String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send((changes, Some(done)))
            .map_err(|_| "the index writer stopped".to_string())?;
        wait.await
            .unwrap_or_else(|_| Err("the index writer stopped".to_string()))
    }
}

/// The index after `changes`, or `None` when nothing changes.
fn apply_status_changes(
    current: Option<&Map<String, Value>>,
    changes: &[StatusChange],
) -> Option<Map<String, Value>> {
    let mut index = current.cloned().unwrap_or_default();
    let before = index.clone();
    for c in changes {
        match &c.status {
            Some(status) => {
                let entry = index
                    .entry(c.id.clone())
                    .or_insert_with(|| Value::Object(c.seed.clone()));
                if let Value::Object(m) = entry {
                    m.insert("status".into(), Value::String(status.clone()));
                }
            }
            None => {
                index.remove(&c.id);
            }
        }
    }
    (index != before).then_some(index)
}

/// The seed of a new index entry for a broker instance (what Blacksmith writes at
/// request time; the apply later writes the whole entry).
#[must_use]
pub fn index_seed(inst: &StoredInstance) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("service_id".into(), Value::String(inst.service_id.clone()));
    m.insert("plan_id".into(), Value::String(inst.plan_id.clone()));
    m.insert(
        "deployment_name".into(),
        Value::String(foundation::deployment_name(&inst.plan_id, &inst.id)),
    );
    m.insert(
        "organization_guid".into(),
        Value::String(inst.organization_guid.clone()),
    );
    m.insert("space_guid".into(), Value::String(inst.space_guid.clone()));
    m.insert("requested_at".into(), Value::String(now_rfc3339()));
    m
}

pub use crate::model::foundation::deployment_name;

/// The status a finished provision leaves in the index.
pub const PROVISIONED: &str = BROKER_DONE;

#[cfg(test)]
mod tests {
    use super::*;

    /// Queued statuses wait for their burst's tail (quiet, then the limit); a caller
    /// waiting for its write ends the batch at once, taking what is already queued.
    #[tokio::test(start_paused = true)]
    async fn gather_waits_for_a_burst_but_not_for_an_urgent_item() {
        let quiet = Duration::from_millis(20);
        let max = Duration::from_millis(100);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u32, bool)>();
        let urgent = |(_, u): &(u32, bool)| *u;

        // A burst 5 ms apart, then silence: taken whole, `quiet` after its last item.
        let feeder = tokio::spawn({
            let tx = tx.clone();
            async move {
                for i in 1..=3 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    tx.send((i, false)).unwrap();
                }
            }
        });
        let t0 = tokio::time::Instant::now();
        let got = gather((0, false), &mut rx, quiet, max, urgent).await;
        assert_eq!(
            got.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(15) + quiet);
        feeder.await.unwrap();

        // An urgent first item: no wait, but what is queued already comes along.
        tx.send((1, false)).unwrap();
        let t0 = tokio::time::Instant::now();
        let got = gather((0, true), &mut rx, quiet, max, urgent).await;
        assert_eq!(got.len(), 2);
        assert_eq!(t0.elapsed(), Duration::ZERO);

        // An urgent item arriving mid-burst ends the batch when it arrives.
        let feeder = tokio::spawn({
            let tx = tx.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.send((1, true)).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.send((2, false)).unwrap();
            }
        });
        let t0 = tokio::time::Instant::now();
        let got = gather((0, false), &mut rx, quiet, max, urgent).await;
        assert_eq!(got, vec![(0, false), (1, true)]);
        assert_eq!(t0.elapsed(), Duration::from_millis(5));
        feeder.await.unwrap();
        assert_eq!(rx.recv().await, Some((2, false)));

        // A steady stream stops at `max`.
        let stream = tokio::spawn(async move {
            for i in 0..1000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if tx.send((i, false)).is_err() {
                    break;
                }
            }
        });
        let t0 = tokio::time::Instant::now();
        let got = gather((0, false), &mut rx, quiet, max, urgent).await;
        assert_eq!(t0.elapsed(), max);
        assert!(got.len() > 15 && got.len() <= 21, "{}", got.len());
        drop(rx);
        stream.await.unwrap();
    }

    fn inst(id: &str, kind: OpKind, state: OpState) -> StoredInstance {
        StoredInstance {
            id: id.into(),
            service_id: "redis".into(),
            plan_id: "redis-small".into(),
            parameters: BTreeMap::new(),
            organization_guid: String::new(),
            space_guid: String::new(),
            context: None,
            operation: Operation {
                id: "op".into(),
                kind,
                state,
                description: String::new(),
                originating_identity: None,
                request_identity: None,
                previous_plan_id: None,
                requested_at: now_rfc3339(),
                finished_at: None,
                task_id: None,
            },
        }
    }

    #[tokio::test]
    async fn store_writes_carry_only_the_touched_instances_and_reload_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/ws.json");
        let backend = crate::state::LocalBackend::new(&state);
        backend
            .write_broker_store(&serde_json::json!({}))
            .await
            .unwrap();
        let handle = StoreHandle {
            backend: Box::new(crate::state::LocalBackend::new(&state)),
            doc: Mutex::new(Tracked {
                store: BrokerStore::default(),
                touched: BTreeSet::new(),
                whole: false,
            }),
            generation: AtomicU64::new(0),
            written: tokio::sync::Mutex::new(0),
        };
        // This handle's first write is whole (the backend's writer has no document yet).
        for id in ["a", "b", "c"] {
            handle
                .update(|s| {
                    s.insert(id.into(), inst(id, OpKind::Provision, OpState::InProgress));
                    ((), true)
                })
                .await
                .unwrap();
        }
        handle
            .update(|s| {
                let b = s.instance_mut("b").unwrap();
                b.operation.state = OpState::Succeeded;
                ((), true)
            })
            .await
            .unwrap();
        // A change that says it changed nothing writes nothing.
        handle
            .update(|s| ((), s.instances.contains_key("zz")))
            .await
            .unwrap();
        let journal =
            std::fs::read_to_string(dir.path().join("state/ws.json.broker.journal")).unwrap();
        let last: Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
        assert_eq!(last["put"].as_array().unwrap().len(), 1, "{last}");
        assert_eq!(last["put"][0][0], serde_json::json!(["instances", "b"]));
        // Read back from disk by another handle: the whole store as in memory.
        let reread = read_store(&crate::state::LocalBackend::new(&state))
            .await
            .unwrap();
        assert_eq!(reread.instances, handle.read(|s| s.instances.clone()));
        assert_eq!(reread.instances["b"].operation.state, OpState::Succeeded);
        assert_eq!(reread.format, STORE_FORMAT);
    }

    #[test]
    fn status_changes_seed_update_and_remove() {
        let mut seed = Map::new();
        seed.insert("plan_id".into(), Value::String("p".into()));
        let add = |id: &str, s: &str| StatusChange {
            id: id.into(),
            status: Some(s.into()),
            seed: seed.clone(),
        };
        let next =
            apply_status_changes(None, &[add("a", "request_received"), add("a", "validated")])
                .unwrap();
        assert_eq!(next["a"]["status"], "validated");
        assert_eq!(next["a"]["plan_id"], "p");
        // The same status again changes nothing: no write.
        assert!(apply_status_changes(Some(&next), &[add("a", "validated")]).is_none());
        let gone = apply_status_changes(
            Some(&next),
            &[StatusChange {
                id: "a".into(),
                status: None,
                seed: Map::new(),
            }],
        )
        .unwrap();
        assert!(gone.get("a").is_none());
    }

    #[test]
    fn store_round_trips_and_refuses_other_formats() {
        let mut store = BrokerStore {
            format: STORE_FORMAT.into(),
            version: STORE_VERSION,
            ..BrokerStore::default()
        };
        store.instances.insert(
            "a".into(),
            inst("a", OpKind::Provision, OpState::InProgress),
        );
        let v = serde_json::to_value(&store).unwrap();
        assert_eq!(v["instances"]["a"]["operation"]["state"], "in progress");
        assert_eq!(decode_store(Some(v), "x").unwrap(), store);
        let err = decode_store(
            Some(serde_json::json!({"format": "other", "version": 1})),
            "x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("anvil-broker-store"), "{err}");
        assert!(decode_store(None, "x").unwrap().instances.is_empty());
    }

    #[test]
    fn deprovisioned_instances_leave_the_desired_state() {
        assert!(inst("a", OpKind::Provision, OpState::Failed).desired());
        assert!(inst("a", OpKind::Update, OpState::InProgress).desired());
        assert!(!inst("a", OpKind::Deprovision, OpState::InProgress).desired());
        assert!(inst("a", OpKind::Deprovision, OpState::Succeeded).gone());
        assert!(!inst("a", OpKind::Deprovision, OpState::Failed).gone());
    }
}
