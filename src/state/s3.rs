//! The `s3://BUCKET/KEY` state backend (only with the `aws` feature): a workspace's state,
//! journal and lock as objects under the prefix `KEY/`, every change made with S3
//! conditional writes (`If-None-Match: *` to create, `If-Match: ETAG` to replace or
//! delete).
//!
//! | object (in BUCKET) | what |
//! |---|---|
//! | `KEY/<ws>.json` | the last checkpoint: `{"anvil_state":1,"journal_seq":N,"state":{…}}` |
//! | `KEY/<ws>.journal/<n>` | journal chunk `n` (records since the checkpoint, for `n > N`) |
//! | `KEY/<ws>.lock` | the lock holder ([`LockInfo`]) while a writer runs |
//!
//! **State.** Replaced with `If-Match` on the ETag read (created with `If-None-Match: *`),
//! so a writer that lost its lock can never overwrite a newer state (it gets
//! [`StateError::StaleState`]); a stored state of another lineage or a higher serial is
//! refused like the file backend does. Terraform 1.11's S3 backend writes the state
//! unconditionally and relies on its lock alone.
//!
//! **Journal.** As in the Vault backend (same chunk format): records go into numbered
//! chunk objects, each created with `If-None-Match: *`, written by a background task that
//! batches every record queued while the previous write was in flight (group commit).
//! Once the records since the last checkpoint outweigh the state, the engine checkpoints:
//! the state object is written with `journal_seq` = the last chunk it contains, then those
//! chunks are deleted. Load reads the state and then chunks `N+1, N+2, …` until one is
//! missing; a killed run leaves either the old state plus chunks (replayed; results at or
//! below the state's serial skipped) or the new state plus garbage chunks at or below its
//! `journal_seq` (ignored, and swept by the next whole-state write). Every record is
//! written once and states geometrically less often as they grow, so apply stays linear.
//!
//! **Lock.** Terraform 1.10+'s `use_lockfile` model with the lease it lacks: the lock
//! object is created with `If-None-Match: *`; a holder renews its lease (`expires`) every
//! lease/3 with `If-Match` on the lock's ETag (a failed renewal means the lock was lost);
//! an expired lock is taken over with `If-Match` on the dead holder's ETag, so of two
//! takers only one wins; release and `force-unlock` delete it with `If-Match`.
//!
//! Credentials, region and endpoint come from the standard AWS environment
//! (`AWS_ACCESS_KEY_ID`/`AWS_PROFILE`/…, `AWS_REGION`, `AWS_ENDPOINT_URL`) unless the URL
//! gives `?region=` or `?endpoint=`; with an endpoint, buckets are addressed path-style
//! (moto, MinIO). No credential is ever part of a message.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{oneshot, OnceCell};

use super::lock::whoami;
use super::remote_journal::{
    encode_snapshot, ChunkFailure, ChunkStart, ChunkStore, ChunkWriter, Due, QueuedJournal,
    Snapshot,
};
use super::vault::{decode_state, encode_view, head_bytes, Chunk, FORMAT};
use super::{
    parse_duration, Clock, Journal, Lock, LockInfo, State, StateBackend, StateError, SystemClock,
    DEFAULT_LEASE,
};

/// How often a waiting `lock` call looks again.
const POLL: Duration = Duration::from_millis(100);
/// Checkpoint once the journal since the last one holds this many bytes, or the state's
/// size if larger.
const MIN_CHECKPOINT_BYTES: u64 = 256 * 1024;
/// Largest journal chunk: small objects keep a crash's replay cheap; group commit rarely
/// gathers this much anyway.
const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// Object deletions in flight at once after a checkpoint.
const DELETE_CONCURRENCY: usize = 8;
/// Give up connecting after this long (an unreachable endpoint fails fast).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One S3 request attempt may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

const HELD: u8 = 0;
const LOST: u8 = 1;
const RELEASED: u8 = 2;

/// A parsed `s3://BUCKET/KEY?region=R&endpoint=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Url {
    pub(crate) bucket: String,
    /// The key prefix without surrounding slashes (may be empty: the bucket's root).
    pub(crate) prefix: String,
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
}

