//! `bosh_config`: one config (`type` cloud|runtime|cpi, `name`, default `default`).
//! Create and update `POST /configs`; read is the latest version, compared as YAML. The
//! Director API anvil targets has no config delete, so destroying a `bosh_config` only
//! forgets it (the config stays on the Director).

use super::{same_yaml, str_attr, BoshContext, DEFAULT_CONFIG_NAME};
use crate::model::{AttrKind, AttrSchema, ResourceSchema};
use crate::providers::resource::ResourceType;
use crate::providers::{Applied, Attributes, ChangeRequest, ErrorKind, ProviderError};
use crate::state::ResourceState;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;

/// The `bosh_config` type.
pub struct BoshConfig;

pub(super) fn schema() -> ResourceSchema {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "type".into(),
        AttrSchema::new(AttrKind::String, "Config type: cloud, runtime or cpi.")
            .required()
            .force_new(),
    );
    attributes.insert(
        "name".into(),
        AttrSchema::new(AttrKind::String, "Config name; default `default`.").force_new(),
    );
    attributes.insert(
        "content".into(),
        AttrSchema::new(AttrKind::String, "The config (YAML text).").required(),
    );
    ResourceSchema {
        ty: "bosh_config".into(),
        provider: "bosh".into(),
        attributes,
        outputs: BTreeMap::new(),
    }
}

fn config_key(attrs: &BTreeMap<String, Value>) -> Result<(&str, &str), ProviderError> {
    let ty = str_attr(attrs, "type")?;
    if !["cloud", "runtime", "cpi"].contains(&ty) {
        return Err(ProviderError::invalid(format!(
            "`type` must be cloud, runtime or cpi, not `{ty}`"
        )));
    }
    let name = attrs
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_CONFIG_NAME);
    Ok((ty, name))
}

#[async_trait]
impl ResourceType<BoshContext> for BoshConfig {
    fn schema(&self) -> ResourceSchema {
        schema()
    }

    async fn read(
        &self,
        ctx: &BoshContext,
        _address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        let attrs = &recorded.attributes;
        let (ty, name) = config_key(attrs)?;
        let content = str_attr(attrs, "content")?;
        let Some((_, current)) = ctx.client().await?.latest_config(ty, name).await? else {
            return Ok(None);
        };
        let mut observed = recorded.clone();
        if !same_yaml(&current, content) {
            observed
                .attributes
                .insert("content".into(), Value::String(current));
        }
        Ok(Some(observed))
    }

    async fn create(
        &self,
        ctx: &BoshContext,
        req: &ChangeRequest<'_>,
    ) -> Result<Applied, ProviderError> {
        let attrs = req.attributes;
        let (ty, name) = config_key(attrs)?;
        let content = str_attr(attrs, "content")?;
        ctx.client().await?.post_config(ty, name, content).await?;
        Ok(Applied {
            attributes: attrs.clone(),
            outputs: BTreeMap::new(),
        })
    }

    /// No config delete in the Director API anvil targets: forgetting is all.
    async fn delete(
        &self,
        _: &BoshContext,
        _address: &str,
        _recorded: &ResourceState,
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    /// By `TYPE` or `TYPE/NAME` (e.g. `cloud`, `runtime/dns`).
    async fn import(&self, ctx: &BoshContext, id: &str) -> Result<ResourceState, ProviderError> {
        let (t, n) = id.split_once('/').unwrap_or((id, DEFAULT_CONFIG_NAME));
        if !["cloud", "runtime", "cpi"].contains(&t) || n.is_empty() {
            return Err(ProviderError::invalid(format!(
                "import ID `{id}` is not a config; a bosh_config is imported by TYPE or TYPE/NAME with TYPE cloud, runtime or cpi (e.g. `cloud`, `runtime/dns`)"
            )));
        }
        let client = ctx.client().await?;
        let Some((_, content)) = client.latest_config(t, n).await? else {
            return Err(ProviderError::of(
                ErrorKind::NotFound,
                format!(
                    "no {t} config named `{n}` on the BOSH Director at {}; check with `bosh configs`",
                    client.url()
                ),
            ));
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("type".to_string(), Value::String(t.to_string()));
        if n != DEFAULT_CONFIG_NAME {
            attributes.insert("name".to_string(), Value::String(n.to_string()));
        }
        attributes.insert("content".to_string(), Value::String(content));
        Ok(crate::providers::imported_record(
            "bosh_config",
            "bosh",
            attributes,
            BTreeMap::new(),
        ))
    }

    fn import_id(&self, attributes: &Attributes) -> Option<String> {
        let t = attributes.get("type")?.as_str()?;
        let n = attributes
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_CONFIG_NAME);
        Some(format!("{t}/{n}"))
    }
}
