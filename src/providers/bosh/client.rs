//! A thin BOSH Director API v1 client on reqwest (rustls), written for the `bosh`
//! provider: only the calls it needs, every error naming the method, path and
//! `BOSH_ENVIRONMENT`.
//!
//! - TLS: `BOSH_CA_CERT` (a PEM file path or inline PEM) is added as a root
//!   certificate. There is no insecure fallback; a certificate error names
//!   `BOSH_CA_CERT` and the URL.
//! - Auth is discovered from `GET /info`: `basic` sends `BOSH_CLIENT` /
//!   `BOSH_CLIENT_SECRET` as HTTP basic auth; `uaa` fetches a client-credentials token
//!   from `{options.url}/oauth/token`, caches it, and on a 401 fetches a new one once and
//!   retries the request.
//! - Redirects are never followed: a `302` to `/tasks/{id}` is how the Director hands out
//!   a task, and [`Client::follow_task`] polls it.
//! - Idempotent requests (GET, DELETE, the token request) are retried by the one policy
//!   ([`Policy::HTTP`]: 200 ms doubling, 5 attempts) when the error's kind is transient
//!   (5xx, 429, connection errors). Deploys have their own rule, see [`Client::deploy`].
//! - Errors are [`ProviderError`]s: the kind from the HTTP status, the endpoint
//!   `METHOD URL`, never the credentials.

use crate::providers::retry::{self, Policy};
use crate::providers::{url_segment, CancellationToken, ErrorKind, ProviderError};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::Mutex;

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a running task is polled: after a tenth of the time it has run so far
/// ([`POLL_FRACTION`]), at least [`FIRST_POLL`] and at most [`POLL_INTERVAL`]. A task is
/// seen done at most about 10 % after it ended (a fixed doubling schedule overshot a
/// 200 ms task by a quarter), with a handful of polls for short tasks and one every
/// [`POLL_INTERVAL`] for long ones.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const FIRST_POLL: Duration = Duration::from_millis(5);
const POLL_FRACTION: u32 = 10;

/// The wait before the next poll of a task that has run for `elapsed`.
fn next_poll(elapsed: Duration) -> Duration {
    (elapsed / POLL_FRACTION).clamp(FIRST_POLL, POLL_INTERVAL)
}

/// A failed Director call or bad client configuration: a [`ProviderError`] whose kind
/// comes from the HTTP status and whose endpoint is the request's method and URL.
pub type BoshError = ProviderError;

fn config_error(message: impl Into<String>) -> BoshError {
    ProviderError::invalid(message)
}

/// The typed settings of a `bosh` provider instance, as a `providers:` entry (or a
/// Foundation's `director` block) gives them. Unset fields fall back to the `BOSH_*`
/// environment variables.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Director URL or host (else `BOSH_ENVIRONMENT`).
    pub environment: Option<String>,
    /// The client name (else `BOSH_CLIENT`).
    pub client: Option<String>,
    /// The client secret (else `BOSH_CLIENT_SECRET`); write `${env:NAME}`.
    pub client_secret: Option<String>,
    /// The CA certificate, PEM text or a file path (else `BOSH_CA_CERT`).
    pub ca_cert: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("environment", &self.environment)
            .field("client", &self.client)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "(redacted)"),
            )
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl Settings {
    /// The value standing for the environment variable `name`, if set here.
    fn var(&self, name: &str) -> Option<String> {
        let v = match name {
            "BOSH_ENVIRONMENT" => &self.environment,
            "BOSH_CLIENT" => &self.client,
            "BOSH_CLIENT_SECRET" => &self.client_secret,
            "BOSH_CA_CERT" => &self.ca_cert,
            _ => &None,
        };
        v.clone().filter(|v| !v.trim().is_empty())
    }
}

