//! Bind and unbind for the broker, and the Director and Vault reads behind Blacksmith's
//! `/b/…` endpoints: the IO around `model::credentials`.
//!
//! A bind reads the deployment's VMs from the Director, reads (or on the first bind,
//! generates and check-and-set writes) the instance's secrets at `{id}/credentials`,
//! renders the plan's credentials template and keeps the result with the binding's
//! attributes at `{id}/bindings/{binding_id}`. Unbind deletes that secret. Credentials
//! and secrets live only in Vault: nothing here logs them, emits them as events or
//! writes them to state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::distr::Alphanumeric;
use rand::RngExt;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::model::credentials::{self, BindContext, CredentialError, Vm};
use crate::model::foundation::{self, DEFAULT_MOUNT};
use crate::providers::bosh::client as bosh;
use crate::providers::vault::client as vault;
use crate::providers::ProviderError;
use crate::spec::{self, DocumentBody, FoundationDoc, LoadOptions, PlanSpec, ServiceSpec};

/// How long generated secrets are (alphanumeric: about 190 bits).
pub const SECRET_LEN: usize = 32;

/// How often a first bind re-reads `{id}/credentials` after losing a check-and-set race
/// with another first bind of the same instance.
const CAS_ATTEMPTS: usize = 5;

/// Why a bind, unbind or `/b/` read failed. Each message names the instance, the
/// binding, the Director or Vault endpoint, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The spec does not load or holds no single Foundation.
    #[error("{0}")]
    Foundation(String),
    /// The Director or Vault settings are missing or unusable.
    #[error("{0}")]
    Connect(String),
    /// The instance's service is not in the catalog.
    #[error("instance {instance}: service `{service}` is not in the catalog; bind only instances of the catalog's services")]
    UnknownService { instance: String, service: String },
    /// The instance's plan is not in the catalog.
    #[error("instance {instance}: plan `{plan}` is not a plan of service `{service}`; bind only instances of the catalog's plans")]
    UnknownPlan {
        instance: String,
        service: String,
        plan: String,
    },
    /// The service is not bindable.
    #[error("service `{service}` is not bindable (catalog: `bindable: false`); instances of it cannot be bound")]
    NotBindable { service: String },
    /// The deployment is not on the Director (not yet deployed, or gone).
    #[error("instance {instance}: deployment {deployment} is not on the Director ({director}); bind once provisioning succeeded")]
    NoDeployment {
        instance: String,
        deployment: String,
        director: String,
    },
    /// The template cannot be rendered for this instance.
    #[error("instance {instance}, binding {binding}: {source}")]
    Render {
        instance: String,
        binding: String,
        source: Box<CredentialError>,
    },
    /// A Director or Vault call failed (its message names the endpoint).
    #[error("{context}: {source}")]
    Provider {
        context: String,
        source: ProviderError,
    },
}

impl BindError {
    fn provider(context: impl Into<String>) -> impl FnOnce(ProviderError) -> BindError {
        let context = context.into();
        move |source| BindError::Provider { context, source }
    }
}

/// The instance a bind is for, as the broker or the spec knows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BindTarget {
    pub instance_id: String,
    pub service_id: String,
    pub plan_id: String,
    pub organization_guid: String,
    pub space_guid: String,
    /// The instance's own parameters (the plan's defaults are added here).
    pub parameters: BTreeMap<String, Value>,
}

/// What a bind request asks for: the attributes that decide whether a second `PUT` of
/// the same binding id is the same binding (200) or a different one (409).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BindRequest {
    pub binding_id: String,
    pub service_id: String,
    pub plan_id: String,
    pub app_guid: Option<String>,
    pub bind_resource: Option<Value>,
    pub parameters: Option<Value>,
}

impl BindRequest {
    /// The attributes kept beside the credentials (no secrets).
    fn attributes(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("service_id".into(), json!(self.service_id));
        m.insert("plan_id".into(), json!(self.plan_id));
        m.insert("app_guid".into(), json!(self.app_guid));
        m.insert("bind_resource".into(), json!(self.bind_resource));
        m.insert("parameters".into(), json!(self.parameters));
        m
    }
}

