//! A thin Vault KV v2 client over reqwest (rustls), covering only the calls the `vault`
//! provider makes: AppRole login, the mount check, read, write with check-and-set and
//! delete-all-versions (and list, for the reconciler's backups).
//!
//! Kept instead of `vaultrs` for the measured reasons in docs/ARCHITECTURE.md ("Why not
//! vaultrs"): anvil needs six endpoints, and owning the requests lets every error name
//! the method, path and `VAULT_ADDR`, carry an [`ErrorKind`] and say what to do. TLS is rustls; `VAULT_CACERT` adds
//! a root certificate. There is no insecure fallback.

use crate::providers::{ErrorKind, ProviderError};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed Vault call or bad client configuration: a [`ProviderError`] whose kind
/// comes from the HTTP status (a check-and-set mismatch is [`ErrorKind::Conflict`]) and
/// whose endpoint is the request's method and URL.
pub type VaultError = ProviderError;

fn config_error(message: impl Into<String>) -> VaultError {
    ProviderError::invalid(message)
}

/// The typed settings of a `vault` provider instance, as a `providers:` entry (or a
/// Foundation's `vault` block) gives them. Unset fields fall back to the `VAULT_*`
/// environment variables.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Vault address (else `VAULT_ADDR`).
    pub address: Option<String>,
    /// A token (else `VAULT_TOKEN`); write `${env:NAME}`, not the token.
    pub token: Option<String>,
    /// AppRole login (else `VAULT_ROLE_ID` / `VAULT_SECRET_ID`).
    pub role_id: Option<String>,
    pub secret_id: Option<String>,
    /// A PEM CA file (else `VAULT_CACERT`).
    pub cacert: Option<String>,
    /// The Vault Enterprise namespace (else `VAULT_NAMESPACE`).
    pub namespace: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "(redacted)"))
            .field("role_id", &self.role_id)
            .field("secret_id", &self.secret_id.as_ref().map(|_| "(redacted)"))
            .field("cacert", &self.cacert)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Settings {
    /// The value standing for the environment variable `name`, if set here.
    fn var(&self, name: &str) -> Option<String> {
        let v = match name {
            "VAULT_ADDR" => &self.address,
            "VAULT_TOKEN" => &self.token,
            "VAULT_ROLE_ID" => &self.role_id,
            "VAULT_SECRET_ID" => &self.secret_id,
            "VAULT_CACERT" => &self.cacert,
            "VAULT_NAMESPACE" => &self.namespace,
            _ => &None,
        };
        v.clone().filter(|v| !v.trim().is_empty())
    }
}

/// Where and as whom to reach Vault. `Debug` never shows the token or secret id.
#[derive(Clone, Default)]
pub struct Config {
    /// `VAULT_ADDR`, e.g. `https://vault.example:8200`, without a trailing slash.
    pub addr: String,
    /// `VAULT_TOKEN`.
    pub token: Option<String>,
    /// `VAULT_ROLE_ID` and `VAULT_SECRET_ID`, used when no token is given.
    pub approle: Option<(String, String)>,
    /// `VAULT_CACERT`: a PEM file added as a root certificate.
    pub cacert: Option<String>,
    /// `VAULT_NAMESPACE`, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "(redacted)"))
            .field(
                "approle",
                &self.approle.as_ref().map(|(r, _)| (r, "(redacted)")),
            )
            .field("cacert", &self.cacert)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Config {
    /// The configuration from typed settings, unset fields read through `env` (the
    /// environment).
    ///
    /// # Errors
    /// As [`Config::from_env`].
    pub fn resolve(
        settings: &Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, VaultError> {
        Config::from_vars(|n| settings.var(n).or_else(|| env(n)))
    }

    /// Reads the configuration from the environment.
    ///
    /// # Errors
    /// `VAULT_ADDR` is unset, or neither `VAULT_TOKEN` nor both AppRole variables are.
    pub fn from_env() -> Result<Config, VaultError> {
        Config::from_vars(crate::providers::env_var)
    }

    /// Builds a configuration from a variable lookup (the environment, or a map in tests).
    ///
    /// # Errors
    /// As [`Config::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, VaultError> {
        let Some(addr) = var("VAULT_ADDR") else {
            return Err(config_error(
                "VAULT_ADDR is not set: a vault resource is used, so set VAULT_ADDR to the \
                 Vault server's address (e.g. https://vault.example:8200) and VAULT_TOKEN \
                 (or VAULT_ROLE_ID and VAULT_SECRET_ID)",
            ));
        };
        let addr = addr.trim().trim_end_matches('/').to_string();
        let token = var("VAULT_TOKEN");
        let approle = match (var("VAULT_ROLE_ID"), var("VAULT_SECRET_ID")) {
            (Some(r), Some(s)) => Some((r, s)),
            _ => None,
        };
        if token.is_none() && approle.is_none() {
            return Err(config_error(format!(
                "no Vault credentials for {addr}: set VAULT_TOKEN, or VAULT_ROLE_ID and \
                 VAULT_SECRET_ID for AppRole login"
            )));
        }
        Ok(Config {
            addr,
            token,
            approle,
            cacert: var("VAULT_CACERT"),
            namespace: var("VAULT_NAMESPACE"),
        })
    }
}

/// A secret as read: its data (None when absent or deleted) and its current version
/// (0 when the key was never written).
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    pub data: Option<Map<String, Value>>,
    pub version: u64,
}

