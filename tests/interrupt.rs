//! Ctrl-C during apply: no new work starts, work in flight finishes and is recorded, and
//! the run exits non-zero; the next apply finishes the rest.

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