impl S3Url {
    /// Parse `url`.
    ///
    /// # Errors
    /// [`StateError::InvalidUrl`] naming what is wrong: not `s3://`, a bucket name S3
    /// refuses, an unknown query parameter, an endpoint that is not `http(s)://`.
    pub(crate) fn parse(url: &str) -> Result<S3Url, StateError> {
        // Never echo a query (an unknown parameter might carry a secret) or a password.
        let shown = super::redact_url(url.split('?').next().unwrap_or(url));
        let bad = |detail: String| StateError::InvalidUrl {
            url: shown.clone(),
            detail,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("an S3 state URL starts with s3://".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.contains('@') {
            return Err(bad(
                "credentials in the URL are refused; they come from the AWS environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...)".into(),
            ));
        }
        if let Some(why) = bucket_problem(bucket) {
            return Err(bad(format!(
                "bucket name {bucket:?} {why}; use s3://BUCKET/KEY with a bucket name of 3-63 lowercase letters, digits, '-' and '.'"
            )));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
            && !prefix.is_empty()
        {
            return Err(bad(format!(
                "key prefix {prefix:?} has an empty, '.' or '..' segment; use s3://BUCKET/KEY with KEY like team/anvil"
            )));
        }
        let (mut region, mut endpoint) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            match k {
                "region" if !v.is_empty() => region = Some(v),
                "endpoint" if v.starts_with("http://") || v.starts_with("https://") => {
                    endpoint = Some(v.trim_end_matches('/').to_string());
                }
                "endpoint" => {
                    return Err(bad(format!(
                        "endpoint {v:?} is not an http:// or https:// URL"
                    )))
                }
                "region" => return Err(bad("region= is empty; use e.g. ?region=eu-west-1".into())),
                other => {
                    return Err(bad(format!(
                        "unknown parameter {other:?}; the S3 backend takes region= and endpoint= (credentials come from the AWS environment, never the URL)"
                    )))
                }
            }
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix,
            region,
            endpoint,
        })
    }

    /// The object key of `name` under the prefix.
    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// `s3://BUCKET/KEY/name`, for messages.
    fn location(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name))
    }
}

/// Why S3 would refuse `name` as a bucket name, if it would.
fn bucket_problem(name: &str) -> Option<&'static str> {
    if name.len() < 3 || name.len() > 63 {
        return Some("must be 3 to 63 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Some("may contain only lowercase letters, digits, '-' and '.'");
    }
    let first_last_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_last_ok(name.chars().next()) || !first_last_ok(name.chars().last()) {
        return Some("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return Some("must not contain two adjacent periods");
    }
    None
}

// ------------------------------------------------------------------ S3 access

/// How an S3 request failed, as far as the backend's logic cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 404: no such key.
    NotFound,
    /// 412 (or 409 ConditionalRequestConflict): a conditional write lost a race.
    Precondition,
    /// Anything else.
    Other,
}

/// An S3 failure: its kind, and a message naming the endpoint and AWS error code.
#[derive(Debug, Clone)]
struct S3Error {
    kind: Kind,
    detail: String,
    hint: String,
}

/// Turn an SDK error into an [`S3Error`] naming `endpoint` and the AWS error code.
fn s3_error<E>(e: &SdkError<E>, endpoint: &str) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_string);
    let kind = match (status, code.as_deref()) {
        (_, Some("NoSuchKey")) | (Some(404), _) if code.as_deref() != Some("NoSuchBucket") => {
            Kind::NotFound
        }
        (_, Some("PreconditionFailed" | "ConditionalRequestConflict")) | (Some(412), _) => {
            Kind::Precondition
        }
        _ => Kind::Other,
    };
    let detail = match (&code, e) {
        (Some(code), _) => format!(
            "AWS error {code}{}: {} (endpoint {endpoint})",
            status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
            e.message().unwrap_or("no message")
        ),
        (None, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) => {
            format!("cannot reach S3 at {endpoint}: {}", DisplayErrorContext(e))
        }
        (None, _) => format!(
            "S3 request to {endpoint} failed{}: {}",
            status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
            DisplayErrorContext(e)
        ),
    };
    let hint = match code.as_deref() {
        Some(
            "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken"
            | "InvalidToken" | "AllAccessDisabled",
        ) => "check the AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and that they allow s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on the bucket (see docs/state.md)",
        Some("NoSuchBucket") => "create the bucket (with versioning on, see docs/state.md) or fix the bucket name in the state URL",
        Some("PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException") => "the bucket is in another region: add ?region=REGION to the state URL or set AWS_REGION",
        Some("NotImplemented") => "this S3 service does not support conditional writes (If-Match / If-None-Match), which the S3 backend needs",
        _ if matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) => "check that the endpoint is reachable (AWS_ENDPOINT_URL or ?endpoint= for S3 look-alikes, the network, a proxy) and that credentials are configured",
        _ => "see docs/state.md",
    };
    S3Error {
        kind,
        detail,
        hint: hint.to_string(),
    }
}

/// A conditional write.
#[derive(Debug, Clone, Copy)]
enum Cond<'a> {
    /// `If-None-Match: *`: only if the object does not exist.
    Create,
    /// `If-Match: ETAG`: only if the object is unchanged.
    Match(&'a str),
}

