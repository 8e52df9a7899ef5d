//! Providers: the one trait through which the engine reaches the real world, and the
//! registry of built-in providers.
//!
//! A provider declares schemas for its resource types (plain data), reads what exists,
//! and creates, updates and deletes. The engine never knows more than this trait.
//! Built-in providers are made of one small [`resource::ResourceType`] per type through
//! the [`resource::Typed`] adapter. A registry holds several configured instances of one
//! provider (Terraform's aliases): `bosh` is the default instance, `bosh.east` the one a
//! `providers:` entry with `alias: east` (or a Foundation with `alias: east`) configures.

pub mod aws;
pub mod bosh;
pub mod cf;
pub mod error;
pub mod null;
pub mod resource;
pub mod retry;
pub mod vault;

pub use error::{ErrorKind, ProviderError};
pub use tokio_util::sync::CancellationToken;

use crate::model::{ProviderInstance, ResourceSchema, Schemas};
use crate::state::ResourceState;
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Characters left as they are in a URL path segment or query value: RFC 3986's
/// unreserved set. Everything else (`/`, `?`, `#`, `%`, spaces, ...) is percent-encoded,
/// so a name can never reach another endpoint.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded as one URL path segment or query value.
#[must_use]
pub fn url_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Why a provider instance recorded in state or a plan cannot be found in a registry:
/// an aliased instance (`bosh.east`) is no longer configured by the spec; a plain name is
/// a provider this build lacks.
#[must_use]
pub fn missing_instance(name: &str) -> String {
    match name.split_once('.') {
        Some((provider, alias)) => format!(
            "provider instance `{name}` is not configured: keep the `providers: {{ {provider}: \
             [{{alias: {alias}, ...}}] }}` entry (or the Foundation with `alias: {alias}`) \
             in the spec until the resources it manages are destroyed"
        ),
        None => format!("provider `{name}` is not available in this build"),
    }
}

/// The most records one [`Provider::read_many`] call is given (EC2 filters take up to
/// 200 values; smaller batches also let several run at once).
pub const READ_BATCH: usize = 100;

/// A provider setting from the environment: unset and blank are the same.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Attribute values as resolved for a call, real values (sensitive ones included).
pub type Attributes = BTreeMap<String, Value>;

/// What the provider reports after a create or update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The attributes as applied (normally the requested ones).
    pub attributes: Attributes,
    /// Computed values (e.g. `id`).
    pub outputs: BTreeMap<String, Value>,
}

/// A progress message a provider reports while it works (e.g. a BOSH task event).
pub type ProgressFn = Arc<dyn Fn(&str) + Send + Sync>;

/// A create or update request.
pub struct ChangeRequest<'a> {
    pub address: &'a str,
    pub ty: &'a str,
    pub attributes: &'a Attributes,
    /// The recorded object, for updates; for the create of a create-before-destroy
    /// replace, the recorded object it replaces (still there until its delete runs).
    pub prior: Option<&'a ResourceState>,
    /// The state's lineage: providers that tag what they create (`aws`) record it, so
    /// an object created but not journalled (the run killed in between) is found again
    /// by the next run of the same state and adopted instead of created twice.
    pub lineage: &'a str,
    pub progress: ProgressFn,
    /// Cancelled when the run must stop now: long operations (a BOSH task being
    /// followed) stop waiting and fail with [`ErrorKind::Cancelled`].
    pub cancel: CancellationToken,
    /// An earlier run started this change and was interrupted before its result was
    /// recorded: look for that attempt's effect (a task still running, the object
    /// already as asked) before acting again, so nothing is done twice.
    pub resumed: bool,
}

