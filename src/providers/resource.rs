//! The seam for many resource types: one small [`ResourceType`] trait per type and
//! [`Typed`], the adapter that makes a list of registered types one [`Provider`].
//!
//! A provider is a configuration context `C` (its client, connected on first use) and
//! its types; adding a type is one file implementing [`ResourceType<C>`] and one
//! `.with(...)` line where the provider is built. The adapter looks a type up by name
//! (no `match` on type names), prefixes errors with the resource address, and makes new
//! configured instances (provider aliases) through [`Context::configure`].

use super::{Applied, Attributes, ChangeRequest, Provider, ProviderError};
use crate::model::{ProviderDiff, ResourceSchema};
use crate::state::ResourceState;
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A provider's shared context: its typed configuration and the client made from it.
pub trait Context: Send + Sync + 'static {
    /// A fresh context from a `providers:` block entry (the `alias` key already taken
    /// out). Settings not given fall back to the environment when the client is made.
    ///
    /// # Errors
    /// The settings do not fit the provider's configuration (unknown key, wrong type);
    /// the message names the key.
    fn configure(settings: &Map<String, Value>) -> Result<Self, ProviderError>
    where
        Self: Sized;

    /// See [`Provider::read_scope`]. Default: none (batches stay within one instance).
    fn read_scope(&self) -> Option<String> {
        None
    }
}

