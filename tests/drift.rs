//! Acceptance of drift, refresh-only apply and import (issue 4, acceptance 1 and 7)
//! against the real `anvil sim bosh` and `anvil sim vault`: changes made behind anvil's
//! back through the Director and Vault APIs are reported by `anvil drift` (text, JSON
//! checked against `schemas/drift.schema.json`, Markdown), undone by `apply`, or
//! accepted into state by `apply --refresh-only`; `anvil import` adopts hand-made
//! objects so that the next plan is empty, and refuses what it must.

mod common;
#[path = "sim_bosh_support/mod.rs"]
mod sim_bosh_support;
#[path = "sim_vault_support/mod.rs"]
mod sim_vault_support;

use common::*;
use serde_json::{json, Value};
use sim_bosh_support::BoshSim;
use sim_vault_support::VaultSim;
use std::process::Output;

const TOKEN: &str = "root";

/// The two simulators and a scratch directory.
struct World {
    bosh: BoshSim,
    vault: VaultSim,
    s: Scratch,
}

impl World {
    fn new() -> World {
        World {
            bosh: BoshSim::start(&[], None),
            vault: VaultSim::start(TOKEN, &[]),
            s: Scratch::new(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        at_simulators(
            &mut self.s.cmd(args),
            &self.bosh.url,
            &self.vault.url(),
            TOKEN,
        )
        .output()
        .expect("run anvil")
    }

    fn vault_read(&self, path: &str) -> Option<Value> {
        self.vault.kv_read(path, TOKEN)
    }

    fn vault_write(&self, path: &str, data: &Value) {
        let r = self.vault.req(
            "POST",
            &format!("/v1/secret/data/{path}"),
            Some(TOKEN),
            Some(&json!({ "data": data }).to_string()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

fn manifest(instances: u32) -> String {
    format!(
        "releases:\n- {{name: redis, version: \"15.1\"}}\nstemcells:\n- {{alias: default, os: ubuntu-jammy, version: \"1.406\"}}\ninstance_groups:\n- name: redis\n  instances: {instances}\n  vm_type: small\n  azs: [z1]\n  jobs:\n  - {{name: redis-server, release: redis}}\n"
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("        {l}\n")).collect()
}

/// Two deployments, a secret, two index entries and a null resource.
fn spec() -> String {
    let m = indent(&manifest(1));
    format!(
        "apiVersion: anvil/v1
kind: Resources
metadata:
  name: driftws
resources:
  - type: bosh_deployment
    name: dep-a
    attributes:
      name: dep-a
      manifest: |
{m}  - type: bosh_deployment
    name: dep-b
    attributes:
      name: dep-b
      manifest: |
{m}  - type: vault_secret
    name: creds
    attributes:
      path: app/creds
      data: {{password: plaintext-drift-pw}}
  - type: vault_index_entry
    name: i1
    attributes:
      path: db
      key: i1
      value: {{plan: small, service: redis}}
  - type: vault_index_entry
    name: i2
    attributes:
      path: db
      key: i2
      value: {{plan: small, service: redis}}
  - type: null_resource
    name: glue
    attributes:
      inputs: {{note: hello}}
"
    )
}

/// Applies the spec, then changes three things behind anvil's back: deletes dep-a,
/// edits dep-b's manifest and changes index entry i1.
fn drifted_world() -> World {
    let w = World::new();
    w.s.write("spec.yaml", &spec());
    assert_code(&w.run(&["apply", "--auto-approve", "spec.yaml"]), 0);
    assert_code(&w.run(&["drift", "spec.yaml"]), 0);

    w.bosh.delete("dep-a");
    w.bosh.deploy(&format!("name: dep-b\n{}", manifest(3)));
    let mut db = w.vault_read("db").unwrap();
    db["i1"] = json!({"plan": "large", "service": "redis"});
    w.vault_write("db", &db);
    w
}

/// (address, outside kind, spec action) of each entry of a JSON drift report.
fn entries(doc: &Value) -> Vec<(String, Value, Value)> {
    doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_string(),
                e["outside"]["kind"].clone(),
                e["spec"]["action"].clone(),
            )
        })
        .collect()
}

fn validate(doc: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/drift.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{doc:#}");
}

/// Acceptance 1: drift reports exactly the three changes with their kinds, exit 2; the
/// JSON validates; apply restores all three; drift is clean again.
#[test]
fn drift_reports_three_changes_and_apply_restores_them() {
    let w = drifted_world();

    let o = w.run(&["drift", "spec.yaml"]);
    assert_code(&o, 2);
    let out = stdout(&o);
    let headlines: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("# "))
        .collect();
    assert_eq!(
        headlines,
        vec![
            "  # bosh_deployment.dep-a was deleted outside anvil",
            "  # bosh_deployment.dep-b was modified outside anvil",
            "  # vault_index_entry.i1 was modified outside anvil",
        ],
        "{out}"
    );
    assert!(
        out.contains("-    instances: 1") && out.contains("+    instances: 3"),
        "{out}"
    );
    assert!(
        out.contains(
            r#"~ value: {"plan":"small","service":"redis"} -> {"plan":"large","service":"redis"}"#
        ),
        "{out}"
    );

    let o = w.run(&["drift", "--json", "spec.yaml"]);
    assert_code(&o, 2);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    validate(&doc);
    assert_eq!(
        entries(&doc),
        vec![
            (
                "bosh_deployment.dep-a".into(),
                json!("deleted"),
                Value::Null
            ),
            (
                "bosh_deployment.dep-b".into(),
                json!("modified"),
                Value::Null
            ),
            (
                "vault_index_entry.i1".into(),
                json!("modified"),
                Value::Null
            ),
        ]
    );
    assert_eq!(doc["clean"], false);
    assert_eq!(doc["summary"]["deleted_outside"], 1);
    assert_eq!(doc["summary"]["modified_outside"], 2);
    let diff = doc["resources"][1]["outside"]["attributes"][0]["diff"]
        .as_str()
        .unwrap();
    assert!(diff.contains("+    instances: 3"), "{diff}");

    let o = w.run(&["drift", "--markdown", "spec.yaml"]);
    assert_code(&o, 2);
    let md = stdout(&o);
    assert!(
        md.contains("| `bosh_deployment.dep-a` | **deleted** | — |"),
        "{md}"
    );
    assert!(md.contains("```diff\n--- state\n+++ real\n"), "{md}");

    // Read-only: nothing written, no lock left.
    assert!(!w.s.path().join("state/driftws.json.lock").exists());

    let o = w.run(&["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("deleted outside anvil"),
        "{}",
        stdout(&o)
    );
    assert!(w.bosh.manifest("dep-a").is_some());
    assert!(w.bosh.manifest("dep-b").unwrap().contains("instances: 1"));
    assert_eq!(w.vault_read("db").unwrap()["i1"]["plan"], "small");

    let o = w.run(&["drift", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).starts_with("No drift"), "{}", stdout(&o));
}

/// Acceptance 1, second half: `apply --refresh-only` records the three changes and
/// leaves the real world alone; drift then shows only what apply would do.
#[test]
fn refresh_only_records_the_real_world_and_changes_nothing() {
    let w = drifted_world();
    let before = std::fs::read_to_string(w.s.state_file("driftws")).unwrap();

    // Without a terminal it needs --auto-approve, and writes nothing without it.
    let o = w.run(&["apply", "--refresh-only", "spec.yaml"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("--auto-approve"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(w.s.state_file("driftws")).unwrap(),
        before
    );

    let o = w.run(&["apply", "--refresh-only", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("bosh_deployment.dep-a will be removed from state"),
        "{out}"
    );
    assert!(out.contains("2 recorded, 1 removed from state"), "{out}");

    // The real world still has the hand-made changes.
    assert!(w.bosh.manifest("dep-a").is_none());
    assert!(w.bosh.manifest("dep-b").unwrap().contains("instances: 3"));
    assert_eq!(w.vault_read("db").unwrap()["i1"]["plan"], "large");

    // State has them.
    let st = w.s.state_json("driftws");
    let res = &st["resources"];
    assert!(res.get("bosh_deployment.dep-a").is_none(), "{st}");
    assert!(res["bosh_deployment.dep-b"]["attributes"]["manifest"]
        .as_str()
        .unwrap()
        .contains("instances: 3"));
    assert_eq!(
        res["vault_index_entry.i1"]["attributes"]["value"]["plan"],
        "large"
    );
    assert!(!st.to_string().contains("plaintext-drift-pw"));

    // Nothing changed outside anvil any more: only what apply would do to the spec.
    let o = w.run(&["drift", "--json", "spec.yaml"]);
    assert_code(&o, 2);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    validate(&doc);
    assert_eq!(
        entries(&doc),
        vec![
            ("bosh_deployment.dep-a".into(), Value::Null, json!("create")),
            ("bosh_deployment.dep-b".into(), Value::Null, json!("update")),
            ("vault_index_entry.i1".into(), Value::Null, json!("update")),
        ]
    );
    let o = w.run(&["plan", "--detailed-exitcode", "spec.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("Plan: 1 to add, 2 to change, 0 to destroy."),
        "{}",
        stdout(&o)
    );

    // A second refresh-only has nothing to record.
    let o = w.run(&["apply", "--refresh-only", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("Nothing to record"), "{}", stdout(&o));

    assert_code(&w.run(&["apply", "--auto-approve", "spec.yaml"]), 0);
    assert_code(&w.run(&["drift", "spec.yaml"]), 0);
}

/// Acceptance 7: import adopts hand-made objects; the next plan is empty for them; an
/// address already managed is refused; bad IDs and missing objects give clear errors.
#[test]
fn import_adopts_hand_made_objects() {
    let w = World::new();
    // Made by hand: the Director's copy is formatted differently from the spec's.
    w.bosh.deploy(
        "name: hand\nreleases: [{name: redis, version: '15.1'}]\nstemcells: [{alias: default, os: ubuntu-jammy, version: '1.406'}]\ninstance_groups: [{name: redis, instances: 1, vm_type: small, azs: [z1], jobs: [{name: redis-server, release: redis}]}]\n",
    );
    w.bosh.post_json(
        "/configs",
        &json!({"type": "cloud", "name": "default", "content": "azs: [{name: z1}]\n"}),
    );
    w.vault_write("app/creds", &json!({"password": "plaintext-drift-pw"}));
    w.vault_write("db", &json!({"i1": {"plan": "small", "service": "redis"}}));
    let m = indent(&manifest(1));
    w.s.write(
        "spec.yaml",
        &format!(
            "apiVersion: anvil/v1
kind: Resources
metadata:
  name: importws
resources:
  - type: bosh_deployment
    name: hand
    attributes:
      name: hand
      manifest: |
{m}  - type: bosh_config
    name: cloud
    attributes:
      type: cloud
      content: |
        azs:
        - name: z1
  - type: vault_secret
    name: creds
    attributes:
      path: app/creds
      data: {{password: plaintext-drift-pw}}
  - type: vault_index_entry
    name: i1
    attributes:
      path: db
      key: i1
      value: {{plan: small, service: redis}}
  - type: null_resource
    name: glue
    attributes:
      triggers: {{k: v}}
"
        ),
    );

    // Bad addresses and IDs, and objects that do not exist: exit 1, named, nothing written.
    for (args, want) in [
        (
            vec!["bosh_deployment.nope", "hand"],
            "bosh_deployment.nope: not declared in the spec (spec.yaml)",
        ),
        (vec!["not-an-address", "x"], "not-an-address"),
        (
            vec!["bosh_deployment.hand", "missing"],
            &format!(
                "no deployment `missing` on the BOSH Director at {}",
                w.bosh.url
            ),
        ),
        (
            vec!["bosh_deployment.hand", "a/b"],
            "is not a deployment name",
        ),
        (
            vec!["vault_secret.creds", "app/missing"],
            &format!("no secret at {}/v1/secret/data/app/missing", w.vault.url()),
        ),
        (vec!["bosh_config.cloud", "nope"], "is not a config"),
        (
            vec!["bosh_config.cloud", "runtime/dns"],
            "no runtime config named `dns` on the BOSH Director",
        ),
        (vec!["vault_index_entry.i1", "db"], "`#KEY` is missing"),
        (vec!["vault_index_entry.i1", "db#i9"], "has no key `i9`"),
        (vec!["null_resource.glue", ""], "must not be empty"),
        // URL syntax in an ID never reaches another object than the one named.
        (
            vec!["bosh_deployment.hand", "hand#"],
            "no deployment `hand#`",
        ),
        (
            vec!["bosh_deployment.hand", "hand?x=1"],
            "no deployment `hand?x=1`",
        ),
        (vec!["vault_secret.creds", "app/creds?x=1"], "no secret at"),
        (
            vec!["vault_secret.creds", "q/../app/creds"],
            "`.` and `..` segments are not allowed",
        ),
    ] {
        let mut argv = vec!["import"];
        argv.extend(args.iter().copied());
        argv.push("spec.yaml");
        let o = w.run(&argv);
        assert_code(&o, 1);
        assert!(stderr(&o).contains(want), "{argv:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        assert!(!w.s.state_file("importws").exists(), "{argv:?} wrote state");
    }

    for (addr, id) in [
        ("bosh_deployment.hand", "hand"),
        ("bosh_config.cloud", "cloud"),
        ("vault_secret.creds", "app/creds"),
        ("vault_index_entry.i1", "secret:db#i1"),
        ("null_resource.glue", "glue-1"),
    ] {
        let o = w.run(&["import", addr, id, "spec.yaml"]);
        assert_code(&o, 0);
        assert!(
            stdout(&o).contains(&format!("Imported {addr}")),
            "{}",
            stdout(&o)
        );
    }
    let o = w.run(&["plan", "--detailed-exitcode", "spec.yaml"]);
    assert_code(&o, 0);
    assert_code(&w.run(&["drift", "spec.yaml"]), 0);
    let st = w.s.state_json("importws");
    assert_eq!(
        st["resources"]["null_resource.glue"]["outputs"]["id"],
        "glue-1"
    );
    assert!(!st.to_string().contains("plaintext-drift-pw"));

    let o = w.run(&["import", "bosh_deployment.hand", "hand", "spec.yaml"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("bosh_deployment.hand: already managed")
            && stderr(&o).contains("anvil state rm bosh_deployment.hand"),
        "{}",
        stderr(&o)
    );

    // A deployment that differs from the spec is adopted as it is; the plan shows how.
    w.bosh.deploy(&format!("name: hand\n{}", manifest(2)));
    assert_code(&w.run(&["state", "rm", "bosh_deployment.hand"]), 0);
    assert_code(
        &w.run(&["import", "bosh_deployment.hand", "hand", "spec.yaml"]),
        0,
    );
    let o = w.run(&["plan", "--detailed-exitcode", "spec.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{}",
        stdout(&o)
    );
}

const NULL_SPEC: &str = "apiVersion: anvil/v1
kind: Resources
metadata:
  name: nullws
resources:
  - type: null_resource
    name: a
    attributes: {inputs: {x: \"1\"}}
  - type: null_resource
    name: b
    attributes: {inputs: {x: \"1\"}}
";

/// Flags and refusals that need no simulator: the spec side alone, `--target`,
/// `--refresh=false`, usage errors exit 1 (never 2, which means drift), refresh-only
/// refusals, bad specs, and `anvil schema drift` matching the checked-in schema.
#[test]
fn drift_flags_and_refusals() {
    let s = Scratch::new();
    s.write("spec.yaml", NULL_SPEC);
    let o = s.run(&["drift", "--json", "spec.yaml"]);
    assert_code(&o, 2);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    validate(&doc);
    assert_eq!(
        entries(&doc),
        vec![
            ("null_resource.a".into(), Value::Null, json!("create")),
            ("null_resource.b".into(), Value::Null, json!("create")),
        ]
    );
    // Read-only: no state, no lock.
    assert!(!s.path().join("state").exists());

    let o = s.run(&[
        "drift",
        "--json",
        "--target",
        "null_resource.b",
        "spec.yaml",
    ]);
    assert_code(&o, 2);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(entries(&doc).len(), 1, "{doc}");
    assert_eq!(doc["resources"][0]["address"], "null_resource.b");

    assert_code(&s.run(&["apply", "--auto-approve", "spec.yaml"]), 0);
    for args in [
        vec!["drift", "spec.yaml"],
        vec!["drift", "--refresh=false", "spec.yaml"],
        vec!["drift", "--markdown", "spec.yaml"],
    ] {
        let o = s.run(&args);
        assert_code(&o, 0);
    }
    s.write(
        "spec.yaml",
        &NULL_SPEC.replace("{x: \"1\"}}\n  - type", "{x: \"2\"}}\n  - type"),
    );
    let o = s.run(&["drift", "spec.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("# null_resource.a would be updated in place")
            && stdout(&o).contains(r#"~ inputs: {"x":"1"} -> {"x":"2"}"#),
        "{}",
        stdout(&o)
    );

    // Usage errors are errors (1), not drift (2).
    for args in [
        vec!["drift", "--json", "--markdown", "spec.yaml"],
        vec!["drift", "--no-such-flag", "spec.yaml"],
        vec!["import", "null_resource.a"],
    ] {
        let o = s.run(&args);
        assert_code(&o, 1);
    }
    let o = s.run(&["apply", "--refresh-only", "--refresh=false", "spec.yaml"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("drop --refresh=false"),
        "{}",
        stderr(&o)
    );
    let o = s.run(&["plan", "--out", "p.json", "spec.yaml"]);
    assert_code(&o, 0);
    let o = s.run(&["apply", "--refresh-only", "p.json"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("cannot apply a saved plan"),
        "{}",
        stderr(&o)
    );
    // null resources have no real world: nothing to record.
    let o = s.run(&["apply", "--refresh-only", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("Nothing to record"), "{}", stdout(&o));

    // A bad spec: located error, exit 1, state untouched.
    let before = std::fs::read_to_string(s.state_file("nullws")).unwrap();
    s.write("bad.yaml", "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: nullws}\nresources:\n  - type: null_resource\n    name: a\n    attributes: {nope: 1}\n");
    let o = s.run(&["drift", "bad.yaml"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("bad.yaml:7:"), "{}", stderr(&o));
    let o = s.run(&["import", "null_resource.a", "x", "bad.yaml"]);
    assert_code(&o, 1);
    assert_eq!(
        std::fs::read_to_string(s.state_file("nullws")).unwrap(),
        before
    );

    let o = s.run(&["schema", "drift"]);
    assert_code(&o, 0);
    let printed: Value = serde_json::from_slice(&o.stdout).unwrap();
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/drift.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(printed, checked_in);
}