impl<'a> Cond<'a> {
    /// `Create` when nothing was read, else `Match` on the ETag read.
    fn on(etag: Option<&'a str>) -> Cond<'a> {
        etag.map_or(Cond::Create, Cond::Match)
    }
}

/// The settings a client is built from (cloneable, so a lock release on another thread
/// can build its own client).
#[derive(Debug, Clone)]
struct Settings {
    url: S3Url,
    /// `?endpoint=`, else `AWS_ENDPOINT_URL`, read at open.
    endpoint: Option<String>,
}

/// A bucket reached through the SDK.
#[derive(Debug, Clone)]
struct Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// For messages: the endpoint URL, or `https://s3.REGION.amazonaws.com`.
    endpoint: String,
}

impl Store {
    /// Load the AWS configuration and build the client.
    async fn connect(settings: &Settings) -> Result<Store, S3Error> {
        // One TLS stack: rustls on ring, like the rest of anvil (no aws-lc).
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
        if let Some(r) = &settings.url.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &settings.endpoint {
            loader = loader.endpoint_url(e);
        }
        let config = loader.load().await;
        let Some(region) = config.region().map(ToString::to_string) else {
            return Err(S3Error {
                kind: Kind::Other,
                detail: "no AWS region is configured".into(),
                hint: "add ?region=REGION to the state URL or set AWS_REGION".into(),
            });
        };
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            // moto, MinIO and other look-alikes serve buckets under the path, not the host.
            .force_path_style(settings.endpoint.is_some())
            .build();
        Ok(Store {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket: settings.url.bucket.clone(),
            endpoint: settings
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com")),
        })
    }

    /// The object's content and ETag, or `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, S3Error> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let err = s3_error(&e, &self.endpoint);
                return if err.kind == Kind::NotFound {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out.body.collect().await.map_err(|e| S3Error {
            kind: Kind::Other,
            detail: format!("reading the object body from {}: {e}", self.endpoint),
            hint: "check the network and run the command again".into(),
        })?;
        Ok(Some((body.into_bytes().to_vec(), etag)))
    }

    /// Write `body` under `cond`; returns the new ETag.
    async fn put(&self, key: &str, body: Vec<u8>, cond: Cond<'_>) -> Result<String, S3Error> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        let req = match cond {
            Cond::Create => req.if_none_match("*"),
            Cond::Match(etag) => req.if_match(etag),
        };
        let out = req.send().await.map_err(|e| s3_error(&e, &self.endpoint))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    /// Delete the object, only if its ETag is still `etag` when given.
    async fn delete(&self, key: &str, etag: Option<&str>) -> Result<(), S3Error> {
        let mut req = self.client.delete_object().bucket(&self.bucket).key(key);
        if let Some(etag) = etag {
            req = req.if_match(etag);
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| s3_error(&e, &self.endpoint))
    }

    /// Every key under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_error(&e, &self.endpoint))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(keys),
            }
        }
    }
}

/// An S3 failure as a backend error naming `location`.
fn backend_err(action: &'static str, location: &str, e: S3Error) -> StateError {
    StateError::Backend {
        action,
        location: location.to_string(),
        detail: e.detail,
        hint: e.hint,
    }
}

// ------------------------------------------------------------------ backend

/// State, journal and lock as S3 objects; see the module docs.
#[derive(Debug)]
pub struct S3Backend {
    settings: Settings,
    workspace: String,
    /// Built on first use.
    store: OnceCell<Store>,
    lease: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl S3Backend {
    /// The backend for `url` (`s3://BUCKET/KEY[?region=R][&endpoint=URL]`) and
    /// `workspace`, configured from the AWS environment. Nothing is contacted yet.
    ///
    /// # Errors
    /// [`StateError::InvalidUrl`] for a malformed URL or a workspace name that would
    /// collide with another workspace's journal or lock object.
    pub fn open(url: &str, workspace: &str) -> Result<S3Backend, StateError> {
        let parsed = S3Url::parse(url)?;
        if workspace.ends_with(".lock") || workspace.ends_with(".journal") {
            return Err(StateError::InvalidUrl {
                url: parsed.location(""),
                detail: format!(
                    "workspace name {workspace:?} ends in .lock or .journal, which the S3 backend uses for another workspace's lock and journal; rename the workspace (metadata.name)"
                ),
            });
        }
        let endpoint = parsed.endpoint.clone().or_else(|| {
            std::env::var("AWS_ENDPOINT_URL_S3")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .ok()
                .filter(|e| !e.is_empty())
        });
        Ok(S3Backend {
            settings: Settings {
                url: parsed,
                endpoint,
            },
            workspace: workspace.to_string(),
            store: OnceCell::new(),
            lease: None,
            clock: Arc::new(SystemClock),
        })
    }

    /// Use this lock lease instead of `ANVIL_LOCK_LEASE` / the 30 s default.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Use `clock` for lock times (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn url(&self) -> &S3Url {
        &self.settings.url
    }

    fn head_key(&self) -> String {
        self.url().key(&format!("{}.json", self.workspace))
    }

