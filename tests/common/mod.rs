//! Helpers for black-box tests: run the real `anvil` binary in a scratch directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_anvil");

/// A scratch working directory; state goes to `<dir>/state/`.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn copy_example(&self, name: &str, to: &str) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        let dst = self.path().join(to);
        copy_dir(&src, &dst);
        dst
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("ANVIL_STATE")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// Runs to completion, failing the test if it takes longer than `limit` (a hang
    /// guard, not a performance assertion).
    pub fn run_with_limit(&self, args: &[&str], limit: Duration) -> Output {
        let mut child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn anvil");
        // Drain both pipes while waiting, or a chatty child blocks on a full pipe.
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let out_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut v);
            v
        });
        let err_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut err, &mut v);
            v
        });
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!("anvil {args:?} did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Output {
            status,
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_limit(args, Duration::from_secs(120))
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn anvil")
    }

    pub fn state_file(&self, name: &str) -> PathBuf {
        self.path().join("state").join(format!("{name}.json"))
    }

    pub fn state_json(&self, name: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state_file(name)).expect("state file");
        serde_json::from_str(&text).expect("state parses")
    }
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts an exit code, printing both streams when it differs.
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
}

/// A `Resources` document with `n` null resources in a binary tree of `depends_on`.
pub fn tree_spec(name: &str, n: usize, extra: &str) -> String {
    let mut s =
        format!("apiVersion: anvil/v1\nkind: Resources\nmetadata:\n  name: {name}\nresources:\n");
    for i in 0..n {
        s.push_str(&format!("  - type: null_resource\n    name: r{i}\n"));
        if i > 0 {
            s.push_str(&format!(
                "    depends_on: [null_resource.r{}]\n",
                (i - 1) / 2
            ));
        }
        s.push_str(&format!(
            "    attributes:\n      triggers:\n        n: \"{i}\"\n{extra}"
        ));
    }
    s
}

/// Waits until `path` exists.
pub fn wait_for(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < limit,
            "{} did not appear within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Points `c` at a BOSH Director simulator (basic auth admin/admin, plain HTTP) and a
/// Vault simulator (token auth), clearing every other BOSH_* / VAULT_* setting.
pub fn at_simulators<'c>(
    c: &'c mut Command,
    bosh_url: &str,
    vault_url: &str,
    token: &str,
) -> &'c mut Command {
    c.env("BOSH_ENVIRONMENT", bosh_url)
        .env("BOSH_CLIENT", "admin")
        .env("BOSH_CLIENT_SECRET", "admin")
        .env_remove("BOSH_CA_CERT")
        .env("VAULT_ADDR", vault_url)
        .env("VAULT_TOKEN", token)
        .env_remove("VAULT_ROLE_ID")
        .env_remove("VAULT_SECRET_ID")
        .env_remove("VAULT_CACERT")
        .env_remove("VAULT_NAMESPACE")
}
