//! Tests for `model::build`'s located errors that offer the nearest name: unknown
//! resource types and attributes, references to undeclared addresses or unknown
//! attributes. Schemas are fabricated here so the model is tested without providers.

use std::path::Path;

use super::*;
use crate::spec::{load_str, LoadOptions};

const HEAD: &str = "apiVersion: anvil/v1\nkind: Resources\nmetadata: { name: demo }\nresources:\n";

fn schemas() -> Schemas {
    let null = ResourceSchema {
        ty: "null_resource".into(),
        provider: "null".into(),
        attributes: BTreeMap::from([
            ("triggers".to_string(), AttrSchema::new(AttrKind::Map, "t")),
            ("inputs".to_string(), AttrSchema::new(AttrKind::Map, "i")),
        ]),
        outputs: BTreeMap::from([("id".to_string(), "the id")]),
    };
    let secret = ResourceSchema {
        ty: "vault_secret".into(),
        provider: "vault".into(),
        attributes: BTreeMap::from([("path".to_string(), AttrSchema::new(AttrKind::String, "p"))]),
        outputs: BTreeMap::new(),
    };
    BTreeMap::from([
        ("null_resource".to_string(), null),
        ("vault_secret".to_string(), secret),
    ])
}

/// Builds `resources` (appended to a Resources header) and returns the rendered errors.
fn errors(resources: &str) -> Vec<String> {
    let text = format!("{HEAD}{resources}");
    let spec = load_str(Path::new("t.yaml"), &text, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("spec should load: {e}"));
    match build(&spec, &schemas()) {
        Ok(m) => panic!("expected errors, built {} resources", m.len()),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[track_caller]
fn one_error(resources: &str) -> String {
    let e = errors(resources);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap_or_default()
}

#[test]
fn unknown_type_suggests_the_nearest_type() {
    let e = one_error("  - { type: nul_resource, name: a }\n");
    assert!(
        e.starts_with("t.yaml:5:7: resources[0].type: unknown resource type `nul_resource`: did you mean \"null_resource\"? expected one of null_resource, vault_secret"),
        "{e}"
    );
}

#[test]
fn unknown_attribute_suggests_the_nearest_attribute() {
    let e = one_error("  - type: null_resource\n    name: a\n    attributes: { trigers: {} }\n");
    assert!(
        e.starts_with("t.yaml:7:19: resources[0].attributes.trigers: unknown attribute `trigers` for null_resource: did you mean \"triggers\"? expected one of inputs, triggers"),
        "{e}"
    );
    let e = one_error(
        "  - type: null_resource\n    name: a\n    lifecycle: { ignore_changes: [trigger] }\n",
    );
    assert!(e.contains("unknown attribute `trigger` for null_resource: did you mean \"triggers\"? name an attribute, or `all`"), "{e}");
}

#[test]
fn dangling_reference_suggests_the_nearest_declared_address() {
    let base = "  - { type: null_resource, name: base }\n  - { type: vault_secret, name: app }\n";
    let e = one_error(&format!(
        "{base}  - type: null_resource\n    name: b\n    attributes: {{ triggers: {{ p: \"${{null_resource.bsae.id}}\" }} }}\n"
    ));
    assert!(
        e.starts_with("t.yaml:9:19: resources[2].attributes.triggers: null_resource.bsae is not declared (did you mean \"null_resource.base\"?): declare it, or fix the address"),
        "{e}"
    );
    // A misspelt type: the nearest type that is declared, with the same name.
    let e = one_error(&format!(
        "{base}  - {{ type: null_resource, name: b, depends_on: [null_resourse.base] }}\n"
    ));
    assert!(
        e.contains("resources[2].depends_on[0]: null_resourse.base is not declared (did you mean \"null_resource.base\"?)"),
        "{e}"
    );
    // Nothing near: no guess, even though the type matches.
    let e = one_error(&format!(
        "{base}  - {{ type: null_resource, name: b, depends_on: [null_resource.ghost] }}\n"
    ));
    assert!(
        e.contains("null_resource.ghost is not declared: declare it"),
        "{e}"
    );
}

#[test]
fn reference_to_an_unknown_attribute_suggests_the_nearest() {
    let e = one_error(
        "  - { type: null_resource, name: a }\n  - type: null_resource\n    name: b\n    attributes: { triggers: { p: \"${null_resource.a.idd}\" } }\n",
    );
    assert!(
        e.contains("${null_resource.a.idd}: null_resource has no attribute `idd`: did you mean \"id\"? expected one of id, inputs, triggers"),
        "{e}"
    );
}

#[test]
fn nearest_address_prefers_the_same_type() {
    let declared = [
        Address::new("null_resource", "base"),
        Address::new("vault_secret", "bsae"),
    ];
    assert_eq!(
        nearest_address(&Address::new("null_resource", "bsae"), declared.iter()),
        Some("null_resource.base".to_string())
    );
    assert_eq!(
        nearest_address(&Address::new("vault_secrt", "bsae"), declared.iter()),
        Some("vault_secret.bsae".to_string())
    );
    assert_eq!(
        nearest_address(&Address::new("aws_vpc", "main"), declared.iter()),
        None
    );
}
