//! The `vault://MOUNT/PATH` state URL and a minimal Vault KV v2 client for the Vault
//! state backend.
//!
//! The `state` module imports nothing from the rest of anvil (not `providers`), so it has
//! its own small reqwest client: check the token and that the mount is KV v2, read a
//! secret's data and version, write with check-and-set, list, delete all versions.
//! Configuration comes from the environment like the `vault` CLI: `VAULT_ADDR`,
//! `VAULT_TOKEN`, `VAULT_NAMESPACE` (sent as `X-Vault-Namespace`) and `VAULT_CACERT` (a
//! PEM root certificate added to rustls' roots; there is no insecure mode).
//!
//! The token is never part of a message, a `Debug` output or a URL: errors name the
//! state URL, `VAULT_ADDR` and the API path, never the token.

use std::fmt;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take (an unreachable Vault should fail fast).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything but unreserved characters is encoded in one path segment, so no name can
/// reach another path (`/`, `?`, `#`, `%` all encoded).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']')
    .add(b'@')
    .add(b':')
    .add(b';')
    .add(b'=')
    .add(b'&')
    .add(b'+')
    .add(b',')
    .add(b'$');

/// What kind of failure a [`KvError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvErrorKind {
    /// The `vault://` URL itself is malformed.
    BadUrl,
    /// The environment does not say where or as whom to reach Vault.
    Config,
    /// Vault could not be reached or its answer not read.
    Unreachable,
    /// Vault refused the token (403).
    Denied,
    /// The mount is missing or is not a KV version 2 engine.
    NotKv2,
    /// A check-and-set write found another version than expected.
    CasMismatch,
    /// Any other refusal or unexpected answer, with its HTTP status.
    Http(u16),
}

/// Why a Vault state URL is unusable or a Vault call failed: what happened (naming the
/// endpoint, never the token) and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state URL {url}: {detail}; {hint}")]
pub struct KvError {
    /// What kind of failure.
    pub kind: KvErrorKind,
    /// The state URL (anything that looks like credentials removed).
    pub url: String,
    /// What happened, naming `METHOD VAULT_ADDR/v1/PATH` when Vault was asked.
    pub detail: String,
    /// What the user can do about it.
    pub hint: String,
}

impl KvError {
    fn new(
        kind: KvErrorKind,
        url: &str,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        KvError {
            kind,
            url: url.to_string(),
            detail: detail.into(),
            hint: hint.into(),
        }
    }

    /// Whether repeating the same call may succeed (transport errors, 429, 5xx).
    pub fn retryable(&self) -> bool {
        match self.kind {
            KvErrorKind::Unreachable => true,
            KvErrorKind::Http(status) => status == 429 || status >= 500,
            _ => false,
        }
    }
}

const URL_HINT: &str = "use vault://MOUNT/PATH, e.g. vault://secret/anvil/state (the token comes from VAULT_TOKEN, the server from VAULT_ADDR)";

fn kv2_hint(mount: &str) -> String {
    format!(
        "the Vault state backend needs a KV version 2 mount: enable one (`vault secrets enable -path={mount} kv-v2`), upgrade a v1 mount (`vault kv enable-versioning {mount}/`) or name another mount in the URL"
    )
}

/// A parsed `vault://MOUNT/PATH` state URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultUrl {
    /// The URL as given (it never holds credentials: those are refused).
    pub url: String,
    /// The KV v2 mount, e.g. `secret`.
    pub mount: String,
    /// Path segments under the mount where workspaces live, e.g. `["anvil", "state"]`.
    pub prefix: Vec<String>,
}

