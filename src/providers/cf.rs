//! A thin Cloud Foundry API v3 client for capacity reporting (read only): UAA password
//! grant as the cf CLI does it (client `cf`, empty secret), then the paginated
//! `/v3/apps`, `/v3/processes`, `/v3/processes/{guid}/stats`, `/v3/isolation_segments`
//! and each segment's spaces relationship. Every error names the method, URL and the CF
//! API it was asked of, never the credentials. Requests time out after 30 s; transient
//! failures are retried by the one policy with few attempts (the capacity service must
//! answer within its budget).

use crate::providers::retry::{self, Policy};
use crate::providers::{url_segment, ErrorKind, ProviderError};
use futures::{StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest page the Cloud Controller serves: fewer round trips for big foundations.
const PER_PAGE: usize = 5000;

/// Stats requests in flight at once (one per process: the API has no bulk stats).
const STATS_CONCURRENCY: usize = 32;

/// Transient failures: three attempts, 200 ms apart and doubling.
const POLICY: Policy = Policy {
    first_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(2),
    attempts: 3,
    jitter: false,
};

/// Where and as whom to reach the Cloud Controller. `Debug` never shows the password.
#[derive(Clone, Default)]
pub struct Config {
    /// The API URL, e.g. `https://api.sys.example.com`.
    pub api_url: String,
    pub username: String,
    pub password: String,
    /// A PEM CA certificate (text or file path) to trust besides the system roots.
    pub ca_cert: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("api_url", &self.api_url)
            .field("username", &self.username)
            .field("password", &"(redacted)")
            .finish()
    }
}

/// What the Cloud Controller said, raw: ops turns it into capacity data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub apps: Vec<Value>,
    pub processes: Vec<Value>,
    /// Process guid → its stats' `resources`.
    pub stats: HashMap<String, Vec<Value>>,
    pub segments: Vec<Value>,
    /// Segment guid → the guids of the spaces assigned to it.
    pub segment_spaces: HashMap<String, Vec<String>>,
}

