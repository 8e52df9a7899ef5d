//! The `bosh` provider: deployments and configs on a BOSH Director (API v1).
//!
//! - `bosh_deployment` owns one deployment. Create and update `POST /deployments` with
//!   the manifest and follow the task, streaming its events as progress lines. Before
//!   POSTing, the manifest's top-level `name` is set to the `name` attribute: the
//!   manifest is parsed with yaml-rust2, the key replaced in place (or inserted first),
//!   and the document re-emitted (comments and anchors are not kept in what is sent).
//!   Delete is `DELETE /deployments/{name}?force=true` plus the task; when that fails,
//!   `GET /deployments` decides, and an absent deployment counts as deleted. Read is
//!   `GET /deployments/{name}`: 404 means gone; the Director's manifest replaces the
//!   recorded one only when the two differ as parsed YAML values, so formatting is never
//!   drift. Output `task_id`: the last task.
//! - `bosh_config` owns one config (`type` cloud|runtime|cpi, `name`, default
//!   `default`). Create and update `POST /configs`; read is the latest version, compared
//!   as YAML. The Director API anvil targets has no config delete, so destroying a
//!   `bosh_config` only forgets it (the config stays on the Director).
//!
//! Retry rule for deploys (see [`client::Client::deploy`]): GETs and DELETEs are retried
//! with backoff on 5xx and connection errors; a deploy POST only when it failed before a
//! `302` handed out a task, and only after checking the deployment's queued and
//! processing tasks (and its manifest), so a manifest whose task already started is
//! never POSTed twice.
//!
//! Configuration comes from the environment on first use (`BOSH_ENVIRONMENT`,
//! `BOSH_CLIENT`, `BOSH_CLIENT_SECRET`, `BOSH_CA_CERT`), so specs without bosh resources
//! never need it. At most 5 bosh operations run at once.

pub mod client;

use super::{Applied, Attributes, ChangeRequest, Provider, ProviderError};
use crate::model::{AttrKind, AttrSchema, DiffLine, ProviderDiff, ResourceSchema};
use crate::state::ResourceState;
use async_trait::async_trait;
use client::{BoshError, Client, Config};
use serde_json::Value;
use std::collections::BTreeMap;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// How many bosh operations run at once.
const CONCURRENCY: usize = 5;

/// The config name used when a `bosh_config` sets none.
pub const DEFAULT_CONFIG_NAME: &str = "default";

/// The `bosh` provider.
pub struct BoshProvider {
    /// Explicit configuration; `None` reads the environment on first use.
    config: Option<Config>,
    /// Settings from the spec, by environment variable name, read before the environment.
    settings: BTreeMap<String, String>,
    client: tokio::sync::OnceCell<Client>,
}

impl Default for BoshProvider {
    fn default() -> Self {
        BoshProvider::new()
    }
}

impl BoshProvider {
    /// A provider configured from the environment on first use.
    #[must_use]
    pub fn new() -> BoshProvider {
        BoshProvider {
            config: None,
            settings: BTreeMap::new(),
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// A provider configured on first use from `settings` (environment variable names to
    /// values, e.g. a Foundation's `director` block), falling back to the environment.
    #[must_use]
    pub fn with_settings(settings: BTreeMap<String, String>) -> BoshProvider {
        BoshProvider {
            settings,
            ..BoshProvider::new()
        }
    }

    /// A provider with an explicit configuration (library use and tests).
    #[must_use]
    pub fn with_config(config: Config) -> BoshProvider {
        BoshProvider {
            config: Some(config),
            ..BoshProvider::new()
        }
    }

    async fn client(&self) -> Result<&Client, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                let config = match &self.config {
                    Some(c) => c.clone(),
                    None => Config::from_vars(|n| {
                        self.settings
                            .get(n)
                            .cloned()
                            .or_else(|| crate::providers::env_var(n))
                    })?,
                };
                Client::connect(&config).await
            })
            .await
            .map_err(to_provider)
    }
}

fn to_provider(e: BoshError) -> ProviderError {
    ProviderError {
        message: e.message,
        retryable: e.retryable,
    }
}