/// Where and as whom to reach the Director. `Debug` never shows the secret.
#[derive(Clone, Default)]
pub struct Config {
    /// `BOSH_ENVIRONMENT` as a URL (a bare host becomes `https://host:25555`).
    pub url: String,
    /// `BOSH_CLIENT`.
    pub client: String,
    /// `BOSH_CLIENT_SECRET`.
    pub secret: String,
    /// `BOSH_CA_CERT`: a PEM file path or inline PEM.
    pub ca_cert: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("client", &self.client)
            .field("secret", &"(redacted)")
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "(set)"))
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
    ) -> Result<Config, BoshError> {
        Config::from_vars(|n| settings.var(n).or_else(|| env(n)))
    }

    /// Reads the configuration from the environment.
    ///
    /// # Errors
    /// `BOSH_ENVIRONMENT`, `BOSH_CLIENT` or `BOSH_CLIENT_SECRET` is unset.
    pub fn from_env() -> Result<Config, BoshError> {
        Config::from_vars(crate::providers::env_var)
    }

    /// Builds a configuration from a variable lookup (the environment, or a map in tests).
    ///
    /// # Errors
    /// As [`Config::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, BoshError> {
        let Some(env) = var("BOSH_ENVIRONMENT") else {
            return Err(config_error(
                "BOSH_ENVIRONMENT is not set: a bosh resource is used, so set \
                 BOSH_ENVIRONMENT to the Director's URL or host, and BOSH_CLIENT and \
                 BOSH_CLIENT_SECRET",
            ));
        };
        let url = normalize_url(&env);
        let (Some(client), Some(secret)) = (var("BOSH_CLIENT"), var("BOSH_CLIENT_SECRET")) else {
            return Err(config_error(format!(
                "no BOSH credentials for {url}: set BOSH_CLIENT and BOSH_CLIENT_SECRET"
            )));
        };
        Ok(Config {
            url,
            client,
            secret,
            ca_cert: var("BOSH_CA_CERT"),
        })
    }
}

/// `BOSH_ENVIRONMENT` as a base URL: a URL as given (no trailing slash), a bare host as
/// `https://host:25555`.
#[must_use]
pub fn normalize_url(env: &str) -> String {
    let env = env.trim().trim_end_matches('/');
    if env.contains("://") {
        env.to_string()
    } else if env.contains(':') {
        format!("https://{env}")
    } else {
        format!("https://{env}:25555")
    }
}

/// The PEM text of `BOSH_CA_CERT`: inline PEM as is, otherwise the file it names.
fn ca_pem(value: &str) -> Result<Vec<u8>, BoshError> {
    if value.contains("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(value).map_err(|e| {
        config_error(format!(
            "cannot read BOSH_CA_CERT {value}: {e}; set it to a PEM file or inline PEM"
        ))
    })
}

/// How requests authenticate.
#[derive(Debug, Clone)]
enum Auth {
    Basic,
    Uaa { token_url: String },
}

/// One HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The task id of a `302` to `/tasks/{id}`.
    fn task_id(&self) -> Option<u64> {
        if self.status != StatusCode::FOUND {
            return None;
        }
        let loc = self.headers.get(LOCATION)?.to_str().ok()?;
        loc.trim_end_matches('/').rsplit('/').next()?.parse().ok()
    }
}

/// A body to send.
#[derive(Debug, Clone, Copy)]
enum Body<'a> {
    None,
    Yaml(&'a str),
    Json(&'a Value),
}

/// A task as the Director reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: u64,
    pub state: String,
    pub result: String,
}

/// A connected Director client.
/// A Director client. (No `Debug`: it holds credentials.)
pub struct Client {
    http: reqwest::Client,
    config: Config,
    auth: Auth,
    token: Mutex<Option<String>>,
    /// How idempotent requests are retried ([`Policy::HTTP`] unless
    /// [`Client::connect_with`] was given another, e.g. one attempt for a caller that
    /// retries on its own schedule).
    policy: Policy,
}

/// The error chain of a reqwest error in one line (the TLS cause is deep inside).
fn chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

impl Client {
    /// Builds the HTTP client and discovers the auth type from `GET /info`.
    ///
    /// # Errors
    /// The CA cannot be read or parsed, or the Director cannot be asked (a certificate
    /// error names `BOSH_CA_CERT`).
    pub async fn connect(config: &Config) -> Result<Client, BoshError> {
        Client::connect_with(config, Policy::HTTP).await
    }

