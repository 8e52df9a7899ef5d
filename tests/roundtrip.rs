//! Acceptance: apply the quickstart, plan again (no changes), change one trigger (replace
//! of that resource and of those referencing its id, nothing else), destroy (empty state).

mod common;
use common::*;

#[test]
fn quickstart_round_trip() {
    let s = Scratch::new();
    s.copy_example("quickstart", "spec");
    let o = s.run(&["apply", "--auto-approve", "spec"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("Plan: 5 to add, 0 to change, 0 to destroy."),
        "{out}"
    );
    assert!(
        out.contains("Apply complete! Resources: 5 added, 0 changed, 0 destroyed."),
        "{out}"
    );
    let st = s.state_json("quickstart");
    assert_eq!(st["resources"].as_object().unwrap().len(), 5);
    // The sensitive input is kept only as a fingerprint.
    let raw = std::fs::read_to_string(s.state_file("quickstart")).unwrap();
    assert!(
        !raw.contains("quickstart-not-a-real-secret"),
        "secret in state: {raw}"
    );
    assert!(raw.contains("sha256:"));

    let o = s.run(&["plan", "--detailed-exitcode", "spec"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("No changes."), "{}", stdout(&o));

    // Change one trigger of the database: it and the app (whose trigger references the
    // database's id) are replaced, nothing else.
    let main = s.path().join("spec/main.yaml");
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .replace("size: small", "size: large");
    std::fs::write(&main, text).unwrap();
    let o = s.run(&["plan", "--detailed-exitcode", "spec"]);
    assert_code(&o, 2);
    let out = stdout(&o);
    assert!(
        out.contains("# null_resource.database must be replaced"),
        "{out}"
    );
    assert!(
        out.contains("# null_resource.app must be replaced (create before destroy)"),
        "{out}"
    );
    assert!(
        out.contains("~ database = ") && out.contains("-> (known after apply)"),
        "{out}"
    );
    assert!(
        out.contains("Plan: 2 to add, 0 to change, 2 to destroy."),
        "{out}"
    );
    for other in ["network", "cache", "audit_log"] {
        assert!(
            !out.contains(&format!("null_resource.{other} ")),
            "{other} should not change:\n{out}"
        );
    }
    let o = s.run(&["plan", "--json", "spec"]);
    assert_code(&o, 0);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let replaced: Vec<&str> = doc["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "replace")
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        replaced,
        vec!["null_resource.app", "null_resource.database"]
    );

    let o = s.run(&["apply", "--auto-approve", "spec"]);
    assert_code(&o, 0);
    let o = s.run(&["plan", "--detailed-exitcode", "spec"]);
    assert_code(&o, 0);

    let o = s.run(&["destroy", "--auto-approve", "spec"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("Destroy complete!"), "{out}");
    let st = s.state_json("quickstart");
    assert!(st["resources"].as_object().unwrap().is_empty(), "{st}");
}

#[test]
fn apply_without_terminal_requires_auto_approve() {
    let s = Scratch::new();
    s.copy_example("quickstart", "spec");
    let o = s.run(&["apply", "spec"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("--auto-approve"), "{}", stderr(&o));
    assert!(!s.state_file("quickstart").exists());
}

#[test]
fn state_commands() {
    let s = Scratch::new();
    s.copy_example("quickstart", "spec");
    assert_code(&s.run(&["apply", "--auto-approve", "spec"]), 0);
    let o = s.run(&["state", "list"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 5);
    let o = s.run(&["state", "show", "null_resource.app"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("(sensitive)"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("not-a-real-secret"));
    let o = s.run(&["state", "mv", "null_resource.cache", "null_resource.cache2"]);
    assert_code(&o, 0);
    let o = s.run(&["state", "rm", "null_resource.cache2"]);
    assert_code(&o, 0);
    let o = s.run(&["state", "rm", "null_resource.nope"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("null_resource.nope: not in state"),
        "{}",
        stderr(&o)
    );
    // The removed record is planned as a create again.
    let o = s.run(&["plan", "--detailed-exitcode", "spec"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("# null_resource.cache will be created"),
        "{}",
        stdout(&o)
    );
    let o = s.run(&["graph", "spec"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("\"null_resource.database\" -> \"null_resource.app\""),
        "{}",
        stdout(&o)
    );
    let o = s.run(&["graph", "--format", "json", "spec"]);
    assert_code(&o, 0);
    let o = s.run(&["show"]);
    assert!(o.status.code().is_some());
}
