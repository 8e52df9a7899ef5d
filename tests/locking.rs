//! Acceptance: two concurrent applies on one state — one proceeds, the other fails at
//! once naming the holder, or waits with --lock-timeout; a SIGKILLed holder's lock is
//! taken over after its lease expires, without force-unlock.

mod common;
use common::*;
use std::time::Duration;

fn slow_spec(name: &str, ms: u64) -> String {
    format!(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {{ name: {name} }}\nresources:\n  - type: null_resource\n    name: slow\n    attributes: {{ sleep_ms: {ms}, triggers: {{ a: \"1\" }} }}\n  - type: null_resource\n    name: quick\n    attributes: {{ triggers: {{ b: \"1\" }} }}\n"
    )
}

#[test]
fn second_writer_fails_naming_the_holder_or_waits() {
    let s = Scratch::new();
    s.write("spec.yaml", &slow_spec("locked", 3000));
    let lock = s.path().join("state/locked.json.lock");
    let first = s.spawn(&["apply", "--auto-approve", "spec.yaml"]);
    let first_pid = first.id();
    wait_for(&lock, Duration::from_secs(30));

    let o = s.run(&["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("is held by"), "{err}");
    assert!(
        err.contains(&format!("pid {first_pid}")),
        "holder pid missing: {err}"
    );
    assert!(err.contains("apply"), "operation missing: {err}");
    assert!(err.contains("force-unlock"), "{err}");

    // With a lock timeout the second waits for the first, then proceeds (no changes left).
    let o = s.run(&[
        "apply",
        "--auto-approve",
        "--lock-timeout",
        "60s",
        "spec.yaml",
    ]);
    assert_code(&o, 0);
    let first = first.wait_with_output().unwrap();
    assert_code(&first, 0);
    assert!(stdout(&o).contains("No changes."), "{}", stdout(&o));
    assert!(!lock.exists(), "lock released at the end");
}

#[test]
fn lock_of_a_killed_process_expires_by_itself() {
    let s = Scratch::new();
    s.write("spec.yaml", &slow_spec("killed", 60_000));
    let lock = s.path().join("state/killed.json.lock");
    let mut first = s
        .cmd(&["apply", "--auto-approve", "spec.yaml"])
        .env("ANVIL_LOCK_LEASE", "3s")
        .spawn()
        .unwrap();
    wait_for(&lock, Duration::from_secs(30));
    first.kill().unwrap(); // SIGKILL: no chance to release
    first.wait().unwrap();
    assert!(lock.exists(), "a killed process leaves its lock behind");

    let o = s.run(&["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("is held by"), "{}", stderr(&o));

    // No force-unlock: waiting past the (3 s) lease is enough.
    s.write("spec.yaml", &slow_spec("killed", 0));
    let o = s.run(&[
        "apply",
        "--auto-approve",
        "--lock-timeout",
        "30s",
        "spec.yaml",
    ]);
    assert_code(&o, 0);
    let st = s.state_json("killed");
    assert_eq!(st["resources"].as_object().unwrap().len(), 2, "{st}");
    assert!(!lock.exists());
}

#[test]
fn force_unlock_removes_a_stuck_lock() {
    let s = Scratch::new();
    s.write("spec.yaml", &slow_spec("stuck", 60_000));
    let lock = s.path().join("state/stuck.json.lock");
    let mut first = s
        .cmd(&["apply", "--auto-approve", "spec.yaml"])
        .env("ANVIL_LOCK_LEASE", "1h")
        .spawn()
        .unwrap();
    wait_for(&lock, Duration::from_secs(30));
    first.kill().unwrap();
    first.wait().unwrap();
    let o = s.run(&["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    let id = err
        .split("anvil force-unlock ")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .expect("lock id in the error")
        .to_string();
    let o = s.run(&["force-unlock", "not-the-id"]);
    assert_code(&o, 1);
    let o = s.run(&["force-unlock", &id]);
    assert_code(&o, 0);
    s.write("spec.yaml", &slow_spec("stuck", 0));
    assert_code(&s.run(&["apply", "--auto-approve", "spec.yaml"]), 0);
}