/// How a bind ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BindOutcome {
    /// A new binding with these credentials (OSB 201).
    Created(Map<String, Value>),
    /// The same binding already existed with the same attributes (OSB 200).
    Existing(Map<String, Value>),
    /// The binding id exists with different attributes (OSB 409).
    Conflict,
}

/// A stored binding: its credentials and the attributes it was made with.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBinding {
    pub credentials: Map<String, Value>,
    pub attributes: Map<String, Value>,
}

/// The Director and Vault of one Foundation, and its catalog, as bind and the `/b/`
/// endpoints use them.
pub struct Clients {
    /// The Foundation file (for messages).
    pub file: PathBuf,
    pub services: Vec<ServiceSpec>,
    pub director: bosh::Client,
    pub vault: vault::Client,
    /// The KV v2 mount holding the index and instance secrets.
    pub mount: String,
}

/// Loads the one Foundation document under `path` (file or directory), with
/// `${env:NAME}` from the process environment.
///
/// # Errors
/// The spec does not load, or holds no Foundation or more than one.
pub fn load_foundation(path: &Path) -> Result<(FoundationDoc, PathBuf), BindError> {
    let env = super::utf8_env();
    let loaded = spec::load(
        &[path.to_path_buf()],
        &LoadOptions {
            vars: BTreeMap::new(),
            env,
        },
    )
    .map_err(|e| BindError::Foundation(e.to_string()))?;
    let mut found: Vec<(FoundationDoc, PathBuf)> = loaded
        .documents
        .iter()
        .filter_map(|d| match &d.body {
            DocumentBody::Foundation(f) => Some(((**f).clone(), d.file.clone())),
            _ => None,
        })
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(BindError::Foundation(format!(
            "{}: no `kind: Foundation` document found; point the broker at a Foundation",
            path.display()
        ))),
        n => Err(BindError::Foundation(format!(
            "{}: {n} Foundation documents; a broker serves one Foundation",
            path.display()
        ))),
    }
}

