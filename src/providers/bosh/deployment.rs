//! `bosh_deployment`: one deployment. Create and update `POST /deployments` with the
//! manifest (its top-level `name` set to the `name` attribute) and follow the task,
//! streaming its events as progress; delete is `DELETE /deployments/{name}?force=true`
//! plus the task (an absent deployment counts as deleted); read compares the Director's
//! manifest as parsed YAML, so formatting is never drift. Output `task_id`.

use super::{same_yaml, str_attr, with_name, BoshContext};
use crate::model::{AttrKind, AttrSchema, DiffLine, ProviderDiff, ResourceSchema};
use crate::providers::resource::ResourceType;
use crate::providers::{Applied, Attributes, ChangeRequest, ErrorKind, ProviderError};
use crate::state::ResourceState;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;

/// The `bosh_deployment` type.
pub struct Deployment;

pub(super) fn schema() -> ResourceSchema {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "name".into(),
        AttrSchema::new(
            AttrKind::String,
            "Deployment name; set as the manifest's top-level `name`.",
        )
        .required()
        .force_new(),
    );
    attributes.insert(
        "manifest".into(),
        AttrSchema::new(AttrKind::String, "The deployment manifest (YAML text).").required(),
    );
    let mut outputs = BTreeMap::new();
    outputs.insert("task_id".into(), "The id of the last BOSH task run for it.");
    ResourceSchema {
        ty: "bosh_deployment".into(),
        provider: "bosh".into(),
        attributes,
        outputs,
    }
}

#[async_trait]
impl ResourceType<BoshContext> for Deployment {
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
        let name = str_attr(attrs, "name")?;
        let manifest = str_attr(attrs, "manifest")?;
        let Some(current) = ctx.client().await?.manifest(name).await? else {
            return Ok(None);
        };
        let mut observed = recorded.clone();
        let expected = with_name(manifest, name).unwrap_or_else(|_| manifest.into());
        if !same_yaml(&current, &expected) {
            observed
                .attributes
                .insert("manifest".into(), Value::String(current));
        }
        Ok(Some(observed))
    }

    async fn create(
        &self,
        ctx: &BoshContext,
        req: &ChangeRequest<'_>,
    ) -> Result<Applied, ProviderError> {
        let attrs = req.attributes;
        let name = str_attr(attrs, "name")?;
        let manifest = str_attr(attrs, "manifest")?;
        let named = with_name(manifest, name)
            .map_err(|e| ProviderError::invalid(format!("{e}: fix `manifest` in the spec")))?;
        let client = ctx.client().await?;
        let task = client
            .deploy(
                name,
                &named,
                |current| same_yaml(current, &named),
                req.resumed,
            )
            .await?;
        let mut outputs = BTreeMap::new();
        if let Some(id) = task {
            let progress = req.progress.clone();
            client
                .follow_task(id, name, &move |l: &str| progress(l), &req.cancel)
                .await?;
            outputs.insert("task_id".to_string(), Value::from(id));
        } else if let Some(prior) = req.prior.and_then(|p| p.outputs.get("task_id")) {
            outputs.insert("task_id".to_string(), prior.clone());
        }
        Ok(Applied {
            attributes: attrs.clone(),
            outputs,
        })
    }

    async fn delete(
        &self,
        ctx: &BoshContext,
        _address: &str,
        recorded: &ResourceState,
    ) -> Result<(), ProviderError> {
        let name = str_attr(&recorded.attributes, "name")?;
        let client = ctx.client().await?;
        // Deletes are not interrupted half-way: the engine drains them on Ctrl-C.
        let never = crate::providers::CancellationToken::new();
        let result = match client.delete_deployment(name).await {
            Ok(Some(id)) => client.follow_task(id, name, &|_: &str| {}, &never).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let names = client.deployment_names().await?;
                if names.iter().any(|n| n == name) {
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// By deployment name.
    async fn import(&self, ctx: &BoshContext, id: &str) -> Result<ResourceState, ProviderError> {
        if id.is_empty() || id.contains('/') || id.chars().any(char::is_whitespace) {
            return Err(ProviderError::invalid(format!(
                "import ID `{id}` is not a deployment name; a bosh_deployment is imported by its name as `bosh deployments` lists it"
            )));
        }
        let client = ctx.client().await?;
        let Some(manifest) = client.manifest(id).await? else {
            return Err(ProviderError::of(
                ErrorKind::NotFound,
                format!(
                    "no deployment `{id}` on the BOSH Director at {}; check the name with `bosh deployments`",
                    client.url()
                ),
            ));
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("name".to_string(), Value::String(id.to_string()));
        attributes.insert("manifest".to_string(), Value::String(manifest));
        Ok(crate::providers::imported_record(
            "bosh_deployment",
            "bosh",
            attributes,
            BTreeMap::new(),
        ))
    }

    fn import_id(&self, attributes: &Attributes) -> Option<String> {
        attributes.get("name")?.as_str().map(str::to_string)
    }

    async fn preview(
        &self,
        ctx: &BoshContext,
        attributes: &Attributes,
    ) -> Result<Option<ProviderDiff>, ProviderError> {
        let (Some(name), Some(manifest)) = (
            attributes.get("name").and_then(Value::as_str),
            attributes.get("manifest").and_then(Value::as_str),
        ) else {
            return Ok(None);
        };
        let manifest = with_name(manifest, name)
            .map_err(|m| ProviderError::invalid(format!("{m}: fix `manifest` in the spec")))?;
        let (lines, error) = ctx.client().await?.diff(name, &manifest).await?;
        Ok(Some(ProviderDiff {
            source: format!("BOSH Director (POST /deployments/{name}/diff?redact=true)"),
            lines: lines
                .into_iter()
                .map(|(text, change)| DiffLine { text, change })
                .collect(),
            error,
        }))
    }
}
