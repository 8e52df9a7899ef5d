//! Plan flags at the command line: variables, targeting, forced replacement, refresh.

mod common;
use common::*;

const SPEC: &str = r#"
apiVersion: anvil/v1
kind: Resources
metadata: { name: flags }
resources:
  - type: null_resource
    name: a
    attributes: { triggers: { size: "${var.size}", owner: "${env:ANVIL_TEST_OWNER}" } }
  - type: null_resource
    name: b
    attributes: { triggers: { a: "${null_resource.a.id}" } }
  - type: null_resource
    name: c
    attributes: { inputs: { replicas: "${var.replicas}" } }
"#;

fn cmd(s: &Scratch, args: &[&str]) -> std::process::Output {
    s.cmd(args)
        .env("ANVIL_TEST_OWNER", "platform")
        .output()
        .unwrap()
}

#[test]
fn vars_targets_replace_and_refresh() {
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    s.write("vars.yaml", "replicas: 3\n");
    // A missing variable names itself and the flag to pass.
    let o = cmd(&s, &["plan", "spec.yaml"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("--var"), "{}", stderr(&o));

    let o = cmd(
        &s,
        &[
            "apply",
            "--auto-approve",
            "--var",
            "size=small",
            "--var-file",
            "vars.yaml",
            "--target",
            "null_resource.b",
            "spec.yaml",
        ],
    );
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("Plan: 2 to add, 0 to change, 0 to destroy."),
        "targets b and what it depends on: {out}"
    );
    let st = s.state_json("flags");
    assert_eq!(
        st["resources"]["null_resource.a"]["attributes"]["triggers"]["owner"],
        "platform"
    );
    // A typed variable from a file keeps its type.
    let o = cmd(
        &s,
        &[
            "apply",
            "--auto-approve",
            "--var",
            "size=small",
            "--var-file",
            "vars.yaml",
            "spec.yaml",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(
        s.state_json("flags")["resources"]["null_resource.c"]["attributes"]["inputs"]["replicas"],
        3
    );

    let o = cmd(
        &s,
        &[
            "plan",
            "--detailed-exitcode",
            "--refresh=false",
            "--var",
            "size=small",
            "--var-file",
            "vars.yaml",
            "spec.yaml",
        ],
    );
    assert_code(&o, 0);
    let o = cmd(
        &s,
        &[
            "plan",
            "--detailed-exitcode",
            "--replace",
            "null_resource.c",
            "--var",
            "size=small",
            "--var-file",
            "vars.yaml",
            "spec.yaml",
        ],
    );
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("replacement requested with --replace"),
        "{}",
        stdout(&o)
    );
    // Excluding a changes only what is not excluded: a and its dependent b stay out.
    let o = cmd(
        &s,
        &[
            "plan",
            "--detailed-exitcode",
            "--exclude",
            "null_resource.a",
            "--var",
            "size=large",
            "--var-file",
            "vars.yaml",
            "spec.yaml",
        ],
    );
    assert_code(&o, 0);
    let o = cmd(
        &s,
        &[
            "plan",
            "--detailed-exitcode",
            "--target",
            "null_resource.nope",
            "--var",
            "size=small",
            "--var-file",
            "vars.yaml",
            "spec.yaml",
        ],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("--target null_resource.nope: no such resource"),
        "{}",
        stderr(&o)
    );
    let o = cmd(&s, &["schema", "resources"]);
    assert_code(&o, 0);
    let o = cmd(&s, &["schema", "nope"]);
    assert_code(&o, 1);
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    use std::io::Read;
    let s = Scratch::new();
    s.write("spec.yaml", &tree_spec("pipe", 3000, ""));
    // The graph is far bigger than a pipe buffer, so writes hit the closed pipe.
    let mut child = s
        .cmd(&["graph", "--format", "dot", "spec.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_non_utf8_environment_variable_is_not_a_crash() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    s.write("spec.yaml", &tree_spec("envws", 2, ""));
    let o = s
        .cmd(&["validate", "spec.yaml"])
        .env(
            std::ffi::OsStr::from_bytes(b"ANVIL_TEST_BAD"),
            std::ffi::OsStr::from_bytes(b"\xff\xfe"),
        )
        .output()
        .unwrap();
    assert_code(&o, 0);
}

// ---- Help text: what a new user reads first ----

fn help_of(path: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_anvil"))
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success(), "anvil {path:?} --help");
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn help_lists_only_the_flags_a_command_uses() {
    for cmd in [&["drift"][..], &["destroy"]] {
        let h = help_of(cmd);
        assert!(!h.contains("--replace"), "{cmd:?} offers --replace:\n{h}");
        assert!(
            h.contains("--target") && h.contains("--state"),
            "{cmd:?}:\n{h}"
        );
    }
    for cmd in [&["plan"][..], &["apply"]] {
        assert!(help_of(cmd).contains("--replace"), "{cmd:?}");
    }
    for cmd in [
        &["schema"][..],
        &["sim", "bosh"],
        &["sim", "vault"],
        &["validate"],
        &["graph"],
    ] {
        let h = help_of(cmd);
        assert!(!h.contains("--state"), "{cmd:?} offers --state:\n{h}");
    }
    for cmd in [
        &["show"][..],
        &["state", "list"],
        &["state", "rm"],
        &["force-unlock"],
    ] {
        let h = help_of(cmd);
        assert!(
            h.contains("--state") && h.contains("--workspace"),
            "{cmd:?}:\n{h}"
        );
    }
}

#[test]
fn schema_help_lists_every_kind() {
    let h = help_of(&["schema"]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_anvil"))
        .args(["schema", "no-such-kind"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    for kind in ["resources", "foundation", "environment", "plan", "drift"] {
        assert!(
            h.contains(kind),
            "schema --help does not list `{kind}`:\n{h}"
        );
        assert!(err.contains(kind), "{err}");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_anvil"))
            .args(["schema", kind])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "schema {kind}");
    }
}

#[test]
fn anvil_log_output_has_no_colour_when_not_a_terminal() {
    let s = Scratch::new();
    s.write("spec.yaml", "apiVersion: anvil/v1\nkind: Resources\nmetadata: { name: log }\nresources:\n  - { type: null_resource, name: a }\n");
    let o = s
        .cmd(&["validate", "spec.yaml"])
        .env("ANVIL_LOG", "debug")
        .output()
        .unwrap();
    assert_code(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains("DEBUG") && err.contains("spec loaded"),
        "{err}"
    );
    assert!(
        !err.contains('\x1b'),
        "colour codes in a non-terminal log: {err:?}"
    );
}
