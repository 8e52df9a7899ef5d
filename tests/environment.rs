//! The example Environment through the real binary with the aws provider's schemas
//! (issue 10): it validates, `anvil schema environment` prints its schema, `plan` shows
//! the whole graph (text snapshot), and size changes plan as AWS allows — medium → large
//! scales the node group in place, small → large replaces it naming `instance_types` and
//! `disk_size`, and updates the database in place. Plans run with `--refresh=false`
//! over a state written here from the model (every resource recorded as applied, with
//! made-up ids), so no AWS endpoint is needed.

mod common;
use common::*;

use anvil::model::{self, Lookup, PValue};
use anvil::providers::Registry;
use anvil::spec::{load_str, LoadOptions};
use anvil::state::{ResourceState, State};
use std::collections::BTreeMap;
use std::path::Path;

const EXAMPLE: &str = include_str!("../examples/environment/environment.yaml");

fn sized(size: &str) -> String {
    EXAMPLE.replace("size: medium", &format!("size: {size}"))
}

/// A state recording every resource of `spec` as applied: attributes resolved, each
/// output of its type made up from the address (`id` of `aws_vpc.demo` is
/// `id-aws_vpc.demo`).
fn applied_state(spec: &str) -> State {
    let spec = load_str(Path::new("env.yaml"), spec, &LoadOptions::default()).unwrap();
    let registry = Registry::builtin();
    let m = model::build(&spec, registry.schemas()).unwrap_or_else(|e| panic!("{e}"));
    let mut state = State::new();
    state.serial = 1;
    for r in m.topo_order() {
        let schema = &registry.schemas()[&r.address.ty];
        let lookup = |rf: &model::Reference| -> Lookup {
            let Some(rec) = state.resources.get(&rf.target.to_string()) else {
                return Lookup::Missing("not recorded".into());
            };
            let attr = &rf.attr[0];
            match rec.outputs.get(attr).or_else(|| rec.attributes.get(attr)) {
                Some(v) => Lookup::Known(v.clone()),
                None => Lookup::Missing(format!("no {attr}")),
            }
        };
        let mut attributes = BTreeMap::new();
        for (k, e) in &r.attributes {
            match e.resolve(&lookup).unwrap() {
                PValue::Known(v) => {
                    attributes.insert(k.clone(), v);
                }
                other => panic!("{}.{k} unresolved: {other:?}", r.address),
            }
        }
        let outputs = schema
            .outputs
            .keys()
            .map(|o| (o.clone(), serde_json::json!(format!("{o}-{}", r.address))))
            .collect();
        let now = chrono::Utc::now();
        state.resources.insert(
            r.address.to_string(),
            ResourceState {
                ty: r.address.ty.clone(),
                provider: r.provider.clone(),
                attributes,
                sensitive: BTreeMap::new(),
                outputs,
                dependencies: r.dependencies.iter().map(ToString::to_string).collect(),
                lifecycle: Default::default(),
                created_at: now,
                updated_at: now,
            },
        );
    }
    state
}

fn scratch_with_state(applied: &str) -> Scratch {
    let s = Scratch::new();
    let state = applied_state(applied);
    s.write(
        "state/demo.json",
        &serde_json::to_string_pretty(&state).unwrap(),
    );
    s
}

#[test]
fn the_example_validates_and_plans_the_whole_graph() {
    let s = Scratch::new();
    s.copy_example("environment", "env");
    let o = s.run(&["validate", "env"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("34 resource(s) in workspace `demo`"),
        "{}",
        stdout(&o)
    );

    let o = s.run(&["schema", "environment"]);
    assert_code(&o, 0);
    let schema: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(schema["title"], "anvil Environment");

    let o = s.run(&["plan", "--refresh=false", "env"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    insta::assert_snapshot!("example_plan", text);
    assert!(
        text.contains("34 to add, 0 to change, 0 to destroy"),
        "{text}"
    );
    assert!(!s.path().join("state").exists(), "plan wrote state");
}

#[test]
fn an_applied_environment_plans_no_changes() {
    let s = scratch_with_state(EXAMPLE);
    s.write("env/environment.yaml", EXAMPLE);
    let o = s.run(&["plan", "--refresh=false", "--detailed-exitcode", "env"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("No changes"), "{}", stdout(&o));
}

#[test]
fn medium_to_large_scales_the_node_group_in_place() {
    let s = scratch_with_state(&sized("medium"));
    s.write("env/environment.yaml", &sized("large"));
    let o = s.run(&["plan", "--refresh=false", "env"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    for want in [
        "aws_eks_node_group.demo-default will be updated in place",
        "desired_size = 3 -> 6",
        "aws_db_instance.demo will be updated in place",
        "\"db.m5.large\" -> \"db.r5.xlarge\"",
        "0 to add, 2 to change, 0 to destroy",
    ] {
        assert!(text.contains(want), "plan lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("must be replaced"), "{text}");
}

#[test]
fn small_to_large_replaces_the_node_group_naming_why() {
    let s = scratch_with_state(&sized("small"));
    s.write("env/environment.yaml", &sized("large"));
    let o = s.run(&["plan", "--refresh=false", "env"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    for want in [
        "aws_eks_node_group.demo-default must be replaced",
        "`instance_types` changed, which forces replacement",
        "`disk_size` changed, which forces replacement",
        "aws_db_instance.demo will be updated in place",
        // The profile's DB class; storage and backups come from the spec.
        "\"db.t3.medium\" -> \"db.r5.xlarge\"",
        "(`instance_class`, `multi_az` changed)",
        // Large has a NAT gateway per zone: two more, and the private routes move.
        "aws_nat_gateway.demo-b will be created",
        "aws_eip.demo-nat-c will be created",
        "aws_route_table.demo-private-b will be updated in place",
    ] {
        assert!(text.contains(want), "plan lacks {want:?}:\n{text}");
    }
}
