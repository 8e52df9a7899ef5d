//! Plan tests on plain data: a model, a state and observations in, a plan out.

use super::*;
use crate::model::{Address, Expr, Model, Resource, Schemas};
use crate::providers::Registry;
use crate::spec::Lifecycle;
use crate::state::{RecordedLifecycle, ResourceState, State};
use serde_json::{json, Value};

fn schemas() -> Schemas {
    Registry::builtin().schemas().clone()
}

fn res(name: &str, attrs: Value, deps: &[&str]) -> Resource {
    res_lc(name, attrs, deps, Lifecycle::default())
}

fn res_lc(name: &str, attrs: Value, deps: &[&str], lifecycle: Lifecycle) -> Resource {
    let attributes = attrs
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), Expr::parse(v).unwrap()))
        .collect::<std::collections::BTreeMap<_, _>>();
    let mut dependencies: Vec<Address> = deps.iter().map(|d| Address::parse(d).unwrap()).collect();
    for e in attributes.values() {
        let mut refs = vec![];
        e.references(&mut refs);
        dependencies.extend(refs.into_iter().map(|r| r.target));
    }
    dependencies.sort();
    dependencies.dedup();
    Resource {
        address: Address::new("null_resource", name),
        provider: "null".into(),
        attributes,
        dependencies,
        lifecycle,
        origin: None,
    }
}

fn rec(attrs: Value, id: &str, deps: &[&str]) -> ResourceState {
    let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    ResourceState {
        ty: "null_resource".into(),
        provider: "null".into(),
        attributes: attrs
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        sensitive: Default::default(),
        outputs: [("id".to_string(), json!(id))].into_iter().collect(),
        dependencies: deps.iter().map(|s| s.to_string()).collect(),
        lifecycle: RecordedLifecycle::default(),
        created_at: now,
        updated_at: now,
    }
}

fn state(recs: Vec<(&str, ResourceState)>) -> State {
    let mut s = State::new();
    for (a, r) in recs {
        s.resources.insert(format!("null_resource.{a}"), r);
    }
    s
}

fn run(model: Vec<Resource>, st: &State, opts: &PlanOptions) -> Plan {
    let m = Model::from_resources(model).unwrap();
    plan(&m, st, &Observed::new(), &schemas(), opts).unwrap()
}

fn actions(p: &Plan) -> Vec<(String, Action)> {
    p.changes
        .iter()
        .map(|c| {
            (
                c.address.trim_start_matches("null_resource.").to_string(),
                c.action,
            )
        })
        .collect()
}

fn chain() -> Vec<Resource> {
    vec![
        res("base", json!({"triggers": {"size": "small"}}), &[]),
        res(
            "app",
            json!({"triggers": {"parent": "${null_resource.base.id}"}}),
            &[],
        ),
        res(
            "web",
            json!({"triggers": {"app": "${null_resource.app.id}"}}),
            &[],
        ),
        res("side", json!({"triggers": {"x": "1"}}), &[]),
    ]
}

fn chain_state() -> State {
    state(vec![
        (
            "base",
            rec(json!({"triggers": {"size": "small"}}), "b1", &[]),
        ),
        (
            "app",
            rec(
                json!({"triggers": {"parent": "b1"}}),
                "a1",
                &["null_resource.base"],
            ),
        ),
        (
            "web",
            rec(
                json!({"triggers": {"app": "a1"}}),
                "w1",
                &["null_resource.app"],
            ),
        ),
        ("side", rec(json!({"triggers": {"x": "1"}}), "s1", &[])),
    ])
}

#[test]
fn empty_state_creates_everything_with_ids_unknown() {
    let p = run(chain(), &State::new(), &PlanOptions::default());
    assert!(p.changes.iter().all(|c| c.action == Action::Create));
    let app = p.get("null_resource.app").unwrap();
    let after = app.after.as_ref().unwrap();
    assert_eq!(
        after["triggers"],
        PValue::Object(
            [("parent".to_string(), PValue::Unknown)]
                .into_iter()
                .collect()
        )
    );
    assert_eq!(
        p.summary(),
        Summary {
            add: 4,
            change: 0,
            destroy: 0,
            forget: 0
        }
    );
}

#[test]
fn matching_state_is_a_no_op() {
    let p = run(chain(), &chain_state(), &PlanOptions::default());
    assert!(!p.has_changes(), "{:?}", actions(&p));
}

