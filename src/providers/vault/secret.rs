//! `vault_secret`: one whole KV v2 secret. Create and update write `data/<path>` (a
//! full replace); delete removes all versions; read compares the real data by
//! fingerprint (`data` is sensitive), so drift shows up as a change.

use super::{clean_path, map_attr, mount_attr, parse_import_id, str_attr, version_outputs, IdForm};
use super::{VaultContext, DEFAULT_MOUNT};
use crate::model::{AttrKind, AttrSchema, ResourceSchema};
use crate::providers::resource::ResourceType;
use crate::providers::{Applied, Attributes, ChangeRequest, ProviderError};
use crate::state::{fingerprint, ResourceState};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;

/// The `vault_secret` type.
pub struct Secret;

pub(super) fn schema() -> ResourceSchema {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "path".into(),
        AttrSchema::new(
            AttrKind::String,
            "Secret path under the mount, e.g. `app/db`.",
        )
        .required()
        .force_new(),
    );
    attributes.insert(
        "mount".into(),
        AttrSchema::new(AttrKind::String, "KV v2 mount; default `secret`.").force_new(),
    );
    attributes.insert(
        "data".into(),
        AttrSchema::new(
            AttrKind::Map,
            "The secret's key/value data; stored in state only as a fingerprint.",
        )
        .required()
        .sensitive(),
    );
    let mut outputs = BTreeMap::new();
    outputs.insert("version".into(), "The secret's current KV version.");
    ResourceSchema {
        ty: "vault_secret".into(),
        provider: "vault".into(),
        attributes,
        outputs,
    }
}

#[async_trait]
impl ResourceType<VaultContext> for Secret {
    fn schema(&self) -> ResourceSchema {
        schema()
    }

    async fn read(
        &self,
        ctx: &VaultContext,
        _address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        let attrs = &recorded.attributes;
        let mount = mount_attr(attrs);
        let path = clean_path(str_attr(attrs, "path")?);
        let secret = ctx.client_for(mount).await?.read(mount, path).await?;
        let Some(data) = secret.data else {
            return Ok(None);
        };
        let mut observed = recorded.clone();
        observed
            .sensitive
            .insert("data".to_string(), fingerprint(&Value::Object(data)));
        observed.outputs = version_outputs(secret.version);
        Ok(Some(observed))
    }

    async fn create(
        &self,
        ctx: &VaultContext,
        req: &ChangeRequest<'_>,
    ) -> Result<Applied, ProviderError> {
        let attrs = req.attributes;
        let mount = mount_attr(attrs);
        let path = clean_path(str_attr(attrs, "path")?);
        let data = map_attr(attrs, "data")?;
        let version = ctx
            .client_for(mount)
            .await?
            .write(mount, path, data, None)
            .await?;
        Ok(Applied {
            attributes: attrs.clone(),
            outputs: version_outputs(version),
        })
    }

    async fn delete(
        &self,
        ctx: &VaultContext,
        _address: &str,
        recorded: &ResourceState,
    ) -> Result<(), ProviderError> {
        let attrs = &recorded.attributes;
        let mount = mount_attr(attrs);
        let path = clean_path(str_attr(attrs, "path")?);
        ctx.client_for(mount).await?.delete_all(mount, path).await
    }

    /// By `[MOUNT:]PATH`.
    async fn import(&self, ctx: &VaultContext, id: &str) -> Result<ResourceState, ProviderError> {
        let (given_mount, path, _) = parse_import_id("vault_secret", IdForm::Secret, id)?;
        let mount = given_mount.unwrap_or(DEFAULT_MOUNT);
        let client = ctx.client_for(mount).await?;
        let secret = client.read(mount, path).await?;
        let Some(data) = secret.data else {
            return Err(ProviderError::of(
                crate::providers::ErrorKind::NotFound,
                format!(
                    "no secret at {}/v1/{mount}/data/{path} (import ID `{id}`); check the path with `vault kv get -mount={mount} {path}`",
                    client.addr().trim_end_matches('/')
                ),
            ));
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("path".to_string(), Value::String(path.to_string()));
        if let Some(m) = given_mount {
            attributes.insert("mount".to_string(), Value::String(m.to_string()));
        }
        let mut rec = crate::providers::imported_record(
            "vault_secret",
            "vault",
            attributes,
            version_outputs(secret.version),
        );
        rec.sensitive
            .insert("data".to_string(), fingerprint(&Value::Object(data)));
        Ok(rec)
    }

    fn import_id(&self, attributes: &Attributes) -> Option<String> {
        let path = clean_path(attributes.get("path")?.as_str()?);
        Some(format!("{}:{path}", mount_attr(attributes)))
    }
}
