//! The capacity service behind `anvil capacity` and the `/api/*` routes: fetches the
//! Cloud Controller and the Director in parallel, keeps the answer for a TTL (default
//! 5 min; concurrent callers wait for one fetch), retries the Director 3× with 1/2/4 s
//! backoff and then answers in degraded mode (apps only, `bosh_available: false`), and
//! fails the request when the Cloud Controller fails. Every attempt is bounded by 30 s.
//! The computation is `capacity`'s; this module is the IO and the clock (tokio's, so
//! tests run on a paused clock).

use crate::capacity::{self, CfData, Dashboard, DirectorVm, ProcessData, Segment, VmTypes};
use crate::providers::bosh::client::Client as BoshClient;
use crate::providers::cf::{self, Snapshot};
use crate::providers::retry::{self, Policy};
use crate::providers::{CancellationToken, ProviderError};
use backon::ExponentialBuilder;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub use crate::capacity::{AppReport, Cell, Dashboard as DashboardData, Metadata};
pub use crate::providers::bosh::client::{
    normalize_url as normalize_bosh_url, Config as BoshConfig,
};
pub use crate::providers::cf::Config as CfConfig;

/// How long one attempt at either API may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Deployments whose VMs are fetched at once.
const VMS_CONCURRENCY: usize = 8;

/// Why the capacity service could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// The Cloud Controller failed: no answer without apps.
    #[error("the CF API {url} failed: {source}")]
    Cf {
        url: String,
        #[source]
        source: ProviderError,
    },
    #[error("the CF API {url} did not answer within {secs} s; check that it is reachable")]
    CfTimeout { url: String, secs: u64 },
    #[error("capacity cache file {path}: {message}")]
    CacheFile { path: PathBuf, message: String },
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cf: CfConfig,
    /// The Director; `None` when not configured (cells are then never available).
    pub bosh: Option<BoshConfig>,
    /// How long an answer is served from the cache.
    pub ttl: Duration,
    /// The first delay between Director attempts (doubling): 1 s gives 1/2/4 s.
    pub bosh_backoff: Duration,
    /// Director retries after the first attempt.
    pub bosh_retries: u32,
}

impl Settings {
    /// The defaults around the two endpoints: 5 min TTL, 3 Director retries 1/2/4 s.
    #[must_use]
    pub fn new(cf: CfConfig, bosh: Option<BoshConfig>) -> Settings {
        Settings {
            cf,
            bosh,
            ttl: Duration::from_secs(300),
            bosh_backoff: Duration::from_secs(1),
            bosh_retries: 3,
        }
    }
}

/// `cache_status` of `/api/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStatus {
    pub cells_cached: bool,
    pub apps_cached: bool,
}

/// `/api/health`: `cf_api` ok/error, `bosh_api` ok/degraded/error/not_configured (as of
/// the last fetch; `unknown` before one), and what the cache holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub cf_api: String,
    pub bosh_api: String,
    pub cache_status: CacheStatus,
}

struct Entry {
    fetched: Instant,
    dashboard: Dashboard,
    /// `dashboard` as JSON with `metadata.cached` true, serialised once per fetch: a
    /// cached `/api/dashboard` is then a copy of a pointer, not a clone and a
    /// serialisation of 20,000 apps.
    cached_json: Arc<[u8]>,
}

impl Entry {
    fn new(fetched: Instant, dashboard: Dashboard) -> Entry {
        let mut shown = dashboard.clone();
        shown.metadata.cached = true;
        // Serialising plain strings and numbers cannot fail.
        let cached_json = serde_json::to_vec(&shown).unwrap_or_default().into();
        Entry {
            fetched,
            dashboard,
            cached_json,
        }
    }
}

