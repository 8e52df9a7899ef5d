//! A throwaway moto server (the AWS simulator from PyPI, installed into `.venv/` by
//! `.ci/setup-python`) for tests: `.venv/bin/moto_server` on a free loopback port, killed
//! when the [`Moto`] is dropped.
//!
//! - [`Moto::start`] gives a private server (use it when a test counts requests or must
//!   not see other tests' resources); [`Moto::shared`] one server per test binary, killed
//!   by an `atexit` hook (tests sharing it use their own bucket/resource names, or
//!   [`Moto::reset`] only when they own the whole server).
//! - [`Moto::env`] / [`Moto::apply_env`]: the standard AWS environment anvil reads
//!   (`AWS_ENDPOINT_URL`, fake credentials, `AWS_REGION=us-east-1`), with every other
//!   `AWS_*` variable of the caller removed so a developer's real profile is never used.
//! - [`Moto::python`]: runs a boto3 snippet against the server and returns its `result`
//!   as JSON, to inspect what anvil did.
//! - [`Moto::requests`]: the AWS requests the server has logged (werkzeug access log,
//!   `/moto-api/` excluded), to show that bad input made no AWS call.
//!
//! No leaked servers: moto gets a parent-death signal (SIGKILL) and is spawned from a
//! thread that lives as long as the test process, so even a test binary killed with
//! SIGKILL takes its servers with it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The region every test uses (moto accepts any; anvil and boto3 must agree).
pub const REGION: &str = "us-east-1";

/// A running moto server; killed on drop.
pub struct Moto {
    /// Holds `server.log`; `None` for the shared server, whose directory the `atexit`
    /// hook deletes.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// The server; `None` once stopped.
    child: Option<Child>,
    /// Loopback TCP port.
    pub port: u16,
}

/// `.venv/bin/NAME` of this repository; panics saying to run `bash .ci/setup-python`
/// when it is missing (a missing simulator fails the test, it never skips it).
pub fn venv_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `bash .ci/setup-python` (installs moto[server] and boto3 into \
         .venv/) and test again",
        p.display()
    );
    p
}

impl Moto {
    /// Starts a fresh server; panics saying what to do when moto is not installed or
    /// does not start.
    pub fn start() -> Moto {
        let bin = venv_bin("moto_server");
        let mut last = String::new();
        // A free port can be taken between our probe and the server's bind (tests run in
        // parallel), so try a few times.
        for _ in 0..5 {
            match Moto::try_start(&bin) {
                Ok(m) => return m,
                Err(log) => last = log,
            }
        }
        panic!("moto ({}) did not start:\n{last}", bin.display());
    }