impl VaultUrl {
    /// Parses `vault://MOUNT[/PATH...]`. The first segment is the mount; the rest is the
    /// prefix under which `<workspace>` secrets live.
    ///
    /// # Errors
    /// [`KvError::BadUrl`]: not `vault://`, no mount, empty/`.`/`..` segments, control
    /// characters, a query or fragment, or credentials in the URL.
    pub fn parse(url: &str) -> Result<VaultUrl, KvError> {
        let bad =
            |shown: &str, detail: &str| KvError::new(KvErrorKind::BadUrl, shown, detail, URL_HINT);
        let Some(rest) = url.strip_prefix("vault://") else {
            return Err(bad(url, "not a vault:// URL"));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((_, host)) = authority.rsplit_once('@') {
            // Whatever precedes '@' may be a token: never show it.
            let tail = &rest[authority.len()..];
            return Err(bad(
                &format!("vault://***@{host}{tail}"),
                "credentials do not belong in the URL (they would end up in shell history and logs)",
            ));
        }
        if rest.contains('?') || rest.contains('#') {
            return Err(bad(url, "a query (?) or fragment (#) is not supported"));
        }
        if rest.chars().any(char::is_control) {
            return Err(bad(url, "it holds a control character"));
        }
        let path = rest.trim_end_matches('/');
        if path.is_empty() {
            return Err(bad(url, "the mount is missing"));
        }
        let mut segs = Vec::new();
        for seg in path.split('/') {
            if seg.is_empty() {
                return Err(bad(
                    url,
                    "it has an empty path segment (`//` or a leading `/`)",
                ));
            }
            if seg == "." || seg == ".." {
                return Err(bad(url, "`.` and `..` segments are not allowed"));
            }
            segs.push(seg.to_string());
        }
        let mount = segs.remove(0);
        if ["sys", "auth", "cubbyhole", "identity"].contains(&mount.as_str()) {
            return Err(KvError::new(
                KvErrorKind::NotKv2,
                url,
                format!("`{mount}` is a Vault system path, not a KV v2 mount"),
                kv2_hint("secret"),
            ));
        }
        Ok(VaultUrl {
            url: url.to_string(),
            mount,
            prefix: segs,
        })
    }

    /// The secret path (under the mount, not encoded) of `name` below the prefix, e.g.
    /// `anvil/state/demo.lock`.
    pub fn key(&self, name: &str) -> String {
        let mut parts: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        parts.push(name);
        parts.join("/")
    }

    /// `MOUNT/data/PREFIX/*`, the paths a token needs (for messages).
    pub fn policy_paths(&self) -> String {
        let mut p = format!("{}/data/", self.mount);
        for s in &self.prefix {
            p.push_str(s);
            p.push('/');
        }
        format!(
            "{p}* and {}/metadata/{}*",
            self.mount,
            &p[self.mount.len() + 6..]
        )
    }
}

/// Where and as whom to reach Vault, from the environment.
#[derive(Clone, Default)]
pub struct KvConfig {
    /// `VAULT_ADDR` without a trailing slash.
    pub addr: String,
    /// `VAULT_TOKEN`.
    token: String,
    /// `VAULT_NAMESPACE`.
    pub namespace: Option<String>,
    /// `VAULT_CACERT`: a PEM file added as a root certificate.
    pub cacert: Option<String>,
}

impl fmt::Debug for KvConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvConfig")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .field("namespace", &self.namespace)
            .field("cacert", &self.cacert)
            .finish()
    }
}

impl KvConfig {
    /// Reads `VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_NAMESPACE`, `VAULT_CACERT` through `var`
    /// (the environment, or a map in tests); unset and blank are the same.
    ///
    /// # Errors
    /// [`KvError::Config`] when `VAULT_ADDR` or `VAULT_TOKEN` is missing or the address
    /// is not http(s).
    pub fn from_vars(url: &str, var: impl Fn(&str) -> Option<String>) -> Result<KvConfig, KvError> {
        let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let config = |detail: String| {
            KvError::new(
                KvErrorKind::Config,
                url,
                detail,
                "set VAULT_ADDR and VAULT_TOKEN (and VAULT_CACERT, VAULT_NAMESPACE if needed) in the environment",
            )
        };
        let Some(addr) = var("VAULT_ADDR") else {
            return Err(config(
                "VAULT_ADDR is not set; set it to the Vault server's address \
                 (e.g. https://vault.example:8200) and VAULT_TOKEN to a token"
                    .into(),
            ));
        };
        let addr = addr.trim().trim_end_matches('/').to_string();
        let scheme_ok = addr.starts_with("http://") || addr.starts_with("https://");
        if !scheme_ok || addr.contains('@') {
            // An address with '@' may hold credentials: do not echo it.
            let shown = if addr.contains('@') {
                "(redacted)"
            } else {
                addr.as_str()
            };
            return Err(config(format!(
                "VAULT_ADDR={shown} is not an http:// or https:// address without credentials; \
                 set it like https://vault.example:8200"
            )));
        }
        let Some(token) = var("VAULT_TOKEN") else {
            return Err(config(format!(
                "VAULT_TOKEN is not set; set it to a token for {addr} that may read and write the state secrets"
            )));
        };
        Ok(KvConfig {
            addr,
            token: token.trim().to_string(),
            namespace: var("VAULT_NAMESPACE"),
            cacert: var("VAULT_CACERT"),
        })
    }
}