/// The service: one per server or command; share it behind an `Arc`.
pub struct Service {
    settings: Settings,
    cache: tokio::sync::Mutex<Option<Entry>>,
    status: std::sync::Mutex<(String, String)>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The raw answers, before computing.
struct Fetched {
    cf: CfData,
    bosh: Option<(Vec<DirectorVm>, VmTypes)>,
}

impl Service {
    #[must_use]
    pub fn new(settings: Settings) -> Service {
        let bosh = if settings.bosh.is_some() {
            "unknown"
        } else {
            "not_configured"
        };
        Service {
            settings,
            cache: tokio::sync::Mutex::new(None),
            status: std::sync::Mutex::new(("unknown".into(), bosh.into())),
        }
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn set_status(&self, cf: &str, bosh: Option<&str>) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = cf.to_string();
        if let Some(b) = bosh {
            s.1 = b.to_string();
        }
    }

    /// The dashboard: from the cache while it is younger than the TTL (then
    /// `metadata.cached` is true), else fetched anew. Concurrent callers share one fetch.
    ///
    /// # Errors
    /// The Cloud Controller failed or timed out (the error names its URL).
    pub async fn dashboard(&self) -> Result<Dashboard, CapacityError> {
        let mut cache = self.cache.lock().await;
        if let Some(e) = cache.as_ref() {
            if e.fetched.elapsed() < self.settings.ttl {
                let mut d = e.dashboard.clone();
                d.metadata.cached = true;
                return Ok(d);
            }
        }
        let d = self.fetch().await?;
        *cache = Some(Entry::new(Instant::now(), d.clone()));
        Ok(d)
    }

    /// [`Service::dashboard`] as JSON (`/api/dashboard`'s body): from the cache it is the
    /// bytes serialised once when the answer was fetched.
    ///
    /// # Errors
    /// The Cloud Controller failed or timed out (the error names its URL).
    pub async fn dashboard_json(&self) -> Result<Arc<[u8]>, CapacityError> {
        {
            let cache = self.cache.lock().await;
            if let Some(e) = cache.as_ref() {
                if e.fetched.elapsed() < self.settings.ttl {
                    return Ok(e.cached_json.clone());
                }
            }
        }
        // Stale or empty: fetch (another caller may have fetched meanwhile; then this
        // is served from its answer).
        let d = self.dashboard().await?;
        Ok(serde_json::to_vec(&d).unwrap_or_default().into())
    }

    /// `/api/health` as of now.
    pub async fn health(&self) -> Health {
        let (cells_cached, apps_cached) = match self.cache.try_lock() {
            Ok(c) => match c.as_ref() {
                Some(e) if e.fetched.elapsed() < self.settings.ttl => {
                    (e.dashboard.metadata.bosh_available, true)
                }
                _ => (false, false),
            },
            // A fetch is under way: nothing fresh is cached yet.
            Err(_) => (false, false),
        };
        let s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Health {
            cf_api: s.0,
            bosh_api: s.1,
            cache_status: CacheStatus {
                cells_cached,
                apps_cached,
            },
        }
    }

    async fn fetch(&self) -> Result<Dashboard, CapacityError> {
        let (cf, bosh) = tokio::join!(self.fetch_cf(), self.fetch_bosh());
        let cf = match cf {
            Ok(cf) => cf,
            Err(e) => {
                self.set_status("error", None);
                return Err(e);
            }
        };
        self.set_status(
            "ok",
            Some(match (&self.settings.bosh, &bosh) {
                (None, _) => "not_configured",
                (Some(_), Some(_)) => "ok",
                (Some(_), None) => "degraded",
            }),
        );
        let f = Fetched { cf, bosh };
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Ok(capacity::dashboard(
            &f.cf,
            f.bosh.as_ref().map(|(v, t)| (v.as_slice(), t)),
            timestamp,
        ))
    }

