//! The exclusive, leased state lock (`<file>.lock`).
//!
//! The lock file is JSON naming the holder ([`LockInfo`]). Changes to it (take, renew,
//! release, force-unlock) happen inside a short critical section guarded by an OS file
//! lock (`flock`) on the state's directory, so two processes can never both see "free"
//! and both write. Locking the directory rather than a guard file leaves nothing behind
//! (older versions left a `<file>.lock.guard` per workspace, which is removed when seen).
//! The flock is *not* held while the lock is held: a holder that dies leaves only the JSON
//! file behind, whose lease runs out by itself, because the holder renews `expires` every
//! lease/3 from a background thread while the [`LockHandle`] lives.
//!
//! Time comes from a [`Clock`] so lease expiry is testable without sleeping.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::error::loc;
use super::fsio::{self, Faults};
use super::StateError;

/// Lease used when `ANVIL_LOCK_LEASE` is not set.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How often a waiting `lock` call looks again.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Source of the current time (injectable for tests).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Who holds the lock, written to `<file>.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Random id; `anvil force-unlock ID` takes it.
    pub id: String,
    /// `USER@host`.
    pub who: String,
    /// Host name.
    pub host: String,
    /// Process id on `host`.
    pub pid: u32,
    /// The command holding the lock, e.g. `apply`.
    pub operation: String,
    /// When the lock was taken.
    pub created: DateTime<Utc>,
    /// When the lease runs out unless renewed.
    pub expires: DateTime<Utc>,
}

/// Parse a duration such as `500ms`, `2s`, `1m`, `1h`, or plain seconds (`30`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }?;
    Some(Duration::from_millis(ms))
}

pub(crate) const HELD: u8 = 0;
pub(crate) const LOST: u8 = 1;
pub(crate) const RELEASED: u8 = 2;

/// Shared between a [`LockHandle`], its renewal thread and journal writers: is the lock
/// still ours?
#[derive(Debug)]
pub(crate) struct LockStatus(AtomicU8);

impl LockStatus {
    pub(crate) fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
    pub(crate) fn new_held() -> Arc<LockStatus> {
        Arc::new(LockStatus(AtomicU8::new(HELD)))
    }
    pub(crate) fn set_from_held(&self, to: u8) {
        let _ = self
            .0
            .compare_exchange(HELD, to, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// The files of one lock.
#[derive(Debug, Clone)]
pub(crate) struct LockFiles {
    pub(crate) lock: PathBuf,
    /// The guard file older versions flocked; removed when found.
    pub(crate) legacy_guard: PathBuf,
}

impl LockFiles {
    pub(crate) fn for_state(state: &Path) -> Self {
        LockFiles {
            lock: fsio::sibling(state, ".lock"),
            legacy_guard: fsio::sibling(state, ".lock.guard"),
        }
    }

    /// Run `f` while holding the OS lock on the directory of the lock file.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T, StateError>) -> Result<T, StateError> {
        let dir = fsio::parent_dir(&self.lock);
        std::fs::create_dir_all(dir).map_err(|e| StateError::io("create directory", dir, e))?;
        let guard = File::open(dir).map_err(|e| StateError::io("open", dir, e))?;
        guard.lock().map_err(|e| StateError::io("flock", dir, e))?;
        // No process of this version uses the old guard file, and one of an older version
        // that might still flock it holds it only for an instant; best effort.
        if self.legacy_guard.exists() {
            let _ = std::fs::remove_file(&self.legacy_guard);
        }
        let result = f();
        // Closing the file releases the flock as well; unlock explicitly to be prompt.
        let _ = File::unlock(&guard);
        result
    }

    fn read(&self) -> Result<Option<LockInfo>, StateError> {
        let Some(bytes) =
            fsio::read_optional(&self.lock).map_err(|e| StateError::io("read", &self.lock, e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::LockCorrupt {
                location: loc(&self.lock),
                detail: e.to_string(),
            })
    }

    fn write(&self, info: &LockInfo) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec_pretty(info).map_err(|e| StateError::Serialize {
            location: loc(&self.lock),
            source: e,
        })?;
        bytes.push(b'\n');
        fsio::atomic_write(&self.lock, &bytes, None, &Faults::none())?;
        Ok(())
    }

    fn remove(&self) -> Result<(), StateError> {
        fsio::remove_durably(&self.lock, &Faults::none())?;
        Ok(())
    }

    /// One attempt: take the lock if free or expired at `now`. Returns the holder that
    /// blocks us, or `None` when `me` now holds it.
    pub(crate) fn try_acquire(
        &self,
        me: &LockInfo,
        now: DateTime<Utc>,
    ) -> Result<Option<LockInfo>, StateError> {
        self.guarded(|| match self.read()? {
            Some(holder) if holder.expires >= now => Ok(Some(holder)),
            _ => {
                self.write(me)?;
                Ok(None)
            }
        })
    }

    /// Extend our lease; `Ok(false)` if the lock is no longer ours.
    pub(crate) fn renew(&self, id: &str, expires: DateTime<Utc>) -> Result<bool, StateError> {
        self.guarded(|| match self.read()? {
            Some(mut info) if info.id == id => {
                info.expires = expires;
                self.write(&info)?;
                Ok(true)
            }
            _ => Ok(false),
        })
    }

    /// Remove the lock if its id is `id`.
    pub(crate) fn release(&self, id: &str) -> Result<(), StateError> {
        self.guarded(|| match self.read()? {
            Some(info) if info.id == id => self.remove(),
            _ => Ok(()),
        })
    }

    pub(crate) fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        self.guarded(|| match self.read()? {
            None => Err(StateError::NotLocked {
                location: loc(&self.lock),
            }),
            Some(info) if info.id == id => self.remove(),
            Some(info) => Err(StateError::LockIdMismatch {
                location: loc(&self.lock),
                requested: id.to_string(),
                actual: Box::new(info),
            }),
        })
    }
}

pub(crate) fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) fn whoami() -> (String, String) {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_string());
    (format!("{user}@{host}"), host)
}

