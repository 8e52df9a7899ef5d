//! Starts the real `anvil serve` for black-box tests and benchmarks: waits for its
//! `anvil serve listening on URL` line, keeps its stderr (logs) in a file, and kills it
//! when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The bearer token the helpers start servers with (`ANVIL_SERVE_TOKEN`).
pub const TOKEN: &str = "serve-test-token-0123456789abcdef";

/// A running `anvil serve`.
pub struct Serve {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Serve {
    /// `anvil serve --listen 127.0.0.1:0 --data-dir DATA ARGS…` with `TOKEN`; `log` receives
    /// stderr. Panics (failing the test) when no address line comes within 60 s.
    pub fn start(bin: &str, data_dir: &Path, args: &[&str], log: &Path) -> Serve {
        Serve::start_with(bin, data_dir, args, log, |_| {})
    }

    /// [`Serve::start`], with `setup` adjusting the command first (environment variables).
    pub fn start_with(
        bin: &str,
        data_dir: &Path,
        args: &[&str],
        log: &Path,
        setup: impl FnOnce(&mut Command),
    ) -> Serve {
        let err = std::fs::File::create(log).expect("log file");
        let mut cmd = Command::new(bin);
        setup(&mut cmd);
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("ANVIL_SERVE_TOKEN", TOKEN)
            .env_remove("ANVIL_SERVE_DATABASE")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start anvil serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "anvil serve printed no address line within 60s; stderr:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        };
        let Some(url) = line.strip_prefix("anvil serve listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "unexpected first line {line:?}; stderr:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        Serve {
            url: url.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    /// Its stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for it to exit (gracefully) and returns its exit code.
    pub fn stop(mut self) -> Option<i32> {
        // SAFETY: kill(2) on the pid of our own child, which we have not waited for yet.
        let pid = self.child.id() as libc::pid_t;
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = self.child.wait().ok()?;
        status.code()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A valid Environment document named `name`, as YAML.
pub fn environment_yaml(name: &str) -> String {
    format!(
        "apiVersion: anvil/v1
kind: Environment
metadata:
  name: {name}
provider: aws
region: eu-central-1
account_id: \"123456789012\"
size: small
network:
  cidr: 10.20.0.0/16
  az_count: 2
kubernetes:
  version: \"1.31\"
"
    )
}
