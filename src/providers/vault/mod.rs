//! The `vault` provider: secrets in a Vault KV v2 engine, one file per resource type.
//!
//! - [`secret::Secret`] (`vault_secret`) owns one secret: create and update write
//!   `data/<path>` (a full replace), delete removes all versions (`DELETE
//!   metadata/<path>`), read compares the real data by fingerprint so drift shows up as a
//!   change. `data` is sensitive.
//! - [`index_entry::IndexEntry`] (`vault_index_entry`) owns one key of a shared index
//!   secret (Blacksmith's `db` map of instance id → object). Writes go through
//!   [`index::read_modify_write`], the one check-and-set read-modify-write of an index
//!   (the reconciler uses it too), so concurrent writers never lose an entry.
//!
//! Configuration is typed ([`client::Settings`]: `address`, `token`, `role_id`,
//! `secret_id`, `cacert`, `namespace`) from a `providers:` entry or a Foundation's
//! `vault` block; unset fields fall back to `VAULT_ADDR`, `VAULT_TOKEN` or
//! `VAULT_ROLE_ID` + `VAULT_SECRET_ID`, `VAULT_CACERT`, `VAULT_NAMESPACE`, read on first
//! use, so specs without vault resources never need them. Each mount is checked to be
//! KV v2 on first use. The HTTP client is [`client`], a thin reqwest client.

pub mod client;
pub mod index;
pub mod index_entry;
pub mod secret;

use super::resource::{Context, Typed};
use super::ProviderError;
use client::{Client, Config, Settings};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{Mutex, OnceCell};

/// The mount used when a resource sets none.
pub const DEFAULT_MOUNT: &str = "secret";

/// How many vault operations run at once.
const CONCURRENCY: usize = 10;

/// The `vault` provider with its resource types, configured from the environment.
#[must_use]
pub fn provider() -> Typed<VaultContext> {
    with_context(VaultContext::new())
}

/// The `vault` provider over a given context (library use and tests).
#[must_use]
pub fn with_context(ctx: VaultContext) -> Typed<VaultContext> {
    Typed::new("vault", ctx, CONCURRENCY)
        .with(secret::Secret)
        .with(index_entry::IndexEntry)
}

/// The `vault` provider as a type (what [`provider`] returns).
pub type VaultProvider = Typed<VaultContext>;

impl VaultProvider {
    /// The provider with an explicit configuration (library use and tests).
    #[must_use]
    pub fn with_config(config: Config) -> VaultProvider {
        with_context(VaultContext::with_config(config))
    }

    /// Sets (`Some`) or removes (`None`) one key of an index secret, as the
    /// `vault_index_entry` type does (library use and tests). Returns the version.
    ///
    /// # Errors
    /// Vault refuses, or check-and-set kept failing.
    pub async fn index_set(
        &self,
        mount: &str,
        path: &str,
        key: &str,
        value: Option<&Value>,
    ) -> Result<u64, ProviderError> {
        self.context().index_set(mount, path, key, value, &[]).await
    }
}

/// One configured Vault: its settings, the client made from them on first use, the
/// mounts checked to be KV v2, and the group-commit queues of its index secrets.
pub struct VaultContext {
    /// Explicit configuration; `None` resolves `settings` and the environment.
    config: Option<Config>,
    settings: Settings,
    client: OnceCell<Client>,
    checked_mounts: Mutex<HashSet<String>>,
    /// Group commit and shared reads per index secret (mount, path).
    indexes: std::sync::Mutex<HashMap<(String, String), Arc<index::IndexQueue>>>,
}

impl Default for VaultContext {
    fn default() -> Self {
        VaultContext::new()
    }
}

impl Context for VaultContext {
    fn configure(settings: &Map<String, Value>) -> Result<VaultContext, ProviderError> {
        let settings: Settings =
            serde_json::from_value(Value::Object(settings.clone())).map_err(|e| {
                ProviderError::invalid(format!(
                    "vault provider settings: {e}; the keys are address, token, role_id, \
                     secret_id, cacert and namespace"
                ))
            })?;
        Ok(VaultContext {
            settings,
            ..VaultContext::new()
        })
    }
}

impl VaultContext {
    /// A context configured from the environment on first use.
    #[must_use]
    pub fn new() -> VaultContext {
        VaultContext {
            config: None,
            settings: Settings::default(),
            client: OnceCell::new(),
            checked_mounts: Mutex::new(HashSet::new()),
            indexes: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A context with an explicit configuration (library use and tests).
    #[must_use]
    pub fn with_config(config: Config) -> VaultContext {
        VaultContext {
            config: Some(config),
            ..VaultContext::new()
        }
    }

    /// The client, connected on first use, after checking that `mount` is KV v2.
    ///
    /// # Errors
    /// The configuration is incomplete, or Vault cannot be reached, or the mount is not
    /// KV v2.
    pub async fn client_for(&self, mount: &str) -> Result<&Client, ProviderError> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let config = match &self.config {
                    Some(c) => c.clone(),
                    None => Config::resolve(&self.settings, crate::providers::env_var)?,
                };
                Client::connect(&config).await
            })
            .await?;
        let mut checked = self.checked_mounts.lock().await;
        if !checked.contains(mount) {
            client.check_kv2_mount(mount).await?;
            checked.insert(mount.to_string());
        }
        Ok(client)
    }

    fn index_queue(&self, mount: &str, path: &str) -> Arc<index::IndexQueue> {
        lock_plain(&self.indexes)
            .entry((mount.to_string(), path.to_string()))
            .or_default()
            .clone()
    }
}

