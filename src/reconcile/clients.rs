//! Loading the Foundation and reaching its Director and Vault: [`Director`] and
//! [`SecretStore`] over the `bosh` and `vault` providers' HTTP clients.
//!
//! Connection settings follow the same precedence as `anvil apply`: the Foundation's
//! `director` and `vault` blocks first, then the `BOSH_*` and `VAULT_*` environment
//! variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::matcher::Catalog;
use super::{Director, OpError, ReconcileError, Secret, SecretStore};
use crate::model::foundation::{self, DEFAULT_MOUNT};
use crate::providers::bosh::client as bosh;
use crate::providers::vault::client as vault;
use crate::spec::{self, DocumentBody, LoadOptions};

/// What the reconciler takes from a Foundation document.
#[derive(Debug, Clone)]
pub struct Foundation {
    /// `metadata.name`.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// The plans to match against.
    pub catalog: Catalog,
    /// The Director's typed settings from `director` (unset fields: `BOSH_*`).
    pub bosh: bosh::Settings,
    /// Vault's typed settings from `vault` (unset fields: `VAULT_*`).
    pub vault: vault::Settings,
    /// The KV v2 mount holding the index and instance secrets.
    pub mount: String,
}

/// The environment variables whose names and values are UTF-8 (as
/// [`std::env::vars_os`] gives them); the others are skipped, since no Foundation
/// variable can name them, instead of panicking as [`std::env::vars`] would.
pub fn utf8_env(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Loads the one Foundation document under `path` (a file or a directory), with
/// `${env:NAME}` read from `env`.
///
/// # Errors
/// The spec does not load (every problem located), or it holds no Foundation or more
/// than one.
pub fn load_foundation(
    path: &Path,
    env: BTreeMap<String, String>,
) -> Result<Foundation, ReconcileError> {
    let spec = spec::load(
        &[path.to_path_buf()],
        &LoadOptions {
            vars: BTreeMap::new(),
            env,
        },
    )?;
    let mut found = Vec::new();
    for doc in &spec.documents {
        if let DocumentBody::Foundation(f) = &doc.body {
            found.push((doc, f));
        }
    }
    match found.as_slice() {
        [(doc, f)] => {
            let (b, v) = foundation::provider_settings(f);
            // The same typed settings `anvil apply` gives the bosh and vault providers.
            let typed = |what: &str, m: serde_json::Map<String, Value>| {
                ReconcileError::Foundation(format!(
                    "{}: the {what} settings do not fit ({m_keys}); fix the Foundation",
                    doc.file.display(),
                    m_keys = m.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            };
            let bosh: bosh::Settings = serde_json::from_value(Value::Object(b.clone()))
                .map_err(|_| typed("director", b))?;
            let vault: vault::Settings =
                serde_json::from_value(Value::Object(v.clone())).map_err(|_| typed("vault", v))?;
            Ok(Foundation {
                name: f.metadata.name.clone(),
                file: doc.file.clone(),
                catalog: Catalog::from_foundation(doc, f),
                bosh,
                vault,
                mount: f
                    .vault
                    .mount
                    .clone()
                    .unwrap_or_else(|| DEFAULT_MOUNT.to_string()),
            })
        }
        [] => Err(ReconcileError::Foundation(format!(
            "{}: no `kind: Foundation` document found; --foundation must point at the \
             Foundation whose catalog deployments are matched against",
            path.display()
        ))),
        many => Err(ReconcileError::Foundation(format!(
            "{}: {} Foundation documents ({}); reconcile one Foundation at a time",
            path.display(),
            many.len(),
            many.iter()
                .map(|(d, f)| format!("`{}` in {}", f.metadata.name, d.file.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The Director client as a [`Director`].
pub struct BoshDirector(pub bosh::Client);

#[async_trait]
impl Director for BoshDirector {
    async fn deployment_names(&self) -> Result<Vec<String>, OpError> {
        self.0.deployment_names().await
    }

    async fn manifest(&self, name: &str) -> Result<Option<String>, OpError> {
        self.0.manifest(name).await
    }
}

/// The Vault client on one KV v2 mount as a [`SecretStore`].
pub struct VaultStore {
    pub client: vault::Client,
    pub mount: String,
}

#[async_trait]
impl SecretStore for VaultStore {
    async fn read(&self, path: &str) -> Result<Secret, OpError> {
        self.client.read(&self.mount, path).await
    }

    async fn write(
        &self,
        path: &str,
        data: &Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<u64, OpError> {
        self.client.write(&self.mount, path, data, cas).await
    }

    async fn list(&self, path: &str) -> Result<Vec<String>, OpError> {
        self.client.list(&self.mount, path).await
    }

    async fn delete(&self, path: &str) -> Result<(), OpError> {
        self.client.delete_all(&self.mount, path).await
    }
}

/// Connects to the Foundation's Director and Vault (settings from the document first,
/// then `env`) and checks that the mount is KV v2.
///
/// # Errors
/// Settings are missing, or the Director or Vault cannot be reached; the message names
/// the variable or endpoint.
pub async fn connect(
    f: &Foundation,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(BoshDirector, VaultStore), ReconcileError> {
    let bosh_config = bosh::Config::resolve(&f.bosh, &env).map_err(|e| {
        ReconcileError::Connect(format!(
            "{}: the Director: {e} (or set `director:` in the Foundation)",
            f.file.display()
        ))
    })?;
    let vault_config = vault::Config::resolve(&f.vault, &env).map_err(|e| {
        ReconcileError::Connect(format!(
            "{}: Vault: {e} (or set `vault.addr` in the Foundation)",
            f.file.display()
        ))
    })?;
    let (director, store) = tokio::join!(
        bosh::Client::connect(&bosh_config),
        vault::Client::connect(&vault_config)
    );
    let director = director.map_err(|e| ReconcileError::Connect(e.message))?;
    let client = store.map_err(|e| ReconcileError::Connect(e.message))?;
    client
        .check_kv2_mount(&f.mount)
        .await
        .map_err(|e| ReconcileError::Connect(e.message))?;
    Ok((
        BoshDirector(director),
        VaultStore {
            client,
            mount: f.mount.clone(),
        },
    ))
}
