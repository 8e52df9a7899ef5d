//! `anvil output [NAME] [--json]` (issue 10): outputs declared in the spec, resolved
//! from the state of the last apply, shown with the null provider (no AWS needed);
//! before apply they have no value (warned, or exit 1 by name); bad outputs are located
//! spec errors.

mod common;
use common::*;

const SPEC: &str = "apiVersion: anvil/v1
kind: Resources
metadata: { name: outs }
resources:
  - type: null_resource
    name: base
    attributes: { triggers: { size: small, zones: [a, b] } }
  - type: null_resource
    name: app
    depends_on: [null_resource.base]
outputs:
  base_id:
    value: ${null_resource.base.id}
    description: the base's id
  label: { value: \"app ${null_resource.app.id} (${null_resource.base.triggers.size})\" }
  zones: { value: \"${null_resource.base.triggers.zones}\" }
  fixed: { value: [1, 2] }
";

#[test]
fn outputs_come_from_the_state_after_apply() {
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);

    // Nothing applied: no values; by name that is an error saying to apply.
    let o = s.run(&["output"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "fixed = [1,2]\n");
    let err = stderr(&o);
    assert!(
        err.contains("output `base_id` has no value in the state at")
            && err.contains("null_resource.base is not recorded in state; run `anvil apply` first"),
        "{err}"
    );
    let o = s.run(&["output", "base_id"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("run `anvil apply` first"),
        "{}",
        stderr(&o)
    );
    assert!(!s.path().join("state").exists(), "output wrote state");

    assert_code(&s.run(&["apply", "--auto-approve"]), 0);
    let st = s.state_json("outs");
    let base = st["resources"]["null_resource.base"]["outputs"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let app = st["resources"]["null_resource.app"]["outputs"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let o = s.run(&["output"]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        format!(
            "base_id = \"{base}\"\nfixed = [1,2]\nlabel = \"app {app} (small)\"\nzones = [\"a\",\"b\"]\n"
        )
    );
    assert_eq!(stderr(&o), "");

    let o = s.run(&["output", "--json"]);
    assert_code(&o, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({
            "base_id": { "value": base, "description": "the base's id" },
            "fixed": { "value": [1, 2] },
            "label": { "value": format!("app {app} (small)") },
            "zones": { "value": ["a", "b"] },
        })
    );

    // One output: a string as it is, anything else as JSON.
    let o = s.run(&["output", "base_id"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), format!("{base}\n"));
    let o = s.run(&["output", "zones", "--json"]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v, serde_json::json!(["a", "b"]));

    let o = s.run(&["output", "bse_id"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("no output `bse_id` in workspace `outs`: did you mean \"base_id\"? expected one of base_id, fixed, label, zones"),
        "{err}"
    );

    // The spec can live elsewhere: --spec names it, --state the state.
    let other = Scratch::new();
    let state = s.state_file("outs");
    let o = other.run(&[
        "output",
        "base_id",
        "--spec",
        s.path().join("spec.yaml").to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), format!("{base}\n"));
}

#[test]
fn bad_outputs_are_located_spec_errors() {
    for (name, outputs, want) in [
        (
            "dangling reference",
            "outputs:\n  x: { value: \"${null_resource.bsae.id}\" }\n",
            "spec.yaml:10:8: outputs.x.value: output `x`: null_resource.bsae is not declared (did you mean \"null_resource.base\"?)",
        ),
        (
            "bad name",
            "outputs:\n  \"-x\": { value: 1 }\n",
            "spec.yaml:10:3: outputs.-x: output name `-x`",
        ),
        (
            "unterminated template",
            "outputs:\n  x: { value: \"${null_resource.base.id\" }\n",
            "spec.yaml:10:8: outputs.x.value:",
        ),
        (
            "unknown field",
            "outputs:\n  x: { value: 1, sensitive: true }\n",
            "spec.yaml:10:18: outputs.x.sensitive: unknown field `sensitive`",
        ),
    ] {
        let s = Scratch::new();
        s.write(
            "spec.yaml",
            &format!(
                "apiVersion: anvil/v1\nkind: Resources\nmetadata: {{ name: outs }}\nresources:\n  - type: null_resource\n    name: base\n  - type: null_resource\n    name: app\n{outputs}"
            ),
        );
        for cmd in [&["validate"][..], &["output"], &["apply", "--auto-approve"]] {
            let o = s.run(cmd);
            assert_eq!(o.status.code(), Some(1), "{name}: {cmd:?}\n{}", stderr(&o));
            assert!(stderr(&o).contains(want), "{name}: {cmd:?} lacks {want:?}:\n{}", stderr(&o));
        }
        assert!(!s.path().join("state").exists(), "{name}: state written");
    }
}

#[test]
fn two_documents_cannot_declare_the_same_output() {
    let s = Scratch::new();
    s.write("a.yaml", "apiVersion: anvil/v1\nkind: Resources\nmetadata: { name: outs }\noutputs:\n  x: { value: 1 }\n");
    s.write("b.yaml", "apiVersion: anvil/v1\nkind: Resources\nmetadata: { name: outs }\noutputs:\n  x: { value: 2 }\n");
    let o = s.run(&["validate"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains(
            "b.yaml:5:3: outputs.x: duplicate output `x` (first declared at ./a.yaml:5:3)"
        ) || err
            .contains("b.yaml:5:3: outputs.x: duplicate output `x` (first declared at a.yaml:5:3)"),
        "{err}"
    );
}
