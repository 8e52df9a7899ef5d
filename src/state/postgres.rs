//! The PostgreSQL backend (`postgres://` / `postgresql://` state URLs).
//!
//! Four tables in one schema (`?schema=NAME`, default `public`) hold every workspace of
//! a database, keyed by workspace name; they are created on first use under a
//! transaction-scoped advisory lock, so concurrent first runs do not collide:
//!
//! | table | row |
//! |---|---|
//! | `anvil_state` | `workspace`, `lineage`, `serial`, `doc` (the state JSON), `updated_at` |
//! | `anvil_journal` | `workspace`, `seq`, `serial` (of a result), `record` (one [`JournalRecord`] as JSON) |
//! | `anvil_lock` | `workspace`, `id`, `info` (the holder as JSON), `expires_at` |
//! | `anvil_broker_store` | `workspace`, `doc` (the broker's store JSON), `updated_at` |
//!
//! `write` and every journal checkpoint replace the state row and the journal rows in one
//! transaction that first checks, under a row lock, that our lock row is still ours and
//! that the stored lineage and serial are not newer; so there is no torn state and no
//! crash window between the two (unlike files). Journal appends are grouped: a background
//! task inserts every queued record with one `INSERT … SELECT unnest(…)` (one round trip
//! and one commit per batch), guarded by the same lock check. Loading reads the state row
//! and the journal rows in one repeatable-read transaction and replays them exactly like
//! the local backend.
//!
//! The lock is a lease row taken with `INSERT … ON CONFLICT DO UPDATE … WHERE expires_at <
//! now()` (the database clock decides expiry), renewed every lease/3 by a background task,
//! and deleted when the [`PgLock`] is dropped. A holder that dies stops renewing and its
//! row is taken over once it expires, without `force-unlock`.
//!
//! The password of the URL is kept only inside the connection configuration: messages
//! use [`redact_url`] and every server or client message is scrubbed of it.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio::sync::OnceCell;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls};

use super::journal::{self, header_line, StateView, MIN_CHECKPOINT_INTERVAL};
use super::lock::{self, LockStatus, HELD, LOST, POLL, RELEASED};
use super::remote_journal::{Batched, Due, QueuedJournal, Sink};
use super::{
    redact_url, Journal, JournalRecord, Lock, LockInfo, PendingOp, State, StateBackend, StateError,
    DEFAULT_LEASE,
};

/// Key of the advisory lock that serializes table creation across processes.
const DDL_LOCK_KEY: i64 = 0x616e_7669_6c00;

/// Connections the pool keeps at most: one for the journal writer, one for lock renewal,
/// a few for loads and writes.
const POOL_SIZE: usize = 4;

/// State in PostgreSQL tables; see the module docs.
pub struct PostgresBackend {
    pool: Pool,
    /// For releasing a lock from `Drop`, on a connection of its own.
    config: Config,
    /// The schema as a quoted identifier.
    schema: String,
    /// The schema's plain name, for messages and grants.
    schema_name: String,
    workspace: String,
    /// Redacted URL plus workspace, for every message.
    location: String,
    /// Scrubbed out of every server or client message.
    password: Option<String>,
    lease: Option<Duration>,
    ready: OnceCell<()>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the config: it holds the password.
        f.debug_struct("PostgresBackend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Replace every occurrence of `password` in `text` with `***`.
fn scrub(text: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => text.replace(p, "***"),
        _ => text.to_string(),
    }
}

impl PostgresBackend {
    /// A backend for `url` and `workspace`. Nothing is connected until first use.
    ///
    /// # Errors
    /// [`StateError::InvalidUrl`] for a URL the client cannot parse, a bad `schema`, or
    /// an `sslmode` that needs TLS.
    pub fn new(url: &str, workspace: &str) -> Result<PostgresBackend, StateError> {
        let t = PgTarget::parse(url, POOL_SIZE)?;
        Ok(PostgresBackend {
            pool: t.pool,
            config: t.config,
            schema: t.schema,
            schema_name: t.schema_name,
            workspace: workspace.to_string(),
            location: format!("{} (workspace {workspace})", t.redacted),
            password: t.password,
            lease: None,
            ready: OnceCell::new(),
        })
    }

    /// Use this lock lease instead of `ANVIL_LOCK_LEASE` / the 30 s default.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    fn lease(&self) -> Result<Duration, StateError> {
        if let Some(l) = self.lease {
            return Ok(l);
        }
        match std::env::var("ANVIL_LOCK_LEASE") {
            Err(_) => Ok(DEFAULT_LEASE),
            Ok(v) => match lock::parse_duration(&v) {
                Some(d) if !d.is_zero() => Ok(d),
                _ => Err(StateError::InvalidLease {
                    location: self.location.clone(),
                    value: v,
                }),
            },
        }
    }

