//! Acceptance: bad specs exit 1 with `file:line:column` (where the input has a location),
//! never panic, and never create or change a state file. Each case runs under a hang
//! guard; the time each takes is measured by `cargo bench --bench scale` instead.

mod common;
use common::*;
use std::time::Duration;

const HEAD: &str = "apiVersion: anvil/v1\nkind: Resources\nmetadata:\n  name: bad\nresources:\n";

fn res(body: &str) -> String {
    format!("{HEAD}{body}")
}

/// (name, file contents, expected substring of stderr: location and message).
fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut deep =
        String::from("apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: deep}\nresources: ");
    deep.push_str(&"[".repeat(100_000));
    let mut deep_block =
        String::from("apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: deep}\nx:\n");
    for i in 0..100_000 {
        deep_block.push_str(&" ".repeat(i % 60 + 1));
        deep_block.push_str("- \n");
    }
    let bomb = "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: bomb}\nx0: &a0 [x, x, x, x, x, x, x, x, x, x]\nx1: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]\nx2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]\nx3: &a3 [*a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2]\nx4: &a4 [*a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3]\nx5: &a5 [*a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4]\nx6: &a6 [*a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5]\nx7: &a7 [*a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6]\nx8: &a8 [*a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7]\n";
    vec![
        ("malformed yaml", b"apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: [\n".to_vec(), "bad.yaml:4:"),
        ("unknown kind", b"apiVersion: anvil/v1\nkind: Frobnicator\nmetadata: {name: x}\n".to_vec(), "bad.yaml:2:1: kind: unknown kind `Frobnicator`"),
        ("missing apiVersion", b"kind: Resources\nmetadata: {name: x}\n".to_vec(), "bad.yaml:1:1"),
        ("wrong apiVersion", b"apiVersion: anvil/v2\nkind: Resources\nmetadata: {name: x}\n".to_vec(), "bad.yaml:1:1: apiVersion: unsupported apiVersion `anvil/v2`"),
        ("unknown top-level field", format!("{HEAD}  []\nextra: 1\n").into_bytes(), "bad.yaml:7:1"),
        ("unknown resource field", res("  - type: null_resource\n    name: a\n    atributes: {}\n").into_bytes(), "bad.yaml:8:5"),
        ("wrong type", res("  - type: null_resource\n    name: a\n    depends_on: null_resource.b\n").into_bytes(), "bad.yaml:8:5: resources[0].depends_on: expected a sequence"),
        ("duplicate address", res("  - type: null_resource\n    name: a\n  - type: null_resource\n    name: a\n").into_bytes(), "bad.yaml:9:"),
        ("cycle", res("  - {type: null_resource, name: a, depends_on: [null_resource.b]}\n  - {type: null_resource, name: b, depends_on: [null_resource.c]}\n  - {type: null_resource, name: c, depends_on: [null_resource.a]}\n").into_bytes(), "bad.yaml:6:5: dependency cycle (3 addresses; `->` means \"depends on\"): null_resource.a -> null_resource.b -> null_resource.c -> null_resource.a"),
        ("self dependency", res("  - {type: null_resource, name: a, depends_on: [null_resource.a]}\n").into_bytes(), "null_resource.a depends on itself"),
        ("dangling depends_on", res("  - {type: null_resource, name: a, depends_on: [null_resource.ghost]}\n").into_bytes(), "null_resource.ghost is not declared"),
        ("dangling reference", res("  - type: null_resource\n    name: a\n    attributes:\n      triggers: { p: \"${null_resource.ghost.id}\" }\n").into_bytes(), "bad.yaml:9:"),
        ("unknown resource type", res("  - type: nul_resource\n    name: a\n").into_bytes(), "unknown resource type `nul_resource`"),
        ("invalid name characters", res("  - type: null_resource\n    name: \"bad name!\"\n").into_bytes(), "bad.yaml:7:5: resources[0].name: invalid name `bad name!`"),
        ("missing env var", res("  - type: null_resource\n    name: a\n    attributes: { inputs: { x: \"${env:ANVIL_TEST_SURELY_UNSET}\" } }\n").into_bytes(), "ANVIL_TEST_SURELY_UNSET"),
        ("missing var", res("  - type: null_resource\n    name: a\n    attributes: { inputs: { x: \"${var.region}\" } }\n").into_bytes(), "region"),
        ("empty file", b"".to_vec(), "bad.yaml"),
        ("only comments", b"# nothing here\n".to_vec(), "bad.yaml"),
        ("binary garbage", vec![0x7f, b'E', b'L', b'F', 0, 0xff, 0xfe, 0x01, 0x02, 0x80, 0x81], "bad.yaml"),
        ("alias bomb", bomb.as_bytes().to_vec(), "bad.yaml:"),
        ("100k-deep flow nesting", deep.into_bytes(), "bad.yaml:4:"),
        ("100k-line ragged block sequence", deep_block.into_bytes(), "bad.yaml:"),
        ("unknown attribute", res("  - type: null_resource\n    name: a\n    attributes: { trigers: {} }\n").into_bytes(), "unknown attribute `trigers`"),
        ("bad interpolation", res("  - type: null_resource\n    name: a\n    attributes: { inputs: { x: \"${foo}\" } }\n").into_bytes(), "expected `${TYPE.NAME.ATTR}`"),
        ("attribute of wrong type", res("  - type: null_resource\n    name: a\n    attributes: { triggers: \"x\" }\n").into_bytes(), "expected a map"),
        ("duplicate key", b"apiVersion: anvil/v1\nkind: Resources\nkind: Resources\nmetadata: {name: x}\n".to_vec(), "bad.yaml:3:1"),
        ("reference to unknown attribute", res("  - {type: null_resource, name: a}\n  - type: null_resource\n    name: b\n    attributes: { triggers: { p: \"${null_resource.a.nope}\" } }\n").into_bytes(), "has no attribute `nope`"),
        ("missing metadata name", b"apiVersion: anvil/v1\nkind: Resources\nmetadata: {}\n".to_vec(), "bad.yaml:3:"),
        ("document is a list", b"- apiVersion: anvil/v1\n".to_vec(), "bad.yaml:1:1"),
        ("misspelt reference suggests the declared address", res("  - {type: null_resource, name: base}\n  - type: null_resource\n    name: b\n    attributes: { triggers: { p: \"${null_resource.bsae.id}\" } }\n").into_bytes(), "bad.yaml:9:19: resources[1].attributes.triggers: null_resource.bsae is not declared (did you mean \"null_resource.base\"?)"),
        ("misspelt resource type suggests the known type", res("  - type: nul_resource\n    name: a\n").into_bytes(), "bad.yaml:6:5: resources[0].type: unknown resource type `nul_resource`: did you mean \"null_resource\"?"),
        ("misspelt attribute suggests the known attribute", res("  - type: null_resource\n    name: a\n    attributes: { trigers: {} }\n").into_bytes(), "bad.yaml:8:19: resources[0].attributes.trigers: unknown attribute `trigers` for null_resource: did you mean \"triggers\"?"),
        ("misspelt field suggests the allowed field", res("  - type: null_resource\n    name: a\n    atributes: {}\n").into_bytes(), "bad.yaml:8:5: resources[0].atributes: unknown field `atributes`: did you mean \"attributes\"?"),
        ("misspelt referenced attribute suggests the output", res("  - {type: null_resource, name: a}\n  - type: null_resource\n    name: b\n    attributes: { triggers: { p: \"${null_resource.a.idd}\" } }\n").into_bytes(), "null_resource has no attribute `idd`: did you mean \"id\"?"),
    ]
}

