//! The commands that work from the state alone (`show`, `state list|show|rm|mv`,
//! `force-unlock`) run from any directory with `--state` or `--workspace`, never read a
//! spec, say where they looked when there is no state, and the commands anvil suggests
//! in its messages run as printed.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const SPEC: &str = "apiVersion: anvil/v1\nkind: Resources\nmetadata: { name: demo }\nresources:\n  - { type: null_resource, name: a, attributes: { triggers: { v: \"1\" } } }\n  - { type: null_resource, name: b, attributes: { triggers: { v: \"2\" } } }\n";

/// Runs anvil in `dir` (not a scratch's own directory).
fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("ANVIL_STATE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A scratch with the two-resource workspace `demo` applied.
fn applied() -> Scratch {
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    assert_code(&s.run(&["apply", "--auto-approve", "spec.yaml"]), 0);
    s
}

#[test]
fn from_the_repo_root_with_a_state_url() {
    let s = applied();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let state = s.state_file("demo");
    let url = state.display().to_string();
    let o = run_in(root, &["state", "list", "--state", &url]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "null_resource.a\nnull_resource.b\n");
    let o = run_in(root, &["show", "--state", &url]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("resource null_resource.a"),
        "{}",
        stdout(&o)
    );
    let o = run_in(root, &["state", "show", "null_resource.b", "--state", &url]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("# null_resource.b:"), "{}", stdout(&o));
    // A directory URL with a workspace name picks the file in it.
    let dir = format!("{}/", s.path().join("state").display());
    let o = run_in(root, &["state", "list", "--state", &dir, "-w", "demo"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 2);
    let o = run_in(
        root,
        &[
            "state",
            "mv",
            "null_resource.a",
            "null_resource.c",
            "--state",
            &url,
        ],
    );
    assert_code(&o, 0);
    let o = run_in(root, &["state", "rm", "null_resource.c", "--state", &url]);
    assert_code(&o, 0);
    let o = run_in(root, &["state", "list", "--state", &url]);
    assert_eq!(stdout(&o), "null_resource.b\n");
    // No lock to remove: the error is about the lock, not about specs.
    let o = run_in(root, &["force-unlock", "some-id", "--state", &url]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        !err.contains("metadata.name") && !err.contains("spec"),
        "{err}"
    );
    assert!(err.contains("lock"), "{err}");
}

#[test]
fn from_an_empty_directory() {
    let s = applied();
    let empty = tempfile::tempdir().unwrap();
    // Nothing to find: say where anvil looked and how to pick a state.
    for args in [&["state", "list"][..], &["show"], &["force-unlock", "x"]] {
        let o = run_in(empty.path(), args);
        assert_code(&o, 1);
        let err = stderr(&o);
        assert!(err.contains("no state found: state/"), "{args:?}: {err}");
        assert!(
            err.contains("--workspace NAME") && err.contains("--state URL"),
            "{err}"
        );
        assert!(!err.contains("no spec files"), "{err}");
    }
    // A named workspace with no state yet is said, not silent, and is not an error.
    let o = run_in(empty.path(), &["state", "list", "--workspace", "demo"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "");
    assert!(
        stderr(&o).contains("No state at file://state/demo.json (nothing applied yet)."),
        "{}",
        stderr(&o)
    );
    let o = run_in(
        empty.path(),
        &["state", "show", "null_resource.a", "-w", "demo"],
    );
    assert_code(&o, 1);
    assert!(stderr(&o).contains("no state there yet"), "{}", stderr(&o));
    // The real state, by URL, from the empty directory.
    let url = format!("file://{}", s.state_file("demo").display());
    let o = run_in(empty.path(), &["state", "list", "--state", &url]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
}

#[test]
fn several_workspaces_are_named_and_one_is_picked() {
    let s = applied();
    s.write("other.yaml", &SPEC.replace("name: demo", "name: other"));
    assert_code(&s.run(&["apply", "--auto-approve", "other.yaml"]), 0);
    let o = s.run(&["state", "list"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("several workspaces (demo, other)"), "{err}");
    assert!(err.contains("--workspace demo"), "{err}");
    let o = s.run(&["state", "list", "--workspace", "other"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 2);
    // A spec path is not how these commands find state any more.
    let o = s.run(&["state", "list", "spec.yaml"]);
    assert_code(&o, 1);
}

/// The first backticked `anvil …` command in `text`, split into arguments.
fn suggested(text: &str) -> Vec<String> {
    let start = text
        .find("`anvil ")
        .unwrap_or_else(|| panic!("no suggestion in {text}"));
    let rest = &text[start + "`anvil ".len()..];
    let end = rest.find('`').unwrap();
    rest[..end].split_whitespace().map(str::to_string).collect()
}

#[test]
fn suggested_commands_run_as_printed() {
    let s = Scratch::new();
    s.write("specs/demo.yaml", SPEC);
    // import suggests plan with the spec path given.
    let o = s.run(&["import", "null_resource.a", "hand-made", "specs"]);
    assert_code(&o, 0);
    let args = suggested(&stdout(&o));
    assert_eq!(args, ["plan", "specs"], "{}", stdout(&o));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_code(&s.run(&a), 0);
    // state mv onto a taken address suggests the state rm that frees it, with the state.
    assert_code(&s.run(&["apply", "--auto-approve", "specs"]), 0);
    let url = s.state_file("demo").display().to_string();
    let o = s.run(&[
        "state",
        "mv",
        "null_resource.a",
        "null_resource.b",
        "--state",
        &url,
    ]);
    assert_code(&o, 1);
    let args = suggested(&stderr(&o));
    assert_eq!(
        args[..4],
        ["state", "rm", "--state", url.as_str()],
        "{}",
        stderr(&o)
    );
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_code(&s.run(&a), 0);
    // plan --out says how to apply exactly that plan.
    let o = s.run(&["plan", "--out", "p.json", "specs"]);
    assert_code(&o, 0);
    let line = stdout(&o);
    let cmd = line
        .split("Apply exactly this plan with: anvil ")
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"));
    let args: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(args, ["apply", "p.json"]);
    assert_code(&s.run(&args), 0);
    // drift names the spec path in what to run next.
    s.write("specs/demo.yaml", &SPEC.replace("v: \"2\"", "v: \"3\""));
    let o = s.run(&["drift", "specs"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("Run `anvil apply specs` to bring")
            && stdout(&o).contains("`anvil apply --refresh-only specs`"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_held_lock_names_a_force_unlock_that_runs_from_anywhere() {
    let s = Scratch::new();
    let slow = SPEC.replace(
        "name: a, attributes: {",
        "name: a, attributes: { sleep_ms: 60000,",
    );
    s.write("spec.yaml", &slow);
    let url = s.path().join("elsewhere/demo.json").display().to_string();
    let lock = s.path().join("elsewhere/demo.json.lock");
    let mut holder = s
        .cmd(&["apply", "--auto-approve", "--state", &url, "spec.yaml"])
        .env("ANVIL_LOCK_LEASE", "1h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&lock, std::time::Duration::from_secs(30));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let o = s.run(&["state", "rm", "null_resource.a", "--state", &url]);
    assert_code(&o, 1);
    let err = stderr(&o);
    let cmd = err
        .split("from any directory: `anvil ")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .unwrap_or_else(|| panic!("no force-unlock suggestion: {err}"));
    let args: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(args[0], "force-unlock");
    assert!(cmd.contains(&format!("--state {url}")), "{cmd}");
    let empty = tempfile::tempdir().unwrap();
    let o = run_in(empty.path(), &args);
    assert_code(&o, 0);
    assert!(!lock.exists(), "the lock is gone");
}
