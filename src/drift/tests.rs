//! Drift tests on plain data: a model, a state and refreshed records in, a report out;
//! the text and Markdown forms as insta snapshots (`INSTA_UPDATE=always` or
//! `cargo insta review` to refresh).

use super::*;
use crate::model::{Expr, Resource};
use crate::plan::PlanOptions;
use crate::providers::Registry;
use crate::spec::Lifecycle;
use crate::state::{fingerprint, RecordedLifecycle};
use serde_json::json;

const MANIFEST: &str = "releases:\n- {name: redis, version: \"15.1\"}\ninstance_groups:\n- name: redis\n  instances: 1\n  vm_type: small\n";

fn res(ty: &str, name: &str, provider: &str, attrs: Value, ignore: &[&str]) -> Resource {
    Resource {
        address: Address::new(ty, name),
        provider: provider.into(),
        attributes: attrs
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), Expr::parse(v).unwrap()))
            .collect(),
        dependencies: vec![],
        lifecycle: Lifecycle {
            ignore_changes: ignore.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        origin: None,
    }
}

fn rec(ty: &str, provider: &str, attrs: Value) -> ResourceState {
    let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    ResourceState {
        ty: ty.into(),
        provider: provider.into(),
        attributes: attrs
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        sensitive: Default::default(),
        outputs: Default::default(),
        dependencies: vec![],
        lifecycle: RecordedLifecycle::default(),
        created_at: now,
        updated_at: now,
    }
}

/// A workspace of two deployments, a secret, an index entry and a null resource, with
/// state matching the spec.
fn world() -> (Vec<Resource>, State) {
    let model = vec![
        res(
            "bosh_deployment",
            "a",
            "bosh",
            json!({"name": "a", "manifest": MANIFEST}),
            &[],
        ),
        res(
            "bosh_deployment",
            "b",
            "bosh",
            json!({"name": "b", "manifest": MANIFEST}),
            &[],
        ),
        res(
            "vault_secret",
            "creds",
            "vault",
            json!({"path": "app/creds", "data": {"password": "hunter2"}}),
            &[],
        ),
        res(
            "vault_index_entry",
            "i1",
            "vault",
            json!({"path": "db", "key": "i1", "value": {"plan": "small"}}),
            &[],
        ),
        res(
            "null_resource",
            "n",
            "null",
            json!({"inputs": {"size": "small"}}),
            &[],
        ),
    ];
    let mut st = State::new();
    st.lineage = uuid::Uuid::nil();
    st.serial = 7;
    for (addr, ty, provider, attrs) in [
        (
            "bosh_deployment.a",
            "bosh_deployment",
            "bosh",
            json!({"name": "a", "manifest": MANIFEST}),
        ),
        (
            "bosh_deployment.b",
            "bosh_deployment",
            "bosh",
            json!({"name": "b", "manifest": MANIFEST}),
        ),
        (
            "vault_secret.creds",
            "vault_secret",
            "vault",
            json!({"path": "app/creds"}),
        ),
        (
            "vault_index_entry.i1",
            "vault_index_entry",
            "vault",
            json!({"path": "db", "key": "i1", "value": {"plan": "small"}}),
        ),
        (
            "null_resource.n",
            "null_resource",
            "null",
            json!({"inputs": {"size": "small"}}),
        ),
    ] {
        let mut r = rec(ty, provider, attrs);
        if ty == "vault_secret" {
            r.sensitive
                .insert("data".into(), fingerprint(&json!({"password": "hunter2"})));
        }
        st.resources.insert(addr.into(), r);
    }
    (model, st)
}

fn report(model: Vec<Resource>, st: &State, observed: &Observed) -> DriftReport {
    let m = Model::from_resources(model).unwrap();
    let schemas = Registry::builtin().schemas().clone();
    let spec_plan =
        plan::plan(&m, st, &Observed::new(), &schemas, &PlanOptions::default()).expect("plan");
    let entries = compute(&m, st, observed, &spec_plan);
    DriftReport::new(
        "demo",
        StateBinding {
            backend: "file://state/demo.json".into(),
            lineage: st.lineage.to_string(),
            serial: st.serial,
        },
        entries,
    )
}