/// A Cloud Controller client. (No `Debug`: it holds credentials.)
pub struct Client {
    http: reqwest::Client,
    config: Config,
    token_url: String,
    token: Mutex<Option<String>>,
}

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
    /// Builds the HTTP client and finds the UAA from the API's root (`GET /`,
    /// `links.uaa` or `links.login`).
    ///
    /// # Errors
    /// A CA that cannot be read, or a Cloud Controller that cannot be asked (the error
    /// names the CF API URL).
    pub async fn connect(config: &Config) -> Result<Client, ProviderError> {
        let mut config = config.clone();
        config.api_url = config.api_url.trim().trim_end_matches('/').to_string();
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &config.ca_cert {
            let pem = if ca.contains("-----BEGIN") {
                ca.as_bytes().to_vec()
            } else {
                std::fs::read(ca).map_err(|e| {
                    ProviderError::invalid(format!(
                        "cannot read the CF CA certificate {ca}: {e}; give a PEM file or inline PEM"
                    ))
                })?
            };
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                ProviderError::invalid(format!("the CF CA certificate is not PEM: {e}"))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| {
            ProviderError::invalid(format!("cannot build the HTTP client for CF: {e}"))
        })?;
        let mut client = Client {
            http,
            token_url: String::new(),
            config,
            token: Mutex::new(None),
        };
        let root = client.get_raw("/", None).await?;
        let uaa = root
            .pointer("/links/uaa/href")
            .or_else(|| root.pointer("/links/login/href"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                client.error(
                    &Method::GET,
                    "/",
                    Some(200),
                    "the API root names no UAA (links.uaa); is this a Cloud Foundry API URL?",
                )
            })?;
        client.token_url = format!("{}/oauth/token", uaa.trim_end_matches('/'));
        Ok(client)
    }

    /// The CF API URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.config.api_url
    }

    fn error(&self, method: &Method, path: &str, status: Option<u16>, what: &str) -> ProviderError {
        let url = if path.contains("://") {
            path.to_string()
        } else {
            format!("{}{path}", self.config.api_url)
        };
        let e = ProviderError::of(
            status.map_or(ErrorKind::Retryable, ErrorKind::from_status),
            format!("cf {method} {url} (CF API {}): {what}", self.config.api_url),
        )
        .at(format!("{method} {url}"));
        match status {
            Some(s) => e.with_status(s),
            None => e,
        }
    }

    async fn fetch_token(&self) -> Result<String, ProviderError> {
        let m = Method::POST;
        let once = || async {
            let resp = self
                .http
                .post(&self.token_url)
                .basic_auth("cf", Some(""))
                .header("Accept", "application/json")
                .form(&[
                    ("grant_type", "password"),
                    ("username", self.config.username.as_str()),
                    ("password", self.config.password.as_str()),
                ])
                .send()
                .await
                .map_err(|e| {
                    self.error(
                        &m,
                        &self.token_url,
                        None,
                        &format!(
                            "request failed: {}; check that the UAA is reachable",
                            chain(&e)
                        ),
                    )
                })?;
            let status = resp.status();
            if !status.is_success() {
                return Err(self.error(
                    &m,
                    &self.token_url,
                    Some(status.as_u16()),
                    &format!("UAA refused the password grant ({status}); check the CF username and password"),
                ));
            }
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            v.get("access_token")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    self.error(
                        &m,
                        &self.token_url,
                        Some(200),
                        "the UAA answer has no token",
                    )
                })
        };
        retry::run(POLICY, retry::transient, once)
            .await
            .map_err(|(e, _)| e)
    }

    async fn token(&self, stale: Option<&str>) -> Result<String, ProviderError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref() {
            if Some(t.as_str()) != stale {
                return Ok(t.clone());
            }
        }
        let t = self.fetch_token().await?;
        *guard = Some(t.clone());
        Ok(t)
    }

    /// One GET, retried on transient failures; `token` is sent as a bearer token.
    async fn get_raw(&self, path: &str, token: Option<&str>) -> Result<Value, ProviderError> {
        let m = Method::GET;
        let url = if path.contains("://") {
            path.to_string()
        } else {
            format!("{}{path}", self.config.api_url)
        };
        let once = || async {
            let mut req = self.http.get(&url).header("Accept", "application/json");
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| {
                self.error(
                    &m,
                    path,
                    None,
                    &format!(
                        "request failed: {}; check the CF API URL and that the Cloud Controller is reachable",
                        chain(&e)
                    ),
                )
            })?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                let detail = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/errors/0/detail")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| text.chars().take(200).collect());
                return Err(self.error(
                    &m,
                    path,
                    Some(status.as_u16()),
                    &format!("{status}: {detail}"),
                ));
            }
            serde_json::from_str(&text).map_err(|e| {
                self.error(
                    &m,
                    path,
                    Some(status.as_u16()),
                    &format!("the answer is not JSON: {e}"),
                )
            })
        };
        retry::run(POLICY, retry::transient, once)
            .await
            .map_err(|(e, _)| e)
    }

    /// An authenticated GET; a 401 fetches a new token once and asks again.
    async fn get(&self, path: &str) -> Result<Value, ProviderError> {
        let t = self.token(None).await?;
        match self.get_raw(path, Some(&t)).await {
            Err(e) if e.status == Some(StatusCode::UNAUTHORIZED.as_u16()) => {
                let t = self.token(Some(&t)).await?;
                self.get_raw(path, Some(&t)).await
            }
            other => other,
        }
    }

    /// All resources of a paginated list, following `pagination.next.href`.
    async fn all(&self, path: &str) -> Result<Vec<Value>, ProviderError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut next = Some(format!("{path}{sep}per_page={PER_PAGE}"));
        let mut out = Vec::new();
        let mut pages = 0usize;
        while let Some(p) = next.take() {
            let v = self.get(&p).await?;
            if let Some(r) = v.get("resources").and_then(Value::as_array) {
                out.extend(r.iter().cloned());
            }
            pages += 1;
            // A server whose `next` never ends would loop forever.
            if pages > 100_000 {
                return Err(self.error(&Method::GET, path, None, "more than 100000 pages"));
            }
            next = v
                .pointer("/pagination/next/href")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        Ok(out)
    }

    /// Everything capacity needs, the stats of every process with instances fetched
    /// `STATS_CONCURRENCY` at a time.
    ///
    /// # Errors
    /// The first request that failed (after retries), naming its URL and the CF API.
    pub async fn snapshot(&self) -> Result<Snapshot, ProviderError> {
        let (apps, processes, segments) = tokio::try_join!(
            self.all("/v3/apps"),
            self.all("/v3/processes"),
            self.all("/v3/isolation_segments"),
        )?;
        let with_instances: Vec<String> = processes
            .iter()
            .filter(|p| p.get("instances").and_then(Value::as_u64).unwrap_or(0) > 0)
            .filter_map(|p| p.get("guid").and_then(Value::as_str).map(str::to_string))
            .collect();
        let stats: HashMap<String, Vec<Value>> = futures::stream::iter(with_instances)
            .map(|g| async move {
                let v = self
                    .get(&format!("/v3/processes/{}/stats", url_segment(&g)))
                    .await?;
                let r = v
                    .get("resources")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                Ok::<_, ProviderError>((g, r))
            })
            .buffer_unordered(STATS_CONCURRENCY)
            .try_collect()
            .await?;
        let mut segment_spaces = HashMap::new();
        for s in &segments {
            let Some(g) = s.get("guid").and_then(Value::as_str) else {
                continue;
            };
            if s.get("name").and_then(Value::as_str) == Some("shared") {
                continue;
            }
            let v = self
                .get(&format!(
                    "/v3/isolation_segments/{}/relationships/spaces",
                    url_segment(g)
                ))
                .await?;
            let spaces = v
                .get("data")
                .and_then(Value::as_array)
                .map(|d| {
                    d.iter()
                        .filter_map(|x| x.get("guid").and_then(Value::as_str).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            segment_spaces.insert(g.to_string(), spaces);
        }
        Ok(Snapshot {
            apps,
            processes,
            stats,
            segments,
            segment_spaces,
        })
    }
}