    fn journal_location(&self) -> String {
        format!("{} journal", self.location)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            location: self.location.clone(),
            schema_name: self.schema_name.clone(),
            password: self.password.clone(),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StateError> {
        self.pool
            .get()
            .await
            .map_err(|e| self.ctx().pool_err("connect to", e))
    }

    /// Create the tables once per process (and per backend) unless they exist.
    async fn ensure_tables(&self) -> Result<(), StateError> {
        self.ready
            .get_or_try_init(|| async {
                let mut client = self.client().await?;
                let ctx = self.ctx();
                let s = &self.schema;
                let exists: bool = client
                    .query_one(
                        "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL \
                         AND to_regclass($3) IS NOT NULL AND to_regclass($4) IS NOT NULL",
                        &[
                            &format!("{s}.anvil_state"),
                            &format!("{s}.anvil_journal"),
                            &format!("{s}.anvil_lock"),
                            &format!("{s}.anvil_broker_store"),
                        ],
                    )
                    .await
                    .map_err(|e| ctx.pg_err("read the tables of", &e))?
                    .get(0);
                if exists {
                    return Ok(());
                }
                let tx = client
                    .transaction()
                    .await
                    .map_err(|e| ctx.pg_err("create the tables of", &e))?;
                let ddl = async {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK_KEY])
                        .await?;
                    let have_schema: bool = tx
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                            &[&self.schema_name],
                        )
                        .await?
                        .get(0);
                    if !have_schema {
                        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                            .await?;
                    }
                    tx.batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS {s}.anvil_state (
                            workspace text PRIMARY KEY,
                            lineage text NOT NULL,
                            serial bigint NOT NULL,
                            doc text NOT NULL,
                            updated_at timestamptz NOT NULL DEFAULT now());
                         CREATE TABLE IF NOT EXISTS {s}.anvil_journal (
                            workspace text NOT NULL,
                            seq bigserial NOT NULL,
                            serial bigint,
                            record text NOT NULL,
                            PRIMARY KEY (workspace, seq));
                         CREATE TABLE IF NOT EXISTS {s}.anvil_lock (
                            workspace text PRIMARY KEY,
                            id text NOT NULL,
                            info text NOT NULL,
                            expires_at timestamptz NOT NULL);
                         CREATE TABLE IF NOT EXISTS {s}.anvil_broker_store (
                            workspace text PRIMARY KEY,
                            doc text NOT NULL,
                            updated_at timestamptz NOT NULL DEFAULT now());"
                    ))
                    .await
                };
                ddl.await
                    .map_err(|e| ctx.pg_err("create the tables of", &e))?;
                tx.commit()
                    .await
                    .map_err(|e| ctx.pg_err("create the tables of", &e))
            })
            .await
            .map(|_| ())
    }

    fn own_lock<'a>(&self, lock: &'a dyn Lock) -> Result<&'a PgLock, StateError> {
        match lock.as_any().downcast_ref::<PgLock>() {
            Some(l) if l.workspace == self.workspace && l.schema == self.schema => Ok(l),
            _ => Err(StateError::WrongLock {
                location: self.location.clone(),
                lock: lock.location(),
            }),
        }
    }

    /// Store `state` as the whole state (journal rows dropped), in one transaction.
    async fn store(&self, state: &State, lock: &PgLock) -> Result<(), StateError> {
        self.ensure_tables().await?;
        let ctx = self.ctx();
        let doc = serde_json::to_string(state).map_err(|e| StateError::Serialize {
            location: self.location.clone(),
            source: e,
        })?;
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| ctx.pg_err("write", &e))?;
        let q = Queries::new(&self.schema);
        check_lock(&tx, &q, &self.workspace, lock.id(), &lock.status, &ctx).await?;
        check_overwrite(&tx, &q, &self.workspace, state, &ctx).await?;
        replace_state(
            &tx,
            &q,
            &self.workspace,
            (state.lineage, state.serial),
            &doc,
            &[],
            &ctx,
        )
        .await?;
        tx.commit().await.map_err(|e| ctx.pg_err("write", &e))
    }
}

/// A parsed `postgres://` URL and its connection pool, shared by the state backend and
/// the server's job queue (`server::queue::postgres`), so both read URLs, schemas and
/// passwords the same way.
pub(crate) struct PgTarget {
    pub(crate) pool: Pool,
    /// The client configuration; the only place the password is kept.
    pub(crate) config: Config,
    /// The schema as a quoted identifier.
    pub(crate) schema: String,
    /// The schema's plain name, for messages and grants.
    pub(crate) schema_name: String,
    /// The URL with its password masked, for every message.
    pub(crate) redacted: String,
    /// Scrubbed out of every server or client message.
    pub(crate) password: Option<String>,
}