/// The three changes of acceptance 1 (a deployment deleted, another's manifest edited,
/// an index entry changed), a secret rewritten, and a spec change to the null resource.
fn drifted() -> (Vec<Resource>, State, Observed) {
    let (mut model, st) = world();
    let mut observed = Observed::new();
    observed.insert("bosh_deployment.a".into(), None);
    let mut b = st.resources["bosh_deployment.b"].clone();
    b.attributes.insert(
        "manifest".into(),
        json!(MANIFEST.replace("instances: 1", "instances: 3")),
    );
    observed.insert("bosh_deployment.b".into(), Some(b));
    let mut i1 = st.resources["vault_index_entry.i1"].clone();
    i1.attributes
        .insert("value".into(), json!({"plan": "large"}));
    observed.insert("vault_index_entry.i1".into(), Some(i1));
    let mut creds = st.resources["vault_secret.creds"].clone();
    creds
        .sensitive
        .insert("data".into(), fingerprint(&json!({"password": "other"})));
    observed.insert("vault_secret.creds".into(), Some(creds));
    model[4] = res(
        "null_resource",
        "n",
        "null",
        json!({"inputs": {"size": "large"}}),
        &[],
    );
    (model, st, observed)
}

#[test]
fn matching_world_is_clean() {
    let (model, st) = world();
    let r = report(model, &st, &Observed::new());
    assert!(r.clean);
    assert!(r.resources.is_empty());
    assert!(render::render_text(&r).starts_with("No drift"));
}

#[test]
fn reports_each_kind_on_its_axis() {
    let (model, st, observed) = drifted();
    let r = report(model, &st, &observed);
    assert!(!r.clean);
    let kinds: Vec<(&str, Option<OutsideKind>, Option<Action>)> = r
        .resources
        .iter()
        .map(|e| {
            (
                e.address.as_str(),
                e.outside.as_ref().map(|o| o.kind),
                e.spec.as_ref().map(|s| s.action),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("bosh_deployment.a", Some(OutsideKind::Deleted), None),
            ("bosh_deployment.b", Some(OutsideKind::Modified), None),
            ("null_resource.n", None, Some(Action::Update)),
            ("vault_index_entry.i1", Some(OutsideKind::Modified), None),
            ("vault_secret.creds", Some(OutsideKind::Modified), None),
        ]
    );
    assert_eq!(r.summary.deleted_outside, 1);
    assert_eq!(r.summary.modified_outside, 3);
    assert_eq!(r.summary.to_update, 1);
    let b = r.resources[1].outside.as_ref().unwrap();
    let diff = b.attributes[0].diff.as_deref().unwrap();
    assert!(
        diff.contains("-    instances: 1\n+    instances: 3\n"),
        "{diff}"
    );
}

#[test]
fn sensitive_values_never_appear() {
    let (model, st, observed) = drifted();
    let r = report(model, &st, &observed);
    let json = serde_json::to_string(&r).unwrap();
    let text = render::render_text(&r) + &render::render_markdown(&r);
    for out in [&json, &text] {
        assert!(
            !out.contains("hunter2") && !out.contains("other\""),
            "{out}"
        );
        assert!(!out.contains("sha256:"), "{out}");
    }
    let creds = r.resources.last().unwrap().outside.as_ref().unwrap();
    assert!(creds.attributes[0].sensitive);
}

#[test]
fn ignore_changes_and_output_only_changes_are_not_drift() {
    let (mut model, st) = world();
    model[3] = res(
        "vault_index_entry",
        "i1",
        "vault",
        json!({"path": "db", "key": "i1", "value": {"plan": "small"}}),
        &["value.plan"],
    );
    let mut observed = Observed::new();
    let mut i1 = st.resources["vault_index_entry.i1"].clone();
    i1.attributes
        .insert("value".into(), json!({"plan": "large"}));
    observed.insert("vault_index_entry.i1".into(), Some(i1));
    let mut creds = st.resources["vault_secret.creds"].clone();
    creds.outputs.insert("version".into(), json!(9));
    observed.insert("vault_secret.creds".into(), Some(creds));
    let r = report(model.clone(), &st, &observed);
    assert!(r.clean, "{:?}", r.resources);
    // Another key of the same value is still seen.
    let mut i1 = st.resources["vault_index_entry.i1"].clone();
    i1.attributes
        .insert("value".into(), json!({"plan": "small", "orphaned": true}));
    observed.insert("vault_index_entry.i1".into(), Some(i1));
    let r = report(model, &st, &observed);
    assert_eq!(r.summary.modified_outside, 1);
}

#[test]
fn spec_axis_lists_creates_deletes_and_replacements() {
    let (mut model, mut st) = world();
    // Not in state: create. In state only: delete. Path changed: replace.
    st.resources.remove("null_resource.n");
    st.resources.insert(
        "null_resource.gone".into(),
        rec("null_resource", "null", json!({})),
    );
    model[3] = res(
        "vault_index_entry",
        "i1",
        "vault",
        json!({"path": "db2", "key": "i1", "value": {"plan": "small"}}),
        &[],
    );
    let r = report(model, &st, &Observed::new());
    let actions: Vec<(&str, Action)> = r
        .resources
        .iter()
        .map(|e| (e.address.as_str(), e.spec.as_ref().unwrap().action))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("null_resource.gone", Action::Delete),
            ("null_resource.n", Action::Create),
            ("vault_index_entry.i1", Action::Replace),
        ]
    );
    assert_eq!(
        r.resources[2].spec.as_ref().unwrap().attributes[0].name,
        "path"
    );
}