/// One resource type of a provider with context `C`. Errors never name the address:
/// the adapter prefixes it.
#[async_trait]
pub trait ResourceType<C: Send + Sync>: Send + Sync {
    /// The type's schema (its `ty` is the name it is registered under).
    fn schema(&self) -> ResourceSchema;
    /// Reads the real object behind a record; `Ok(None)` when it is gone.
    ///
    /// # Errors
    /// The real world could not be asked.
    async fn read(
        &self,
        ctx: &C,
        address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError>;
    /// Whether [`ResourceType::read_many`] reads many objects per request. Default: no.
    fn batches_reads(&self) -> bool {
        false
    }
    /// Reads many records of this type, one result per record in order. Default: one
    /// [`ResourceType::read`] after the other.
    ///
    /// # Errors
    /// The real world could not be asked.
    async fn read_many(
        &self,
        ctx: &C,
        items: &[(&str, &ResourceState)],
    ) -> Result<Vec<Option<ResourceState>>, ProviderError> {
        let mut out = Vec::with_capacity(items.len());
        for (address, recorded) in items {
            out.push(self.read(ctx, address, recorded).await?);
        }
        Ok(out)
    }
    /// # Errors
    /// The object could not be created; the message says why.
    async fn create(&self, ctx: &C, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError>;
    /// Default: the same as create (a full write).
    ///
    /// # Errors
    /// The object could not be updated; the message says why.
    async fn update(&self, ctx: &C, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        self.create(ctx, req).await
    }
    /// # Errors
    /// The object could not be deleted; the message says why.
    async fn delete(
        &self,
        ctx: &C,
        address: &str,
        recorded: &ResourceState,
    ) -> Result<(), ProviderError>;
    /// The record of an existing object found by its import ID. Default: not supported.
    ///
    /// # Errors
    /// Not supported, a malformed ID, an absent object, or the real world could not be
    /// asked.
    async fn import(&self, ctx: &C, id: &str) -> Result<ResourceState, ProviderError> {
        let _ = (ctx, id);
        Err(ProviderError::invalid(format!(
            "import is not supported for `{}`",
            self.schema().ty
        )))
    }
    /// The canonical import ID of a record's object, if the type has one.
    fn import_id(&self, attributes: &Attributes) -> Option<String> {
        let _ = attributes;
        None
    }
    /// The provider's own diff of a planned update. Default: none.
    ///
    /// # Errors
    /// The real world could not be asked.
    async fn preview(
        &self,
        ctx: &C,
        attributes: &Attributes,
    ) -> Result<Option<ProviderDiff>, ProviderError> {
        let _ = (ctx, attributes);
        Ok(None)
    }
}

/// A provider made of registered resource types sharing one context.
pub struct Typed<C> {
    name: &'static str,
    ctx: Arc<C>,
    types: BTreeMap<String, Arc<dyn ResourceType<C>>>,
    limit: usize,
    real_world: bool,
}

impl<C: Context> Typed<C> {
    /// A provider called `name` (recorded in state) with context `ctx`, running at most
    /// `limit` operations at once.
    #[must_use]
    pub fn new(name: &'static str, ctx: C, limit: usize) -> Typed<C> {
        Typed {
            name,
            ctx: Arc::new(ctx),
            types: BTreeMap::new(),
            limit,
            real_world: true,
        }
    }

    /// Registers a resource type: the one line a new type needs.
    #[must_use]
    pub fn with(mut self, t: impl ResourceType<C> + 'static) -> Typed<C> {
        self.types.insert(t.schema().ty, Arc::new(t));
        self
    }

    /// Marks a provider whose `read` asks nothing outside anvil.
    #[must_use]
    pub fn without_real_world(mut self) -> Typed<C> {
        self.real_world = false;
        self
    }

    /// The shared context (its client), for library use.
    #[must_use]
    pub fn context(&self) -> &C {
        &self.ctx
    }

    fn get(&self, ty: &str) -> Result<&Arc<dyn ResourceType<C>>, ProviderError> {
        self.types.get(ty).ok_or_else(|| {
            ProviderError::invalid(format!(
                "the {} provider has no resource type `{ty}` (it has {})",
                self.name,
                self.types.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

#[async_trait]
impl<C: Context> Provider for Typed<C> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn schemas(&self) -> Vec<ResourceSchema> {
        self.types.values().map(|t| t.schema()).collect()
    }

    fn concurrency_limit(&self) -> usize {
        self.limit
    }

    fn reads_real_world(&self) -> bool {
        self.real_world
    }

    fn configure(&self, settings: &Map<String, Value>) -> Result<Arc<dyn Provider>, ProviderError> {
        Ok(Arc::new(Typed {
            name: self.name,
            ctx: Arc::new(C::configure(settings)?),
            types: self.types.clone(),
            limit: self.limit,
            real_world: self.real_world,
        }))
    }

    async fn read(
        &self,
        address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        let t = self.get(&recorded.ty).map_err(|e| e.prefixed(address))?;
        t.read(&self.ctx, address, recorded)
            .await
            .map_err(|e| e.prefixed(address))
    }

    fn batches_reads(&self, ty: &str) -> bool {
        self.types.get(ty).is_some_and(|t| t.batches_reads())
    }

    fn read_scope(&self) -> Option<String> {
        self.ctx.read_scope().map(|s| format!("{}:{s}", self.name))
    }

    async fn read_many(
        &self,
        items: &[(&str, &ResourceState)],
    ) -> Result<Vec<Option<ResourceState>>, ProviderError> {
        let Some((first, rec)) = items.first() else {
            return Ok(Vec::new());
        };
        let batch = if items.len() == 1 {
            (*first).to_string()
        } else {
            format!("{first} (and {} more {})", items.len() - 1, rec.ty)
        };
        let t = self.get(&rec.ty).map_err(|e| e.prefixed(&batch))?;
        if let Some((address, other)) = items.iter().find(|(_, r)| r.ty != rec.ty) {
            return Err(ProviderError::invalid(format!(
                "{address}: a batch of `{}` reads holds a `{}`",
                rec.ty, other.ty
            )));
        }
        t.read_many(&self.ctx, items)
            .await
            .map_err(|e| e.prefixed(&batch))
    }

    async fn import(
        &self,
        address: &str,
        ty: &str,
        id: &str,
    ) -> Result<ResourceState, ProviderError> {
        let t = self.get(ty).map_err(|e| e.prefixed(address))?;
        t.import(&self.ctx, id)
            .await
            .map_err(|e| e.prefixed(address))
    }

    fn import_id(&self, ty: &str, attributes: &Attributes) -> Option<String> {
        self.types.get(ty)?.import_id(attributes)
    }

    async fn create(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let t = self.get(req.ty).map_err(|e| e.prefixed(req.address))?;
        t.create(&self.ctx, &req)
            .await
            .map_err(|e| e.prefixed(req.address))
    }

    async fn update(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let t = self.get(req.ty).map_err(|e| e.prefixed(req.address))?;
        t.update(&self.ctx, &req)
            .await
            .map_err(|e| e.prefixed(req.address))
    }

    async fn delete(&self, address: &str, recorded: &ResourceState) -> Result<(), ProviderError> {
        let t = self.get(&recorded.ty).map_err(|e| e.prefixed(address))?;
        t.delete(&self.ctx, address, recorded)
            .await
            .map_err(|e| e.prefixed(address))
    }

    async fn preview(
        &self,
        address: &str,
        ty: &str,
        attributes: &Attributes,
    ) -> Result<Option<ProviderDiff>, ProviderError> {
        let Some(t) = self.types.get(ty) else {
            return Ok(None);
        };
        t.preview(&self.ctx, attributes)
            .await
            .map_err(|e| e.prefixed(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrKind, AttrSchema};
    use crate::providers::{CancellationToken, ErrorKind, Registry};

    /// A context that remembers its one setting.
    struct Ctx {
        region: String,
    }

    impl Context for Ctx {
        fn configure(settings: &Map<String, Value>) -> Result<Ctx, ProviderError> {
            let region = settings
                .get("region")
                .and_then(Value::as_str)
                .ok_or_else(|| ProviderError::invalid("`region` is required"))?;
            Ok(Ctx {
                region: region.to_string(),
            })
        }
    }

    /// A fabricated resource type: the whole of what a new type needs.
    struct Bucket;

    #[async_trait]
    impl ResourceType<Ctx> for Bucket {
        fn schema(&self) -> ResourceSchema {
            let mut attributes = BTreeMap::new();
            attributes.insert(
                "name".into(),
                AttrSchema::new(AttrKind::String, "The bucket name.").required(),
            );
            ResourceSchema {
                ty: "fake_bucket".into(),
                provider: "fake".into(),
                attributes,
                outputs: BTreeMap::from([("region".into(), "Where it lives.")]),
            }
        }
        async fn read(
            &self,
            _: &Ctx,
            _: &str,
            recorded: &ResourceState,
        ) -> Result<Option<ResourceState>, ProviderError> {
            Ok(Some(recorded.clone()))
        }
        async fn create(
            &self,
            ctx: &Ctx,
            req: &ChangeRequest<'_>,
        ) -> Result<Applied, ProviderError> {
            if req.attributes.get("name").and_then(Value::as_str) == Some("taken") {
                return Err(ProviderError::of(ErrorKind::Conflict, "the name is taken"));
            }
            Ok(Applied {
                attributes: req.attributes.clone(),
                outputs: BTreeMap::from([("region".into(), Value::from(ctx.region.clone()))]),
            })
        }
        async fn delete(&self, _: &Ctx, _: &str, _: &ResourceState) -> Result<(), ProviderError> {
            Ok(())
        }
    }

    fn req<'a>(attrs: &'a Attributes, ty: &'a str) -> ChangeRequest<'a> {
        ChangeRequest {
            address: "fake_bucket.b",
            ty,
            attributes: attrs,
            prior: None,
            lineage: "00000000-0000-0000-0000-000000000000",
            progress: Arc::new(|_| {}),
            cancel: CancellationToken::new(),
            resumed: false,
        }
    }

    #[tokio::test]
    async fn a_new_type_is_one_registration_line() {
        let p = Typed::new(
            "fake",
            Ctx {
                region: "default".into(),
            },
            3,
        )
        .with(Bucket);
        let mut reg = Registry::default();
        reg.register(Arc::new(p));
        assert!(reg.schemas().contains_key("fake_bucket"));
        let fake = reg.for_type("fake_bucket").unwrap();
        assert_eq!(fake.concurrency_limit(), 3);

        let attrs: Attributes = BTreeMap::from([("name".into(), Value::from("logs"))]);
        let applied = fake.create(req(&attrs, "fake_bucket")).await.unwrap();
        assert_eq!(applied.outputs["region"], "default");

        // Errors keep their kind and name the address.
        let taken: Attributes = BTreeMap::from([("name".into(), Value::from("taken"))]);
        let e = fake.create(req(&taken, "fake_bucket")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(e.message, "fake_bucket.b: the name is taken");

        // A type the provider does not have is named, with the ones it has.
        let e = fake.create(req(&attrs, "fake_queue")).await.unwrap_err();
        assert!(
            e.message.contains("no resource type `fake_queue`")
                && e.message.contains("fake_bucket"),
            "{}",
            e.message
        );

        // An aliased instance has its own context.
        let settings = serde_json::json!({"region": "east"});
        let east = fake.configure(settings.as_object().unwrap()).unwrap();
        let applied = east.create(req(&attrs, "fake_bucket")).await.unwrap();
        assert_eq!(applied.outputs["region"], "east");
        let e = fake.configure(&Map::new()).err().unwrap();
        assert_eq!(e.message, "`region` is required");
    }
}