    fn try_start(bin: &Path) -> Result<Moto, String> {
        let dir = tempfile::Builder::new()
            .prefix("anvil-moto-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let root = dir.path().to_path_buf();
        let port = free_port();
        let child = spawn_server(bin, &root, port)?;
        let mut moto = Moto {
            dir: Some(dir),
            root,
            child: Some(child),
            port,
        };
        // On failure `moto` drops here: killed and deleted.
        moto.wait_ready()?;
        Ok(moto)
    }

    /// One server per test binary, started on first use, killed when the process exits.
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        static CLEANUP: OnceLock<(u32, PathBuf)> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some((pid, root)) = CLEANUP.get() {
                kill_pid(*pid);
                let _ = std::fs::remove_dir_all(root);
            }
        }
        SHARED.get_or_init(|| {
            let mut m = Moto::start();
            // The atexit hook owns the directory from here on (statics are never dropped).
            if let Some(d) = m.dir.take() {
                let _ = d.keep();
            }
            let pid = m.child.as_ref().map_or(0, Child::id);
            let _ = CLEANUP.set((pid, m.root.clone()));
            // SAFETY: registers a plain `extern "C" fn` that captures nothing.
            unsafe {
                libc::atexit(stop_shared);
            }
            m
        })
    }

    /// The CPU time (user + system) the server process has used so far, from
    /// `/proc/PID/stat`; `None` when it cannot be read. moto answers on one Python
    /// interpreter (one core, under the GIL), so its CPU time over a run is a lower bound
    /// on that run's wall time.
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14,
        // stime 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
        (hz > 0).then(|| Duration::from_millis(ticks * 1000 / hz))
    }

    /// moto's CPU time since `before` (an earlier [`Moto::cpu_time`]); `None` when
    /// either reading failed.
    pub fn busy_since(&self, before: Option<Duration>) -> Option<Duration> {
        Some(self.cpu_time()?.saturating_sub(before?))
    }

    /// Makes one request per service anvil uses. moto imports a service's code and
    /// builds a region's backend on its first request (seconds on a small machine), so a
    /// benchmark calls this before timing anything.
    pub fn warm_up(&self) {
        self.python(
            "for name in ['ec2', 'eks', 'rds', 's3', 'sts']:\n    \
             c = boto3.client(name, endpoint_url=ENDPOINT, region_name='eu-central-1', \
             aws_access_key_id='testing', aws_secret_access_key='testing')\n    \
             {'ec2': lambda: c.describe_vpcs(), 'eks': lambda: c.list_clusters(), \
             'rds': lambda: c.describe_db_instances(), 's3': lambda: c.list_buckets(), \
             'sts': lambda: c.get_caller_identity()}[name]()\n",
        );
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The AWS environment for anvil (and any AWS client) to talk to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_DEFAULT_REGION", REGION.to_string()),
            // No ~/.aws files: a developer's profile must not leak into tests.
            ("AWS_CONFIG_FILE", "/dev/null".to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }

    /// Removes the caller's `AWS_*` variables from `cmd` and sets [`Moto::env`].
    pub fn apply_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env())
    }

    /// Forgets every resource (`POST /moto-api/reset`). Only for a server the test owns.
    pub fn reset(&self) {
        let (status, body) = self.http("POST", "/moto-api/reset").unwrap_or_else(|e| {
            panic!("POST {}/moto-api/reset: {e}", self.endpoint());
        });
        assert_eq!(status, 200, "moto reset answered {status}: {body}");
    }

    /// Runs `snippet` (top-level Python) with `boto3`, `json`, `ENDPOINT`, `REGION` and
    /// `client(service)` (a boto3 client for this server) in scope, and returns the JSON of
    /// the variable `result` it sets (`null` if it sets none). Panics with Python's output
    /// when the snippet fails.
    pub fn python(&self, snippet: &str) -> serde_json::Value {
        let script = format!(
            "import json, boto3, botocore\n\
             ENDPOINT = {endpoint:?}\n\
             REGION = {REGION:?}\n\
             def client(name):\n    \
                 return boto3.client(name, endpoint_url=ENDPOINT, region_name=REGION, \
                 aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             result = None\n\
             {snippet}\n\
             print('\\n__RESULT__' + json.dumps(result, default=str))\n",
            endpoint = self.endpoint(),
        );
        let py = venv_bin("python");
        let mut cmd = Command::new(&py);
        cmd.arg("-c").arg(&script).stdin(Stdio::null());
        self.apply_env(&mut cmd);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", py.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "boto3 snippet failed ({}):\n{snippet}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        let json = stdout
            .rsplit_once("__RESULT__")
            .map(|(_, j)| j.trim())
            .unwrap_or_else(|| panic!("boto3 snippet printed no result:\n{stdout}\n{stderr}"));
        serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("boto3 snippet result is not JSON ({e}): {json}"))
    }

    /// Creates bucket `name` (ignores "already yours").
    pub fn create_bucket(&self, name: &str) {
        self.python(&format!(
            "try:\n    client('s3').create_bucket(Bucket={name:?})\n\
             except client('s3').exceptions.BucketAlreadyOwnedByYou:\n    pass\n"
        ));
    }

    /// The AWS requests served so far, one access-log line each (`"PUT /b/k HTTP/1.1"
    /// 200 -` ...), without moto's own `/moto-api/` calls and the readiness probes.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                [
                    "\"GET ",
                    "\"PUT ",
                    "\"POST ",
                    "\"DELETE ",
                    "\"HEAD ",
                    "\"PATCH ",
                ]
                .iter()
                .any(|m| l.contains(m))
            })
            .filter(|l| !l.contains(" /moto-api/"))
            .map(str::to_string)
            .collect()
    }

    /// The server's output so far (startup messages and access log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    /// The server's pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_pid(child.id());
            let _ = child.wait();
        }
    }

    /// Polls `GET /moto-api/` until it answers 200, the server dies, or 60 s pass.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("moto_server exited ({status}):\n{}", self.log()));
                }
            }
            if matches!(self.http("GET", "/moto-api/"), Ok((200, _))) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "moto_server did not answer {}/moto-api/ within 60s:\n{}",
                    self.endpoint(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A bodiless HTTP/1.1 request to the server; returns (status, body).
    fn http(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not HTTP: {resp:?}")))?;
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
        // `dir` (a TempDir) deletes itself after this.
    }
}

fn kill_pid(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) on the server this process started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `moto_server` from one long-lived thread: the parent-death signal fires when
/// the *thread* that forked the child exits, so it must not be a test's thread.
fn spawn_server(bin: &Path, root: &Path, port: u16) -> Result<Child, String> {
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
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Unbuffered, so the access log is on disk when a test reads it.
        .env("PYTHONUNBUFFERED", "1");
    // SAFETY: prctl is async-signal-safe; runs in the child before exec.
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
        .map_err(|e| format!("spawn {}: {e}", bin.display()))
}