fn prefix(address: &str) -> impl Fn(ProviderError) -> ProviderError + '_ {
    move |e| ProviderError {
        message: format!("{address}: {}", e.message),
        retryable: e.retryable,
    }
}

fn str_attr<'a>(
    attrs: &'a BTreeMap<String, Value>,
    name: &str,
    address: &str,
) -> Result<&'a str, ProviderError> {
    attrs.get(name).and_then(Value::as_str).ok_or_else(|| {
        ProviderError::new(format!(
            "{address}: attribute `{name}` must be a string; set it in the spec"
        ))
    })
}

fn unknown_type(ty: &str) -> ProviderError {
    ProviderError::new(format!("the bosh provider has no resource type `{ty}`"))
}

/// Parses one YAML document (`None` for an empty text).
fn load_yaml(text: &str) -> Result<Option<Yaml>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().next())
}

/// A YAML value as JSON, maps ordered by key, so equality ignores formatting and order.
#[must_use]
pub fn yaml_to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(s.clone()), Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                let key = match yaml_to_json(k) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(key, yaml_to_json(v));
            }
            Value::Object(m)
        }
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// Whether two YAML texts hold the same value (formatting, comments and key order
/// aside). Texts that do not parse compare as text.
#[must_use]
pub fn same_yaml(a: &str, b: &str) -> bool {
    match (load_yaml(a), load_yaml(b)) {
        (Ok(x), Ok(y)) => x.as_ref().map(yaml_to_json) == y.as_ref().map(yaml_to_json),
        _ => a == b,
    }
}

/// The manifest with its top-level `name` set to `name` (replaced in place, or inserted
/// as the first key), re-emitted by yaml-rust2.
///
/// # Errors
/// The manifest is not YAML or not a map at the top.
pub fn with_name(manifest: &str, name: &str) -> Result<String, String> {
    let doc = load_yaml(manifest)
        .map_err(|e| format!("the manifest is not valid YAML: {e}"))?
        .ok_or_else(|| "the manifest is empty".to_string())?;
    let Yaml::Hash(mut h) = doc else {
        return Err("the manifest must be a YAML map at the top".into());
    };
    let key = Yaml::String("name".into());
    let value = Yaml::String(name.into());
    let doc = if let Some(v) = h.get_mut(&key) {
        *v = value;
        Yaml::Hash(h)
    } else {
        let mut out = yaml_rust2::yaml::Hash::new();
        out.insert(key, value);
        for (k, v) in h {
            out.insert(k, v);
        }
        Yaml::Hash(out)
    };
    let mut text = String::new();
    YamlEmitter::new(&mut text)
        .dump(&doc)
        .map_err(|e| format!("cannot write the manifest back as YAML: {e}"))?;
    text.push('\n');
    Ok(text)
}

fn deployment_schema() -> ResourceSchema {
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

fn config_schema() -> ResourceSchema {
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

fn config_key<'a>(
    attrs: &'a BTreeMap<String, Value>,
    address: &str,
) -> Result<(&'a str, &'a str), ProviderError> {
    let ty = str_attr(attrs, "type", address)?;
    if !["cloud", "runtime", "cpi"].contains(&ty) {
        return Err(ProviderError::new(format!(
            "{address}: `type` must be cloud, runtime or cpi, not `{ty}`"
        )));
    }
    let name = attrs
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_CONFIG_NAME);
    Ok((ty, name))
}