    async fn fetch_cf(&self) -> Result<CfData, CapacityError> {
        let url = self.settings.cf.api_url.trim_end_matches('/').to_string();
        let attempt = async {
            let client = cf::Client::connect(&self.settings.cf).await?;
            client.snapshot().await
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(Ok(s)) => Ok(cf_data(&s)),
            Ok(Err(source)) => Err(CapacityError::Cf { url, source }),
            Err(_) => Err(CapacityError::CfTimeout {
                url,
                secs: ATTEMPT_TIMEOUT.as_secs(),
            }),
        }
    }

    /// The Director's VMs and cloud config, retried; `None` once retries are spent (or
    /// when no Director is configured).
    async fn fetch_bosh(&self) -> Option<(Vec<DirectorVm>, VmTypes)> {
        let config = self.settings.bosh.as_ref()?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.bosh_backoff)
            .with_max_delay(self.settings.bosh_backoff * 8)
            .with_factor(2.0)
            .with_max_times(self.settings.bosh_retries as usize);
        let once = || async {
            match tokio::time::timeout(ATTEMPT_TIMEOUT, director_cells(config)).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::retryable(format!(
                    "the Director {} did not answer within {} s",
                    config.url,
                    ATTEMPT_TIMEOUT.as_secs()
                ))),
            }
        };
        match retry::run_with(backoff, |_: &ProviderError| true, once).await {
            Ok(v) => Some(v),
            Err((e, attempts)) => {
                tracing::warn!(
                    "capacity: the Director failed {attempts} times, serving apps only: {e}"
                );
                None
            }
        }
    }

    /// Puts an answer fetched `age` ago into the cache (the CLI's cache file).
    pub async fn seed(&self, dashboard: Dashboard, age: Duration) {
        let now = Instant::now();
        let fetched = now.checked_sub(age).unwrap_or(now);
        self.set_status(
            "ok",
            Some(if dashboard.metadata.bosh_available {
                "ok"
            } else if self.settings.bosh.is_some() {
                "degraded"
            } else {
                "not_configured"
            }),
        );
        *self.cache.lock().await = Some(Entry::new(fetched, dashboard));
    }
}

/// One attempt at the Director: every deployment's VMs (cells are picked by
/// `capacity`) and the default cloud config's vm_types. One HTTP attempt per request:
/// the service retries whole attempts on its own schedule.
async fn director_cells(config: &BoshConfig) -> Result<(Vec<DirectorVm>, VmTypes), ProviderError> {
    let once = Policy {
        attempts: 1,
        ..Policy::HTTP
    };
    let client = BoshClient::connect_with(config, once).await?;
    let cancel = CancellationToken::new();
    let names = client.deployment_names().await?;
    let client = &client;
    let cancel = &cancel;
    let per_deployment: Vec<Vec<DirectorVm>> = futures::stream::iter(names)
        .map(|name| async move {
            let vms = client.vms_full(&name, cancel).await?.unwrap_or_default();
            Ok::<_, ProviderError>(
                vms.into_iter()
                    .map(|vm| DirectorVm {
                        deployment: name.clone(),
                        vm,
                    })
                    .collect(),
            )
        })
        .buffered(VMS_CONCURRENCY)
        .try_collect()
        .await?;
    let types = match client.latest_config("cloud", "default").await? {
        Some((_, text)) => VmTypes::from_cloud_config(&text).unwrap_or_else(|e| {
            tracing::warn!(
                "capacity: the Director's cloud config is not YAML ({e}); disk sizes unknown"
            );
            VmTypes::default()
        }),
        None => VmTypes::default(),
    };
    Ok((per_deployment.into_iter().flatten().collect(), types))
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The Cloud Controller's raw answers as capacity data.
fn cf_data(s: &Snapshot) -> CfData {
    let mut processes: HashMap<&str, Vec<ProcessData>> = HashMap::new();
    for p in &s.processes {
        let guid = str_at(p, "/guid");
        let used_bytes = s
            .stats
            .get(guid)
            .map(|st| {
                st.iter()
                    .filter(|i| str_at(i, "/state") == "RUNNING")
                    .filter_map(|i| i.pointer("/usage/mem").and_then(Value::as_u64))
                    .collect()
            })
            .unwrap_or_default();
        processes
            .entry(str_at(p, "/relationships/app/data/guid"))
            .or_default()
            .push(ProcessData {
                guid: guid.to_string(),
                instances: p.get("instances").and_then(Value::as_u64).unwrap_or(0),
                memory_in_mb: p.get("memory_in_mb").and_then(Value::as_u64).unwrap_or(0),
                used_bytes,
            });
    }
    let apps = s
        .apps
        .iter()
        .map(|a| capacity::AppData {
            guid: str_at(a, "/guid").to_string(),
            name: str_at(a, "/name").to_string(),
            state: str_at(a, "/state").to_string(),
            space_guid: str_at(a, "/relationships/space/data/guid").to_string(),
            processes: processes.remove(str_at(a, "/guid")).unwrap_or_default(),
        })
        .collect();
    let segments = s
        .segments
        .iter()
        .map(|g| Segment {
            guid: str_at(g, "/guid").to_string(),
            name: str_at(g, "/name").to_string(),
        })
        .collect();
    let space_segments = s
        .segment_spaces
        .iter()
        .flat_map(|(seg, spaces)| spaces.iter().map(move |sp| (sp.clone(), seg.clone())))
        .collect();
    CfData {
        apps,
        segments,
        space_segments,
    }
}

/// What the CLI keeps between runs: the answer, when, and for which endpoints.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    cf_api: String,
    bosh: Option<String>,
    /// Unix seconds of the fetch.
    fetched_at: i64,
    dashboard: Dashboard,
}