impl Clients {
    /// Connects to the Foundation's Director and Vault: its `director` and `vault`
    /// blocks first, then `env` (`BOSH_*`, `VAULT_*`), as `anvil apply` does.
    ///
    /// # Errors
    /// Settings are missing or unusable, or the Director or Vault cannot be reached.
    pub async fn connect(
        f: &FoundationDoc,
        file: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Clients, BindError> {
        let (b, v) = foundation::provider_settings(f);
        let typed = |what: &str| {
            BindError::Connect(format!(
                "{}: the {what} settings do not fit; fix the Foundation's `{what}` block",
                file.display()
            ))
        };
        let bs: bosh::Settings =
            serde_json::from_value(Value::Object(b)).map_err(|_| typed("director"))?;
        let vs: vault::Settings =
            serde_json::from_value(Value::Object(v)).map_err(|_| typed("vault"))?;
        let bc = bosh::Config::resolve(&bs, &env).map_err(|e| {
            BindError::Connect(format!(
                "{}: the Director: {e} (or set `director:` in the Foundation)",
                file.display()
            ))
        })?;
        let vc = vault::Config::resolve(&vs, &env).map_err(|e| {
            BindError::Connect(format!(
                "{}: Vault: {e} (or set `vault.addr` in the Foundation)",
                file.display()
            ))
        })?;
        let (director, vault) =
            tokio::join!(bosh::Client::connect(&bc), vault::Client::connect(&vc));
        let director = director.map_err(|e| BindError::Connect(e.to_string()))?;
        let vault = vault.map_err(|e| BindError::Connect(e.to_string()))?;
        Ok(Clients {
            file: file.to_path_buf(),
            services: f.catalog.services.clone(),
            director,
            vault,
            mount: f
                .vault
                .mount
                .clone()
                .unwrap_or_else(|| DEFAULT_MOUNT.to_string()),
        })
    }

    /// [`Clients::connect`] with the process environment.
    ///
    /// # Errors
    /// As [`Clients::connect`].
    pub async fn connect_env(f: &FoundationDoc, file: &Path) -> Result<Clients, BindError> {
        Clients::connect(f, file, crate::providers::env_var).await
    }

    /// The service and plan of a target (a plan named by id or by name).
    ///
    /// # Errors
    /// The service or plan is not in the catalog.
    pub fn plan_of(&self, t: &BindTarget) -> Result<(&ServiceSpec, &PlanSpec), BindError> {
        let service = self
            .services
            .iter()
            .find(|s| s.id == t.service_id)
            .ok_or_else(|| BindError::UnknownService {
                instance: t.instance_id.clone(),
                service: t.service_id.clone(),
            })?;
        let plan = service
            .plans
            .iter()
            .find(|p| p.id == t.plan_id)
            .or_else(|| service.plans.iter().find(|p| p.name == t.plan_id))
            .ok_or_else(|| BindError::UnknownPlan {
                instance: t.instance_id.clone(),
                service: t.service_id.clone(),
                plan: t.plan_id.clone(),
            })?;
        Ok((service, plan))
    }

    /// The deployment's VMs (`vms?format=full`); `None` when it is not on the Director.
    ///
    /// # Errors
    /// The Director refuses or cannot be asked.
    pub async fn vms(
        &self,
        deployment: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<Value>>, BindError> {
        self.director
            .vms_full(deployment, cancel)
            .await
            .map_err(BindError::provider(format!(
                "the VMs of deployment {deployment}"
            )))
    }

    /// Binds: renders the plan's credentials for `target` and keeps them at
    /// `{id}/bindings/{binding_id}`. A second bind with the same attributes answers the
    /// stored credentials; with different ones, [`BindOutcome::Conflict`].
    ///
    /// # Errors
    /// The service is not bindable, the plan is unknown, the deployment is missing, the
    /// template cannot be rendered, or the Director or Vault fails.
    pub async fn bind(
        &self,
        target: &BindTarget,
        request: &BindRequest,
        cancel: &CancellationToken,
    ) -> Result<BindOutcome, BindError> {
        let (service, plan) = self.plan_of(target)?;
        if !service.bindable {
            return Err(BindError::NotBindable {
                service: service.id.clone(),
            });
        }
        let id = &target.instance_id;
        let bid = &request.binding_id;
        let attributes = request.attributes();
        if let Some(existing) = self.binding(id, bid).await? {
            return Ok(if existing.attributes == attributes {
                BindOutcome::Existing(existing.credentials)
            } else {
                BindOutcome::Conflict
            });
        }
        let credentials = match &plan.credentials {
            None => Map::new(),
            Some(template) => {
                let deployment = foundation::deployment_name(&plan.id, id);
                let vms = self.vms(&deployment, cancel).await?.ok_or_else(|| {
                    BindError::NoDeployment {
                        instance: id.clone(),
                        deployment: deployment.clone(),
                        director: self.director.url().to_string(),
                    }
                })?;
                let vms: Vec<Vm> = vms.iter().filter_map(Vm::from_director).collect();
                let secrets = self
                    .instance_secrets(id, &credentials::secret_names(template))
                    .await?;
                let params = foundation::merge_params(plan, &target.parameters);
                let ctx = BindContext {
                    service,
                    plan,
                    instance_id: id,
                    organization_guid: &target.organization_guid,
                    space_guid: &target.space_guid,
                    params: &params,
                    binding_id: bid,
                    vms: &vms,
                    secrets: &secrets,
                };
                credentials::render(template, &ctx).map_err(|source| BindError::Render {
                    instance: id.clone(),
                    binding: bid.clone(),
                    source: Box::new(source),
                })?
            }
        };
        let mut data = attributes;
        data.insert("credentials".into(), Value::Object(credentials.clone()));
        data.insert("created_at".into(), json!(chrono::Utc::now().to_rfc3339()));
        let path = binding_path(id, bid);
        self.vault
            .write(&self.mount, &path, &data, None)
            .await
            .map_err(BindError::provider(format!(
                "instance {id}, binding {bid}: writing {}/{path}",
                self.mount
            )))?;
        Ok(BindOutcome::Created(credentials))
    }

    /// The stored binding, `None` when there is none.
    ///
    /// # Errors
    /// Vault refuses or cannot be asked.
    pub async fn binding(&self, id: &str, bid: &str) -> Result<Option<StoredBinding>, BindError> {
        let path = binding_path(id, bid);
        let secret = self
            .vault
            .read(&self.mount, &path)
            .await
            .map_err(BindError::provider(format!(
                "instance {id}, binding {bid}: reading {}/{path}",
                self.mount
            )))?;
        Ok(secret.data.map(|mut data| {
            let credentials = match data.remove("credentials") {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            data.remove("created_at");
            StoredBinding {
                credentials,
                attributes: data,
            }
        }))
    }

    /// Deletes the binding's secret. `false` when there was none (OSB 410).
    ///
    /// # Errors
    /// Vault refuses or cannot be asked.
    pub async fn unbind(&self, id: &str, bid: &str) -> Result<bool, BindError> {
        if self.binding(id, bid).await?.is_none() {
            return Ok(false);
        }
        let path = binding_path(id, bid);
        self.vault
            .delete_all(&self.mount, &path)
            .await
            .map_err(BindError::provider(format!(
                "instance {id}, binding {bid}: deleting {}/{path}",
                self.mount
            )))?;
        Ok(true)
    }

    /// The instance's secrets with every name in `names`: read from `{id}/credentials`,
    /// the missing ones generated and written with check-and-set, so two first binds at
    /// once agree on one value.
    async fn instance_secrets(
        &self,
        id: &str,
        names: &std::collections::BTreeSet<String>,
    ) -> Result<BTreeMap<String, String>, BindError> {
        let path = format!("{id}/credentials");
        let context = || format!("instance {id}: the secrets at {}/{path}", self.mount);
        let mut last = None;
        for _ in 0..CAS_ATTEMPTS {
            let current = self
                .vault
                .read(&self.mount, &path)
                .await
                .map_err(BindError::provider(context()))?;
            let mut data = current.data.unwrap_or_default();
            let missing: Vec<&String> = names.iter().filter(|n| !data.contains_key(*n)).collect();
            if !missing.is_empty() {
                for n in missing {
                    data.insert(n.clone(), Value::String(generate_secret()));
                }
                match self
                    .vault
                    .write(&self.mount, &path, &data, Some(current.version))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_conflict() => {
                        last = Some(e);
                        continue;
                    }
                    Err(e) => return Err(BindError::provider(context())(e)),
                }
            }
            return Ok(data
                .into_iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, s)
                })
                .collect());
        }
        Err(BindError::provider(context())(last.unwrap_or_else(|| {
            ProviderError::new("check-and-set kept failing; retry the bind")
        })))
    }
}

/// Where a binding's credentials are kept.
#[must_use]
pub fn binding_path(id: &str, bid: &str) -> String {
    format!("{id}/bindings/{bid}")
}

/// A fresh random secret of [`SECRET_LEN`] letters and digits.
#[must_use]
pub fn generate_secret() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(SECRET_LEN)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_alphanumeric_and_fresh() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), SECRET_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn request_attributes_hold_no_credentials() {
        let r = BindRequest {
            binding_id: "b".into(),
            service_id: "redis".into(),
            plan_id: "redis-small".into(),
            app_guid: Some("app".into()),
            bind_resource: None,
            parameters: None,
        };
        let a = r.attributes();
        assert_eq!(a["app_guid"], json!("app"));
        assert!(!a.contains_key("credentials"));
        assert_eq!(binding_path("i", "b"), "i/bindings/b");
    }
}