#[test]
fn trigger_change_replaces_the_resource_and_its_referencing_dependents_only() {
    let mut m = chain();
    m[0] = res("base", json!({"triggers": {"size": "large"}}), &[]);
    let p = run(m, &chain_state(), &PlanOptions::default());
    assert_eq!(
        actions(&p),
        vec![
            ("app".into(), Action::Replace),
            ("base".into(), Action::Replace),
            ("side".into(), Action::NoOp),
            ("web".into(), Action::Replace),
        ]
    );
    let app = p.get("null_resource.app").unwrap();
    assert_eq!(app.replace_order, Some(ReplaceOrder::DeleteThenCreate));
    assert!(
        app.reasons[0].contains("known only after apply"),
        "{:?}",
        app.reasons
    );
    assert!(app.forces_replacement.contains("triggers"));
}

#[test]
fn input_change_updates_in_place() {
    let mut m = chain();
    m[3] = res(
        "side",
        json!({"triggers": {"x": "1"}, "inputs": {"note": "hi"}}),
        &[],
    );
    let p = run(m, &chain_state(), &PlanOptions::default());
    assert_eq!(p.get("null_resource.side").unwrap().action, Action::Update);
    assert_eq!(p.summary().change, 1);
    assert_eq!(p.summary().add, 0);
}

#[test]
fn removed_resource_is_deleted_or_forgotten_with_retain_on_delete() {
    let mut st = chain_state();
    st.resources
        .get_mut("null_resource.side")
        .unwrap()
        .lifecycle
        .retain_on_delete = true;
    st.resources
        .insert("null_resource.old".into(), rec(json!({}), "o1", &[]));
    let m = chain()
        .into_iter()
        .filter(|r| r.address.name != "side")
        .collect();
    let p = run(m, &st, &PlanOptions::default());
    assert_eq!(p.get("null_resource.side").unwrap().action, Action::Forget);
    assert_eq!(p.get("null_resource.old").unwrap().action, Action::Delete);
    assert_eq!(
        p.summary(),
        Summary {
            add: 0,
            change: 0,
            destroy: 1,
            forget: 1
        }
    );
}

#[test]
fn prevent_destroy_blocks_replace_and_delete() {
    let mut m = chain();
    m[0] = res_lc(
        "base",
        json!({"triggers": {"size": "large"}}),
        &[],
        Lifecycle {
            prevent_destroy: true,
            ..Default::default()
        },
    );
    let mm = Model::from_resources(m).unwrap();
    let errs = plan(
        &mm,
        &chain_state(),
        &Observed::new(),
        &schemas(),
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&errs[0], PlanError::PreventDestroy { address, .. } if address == "null_resource.base"),
        "{errs:?}"
    );

    let mut st = chain_state();
    st.resources
        .get_mut("null_resource.side")
        .unwrap()
        .lifecycle
        .prevent_destroy = true;
    let mm = Model::from_resources(
        chain()
            .into_iter()
            .filter(|r| r.address.name != "side")
            .collect(),
    )
    .unwrap();
    let errs = plan(
        &mm,
        &st,
        &Observed::new(),
        &schemas(),
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(
        errs[0]
            .to_string()
            .contains("null_resource.side: lifecycle.prevent_destroy"),
        "{}",
        errs[0]
    );
}

#[test]
fn create_before_destroy_sets_the_order() {
    let mut m = chain();
    m[3] = res_lc(
        "side",
        json!({"triggers": {"x": "2"}}),
        &[],
        Lifecycle {
            create_before_destroy: true,
            ..Default::default()
        },
    );
    let p = run(m, &chain_state(), &PlanOptions::default());
    assert_eq!(
        p.get("null_resource.side").unwrap().replace_order,
        Some(ReplaceOrder::CreateThenDelete)
    );
}