impl PgTarget {
    /// Parses `url` (`?schema=NAME` is anvil's, the rest libpq's) and builds a pool of at
    /// most `pool_size` connections; nothing is connected yet.
    ///
    /// # Errors
    /// [`StateError::InvalidUrl`] for a URL the client cannot parse, a bad `schema`, or
    /// an `sslmode` that needs TLS.
    pub(crate) fn parse(url: &str, pool_size: usize) -> Result<PgTarget, StateError> {
        let redacted = redact_url(url);
        let invalid = |detail: String| StateError::InvalidUrl {
            url: redacted.clone(),
            detail,
        };
        // `schema` is ours, not libpq's: take it out before the client parses the rest.
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut schema_name = "public".to_string();
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", v)) => schema_name = v.to_string(),
                _ => kept.push(pair),
            }
        }
        let valid_schema = !schema_name.is_empty()
            && schema_name.len() <= 63
            && schema_name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && schema_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_schema {
            return Err(invalid(format!(
                "schema {schema_name:?} must be 1-63 letters, digits or '_', not starting with a digit"
            )));
        }
        let client_url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config = Config::from_str(&client_url).map_err(|e| {
            let password = url_password(url);
            invalid(scrub(&e.to_string(), password.as_deref()))
        })?;
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        if config.get_ssl_mode() == SslMode::Require {
            return Err(invalid(
                "sslmode=require needs TLS, which anvil's PostgreSQL backend does not speak; use sslmode=disable or sslmode=prefer (loopback or a Unix socket via ?host=/socket/dir)".into(),
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("anvil");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(|e| invalid(format!("cannot set up the connection pool: {e}")))?;
        Ok(PgTarget {
            pool,
            config,
            schema: format!("\"{schema_name}\""),
            schema_name,
            redacted,
            password,
        })
    }

    /// What went wrong and what to do, for a client or server error; the password is
    /// scrubbed out.
    pub(crate) fn explain(&self, e: &tokio_postgres::Error) -> (String, String) {
        explain(e, &self.schema_name, self.password.as_deref())
    }
}

/// What error messages need, cheap to clone into background tasks.
#[derive(Clone)]
struct Ctx {
    location: String,
    schema_name: String,
    password: Option<String>,
}

impl Ctx {
    fn pg_err(&self, action: &'static str, e: &tokio_postgres::Error) -> StateError {
        let (detail, hint) = explain(e, &self.schema_name, self.password.as_deref());
        StateError::Backend {
            action,
            location: self.location.clone(),
            detail,
            hint,
        }
    }

    fn pool_err(&self, action: &'static str, e: PoolError) -> StateError {
        match e {
            PoolError::Backend(e) => self.pg_err(action, &e),
            other => StateError::Backend {
                action,
                location: self.location.clone(),
                detail: scrub(&other.to_string(), self.password.as_deref()),
                hint: "check that the PostgreSQL server runs and accepts connections".into(),
            },
        }
    }
}

/// The detail (password scrubbed) and the hint for a client or server error.
fn explain(
    e: &tokio_postgres::Error,
    schema_name: &str,
    password: Option<&str>,
) -> (String, String) {
    let (detail, hint) = match e.as_db_error() {
        Some(db) => {
            let detail = format!("{}: {}", db.severity(), db.message());
            let code = db.code();
            let hint = if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                "check the user name and password in the URL (the password is never shown), or the server's pg_hba.conf".to_string()
            } else if *code == SqlState::INVALID_CATALOG_NAME {
                "create the database (for example `createdb NAME`) or fix the database name in the URL".to_string()
            } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
                format!(
                        "grant CREATE on schema {s} to this user (GRANT CREATE ON SCHEMA {s} TO USER), or have an administrator pre-create the tables; see docs/state.md",
                        s = schema_name
                    )
            } else {
                "see the server's message; docs/state.md lists what anvil needs from the database"
                    .to_string()
            };
            (detail, hint)
        }
        None => {
            // The client's own error and its cause (e.g. "connection refused").
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let text = s.to_string();
                if !detail.contains(&text) {
                    detail = format!("{detail}: {text}");
                }
                source = s.source();
            }
            (
                    detail,
                    "check the host and port (or ?host=/socket/dir) in the URL and that the PostgreSQL server runs and accepts connections".to_string(),
                )
        }
    };
    (scrub(&detail, password), hint)
}

/// The password in a URL's userinfo, to scrub parse errors before a config exists.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let auth = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &auth[..auth.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p.to_string())
}

/// SQL text with the schema filled in.
struct Queries {
    lock_row: String,
    stored_head: String,
    journal_max: String,
    upsert_state: String,
    delete_journal: String,
    insert_journal: String,
    insert_kept: String,
}