/// `anvil capacity`: the dashboard, through the cache file when one is given (a second
/// run within the TTL reads it instead of asking the APIs; the file is rewritten after
/// every fetch).
///
/// # Errors
/// As [`Service::dashboard`], or a cache file that cannot be written.
pub async fn report(settings: Settings, cache: Option<&Path>) -> Result<Dashboard, CapacityError> {
    let service = Service::new(settings);
    let key = (
        service.settings.cf.api_url.clone(),
        service.settings.bosh.as_ref().map(|b| b.url.clone()),
    );
    let now = chrono::Utc::now().timestamp();
    if let Some(path) = cache {
        // An unreadable or foreign cache file is only a miss.
        if let Some(f) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<CacheFile>(&t).ok())
        {
            let age = u64::try_from(now - f.fetched_at).unwrap_or(u64::MAX);
            if (f.cf_api.clone(), f.bosh.clone()) == key {
                service.seed(f.dashboard, Duration::from_secs(age)).await;
            }
        }
    }
    let d = service.dashboard().await?;
    if let (Some(path), false) = (cache, d.metadata.cached) {
        let f = CacheFile {
            cf_api: key.0,
            bosh: key.1,
            fetched_at: now,
            dashboard: d.clone(),
        };
        let text = serde_json::to_string(&f).map_err(|e| CapacityError::CacheFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        std::fs::write(path, text).map_err(|e| CapacityError::CacheFile {
            path: path.to_path_buf(),
            message: format!("{e}; give --cache a writable path"),
        })?;
    }
    Ok(d)
}

/// What `anvil plan` does with its capacity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckMode {
    /// No check (no Director call).
    Off,
    /// Warn when the plan needs more than the cells have free.
    #[default]
    Warn,
    /// Fail the plan (exit 1) instead.
    Error,
}