impl BoshProvider {
    async fn write(&self, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let attrs = req.attributes;
        let address = req.address;
        match req.ty {
            "bosh_deployment" => {
                let name = str_attr(attrs, "name", address)?;
                let manifest = str_attr(attrs, "manifest", address)?;
                let named = with_name(manifest, name)
                    .map_err(|e| ProviderError::new(format!("{e}: fix `manifest` in the spec")))?;
                let client = self.client().await?;
                let task = client
                    .deploy(name, &named, |current| same_yaml(current, &named))
                    .await
                    .map_err(to_provider)?;
                let mut outputs = BTreeMap::new();
                if let Some(id) = task {
                    let progress = req.progress.clone();
                    client
                        .follow_task(id, name, &move |l: &str| progress(l))
                        .await
                        .map_err(to_provider)?;
                    outputs.insert("task_id".to_string(), Value::from(id));
                } else if let Some(prior) = req.prior.and_then(|p| p.outputs.get("task_id")) {
                    outputs.insert("task_id".to_string(), prior.clone());
                }
                Ok(Applied {
                    attributes: attrs.clone(),
                    outputs,
                })
            }
            "bosh_config" => {
                let (ty, name) = config_key(attrs, address)?;
                let content = str_attr(attrs, "content", address)?;
                self.client()
                    .await?
                    .post_config(ty, name, content)
                    .await
                    .map_err(to_provider)?;
                Ok(Applied {
                    attributes: attrs.clone(),
                    outputs: BTreeMap::new(),
                })
            }
            other => Err(unknown_type(other)),
        }
    }

    async fn read_inner(
        &self,
        address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        let attrs = &recorded.attributes;
        let mut observed = recorded.clone();
        match recorded.ty.as_str() {
            "bosh_deployment" => {
                let name = str_attr(attrs, "name", address)?;
                let manifest = str_attr(attrs, "manifest", address)?;
                let client = self.client().await?;
                let Some(current) = client.manifest(name).await.map_err(to_provider)? else {
                    return Ok(None);
                };
                let expected = with_name(manifest, name).unwrap_or_else(|_| manifest.into());
                if !same_yaml(&current, &expected) {
                    observed
                        .attributes
                        .insert("manifest".into(), Value::String(current));
                }
            }
            "bosh_config" => {
                let (ty, name) = config_key(attrs, address)?;
                let content = str_attr(attrs, "content", address)?;
                let client = self.client().await?;
                let Some((_, current)) =
                    client.latest_config(ty, name).await.map_err(to_provider)?
                else {
                    return Ok(None);
                };
                if !same_yaml(&current, content) {
                    observed
                        .attributes
                        .insert("content".into(), Value::String(current));
                }
            }
            other => return Err(unknown_type(other)),
        }
        Ok(Some(observed))
    }

    async fn import_inner(&self, ty: &str, id: &str) -> Result<ResourceState, ProviderError> {
        let mut attributes = BTreeMap::new();
        match ty {
            "bosh_deployment" => {
                if id.is_empty() || id.contains('/') || id.chars().any(char::is_whitespace) {
                    return Err(ProviderError::new(format!(
                        "import ID `{id}` is not a deployment name; a bosh_deployment is imported by its name as `bosh deployments` lists it"
                    )));
                }
                let client = self.client().await?;
                let Some(manifest) = client.manifest(id).await.map_err(to_provider)? else {
                    return Err(ProviderError::new(format!(
                        "no deployment `{id}` on the BOSH Director at {}; check the name with `bosh deployments`",
                        client.url()
                    )));
                };
                attributes.insert("name".to_string(), Value::String(id.to_string()));
                attributes.insert("manifest".to_string(), Value::String(manifest));
            }
            "bosh_config" => {
                let (t, n) = id.split_once('/').unwrap_or((id, DEFAULT_CONFIG_NAME));
                if !["cloud", "runtime", "cpi"].contains(&t) || n.is_empty() {
                    return Err(ProviderError::new(format!(
                        "import ID `{id}` is not a config; a bosh_config is imported by TYPE or TYPE/NAME with TYPE cloud, runtime or cpi (e.g. `cloud`, `runtime/dns`)"
                    )));
                }
                let client = self.client().await?;
                let Some((_, content)) = client.latest_config(t, n).await.map_err(to_provider)?
                else {
                    return Err(ProviderError::new(format!(
                        "no {t} config named `{n}` on the BOSH Director at {}; check with `bosh configs`",
                        client.url()
                    )));
                };
                attributes.insert("type".to_string(), Value::String(t.to_string()));
                if n != DEFAULT_CONFIG_NAME {
                    attributes.insert("name".to_string(), Value::String(n.to_string()));
                }
                attributes.insert("content".to_string(), Value::String(content));
            }
            other => return Err(unknown_type(other)),
        }
        Ok(super::imported_record(
            ty,
            "bosh",
            attributes,
            BTreeMap::new(),
        ))
    }