#[test]
fn ignore_changes_keeps_the_recorded_value() {
    let mut m = chain();
    m[3] = res_lc(
        "side",
        json!({"triggers": {"x": "2"}}),
        &[],
        Lifecycle {
            ignore_changes: vec!["triggers".into()],
            ..Default::default()
        },
    );
    let p = run(m, &chain_state(), &PlanOptions::default());
    assert_eq!(p.get("null_resource.side").unwrap().action, Action::NoOp);
    // Nested paths too.
    let mut m = chain();
    m[3] = res_lc(
        "side",
        json!({"triggers": {"x": "2", "y": "new"}}),
        &[],
        Lifecycle {
            ignore_changes: vec!["triggers.x".into()],
            ..Default::default()
        },
    );
    let p = run(m, &chain_state(), &PlanOptions::default());
    let c = p.get("null_resource.side").unwrap();
    assert_eq!(c.action, Action::Replace);
    assert_eq!(
        c.after.as_ref().unwrap()["triggers"],
        PValue::Known(json!({"x": "1", "y": "new"}))
    );
}

#[test]
fn ignore_changes_on_a_sensitive_attribute_compares_fingerprints_once() {
    let lc = Lifecycle {
        ignore_changes: vec!["sensitive_inputs".into()],
        ..Default::default()
    };
    let m = vec![res_lc(
        "s",
        json!({"sensitive_inputs": {"password": "new"}}),
        &[],
        lc,
    )];
    let mut r = rec(json!({}), "1", &[]);
    r.sensitive.insert(
        "sensitive_inputs".into(),
        crate::state::fingerprint(&json!({"password": "old"})),
    );
    let st = state(vec![("s", r.clone())]);
    let p = run(m.clone(), &st, &PlanOptions::default());
    assert_eq!(p.get("null_resource.s").unwrap().action, Action::NoOp);
    // Applying sends real values: the spec's, never the recorded fingerprint.
    let model = Model::from_resources(m).unwrap();
    let res = model.resources()[0];
    let mut vals = resolve_attributes(res, &|_| Lookup::Missing(String::new())).unwrap();
    apply_ignore_changes(res, Some(&r), &mut vals, Recorded::RealValues);
    assert_eq!(
        vals["sensitive_inputs"],
        PValue::Known(json!({"password": "new"}))
    );
}

#[test]
fn sensitive_values_become_fingerprints() {
    let m = vec![res(
        "s",
        json!({"sensitive_inputs": {"password": "hunter2"}}),
        &[],
    )];
    let p = run(m.clone(), &State::new(), &PlanOptions::default());
    let text = format!("{p:?}");
    assert!(
        !text.contains("hunter2"),
        "plaintext secret in plan: {text}"
    );
    let mut r = rec(json!({}), "i", &[]);
    r.sensitive.insert(
        "sensitive_inputs".into(),
        crate::state::fingerprint(&json!({"password": "hunter2"})),
    );
    let st = state(vec![("s", r)]);
    assert!(!run(m, &st, &PlanOptions::default()).has_changes());
    let changed = vec![res(
        "s",
        json!({"sensitive_inputs": {"password": "hunter3"}}),
        &[],
    )];
    assert_eq!(
        run(changed, &st, &PlanOptions::default()).changes[0].action,
        Action::Update
    );
}

#[test]
fn deleted_outside_anvil_plans_a_create_with_the_reason() {
    let m = Model::from_resources(chain()).unwrap();
    let mut observed = Observed::new();
    observed.insert("null_resource.side".into(), None);
    let p = plan(
        &m,
        &chain_state(),
        &observed,
        &schemas(),
        &PlanOptions::default(),
    )
    .unwrap();
    let c = p.get("null_resource.side").unwrap();
    assert_eq!(c.action, Action::Create);
    assert_eq!(c.reasons, vec!["deleted outside anvil".to_string()]);
}