    fn lock_key(&self) -> String {
        self.url().key(&format!("{}.lock", self.workspace))
    }

    fn chunk_prefix(&self) -> String {
        self.url().key(&format!("{}.journal/", self.workspace))
    }

    fn chunk_key(&self, n: u64) -> String {
        format!("{}{n}", self.chunk_prefix())
    }

    fn location(&self) -> String {
        self.url().location(&format!("{}.json", self.workspace))
    }

    fn lock_location(&self) -> String {
        self.url().location(&format!("{}.lock", self.workspace))
    }

    fn journal_location(&self) -> String {
        self.url().location(&format!("{}.journal", self.workspace))
    }

    fn lease(&self) -> Result<Duration, StateError> {
        if let Some(l) = self.lease {
            return Ok(l);
        }
        let Ok(v) = std::env::var("ANVIL_LOCK_LEASE") else {
            return Ok(DEFAULT_LEASE);
        };
        match parse_duration(&v) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(StateError::InvalidLease {
                location: self.lock_location(),
                value: v,
            }),
        }
    }

    async fn store(&self) -> Result<&Store, StateError> {
        self.store
            .get_or_try_init(|| async {
                Store::connect(&self.settings)
                    .await
                    .map_err(|e| backend_err("use", &self.location(), e))
            })
            .await
    }

    /// The state object: its content (if any) and ETag.
    async fn read_head(&self) -> Result<Head, StateError> {
        let store = self.store().await?;
        let location = self.location();
        let Some((bytes, etag)) = store
            .get(&self.head_key())
            .await
            .map_err(|e| backend_err("read", &location, e))?
        else {
            return Ok(Head {
                state: None,
                seq: 0,
                etag: None,
            });
        };
        let mut data: Value = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            location: location.clone(),
            detail: format!("the object is not JSON: {e}"),
        })?;
        let format = data.get("anvil_state").and_then(Value::as_u64);
        if format != Some(FORMAT) {
            return Err(StateError::Corrupt {
                location,
                detail: format!(
                    "the object is not an anvil state (anvil_state = {}, expected {FORMAT})",
                    format.map_or("missing".to_string(), |f| f.to_string())
                ),
            });
        }
        let seq = data.get("journal_seq").and_then(Value::as_u64).unwrap_or(0);
        let state_value = data
            .get_mut("state")
            .map(Value::take)
            .unwrap_or(Value::Null);
        Ok(Head {
            state: Some(decode_state(state_value, &location)?),
            seq,
            etag: Some(etag),
        })
    }

    /// Chunk `n`, if it exists.
    async fn read_chunk(&self, store: &Store, n: u64) -> Result<Option<Chunk>, StateError> {
        let location = chunk_location(&self.journal_location(), n);
        let Some((bytes, _)) = store
            .get(&self.chunk_key(n))
            .await
            .map_err(|e| backend_err("read", &location, e))?
        else {
            return Ok(None);
        };
        let chunk: Chunk =
            serde_json::from_slice(&bytes).map_err(|e| StateError::JournalCorrupt {
                journal: location.clone(),
                line: 1,
                detail: e.to_string(),
            })?;
        if chunk.anvil_journal != FORMAT {
            return Err(StateError::JournalCorrupt {
                journal: location,
                line: 1,
                detail: format!(
                    "journal format version {} is not supported (expected {FORMAT})",
                    chunk.anvil_journal
                ),
            });
        }
        Ok(Some(chunk))
    }

    /// The stored state with every journal chunk replayed, the head as read, and the
    /// number of the last chunk found.
    async fn load_full(&self) -> Result<(Head, State, u64), StateError> {
        let head = self.read_head().await?;
        let store = self.store().await?;
        let mut state = head.state.clone().unwrap_or_default();
        let covered = state.serial;
        let mut last = head.seq;
        loop {
            let n = last + 1;
            let Some(chunk) = self.read_chunk(store, n).await? else {
                break;
            };
            let location = chunk_location(&self.journal_location(), n);
            if head.state.is_none() {
                return Err(StateError::OrphanJournal {
                    location: self.location(),
                    journal: location,
                });
            }
            if chunk.lineage != state.lineage {
                return Err(StateError::LineageMismatch {
                    location: self.location(),
                    other: location,
                    expected: state.lineage,
                    found: chunk.lineage,
                });
            }
            if chunk.base_serial > covered {
                return Err(StateError::JournalAhead {
                    location: self.location(),
                    journal: location,
                    state_serial: covered,
                    base_serial: chunk.base_serial,
                });
            }
            for record in &chunk.records {
                state.apply_record_after(record, Some(covered));
            }
            last = n;
        }
        Ok((head, state, last))
    }

    fn own_lock<'a>(&self, lock: &'a dyn Lock) -> Result<&'a S3Lock, StateError> {
        let wrong = || StateError::WrongLock {
            location: self.location(),
            lock: lock.location(),
        };
        let own = lock.as_any().downcast_ref::<S3Lock>().ok_or_else(wrong)?;
        if own.location != self.lock_location() {
            return Err(wrong());
        }
        if own.status.load(Ordering::SeqCst) != HELD {
            return Err(StateError::LockLost {
                location: self.lock_location(),
            });
        }
        Ok(own)
    }

    /// Refuse to overwrite a stored state of another lineage or with a higher serial.
    fn check_overwrite(
        &self,
        head: &Head,
        current: &State,
        ours: &State,
    ) -> Result<(), StateError> {
        if head.state.is_none() {
            return Ok(());
        }
        if current.lineage != ours.lineage {
            return Err(StateError::LineageMismatch {
                location: self.location(),
                other: self.location(),
                expected: ours.lineage,
                found: current.lineage,
            });
        }
        if current.serial > ours.serial {
            return Err(StateError::StaleState {
                location: self.location(),
                stored: current.serial,
                ours: ours.serial,
            });
        }
        Ok(())
    }

    /// Write `state` as the head covering chunks up to `seq`, conditional on the head
    /// read; returns the new ETag and the state's size.
    async fn write_head(
        &self,
        store: &Store,
        state: &State,
        seq: u64,
        head: &Head,
    ) -> Result<(String, u64), StateError> {
        let bytes = encode_view(state, &state.pending, &self.location())?;
        let len = bytes.len() as u64;
        let etag = put_head(
            store,
            &self.head_key(),
            head_bytes(seq, &bytes),
            head.etag.as_deref(),
            &self.location(),
            state.serial,
        )
        .await?;
        Ok((etag, len))
    }

    /// Delete every chunk object numbered at or below `upto` (best effort: leftovers are
    /// ignored by load and swept by the next write).
    async fn sweep_chunks(&self, store: &Store, upto: u64) {
        let prefix = self.chunk_prefix();
        let keys = match store.list(&prefix).await {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!("listing journal chunks under {prefix}: {}", e.detail);
                return;
            }
        };
        let old: Vec<String> = keys
            .into_iter()
            .filter(|k| {
                k.strip_prefix(&prefix)
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n <= upto)
            })
            .collect();
        delete_keys(store, old).await;
    }
}