/// The plan-time capacity check: for each Director (provider instance) whose
/// `bosh_deployment`s the plan creates, updates or replaces, what they add (their
/// manifests × the Director's cloud config, growth only for updates) against what the
/// Director's cells have free. Says nothing with enough room or without cells.
///
/// # Errors
/// With [`CheckMode::Error`]: [`OpsError::Usage`] saying both numbers, or that the
/// Director could not be asked. With `Warn` the same texts are warnings.
pub(crate) async fn plan_check(
    model: &crate::model::Model,
    plan: &crate::plan::Plan,
    mode: CheckMode,
    sink: &super::EventSink,
) -> Result<(), super::OpsError> {
    use crate::plan::Action;
    if mode == CheckMode::Off {
        return Ok(());
    }
    let mut by_director: std::collections::BTreeMap<&str, Vec<ManifestChange>> =
        std::collections::BTreeMap::new();
    for c in &plan.changes {
        if c.ty != "bosh_deployment"
            || !matches!(c.action, Action::Create | Action::Update | Action::Replace)
        {
            continue;
        }
        let after = c
            .after
            .as_ref()
            .and_then(|a| a.get("manifest"))
            .and_then(|v| v.known())
            .and_then(|v| v.as_str().map(str::to_string));
        let before = match c.action {
            Action::Update => c
                .before
                .as_ref()
                .and_then(|b| b.get("manifest"))
                .and_then(|v| v.as_str().map(str::to_string)),
            _ => None,
        };
        by_director
            .entry(c.provider.as_str())
            .or_default()
            .push((after, before));
    }
    for (provider, changes) in by_director {
        let outcome = check_director(model, provider, &changes).await;
        let problems = match outcome {
            Ok(p) => p,
            Err(e) => vec![format!(
                "capacity check skipped for {provider}: {e}; use --capacity-check=off to skip it"
            )],
        };
        if problems.is_empty() {
            continue;
        }
        if mode == CheckMode::Error {
            return Err(super::OpsError::Usage(format!(
                "{}; free capacity or use --capacity-check=warn",
                problems.join("; ")
            )));
        }
        for p in problems {
            let _ = sink.send(super::OpsEvent::Warning(p));
        }
    }
    Ok(())
}

/// A planned deployment's manifest and, for an update, the recorded one.
type ManifestChange = (Option<String>, Option<String>);