/// Locks a std mutex, going on with the data if a holder panicked.
fn lock_plain<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn str_attr<'a>(attrs: &'a BTreeMap<String, Value>, name: &str) -> Result<&'a str, ProviderError> {
    attrs.get(name).and_then(Value::as_str).ok_or_else(|| {
        ProviderError::invalid(format!(
            "attribute `{name}` must be a string; set it in the spec"
        ))
    })
}

fn map_attr<'a>(
    attrs: &'a BTreeMap<String, Value>,
    name: &str,
) -> Result<&'a Map<String, Value>, ProviderError> {
    attrs.get(name).and_then(Value::as_object).ok_or_else(|| {
        ProviderError::invalid(format!(
            "attribute `{name}` must be a map; set it in the spec"
        ))
    })
}

fn mount_attr(attrs: &BTreeMap<String, Value>) -> &str {
    attrs
        .get("mount")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MOUNT)
}

fn clean_path(p: &str) -> &str {
    p.trim_matches('/')
}

fn version_outputs(version: u64) -> BTreeMap<String, Value> {
    let mut outputs = BTreeMap::new();
    outputs.insert("version".to_string(), Value::from(version));
    outputs
}

/// What an import ID looks like: `[MOUNT:]PATH` for a whole secret,
/// `[MOUNT:]PATH#KEY` for one key of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdForm {
    Secret,
    IndexKey,
}

/// An import ID of a `ty` (named in errors) in the given form. Returns (mount given,
/// path, key).
fn parse_import_id<'a>(
    ty: &str,
    form: IdForm,
    id: &'a str,
) -> Result<(Option<&'a str>, &'a str, Option<&'a str>), ProviderError> {
    let example = match form {
        IdForm::Secret => "[MOUNT:]PATH, e.g. `app/creds` or `secret:app/creds`",
        IdForm::IndexKey => "[MOUNT:]PATH#KEY, e.g. `db#6f0c1e2a` or `secret:db#6f0c1e2a`",
    };
    let bad = |why: &str| {
        ProviderError::invalid(format!(
            "import ID `{id}` {why}; a {ty} is imported by {example}"
        ))
    };
    let (rest, key) = match (form, id.rsplit_once('#')) {
        (IdForm::IndexKey, Some((rest, key))) if !key.is_empty() => (rest, Some(key)),
        (IdForm::IndexKey, _) => return Err(bad("names no key (`#KEY` is missing)")),
        (IdForm::Secret, Some(_)) => return Err(bad("contains `#`, which only index entries use")),
        (IdForm::Secret, None) => (id, None),
    };
    let (mount, path) = match rest.split_once(':') {
        Some((m, p)) => (Some(m.trim_matches('/')), p),
        None => (None, rest),
    };
    let path = clean_path(path);
    if path.is_empty() || mount.is_some_and(str::is_empty) {
        return Err(bad("has an empty mount or path"));
    }
    Ok((mount, path, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Provider;
    use serde_json::json;

    #[test]
    fn import_ids_parse_or_say_what_they_should_be() {
        let p = |ty: &str, id| {
            let form = if ty == "vault_secret" {
                IdForm::Secret
            } else {
                IdForm::IndexKey
            };
            parse_import_id(
                if ty == "vault_secret" {
                    "vault_secret"
                } else {
                    "vault_index_entry"
                },
                form,
                id,
            )
        };
        assert_eq!(
            p("vault_secret", "app/creds").unwrap(),
            (None, "app/creds", None)
        );
        assert_eq!(
            p("vault_secret", "kv:/app/creds/").unwrap(),
            (Some("kv"), "app/creds", None)
        );
        assert_eq!(
            p("vault_index_entry", "secret:db#i1").unwrap(),
            (Some("secret"), "db", Some("i1"))
        );
        for (ty, id, want) in [
            ("vault_index_entry", "db", "`#KEY` is missing"),
            ("vault_index_entry", "db#", "`#KEY` is missing"),
            ("vault_secret", "db#i1", "only index entries"),
            ("vault_secret", "", "empty mount or path"),
            ("vault_secret", ":x", "empty mount or path"),
        ] {
            let e = p(ty, id).unwrap_err().message;
            assert!(e.contains(want) && e.contains("[MOUNT:]PATH"), "{id}: {e}");
        }
        let v = provider();
        let attrs = |j: Value| j.as_object().unwrap().clone().into_iter().collect();
        assert_eq!(
            v.import_id("vault_secret", &attrs(json!({"path": "/app/creds"}))),
            Some("secret:app/creds".into())
        );
        assert_eq!(
            v.import_id(
                "vault_index_entry",
                &attrs(json!({"path": "db", "mount": "kv", "key": "i1"}))
            ),
            Some("kv:db#i1".into())
        );
    }

    #[test]
    fn schemas_mark_data_sensitive() {
        let s = secret::schema();
        assert!(s.attributes["data"].sensitive);
        assert!(s.attributes["path"].force_new);
        let i = index_entry::schema();
        assert!(!i.attributes["value"].sensitive);
        assert!(i.attributes["key"].force_new);
    }

    #[test]
    fn settings_are_typed_and_unknown_keys_named() {
        let ok = json!({"address": "http://127.0.0.1:8200", "token": "t", "namespace": "ns"});
        let c = VaultContext::configure(ok.as_object().unwrap()).unwrap();
        assert_eq!(c.settings.address.as_deref(), Some("http://127.0.0.1:8200"));
        assert!(
            !format!("{:?}", c.settings).contains("\"t\""),
            "token never in Debug"
        );
        let bad = json!({"adress": "http://x"});
        let e = VaultContext::configure(bad.as_object().unwrap())
            .err()
            .unwrap();
        assert!(
            e.message.contains("adress") && e.message.contains("address"),
            "{}",
            e.message
        );
    }
}
