//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, start
//! `postgres` on a free loopback port (and a Unix socket in the same directory), stop it
//! and delete the directory when the [`PgCluster`] is dropped.
//!
//! The server binaries come from `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`, else `PATH` (`.ci/setup-postgres` installs them). As root,
//! `initdb` and `postgres` run as the `postgres` user, because PostgreSQL refuses to run
//! as root.
//!
//! Authentication: the superuser `postgres` is trusted (Unix socket and loopback), so
//! [`PgCluster::url`] needs no password; every other role must give its password
//! (scram-sha-256) over TCP, so a wrong password is a real authentication failure.
//!
//! No leaked servers: `postgres` gets a parent-death signal (SIGKILL) and is spawned from
//! a thread that lives as long as the test process, so even a test binary killed with
//! SIGKILL takes its clusters with it. [`PgCluster::shared`] (one cluster per test binary)
//! is stopped and deleted by an `atexit` hook.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running throwaway cluster; stopped (immediate shutdown) and deleted on drop.
pub struct PgCluster {
    /// Holds `data/`, the Unix socket and `server.log`; `None` for the shared cluster,
    /// whose directory the `atexit` hook deletes.
    dir: Option<tempfile::TempDir>,
    /// The cluster directory (also the Unix socket directory).
    root: PathBuf,
    bindir: PathBuf,
    /// The postmaster; `None` once stopped.
    child: Option<Child>,
    /// Loopback TCP port.
    pub port: u16,
}

/// The owner of the cluster's files and processes when the tests run as root.
#[derive(Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl PgCluster {
    /// Starts a fresh cluster; panics saying what to do when PostgreSQL is not installed
    /// or does not start.
    pub fn start() -> PgCluster {
        let bindir = server_bindir();
        let run_as = run_as();
        let mut last = String::new();
        // A free port can be taken between our probe and the server's bind (tests run in
        // parallel), so try a few times.
        for _ in 0..5 {
            match PgCluster::try_start(&bindir, run_as) {
                Ok(c) => return c,
                Err(log) => last = log,
            }
        }
        panic!("PostgreSQL ({}) did not start:\n{last}", bindir.display());
    }

    fn try_start(bindir: &Path, run_as: Option<RunAs>) -> Result<PgCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("anvil-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        if let Some(r) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(r.uid), Some(r.gid))
                .map_err(|e| format!("chown {} to postgres: {e}", dir.path().display()))?;
        }
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale", "C"])
            .stdin(Stdio::null());
        let o = as_owner(&mut initdb, run_as)
            .output()
            .map_err(|e| format!("run initdb: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "initdb failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        // Superuser trusted; every other role proves its password over TCP.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .map_err(|e| format!("write pg_hba.conf: {e}"))?;

        let port = free_port();
        let child = spawn_postmaster(bindir, &root, port, run_as)?;
        let mut cluster = PgCluster {
            dir: Some(dir),
            root,
            bindir: bindir.to_path_buf(),
            child: Some(child),
            port,
        };
        // On failure `cluster` drops here: stopped and deleted.
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// One cluster per test binary, started on first use, stopped and deleted when the
    /// process exits. Tests sharing it should each use their own database.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        static CLEANUP: OnceLock<(u32, PathBuf)> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some((pid, root)) = CLEANUP.get() {
                stop_pid(*pid, &root.join("data/postmaster.pid"));
                let _ = std::fs::remove_dir_all(root);
            }
        }
        SHARED.get_or_init(|| {
            let mut c = PgCluster::start();
            // The atexit hook owns the directory from here on (statics are never dropped).
            if let Some(d) = c.dir.take() {
                let _ = d.keep();
            }
            let pid = c.child.as_ref().map_or(0, Child::id);
            let _ = CLEANUP.set((pid, c.root.clone()));
            // SAFETY: registers a plain `extern "C" fn` that captures nothing.
            unsafe {
                libc::atexit(stop_shared);
            }
            c
        })
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` (the trusted superuser).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `postgres://USER:PASSWORD@127.0.0.1:PORT/DB`.
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The directory of the Unix socket (`host=` for libpq-style clients).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// Creates database `name` (owned by `postgres`).
    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Creates login role `name` with `password`. With `can_create_tables` it may create
    /// schemas and tables in every database existing now (and in later ones' `public`
    /// schema, through `template1`); without, it may connect but not create anything:
    /// `CREATE` on schema `public` is revoked from `PUBLIC` everywhere.
    pub fn create_role(&self, name: &str, password: &str, can_create_tables: bool) {
        self.psql(
            "postgres",
            &format!("CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'"),
        );
        let dbs = self.psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname <> 'template0' ORDER BY 1",
        );
        for db in dbs.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let sql = if can_create_tables {
                format!(
                    "GRANT CREATE ON DATABASE \"{db}\" TO \"{name}\"; \
                     GRANT CREATE, USAGE ON SCHEMA public TO \"{name}\""
                )
            } else {
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_string()
            };
            self.psql(db, &sql);
        }
    }

    /// Runs `sql` in `db` as the superuser; returns unaligned, tuples-only output.
    /// Panics with psql's message on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let o = self.try_psql(db, sql);
        assert!(
            o.status.success(),
            "psql -d {db} -c {sql:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Like [`PgCluster::psql`] but returns the raw output, success or not.
    pub fn try_psql(&self, db: &str, sql: &str) -> Output {
        Command::new(self.bindir.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.root)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .output()
            .expect("run psql")
    }

    /// Runs `sql` in `db` as `user` with `password` over loopback TCP (password checked);
    /// returns the raw output, success or not.
    pub fn try_psql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> Output {
        Command::new(self.bindir.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", user, "-d", db, "-c", sql])
            .env("PGPASSWORD", password)
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .output()
            .expect("run psql")
    }

    /// The postmaster's pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server at once (SIGQUIT, like `pg_ctl stop -m immediate`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_pid(child.id(), &self.root.join("data/postmaster.pid"));
            let _ = child.wait();
        }
    }

    /// Polls until the server answers a query, the postmaster dies, or 60 s pass.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("postgres exited ({status}):\n{}", self.log()));
                }
            }
            if self.try_psql("postgres", "SELECT 1").status.success() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "postgres did not accept connections within 60s:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        // `dir` (a TempDir) deletes itself after this.
    }
}