/// The sentences for one Director: empty when the plan fits.
async fn check_director(
    model: &crate::model::Model,
    provider: &str,
    changes: &[ManifestChange],
) -> Result<Vec<String>, ProviderError> {
    use crate::providers::bosh::client::Settings as BoshSettings;
    let settings = model
        .providers
        .iter()
        .find(|p| p.name() == provider)
        .map(|p| p.settings.clone())
        .unwrap_or_default();
    let settings: BoshSettings = serde_json::from_value(Value::Object(settings))
        .map_err(|e| ProviderError::invalid(format!("the {provider} settings do not fit: {e}")))?;
    let config = BoshConfig::resolve(&settings, crate::providers::env_var)?;
    let (vms, types) = match tokio::time::timeout(ATTEMPT_TIMEOUT, director_cells(&config)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ProviderError::retryable(format!(
                "the Director {} did not answer within {} s",
                config.url,
                ATTEMPT_TIMEOUT.as_secs()
            )))
        }
    };
    let cells = capacity::cells(&vms, &types, &[]);
    let free = capacity::Free::of(&cells);
    let mut need = capacity::Requirement::default();
    for (after, before) in changes {
        let Some(after) = after else { continue };
        let new = capacity::manifest_requirement(after, &types).unwrap_or_default();
        let old = before
            .as_deref()
            .and_then(|b| capacity::manifest_requirement(b, &types).ok())
            .unwrap_or_default();
        need = need.plus(new.beyond(&old));
    }
    Ok(match capacity::Check::of(&need, &free) {
        capacity::Check::Fits => Vec::new(),
        capacity::Check::Short(lines) => lines
            .into_iter()
            .map(|l| format!("{l} (cells of the Director {})", config.url))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    //! The service's clock logic on tokio's paused clock against in-process simulators:
    //! the TTL cache, the Director's retry budget and degraded mode, CF failures.
    use super::*;
    use crate::sim::bosh::{self, BoshSim};
    use crate::sim::cf::{self as cfsim, CfSim, Seed};

    async fn spawn(router: axum::Router) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
        format!("http://{addr}")
    }

    async fn cf() -> (CfSim, String) {
        let sim = CfSim::new(cfsim::SimConfig {
            data: Seed::generate(5, 1),
            seed: Some(3),
            ..cfsim::SimConfig::default()
        })
        .unwrap();
        let url = spawn(cfsim::router(sim.clone())).await;
        sim.set_base_url(&url);
        (sim, url)
    }

    async fn director(fail_rate: f64) -> (BoshSim, String) {
        let sim = BoshSim::new(bosh::SimConfig {
            faults: bosh::Faults {
                fail_rate,
                ..bosh::Faults::default()
            },
            seed: Some(1),
            ..bosh::SimConfig::default()
        })
        .unwrap();
        let url = spawn(bosh::router(sim.clone())).await;
        sim.set_base_url(&url);
        (sim, url)
    }

    fn settings(cf: &str, bosh: Option<&str>) -> Settings {
        Settings::new(
            CfConfig {
                api_url: cf.into(),
                username: "admin".into(),
                password: "admin".into(),
                ca_cert: None,
            },
            bosh.map(|u| BoshConfig {
                url: u.into(),
                client: "admin".into(),
                secret: "admin".into(),
                ca_cert: None,
            }),
        )
    }

    async fn requests(url: &str) -> u64 {
        let v: Value = reqwest::get(format!("{url}/_sim/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["requests"].as_u64().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_call_within_the_ttl_is_served_from_the_cache() {
        let (_c, cf_url) = cf().await;
        let (_b, bosh_url) = director(0.0).await;
        let s = Service::new(settings(&cf_url, Some(&bosh_url)));
        let first = s.dashboard().await.unwrap();
        assert!(!first.metadata.cached);
        assert!(first.metadata.bosh_available);
        assert_eq!(first.apps.len(), 5);
        let (cf_n, bosh_n) = (requests(&cf_url).await, requests(&bosh_url).await);
        tokio::time::advance(Duration::from_secs(299)).await;
        let second = s.dashboard().await.unwrap();
        assert!(second.metadata.cached);
        assert_eq!(second.apps, first.apps);
        assert_eq!(requests(&cf_url).await, cf_n);
        assert_eq!(requests(&bosh_url).await, bosh_n);
        assert!(s.health().await.cache_status.apps_cached);
        // Past the TTL: fetched again.
        tokio::time::advance(Duration::from_secs(2)).await;
        let third = s.dashboard().await.unwrap();
        assert!(!third.metadata.cached);
        assert!(requests(&cf_url).await > cf_n);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_director_is_retried_three_times_then_degraded() {
        let (_c, cf_url) = cf().await;
        let (_b, bosh_url) = director(1.0).await;
        let s = Service::new(settings(&cf_url, Some(&bosh_url)));
        let start = Instant::now();
        let d = s.dashboard().await.unwrap();
        // 1 + 2 + 4 s of backoff on the paused clock, nothing more.
        assert_eq!(start.elapsed().as_secs(), 7);
        assert!(!d.metadata.bosh_available);
        assert!(d.cells.is_empty());
        assert_eq!(d.apps.len(), 5);
        // One request per attempt (`/info` fails first), four attempts.
        assert_eq!(requests(&bosh_url).await, 4);
        let h = s.health().await;
        assert_eq!((h.cf_api.as_str(), h.bosh_api.as_str()), ("ok", "degraded"));
        assert!(!h.cache_status.cells_cached);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_cf_api_fails_the_request_naming_its_url() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let s = Service::new(settings(&url, None));
        let e = s.dashboard().await.unwrap_err().to_string();
        assert!(e.contains(&url), "{e}");
        assert_eq!(s.health().await.cf_api, "error");
        assert_eq!(s.health().await.bosh_api, "not_configured");
    }
}