impl Queries {
    fn new(s: &str) -> Queries {
        Queries {
            lock_row: format!("SELECT id FROM {s}.anvil_lock WHERE workspace = $1 FOR UPDATE"),
            stored_head: format!(
                "SELECT lineage, serial FROM {s}.anvil_state WHERE workspace = $1 FOR UPDATE"
            ),
            journal_max: format!("SELECT max(serial) FROM {s}.anvil_journal WHERE workspace = $1"),
            upsert_state: format!(
                "INSERT INTO {s}.anvil_state (workspace, lineage, serial, doc, updated_at) \
                 VALUES ($1, $2, $3, $4, now()) ON CONFLICT (workspace) DO UPDATE SET \
                 lineage = EXCLUDED.lineage, serial = EXCLUDED.serial, doc = EXCLUDED.doc, \
                 updated_at = now()"
            ),
            delete_journal: format!("DELETE FROM {s}.anvil_journal WHERE workspace = $1"),
            insert_journal: format!(
                "INSERT INTO {s}.anvil_journal (workspace, serial, record) \
                 SELECT $1, t.s, t.r FROM unnest($2::bigint[], $3::text[]) AS t(s, r) \
                 WHERE EXISTS (SELECT 1 FROM {s}.anvil_lock WHERE workspace = $1 AND id = $4)"
            ),
            insert_kept: format!(
                "INSERT INTO {s}.anvil_journal (workspace, serial, record) \
                 SELECT $1, t.s, t.r FROM unnest($2::bigint[], $3::text[]) AS t(s, r)"
            ),
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Inside a transaction: our lock row must still name us (row-locked until commit).
async fn check_lock(
    tx: &deadpool_postgres::Transaction<'_>,
    q: &Queries,
    workspace: &str,
    id: &str,
    status: &LockStatus,
    ctx: &Ctx,
) -> Result<(), StateError> {
    let lost = || StateError::LockLost {
        location: ctx.location.clone(),
    };
    if status.get() != HELD {
        return Err(lost());
    }
    let row = tx
        .query_opt(&q.lock_row, &[&workspace])
        .await
        .map_err(|e| ctx.pg_err("check the lock of", &e))?;
    match row {
        Some(r) if r.get::<_, String>(0) == id => Ok(()),
        _ => {
            status.set_from_held(LOST);
            Err(lost())
        }
    }
}

/// Inside a transaction: refuse to replace a stored state of another lineage or with a
/// higher serial (journal rows included) than `state`.
async fn check_overwrite(
    tx: &deadpool_postgres::Transaction<'_>,
    q: &Queries,
    workspace: &str,
    state: &State,
    ctx: &Ctx,
) -> Result<(), StateError> {
    let Some(row) = tx
        .query_opt(&q.stored_head, &[&workspace])
        .await
        .map_err(|e| ctx.pg_err("read", &e))?
    else {
        return Ok(());
    };
    let lineage: String = row.get(0);
    let serial: i64 = row.get(1);
    let journal: Option<i64> = tx
        .query_one(&q.journal_max, &[&workspace])
        .await
        .map_err(|e| ctx.pg_err("read", &e))?
        .get(0);
    if let Ok(found) = uuid::Uuid::parse_str(&lineage) {
        if found != state.lineage {
            return Err(StateError::LineageMismatch {
                location: ctx.location.clone(),
                other: ctx.location.clone(),
                expected: state.lineage,
                found,
            });
        }
    }
    let stored = u64::try_from(serial.max(journal.unwrap_or(0))).unwrap_or(0);
    if stored > state.serial {
        return Err(StateError::StaleState {
            location: ctx.location.clone(),
            stored,
            ours: state.serial,
        });
    }
    Ok(())
}

/// Inside a transaction: the state row becomes `doc`, the journal becomes `keep`.
async fn replace_state(
    tx: &deadpool_postgres::Transaction<'_>,
    q: &Queries,
    workspace: &str,
    (lineage, serial): (uuid::Uuid, u64),
    doc: &str,
    keep: &[(Option<i64>, String)],
    ctx: &Ctx,
) -> Result<(), StateError> {
    let lineage = lineage.to_string();
    tx.execute(
        &q.upsert_state,
        &[&workspace, &lineage, &to_i64(serial), &doc],
    )
    .await
    .map_err(|e| ctx.pg_err("write", &e))?;
    tx.execute(&q.delete_journal, &[&workspace])
        .await
        .map_err(|e| ctx.pg_err("write", &e))?;
    if !keep.is_empty() {
        let serials: Vec<Option<i64>> = keep.iter().map(|k| k.0).collect();
        let records: Vec<&str> = keep.iter().map(|k| k.1.as_str()).collect();
        // The caller checked the lock in this transaction.
        tx.execute(&q.insert_kept, &[&workspace, &serials, &records])
            .await
            .map_err(|e| ctx.pg_err("write the journal of", &e))?;
    }
    Ok(())
}

#[async_trait]
impl StateBackend for PostgresBackend {
    fn describe(&self) -> String {
        self.location.clone()
    }

    async fn load(&self) -> Result<State, StateError> {
        self.ensure_tables().await?;
        let ctx = self.ctx();
        let s = &self.schema;
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| ctx.pg_err("read", &e))?;
        let row = tx
            .query_opt(
                &format!("SELECT doc FROM {s}.anvil_state WHERE workspace = $1"),
                &[&self.workspace],
            )
            .await
            .map_err(|e| ctx.pg_err("read", &e))?;
        let records = tx
            .query(
                &format!("SELECT record FROM {s}.anvil_journal WHERE workspace = $1 ORDER BY seq"),
                &[&self.workspace],
            )
            .await
            .map_err(|e| ctx.pg_err("read", &e))?;
        tx.commit().await.map_err(|e| ctx.pg_err("read", &e))?;
        let Some(row) = row else {
            if records.is_empty() {
                return Ok(State::new());
            }
            return Err(StateError::OrphanJournal {
                location: self.location.clone(),
                journal: self.journal_location(),
            });
        };
        let doc: String = row.get(0);
        let mut state = super::local::decode(doc.as_bytes(), &self.location)?;
        drop(doc);
        if !records.is_empty() {
            // The same replay as files: a header binding the rows to this state, then one
            // record per line.
            let mut bytes = header_line(state.lineage, state.serial);
            for r in &records {
                bytes.extend_from_slice(r.get::<_, &str>(0).as_bytes());
                bytes.push(b'\n');
            }
            journal::replay(&mut state, &bytes, &self.location, &self.journal_location())?;
        }
        Ok(state)
    }

    async fn exists(&self) -> Result<bool, StateError> {
        self.ensure_tables().await?;
        let s = &self.schema;
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {s}.anvil_state WHERE workspace = $1) \
                     OR EXISTS (SELECT 1 FROM {s}.anvil_journal WHERE workspace = $1)"
                ),
                &[&self.workspace],
            )
            .await
            .map_err(|e| self.ctx().pg_err("read", &e))?;
        Ok(row.get(0))
    }

    async fn lock(&self, operation: &str, timeout: Duration) -> Result<Box<dyn Lock>, StateError> {
        let lease = self.lease()?;
        self.ensure_tables().await?;
        let ctx = self.ctx();
        let s = &self.schema;
        let (who, host) = lock::whoami();
        let id = uuid::Uuid::new_v4().to_string();
        let lease_ms = lease.as_secs_f64() * 1000.0;
        let take = format!(
            "INSERT INTO {s}.anvil_lock AS l (workspace, id, info, expires_at) \
             VALUES ($1, $2, $3, now() + $4::float8 * interval '1 millisecond') \
             ON CONFLICT (workspace) DO UPDATE SET id = EXCLUDED.id, info = EXCLUDED.info, \
             expires_at = EXCLUDED.expires_at WHERE l.expires_at < now() RETURNING expires_at"
        );
        let holder = format!("SELECT info, expires_at FROM {s}.anvil_lock WHERE workspace = $1");
        let start = Instant::now();
        loop {
            let now = Utc::now();
            let mut me = LockInfo {
                id: id.clone(),
                who: who.clone(),
                host: host.clone(),
                pid: std::process::id(),
                operation: operation.to_string(),
                created: now,
                expires: lock::add(now, lease),
            };
            let info = serde_json::to_string(&me).map_err(|e| StateError::Serialize {
                location: self.location.clone(),
                source: e,
            })?;
            let client = self.client().await?;
            let taken = client
                .query_opt(&take, &[&self.workspace, &id, &info, &lease_ms])
                .await
                .map_err(|e| ctx.pg_err("take the lock of", &e))?;
            if let Some(row) = taken {
                me.expires = row.get::<_, DateTime<Utc>>(0);
                drop(client);
                return Ok(Box::new(PgLock::start(self, me, lease)));
            }
            let current = client
                .query_opt(&holder, &[&self.workspace])
                .await
                .map_err(|e| ctx.pg_err("read the lock of", &e))?;
            drop(client);
            // Released between our two statements: try again at once.
            let Some(row) = current else { continue };
            let mut info: LockInfo = serde_json::from_str(row.get::<_, &str>(0)).map_err(|e| {
                StateError::LockCorrupt {
                    location: self.location.clone(),
                    detail: e.to_string(),
                }
            })?;
            info.expires = row.get::<_, DateTime<Utc>>(1);
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(StateError::Locked {
                    info: Box::new(info),
                    location: self.location.clone(),
                });
            }
            tokio::time::sleep(POLL.min(timeout - waited)).await;
        }
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        self.ensure_tables().await?;
        let ctx = self.ctx();
        let s = &self.schema;
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| ctx.pg_err("unlock", &e))?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT info, expires_at FROM {s}.anvil_lock WHERE workspace = $1 FOR UPDATE"
                ),
                &[&self.workspace],
            )
            .await
            .map_err(|e| ctx.pg_err("unlock", &e))?;
        let Some(row) = row else {
            return Err(StateError::NotLocked {
                location: self.location.clone(),
            });
        };
        let mut info: LockInfo =
            serde_json::from_str(row.get::<_, &str>(0)).map_err(|e| StateError::LockCorrupt {
                location: self.location.clone(),
                detail: e.to_string(),
            })?;
        info.expires = row.get::<_, DateTime<Utc>>(1);
        if info.id != id {
            return Err(StateError::LockIdMismatch {
                location: self.location.clone(),
                requested: id.to_string(),
                actual: Box::new(info),
            });
        }
        tx.execute(
            &format!("DELETE FROM {s}.anvil_lock WHERE workspace = $1 AND id = $2"),
            &[&self.workspace, &id],
        )
        .await
        .map_err(|e| ctx.pg_err("unlock", &e))?;
        tx.commit().await.map_err(|e| ctx.pg_err("unlock", &e))
    }

    async fn write(&self, state: &State, lock: &dyn Lock) -> Result<(), StateError> {
        let lock = self.own_lock(lock)?;
        self.store(state, lock).await
    }

    async fn journal(&self, base: &State, lock: &dyn Lock) -> Result<Box<dyn Journal>, StateError> {
        let lock = self.own_lock(lock)?;
        // The journal continues the stored state, so that state must be exactly `base`.
        self.store(base, lock).await?;
        Ok(Box::new(start_journal(self, base, lock)))
    }

    async fn load_broker_store(&self) -> Result<Option<serde_json::Value>, StateError> {
        self.ensure_tables().await?;
        let ctx = self.ctx();
        let s = &self.schema;
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT doc FROM {s}.anvil_broker_store WHERE workspace = $1"),
                &[&self.workspace],
            )
            .await
            .map_err(|e| ctx.pg_err("read the broker store of", &e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let doc: &str = row.get(0);
        serde_json::from_str(doc)
            .map(Some)
            .map_err(|e| StateError::Backend {
                action: "read the broker store of",
                location: self.location.clone(),
                detail: format!("the stored document is not JSON: {e}"),
                hint: format!(
                    "inspect or delete the row of workspace {:?} in {s}.anvil_broker_store",
                    self.workspace
                ),
            })
    }

    async fn write_broker_store(&self, doc: &serde_json::Value) -> Result<(), StateError> {
        self.ensure_tables().await?;
        let ctx = self.ctx();
        let s = &self.schema;
        let text = doc.to_string();
        let client = self.client().await?;
        // One autocommitted upsert: committed (durable) when `execute` returns.
        client
            .execute(
                &format!(
                    "INSERT INTO {s}.anvil_broker_store (workspace, doc, updated_at) \
                     VALUES ($1, $2, now()) ON CONFLICT (workspace) \
                     DO UPDATE SET doc = EXCLUDED.doc, updated_at = now()"
                ),
                &[&self.workspace, &text],
            )
            .await
            .map_err(|e| ctx.pg_err("write the broker store to", &e))?;
        Ok(())
    }

    async fn has_journal(&self) -> bool {
        if self.ensure_tables().await.is_err() {
            return false;
        }
        let Ok(client) = self.client().await else {
            return false;
        };
        let s = &self.schema;
        client
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM {s}.anvil_journal WHERE workspace = $1)"),
                &[&self.workspace],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(false)
    }
}

