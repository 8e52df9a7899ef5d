//! Acceptance: saved plans apply as planned, and a stale one is refused.

mod common;
use common::*;

#[test]
fn saved_plan_applies_and_stale_plan_is_refused() {
    let s = Scratch::new();
    s.copy_example("quickstart", "spec");
    let o = s.run(&["plan", "--out", "plan.json", "spec"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("Saved the plan to plan.json"));
    let o = s.run(&["show", "plan.json"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("Plan: 5 to add"), "{}", stdout(&o));
    let o = s.run(&["apply", "plan.json"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("Apply complete! Resources: 5 added"),
        "{}",
        stdout(&o)
    );

    // A plan made now, then the state changes: refused, naming both serials.
    let main = s.path().join("spec/main.yaml");
    std::fs::write(
        &main,
        std::fs::read_to_string(&main)
            .unwrap()
            .replace("replicas: 2", "replicas: 3"),
    )
    .unwrap();
    let o = s.run(&["plan", "--out", "plan2.json", "spec"]);
    assert_code(&o, 0);
    assert_code(&s.run(&["state", "rm", "null_resource.audit_log"]), 0);
    let o = s.run(&["apply", "plan2.json"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("plan2.json: saved plan is stale"), "{err}");
    assert!(err.contains("anvil plan --out plan2.json"), "{err}");

    // A plan whose spec changed after planning is refused too.
    let o = s.run(&["plan", "--out", "plan3.json", "spec"]);
    assert_code(&o, 0);
    std::fs::write(
        &main,
        std::fs::read_to_string(&main)
            .unwrap()
            .replace("replicas: 3", "replicas: 4"),
    )
    .unwrap();
    let o = s.run(&["apply", "plan3.json"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("the spec files or variables changed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn plan_json_matches_its_schema() {
    let s = Scratch::new();
    s.copy_example("quickstart", "spec");
    assert_code(&s.run(&["apply", "--auto-approve", "spec"]), 0);
    let main = s.path().join("spec/main.yaml");
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .replace("size: small", "size: large")
        .replace("engine: redis", "engine: valkey");
    std::fs::write(&main, text).unwrap();
    let o = s.run(&["plan", "--json", "spec"]);
    assert_code(&o, 0);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/plan.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(doc["summary"]["add"], 2);
    assert_eq!(doc["summary"]["change"], 1);
    // Sensitive values never appear, not even as fingerprints.
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !text.contains("not-a-real-secret") && !text.contains("api_token"),
        "{text}"
    );
}