/// A secret as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    /// The latest version's data; `None` when the key was never written or its latest
    /// version is deleted.
    pub data: Option<Value>,
    /// The key's current version; 0 when it was never written (or its metadata deleted),
    /// so `cas = version` is right for the next write either way.
    pub version: u64,
}

/// A KV v2 client bound to one state URL's mount.
#[derive(Clone)]
pub struct KvClient {
    http: reqwest::Client,
    /// `VAULT_CACERT`, kept to build [`KvClient::fresh`] copies.
    root: Option<reqwest::Certificate>,
    addr: String,
    token: String,
    namespace: Option<String>,
    /// The parsed state URL.
    pub url: VaultUrl,
}

impl fmt::Debug for KvClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvClient")
            .field("addr", &self.addr)
            .field("url", &self.url.url)
            .finish_non_exhaustive()
    }
}

impl KvClient {
    /// Builds the HTTP client (no request is made).
    ///
    /// # Errors
    /// [`KvError::Config`] when `VAULT_CACERT` cannot be read or parsed.
    pub fn new(url: VaultUrl, config: &KvConfig) -> Result<KvClient, KvError> {
        let cfg = |detail: String| {
            KvError::new(
                KvErrorKind::Config,
                &url.url,
                detail,
                "point VAULT_CACERT at the PEM CA certificate of the Vault server, or unset it",
            )
        };
        let mut root = None;
        if let Some(path) = &config.cacert {
            let pem = std::fs::read(path).map_err(|e| {
                cfg(format!(
                    "cannot read VAULT_CACERT {path}: {e}; point it at a PEM CA certificate"
                ))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                cfg(format!(
                    "VAULT_CACERT {path} is not a PEM certificate: {e}; point it at a PEM CA certificate"
                ))
            })?;
            root = Some(cert);
        }
        let http = http_client(root.as_ref())
            .map_err(|e| cfg(format!("cannot build the HTTP client for Vault: {e}")))?;
        Ok(KvClient {
            http,
            root,
            addr: config.addr.clone(),
            token: config.token.clone(),
            namespace: config.namespace.clone(),
            url,
        })
    }

    /// A copy with its own HTTP connection pool, for use on another tokio runtime (a
    /// pool's connections belong to the runtime that opened them).
    pub fn fresh(&self) -> KvClient {
        let mut c = self.clone();
        if let Ok(http) = http_client(self.root.as_ref()) {
            c.http = http;
        }
        c
    }

    fn endpoint(&self, method: &Method, api: &str) -> String {
        // The query (`?list=true`) is not part of what we show.
        let path = api.split('?').next().unwrap_or(api);
        format!("{method} {}/v1/{path}", self.addr)
    }