    async fn delete_inner(
        &self,
        address: &str,
        recorded: &ResourceState,
    ) -> Result<(), ProviderError> {
        match recorded.ty.as_str() {
            "bosh_deployment" => {
                let name = str_attr(&recorded.attributes, "name", address)?;
                let client = self.client().await?;
                let result = match client.delete_deployment(name).await {
                    Ok(Some(id)) => client.follow_task(id, name, &|_: &str| {}).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let names = client.deployment_names().await.map_err(to_provider)?;
                        if names.iter().any(|n| n == name) {
                            Err(to_provider(e))
                        } else {
                            Ok(())
                        }
                    }
                }
            }
            // No config delete in the Director API anvil targets: forgetting is all.
            "bosh_config" => Ok(()),
            other => Err(unknown_type(other)),
        }
    }
}

#[async_trait]
impl Provider for BoshProvider {
    fn name(&self) -> &'static str {
        "bosh"
    }

    fn schemas(&self) -> Vec<ResourceSchema> {
        vec![deployment_schema(), config_schema()]
    }

    fn concurrency_limit(&self) -> usize {
        CONCURRENCY
    }

    async fn read(
        &self,
        address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        self.read_inner(address, recorded)
            .await
            .map_err(prefix(address))
    }

    /// `bosh_deployment` by deployment name; `bosh_config` by `TYPE` or `TYPE/NAME`
    /// (e.g. `cloud`, `runtime/dns`).
    async fn import(
        &self,
        address: &str,
        ty: &str,
        id: &str,
    ) -> Result<ResourceState, ProviderError> {
        self.import_inner(ty, id).await.map_err(prefix(address))
    }

    fn import_id(&self, ty: &str, attributes: &BTreeMap<String, Value>) -> Option<String> {
        match ty {
            "bosh_deployment" => attributes.get("name")?.as_str().map(str::to_string),
            "bosh_config" => {
                let t = attributes.get("type")?.as_str()?;
                let n = attributes
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_CONFIG_NAME);
                Some(format!("{t}/{n}"))
            }
            _ => None,
        }
    }

    async fn create(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let address = req.address;
        self.write(&req).await.map_err(prefix(address))
    }

    async fn update(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let address = req.address;
        self.write(&req).await.map_err(prefix(address))
    }

    async fn delete(&self, address: &str, recorded: &ResourceState) -> Result<(), ProviderError> {
        self.delete_inner(address, recorded)
            .await
            .map_err(prefix(address))
    }

    async fn preview(
        &self,
        address: &str,
        ty: &str,
        attributes: &Attributes,
    ) -> Result<Option<ProviderDiff>, ProviderError> {
        if ty != "bosh_deployment" {
            return Ok(None);
        }
        let (Some(name), Some(manifest)) = (
            attributes.get("name").and_then(Value::as_str),
            attributes.get("manifest").and_then(Value::as_str),
        ) else {
            return Ok(None);
        };
        let manifest = with_name(manifest, name)
            .map_err(|m| ProviderError::new(format!("{m}: fix `manifest` in the spec")))?;
        let client = self.client().await.map_err(prefix(address))?;
        let (lines, error) = client
            .diff(name, &manifest)
            .await
            .map_err(to_provider)
            .map_err(prefix(address))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_replaced_in_place_or_inserted() {
        let m = with_name("name: old\ninstance_groups: []\n", "new").unwrap();
        assert!(same_yaml(&m, "name: new\ninstance_groups: []"), "{m}");
        let m = with_name("instance_groups: []\n", "new").unwrap();
        assert!(same_yaml(&m, "instance_groups: []\nname: new"), "{m}");
        assert!(with_name("- a\n", "x").is_err());
        assert!(with_name("", "x").is_err());
    }

    #[test]
    fn yaml_comparison_ignores_formatting() {
        assert!(same_yaml("a: 1\nb: [x, y]\n", "# c\nb:\n- x\n- y\na: 1"));
        assert!(!same_yaml("a: 1", "a: 2"));
    }
}