/// Refresh: a record changed outside anvil plans an update back to the spec, except for
/// attributes under `ignore_changes`, which keep what the real world has now.
#[test]
fn changed_outside_anvil_plans_an_update_back_unless_ignored() {
    let spec = |ignore: Vec<String>| {
        vec![res_lc(
            "n",
            json!({"inputs": {"size": "small"}, "triggers": {"k": "1"}}),
            &[],
            Lifecycle {
                ignore_changes: ignore,
                ..Default::default()
            },
        )]
    };
    let st = state(vec![(
        "n",
        rec(
            json!({"inputs": {"size": "small"}, "triggers": {"k": "1"}}),
            "i",
            &[],
        ),
    )]);
    let mut real = st.resources["null_resource.n"].clone();
    real.attributes
        .insert("inputs".into(), json!({"size": "huge"}));
    let mut observed = Observed::new();
    observed.insert("null_resource.n".into(), Some(real));
    let run_obs = |m: Vec<Resource>| {
        let m = Model::from_resources(m).unwrap();
        plan(&m, &st, &observed, &schemas(), &PlanOptions::default()).unwrap()
    };
    let p = run_obs(spec(vec![]));
    let c = p.get("null_resource.n").unwrap();
    assert_eq!(c.action, Action::Update);
    assert_eq!(
        c.before.as_ref().unwrap()["inputs"],
        json!({"size": "huge"})
    );
    assert_eq!(
        c.after.as_ref().unwrap()["inputs"],
        PValue::Known(json!({"size": "small"}))
    );
    for ignore in ["inputs", "inputs.size", "all"] {
        let p = run_obs(spec(vec![ignore.into()]));
        assert_eq!(
            p.get("null_resource.n").unwrap().action,
            Action::NoOp,
            "ignore_changes: [{ignore}]"
        );
    }
    // Ignoring another attribute does not hide this change.
    let p = run_obs(spec(vec!["triggers".into()]));
    assert_eq!(p.get("null_resource.n").unwrap().action, Action::Update);
}

#[test]
fn target_exclude_and_replace() {
    let opts = PlanOptions {
        targets: vec!["null_resource.app".into()],
        ..Default::default()
    };
    let p = run(chain(), &State::new(), &opts);
    assert_eq!(
        actions(&p),
        vec![
            ("app".into(), Action::Create),
            ("base".into(), Action::Create)
        ]
    );
    let opts = PlanOptions {
        excludes: vec!["null_resource.app".into()],
        ..Default::default()
    };
    let p = run(chain(), &State::new(), &opts);
    assert_eq!(
        actions(&p),
        vec![
            ("base".into(), Action::Create),
            ("side".into(), Action::Create)
        ]
    );
    let opts = PlanOptions {
        replace: vec!["null_resource.side".into()],
        ..Default::default()
    };
    let p = run(chain(), &chain_state(), &opts);
    assert_eq!(p.get("null_resource.side").unwrap().action, Action::Replace);
    assert_eq!(p.get("null_resource.web").unwrap().action, Action::NoOp);
    let opts = PlanOptions {
        targets: vec!["null_resource.nope".into()],
        ..Default::default()
    };
    let m = Model::from_resources(chain()).unwrap();
    assert!(matches!(
        plan(&m, &State::new(), &Observed::new(), &schemas(), &opts).unwrap_err()[0],
        PlanError::UnknownAddress { .. }
    ));
}

#[test]
fn destroy_deletes_everything() {
    let opts = PlanOptions {
        destroy: true,
        ..Default::default()
    };
    let p = run(chain(), &chain_state(), &opts);
    assert!(p.changes.iter().all(|c| c.action == Action::Delete));
    assert_eq!(p.summary().destroy, 4);
}

#[test]
fn references_to_unchanged_resources_resolve_from_state() {
    let m = vec![
        res("base", json!({"triggers": {"size": "small"}}), &[]),
        res(
            "app",
            json!({"inputs": {"parent": "id=${null_resource.base.id}", "size": "${null_resource.base.triggers.size}"}}),
            &[],
        ),
    ];
    let st = state(vec![(
        "base",
        rec(json!({"triggers": {"size": "small"}}), "b1", &[]),
    )]);
    let p = run(m, &st, &PlanOptions::default());
    let app = p.get("null_resource.app").unwrap();
    assert_eq!(
        app.after.as_ref().unwrap()["inputs"],
        PValue::Known(json!({"parent": "id=b1", "size": "small"}))
    );
}

mod render_snapshots {
    //! Snapshots of the text plan; refresh with `INSTA_UPDATE=always cargo test`.
    use super::*;
    use crate::plan::render::{render_plan, Style};

    fn text(p: &Plan) -> String {
        render_plan(p, Style { color: false })
    }

    #[test]
    fn create() {
        let p = run(chain(), &State::new(), &PlanOptions::default());
        insta::assert_snapshot!("create", text(&p));
    }

    #[test]
    fn broker_instance_marked() {
        let mut r = res("d", json!({"inputs": {"size": 1}}), &[]);
        r.origin = Some("broker".into());
        let p = run(
            vec![r, res("spec", json!({"inputs": {}}), &[])],
            &State::new(),
            &PlanOptions::default(),
        );
        let t = text(&p);
        assert!(t.contains(".d (broker instance) will be created"), "{t}");
        assert!(!t.contains(".spec (broker"), "{t}");
        insta::assert_snapshot!("broker_instance", t);
    }

