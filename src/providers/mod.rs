//! Providers: the one trait through which the engine reaches the real world, and the
//! registry of built-in providers.
//!
//! A provider declares schemas for its resource types (plain data), reads what exists,
//! and creates, updates and deletes. The engine never knows more than this trait.

pub mod bosh;
pub mod null;
pub mod vault;

use crate::model::{ResourceSchema, Schemas};
use crate::state::ResourceState;
use async_trait::async_trait;
use serde_json::Value;
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
    /// The recorded object, for updates.
    pub prior: Option<&'a ResourceState>,
    pub progress: ProgressFn,
}

/// A provider call that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub message: String,
    /// Whether retrying the same call may succeed.
    pub retryable: bool,
}

impl ProviderError {
    pub fn new(message: impl Into<String>) -> ProviderError {
        ProviderError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// The seam between the engine and the real world.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name, recorded in state (`null`, `bosh`, ...).
    fn name(&self) -> &'static str;
    /// Schemas of the resource types this provider owns.
    fn schemas(&self) -> Vec<ResourceSchema>;
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

/// The providers known to a run, by name, and which provider owns each type.
#[derive(Clone, Default)]
pub struct Registry {
    providers: BTreeMap<&'static str, Arc<dyn Provider>>,
    schemas: Schemas,
}

impl Registry {
    /// The built-in providers.
    pub fn builtin() -> Registry {
        let mut r = Registry::default();
        r.register(Arc::new(null::NullProvider));
        r.register(Arc::new(vault::VaultProvider::new()));
        r.register(Arc::new(bosh::BoshProvider::new()));
        r
    }

    /// Applies provider settings the spec gives (a Foundation's `director` and `vault`, by
    /// environment variable name): the built-in `bosh` and `vault` providers are made anew
    /// to read them before the environment. Without settings nothing changes.
    pub fn configure(&mut self, settings: &BTreeMap<String, String>) {
        let has = |prefix: &str| settings.keys().any(|k| k.starts_with(prefix));
        if has("BOSH_") && self.providers.contains_key("bosh") {
            self.register(Arc::new(bosh::BoshProvider::with_settings(
                settings.clone(),
            )));
        }
        if has("VAULT_") && self.providers.contains_key("vault") {
            self.register(Arc::new(vault::VaultProvider::with_settings(
                settings.clone(),
            )));
        }
    }

    pub fn register(&mut self, p: Arc<dyn Provider>) {
        for s in p.schemas() {
            self.schemas.insert(s.ty.clone(), s);
        }
        self.providers.insert(p.name(), p);
    }

    pub fn schemas(&self) -> &Schemas {
        &self.schemas
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }

    /// The provider owning a resource type.
    pub fn for_type(&self, ty: &str) -> Option<&Arc<dyn Provider>> {
        self.schemas
            .get(ty)
            .and_then(|s| self.providers.get(s.provider.as_str()))
    }
}