/// Write the head object under `If-Match: etag` (`If-None-Match: *` without one). A lost
/// race means another writer replaced the state: [`StateError::StaleState`].
async fn put_head(
    store: &Store,
    key: &str,
    body: Vec<u8>,
    etag: Option<&str>,
    location: &str,
    ours: u64,
) -> Result<String, StateError> {
    match store.put(key, body, Cond::on(etag)).await {
        Ok(etag) => Ok(etag),
        Err(e) if e.kind == Kind::Precondition => {
            // Name the serial that won, when it can be read.
            let stored = match store.get(key).await {
                Ok(Some((bytes, _))) => serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.pointer("/state/serial").and_then(Value::as_u64)),
                _ => None,
            };
            Err(StateError::StaleState {
                location: location.to_string(),
                stored: stored.unwrap_or(ours),
                ours,
            })
        }
        Err(e) => Err(backend_err("write", location, e)),
    }
}

/// The state object as read.
#[derive(Debug, Clone)]
struct Head {
    /// `None` when never written.
    state: Option<State>,
    /// Chunks up to this number are contained in `state`.
    seq: u64,
    /// The object's ETag (`None`: no object), the condition of the next write.
    etag: Option<String>,
}

fn chunk_location(journal: &str, n: u64) -> String {
    format!("{journal}/{n}")
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The lock holder (None when absent) and the object's ETag.
async fn read_lock(
    store: &Store,
    key: &str,
    location: &str,
) -> Result<(Option<LockInfo>, Option<String>), StateError> {
    let Some((bytes, etag)) = store
        .get(key)
        .await
        .map_err(|e| backend_err("read", location, e))?
    else {
        return Ok((None, None));
    };
    let info = serde_json::from_slice::<LockInfo>(&bytes).map_err(|e| StateError::LockCorrupt {
        location: location.to_string(),
        detail: e.to_string(),
    })?;
    Ok((Some(info), Some(etag)))
}

/// Delete the lock if it is still `id`'s (conditional on the ETag read, retried when a
/// concurrent renewal changed it in between). Returns whether the lock was `id`'s.
async fn release_lock(
    store: &Store,
    key: &str,
    location: &str,
    id: &str,
) -> Result<bool, StateError> {
    for _ in 0..3 {
        let (holder, etag) = read_lock(store, key, location).await?;
        if holder.as_ref().is_none_or(|h| h.id != id) {
            return Ok(false);
        }
        match store.delete(key, etag.as_deref()).await {
            Ok(()) => return Ok(true),
            Err(e) if e.kind == Kind::Precondition => continue,
            Err(e) => return Err(backend_err("release", location, e)),
        }
    }
    Ok(false)
}

/// Delete `keys`, a few at a time (best effort).
async fn delete_keys(store: &Store, keys: Vec<String>) {
    futures::stream::iter(keys)
        .map(|key| async move {
            if let Err(e) = store.delete(&key, None).await {
                tracing::debug!("deleting journal chunk {key}: {}", e.detail);
            }
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

#[async_trait]
impl StateBackend for S3Backend {
    fn describe(&self) -> String {
        self.location()
    }

    async fn load(&self) -> Result<State, StateError> {
        Ok(self.load_full().await?.1)
    }

    async fn exists(&self) -> Result<bool, StateError> {
        let head = self.read_head().await?;
        if head.state.is_some() {
            return Ok(true);
        }
        let store = self.store().await?;
        Ok(self.read_chunk(store, head.seq + 1).await?.is_some())
    }

    async fn lock(&self, operation: &str, timeout: Duration) -> Result<Box<dyn Lock>, StateError> {
        let lease = self.lease()?;
        let store = self.store().await?;
        let (who, host) = whoami();
        let id = uuid::Uuid::new_v4().to_string();
        let key = self.lock_key();
        let location = self.lock_location();
        let start = Instant::now();
        loop {
            let (holder, etag) = read_lock(store, &key, &location).await?;
            let now = self.clock.now();
            let free = holder.as_ref().is_none_or(|h| h.expires <= now);
            if free {
                let me = LockInfo {
                    id: id.clone(),
                    who: who.clone(),
                    host: host.clone(),
                    pid: std::process::id(),
                    operation: operation.to_string(),
                    created: now,
                    expires: add(now, lease),
                };
                let body = lock_body(&me, &location)?;
                // Absent: create; expired: replace exactly the dead holder's object.
                match store.put(&key, body, Cond::on(etag.as_deref())).await {
                    Ok(etag) => {
                        return Ok(Box::new(S3Lock::start(
                            store.clone(),
                            self.settings.clone(),
                            key,
                            location,
                            me,
                            etag,
                            lease,
                            self.clock.clone(),
                        )))
                    }
                    // Someone else took or renewed it between our read and write.
                    Err(e) if e.kind == Kind::Precondition => continue,
                    Err(e) => return Err(backend_err("take the lock", &location, e)),
                }
            }
            let waited = start.elapsed();
            if waited >= timeout {
                if let Some(info) = holder {
                    return Err(StateError::Locked {
                        info: Box::new(info),
                        location,
                    });
                }
            }
            tokio::time::sleep(
                POLL.min(
                    timeout
                        .saturating_sub(waited)
                        .max(Duration::from_millis(10)),
                ),
            )
            .await;
        }
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        let store = self.store().await?;
        let (holder, _) = read_lock(store, &self.lock_key(), &self.lock_location()).await?;
        let Some(holder) = holder else {
            return Err(StateError::NotLocked {
                location: self.lock_location(),
            });
        };
        if holder.id != id {
            return Err(StateError::LockIdMismatch {
                location: self.lock_location(),
                requested: id.to_string(),
                actual: Box::new(holder),
            });
        }
        if release_lock(store, &self.lock_key(), &self.lock_location(), id).await? {
            Ok(())
        } else {
            Err(StateError::NotLocked {
                location: self.lock_location(),
            })
        }
    }

    async fn write(&self, state: &State, lock: &dyn Lock) -> Result<(), StateError> {
        self.own_lock(lock)?;
        let store = self.store().await?;
        let (head, current, last) = self.load_full().await?;
        self.check_overwrite(&head, &current, state)?;
        self.write_head(store, state, last, &head).await?;
        // The new head contains every chunk up to `last`: they are garbage now, and so is
        // anything an earlier crash left below the old head's number.
        self.sweep_chunks(store, last).await;
        Ok(())
    }

    async fn journal(&self, base: &State, lock: &dyn Lock) -> Result<Box<dyn Journal>, StateError> {
        let own = self.own_lock(lock)?;
        let store = self.store().await?;
        let (head, current, last) = self.load_full().await?;
        self.check_overwrite(&head, &current, base)?;
        // The journal continues the stored state, so that state must be exactly `base`.
        let (etag, size) = if last > head.seq || head.state.as_ref() != Some(base) {
            let written = self.write_head(store, base, last, &head).await?;
            self.sweep_chunks(store, last).await;
            written
        } else {
            let size = encode_view(base, &base.pending, &self.location())?.len() as u64;
            (head.etag.clone().unwrap_or_default(), size)
        };
        Ok(Box::new(start_journal(
            store.clone(),
            self,
            base,
            own.status.clone(),
            last,
            etag,
            size,
        )))
    }

    async fn has_journal(&self) -> bool {
        let Ok(head) = self.read_head().await else {
            return false;
        };
        let Ok(store) = self.store().await else {
            return false;
        };
        matches!(self.read_chunk(store, head.seq + 1).await, Ok(Some(_)))
    }
}

fn lock_body(info: &LockInfo, location: &str) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec_pretty(info).map_err(|e| StateError::Serialize {
        location: location.to_string(),
        source: e,
    })
}

// ------------------------------------------------------------------ lock

/// The S3 state lock, renewed by a background task while it lives.
#[derive(Debug)]
pub struct S3Lock {
    info: LockInfo,
    location: String,
    key: String,
    status: Arc<AtomicU8>,
    settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl S3Lock {
    #[allow(clippy::too_many_arguments)]
    fn start(
        store: Store,
        settings: Settings,
        key: String,
        location: String,
        info: LockInfo,
        etag: String,
        lease: Duration,
        clock: Arc<dyn Clock>,
    ) -> S3Lock {
        let status = Arc::new(AtomicU8::new(HELD));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let interval = (lease / 3).max(Duration::from_millis(10));
        let renewer = {
            let key = key.clone();
            let location = location.clone();
            let status = status.clone();
            let mut info = info.clone();
            tokio::spawn(async move {
                let mut etag = etag;
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        () = tokio::time::sleep(interval) => {}
                    }
                    let mut next = info.clone();
                    next.expires = add(clock.now(), lease);
                    let Ok(body) = lock_body(&next, &location) else {
                        continue;
                    };
                    match store.put(&key, body, Cond::Match(&etag)).await {
                        Ok(e) => {
                            etag = e;
                            info = next;
                        }
                        // Someone took it over (our lease ran out) or force-unlocked it.
                        Err(e) if matches!(e.kind, Kind::Precondition | Kind::NotFound) => {
                            let _ = status.compare_exchange(
                                HELD,
                                LOST,
                                Ordering::SeqCst,
                                Ordering::SeqCst,
                            );
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("renewing the state lock {location}: {}", e.detail);
                            if clock.now() >= info.expires {
                                let _ = status.compare_exchange(
                                    HELD,
                                    LOST,
                                    Ordering::SeqCst,
                                    Ordering::SeqCst,
                                );
                                return;
                            }
                        }
                    }
                }
            })
        };
        S3Lock {
            info,
            location,
            key,
            status,
            settings,
            stop: Some(stop),
            renewer: Some(renewer),
        }
    }
}

impl Lock for S3Lock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    fn is_lost(&self) -> bool {
        self.status.load(Ordering::SeqCst) == LOST
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for S3Lock {
    fn drop(&mut self) {
        let was = self.status.swap(RELEASED, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if was != HELD {
            return;
        }
        // Drop cannot await, and may run on a runtime worker: release on a thread of its
        // own with its own small runtime and a fresh client (the pooled connections
        // belong to the caller's runtime), and wait for it so the lock is free when the
        // command returns.
        let settings = self.settings.clone();
        let (key, location, id) = (
            self.key.clone(),
            self.location.clone(),
            self.info.id.clone(),
        );
        let released = std::thread::Builder::new()
            .name("anvil-lock-release".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::warn!("releasing state lock {location}: {e}");
                        return;
                    }
                };
                rt.block_on(async {
                    let store = match Store::connect(&settings).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("releasing state lock {location}: {}", e.detail);
                            return;
                        }
                    };
                    if let Err(e) = release_lock(&store, &key, &location, &id).await {
                        tracing::warn!("releasing state lock: {e}");
                    }
                });
            });
        if let Ok(t) = released {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------ journal

/// The journal's objects: chunks under `<ws>.journal/` and the state object.
struct S3Chunks {
    store: Store,
    chunk_prefix: String,
    head_key: String,
    state_location: String,
    journal_location: Arc<str>,
    lock_location: String,
    /// ETag of the state object (the condition of the next checkpoint).
    head_etag: String,
}

#[async_trait]
impl ChunkStore for S3Chunks {
    async fn create_chunk(&self, n: u64, data: Vec<u8>) -> Result<(), ChunkFailure> {
        let location = chunk_location(&self.journal_location, n);
        let key = format!("{}{n}", self.chunk_prefix);
        match self.store.put(&key, data, Cond::Create).await {
            Ok(_) => Ok(()),
            // Another writer appended to this journal: our lock must be gone.
            Err(e) if e.kind == Kind::Precondition => {
                let error = StateError::LockLost {
                    location: self.lock_location.clone(),
                };
                let detail = format!("{location} was written by another run: {error}");
                Err(ChunkFailure { error, detail })
            }
            Err(e) => Err(backend_err("append to", &location, e).into()),
        }
    }

    async fn write_head(&mut self, data: Vec<u8>, serial: u64) -> Result<(), StateError> {
        let etag = (!self.head_etag.is_empty()).then_some(self.head_etag.as_str());
        self.head_etag = put_head(
            &self.store,
            &self.head_key,
            data,
            etag,
            &self.state_location,
            serial,
        )
        .await?;
        Ok(())
    }

    async fn delete_chunks(&self, range: std::ops::RangeInclusive<u64>) {
        let keys = range.map(|n| format!("{}{n}", self.chunk_prefix)).collect();
        delete_keys(&self.store, keys).await;
    }
}

/// The journal of an S3 state: chunks written by a [`ChunkWriter`]; see the module docs.
fn start_journal(
    store: Store,
    backend: &S3Backend,
    base: &State,
    status: Arc<AtomicU8>,
    last_seq: u64,
    head_etag: String,
    state_size: u64,
) -> QueuedJournal<Snapshot> {
    let location: Arc<str> = Arc::from(backend.journal_location());
    let threshold = Arc::new(AtomicU64::new(MIN_CHECKPOINT_BYTES.max(state_size)));
    let chunks = S3Chunks {
        store,
        chunk_prefix: backend.chunk_prefix(),
        head_key: backend.head_key(),
        state_location: backend.location(),
        journal_location: location.clone(),
        lock_location: backend.lock_location(),
        head_etag,
    };
    let start = ChunkStart {
        journal_location: location.clone(),
        lock_location: backend.lock_location(),
        lineage: base.lineage,
        base_serial: base.serial,
        last_seq,
        status,
        held: HELD,
        threshold: threshold.clone(),
        min_checkpoint_bytes: MIN_CHECKPOINT_BYTES,
        max_chunk_bytes: MAX_CHUNK_BYTES,
    };
    QueuedJournal::start(
        ChunkWriter::new(chunks, start),
        location,
        base.pending.clone(),
        threshold,
        Due::Bytes,
        encode_snapshot,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_prefix_and_parameters() {
        let u = S3Url::parse(
            "s3://my-bucket/team/anvil/?region=eu-west-1&endpoint=http://127.0.0.1:9000/",
        )
        .expect("valid");
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.prefix, "team/anvil");
        assert_eq!(u.region.as_deref(), Some("eu-west-1"));
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(u.key("demo.json"), "team/anvil/demo.json");
        assert_eq!(
            u.location("demo.lock"),
            "s3://my-bucket/team/anvil/demo.lock"
        );

        let root = S3Url::parse("s3://my-bucket").expect("valid");
        assert_eq!(root.prefix, "");
        assert_eq!(root.key("demo.json"), "demo.json");
        assert_eq!(root.region, None);
        assert_eq!(root.endpoint, None);
    }

    #[test]
    fn refuses_bad_urls_naming_the_problem_without_the_query() {
        let cases = [
            ("s3://", "bucket name \"\""),
            ("s3://ab/k", "3 to 63"),
            ("s3://My_Bucket/k", "lowercase"),
            ("s3://-bucket/k", "begin and end"),
            ("s3://a..b/k", "adjacent periods"),
            ("s3://bucket/a//b", "empty, '.' or '..'"),
            ("s3://bucket/a/../b", "empty, '.' or '..'"),
            ("s3://bucket/k?endpoint=ftp://x", "not an http"),
            ("s3://bucket/k?region=", "region= is empty"),
            (
                "s3://bucket/k?secret_key=hunter2",
                "unknown parameter \"secret_key\"",
            ),
            ("gs://bucket/k", "starts with s3://"),
            (
                "s3://AKIA:hunter2@bucket/k",
                "credentials in the URL are refused",
            ),
        ];
        for (url, want) in cases {
            let err = S3Url::parse(url).expect_err(url).to_string();
            assert!(err.contains(want), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn workspace_names_that_collide_with_lock_or_journal_objects_are_refused() {
        for ws in ["x.lock", "x.journal"] {
            let err = S3Backend::open("s3://bucket/k", ws)
                .expect_err(ws)
                .to_string();
            assert!(err.contains("ends in .lock or .journal"), "{err}");
        }
        let b = S3Backend::open("s3://bucket/k?endpoint=http://127.0.0.1:1", "demo").expect("ok");
        assert_eq!(b.describe(), "s3://bucket/k/demo.json");
        assert_eq!(b.lock_location(), "s3://bucket/k/demo.lock");
        assert_eq!(b.chunk_key(7), "k/demo.journal/7");
    }

    #[test]
    fn bucket_rules_follow_s3() {
        for ok in ["abc", "my.bucket-1", &"a".repeat(63)] {
            assert_eq!(bucket_problem(ok), None, "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "UPPER",
            "under_score",
            "dot.",
            "a..b",
        ] {
            assert!(bucket_problem(bad).is_some(), "{bad}");
        }
    }
}