    /// [`Client::connect`] with another retry policy for idempotent requests (the
    /// `/info` discovery included).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with(config: &Config, policy: Policy) -> Result<Client, BoshError> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &config.ca_cert {
            let pem = ca_pem(ca)?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| config_error(format!("BOSH_CA_CERT is not a PEM certificate: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client for BOSH: {e}")))?;
        let mut client = Client {
            http,
            config: config.clone(),
            auth: Auth::Basic,
            token: Mutex::new(None),
            policy,
        };
        let info = client
            .request(Method::GET, "/info", Body::None, None)
            .await?;
        let info = info.json().unwrap_or(Value::Null);
        let ty = info
            .pointer("/user_authentication/type")
            .and_then(Value::as_str)
            .unwrap_or("basic");
        if ty == "uaa" {
            let url = info
                .pointer("/user_authentication/options/url")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    client.error(
                        &Method::GET,
                        "/info",
                        Some(200),
                        "UAA auth without options.url",
                    )
                })?;
            client.auth = Auth::Uaa {
                token_url: format!("{}/oauth/token", url.trim_end_matches('/')),
            };
        }
        Ok(client)
    }

    /// `BOSH_ENVIRONMENT` as a URL.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    fn error(&self, method: &Method, path: &str, status: Option<u16>, what: &str) -> BoshError {
        // The token URL is absolute; Director paths are relative to BOSH_ENVIRONMENT.
        let url = if path.contains("://") {
            path.to_string()
        } else {
            format!("{}{path}", self.config.url)
        };
        let e = ProviderError::of(
            status.map_or(ErrorKind::Permanent, ErrorKind::from_status),
            format!(
                "bosh {method} {path} (BOSH_ENVIRONMENT={}): {what}",
                self.config.url
            ),
        )
        .at(format!("{method} {url}"));
        match status {
            Some(s) => e.with_status(s),
            None => e,
        }
    }

    fn send_error(&self, method: &Method, path: &str, e: &reqwest::Error) -> BoshError {
        let text = chain(e);
        let lower = text.to_ascii_lowercase();
        let tls = lower.contains("certificate") || lower.contains("unknownissuer");
        let hint = if tls {
            format!(
                "the Director's TLS certificate is not trusted; set BOSH_CA_CERT to the CA \
                 that signed the certificate of {}",
                self.config.url
            )
        } else {
            "check that BOSH_ENVIRONMENT is right and the Director is reachable".to_string()
        };
        let mut err = self.error(
            method,
            path,
            None,
            &format!("request failed: {text}; {hint}"),
        );
        err.kind = if tls {
            ErrorKind::Permanent
        } else {
            ErrorKind::Retryable
        };
        err
    }

    /// A fresh UAA token, the request retried by [`Policy::HTTP`] on transient errors.
    async fn fetch_token(&self, token_url: &str) -> Result<String, BoshError> {
        let m = Method::POST;
        let once = || async {
            let resp = self
                .http
                .post(token_url)
                .basic_auth(&self.config.client, Some(&self.config.secret))
                .header("Accept", "application/json")
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    v.get("access_token")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            self.error(&m, token_url, Some(200), "the UAA answer has no token")
                        })
                }
                Ok(r) => {
                    let status = r.status();
                    Err(self.error(
                        &m,
                        token_url,
                        Some(status.as_u16()),
                        &format!(
                            "UAA refused the token request ({status}); check BOSH_CLIENT and \
                             BOSH_CLIENT_SECRET"
                        ),
                    ))
                }
                Err(e) => Err(self.send_error(&m, token_url, &e)),
            }
        };
        retry::run(self.policy, retry::transient, once)
            .await
            .map_err(|(e, _)| e)
    }

    /// The bearer token, fetched when absent or when `stale` is the one that failed.
    async fn token(&self, token_url: &str, stale: Option<&str>) -> Result<String, BoshError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref() {
            if Some(t.as_str()) != stale {
                return Ok(t.clone());
            }
        }
        let t = self.fetch_token(token_url).await?;
        *guard = Some(t.clone());
        Ok(t)
    }

    /// One request, authenticated, with one token refresh on a 401 under UAA. Returns
    /// any answer; connection errors become retryable errors.
    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        body: Body<'_>,
        range: Option<u64>,
    ) -> Result<Answer, BoshError> {
        let mut stale: Option<String> = None;
        for _ in 0..2 {
            let url = format!("{}{path}", self.config.url);
            let mut req = self.http.request(method.clone(), &url);
            match body {
                Body::None => {}
                Body::Yaml(text) => {
                    req = req.header(CONTENT_TYPE, "text/yaml").body(text.to_string());
                }
                Body::Json(v) => req = req.json(v),
            }
            if let Some(n) = range {
                req = req.header(RANGE, format!("bytes={n}-"));
            }
            let mut used = None;
            if path != "/info" {
                match &self.auth {
                    Auth::Basic => {
                        req = req.basic_auth(&self.config.client, Some(&self.config.secret));
                    }
                    Auth::Uaa { token_url } => {
                        let t = self.token(token_url, stale.as_deref()).await?;
                        req = req.header(AUTHORIZATION, format!("bearer {t}"));
                        used = Some(t);
                    }
                }
            }
            let resp = req
                .send()
                .await
                .map_err(|e| self.send_error(method, path, &e))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp.text().await.map_err(|e| {
                let mut err = self.send_error(method, path, &e);
                err.kind = ErrorKind::Retryable;
                err
            })?;
            if status == StatusCode::UNAUTHORIZED && used.is_some() && stale.is_none() {
                stale = used;
                continue;
            }
            return Ok(Answer {
                status,
                headers,
                body: text,
            });
        }
        Err(self.error(
            method,
            path,
            Some(401),
            "not authorized even with a fresh UAA token; check BOSH_CLIENT and \
             BOSH_CLIENT_SECRET",
        ))
    }

    /// Turns an unexpected answer into an error.
    fn refusal(&self, method: &Method, path: &str, a: &Answer) -> BoshError {
        let code = a.status.as_u16();
        let description = a
            .json()
            .and_then(|j| {
                j.get("description")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .unwrap_or_else(|| a.body.trim().to_string());
        let what = match code {
            401 => {
                format!("not authorized ({description}); check BOSH_CLIENT and BOSH_CLIENT_SECRET")
            }
            _ => format!("the Director answered {}: {description}", a.status),
        };
        self.error(method, path, Some(code), &what)
    }

    /// An idempotent request, retried by [`Policy::HTTP`] on transient errors.
    /// Statuses below 400 and those in `accept` are returned; others become errors.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        range: Option<u64>,
    ) -> Result<Answer, BoshError> {
        self.request_accepting(method, path, body, range, &[]).await
    }

    async fn request_accepting(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        range: Option<u64>,
        accept: &[StatusCode],
    ) -> Result<Answer, BoshError> {
        let once = || async {
            match self.send_once(&method, path, body, range).await {
                Ok(a) if a.status.as_u16() < 400 || accept.contains(&a.status) => Ok(a),
                Ok(a) => Err(self.refusal(&method, path, &a)),
                Err(e) => Err(e),
            }
        };
        retry::run(self.policy, retry::transient, once)
            .await
            .map_err(|(e, _)| e)
    }

    /// The manifest text of a deployment, `None` when it does not exist.
    ///
    /// # Errors
    /// The Director cannot be asked or refuses.
    pub async fn manifest(&self, name: &str) -> Result<Option<String>, BoshError> {
        let path = format!("/deployments/{}", url_segment(name));
        let a = self
            .request_accepting(
                Method::GET,
                &path,
                Body::None,
                None,
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(
            a.json()
                .and_then(|j| j.get("manifest").and_then(Value::as_str).map(String::from))
                .unwrap_or_default(),
        ))
    }

    /// The Director's own diff of `manifest` against deployment `name` (against nothing
    /// for a new deployment), with property values redacted: the lines with `added`,
    /// `removed` or `None` (context), and the Director's error text when it could not
    /// diff (it answers 200 with `error` then).
    ///
    /// # Errors
    /// The Director cannot be asked or refuses.
    pub async fn diff(
        &self,
        name: &str,
        manifest: &str,
    ) -> Result<(Vec<(String, Option<String>)>, Option<String>), BoshError> {
        let path = format!("/deployments/{}/diff?redact=true", url_segment(name));
        let a = self
            .request(Method::POST, &path, Body::Yaml(manifest), None)
            .await?;
        let j = a.json().unwrap_or_default();
        let lines = j
            .get("diff")
            .and_then(Value::as_array)
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        let text = r.get(0)?.as_str()?.to_string();
                        let change = r.get(1).and_then(Value::as_str).map(String::from);
                        Some((text, change))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let error = j.get("error").and_then(Value::as_str).map(String::from);
        Ok((lines, error))
    }

    /// The names of all deployments.
    ///
    /// # Errors
    /// The Director cannot be asked or refuses.
    pub async fn deployment_names(&self) -> Result<Vec<String>, BoshError> {
        let a = self
            .request(Method::GET, "/deployments", Body::None, None)
            .await?;
        Ok(a.json()
            .and_then(|j| j.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d.get("name").and_then(Value::as_str).map(String::from))
            .collect())
    }

    /// Ids of the deployment's queued or processing tasks, newest first.
    ///
    /// # Errors
    /// The Director cannot be asked or refuses.
    pub async fn active_tasks(&self, name: &str) -> Result<Vec<u64>, BoshError> {
        let path = format!(
            "/tasks?deployment={}&state=queued,processing",
            url_segment(name)
        );
        let a = self.request(Method::GET, &path, Body::None, None).await?;
        let mut ids: Vec<u64> = a
            .json()
            .and_then(|j| j.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.get("id").and_then(Value::as_u64))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// Starts a deploy of `manifest` (whose `name` is `name`) and returns the task id,
    /// or `None` when a retry found the manifest already deployed with no task running.
    ///
    /// The POST is retried only when it failed with a 5xx or a connection error, i.e.
    /// before any `302` handed out a task. Before each re-POST the Director is asked for
    /// the deployment's queued or processing tasks: if there is one, the earlier POST
    /// did start a task and that task is followed instead; if the Director's manifest
    /// already equals `manifest` (by `same`), nothing is POSTed again. So a manifest
    /// whose task already started is never POSTed twice.
    ///
    /// # Errors
    /// The Director refuses the manifest, or stays unreachable.
    ///
    /// With `resumed` (an earlier run's deploy of this manifest was interrupted before
    /// its result was recorded) the first attempt checks the same way, so a task that
    /// run started is followed instead of deploying again.
    pub async fn deploy(
        &self,
        name: &str,
        manifest: &str,
        same: impl Fn(&str) -> bool,
        resumed: bool,
    ) -> Result<Option<u64>, BoshError> {
        let m = Method::POST;
        let path = "/deployments";
        let attempt = std::sync::atomic::AtomicU32::new(u32::from(resumed));
        let once = || async {
            if attempt.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                if let Some(id) = self.active_tasks(name).await?.first() {
                    return Ok(Some(*id));
                }
                if let Some(current) = self.manifest(name).await? {
                    if same(&current) {
                        return Ok(None);
                    }
                }
            }
            match self.send_once(&m, path, Body::Yaml(manifest), None).await {
                Ok(a) => match a.task_id() {
                    Some(id) => Ok(Some(id)),
                    None => Err(self.refusal(&m, path, &a)),
                },
                Err(e) => Err(e),
            }
        };
        retry::run(self.policy, retry::transient, once)
            .await
            .map_err(|(e, _)| e)
    }

    /// Starts `DELETE /deployments/{name}?force=true`; `None` when it does not exist.
    ///
    /// # Errors
    /// The Director refuses or cannot be asked.
    pub async fn delete_deployment(&self, name: &str) -> Result<Option<u64>, BoshError> {
        let path = format!("/deployments/{}?force=true", url_segment(name));
        let a = self
            .request_accepting(
                Method::DELETE,
                &path,
                Body::None,
                None,
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        a.task_id().map(Some).ok_or_else(|| {
            self.error(
                &Method::DELETE,
                &path,
                Some(a.status.as_u16()),
                "expected a 302 to the delete task",
            )
        })
    }

    /// The task's state and result.
    ///
    /// # Errors
    /// The Director cannot be asked or refuses.
    pub async fn task(&self, id: u64) -> Result<Task, BoshError> {
        let path = format!("/tasks/{id}");
        let a = self.request(Method::GET, &path, Body::None, None).await?;
        let j = a.json().unwrap_or(Value::Null);
        Ok(Task {
            id,
            state: j
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            result: j
                .get("result")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// New event output of a task from byte `offset` on.
    async fn events_from(&self, id: u64, offset: u64) -> Result<String, BoshError> {
        let path = format!("/tasks/{id}/output?type=event");
        let a = self
            .request_accepting(
                Method::GET,
                &path,
                Body::None,
                Some(offset),
                &[StatusCode::RANGE_NOT_SATISFIABLE],
            )
            .await?;
        Ok(match a.status {
            StatusCode::PARTIAL_CONTENT => a.body,
            // A server ignoring Range sends everything.
            StatusCode::OK => a
                .body
                .get(usize::try_from(offset).unwrap_or(usize::MAX)..)
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        })
    }

    /// Polls a task until it ends, passing each new event line (formatted by
    /// [`Progress`], so a stage's text is said once) to `progress`. `done` is success;
    /// `error`, `cancelled` and `timeout` are errors naming `deployment`, the task id
    /// and the task's result. When `cancel` fires, waiting stops at once with an
    /// [`ErrorKind::Cancelled`] error (the task itself goes on on the Director).
    ///
    /// # Errors
    /// The task failed, the Director stopped answering, or `cancel` fired.
    pub async fn follow_task(
        &self,
        id: u64,
        deployment: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
        cancel: &CancellationToken,
    ) -> Result<(), BoshError> {
        tokio::select! {
            r = self.poll_task(id, deployment, progress) => r,
            () = cancel.cancelled() => Err(ProviderError::cancelled(format!(
                "deployment {deployment}: stopped following BOSH task {id} because the run \
                 was cancelled; the task goes on: see `bosh task {id}` on {}",
                self.config.url
            ))
            .at(format!("GET {}/tasks/{id}", self.config.url))),
        }
    }

    async fn poll_task(
        &self,
        id: u64,
        deployment: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), BoshError> {
        let mut offset = 0u64;
        let mut pending = String::new();
        let mut lines = Progress::default();
        let started = tokio::time::Instant::now();
        loop {
            let task = self.task(id).await?;
            let new = self.events_from(id, offset).await?;
            offset += new.len() as u64;
            pending.push_str(&new);
            while let Some(pos) = pending.find('\n') {
                let line: String = pending.drain(..=pos).collect();
                for msg in lines.event(&line) {
                    progress(&msg);
                }
            }
            match task.state.as_str() {
                "done" => return Ok(()),
                "error" | "cancelled" | "timeout" => {
                    return Err(ProviderError::new(format!(
                        "deployment {deployment}: BOSH task {id} ended in state `{}`: {} \
                         (see `bosh task {id}` on {})",
                        task.state, task.result, self.config.url
                    ))
                    .at(format!("GET {}/tasks/{id}", self.config.url)))
                }
                _ => {
                    tokio::time::sleep(next_poll(started.elapsed())).await;
                }
            }
        }
    }

    /// The deployment's VMs with their details (`GET /deployments/{name}/vms?format=full`,
    /// a task whose `result` output holds one JSON object per line): `None` when the
    /// deployment does not exist. Waiting for the task stops when `cancel` fires.
    ///
    /// # Errors
    /// The Director refuses or cannot be asked, or the task fails.
    pub async fn vms_full(
        &self,
        name: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<Value>>, BoshError> {
        let path = format!("/deployments/{}/vms?format=full", url_segment(name));
        let a = self
            .request_accepting(
                Method::GET,
                &path,
                Body::None,
                None,
                &[StatusCode::NOT_FOUND],
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let Some(id) = a.task_id() else {
            return Err(self.error(
                &Method::GET,
                &path,
                Some(a.status.as_u16()),
                "expected a 302 to the vms task",
            ));
        };
        self.follow_task(id, name, &|_| {}, cancel).await?;
        let out = self.task_output(id, "result").await?;
        Ok(Some(
            out.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
                .collect(),
        ))
    }

    /// A task's output of one type (`event`, `result`, `debug`); empty when there is none.
    ///
    /// # Errors
    /// The Director refuses or cannot be asked (an unknown task is a not-found error).
    pub async fn task_output(&self, id: u64, ty: &str) -> Result<String, BoshError> {
        let path = format!("/tasks/{id}/output?type={}", url_segment(ty));
        let a = self.request(Method::GET, &path, Body::None, None).await?;
        Ok(a.body)
    }

    /// The Director's events about one deployment (`GET /events?deployment=NAME`), newest
    /// first as the Director gives them.
    ///
    /// # Errors
    /// The Director refuses or cannot be asked.
    pub async fn events(&self, deployment: &str) -> Result<Vec<Value>, BoshError> {
        let path = format!("/events?deployment={}", url_segment(deployment));
        let a = self.request(Method::GET, &path, Body::None, None).await?;
        Ok(a.json()
            .and_then(|j| j.as_array().cloned())
            .unwrap_or_default())
    }

    /// The deployment's tasks, newest first (`GET /tasks?deployment=NAME&verbose=1`).
    ///
    /// # Errors
    /// The Director refuses or cannot be asked.
    pub async fn tasks(&self, deployment: &str) -> Result<Vec<Value>, BoshError> {
        let path = format!("/tasks?deployment={}&verbose=1", url_segment(deployment));
        let a = self.request(Method::GET, &path, Body::None, None).await?;
        Ok(a.json()
            .and_then(|j| j.as_array().cloned())
            .unwrap_or_default())
    }

    /// The latest config of a type and name: `(id, content)`, `None` when there is none.
    ///
    /// # Errors
    /// The Director cannot be asked or refuses.
    pub async fn latest_config(
        &self,
        ty: &str,
        name: &str,
    ) -> Result<Option<(String, String)>, BoshError> {
        let path = format!(
            "/configs?type={}&name={}&latest=true",
            url_segment(ty),
            url_segment(name)
        );
        let a = self.request(Method::GET, &path, Body::None, None).await?;
        let list = a
            .json()
            .and_then(|j| j.as_array().cloned())
            .unwrap_or_default();
        Ok(list.first().map(|c| {
            let id = match c.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            let content = c
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            (id, content)
        }))
    }

    /// Posts a new config version.
    ///
    /// # Errors
    /// The Director refuses or cannot be asked.
    pub async fn post_config(&self, ty: &str, name: &str, content: &str) -> Result<(), BoshError> {
        let body = json!({"type": ty, "name": name, "content": content});
        // Posting the same content twice only adds an identical version: safe to retry.
        self.request(Method::POST, "/configs", Body::Json(&body), None)
            .await?;
        Ok(())
    }
}

/// Turns a task's event lines into progress lines, saying each stage's text once: the
/// first event of a stage gives `Updating instance` on its own line, its task events
/// then only `redis/0 (started)`, so the Director's stage text is not repeated on every
/// line.
#[derive(Debug, Default)]
pub struct Progress {
    stage: Option<String>,
}

impl Progress {
    /// The progress lines for one event line (none for lines that are not events).
    pub fn event(&mut self, line: &str) -> Vec<String> {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            return Vec::new();
        };
        if let Some(msg) = v.pointer("/error/message").and_then(Value::as_str) {
            return vec![format!("error: {msg}")];
        }
        let Some(stage) = v.get("stage").and_then(Value::as_str) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let task = v.get("task").and_then(Value::as_str);
        if self.stage.as_deref() != Some(stage) {
            self.stage = Some(stage.to_string());
            // A stage whose only task repeats its name is said once, with the state.
            if task.is_some_and(|t| t != stage) {
                out.push(stage.to_string());
            }
        }
        let state = v.get("state").and_then(Value::as_str);
        let what = match task {
            Some(t) if t != stage => t.to_string(),
            _ => stage.to_string(),
        };
        out.push(match state {
            Some(st) => format!("{what} ({st})"),
            None => what,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn polls_follow_a_tenth_of_the_elapsed_time_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(next_poll(Duration::ZERO), FIRST_POLL);
        assert_eq!(next_poll(ms(30)), FIRST_POLL);
        assert_eq!(next_poll(ms(200)), ms(20));
        assert_eq!(next_poll(Duration::from_secs(600)), POLL_INTERVAL);
        // A 200 ms task is seen done within a tenth of its time (plus one short poll).
        let mut t = Duration::ZERO;
        while t < ms(200) {
            t += next_poll(t);
        }
        assert!(t <= ms(225), "{t:?}");
    }

    #[test]
    fn environment_names_missing_variables() {
        let e = Config::from_vars(vars(&[])).unwrap_err();
        assert!(e.message.contains("BOSH_ENVIRONMENT"), "{}", e.message);
        let e = Config::from_vars(vars(&[("BOSH_ENVIRONMENT", "10.0.0.6")])).unwrap_err();
        assert!(e.message.contains("BOSH_CLIENT"), "{}", e.message);
        let c = Config::from_vars(vars(&[
            ("BOSH_ENVIRONMENT", "10.0.0.6"),
            ("BOSH_CLIENT", "admin"),
            ("BOSH_CLIENT_SECRET", "s"),
        ]))
        .unwrap();
        assert_eq!(c.url, "https://10.0.0.6:25555");
    }

    #[test]
    fn urls_are_normalized() {
        assert_eq!(normalize_url("https://d:25555/"), "https://d:25555");
        assert_eq!(normalize_url("d:8443"), "https://d:8443");
        assert_eq!(normalize_url("d"), "https://d:25555");
    }

    #[test]
    fn progress_says_the_stage_once() {
        let ev = |stage: &str, task: &str, state: &str| {
            format!(
                r#"{{"time":1,"stage":"{stage}","tags":["redis"],"total":3,"task":"{task}","index":1,"state":"{state}","progress":0}}"#
            )
        };
        let mut p = Progress::default();
        let mut out = Vec::new();
        for l in [
            ev("Preparing deployment", "Preparing deployment", "started"),
            ev("Preparing deployment", "Preparing deployment", "finished"),
            ev("Updating instance", "redis/0", "started"),
            ev("Updating instance", "redis/0", "finished"),
            ev("Updating instance", "redis/1", "started"),
            r#"{"time":1,"error":{"code":1,"message":"boom"}}"#.to_string(),
            "junk".to_string(),
        ] {
            out.extend(p.event(&l));
        }
        assert_eq!(
            out,
            [
                "Preparing deployment (started)",
                "Preparing deployment (finished)",
                "Updating instance",
                "redis/0 (started)",
                "redis/0 (finished)",
                "redis/1 (started)",
                "error: boom",
            ]
        );
        assert_eq!(
            out.iter()
                .filter(|l| l.contains("Updating instance"))
                .count(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_following_a_task() {
        // A Director that never answers: only cancellation can end the wait.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let client = Client {
            http: reqwest::Client::new(),
            config: Config {
                url: format!("http://{addr}"),
                client: "admin".into(),
                secret: "s3cret".into(),
                ca_cert: None,
            },
            auth: Auth::Basic,
            token: Mutex::new(None),
            policy: Policy::HTTP,
        };
        let cancel = CancellationToken::new();
        cancel.cancel();
        let e = client
            .follow_task(7, "d", &|_: &str| {}, &cancel)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Cancelled);
        assert!(
            e.message.contains("bosh task 7") && !e.message.contains("s3cret"),
            "{}",
            e.message
        );
        assert_eq!(e.endpoint, Some(format!("GET http://{addr}/tasks/7")));
    }

    #[test]
    fn settings_fill_in_before_the_environment() {
        let s = Settings {
            environment: Some("10.0.0.6".into()),
            client_secret: Some("from-spec".into()),
            ..Settings::default()
        };
        let c = Config::resolve(
            &s,
            vars(&[("BOSH_CLIENT", "admin"), ("BOSH_CLIENT_SECRET", "env")]),
        )
        .unwrap();
        assert_eq!(
            (c.url.as_str(), c.client.as_str(), c.secret.as_str()),
            ("https://10.0.0.6:25555", "admin", "from-spec")
        );
        assert!(
            !format!("{c:?} {s:?}").contains("from-spec"),
            "secrets never in Debug"
        );
    }
}
