//! The README's first command, `bash examples/quickstart.sh`, run from a copy of the
//! examples with the test build of anvil: it starts both simulators, applies both
//! examples, finds nothing left to do on the second plan, and stops the simulators — no
//! `anvil sim` process it started is left running. The binary is found through `ANVIL=`
//! or, as cargo built it, through `cargo metadata`'s target directory (so
//! `CARGO_TARGET_DIR` is honoured); a missing binary is a clear error.
//!
//! Each run reaches anvil through a symlink inside its own scratch directory, so the
//! processes it starts are told apart from every other test's by their `argv[0]`.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch copy of the repository as the script sees it: `examples/`, and the manifest
/// and sources `cargo metadata` reads (symlinked; nothing is built).
fn repo_copy() -> Scratch {
    let s = Scratch::new();
    s.copy_example("", "examples");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in ["Cargo.toml", "src", "benches"] {
        std::os::unix::fs::symlink(root.join(entry), s.path().join(entry)).expect("symlink");
    }
    s
}

/// Puts a symlink to the test build of anvil at `at` and returns its path.
fn link_anvil(at: &Path) -> PathBuf {
    std::fs::create_dir_all(at.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(BIN, at).expect("symlink anvil");
    at.to_path_buf()
}

/// Runs the quickstart in `s` with these environment settings.
fn quickstart(s: &Scratch, env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new("bash");
    c.arg("examples/quickstart.sh")
        .current_dir(s.path())
        .env("CARGO", env!("CARGO"))
        .env("NO_COLOR", "1")
        .env_remove("ANVIL")
        .env_remove("ANVIL_SKIP_BUILD")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run bash")
}

/// Pids of running `anvil sim …` processes whose binary path lies under `dir` (read from
/// /proc: argv[0] is the path the script ran, our symlink).
fn sims_under(dir: &Path) -> Vec<u32> {
    let dirs = [
        dir.to_path_buf(),
        std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
    ];
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        let (Some(bin), Some(sub)) = (args.first(), args.get(1)) else {
            continue;
        };
        let bin = Path::new(std::str::from_utf8(bin).unwrap_or(""));
        if *sub == b"sim" && dirs.iter().any(|d| bin.starts_with(d)) {
            out.push(pid);
        }
    }
    out
}

/// Fails when a simulator started from under `dir` still runs, after stopping it (a
/// failing test must not leave processes behind either).
#[track_caller]
fn assert_no_sims_left(dir: &Path) {
    let left = sims_under(dir);
    for pid in &left {
        if let Ok(pid) = i32::try_from(*pid) {
            // SAFETY: kill(2) with a pid we just read and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    assert!(left.is_empty(), "simulators left running: pids {left:?}");
}

/// The /proc scan finds a simulator started through a scratch symlink, and no longer
/// once it is stopped: the "nothing left running" checks below can fail.
#[test]
fn the_leftover_check_sees_a_running_simulator() {
    let s = Scratch::new();
    let anvil = link_anvil(&s.path().join("bin/anvil"));
    let mut child = Command::new(&anvil)
        .args(["sim", "vault", "--listen", "127.0.0.1:0", "--token", "t"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sim");
    // Right after exec the kernel may not have set up the new argv yet (cmdline reads
    // empty for a moment): look again until it shows, under a hang guard.
    let start = std::time::Instant::now();
    let mut found = sims_under(s.path());
    while found.is_empty() && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(10));
        found = sims_under(s.path());
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(found, [child.id()]);
    assert!(sims_under(s.path()).is_empty());
}

#[test]
fn quickstart_script_applies_the_examples_against_the_simulators() {
    let s = repo_copy();
    let anvil = link_anvil(&s.path().join("bin/anvil"));
    let o = quickstart(&s, &[("ANVIL", &anvil)]);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "quickstart failed:\n{out}\n{}",
        stderr(&o)
    );
    assert!(out.contains(&format!("Using {}", anvil.display())), "{out}");
    assert_eq!(out.matches("No changes.").count(), 2, "{out}");
    assert!(out.matches("bosh_deployment.").count() >= 4, "{out}");
    for f in ["state/quickstart.json", "state/foundation.json"] {
        assert!(s.path().join(f).exists(), "{f} missing");
    }
    assert_no_sims_left(s.path());
}

#[test]
fn quickstart_runs_the_binary_in_cargo_target_dir_and_stops_its_simulators() {
    let s = repo_copy();
    let target = s.path().join("custom-target");
    // Where cargo would put a release build with CARGO_TARGET_DIR set; the build itself
    // is skipped (it would take minutes), the lookup through `cargo metadata` is not.
    let anvil = link_anvil(&target.join("release/anvil"));
    let o = quickstart(
        &s,
        &[
            ("CARGO_TARGET_DIR", &target),
            ("ANVIL_SKIP_BUILD", Path::new("1")),
        ],
    );
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "quickstart failed:\n{out}\n{}",
        stderr(&o)
    );
    assert!(out.contains(&format!("Using {}", anvil.display())), "{out}");
    assert_eq!(out.matches("No changes.").count(), 2, "{out}");
    assert_no_sims_left(s.path());
}

#[test]
fn quickstart_says_when_the_binary_is_missing() {
    let s = repo_copy();
    let target = s.path().join("empty-target");
    std::fs::create_dir_all(&target).expect("mkdir");
    let o = quickstart(
        &s,
        &[
            ("CARGO_TARGET_DIR", &target),
            ("ANVIL_SKIP_BUILD", Path::new("1")),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    let want = format!(
        "quickstart: no anvil binary at {}/release/anvil ({} is CARGO_TARGET_DIR): build it with `cargo build --release`",
        target.display(),
        target.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(!s.path().join("state").exists());

    // The same for an ANVIL= that points nowhere.
    let nowhere = s.path().join("nope/anvil");
    let o = quickstart(&s, &[("ANVIL", &nowhere)]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!(
            "quickstart: ANVIL={} is not an executable file",
            nowhere.display()
        )),
        "{}",
        stderr(&o)
    );
}