/// A held lease row; renewed by a background task, deleted on drop.
pub struct PgLock {
    info: LockInfo,
    status: Arc<LockStatus>,
    location: String,
    workspace: String,
    schema: String,
    config: Config,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PgLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLock")
            .field("info", &self.info)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PgLock {
    fn start(backend: &PostgresBackend, info: LockInfo, lease: Duration) -> PgLock {
        let status = LockStatus::new_held();
        let interval = (lease / 3).max(Duration::from_millis(10));
        let renewer = {
            let pool = backend.pool.clone();
            let status = status.clone();
            let ctx = backend.ctx();
            let workspace = backend.workspace.clone();
            let id = info.id.clone();
            let sql = format!(
                "UPDATE {}.anvil_lock SET expires_at = now() + $3::float8 * interval '1 millisecond' \
                 WHERE workspace = $1 AND id = $2",
                backend.schema
            );
            let lease_ms = lease.as_secs_f64() * 1000.0;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    if status.get() != HELD {
                        return;
                    }
                    let renewed = match pool.get().await {
                        Ok(c) => c
                            .execute(&sql, &[&workspace, &id, &lease_ms])
                            .await
                            .map_err(|e| ctx.pg_err("renew the lock of", &e)),
                        Err(e) => Err(ctx.pool_err("renew the lock of", e)),
                    };
                    match renewed {
                        Ok(1) => {}
                        Ok(_) => {
                            status.set_from_held(LOST);
                            return;
                        }
                        // Transient: try again next interval; if the lease runs out
                        // meanwhile, the next renewal notices the row is not ours.
                        Err(e) => tracing::warn!("renewing state lock: {e}"),
                    }
                }
            })
        };
        PgLock {
            info,
            status,
            location: backend.location.clone(),
            workspace: backend.workspace.clone(),
            schema: backend.schema.clone(),
            config: backend.config.clone(),
            renewer: Some(renewer),
        }
    }

    fn id(&self) -> &str {
        &self.info.id
    }
}

