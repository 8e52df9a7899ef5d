//! Ctrl-C during apply: no new work starts, work in flight finishes and is recorded, and
//! the run exits non-zero; the next apply finishes the rest. A second Ctrl-C aborts the
//! provider calls in flight (recorded as failed).

mod common;
use common::*;
use std::io::{BufRead, BufReader};

#[test]
fn interrupt_drains_in_flight_work_and_records_it() {
    let s = Scratch::new();
    let mut spec = String::from(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: { name: intr }\nresources:\n",
    );
    for i in 0..6 {
        spec.push_str(&format!("  - {{ type: null_resource, name: r{i}, attributes: {{ sleep_ms: 1500, triggers: {{ i: \"{i}\" }} }} }}\n"));
    }
    s.write("spec.yaml", &spec);
    let mut child = s.spawn(&["apply", "--auto-approve", "--parallelism", "2", "spec.yaml"]);
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let mut seen = Vec::new();
    let mut starts = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.ends_with("Creating...") {
            starts += 1;
        }
        seen.push(line);
        if starts == 2 {
            break;
        }
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("2 done, 0 failed, 0 skipped, 4 not started"),
        "{text}"
    );
    assert!(text.contains("Not started (interrupted):"), "{text}");
    let o = s.run(&["state", "list"]);
    assert_eq!(
        stdout(&o).lines().count(),
        2,
        "the two in-flight creates are recorded"
    );
    let o = s.run(&["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("Resources: 4 added"), "{}", stdout(&o));
}

/// A second Ctrl-C reaches the provider calls in flight: they stop waiting (here a
/// 10-minute `sleep_ms`), are recorded as failed, and the run ends with exit 1 instead of
/// waiting for them; nothing is left pending and the next apply creates them.
#[test]
fn second_interrupt_aborts_in_flight_work() {
    let s = Scratch::new();
    let spec = |ms: u64| {
        let mut spec = String::from(
            "apiVersion: anvil/v1\nkind: Resources\nmetadata: { name: abort }\nresources:\n",
        );
        for i in 0..4 {
            spec.push_str(&format!("  - {{ type: null_resource, name: r{i}, attributes: {{ sleep_ms: {ms}, triggers: {{ i: \"{i}\" }} }} }}\n"));
        }
        spec
    };
    s.write("spec.yaml", &spec(600_000));
    let mut child = s.spawn(&["apply", "--auto-approve", "--parallelism", "2", "spec.yaml"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut starts = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        starts += usize::from(line.ends_with("Creating..."));
        seen.push(line);
        if starts == 2 {
            break;
        }
    }
    // The second signal is sent only once the first was acted on (its message is out),
    // so the two cannot be taken for one.
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let mut errors = Vec::new();
    for line in err.by_ref() {
        let line = line.unwrap();
        let first = line.contains("Interrupt received");
        errors.push(line);
        if first {
            break;
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    seen.extend(lines.map(|l| l.unwrap()));
    errors.extend(err.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let text = format!("{}\n{}", seen.join("\n"), errors.join("\n"));
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("Second interrupt"), "{text}");
    assert!(
        text.contains("aborted after the run was interrupted twice"),
        "{text}"
    );
    assert!(
        text.contains("0 done, 2 failed, 0 skipped, 2 not started"),
        "{text}"
    );
    let state = s.state_json("abort");
    assert_eq!(state["resources"].as_object().map(|r| r.len()), Some(0));
    assert_eq!(
        state["pending"].as_array().map(Vec::len),
        Some(0),
        "{state}"
    );
    s.write("spec.yaml", &spec(0));
    let o = s.run(&["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("Resources: 4 added"), "{}", stdout(&o));
}
