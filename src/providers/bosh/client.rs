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
//! - Idempotent requests (GET, DELETE, the token request) are retried with exponential
//!   backoff (200 ms × 2^n, at most [`MAX_ATTEMPTS`] attempts) on 5xx answers and
//!   connection errors. Deploys have their own rule, see [`Client::deploy`].

use crate::providers::url_segment;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::Mutex;

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a retryable request is tried.
pub const MAX_ATTEMPTS: u32 = 5;

/// How often a running task is polled: the first polls come quickly (short tasks end
/// within milliseconds), then every [`POLL_INTERVAL`].
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const FIRST_POLL: Duration = Duration::from_millis(5);

/// A failed Director call or bad client configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BoshError {
    /// What went wrong, naming the endpoint and what to do.
    pub message: String,
    /// The HTTP status, when the Director answered.
    pub status: Option<u16>,
    /// Whether repeating the same call may succeed (connection errors, 5xx).
    pub retryable: bool,
}

impl BoshError {
    fn config(message: impl Into<String>) -> BoshError {
        BoshError {
            message: message.into(),
            status: None,
            retryable: false,
        }
    }
}

/// Where and as whom to reach the Director.
#[derive(Debug, Clone, Default)]
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

impl Config {
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
            return Err(BoshError::config(
                "BOSH_ENVIRONMENT is not set: a bosh resource is used, so set \
                 BOSH_ENVIRONMENT to the Director's URL or host, and BOSH_CLIENT and \
                 BOSH_CLIENT_SECRET",
            ));
        };
        let url = normalize_url(&env);
        let (Some(client), Some(secret)) = (var("BOSH_CLIENT"), var("BOSH_CLIENT_SECRET")) else {
            return Err(BoshError::config(format!(
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
        BoshError::config(format!(
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
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    config: Config,
    auth: Auth,
    token: Mutex<Option<String>>,
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

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(6))
}

impl Client {
    /// Builds the HTTP client and discovers the auth type from `GET /info`.
    ///
    /// # Errors
    /// The CA cannot be read or parsed, or the Director cannot be asked (a certificate
    /// error names `BOSH_CA_CERT`).
    pub async fn connect(config: &Config) -> Result<Client, BoshError> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &config.ca_cert {
            let pem = ca_pem(ca)?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                BoshError::config(format!("BOSH_CA_CERT is not a PEM certificate: {e}"))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| {
            BoshError::config(format!("cannot build the HTTP client for BOSH: {e}"))
        })?;
        let mut client = Client {
            http,
            config: config.clone(),
            auth: Auth::Basic,
            token: Mutex::new(None),
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
        BoshError {
            message: format!(
                "bosh {method} {path} (BOSH_ENVIRONMENT={}): {what}",
                self.config.url
            ),
            status,
            retryable: false,
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
        err.retryable = !tls;
        err
    }

    /// A fresh UAA token.
    async fn fetch_token(&self, token_url: &str) -> Result<String, BoshError> {
        let m = Method::POST;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self
                .http
                .post(token_url)
                .basic_auth(&self.config.client, Some(&self.config.secret))
                .header("Accept", "application/json")
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await;
            let err = match resp {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    return v
                        .get("access_token")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            self.error(&m, token_url, Some(200), "the UAA answer has no token")
                        });
                }
                Ok(r) => {
                    let status = r.status();
                    let mut e = self.error(
                        &m,
                        token_url,
                        Some(status.as_u16()),
                        &format!(
                            "UAA refused the token request ({status}); check BOSH_CLIENT and \
                             BOSH_CLIENT_SECRET"
                        ),
                    );
                    e.retryable = status.is_server_error();
                    e
                }
                Err(e) => self.send_error(&m, token_url, &e),
            };
            if !err.retryable || attempt >= MAX_ATTEMPTS {
                return Err(err);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
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
                err.retryable = true;
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
        let mut e = self.error(method, path, Some(code), &what);
        e.retryable = a.status.is_server_error();
        e
    }

    /// An idempotent request, retried with backoff on 5xx and connection errors.
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.send_once(&method, path, body, range).await {
                Ok(a) if a.status.as_u16() < 400 || accept.contains(&a.status) => return Ok(a),
                Ok(a) => self.refusal(&method, path, &a),
                Err(e) => e,
            };
            if !err.retryable || attempt >= MAX_ATTEMPTS {
                return Err(err);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
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
    pub async fn deploy(
        &self,
        name: &str,
        manifest: &str,
        same: impl Fn(&str) -> bool,
    ) -> Result<Option<u64>, BoshError> {
        let m = Method::POST;
        let path = "/deployments";
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > 1 {
                if let Some(id) = self.active_tasks(name).await?.first() {
                    return Ok(Some(*id));
                }
                if let Some(current) = self.manifest(name).await? {
                    if same(&current) {
                        return Ok(None);
                    }
                }
            }
            let err = match self.send_once(&m, path, Body::Yaml(manifest), None).await {
                Ok(a) => match a.task_id() {
                    Some(id) => return Ok(Some(id)),
                    None => self.refusal(&m, path, &a),
                },
                Err(e) => e,
            };
            if !err.retryable || attempt >= MAX_ATTEMPTS {
                return Err(err);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
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
    /// [`event_line`]) to `progress`. `done` is success; `error`, `cancelled` and
    /// `timeout` are errors naming `deployment`, the task id and the task's result.
    ///
    /// # Errors
    /// The task failed, or the Director stopped answering.
    pub async fn follow_task(
        &self,
        id: u64,
        deployment: &str,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), BoshError> {
        let mut offset = 0u64;
        let mut pending = String::new();
        let mut wait = FIRST_POLL;
        loop {
            let task = self.task(id).await?;
            let new = self.events_from(id, offset).await?;
            offset += new.len() as u64;
            pending.push_str(&new);
            while let Some(pos) = pending.find('\n') {
                let line: String = pending.drain(..=pos).collect();
                if let Some(msg) = event_line(&line) {
                    progress(&msg);
                }
            }
            match task.state.as_str() {
                "done" => return Ok(()),
                "error" | "cancelled" | "timeout" => {
                    return Err(BoshError {
                        message: format!(
                            "deployment {deployment}: BOSH task {id} ended in state `{}`: {} \
                             (see `bosh task {id}` on {})",
                            task.state, task.result, self.config.url
                        ),
                        status: None,
                        retryable: false,
                    })
                }
                _ => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(POLL_INTERVAL);
                }
            }
        }
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

/// A short progress line for one event line of a task, e.g.
/// `Updating instance redis/0 (started)`; `None` for lines that are not events.
#[must_use]
pub fn event_line(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    if let Some(msg) = v.pointer("/error/message").and_then(Value::as_str) {
        return Some(format!("error: {msg}"));
    }
    let stage = v.get("stage").and_then(Value::as_str)?;
    let mut s = stage.to_string();
    if let Some(t) = v.get("task").and_then(Value::as_str) {
        s.push(' ');
        s.push_str(t);
    }
    if let Some(st) = v.get("state").and_then(Value::as_str) {
        s.push_str(&format!(" ({st})"));
    }
    Some(s)
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
    fn event_lines_are_short() {
        let l = r#"{"time":1,"stage":"Updating instance","tags":["redis"],"total":3,"task":"redis/0","index":1,"state":"started","progress":0}"#;
        assert_eq!(
            event_line(l).as_deref(),
            Some("Updating instance redis/0 (started)")
        );
        let e = r#"{"time":1,"error":{"code":1,"message":"boom"}}"#;
        assert_eq!(event_line(e).as_deref(), Some("error: boom"));
        assert_eq!(event_line("junk"), None);
    }
}