impl Lock for PgLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    fn is_lost(&self) -> bool {
        self.status.get() == LOST
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        let was_held = self.status.get() == HELD;
        self.status.set_from_held(RELEASED);
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if !was_held {
            return;
        }
        // `drop` cannot await, and the caller's runtime may be single-threaded (and busy
        // with this very call) or shutting down: delete the row from a thread with its
        // own connection and wait for it, so the next command finds the lock free.
        let config = self.config.clone();
        let sql = format!(
            "DELETE FROM {}.anvil_lock WHERE workspace = $1 AND id = $2",
            self.schema
        );
        let workspace = self.workspace.clone();
        let id = self.info.id.clone();
        let location = self.location.clone();
        let worker = std::thread::Builder::new()
            .name("anvil-pg-unlock".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    let (client, conn) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
                    let conn = tokio::spawn(conn);
                    let r = client
                        .execute(&sql, &[&workspace, &id])
                        .await
                        .map_err(|e| e.to_string());
                    drop(client);
                    let _ = conn.await;
                    r.map(|_| ())
                })
            });
        match worker.map(|t| t.join()) {
            Ok(Ok(Ok(()))) => {}
            // The lease then runs out by itself.
            _ => tracing::warn!(
                "could not release the state lock {location}; it expires when its lease runs out"
            ),
        }
    }
}