#[test]
fn yaml_manifests_are_diffed_without_formatting_noise() {
    let before = "releases: [{name: redis, version: '15.1'}]\ninstance_groups:\n- {name: redis, instances: 1}\n";
    let after = "name: b\nreleases:\n- name: redis\n  version: \"15.1\"\ninstance_groups:\n- name: redis\n  instances: 3\n";
    let d = unified_diff(before, after);
    let changed: Vec<&str> = d.lines().filter(|l| l.starts_with(['+', '-'])).collect();
    assert_eq!(
        changed,
        vec!["+name: b", "-    instances: 1", "+    instances: 3"],
        "{d}"
    );
    // Equal as YAML but formatted apart (a spec reformatted): the text diff shows it.
    let d = unified_diff("a: [1]\nb: 2\n", "a:\n- 1\nb: 2\n");
    assert!(d.contains("-a: [1]"), "{d}");
    // Not YAML maps: plain text.
    let d = unified_diff("line one\nline two\n", "line one\nline 2\n");
    assert!(d.contains("-line two\n+line 2"), "{d}");
}

#[test]
fn text_snapshot() {
    let (model, st, observed) = drifted();
    insta::assert_snapshot!(render::render_text(&report(model, &st, &observed)));
}

#[test]
fn markdown_snapshot() {
    let (model, st, observed) = drifted();
    insta::assert_snapshot!(render::render_markdown(&report(model, &st, &observed)));
}

#[test]
fn json_matches_its_schema() {
    let (model, st, observed) = drifted();
    let doc = serde_json::to_value(report(model, &st, &observed)).unwrap();
    let v = jsonschema::validator_for(&schema()).unwrap();
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// `schemas/drift.schema.json` is generated; `UPDATE_SCHEMAS=1 cargo test` rewrites it.
#[test]
fn checked_in_schema_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/drift.schema.json");
    let want = serde_json::to_string_pretty(&schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{path} is stale: run `UPDATE_SCHEMAS=1 cargo test` and commit it"
    );
}