    #[test]
    fn update_with_multiline_diff() {
        let before = "name: redis\ninstances: 1\nvm_type: small\nnetworks:\n- name: default\n";
        let after = "name: redis\ninstances: 3\nvm_type: small\nnetworks:\n- name: default\n- name: backup\n";
        let st = state(vec![(
            "m",
            rec(
                json!({"inputs": {"manifest": before, "size": 1}}),
                "m1",
                &[],
            ),
        )]);
        let p = run(
            vec![res(
                "m",
                json!({"inputs": {"manifest": after, "size": 1}}),
                &[],
            )],
            &st,
            &PlanOptions::default(),
        );
        insta::assert_snapshot!("update_multiline", text(&p));
    }

    #[test]
    fn update_with_the_providers_own_diff() {
        let st = state(vec![("m", rec(json!({"inputs": {"n": 1}}), "m1", &[]))]);
        let mut p = run(
            vec![res("m", json!({"inputs": {"n": 3}}), &[])],
            &st,
            &PlanOptions::default(),
        );
        let line = |t: &str, c: Option<&str>| crate::model::DiffLine {
            text: t.into(),
            change: c.map(String::from),
        };
        p.changes[0].provider_diff = Some(crate::model::ProviderDiff {
            source: "BOSH Director (POST /deployments/m/diff?redact=true)".into(),
            lines: vec![
                line("name: m", None),
                line("releases: []", None),
                line("stemcells: []", None),
                line("update: {}", None),
                line("instance_groups:", None),
                line("- name: redis", None),
                line("  instances: 1", Some("removed")),
                line("  instances: 3", Some("added")),
                line("  azs: [z1]", None),
                line("  vm_type: small", None),
                line("  stemcell: default", None),
                line("  networks: []", None),
                line("  jobs: []", None),
                line("variables:", None),
                line("- name: pw", Some("added")),
            ],
            error: None,
        });
        insta::assert_snapshot!("update_provider_diff", text(&p));
        // Nothing the provider shows differs: said so, not printed whole.
        for l in &mut p.changes[0].provider_diff.as_mut().unwrap().lines {
            l.change = None;
        }
        assert!(text(&p)
            .contains("(no differences the provider shows; values it redacts are not compared)"));
    }

    #[test]
    fn replace_with_unknown_dependents() {
        let mut m = chain();
        m[0] = res("base", json!({"triggers": {"size": "large"}}), &[]);
        let p = run(m, &chain_state(), &PlanOptions::default());
        insta::assert_snapshot!("replace", text(&p));
    }

    #[test]
    fn delete_and_forget() {
        let mut st = chain_state();
        st.resources
            .get_mut("null_resource.side")
            .unwrap()
            .lifecycle
            .retain_on_delete = true;
        let m = chain()
            .into_iter()
            .filter(|r| r.address.name == "base")
            .collect();
        let p = run(m, &st, &PlanOptions::default());
        insta::assert_snapshot!("delete", text(&p));
    }

    #[test]
    fn sensitive_is_redacted() {
        let mut r = rec(json!({"inputs": {"user": "admin"}}), "i", &[]);
        r.sensitive.insert(
            "sensitive_inputs".into(),
            crate::state::fingerprint(&json!({"password": "hunter2"})),
        );
        let st = state(vec![("s", r)]);
        let m = vec![res(
            "s",
            json!({"inputs": {"user": "root"}, "sensitive_inputs": {"password": "hunter3"}}),
            &[],
        )];
        let t = text(&run(m, &st, &PlanOptions::default()));
        assert!(!t.contains("hunter"), "{t}");
        insta::assert_snapshot!("sensitive", t);
    }

    #[test]
    fn no_op() {
        let p = run(chain(), &chain_state(), &PlanOptions::default());
        insta::assert_snapshot!("no_op", text(&p));
    }

    #[test]
    fn colour_only_when_asked() {
        let p = run(chain(), &State::new(), &PlanOptions::default());
        assert!(!text(&p).contains('\x1b'));
        assert!(render_plan(&p, Style { color: true }).contains("\x1b[32m"));
    }
}