/// A checkpoint computed by the caller.
struct Snap {
    state_doc: String,
    lineage: uuid::Uuid,
    serial: u64,
    pending: Vec<PendingOp>,
}

/// The checkpoint of `state` with the journal's pending view.
fn make_snap(
    state: &State,
    pending: &[PendingOp],
    location: &str,
) -> Result<Box<Snap>, StateError> {
    let view = StateView {
        version: state.version,
        lineage: state.lineage,
        serial: state.serial,
        resources: &state.resources,
        pending,
    };
    let doc = serde_json::to_string(&view).map_err(|e| StateError::Serialize {
        location: location.to_string(),
        source: e,
    })?;
    Ok(Box::new(Snap {
        state_doc: doc,
        lineage: state.lineage,
        serial: state.serial,
        pending: pending.to_vec(),
    }))
}

/// Journal rows with group commit (see the module docs).
fn start_journal(
    backend: &PostgresBackend,
    base: &State,
    lock: &PgLock,
) -> QueuedJournal<Box<Snap>> {
    let location: Arc<str> = Arc::from(backend.journal_location());
    let worker = Worker {
        pool: backend.pool.clone(),
        q: Queries::new(&backend.schema),
        ctx: backend.ctx(),
        workspace: backend.workspace.clone(),
        lock_id: lock.id().to_string(),
        lock: lock.status.clone(),
        lineage: base.lineage,
        base_serial: base.serial,
        retained: HashMap::new(),
        failed: None,
        location: location.to_string(),
    };
    let threshold = MIN_CHECKPOINT_INTERVAL.max(base.resources.len() as u64);
    QueuedJournal::start(
        worker,
        location,
        base.pending.clone(),
        Arc::new(AtomicU64::new(threshold)),
        Due::Records {
            min: MIN_CHECKPOINT_INTERVAL,
        },
        make_snap,
    )
}

#[async_trait]
impl Sink for Worker {
    type Snap = Box<Snap>;

    fn max_batch_bytes(&self) -> usize {
        // One INSERT takes any number of rows.
        usize::MAX
    }

    async fn flush(&mut self, batch: Vec<Batched>) {
        self.insert_batch(batch).await;
    }

    async fn checkpoint(&mut self, snap: Box<Snap>) -> Result<(), StateError> {
        self.write_checkpoint(&snap).await
    }
}

/// The background task's state.
struct Worker {
    pool: Pool,
    q: Queries,
    ctx: Ctx,
    workspace: String,
    lock_id: String,
    lock: Arc<LockStatus>,
    lineage: uuid::Uuid,
    base_serial: u64,
    /// Per address, the last result written since the last checkpoint (line, serial).
    retained: HashMap<String, (u64, String)>,
    /// After a failed write nothing more is written (no journal with holes).
    failed: Option<String>,
    location: String,
}

impl Worker {
    fn check(&self) -> Result<(), StateError> {
        if let Some(detail) = &self.failed {
            return Err(StateError::JournalFailed {
                journal: self.location.clone(),
                detail: detail.clone(),
            });
        }
        match self.lock.get() {
            HELD => Ok(()),
            LOST => Err(StateError::LockLost {
                location: self.ctx.location.clone(),
            }),
            _ => Err(StateError::JournalFailed {
                journal: self.location.clone(),
                detail: "the state lock was released".into(),
            }),
        }
    }