/// Take the lock at `files`, waiting up to `timeout`.
pub(crate) fn acquire(
    files: &LockFiles,
    operation: &str,
    timeout: Duration,
    lease: Duration,
    clock: Arc<dyn Clock>,
) -> Result<LockHandle, StateError> {
    let (who, host) = whoami();
    let start = Instant::now();
    let id = uuid::Uuid::new_v4().to_string();
    loop {
        let now = clock.now();
        let me = LockInfo {
            id: id.clone(),
            who: who.clone(),
            host: host.clone(),
            pid: std::process::id(),
            operation: operation.to_string(),
            created: now,
            expires: add(now, lease),
        };
        match files.try_acquire(&me, now)? {
            None => return Ok(LockHandle::start(files.clone(), me, lease, clock)),
            Some(holder) => {
                let waited = start.elapsed();
                if waited >= timeout {
                    return Err(StateError::Locked {
                        info: Box::new(holder),
                        location: loc(&files.lock),
                    });
                }
                std::thread::sleep(POLL.min(timeout - waited));
            }
        }
    }
}

/// Proof that this process holds the state lock. Renews the lease in the background;
/// dropping it stops renewal and releases the lock (if it is still ours).
#[derive(Debug)]
pub struct LockHandle {
    info: LockInfo,
    files: LockFiles,
    status: Arc<LockStatus>,
    lease: Duration,
    clock: Arc<dyn Clock>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl LockHandle {
    fn start(files: LockFiles, info: LockInfo, lease: Duration, clock: Arc<dyn Clock>) -> Self {
        let status = Arc::new(LockStatus(AtomicU8::new(HELD)));
        let (stop, stopped) = mpsc::channel::<()>();
        let interval = (lease / 3).max(Duration::from_millis(10));
        let renewer = {
            let files = files.clone();
            let status = status.clone();
            let clock = clock.clone();
            let id = info.id.clone();
            std::thread::Builder::new()
                .name("anvil-lock-renew".into())
                .spawn(move || loop {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    match files.renew(&id, add(clock.now(), lease)) {
                        Ok(true) => {}
                        Ok(false) => {
                            status.set_from_held(LOST);
                            return;
                        }
                        // A transient IO error: try again next interval; if the lease
                        // runs out meanwhile, the next renewal notices the lock is gone.
                        Err(e) => tracing::warn!("renewing state lock: {e}"),
                    }
                })
                .ok()
        };
        if renewer.is_none() {
            tracing::warn!(
                "could not start the lock renewal thread; the lock on {} will expire after {:?}",
                files.lock.display(),
                lease
            );
        }
        LockHandle {
            info,
            files,
            status,
            lease,
            clock,
            stop: Some(stop),
            renewer,
        }
    }

    /// The lock as written when taken.
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// True once renewal found that the lock file no longer names us (our lease ran out
    /// and someone else took it, or it was force-unlocked).
    pub fn is_lost(&self) -> bool {
        self.status.get() == LOST
    }

    pub(crate) fn lock_path(&self) -> &Path {
        &self.files.lock
    }

    pub(crate) fn status(&self) -> Arc<LockStatus> {
        self.status.clone()
    }

    /// Renew now (what the background thread does); returns whether the lock is ours.
    ///
    /// # Errors
    /// The lock file cannot be read or written.
    pub fn renew_now(&self) -> Result<bool, StateError> {
        if self.status.get() != HELD {
            return Ok(false);
        }
        let ours = self
            .files
            .renew(&self.info.id, add(self.clock.now(), self.lease))?;
        if !ours {
            self.status.set_from_held(LOST);
        }
        Ok(ours)
    }
}

impl super::Lock for LockHandle {
    fn info(&self) -> &LockInfo {
        LockHandle::info(self)
    }