/// A logged-in KV v2 client. (No `Debug`: it holds the token.)
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    addr: String,
    token: String,
    namespace: Option<String>,
}

impl Client {
    /// Builds the HTTP client and logs in with AppRole when no token is configured.
    ///
    /// # Errors
    /// The CA file cannot be read or parsed, or AppRole login fails.
    pub async fn connect(config: &Config) -> Result<Client, VaultError> {
        let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(path) = &config.cacert {
            let pem = std::fs::read(path).map_err(|e| {
                config_error(format!(
                    "cannot read VAULT_CACERT {path}: {e}; point it at a PEM file"
                ))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                config_error(format!("VAULT_CACERT {path} is not a PEM certificate: {e}"))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client for Vault: {e}")))?;
        let mut client = Client {
            http,
            addr: config.addr.clone(),
            token: config.token.clone().unwrap_or_default(),
            namespace: config.namespace.clone(),
        };
        if config.token.is_none() {
            if let Some((role_id, secret_id)) = &config.approle {
                let body = json!({ "role_id": role_id, "secret_id": secret_id });
                let (_, answer) = client
                    .call(Method::POST, "auth/approle/login", Some(&body), &[])
                    .await?;
                let token = answer
                    .as_ref()
                    .and_then(|a| a.pointer("/auth/client_token"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        client.error(
                            &Method::POST,
                            "auth/approle/login",
                            None,
                            "the answer has no auth.client_token; check VAULT_ROLE_ID and \
                             VAULT_SECRET_ID",
                        )
                    })?;
                client.token = token.to_string();
            }
        }
        Ok(client)
    }

    /// `VAULT_ADDR` as configured.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn error(&self, method: &Method, path: &str, status: Option<u16>, what: &str) -> VaultError {
        let e = ProviderError::of(
            status.map_or(ErrorKind::Permanent, ErrorKind::from_status),
            format!(
                "vault {method} /v1/{path} (VAULT_ADDR={}): {what}",
                self.addr
            ),
        )
        .at(format!("{method} {}/v1/{path}", self.addr));
        match status {
            Some(s) => e.with_status(s),
            None => e,
        }
    }

    /// One request. Returns the status and the JSON body (None when empty). Statuses in
    /// `accept` are returned as they are; other non-2xx statuses become errors.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        accept: &[StatusCode],
    ) -> Result<(StatusCode, Option<Value>), VaultError> {
        let url = format!("{}/v1/{path}", self.addr);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("X-Vault-Request", "true");
        if !self.token.is_empty() {
            req = req.header("X-Vault-Token", &self.token);
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            let mut err = self.error(
                &method,
                path,
                None,
                &format!(
                    "request failed: {e}; check that VAULT_ADDR is right and Vault is reachable"
                ),
            );
            err.kind = ErrorKind::Retryable;
            err
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            let mut err = self.error(
                &method,
                path,
                Some(status.as_u16()),
                &format!("reading the answer failed: {e}"),
            );
            err.kind = ErrorKind::Retryable;
            err
        })?;
        let json: Option<Value> = if text.trim().is_empty() {
            None
        } else {
            serde_json::from_str(&text).ok()
        };
        if status.is_success() || accept.contains(&status) {
            return Ok((status, json));
        }
        let errors = json
            .as_ref()
            .and_then(|j| j.get("errors"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let code = status.as_u16();
        let what = match code {
            403 => format!(
                "permission denied: check VAULT_TOKEN / AppRole for {} ({errors})",
                self.addr
            ),
            400 if is_cas_mismatch(&errors) => format!(
                "check-and-set mismatch: the secret changed while anvil wrote it ({errors})"
            ),
            404 => format!("not found ({errors}); check the mount and path"),
            _ => format!("Vault answered {status}: {errors}"),
        };
        let mut err = self.error(&method, path, Some(code), &what);
        if code == 400 && is_cas_mismatch(&errors) {
            err.kind = ErrorKind::Conflict;
        }
        Err(err)
    }

    /// Checks that `mount` is a KV version 2 secrets engine.
    ///
    /// # Errors
    /// The mount is missing, is not KV v2, or Vault cannot be asked.
    pub async fn check_kv2_mount(&self, mount: &str) -> Result<(), VaultError> {
        let path = format!("sys/internal/ui/mounts/{mount}");
        let answer = match self.call(Method::GET, &path, None, &[]).await {
            Ok((_, a)) => a,
            Err(e) if matches!(e.status, Some(403) | Some(404)) => {
                return Err(VaultError {
                    message: format!(
                        "mount `{mount}` at VAULT_ADDR={} is missing or not readable: {}; \
                         enable a KV v2 engine there (`vault secrets enable -path={mount} \
                         kv-v2`) or set the resource's `mount` attribute",
                        self.addr, e.message
                    ),
                    ..e
                })
            }
            Err(e) => return Err(e),
        };
        let data = answer.as_ref().and_then(|a| a.get("data"));
        let ty = data.and_then(|d| d.get("type")).and_then(Value::as_str);
        let version = data
            .and_then(|d| d.pointer("/options/version"))
            .and_then(Value::as_str);
        if ty == Some("kv") && version == Some("2") {
            Ok(())
        } else {
            Err(self.error(
                &Method::GET,
                &path,
                Some(200),
                &format!(
                    "mount `{mount}` at VAULT_ADDR={} is not KV version 2 (type {}, version {}); \
                     the vault provider needs a kv-v2 mount: upgrade it with `vault kv \
                     enable-versioning {mount}/` or set `mount` to a kv-v2 mount",
                    self.addr,
                    ty.unwrap_or("unknown"),
                    version.unwrap_or("1")
                ),
            ))
        }
    }

    /// Reads the latest version of `<mount>/data/<path>`.
    ///
    /// # Errors
    /// Vault cannot be asked or refuses.
    pub async fn read(&self, mount: &str, path: &str) -> Result<Secret, VaultError> {
        let api = api_path(mount, "data", path)?;
        let (status, answer) = self
            .call(Method::GET, &api, None, &[StatusCode::NOT_FOUND])
            .await?;
        let version = answer
            .as_ref()
            .and_then(|a| a.pointer("/data/metadata/version"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let data = if status == StatusCode::NOT_FOUND {
            None
        } else {
            answer
                .as_ref()
                .and_then(|a| a.pointer("/data/data"))
                .and_then(Value::as_object)
                .cloned()
        };
        Ok(Secret { data, version })
    }

    /// Writes `data` as a new version of `<mount>/data/<path>` (a full replace), with
    /// check-and-set when `cas` is given. Returns the new version.
    ///
    /// # Errors
    /// Vault refuses (a CAS mismatch is [`ErrorKind::Conflict`]) or cannot be asked.
    pub async fn write(
        &self,
        mount: &str,
        path: &str,
        data: &Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<u64, VaultError> {
        let api = api_path(mount, "data", path)?;
        let body = match cas {
            Some(n) => json!({ "options": { "cas": n }, "data": data }),
            None => json!({ "data": data }),
        };
        let (_, answer) = self.call(Method::POST, &api, Some(&body), &[]).await?;
        Ok(answer
            .as_ref()
            .and_then(|a| a.pointer("/data/version"))
            .and_then(Value::as_u64)
            .unwrap_or(0))
    }

    /// The keys directly under `<mount>/<path>` (`GET metadata/<path>?list=true`);
    /// folders end in `/`. Empty when there is nothing there (Vault answers 404).
    ///
    /// # Errors
    /// Vault refuses or cannot be asked.
    pub async fn list(&self, mount: &str, path: &str) -> Result<Vec<String>, VaultError> {
        let api = format!("{}?list=true", api_path(mount, "metadata", path)?);
        let (status, answer) = self
            .call(Method::GET, &api, None, &[StatusCode::NOT_FOUND])
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        Ok(answer
            .as_ref()
            .and_then(|a| a.pointer("/data/keys"))
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Deletes all versions and the metadata of `<mount>/<path>`. Absent is fine.
    ///
    /// # Errors
    /// Vault refuses or cannot be asked.
    pub async fn delete_all(&self, mount: &str, path: &str) -> Result<(), VaultError> {
        let api = api_path(mount, "metadata", path)?;
        self.call(Method::DELETE, &api, None, &[StatusCode::NOT_FOUND])
            .await?;
        Ok(())
    }
}

/// The API path `<mount>/<kind>/<path>` with every segment percent-encoded. Paths are
/// refused when a segment is `.` or `..`, or anything holds a control character: the
/// request could otherwise reach a different secret than the one named.
fn api_path(mount: &str, kind: &str, path: &str) -> Result<String, VaultError> {
    let bad = |what: &str| {
        ProviderError::invalid(format!(
            "`{mount}/{path}` is not a usable secret path: {what}; use plain `/`-separated names"
        ))
    };
    let mut out = Vec::new();
    for (i, part) in [mount, path].iter().enumerate() {
        for seg in part.trim_matches('/').split('/') {
            if seg.is_empty() && !(i == 1 && part.trim_matches('/').is_empty()) {
                return Err(bad("it has an empty segment"));
            }
            if seg == "." || seg == ".." {
                return Err(bad("`.` and `..` segments are not allowed"));
            }
            if seg.chars().any(char::is_control) {
                return Err(bad("it holds a control character"));
            }
            if !seg.is_empty() {
                out.push(crate::providers::url_segment(seg));
            }
        }
        if i == 0 {
            out.push(kind.to_string());
        }
    }
    Ok(out.join("/"))
}

fn is_cas_mismatch(errors: &str) -> bool {
    errors.contains("check-and-set parameter did not match")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn api_paths_are_encoded_and_never_escape_the_secret() {
        assert_eq!(
            api_path("secret", "data", "a/b").unwrap(),
            "secret/data/a/b"
        );
        assert_eq!(
            api_path("secret", "metadata", "").unwrap(),
            "secret/metadata"
        );
        assert_eq!(
            api_path("secret", "data", "x?y=1#z").unwrap(),
            "secret/data/x%3Fy%3D1%23z"
        );
        assert_eq!(
            api_path("kv/team", "data", "/db/").unwrap(),
            "kv/team/data/db"
        );
        for bad in ["q/../x", "./x", "a//b", "a\nb"] {
            assert!(api_path("secret", "data", bad).is_err(), "{bad}");
        }
        assert!(api_path("..", "data", "x").is_err());
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn missing_addr_names_the_variable() {
        let e = Config::from_vars(vars(&[("VAULT_TOKEN", "t")])).unwrap_err();
        assert!(e.message.contains("VAULT_ADDR"), "{}", e.message);
    }

    #[test]
    fn needs_token_or_approle() {
        let e = Config::from_vars(vars(&[("VAULT_ADDR", "http://x")])).unwrap_err();
        assert!(e.message.contains("VAULT_TOKEN"), "{}", e.message);
        let c = Config::from_vars(vars(&[
            ("VAULT_ADDR", "http://x/"),
            ("VAULT_ROLE_ID", "r"),
            ("VAULT_SECRET_ID", "s"),
        ]))
        .unwrap();
        assert_eq!(c.addr, "http://x");
        assert_eq!(c.approle, Some(("r".into(), "s".into())));
    }

    #[test]
    fn recognises_cas_mismatch() {
        assert!(is_cas_mismatch(
            "check-and-set parameter did not match the current version"
        ));
        assert!(!is_cas_mismatch(
            "check-and-set parameter required for this call"
        ));
    }
}