    async fn insert(&self, batch: &[Batched]) -> Result<(), StateError> {
        self.check()?;
        let serials: Vec<Option<i64>> = batch
            .iter()
            .map(|(_, r, _)| r.as_ref().map(|(_, s)| to_i64(*s)))
            .collect();
        let records: Vec<&str> = batch.iter().map(|(l, _, _)| l.as_str()).collect();
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| self.ctx.pool_err("write the journal of", e))?;
        let n = client
            .execute(
                &self.q.insert_journal,
                &[&self.workspace, &serials, &records, &self.lock_id],
            )
            .await
            .map_err(|e| self.ctx.pg_err("write the journal of", &e))?;
        if n as usize != batch.len() {
            // The guard found no lock row of ours: nothing was inserted.
            self.lock.set_from_held(LOST);
            return Err(StateError::LockLost {
                location: self.ctx.location.clone(),
            });
        }
        Ok(())
    }

    /// Insert a batch of records with one statement (one round trip, one commit).
    async fn insert_batch(&mut self, batch: Vec<Batched>) {
        if batch.is_empty() {
            return;
        }
        match self.insert(&batch).await {
            Ok(()) => {
                for (line, result, done) in batch {
                    if let Some((address, serial)) = result {
                        self.retained.insert(address, (serial, line));
                    }
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                if matches!(e, StateError::Backend { .. }) {
                    self.failed = Some(e.to_string());
                }
                let detail = e.to_string();
                let lost = matches!(e, StateError::LockLost { .. });
                let mut first = Some(e);
                for (_, _, done) in batch {
                    let err = first.take().unwrap_or_else(|| {
                        if lost {
                            StateError::LockLost {
                                location: self.ctx.location.clone(),
                            }
                        } else {
                            StateError::JournalFailed {
                                journal: self.location.clone(),
                                detail: detail.clone(),
                            }
                        }
                    });
                    let _ = done.send(Err(err));
                }
            }
        }
    }

    async fn write_checkpoint(&mut self, snap: &Snap) -> Result<(), StateError> {
        self.check()?;
        if snap.lineage != self.lineage {
            return Err(StateError::LineageMismatch {
                location: self.ctx.location.clone(),
                other: self.location.clone(),
                expected: snap.lineage,
                found: self.lineage,
            });
        }
        if snap.serial < self.base_serial {
            return Err(StateError::StaleState {
                location: self.ctx.location.clone(),
                stored: self.base_serial,
                ours: snap.serial,
            });
        }
        let result = self.checkpoint_inner(snap).await;
        if let Err(e) = &result {
            if !matches!(e, StateError::LockLost { .. }) {
                self.failed = Some(e.to_string());
            }
        }
        result
    }

    async fn checkpoint_inner(&mut self, snap: &Snap) -> Result<(), StateError> {
        // Results the snapshot does not cover stay in the journal, as with files.
        let mut keep: Vec<(String, u64, String)> = self
            .retained
            .iter()
            .filter(|(_, (serial, _))| *serial > snap.serial)
            .map(|(a, (s, l))| (a.clone(), *s, l.clone()))
            .collect();
        keep.sort_by_key(|(_, serial, _)| *serial);
        let mut rows: Vec<(Option<i64>, String)> = keep
            .iter()
            .map(|(_, s, l)| (Some(to_i64(*s)), l.clone()))
            .collect();
        // Replaying a carried-over result clears its address's pending entry; if the
        // operation pending now came after that result, restate its intent.
        for op in &snap.pending {
            if keep.iter().any(|(address, _, _)| *address == op.address) {
                let intent = JournalRecord::Intent {
                    address: op.address.clone(),
                    operation: op.operation,
                    at: op.started_at,
                };
                let line = serde_json::to_string(&intent).map_err(|e| StateError::Serialize {
                    location: self.location.clone(),
                    source: e,
                })?;
                rows.push((None, line));
            }
        }
        let ctx = &self.ctx;
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| ctx.pool_err("write", e))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| ctx.pg_err("write", &e))?;
        check_lock(
            &tx,
            &self.q,
            &self.workspace,
            &self.lock_id,
            &self.lock,
            ctx,
        )
        .await?;
        replace_state(
            &tx,
            &self.q,
            &self.workspace,
            (snap.lineage, snap.serial),
            &snap.state_doc,
            &rows,
            ctx,
        )
        .await?;
        tx.commit().await.map_err(|e| ctx.pg_err("write", &e))?;
        self.base_serial = snap.serial;
        self.retained = keep.into_iter().map(|(a, s, l)| (a, (s, l))).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_keep_the_password_in_messages() {
        let b = PostgresBackend::new(
            "postgres://anvil:hunter2@127.0.0.1:5999/db?schema=infra&sslmode=prefer",
            "demo",
        )
        .unwrap();
        assert_eq!(
            b.describe(),
            "postgres://anvil:***@127.0.0.1:5999/db?schema=infra&sslmode=prefer (workspace demo)"
        );
        assert_eq!(b.schema, "\"infra\"");
        assert!(!format!("{b:?}").contains("hunter2"));
        let b = PostgresBackend::new("postgresql:///db?host=/tmp/sock", "demo").unwrap();
        assert_eq!(b.schema_name, "public");

        for (url, needle) in [
            ("postgres://u:hunter2@h/db?schema=a-b", "schema"),
            ("postgres://u:hunter2@h/db?schema=1a", "schema"),
            (
                "postgres://u:hunter2@h/db?sslmode=require",
                "sslmode=require",
            ),
            ("postgres://u:hunter2@h/db?bogus=1", "bogus"),
            ("postgres://u:hunter2@h:notaport/db", "u:***@h"),
        ] {
            let err = PostgresBackend::new(url, "demo").unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, StateError::InvalidUrl { .. }), "{url}: {msg}");
            assert!(msg.contains(needle), "{url}: {msg}");
            assert!(!msg.contains("hunter2"), "{url}: {msg}");
        }
    }

    #[test]
    fn scrub_and_url_password() {
        assert_eq!(
            url_password("postgres://u:p%40ss@h/d").as_deref(),
            Some("p%40ss")
        );
        assert_eq!(url_password("postgres://u@h/d"), None);
        assert_eq!(scrub("a hunter2 b", Some("hunter2")), "a *** b");
        assert_eq!(scrub("a b", Some("")), "a b");
    }

    #[tokio::test]
    async fn unreachable_server_names_url_and_what_to_do() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let b = PostgresBackend::new(
            &format!("postgres://anvil:hunter2@127.0.0.1:{port}/db"),
            "demo",
        )
        .unwrap();
        let err = b.load().await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StateError::Backend { .. }), "{msg}");
        assert!(
            msg.contains(&format!("postgres://anvil:***@127.0.0.1:{port}/db")),
            "{msg}"
        );
        assert!(msg.contains("check the host and port"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
