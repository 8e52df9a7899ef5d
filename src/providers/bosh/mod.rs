//! The `bosh` provider: deployments and configs on a BOSH Director (API v1), one file
//! per resource type ([`deployment`], [`config`]).
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
//! Configuration is typed ([`client::Settings`]: `environment`, `client`,
//! `client_secret`, `ca_cert`) from a `providers:` entry or a Foundation's `director`
//! block; unset fields fall back to `BOSH_ENVIRONMENT`, `BOSH_CLIENT`,
//! `BOSH_CLIENT_SECRET`, `BOSH_CA_CERT`, read on first use, so specs without bosh
//! resources never need them. At most 5 bosh operations run at once.

pub mod client;
pub mod config;
pub mod deployment;

use super::resource::{Context, Typed};
use super::ProviderError;
use client::{Client, Config, Settings};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// How many bosh operations run at once.
const CONCURRENCY: usize = 5;

/// The config name used when a `bosh_config` sets none.
pub const DEFAULT_CONFIG_NAME: &str = "default";

/// The `bosh` provider with its resource types, configured from the environment.
#[must_use]
pub fn provider() -> Typed<BoshContext> {
    with_context(BoshContext::default())
}

/// The `bosh` provider over a given context (library use and tests).
#[must_use]
pub fn with_context(ctx: BoshContext) -> Typed<BoshContext> {
    Typed::new("bosh", ctx, CONCURRENCY)
        .with(deployment::Deployment)
        .with(config::BoshConfig)
}

/// The `bosh` provider as a type (what [`provider`] returns).
pub type BoshProvider = Typed<BoshContext>;

impl BoshProvider {
    /// The provider with an explicit configuration (library use and tests).
    #[must_use]
    pub fn with_config(config: Config) -> BoshProvider {
        with_context(BoshContext::with_config(config))
    }
}

/// One configured Director: its settings and the client made from them on first use.
#[derive(Default)]
pub struct BoshContext {
    /// Explicit configuration; `None` resolves `settings` and the environment.
    config: Option<Config>,
    settings: Settings,
    client: tokio::sync::OnceCell<Client>,
}

impl Context for BoshContext {
    fn configure(settings: &Map<String, Value>) -> Result<BoshContext, ProviderError> {
        let settings: Settings =
            serde_json::from_value(Value::Object(settings.clone())).map_err(|e| {
                ProviderError::invalid(format!(
                    "bosh provider settings: {e}; the keys are environment, client, \
                     client_secret and ca_cert"
                ))
            })?;
        Ok(BoshContext {
            settings,
            ..BoshContext::default()
        })
    }
}

impl BoshContext {
    /// A context with an explicit configuration (library use and tests).
    #[must_use]
    pub fn with_config(config: Config) -> BoshContext {
        BoshContext {
            config: Some(config),
            ..BoshContext::default()
        }
    }

    /// The client, connected on first use.
    ///
    /// # Errors
    /// The configuration is incomplete, or the Director cannot be reached.
    pub async fn client(&self) -> Result<&Client, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                let config = match &self.config {
                    Some(c) => c.clone(),
                    None => Config::resolve(&self.settings, crate::providers::env_var)?,
                };
                Client::connect(&config).await
            })
            .await
    }
}

fn str_attr<'a>(attrs: &'a BTreeMap<String, Value>, name: &str) -> Result<&'a str, ProviderError> {
    attrs.get(name).and_then(Value::as_str).ok_or_else(|| {
        ProviderError::invalid(format!(
            "attribute `{name}` must be a string; set it in the spec"
        ))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_typed_and_unknown_keys_named() {
        let ok = serde_json::json!({"environment": "https://10.0.0.6:25555", "client": "admin", "client_secret": "s"});
        let c = BoshContext::configure(ok.as_object().unwrap()).unwrap();
        assert_eq!(c.settings.client.as_deref(), Some("admin"));
        let bad = serde_json::json!({"url": "https://x"});
        let e = BoshContext::configure(bad.as_object().unwrap())
            .err()
            .unwrap();
        assert!(
            e.message.contains("url") && e.message.contains("environment"),
            "{}",
            e.message
        );
    }

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
