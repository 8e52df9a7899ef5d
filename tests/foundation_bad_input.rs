//! Acceptance (issue 3, test 6): a Foundation with a plan over its limit, an unknown plan,
//! a bad UUID, a duplicate instance id (and the other catalog mistakes) fails `validate`
//! and `apply` with exit 1, `file:line:column` and what to do, without touching state.

mod common;
use common::*;
use std::time::Duration;

const TEMPLATE: &str = "name: x\ninstance_groups:\n  - name: redis\n    instances: ${params.nodes}\n    env: ${HOME} ((secret))\n";

/// A valid Foundation; `instances` (starting at line 19) is appended by each case.
fn foundation(catalog_extra: &str, instances: &str) -> String {
    format!(
        "apiVersion: anvil/v1
kind: Foundation
metadata: {{ name: bad }}
catalog:
  services:
    - id: redis
      name: redis
      plans:
        - id: redis-small
          name: small
          limit: 2
          manifest: t.yml.tmpl
          parameters: {{ nodes: 1 }}
        - id: redis-none
          name: none
          limit: -1
          manifest: t.yml.tmpl
{catalog_extra}instances:
{instances}"
    )
}

const A: &str = "6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01";
const B: &str = "1f7e9d3c-5b2a-4c8e-a6d4-3e2f1a0b9c72";
const C: &str = "9c3d5e7f-1a2b-4c6d-8e0f-a1b2c3d4e5f6";

fn inst(id: &str, plan: &str) -> String {
    format!("  - id: {id}\n    service: redis\n    plan: {plan}\n")
}

/// (name, spec text, expected substrings of stderr).
fn cases() -> Vec<(&'static str, String, Vec<String>)> {
    let three = format!(
        "{}{}{}",
        inst(A, "redis-small"),
        inst(B, "redis-small"),
        inst(C, "small")
    );
    vec![
        (
            "plan over its limit",
            foundation("", &three),
            // The third instance (lines 25-27) is the one over; the limit is at 11:11.
            vec![
                "bad.yaml:27:5: instances[2].plan: plan `redis-small` has 3 instance(s), over its limit of 2 (set at".into(),
                "bad.yaml:11:11)".into(),
            ],
        ),
        (
            "negative limit is always over",
            foundation("", &inst(A, "redis-none")),
            vec!["bad.yaml:21:5: instances[0].plan: plan `redis-none` has 1 instance(s), over its limit of -1".into()],
        ),
        (
            "unknown plan",
            foundation("", &inst(A, "redis-huge")),
            vec!["bad.yaml:21:5: instances[0].plan: unknown plan `redis-huge` for service `redis`: expected one of redis-small (small), redis-none (none)".into()],
        ),
        (
            "unknown service",
            foundation("", "  - id: 6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01\n    service: mongo\n    plan: small\n"),
            vec!["bad.yaml:20:5: instances[0].service: unknown service `mongo`: expected one of redis".into()],
        ),
        (
            "bad UUID",
            foundation("", &inst("6a1c2b9e-3f0d-4c7a-9b1e", "small")),
            vec!["bad.yaml:19:5: instances[0].id: instance id `6a1c2b9e-3f0d-4c7a-9b1e` is not a UUID".into()],
        ),
        (
            "duplicate instance id",
            foundation("", &format!("{}{}", inst(A, "small"), inst(A, "small"))),
            vec![format!("bad.yaml:22:5: instances[1].id: duplicate instance id `{A}` (first at"), "bad.yaml:19:5)".into()],
        ),
        (
            "duplicate plan id",
            foundation("        - id: redis-small\n          name: again\n          manifest: t.yml.tmpl\n", &inst(A, "small")),
            vec!["bad.yaml:18:11: catalog.services[0].plans[2].id: duplicate plan id `redis-small` (first at".into()],
        ),
        (
            "missing template",
            foundation("        - id: redis-gone\n          name: gone\n          manifest: nope.yml.tmpl\n", &inst(A, "small")),
            vec!["bad.yaml:20:11: catalog.services[0].plans[2].manifest: manifest template".into(), "no such file or directory".into()],
        ),
        (
            "template names a parameter nobody sets",
            foundation("", &inst(A, "small")).replace("parameters: { nodes: 1 }", "parameters: {}"),
            vec![format!("t.yml.tmpl:4:16: instances[0]: `${{params.nodes}}` has no value for instance {A}: set it in the instance's parameters (")],
        ),
        (
            "template that is a device, not a file",
            foundation("", &inst(A, "small")).replacen("manifest: t.yml.tmpl", "manifest: /dev/zero", 1),
            vec!["bad.yaml:12:11: catalog.services[0].plans[0].manifest: manifest template /dev/zero: file is over".into()],
        ),
        (
            "plan id that cannot name a deployment",
            foundation("", &inst(A, "small")).replacen("- id: redis-small", "- id: redis.small", 1),
            vec!["bad.yaml:9:".into(), "catalog.services[0].plans[0].id: invalid id `redis.small`".into()],
        ),
        (
            "misspelt plan",
            foundation("", &inst(A, "redis-smal")),
            vec!["bad.yaml:21:5: instances[0].plan: unknown plan `redis-smal` for service `redis`: expected one of redis-small (small), redis-none (none) (did you mean \"redis-small\"?)".into()],
        ),
        (
            "misspelt service",
            foundation("", "  - id: 6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01\n    service: rdis\n    plan: small\n"),
            vec!["bad.yaml:20:5: instances[0].service: unknown service `rdis`: expected one of redis (did you mean \"redis\"?)".into()],
        ),
        (
            "misspelt instance parameter",
            foundation("", &format!("{}    parameters: {{ ndoes: 3 }}\n", inst(A, "small"))),
            vec!["bad.yaml:22:19: instances[0].parameters.ndoes: unknown parameter for plan redis-small; did you mean \"nodes\"? (the plan's template uses: nodes; its defaults set: nodes)".into()],
        ),
        (
            "instance parameter nothing uses",
            foundation("", &format!("{}    parameters:\n      nodes: 2\n      colour: blue\n", inst(A, "small"))),
            vec!["bad.yaml:24:7: instances[0].parameters.colour: unknown parameter for plan redis-small: neither its template (t.yml.tmpl) nor its defaults use it; remove it, or use it in the template as ${params.colour}".into()],
        ),
        (
            "credentials template with an unknown namespace",
            // The plan at lines 14-17 gets `credentials:` at line 18, its `host` at 18:26.
            foundation("          credentials: { host: \"${vms.redis.ip}\" }\n", &inst(A, "small")),
            vec!["bad.yaml:18:26: catalog.services[0].plans[1].credentials.host: credentials template of plan `redis-none`: `${vms.redis.ip}` uses the unknown namespace `vms`".into()],
        ),
        (
            "unknown field in an instance",
            foundation("", &format!("{}    size: big\n", inst(A, "small"))),
            vec!["bad.yaml:22:5: instances[0].size: unknown field `size`".into()],
        ),
    ]
}