/// The seam between the engine and the real world.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name, recorded in state (`null`, `bosh`, ...).
    fn name(&self) -> &'static str;
    /// Schemas of the resource types this provider owns.
    fn schemas(&self) -> Vec<ResourceSchema>;
    /// A new instance of this provider configured by a `providers:` block entry (or a
    /// Foundation's `director`/`vault` block), settings it lacks read from the
    /// environment on first use.
    ///
    /// # Errors
    /// The provider takes no settings, or they do not fit its typed configuration (the
    /// message names the key).
    fn configure(&self, settings: &Map<String, Value>) -> Result<Arc<dyn Provider>, ProviderError> {
        let _ = settings;
        Err(ProviderError::invalid(format!(
            "the {} provider takes no settings",
            self.name()
        )))
    }
    /// How many operations of this provider may run at once.
    fn concurrency_limit(&self) -> usize;
    /// Whether `read` asks anything outside anvil. A provider with no real world (`null`)
    /// says no, and refresh skips its resources: `read` would return the record.
    fn reads_real_world(&self) -> bool {
        true
    }
    /// Reads the real object behind a recorded resource. `Ok(None)` means it no longer
    /// exists. The returned record keeps sensitive values as fingerprints.
    ///
    /// # Errors
    /// The real world could not be asked.
    async fn read(
        &self,
        address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError>;
    /// Whether [`Provider::read_many`] reads resources of type `ty` many per request (EC2's
    /// `Describe*` calls with an id filter). Refresh then reads that type's records in
    /// batches of at most [`READ_BATCH`] instead of one request each. Default: no.
    fn batches_reads(&self, ty: &str) -> bool {
        let _ = ty;
        false
    }
    /// What this instance's reads see, when instances can share batches: two instances
    /// with the same scope read the same objects the same way (same endpoint, account,
    /// region, credentials), so refresh may read records of both in one
    /// [`Provider::read_many`] of either. Default: `None`, each instance on its own.
    fn read_scope(&self) -> Option<String> {
        None
    }
    /// Reads many recorded resources of one type: one result per item, in their order
    /// (`None`: that object is gone). Default: one [`Provider::read`] after the other.
    ///
    /// # Errors
    /// The real world could not be asked; the whole batch fails.
    async fn read_many(
        &self,
        items: &[(&str, &ResourceState)],
    ) -> Result<Vec<Option<ResourceState>>, ProviderError> {
        let mut out = Vec::with_capacity(items.len());
        for (address, recorded) in items {
            out.push(self.read(address, recorded).await?);
        }
        Ok(out)
    }
    /// Finds an existing object by its import ID (`anvil import ADDR ID`) and returns the
    /// record anvil would keep for it: the attributes that name it and its real content
    /// (sensitive values as fingerprints), and its outputs. `ops::import` then reads the
    /// object again in the shape the spec gives it, so an object that matches the spec
    /// plans as a no-op.
    ///
    /// # Errors
    /// The type cannot be imported, the ID is malformed (the message says what an ID
    /// looks like), the object does not exist (the message names where anvil looked), or
    /// the real world could not be asked.
    async fn import(
        &self,
        address: &str,
        ty: &str,
        id: &str,
    ) -> Result<ResourceState, ProviderError> {
        let _ = id;
        Err(ProviderError::new(format!(
            "{address}: import is not supported for `{ty}`"
        )))
    }
    /// The import ID of the object that recorded `attributes` name, in its canonical
    /// form (defaults filled in), or `None` when the type has no such identity. Import
    /// uses it to tell whether the spec names the object being imported.
    fn import_id(&self, ty: &str, attributes: &Attributes) -> Option<String> {
        let _ = (ty, attributes);
        None
    }
    /// # Errors
    /// The object could not be created; the message says why.
    async fn create(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError>;
    /// # Errors
    /// The object could not be updated; the message says why.
    async fn update(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError>;
    /// # Errors
    /// The object could not be deleted; the message says why.
    async fn delete(&self, address: &str, recorded: &ResourceState) -> Result<(), ProviderError>;
    /// The provider's own diff of a planned update, shown under it in the plan (the BOSH
    /// Director's `/diff`). `attributes` are the planned ones without sensitive values.
    /// Default: none.
    ///
    /// # Errors
    /// The real world could not be asked.
    async fn preview(
        &self,
        _address: &str,
        _ty: &str,
        _attributes: &Attributes,
    ) -> Result<Option<crate::model::ProviderDiff>, ProviderError> {
        Ok(None)
    }
}

/// A fresh record of an imported object: no dependencies or lifecycle yet (the caller
/// adds those from the spec), created and updated now.
pub fn imported_record(
    ty: &str,
    provider: &str,
    attributes: Attributes,
    outputs: BTreeMap<String, Value>,
) -> ResourceState {
    let now = chrono::Utc::now();
    ResourceState {
        ty: ty.to_string(),
        provider: provider.to_string(),
        attributes,
        sensitive: BTreeMap::new(),
        outputs,
        dependencies: Vec::new(),
        lifecycle: Default::default(),
        created_at: now,
        updated_at: now,
    }
}

/// A provider instance and its name (`bosh.east`).
type Named = (String, Arc<dyn Provider>);

/// Why provider instances could not be configured: each error by the instance's index.
pub type InstanceErrors = Vec<(usize, ProviderError)>;

/// The providers known to a run by instance name (`bosh`, `bosh.east`), and which
/// provider owns each type.
#[derive(Clone, Default)]
pub struct Registry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    schemas: Schemas,
}

impl Registry {
    /// The built-in providers, each as its default instance configured from the
    /// environment on first use.
    pub fn builtin() -> Registry {
        let mut r = Registry::default();
        r.register(Arc::new(null::provider()));
        r.register(Arc::new(vault::provider()));
        r.register(Arc::new(bosh::provider()));
        r.register(Arc::new(aws::provider()));
        r
    }

    /// Adds the configured provider instances the spec declares (`providers:` blocks and
    /// Foundations' `director`/`vault` blocks): each is made from its provider's default
    /// instance with its own settings and registered under its instance name (an
    /// unaliased one replaces the default instance).
    ///
    /// # Errors
    /// Each instance that could not be configured, by its index in `instances`.
    pub fn configure(&mut self, instances: &[ProviderInstance]) -> Result<(), InstanceErrors> {
        for (name, p) in self.configured(instances)? {
            self.providers.insert(name, p);
        }
        Ok(())
    }

    /// What [`Registry::configure`] checks, without registering anything: whether each
    /// instance can be made from its provider with its settings.
    ///
    /// # Errors
    /// Each instance that could not be configured, by its index in `instances`.
    pub fn check_instances(&self, instances: &[ProviderInstance]) -> Result<(), InstanceErrors> {
        self.configured(instances).map(drop)
    }

    /// The provider instances `instances` declare, each made from its provider's
    /// default instance with its own settings, by instance name.
    fn configured(&self, instances: &[ProviderInstance]) -> Result<Vec<Named>, InstanceErrors> {
        let mut errors = Vec::new();
        let mut made = Vec::new();
        for (i, inst) in instances.iter().enumerate() {
            let Some(base) = self.providers.get(&inst.provider) else {
                errors.push((
                    i,
                    ProviderError::invalid(format!(
                        "there is no provider `{}` in this build (known: {})",
                        inst.provider,
                        self.providers
                            .keys()
                            .filter(|k| !k.contains('.'))
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                ));
                continue;
            };
            match base.configure(&inst.settings) {
                Ok(p) => made.push((inst.name(), p)),
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() {
            Ok(made)
        } else {
            Err(errors)
        }
    }

    /// Registers a provider as its default instance (under its name).
    pub fn register(&mut self, p: Arc<dyn Provider>) {
        for s in p.schemas() {
            self.schemas.insert(s.ty.clone(), s);
        }
        self.providers.insert(p.name().to_string(), p);
    }

    /// Registers a provider as the instance `name` (`bosh.east`), for library use.
    pub fn register_as(&mut self, name: &str, p: Arc<dyn Provider>) {
        for s in p.schemas() {
            self.schemas.insert(s.ty.clone(), s);
        }
        self.providers.insert(name.to_string(), p);
    }

    pub fn schemas(&self) -> &Schemas {
        &self.schemas
    }

    /// The provider instance by name as recorded in state or a plan: `bosh` is the
    /// default instance, `bosh.east` an aliased one.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }

    /// The default instance of the provider owning a resource type.
    pub fn for_type(&self, ty: &str) -> Option<&Arc<dyn Provider>> {
        self.schemas
            .get(ty)
            .and_then(|s| self.providers.get(s.provider.as_str()))
    }
}