/// Sends SIGQUIT (immediate shutdown) and waits up to 10 s for `pidfile` to go, then
/// SIGKILLs.
fn stop_pid(pid: u32, pidfile: &Path) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) on the postmaster this process started.
    unsafe {
        libc::kill(pid, libc::SIGQUIT);
    }
    let start = Instant::now();
    while pidfile.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if pidfile.exists() {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// The directory holding `initdb`, `postgres` and `psql`.
fn server_bindir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let has_server = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
        if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
            let d = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            if o.status.success() && has_server(&d) {
                return d;
            }
        }
        // Debian installs the server beside, not on PATH: pick the newest major version.
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                has_server(&bin).then_some((v, bin))
            })
            .collect();
        versions.sort();
        if let Some((_, d)) = versions.pop() {
            return d;
        }
        for d in std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if has_server(&d) {
                return d;
            }
        }
        panic!(
            "PostgreSQL server binaries (initdb, postgres) not found via pg_config, \
             /usr/lib/postgresql/*/bin or PATH; run `bash .ci/setup-postgres` to install them"
        );
    })
    .clone()
}

/// `Some(postgres user)` when running as root, since PostgreSQL refuses to run as root.
fn run_as() -> Option<RunAs> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: getpwnam with a NUL-terminated name; the result is read before any other
    // getpw* call could overwrite it (tests do not call getpw* elsewhere).
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root but there is no `postgres` user to run the server as; \
         run `bash .ci/setup-postgres` (the Debian package creates it)"
    );
    // SAFETY: non-null result of getpwnam.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some(RunAs { uid, gid })
}

fn as_owner(c: &mut Command, run_as: Option<RunAs>) -> &mut Command {
    if let Some(r) = run_as {
        c.uid(r.uid).gid(r.gid);
    }
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `postgres` from one long-lived thread: the parent-death signal fires when the
/// *thread* that forked the child exits, so it must not be a test's thread.
fn spawn_postmaster(
    bindir: &Path,
    root: &Path,
    port: u16,
    run_as: Option<RunAs>,
) -> Result<Child, String> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            // Ends only with the process: the sender lives in a static.
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    let log = std::fs::File::create(root.join("server.log"))
        .map_err(|e| format!("create server.log: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("server.log: {e}"))?;
    let mut cmd = Command::new(bindir.join("postgres"));
    cmd.arg("-D")
        .arg(root.join("data"))
        .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", root.display()))
        // Throwaway data: durability only costs time.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    as_owner(&mut cmd, run_as);
    // SAFETY: prctl is async-signal-safe; runs in the child after the uid change (which
    // would otherwise clear the parent-death signal) and before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .map_err(|_| "spawner lock poisoned".to_string())?
        .send((cmd, tx))
        .map_err(|_| "spawner thread gone".to_string())?;
    rx.recv()
        .map_err(|_| "spawner thread gone".to_string())?
        .map_err(|e| format!("spawn {}: {e}", bindir.join("postgres").display()))
}