#[test]
fn bad_foundations_fail_cleanly() {
    let mut failures = Vec::new();
    for (name, body, want) in cases() {
        let s = Scratch::new();
        s.write("bad.yaml", &body);
        s.write("t.yml.tmpl", TEMPLATE);
        for cmd in [
            &["validate", "bad.yaml"][..],
            &["apply", "--auto-approve", "bad.yaml"][..],
        ] {
            let o = s.run_with_limit(cmd, Duration::from_secs(20));
            let err = stderr(&o);
            if o.status.code() != Some(1) {
                failures.push(format!(
                    "{name}: {cmd:?} exited {:?}\n{err}",
                    o.status.code()
                ));
            }
            if err.contains("panicked") {
                failures.push(format!("{name}: {cmd:?} panicked:\n{err}"));
            }
            for w in &want {
                if !err.contains(w.as_str()) {
                    failures.push(format!("{name}: {cmd:?} stderr lacks {w:?}:\n{err}"));
                }
            }
        }
        if s.path().join("state").exists() {
            failures.push(format!("{name}: a state directory was created"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn a_good_foundation_validates_and_passes_bosh_placeholders_through() {
    let s = Scratch::new();
    s.write("ok.yaml", &foundation("", &inst(A, "small")));
    s.write("t.yml.tmpl", TEMPLATE);
    let o = s.run(&["validate", "ok.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("4 resource(s)"), "{}", stdout(&o));
    let o = s.run(&["plan", "--refresh=false", "ok.yaml"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    for want in [
        &format!("bosh_deployment.redis-small-{A} will be created")[..],
        &format!("vault_index_entry.{A} will be created"),
        &format!("vault_secret.{A}-manifest will be created"),
        &format!("vault_secret.{A}-metadata will be created"),
        "instances: 1",
        "env: \"${HOME} ((secret))\"",
        &format!("instance_id: {A}"),
    ] {
        assert!(out.contains(want), "plan lacks {want:?}:\n{out}");
    }
}
