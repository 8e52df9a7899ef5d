//! `vault_index_entry`: one key of a shared index secret (Blacksmith's `db` map of
//! instance id → object). Writes go through the index's group commit and
//! [`super::index::read_modify_write`], so concurrent writers never lose an entry; read
//! shares index reads among entries.

use super::{clean_path, map_attr, mount_attr, parse_import_id, str_attr, version_outputs, IdForm};
use super::{VaultContext, DEFAULT_MOUNT};
use crate::model::{AttrKind, AttrSchema, ResourceSchema};
use crate::providers::resource::ResourceType;
use crate::providers::{Applied, Attributes, ChangeRequest, ErrorKind, ProviderError};
use crate::state::ResourceState;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;

/// The `vault_index_entry` type.
pub struct IndexEntry;

pub(super) fn schema() -> ResourceSchema {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "path".into(),
        AttrSchema::new(
            AttrKind::String,
            "Path of the shared index secret, e.g. `db`.",
        )
        .required()
        .force_new(),
    );
    attributes.insert(
        "mount".into(),
        AttrSchema::new(AttrKind::String, "KV v2 mount; default `secret`.").force_new(),
    );
    attributes.insert(
        "key".into(),
        AttrSchema::new(AttrKind::String, "The key this entry owns in the index.")
            .required()
            .force_new(),
    );
    attributes.insert(
        "value".into(),
        AttrSchema::new(AttrKind::Map, "The entry's value (not sensitive).").required(),
    );
    attributes.insert(
        "preserve_keys".into(),
        AttrSchema::new(
            AttrKind::List,
            "Fields of the entry that other writers own (e.g. the reconciler's marks): kept from Vault when `value` lacks them. Pair with `ignore_changes: [value.KEY]`.",
        ),
    );
    attributes.insert(
        "stamp_on_create".into(),
        AttrSchema::new(
            AttrKind::Map,
            "Keys of `value` to fill with the time of the first write: key → `unix` (seconds) or `rfc3339`. Pair with `ignore_changes: [value.KEY]`.",
        ),
    );
    let mut outputs = BTreeMap::new();
    outputs.insert(
        "version".into(),
        "The index secret's version after the write.",
    );
    ResourceSchema {
        ty: "vault_index_entry".into(),
        provider: "vault".into(),
        attributes,
        outputs,
    }
}

/// Fills the keys named by `stamp_on_create` that the value lacks with the current time:
/// `unix` as seconds, `rfc3339` as text. Keys already present keep their value, so the
/// times written at creation survive updates (the Foundation kind ignores changes to them).
fn stamp(
    value: &mut serde_json::Map<String, Value>,
    attrs: &BTreeMap<String, Value>,
) -> Result<(), ProviderError> {
    let Some(stamps) = attrs.get("stamp_on_create") else {
        return Ok(());
    };
    let Some(stamps) = stamps.as_object() else {
        return Err(ProviderError::invalid(
            "attribute `stamp_on_create` must be a map of key to `unix` or `rfc3339`",
        ));
    };
    let now = chrono::Utc::now();
    for (key, format) in stamps {
        if value.contains_key(key) {
            continue;
        }
        let stamped = match format.as_str() {
            Some("unix") => Value::from(now.timestamp()),
            Some("rfc3339") => Value::from(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            _ => {
                return Err(ProviderError::invalid(format!(
                    "stamp_on_create.{key} is {format}: expected `unix` or `rfc3339`"
                )))
            }
        };
        value.insert(key.clone(), stamped);
    }
    Ok(())
}

#[async_trait]
impl ResourceType<VaultContext> for IndexEntry {
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
        let key = str_attr(attrs, "key")?;
        let secret = ctx.index_read(mount, path).await?;
        let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) else {
            return Ok(None);
        };
        let mut observed = recorded.clone();
        observed
            .attributes
            .insert("value".to_string(), value.clone());
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
        let key = str_attr(attrs, "key")?;
        let mut value = map_attr(attrs, "value")?.clone();
        stamp(&mut value, attrs)?;
        let value = Value::Object(value);
        let preserve: Vec<String> = attrs
            .get("preserve_keys")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let version = ctx
            .index_set(mount, path, key, Some(&value), &preserve)
            .await?;
        let mut applied = attrs.clone();
        applied.insert("value".into(), value);
        Ok(Applied {
            attributes: applied,
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
        let key = str_attr(attrs, "key")?;
        ctx.index_set(mount, path, key, None, &[]).await.map(|_| ())
    }

    /// By `[MOUNT:]PATH#KEY`.
    async fn import(&self, ctx: &VaultContext, id: &str) -> Result<ResourceState, ProviderError> {
        let (given_mount, path, key) = parse_import_id("vault_index_entry", IdForm::IndexKey, id)?;
        let key = key.unwrap_or_default();
        let mount = given_mount.unwrap_or(DEFAULT_MOUNT);
        let client = ctx.client_for(mount).await?;
        let secret = client.read(mount, path).await?;
        let where_ = format!(
            "{}/v1/{mount}/data/{path}",
            client.addr().trim_end_matches('/')
        );
        let not_found = |what: String| ProviderError::of(ErrorKind::NotFound, what);
        let Some(data) = secret.data else {
            return Err(not_found(format!(
                "no secret at {where_} (import ID `{id}`); check the path with `vault kv get -mount={mount} {path}`"
            )));
        };
        let Some(value) = data.get(key) else {
            return Err(not_found(format!(
                "the index at {where_} has no key `{key}` (import ID `{id}`); check it with `vault kv get -mount={mount} {path}`"
            )));
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("path".to_string(), Value::String(path.to_string()));
        if let Some(m) = given_mount {
            attributes.insert("mount".to_string(), Value::String(m.to_string()));
        }
        attributes.insert("key".to_string(), Value::String(key.to_string()));
        attributes.insert("value".to_string(), value.clone());
        Ok(crate::providers::imported_record(
            "vault_index_entry",
            "vault",
            attributes,
            version_outputs(secret.version),
        ))
    }

    fn import_id(&self, attributes: &Attributes) -> Option<String> {
        let path = clean_path(attributes.get("path")?.as_str()?);
        let key = attributes.get("key")?.as_str()?;
        Some(format!("{}:{path}#{key}", mount_attr(attributes)))
    }
}