#[test]
fn bad_specs_fail_cleanly() {
    let all = cases();
    assert!(all.len() >= 20);
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, "");
    for (name, body, want) in all {
        let s = Scratch::new();
        std::fs::write(s.path().join("bad.yaml"), &body).unwrap();
        for cmd in [
            &["validate", "bad.yaml"][..],
            &["apply", "--auto-approve", "bad.yaml"][..],
        ] {
            let started = std::time::Instant::now();
            let o = s.run_with_limit(cmd, Duration::from_secs(20));
            slowest = slowest.max((started.elapsed(), name));
            let err = stderr(&o);
            if o.status.code() != Some(1) {
                failures.push(format!(
                    "{name}: {cmd:?} exited {:?}\n{err}",
                    o.status.code()
                ));
            }
            if err.contains("panicked") || err.contains("overflow") {
                failures.push(format!("{name}: {cmd:?} panicked:\n{err}"));
            }
            if !err.contains(want) {
                failures.push(format!("{name}: {cmd:?} stderr lacks {want:?}:\n{err}"));
            }
        }
        if s.path().join("state").exists() {
            failures.push(format!("{name}: a state directory was created"));
        }
    }
    // Reported, not asserted (no timing assertions in tests): see with --nocapture.
    eprintln!("slowest bad-input case: {} took {:?}", slowest.1, slowest.0);
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn bad_input_leaves_existing_state_untouched() {
    let s = Scratch::new();
    s.write("spec/a.yaml", &res("  - {type: null_resource, name: a}\n"));
    assert_code(&s.run(&["apply", "--auto-approve", "spec"]), 0);
    let before = std::fs::read(s.state_file("bad")).unwrap();
    s.write("spec/b.yaml", &res("  - {type: null_resource, name: a}\n"));
    let o = s.run(&["apply", "--auto-approve", "spec"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("duplicate address null_resource.a"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(s.state_file("bad")).unwrap(), before);
}