    /// One request: returns the status and the JSON body (`Null` when empty). Statuses
    /// in `accept` come back as they are; other non-2xx become errors.
    /// [`KvClient::call`] for a request without a body that may be repeated (GET,
    /// DELETE), retried with backoff while the failure is transient. Writes are not
    /// retried: a check-and-set write that may have landed cannot be repeated blindly.
    async fn call_retried(
        &self,
        method: Method,
        api: &str,
        accept: &[StatusCode],
    ) -> Result<(StatusCode, Value), KvError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(3)
            .with_jitter();
        (|| self.call(method.clone(), api, None, accept))
            .retry(backoff)
            .when(KvError::retryable)
            .await
    }

    async fn call(
        &self,
        method: Method,
        api: &str,
        body: Option<Vec<u8>>,
        accept: &[StatusCode],
    ) -> Result<(StatusCode, Value), KvError> {
        let url = format!("{}/v1/{api}", self.addr);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("X-Vault-Request", "true")
            .header("X-Vault-Token", &self.token);
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let unreachable = |e: reqwest::Error| {
            KvError::new(
                KvErrorKind::Unreachable,
                &self.url.url,
                format!(
                    "cannot reach Vault at {}: {}",
                    self.endpoint(&method, api),
                    // reqwest's message includes the URL, which holds no secret.
                    error_chain(&e)
                ),
                "check that VAULT_ADDR is right and Vault is running and reachable",
            )
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        let json: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        if status.is_success() || accept.contains(&status) {
            return Ok((status, json));
        }
        let errors = json
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        if status == StatusCode::FORBIDDEN {
            return Err(KvError::new(
                KvErrorKind::Denied,
                &self.url.url,
                format!(
                    "Vault answered 403 permission denied to {}",
                    self.endpoint(&method, api)
                ),
                format!(
                    "set VAULT_TOKEN to a valid token whose policy allows reading and writing {}",
                    self.url.policy_paths()
                ),
            ));
        }
        let code = status.as_u16();
        Err(KvError::new(
            KvErrorKind::Http(code),
            &self.url.url,
            format!(
                "Vault answered {status} to {}: {}",
                self.endpoint(&method, api),
                if errors.is_empty() {
                    "no error message"
                } else {
                    errors.as_str()
                }
            ),
            if code == 429 || code >= 500 {
                "Vault is unavailable, sealed or overloaded; try again when it is healthy"
            } else {
                "check the state URL and the token's policy"
            },
        ))
    }

    /// Checks the token (`auth/token/lookup-self`) and that the URL's mount is a KV
    /// version 2 engine (`sys/internal/ui/mounts/MOUNT`, falling back to `sys/mounts`
    /// when that is not permitted).
    ///
    /// # Errors
    /// [`KvError::Denied`] for a bad token, [`KvError::NotKv2`] for a missing or non-KV-v2
    /// mount, transport errors.
    pub async fn check(&self) -> Result<(), KvError> {
        self.call_retried(Method::GET, "auth/token/lookup-self", &[])
            .await?;
        let mount = self.url.mount.clone();
        let not_kv2 = |detail: String| {
            KvError::new(KvErrorKind::NotKv2, &self.url.url, detail, kv2_hint(&mount))
        };
        let ui = format!("sys/internal/ui/mounts/{}", segment(&mount));
        let info = match self.call_retried(Method::GET, &ui, &[]).await {
            Ok((_, answer)) => answer.get("data").cloned().unwrap_or(Value::Null),
            // Vault answers 403 (not 404) for a path under no mount; the token itself is
            // valid (lookup-self passed), so look in the mount table.
            Err(e) if matches!(e.kind, KvErrorKind::Denied | KvErrorKind::Http(404)) => {
                match self.call_retried(Method::GET, "sys/mounts", &[]).await {
                    Ok((_, table)) => {
                        let data = table.get("data").unwrap_or(&table);
                        match data.get(format!("{mount}/")) {
                            Some(entry) => entry.clone(),
                            None => {
                                return Err(not_kv2(format!(
                                    "Vault at {} has no mount `{mount}`",
                                    self.addr
                                )))
                            }
                        }
                    }
                    Err(e) if e.kind == KvErrorKind::Denied => {
                        return Err(not_kv2(format!(
                            "Vault at {} has no mount `{mount}` that this token may use",
                            self.addr
                        )))
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let ty = info
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let version = info
            .pointer("/options/version")
            .and_then(Value::as_str)
            .unwrap_or("1");
        if ty == "kv" && version == "2" {
            return Ok(());
        }
        let what = if ty == "kv" {
            format!("KV version {version}")
        } else {
            format!("a `{ty}` engine")
        };
        Err(not_kv2(format!(
            "mount `{mount}` at {} is {what}, not KV version 2",
            self.addr
        )))
    }

    /// `MOUNT/KIND/KEY` with every segment encoded.
    fn api(&self, kind: &str, key: &str) -> String {
        let mut out = segment(&self.url.mount);
        out.push('/');
        out.push_str(kind);
        for seg in key.split('/').filter(|s| !s.is_empty()) {
            out.push('/');
            out.push_str(&segment(seg));
        }
        out
    }

    /// Reads the latest version of `key` (a path under the mount).
    ///
    /// # Errors
    /// Vault refuses or cannot be reached.
    pub async fn read(&self, key: &str) -> Result<Secret, KvError> {
        let api = self.api("data", key);
        let (status, answer) = self
            .call_retried(Method::GET, &api, &[StatusCode::NOT_FOUND])
            .await?;
        // A soft-deleted latest version answers 404 but still carries its metadata, so
        // the version is right for the next check-and-set either way.
        let version = answer
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let data = if status == StatusCode::NOT_FOUND {
            None
        } else {
            answer
                .pointer("/data/data")
                .filter(|d| d.is_object())
                .cloned()
        };
        Ok(Secret { data, version })
    }

    /// Writes `data` (a JSON object) as the next version of `key` with check-and-set:
    /// `cas` must be the current version (0: the key must not exist). Returns the new
    /// version.
    ///
    /// # Errors
    /// [`KvError::CasMismatch`] when another writer got there first; other refusals.
    pub async fn write(&self, key: &str, data: &Value, cas: u64) -> Result<u64, KvError> {
        let bytes = serde_json::to_vec(data).unwrap_or_else(|_| b"{}".to_vec());
        self.write_raw(key, &bytes, cas).await
    }

    /// Like [`KvClient::write`] with `data` already serialized (a JSON object), so a big
    /// state is serialized once, straight into the request body.
    ///
    /// # Errors
    /// As [`KvClient::write`].
    pub async fn write_raw(&self, key: &str, data: &[u8], cas: u64) -> Result<u64, KvError> {
        let api = self.api("data", key);
        let mut body = Vec::with_capacity(data.len() + 40);
        body.extend_from_slice(format!("{{\"options\":{{\"cas\":{cas}}},\"data\":").as_bytes());
        body.extend_from_slice(data);
        body.push(b'}');
        match self.call(Method::POST, &api, Some(body), &[]).await {
            Ok((_, answer)) => Ok(answer
                .pointer("/data/version")
                .and_then(Value::as_u64)
                .unwrap_or(cas + 1)),
            Err(e) if e.kind == KvErrorKind::Http(400) && e.detail.contains("check-and-set") => {
                Err(KvError::new(
                    KvErrorKind::CasMismatch,
                    &self.url.url,
                    format!("{} (expected version {cas})", e.detail),
                    "another writer changed the secret; run the command again",
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes every version and the metadata of `key` (afterwards `cas = 0` writes it
    /// anew). Absent is fine.
    ///
    /// # Errors
    /// Vault refuses or cannot be reached.
    pub async fn delete_all(&self, key: &str) -> Result<(), KvError> {
        let api = self.api("metadata", key);
        self.call_retried(Method::DELETE, &api, &[StatusCode::NOT_FOUND])
            .await?;
        Ok(())
    }
}

fn http_client(root: Option<&reqwest::Certificate>) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(cert) = root {
        builder = builder.add_root_certificate(cert.clone());
    }
    builder.build()
}

/// One percent-encoded path segment.
fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// An error with its sources, e.g. "error sending request: connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn parses_mount_and_prefix() {
        let u = VaultUrl::parse("vault://secret/anvil/state").unwrap();
        assert_eq!(u.mount, "secret");
        assert_eq!(u.prefix, vec!["anvil", "state"]);
        assert_eq!(u.key("demo"), "anvil/state/demo");
        assert_eq!(u.key("demo.lock"), "anvil/state/demo.lock");
        let root = VaultUrl::parse("vault://kv/").unwrap();
        assert_eq!(root.mount, "kv");
        assert!(root.prefix.is_empty());
        assert_eq!(root.key("demo"), "demo");
    }

    #[test]
    fn refuses_bad_urls_naming_them() {
        for (url, says) in [
            ("vault://", "mount is missing"),
            ("vault:///x", "empty path segment"),
            ("vault://secret//x", "empty path segment"),
            ("vault://secret/../sys", "`..`"),
            ("vault://secret/./x", "`.`"),
            ("vault://secret/x?version=2", "query"),
            ("vault://secret/x#frag", "fragment"),
            ("vault://secret/a\nb", "control character"),
            ("http://secret/x", "not a vault:// URL"),
        ] {
            let e = VaultUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(e.contains("vault://MOUNT/PATH"), "{url}: {e}");
        }
        for sys in ["vault://sys/x", "vault://cubbyhole/x", "vault://auth/x"] {
            let e = VaultUrl::parse(sys).unwrap_err();
            assert_eq!(e.kind, KvErrorKind::NotKv2, "{sys}: {e}");
            assert!(e.to_string().contains(sys), "{e}");
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused_and_never_shown() {
        let e = VaultUrl::parse("vault://hvs.SECRET123@secret/anvil")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hvs.SECRET123"), "{e}");
        assert!(e.contains("vault://***@secret/anvil"), "{e}");
        assert!(e.contains("credentials"), "{e}");
    }

    #[test]
    fn policy_paths_name_data_and_metadata() {
        let u = VaultUrl::parse("vault://secret/anvil/state").unwrap();
        assert_eq!(
            u.policy_paths(),
            "secret/data/anvil/state/* and secret/metadata/anvil/state/*"
        );
        let root = VaultUrl::parse("vault://kv").unwrap();
        assert_eq!(root.policy_paths(), "kv/data/* and kv/metadata/*");
    }

    #[test]
    fn config_needs_addr_and_token_and_hides_the_token() {
        let url = "vault://secret/s";
        let e = KvConfig::from_vars(url, vars(&[("VAULT_TOKEN", "t")])).unwrap_err();
        assert!(e.to_string().contains("VAULT_ADDR is not set"), "{e}");
        assert!(e.to_string().contains(url), "{e}");
        let e = KvConfig::from_vars(url, vars(&[("VAULT_ADDR", "http://v:8200")])).unwrap_err();
        assert!(e.to_string().contains("VAULT_TOKEN is not set"), "{e}");
        let e = KvConfig::from_vars(
            url,
            vars(&[("VAULT_ADDR", "vault.example"), ("VAULT_TOKEN", "t")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("VAULT_ADDR=vault.example"), "{e}");
        let e = KvConfig::from_vars(
            url,
            vars(&[("VAULT_ADDR", "https://tok@v"), ("VAULT_TOKEN", "t")]),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("tok@"), "{e}");

        let c = KvConfig::from_vars(
            url,
            vars(&[
                ("VAULT_ADDR", "http://127.0.0.1:8200/"),
                ("VAULT_TOKEN", "hvs.TOPSECRET"),
                ("VAULT_NAMESPACE", "team"),
            ]),
        )
        .unwrap();
        assert_eq!(c.addr, "http://127.0.0.1:8200");
        assert_eq!(c.namespace.as_deref(), Some("team"));
        assert!(!format!("{c:?}").contains("TOPSECRET"));
        let client = KvClient::new(VaultUrl::parse(url).unwrap(), &c).unwrap();
        assert!(!format!("{client:?}").contains("TOPSECRET"));
    }

    #[test]
    fn api_paths_encode_each_segment() {
        let c = KvConfig::from_vars(
            "vault://secret/a b",
            vars(&[("VAULT_ADDR", "http://x"), ("VAULT_TOKEN", "t")]),
        )
        .unwrap();
        let client = KvClient::new(VaultUrl::parse("vault://secret/a b").unwrap(), &c).unwrap();
        assert_eq!(
            client.api("data", &client.url.key("w?x")),
            "secret/data/a%20b/w%3Fx"
        );
        assert_eq!(
            client.api("metadata", "p/ws.journal/7"),
            "secret/metadata/p/ws.journal/7"
        );
    }

    #[test]
    fn missing_cacert_is_a_config_error_naming_it() {
        let c = KvConfig::from_vars(
            "vault://secret/s",
            vars(&[
                ("VAULT_ADDR", "https://x"),
                ("VAULT_TOKEN", "t"),
                ("VAULT_CACERT", "/nonexistent/ca.pem"),
            ]),
        )
        .unwrap();
        let e = KvClient::new(VaultUrl::parse("vault://secret/s").unwrap(), &c).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn transient_failures_are_retryable_and_refusals_are_not() {
        let e = |kind| KvError::new(kind, "u", "d", "h");
        assert!(e(KvErrorKind::Unreachable).retryable());
        assert!(e(KvErrorKind::Http(503)).retryable());
        assert!(e(KvErrorKind::Http(429)).retryable());
        assert!(!e(KvErrorKind::Http(400)).retryable());
        assert!(!e(KvErrorKind::Denied).retryable());
        assert!(!e(KvErrorKind::CasMismatch).retryable());
    }
}
