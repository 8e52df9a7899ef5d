//! Acceptance: a failing resource skips its dependents, independent resources are
//! applied, the summary lists all three groups, exit 1, and state records what was done.

mod common;
use common::*;

const SPEC: &str = r#"
apiVersion: anvil/v1
kind: Resources
metadata: { name: failing }
resources:
  - type: null_resource
    name: broken
    attributes: { triggers: { a: "1" }, fail_on: create }
  - type: null_resource
    name: child
    attributes: { triggers: { parent: "${null_resource.broken.id}" } }
  - type: null_resource
    name: grandchild
    depends_on: [null_resource.child]
  - type: null_resource
    name: independent
    attributes: { triggers: { b: "2" } }
"#;

#[test]
fn failure_skips_dependents_only() {
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    let o = s.run(&["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains("Apply did not finish: 1 done, 1 failed, 2 skipped."),
        "{out}"
    );
    let done = out.split("Done (").nth(1).unwrap();
    assert!(done.contains("null_resource.independent (create)"), "{out}");
    let failed = out.split("Failed:").nth(1).unwrap();
    assert!(
        failed.contains("null_resource.broken (create): null_resource.broken: create failed"),
        "{out}"
    );
    let skipped = out.split("Skipped:").nth(1).unwrap();
    assert!(
        skipped.contains("null_resource.child (create): null_resource.broken create failed"),
        "{out}"
    );
    assert!(
        skipped.contains("null_resource.grandchild (create)"),
        "{out}"
    );
    let st = s.state_json("failing");
    let keys: Vec<&String> = st["resources"].as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["null_resource.independent"]);

    // Fixing the failure finishes the rest.
    std::fs::write(
        s.path().join("spec.yaml"),
        SPEC.replace(", fail_on: create", ""),
    )
    .unwrap();
    let o = s.run(&["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("Resources: 3 added"), "{}", stdout(&o));
}