    fn is_lost(&self) -> bool {
        LockHandle::is_lost(self)
    }

    fn location(&self) -> String {
        loc(&self.files.lock)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for LockHandle {
    fn drop(&mut self) {
        self.status.set_from_held(RELEASED);
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        if let Err(e) = self.files.release(&self.info.id) {
            tracing::warn!("releasing state lock: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug)]
    pub(crate) struct ManualClock(Mutex<DateTime<Utc>>);

    impl ManualClock {
        fn new() -> Arc<Self> {
            Arc::new(ManualClock(Mutex::new(Utc::now())))
        }
        fn advance(&self, d: Duration) {
            let mut t = self.0.lock().unwrap();
            *t = add(*t, d);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    fn files() -> (tempfile::TempDir, LockFiles) {
        let dir = tempfile::tempdir().unwrap();
        let files = LockFiles::for_state(&dir.path().join("s.json"));
        (dir, files)
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 7s "), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("3d"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn second_locker_fails_at_once_naming_holder() {
        let (_d, f) = files();
        let clock = ManualClock::new();
        let h = acquire(&f, "apply", Duration::ZERO, DEFAULT_LEASE, clock.clone()).unwrap();
        let err = acquire(&f, "plan", Duration::ZERO, DEFAULT_LEASE, clock).unwrap_err();
        let StateError::Locked { info, location } = &err else {
            panic!("{err}")
        };
        assert_eq!(info.id, h.info().id);
        assert_eq!(location, &loc(&f.lock));
        let msg = err.to_string();
        for needle in [
            h.info().who.as_str(),
            h.info().host.as_str(),
            &h.info().pid.to_string(),
            "`apply`",
            &h.info().id,
            "--lock-timeout",
            "anvil force-unlock",
            "expires by itself",
            &f.lock.display().to_string(),
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
    }

    #[test]
    fn expired_lease_is_taken_over_and_old_holder_notices() {
        let (_d, f) = files();
        let clock = ManualClock::new();
        let first = acquire(&f, "apply", Duration::ZERO, DEFAULT_LEASE, clock.clone()).unwrap();
        clock.advance(Duration::from_secs(29));
        assert!(acquire(&f, "apply", Duration::ZERO, DEFAULT_LEASE, clock.clone()).is_err());
        // Renewal moves the expiry forward...
        assert!(first.renew_now().unwrap());
        clock.advance(Duration::from_secs(29));
        assert!(acquire(&f, "apply", Duration::ZERO, DEFAULT_LEASE, clock.clone()).is_err());
        // ...and without it the lease runs out.
        clock.advance(Duration::from_secs(2));
        let second = acquire(&f, "apply", Duration::ZERO, DEFAULT_LEASE, clock.clone()).unwrap();
        assert!(!first.renew_now().unwrap());
        assert!(first.is_lost());
        // Dropping the stale handle must not remove the new holder's lock.
        drop(first);
        assert_eq!(f.read().unwrap().unwrap().id, second.info().id);
        drop(second);
        assert!(f.read().unwrap().is_none());
    }

    #[test]
    fn drop_releases() {
        let (_d, f) = files();
        let h = acquire(
            &f,
            "apply",
            Duration::ZERO,
            DEFAULT_LEASE,
            Arc::new(SystemClock),
        )
        .unwrap();
        assert!(f.lock.exists());
        drop(h);
        assert!(!f.lock.exists());
        acquire(
            &f,
            "apply",
            Duration::ZERO,
            DEFAULT_LEASE,
            Arc::new(SystemClock),
        )
        .unwrap();
    }

    #[test]
    fn force_unlock_checks_id() {
        let (_d, f) = files();
        assert!(matches!(
            f.force_unlock("x"),
            Err(StateError::NotLocked { .. })
        ));
        let h = acquire(
            &f,
            "apply",
            Duration::ZERO,
            DEFAULT_LEASE,
            Arc::new(SystemClock),
        )
        .unwrap();
        let err = f.force_unlock("nope").unwrap_err();
        assert!(err.to_string().contains(&h.info().id), "{err}");
        f.force_unlock(&h.info().id).unwrap();
        assert!(!f.lock.exists());
        assert!(!h.renew_now().unwrap());
        assert!(h.is_lost());
    }

    #[test]
    fn background_renewal_keeps_short_lease_alive() {
        let (_d, f) = files();
        // Long enough that a loaded machine (the whole suite running on 2 cores) does
        // not starve the renewer past its lease; the wait is still 2.5 leases, so
        // without renewal the lock would have expired.
        let lease = Duration::from_secs(2);
        let h = acquire(&f, "apply", Duration::ZERO, lease, Arc::new(SystemClock)).unwrap();
        std::thread::sleep(Duration::from_millis(5000));
        let err = acquire(&f, "plan", Duration::ZERO, lease, Arc::new(SystemClock)).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }));
        assert!(!h.is_lost());
    }

    #[test]
    fn waiter_proceeds_after_release() {
        let (_d, f) = files();
        let h = acquire(
            &f,
            "apply",
            Duration::ZERO,
            DEFAULT_LEASE,
            Arc::new(SystemClock),
        )
        .unwrap();
        let f2 = f.clone();
        let waiter = std::thread::spawn(move || {
            let start = Instant::now();
            let h2 = acquire(
                &f2,
                "apply",
                Duration::from_secs(10),
                DEFAULT_LEASE,
                Arc::new(SystemClock),
            )?;
            Ok::<_, StateError>((start.elapsed(), h2.info().clone()))
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(h);
        let (waited, info) = waiter.join().unwrap().unwrap();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(info.operation, "apply");
    }

    #[test]
    fn waiter_times_out() {
        let (_d, f) = files();
        let _h = acquire(
            &f,
            "apply",
            Duration::ZERO,
            DEFAULT_LEASE,
            Arc::new(SystemClock),
        )
        .unwrap();
        let start = Instant::now();
        let err = acquire(
            &f,
            "apply",
            Duration::from_millis(250),
            DEFAULT_LEASE,
            Arc::new(SystemClock),
        )
        .unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }));
        assert!(start.elapsed() >= Duration::from_millis(250));
    }

    #[test]
    fn corrupt_lock_file_is_reported() {
        let (_d, f) = files();
        std::fs::write(&f.lock, "{nope").unwrap();
        let err = acquire(
            &f,
            "apply",
            Duration::ZERO,
            DEFAULT_LEASE,
            Arc::new(SystemClock),
        )
        .unwrap_err();
        assert!(matches!(err, StateError::LockCorrupt { .. }), "{err}");
        assert!(err.to_string().contains(&f.lock.display().to_string()));
    }
}
