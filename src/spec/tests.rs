//! Tests for spec loading: fixtures are inline YAML strings, errors are checked by their
//! rendered `file:line:column: path: message` form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

const GOOD: &str = "\
apiVersion: anvil/v1
kind: Resources
metadata: { name: demo }
resources:
  - type: null_resource
    name: base
    attributes: { triggers: { size: small } }
  - type: null_resource
    name: app
    depends_on: [null_resource.base]
    attributes: { triggers: { parent: \"${null_resource.base.id}\" } }
    lifecycle: { prevent_destroy: false, create_before_destroy: false, ignore_changes: [] }
";

fn opts() -> LoadOptions {
    LoadOptions::default()
}

fn load_text(text: &str) -> Result<Spec, SpecErrors> {
    load_str(Path::new("t.yaml"), text, &opts())
}

/// Loads `text` expecting failure; returns the rendered errors.
fn errs(text: &str) -> Vec<String> {
    errs_with(text, &opts())
}

fn errs_with(text: &str, o: &LoadOptions) -> Vec<String> {
    match load_str(Path::new("t.yaml"), text, o) {
        Ok(spec) => panic!("expected errors, loaded {:?}", spec.documents),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts exactly one error, starting with `prefix` and containing `needle`.
#[track_caller]
fn check_err(text: &str, prefix: &str, needle: &str) {
    let e = errs(text);
    assert_eq!(e.len(), 1, "errors: {e:#?}");
    assert!(
        e[0].starts_with(prefix),
        "error {:?} does not start with {prefix:?}",
        e[0]
    );
    assert!(e[0].contains(needle), "error {:?} lacks {needle:?}", e[0]);
}

fn resources(spec: &Spec, doc: usize) -> &ResourcesDoc {
    match &spec.documents[doc].body {
        DocumentBody::Resources(r) => r,
        other => panic!("document {doc} is not Resources: {other:?}"),
    }
}

#[test]
fn loads_the_design_example() {
    let spec = load_text(GOOD).unwrap();
    assert_eq!(spec.documents.len(), 1);
    assert_eq!(spec.workspace(), Some("demo"));
    let r = resources(&spec, 0);
    assert_eq!(r.resources.len(), 2);
    assert_eq!(r.resources[1].depends_on, vec!["null_resource.base"]);
    assert_eq!(
        r.resources[1].attributes["triggers"],
        json!({"parent": "${null_resource.base.id}"})
    );
    assert_eq!(r.resources[0].lifecycle, Lifecycle::default());
    assert!(spec.digest.starts_with("sha256:"));
    assert_eq!(spec.digest.len(), "sha256:".len() + 64);
}

#[test]
fn checked_in_schemas_are_fresh() {
    for kind in KINDS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("schemas/{}.schema.json", kind.to_ascii_lowercase()));
        let schema = schema_for_kind(kind).unwrap();
        let mut text = serde_json::to_string_pretty(&schema).unwrap();
        text.push('\n');
        if std::env::var_os("UPDATE_SCHEMAS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} is stale: run `UPDATE_SCHEMAS=1 cargo test --lib spec` and commit the result",
            path.display()
        );
    }
}

#[test]
fn reports_missing_apiversion_at_the_document_start() {
    check_err(
        "kind: Resources\nmetadata: {name: demo}\n",
        "t.yaml:1:1: missing field `apiVersion`",
        "expected `anvil/v1`",
    );
}

/// A document header for `Resources` with workspace `demo`, resources following.
const HEAD: &str = "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: demo}\nresources:\n";

fn with_vars(vars: &[(&str, serde_json::Value)], env: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        vars: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn attrs(text: &str, o: &LoadOptions) -> BTreeMap<String, serde_json::Value> {
    let spec = load_str(Path::new("t.yaml"), text, o).unwrap_or_else(|e| panic!("{e}"));
    resources(&spec, 0).resources[0].attributes.clone()
}

#[test]
fn loads_multi_document_files() {
    let text =
        format!("{HEAD}  - {{type: a, name: x}}\n---\n{HEAD}  - {{type: b, name: y}}\n---\n");
    let spec = load_text(&text).unwrap();
    assert_eq!(spec.documents.len(), 2);
    assert_eq!(spec.documents[0].index, 0);
    assert_eq!(spec.documents[1].index, 1);
    assert_eq!(resources(&spec, 1).resources[0].ty, "b");
    assert_eq!(spec.documents[1].name(), "demo");
    assert_eq!(spec.documents[1].kind(), "Resources");
    let loc = spec.documents[1].locate(&FieldPath::root().key("resources").index(0));
    assert_eq!((loc.line, loc.column), (11, 5));
    assert_eq!(loc.to_string(), "t.yaml:11:5");
}

#[test]
fn resources_default_to_empty() {
    let spec =
        load_text("apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: demo}\n").unwrap();
    assert!(resources(&spec, 0).resources.is_empty());
}

#[test]
fn empty_and_comment_only_files_have_no_documents() {
    for text in [
        "",
        "   \n\n",
        "# just a comment\n# another\n",
        "---\n",
        "---\n...\n",
    ] {
        check_err(
            text,
            "t.yaml:1:1: no documents: ",
            "expected at least one `apiVersion: anvil/v1` document",
        );
    }
}

#[test]
fn envelope_errors_are_located() {
    check_err(
        "kind: Resources\nmetadata: {name: demo}\n",
        "t.yaml:1:1: missing field `apiVersion`",
        "expected `anvil/v1`",
    );
    check_err(
        "metadata: {name: demo}\napiVersion: anvil/v2\nkind: Resources\n",
        "t.yaml:2:1: apiVersion: unsupported apiVersion `anvil/v2`",
        "expected `anvil/v1`",
    );
    check_err(
        "apiVersion: anvil/v1\nkind: Foo\n",
        "t.yaml:2:1: kind: unknown kind `Foo`: expected one of Resources",
        "",
    );
    check_err(
        "apiVersion: anvil/v1\nkind: resources\n",
        "t.yaml:2:1: kind: unknown kind `resources`",
        "did you mean `Resources`?",
    );
    check_err(
        "apiVersion: anvil/v1\nmetadata: {name: demo}\n",
        "t.yaml:1:1: missing field `kind`",
        "expected one of Resources",
    );
    check_err(
        "- a\n- b\n",
        "t.yaml:1:1: document is a sequence",
        "expected a mapping",
    );
    check_err("just text\n", "t.yaml:1:1: document is a string", "");
}

#[test]
fn unknown_field_points_at_the_key() {
    let text = format!("{HEAD}  - type: null_resource\n    name: a\n    bogus: 1\n");
    check_err(
        &text,
        "t.yaml:7:5: resources[0].bogus: unknown field `bogus`: expected one of ",
        "`type`",
    );
    check_err(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata:\n  name: demo\n  labels: {}\n",
        "t.yaml:5:3: metadata.labels: unknown field `labels`: expected one of `name`",
        "",
    );
    check_err(
        &format!("{HEAD}  - {{type: a, name: b, lifecycle: {{prevent_destory: true}}}}\n"),
        "t.yaml:5:36: resources[0].lifecycle.prevent_destory: unknown field `prevent_destory`",
        "`prevent_destroy`",
    );
    check_err(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: demo}\nresource: []\n",
        "t.yaml:4:1: resource: unknown field `resource`",
        "`resources`",
    );
}

#[test]
fn unknown_fields_suggest_the_nearest_allowed_one() {
    check_err(
        &format!("{HEAD}  - type: null_resource\n    name: a\n    atributes: {{}}\n"),
        "t.yaml:7:5: resources[0].atributes: unknown field `atributes`: did you mean \"attributes\"? (expected one of ",
        "`depends_on`",
    );
    check_err(
        &format!("{HEAD}  - {{type: a, name: b, lifecycle: {{prevent_destory: true}}}}\n"),
        "t.yaml:5:36: resources[0].lifecycle.prevent_destory: unknown field `prevent_destory`: did you mean \"prevent_destroy\"?",
        "",
    );
    check_err(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: demo}\nresources: []\nresoucres: []\n",
        "t.yaml:5:1: resoucres: unknown field `resoucres`: did you mean \"resources\"?",
        "",
    );
    // Nothing near: no guess, just the list.
    check_err(
        &format!("{HEAD}  - type: null_resource\n    name: a\n    zzz: 1\n"),
        "t.yaml:7:5: resources[0].zzz: unknown field `zzz`: expected one of ",
        "",
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    check_err(
        &format!("{HEAD}  - type: 3\n    name: a\n"),
        "t.yaml:5:5: resources[0].type: expected a string, found an integer",
        "",
    );
    check_err(
        &format!("{HEAD}  - type: a\n    name: {{x: 1}}\n"),
        "t.yaml:6:5: resources[0].name: expected a string, found a mapping",
        "",
    );
    check_err(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: demo}\nresources: {}\n",
        "t.yaml:4:1: resources: expected a sequence, found a mapping",
        "",
    );
    check_err(
        &format!("{HEAD}  - {{type: a, name: b, lifecycle: {{prevent_destroy: yes}}}}\n"),
        "t.yaml:5:36: resources[0].lifecycle.prevent_destroy: expected a boolean",
        "found a string",
    );
}

#[test]
fn patterns_explain_themselves() {
    check_err(
        &format!("{HEAD}  - type: null_resource\n    name: a b\n"),
        "t.yaml:6:5: resources[0].name: invalid name `a b`: must match ^[A-Za-z_][A-Za-z0-9_-]*$",
        "(letters, digits, `_`, `-`",
    );
    check_err(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: Demo}\n",
        "t.yaml:3:12: metadata.name: invalid name `Demo`",
        "lowercase letters",
    );
    check_err(
        &format!("{HEAD}  - {{type: Aws, name: a}}\n"),
        "t.yaml:5:6: resources[0].type: invalid type `Aws`",
        "starting with a letter",
    );
    check_err(
        &format!("{HEAD}  - {{type: a, name: b, depends_on: [nope]}}\n"),
        "t.yaml:5:37: resources[0].depends_on[0]: invalid depends_on entry `nope`",
        "TYPE.NAME",
    );
}

#[test]
fn missing_required_field_points_at_the_parent_mapping() {
    check_err(
        &format!("{HEAD}  - type: null_resource\n    attributes: {{}}\n"),
        "t.yaml:5:5: resources[0]: missing field `name`",
        "",
    );
    check_err(
        "apiVersion: anvil/v1\nkind: Resources\n",
        "t.yaml:1:1: missing field `metadata`",
        "",
    );
}

#[test]
fn collects_errors_across_documents_and_files() {
    let text = format!("{HEAD}  - {{type: a}}\n---\n{HEAD}  - {{name: b}}\n");
    let e = errs(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].starts_with("t.yaml:5:5: resources[0]: missing field `name`"));
    assert!(e[1].starts_with("t.yaml:11:5: resources[0]: missing field `type`"));
}

#[test]
fn errors_are_capped() {
    let mut text = String::from(HEAD);
    for i in 0..200 {
        text.push_str(&format!("  - {{type: a, name: n{i}, bad: 1}}\n"));
    }
    let e = errs(&text);
    assert_eq!(e.len(), MAX_ERRORS + 1);
    assert!(
        e[MAX_ERRORS].starts_with("too many errors"),
        "{}",
        e[MAX_ERRORS]
    );
}

#[test]
fn workspaces_must_match() {
    let text = format!(
        "{HEAD}  []\n---\napiVersion: anvil/v1\nkind: Resources\nmetadata: {{name: other}}\n"
    );
    check_err(
        &text,
        "t.yaml:9:12: metadata.name: workspace `other` differs from `demo` named at t.yaml:3:12",
        "all documents must share one metadata.name",
    );
}

#[test]
fn duplicate_keys_are_located() {
    check_err(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: demo}\nkind: Resources\n",
        "t.yaml:4:1: duplicate key `kind`: first defined at line 2, column 1",
        "",
    );
    check_err(
        &format!("{HEAD}  - {{type: a, name: b, type: c}}\n"),
        "t.yaml:5:24: duplicate key `type`",
        "line 5, column 6",
    );
}

#[test]
fn keys_must_be_strings() {
    check_err(
        "{[a]: 1}\n",
        "t.yaml:1:2: mapping key is a sequence",
        "keys must be strings",
    );
    check_err(
        "1: a\n",
        "t.yaml:1:1: mapping key `1` is an integer",
        "quote the key",
    );
    check_err(
        "true: a\n",
        "t.yaml:1:1: mapping key `true` is a boolean",
        "",
    );
    check_err("? \n: a\n", "t.yaml:", "mapping key is null");
}

#[test]
fn scalars_follow_the_core_schema() {
    let text = format!(
        "{HEAD}  - type: a\n    name: b\n    attributes:\n      \
         n: ~\n      n2: null\n      e:\n      t: true\n      f: False\n      \
         i: -12\n      h: 0x1F\n      o: 0o17\n      fl: 1.5e3\n      fl2: .5\n      \
         s: yes\n      q: \"true\"\n      q2: '12'\n      big: 18446744073709551615\n      \
         tagged: !!str 12\n      tagged2: !!int 7\n      bang: ! 12\n      v: 1.2.3\n"
    );
    let a = attrs(&text, &opts());
    assert_eq!(
        serde_json::Value::Object(a.into_iter().collect()),
        json!({
            "n": null, "n2": null, "e": null, "t": true, "f": false, "i": -12, "h": 31,
            "o": 15, "fl": 1500.0, "fl2": 0.5, "s": "yes", "q": "true", "q2": "12",
            "big": 18_446_744_073_709_551_615_u64, "tagged": "12", "tagged2": 7,
            "bang": "12", "v": "1.2.3"
        })
    );
}

#[test]
fn bad_scalars_and_tags_are_located() {
    check_err("x: .inf\n", "t.yaml:1:4: number `.inf` is not finite", "");
    check_err("x: -.Inf\n", "t.yaml:1:4: number `-.Inf` is not finite", "");
    check_err("x: .nan\n", "t.yaml:1:4: number `.nan` is not finite", "");
    check_err("x: 1e999\n", "t.yaml:1:4: number `1e999` is not finite", "");
    check_err(
        "x: 99999999999999999999999\n",
        "t.yaml:1:4: integer `99999999999999999999999` is out of range",
        "",
    );
    check_err(
        "x: !foo bar\n",
        "t.yaml:1:9: unsupported tag `!foo`",
        "!!str",
    );
    check_err(
        "x: !!binary aGk=\n",
        "t.yaml:1:13: unsupported tag `!!binary`",
        "",
    );
    check_err(
        "x: !!int abc\n",
        "t.yaml:1:10: `!!int` scalar `abc` is not an integer",
        "",
    );
    check_err("x: !!map [1]\n", "t.yaml:1:10: unsupported tag `!!map`", "");
}

#[test]
fn syntax_errors_are_located() {
    check_err(
        "x: [unclosed\n",
        "t.yaml:2:1: invalid YAML: ",
        "flow sequence",
    );
    check_err("a: b\n  c: d\n", "t.yaml:2:4: invalid YAML: ", "");
    check_err("x: *nope\n", "t.yaml:1:4: invalid YAML: ", "");
}

#[test]
fn env_and_var_substitution() {
    let o = with_vars(
        &[
            ("size", json!("large")),
            ("count", json!(3)),
            ("tags", json!({"a": [1, true]})),
        ],
        &[("HOME", "/home/me")],
    );
    let text = format!(
        "{HEAD}  - type: a\n    name: b\n    attributes:\n      \
         home: \"${{env:HOME}}/x\"\n      size: \"${{var.size}}\"\n      \
         count: \"${{var.count}}\"\n      label: \"n=${{var.count}} ${{var.size}}\"\n      \
         tags: \"${{var.tags}}\"\n      nested: [{{deep: \"${{var.count}}\"}}]\n      \
         inline: \"t=${{var.tags}}\"\n"
    );
    let a = attrs(&text, &o);
    assert_eq!(a["home"], json!("/home/me/x"));
    assert_eq!(a["size"], json!("large"));
    assert_eq!(a["count"], json!(3));
    assert_eq!(a["label"], json!("n=3 large"));
    assert_eq!(a["tags"], json!({"a": [1, true]}));
    assert_eq!(a["nested"], json!([{"deep": 3}]));
    assert_eq!(a["inline"], json!("t={\"a\":[1,true]}"));
}

#[test]
fn substitution_reaches_metadata_and_feeds_validation() {
    let o = with_vars(&[("ws", json!("prod")), ("n", json!(5))], &[]);
    let spec = load_str(
        Path::new("t.yaml"),
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: \"${var.ws}\"}\n",
        &o,
    )
    .unwrap();
    assert_eq!(spec.workspace(), Some("prod"));
    let e = errs_with(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: \"${var.n}\"}\n",
        &o,
    );
    assert_eq!(
        e,
        ["t.yaml:3:12: metadata.name: expected a string, found an integer"]
    );
}

#[test]
fn unset_variables_are_located_at_the_string() {
    let text = format!(
        "{HEAD}  - type: a\n    name: b\n    attributes:\n      x: \"${{env:NOPE}} ${{var.missing}}\"\n"
    );
    let e = errs(&text);
    assert_eq!(
        e,
        [
            "t.yaml:8:10: resources[0].attributes.x: environment variable `NOPE` is not set",
            "t.yaml:8:10: resources[0].attributes.x: variable `missing` is not set: pass --var missing=VALUE or --var-file",
        ]
    );
    check_err(
        &format!("{HEAD}  - {{type: a, name: b, attributes: {{x: \"${{env:}}\"}}}}\n"),
        "t.yaml:5:40: resources[0].attributes.x: invalid environment reference",
        "",
    );
}

#[test]
fn references_and_escapes_are_left_untouched() {
    let o = with_vars(&[("v", json!("ok"))], &[("E", "e")]);
    let text = format!(
        "{HEAD}  - type: a\n    name: b\n    attributes:\n      \
         r: \"${{null_resource.a.id}}\"\n      esc: \"$${{var.v}} and $${{env:E}}\"\n      \
         mix: \"${{var.v}}-${{null_resource.a.id}}-$${{x}}-${{env:E}}\"\n      \
         shell: \"echo ${{HOME}} ${{1}} ((bosh_var)) $5 $\"\n      open: \"${{var.v\"\n"
    );
    let a = attrs(&text, &o);
    assert_eq!(a["r"], json!("${null_resource.a.id}"));
    assert_eq!(a["esc"], json!("$${var.v} and $${env:E}"));
    assert_eq!(a["mix"], json!("ok-${null_resource.a.id}-$${x}-e"));
    assert_eq!(a["shell"], json!("echo ${HOME} ${1} ((bosh_var)) $5 $"));
    assert_eq!(a["open"], json!("${var.v"));
}

#[test]
fn substituted_values_cannot_become_references() {
    let o = with_vars(
        &[
            ("s", json!("${null_resource.x.id}")),
            ("m", json!({"k": "${a.b.c}"})),
        ],
        &[("E", "${evil}")],
    );
    let text = format!(
        "{HEAD}  - type: a\n    name: b\n    attributes:\n      \
         s: \"${{var.s}}\"\n      e: \"x${{env:E}}\"\n      m: \"${{var.m}}\"\n"
    );
    let a = attrs(&text, &o);
    assert_eq!(a["s"], json!("$${null_resource.x.id}"));
    assert_eq!(a["e"], json!("x$${evil}"));
    assert_eq!(a["m"], json!({"k": "$${a.b.c}"}));
}

#[test]
fn alias_bomb_fails_fast() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    let start = std::time::Instant::now();
    let e = errs(&text);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(e.len(), 1, "{e:#?}");
    // The fifth level is the first whose expansion crosses the budget.
    assert!(
        e[0].starts_with("t.yaml:5:45: aliases expand to more than 100000 nodes"),
        "{}",
        e[0]
    );
}

#[test]
fn recursive_aliases_are_refused() {
    check_err(
        "x: &a [*a]\n",
        "t.yaml:1:8: alias refers to an anchor that is not complete",
        "",
    );
}

#[test]
fn non_mapping_items_are_located() {
    check_err(
        &format!("{HEAD}  - 3\n"),
        "t.yaml:5:5: resources[0]: expected a mapping, found an integer",
        "",
    );
    check_err(
        &format!("{HEAD}  - {{type: a, name: b, attributes: null}}\n"),
        "t.yaml:5:24: resources[0].attributes: expected a mapping, found null",
        "",
    );
}

#[test]
fn small_aliases_are_copied() {
    let text = format!(
        "{HEAD}  - type: a\n    name: b\n    attributes:\n      base: &b {{x: 1, y: [2]}}\n      copy: *b\n"
    );
    let a = attrs(&text, &opts());
    assert_eq!(a["copy"], json!({"x": 1, "y": [2]}));
}

#[test]
fn deep_flow_nesting_is_an_error_not_a_crash() {
    // yaml-rust2's scanner looks ahead and stops at 256 flow levels before our builder
    // reaches 129, so the position is where the scanner gave up.
    let text = format!("x: {}\n", "[".repeat(100_000));
    check_err(&text, "t.yaml:1:259: nesting deeper than 128 levels", "");
    let text = format!("x: {}\n", "{a: ".repeat(100_000));
    check_err(&text, "t.yaml:1:512: nesting deeper than 128 levels", "");
}

#[test]
fn deep_block_nesting_is_an_error_not_a_crash() {
    let mut text = String::new();
    for depth in 0..2_000 {
        text.push_str(&" ".repeat(depth));
        text.push_str("a:\n");
    }
    check_err(&text, "t.yaml:129:", "nesting deeper than 128 levels");
    let text = format!("{}x\n", "- ".repeat(100_000));
    check_err(&text, "t.yaml:1:257: nesting deeper than 128 levels", "");
}

#[test]
fn nesting_at_the_limit_is_fine() {
    // The root mapping is level 1; 127 more sequences fit.
    let text = format!("x: {}1{}\n", "[".repeat(127), "]".repeat(127));
    let e = errs(&text);
    assert!(e[0].contains("missing field `apiVersion`"), "{e:?}");
    let text = format!("x: {}1{}\n", "[".repeat(128), "]".repeat(128));
    check_err(&text, "t.yaml:1:", "nesting deeper than 128 levels");
}

#[test]
fn aliases_cannot_smuggle_depth() {
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let text = format!(
        "a: &a {deep}\nb: {}*a{}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    check_err(&text, "t.yaml:2:", "nesting deeper than 128 levels");
}

#[test]
fn field_paths_display() {
    let p = FieldPath::root()
        .key("resources")
        .index(3)
        .key("attributes")
        .key("triggers")
        .key("parent");
    assert_eq!(p.to_string(), "resources[3].attributes.triggers.parent");
    assert_eq!(FieldPath::root().to_string(), "");
    assert_eq!(
        FieldPath::root().key("a.b").key("c").to_string(),
        "[\"a.b\"].c"
    );
    assert_eq!(p.parent().to_string(), "resources[3].attributes.triggers");
}

#[test]
fn spec_errors_display() {
    let e = SpecError::file("specs/x.yaml", "cannot read: permission denied");
    assert_eq!(
        e.to_string(),
        "specs/x.yaml: cannot read: permission denied"
    );
    let loc = Location {
        file: "a.yaml".into(),
        line: 4,
        column: 2,
    };
    let e = SpecError::at(loc.clone(), &FieldPath::root(), "bad");
    assert_eq!(e.to_string(), "a.yaml:4:2: bad");
    let e = SpecError::at(loc, &FieldPath::root().key("kind"), "bad");
    assert_eq!(e.to_string(), "a.yaml:4:2: kind: bad");
    let all = SpecErrors(vec![SpecError::bare("one"), SpecError::bare("two")]);
    assert_eq!(all.to_string(), "one\ntwo");
}

#[test]
fn document_locate_and_error_at() {
    let spec = load_text(GOOD).unwrap();
    let doc = &spec.documents[0];
    let p = FieldPath::root()
        .key("resources")
        .index(1)
        .key("attributes")
        .key("triggers")
        .key("parent");
    assert_eq!(doc.locate(&p).to_string(), "t.yaml:11:31");
    // Deepest existing node along a path that goes nowhere.
    let q = FieldPath::root()
        .key("resources")
        .index(1)
        .key("nope")
        .key("deeper");
    assert_eq!(doc.locate(&q).to_string(), "t.yaml:8:5");
    let r = FieldPath::root().key("resources").index(9);
    assert_eq!(doc.locate(&r).to_string(), "t.yaml:4:1");
    assert_eq!(doc.locate(&FieldPath::root()).to_string(), "t.yaml:1:1");
    let e = doc.error_at(
        &FieldPath::root()
            .key("resources")
            .index(1)
            .key("depends_on")
            .index(0),
        "unknown",
    );
    assert_eq!(
        e.to_string(),
        "t.yaml:10:18: resources[1].depends_on[0]: unknown"
    );
}

#[test]
fn loads_directories_sorted_and_recursively() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("b/nested")).unwrap();
    std::fs::create_dir_all(root.join(".github")).unwrap();
    let doc = |name: &str| {
        format!("apiVersion: anvil/v1\nkind: Resources\nmetadata: {{name: demo}}\nresources: [{{type: t, name: {name}}}]\n")
    };
    std::fs::write(root.join("z.yml"), doc("z")).unwrap();
    std::fs::write(root.join("a.yaml"), doc("a")).unwrap();
    std::fs::write(root.join("b/nested/m.yaml"), doc("m")).unwrap();
    std::fs::write(root.join("b/readme.md"), "not yaml").unwrap();
    std::fs::write(root.join(".github/ci.yml"), "on: push\n").unwrap();
    let spec = load(&[root.to_path_buf()], &opts()).unwrap();
    let names: Vec<&str> = spec
        .documents
        .iter()
        .map(|d| match &d.body {
            DocumentBody::Resources(r) => r.resources[0].name.as_str(),
            DocumentBody::Foundation(_) => "foundation",
            DocumentBody::Environment(_) => "environment",
        })
        .collect();
    assert_eq!(names, ["a", "m", "z"]);
    assert_eq!(
        spec.files,
        [
            root.join("a.yaml"),
            root.join("b/nested/m.yaml"),
            root.join("z.yml")
        ]
    );
    // Same files, same digest; a changed byte changes it.
    let again = load(&[root.to_path_buf()], &opts()).unwrap();
    assert_eq!(spec.digest, again.digest);
    std::fs::write(root.join("z.yml"), doc("y")).unwrap();
    let changed = load(&[root.to_path_buf()], &opts()).unwrap();
    assert_ne!(spec.digest, changed.digest);
    // A file named as well as its directory is loaded once.
    let both = load(&[root.join("a.yaml"), root.to_path_buf()], &opts()).unwrap();
    assert_eq!(both.files.len(), 3);
}

const PIPELINE: &str =
    "resources:\n  - name: repo\n    type: git\njobs:\n  - name: test\n    plan: [{get: repo}]\n";
const BOSH_MANIFEST: &str = "name: redis\nreleases: [{name: redis, version: latest}]\ninstance_groups:\n  - name: redis\n    instances: 1\n";
const K8S: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: apps/v1\nkind: Deployment\n";

#[test]
fn directory_scan_skips_yaml_that_is_not_for_anvil() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("ci")).unwrap();
    std::fs::write(root.join("main.yaml"), GOOD).unwrap();
    std::fs::write(root.join("ci/pipeline.yml"), PIPELINE).unwrap();
    std::fs::write(root.join("redis.yml"), BOSH_MANIFEST).unwrap();
    std::fs::write(root.join("k8s.yaml"), K8S).unwrap();
    std::fs::write(
        root.join("docker-compose.yml"),
        "services:\n  db: {image: postgres}\n",
    )
    .unwrap();
    std::fs::write(root.join("empty.yaml"), "# nothing\n").unwrap();
    // Not YAML at all (a Helm template) and no `anvil/` in it: not ours either.
    std::fs::write(root.join("helm.yaml"), "{{- if .Values.x }}\nkind: [\n").unwrap();
    let spec = load(&[root.to_path_buf()], &opts()).unwrap();
    assert_eq!(spec.files, [root.join("main.yaml")]);
    assert_eq!(
        spec.skipped,
        [
            root.join("ci/pipeline.yml"),
            root.join("docker-compose.yml"),
            root.join("empty.yaml"),
            root.join("helm.yaml"),
            root.join("k8s.yaml"),
            root.join("redis.yml"),
        ]
    );
    assert_eq!(spec.documents.len(), 1);
    // Skipped files are not part of the spec: changing one leaves the digest alone.
    std::fs::write(root.join("redis.yml"), "name: other\n").unwrap();
    let again = load(&[root.to_path_buf()], &opts()).unwrap();
    assert_eq!(spec.digest, again.digest);
    // ... and the digest is the one of the spec file alone, as before skipping existed.
    let alone = load(&[root.join("main.yaml")], &opts()).unwrap();
    assert_eq!(alone.digest, spec.digest);
    assert!(alone.skipped.is_empty());
}

#[test]
fn files_meant_for_anvil_are_still_checked_in_a_directory_scan() {
    let cases: [(&str, &str); 4] = [
        // An anvil kind with a wrong apiVersion.
        (
            "apiVersion: v1\nkind: Resources\nmetadata: {name: demo}\n",
            "x.yaml:1:1: apiVersion: unsupported apiVersion `v1`",
        ),
        // An anvil kind in the wrong case, without apiVersion.
        (
            "kind: resources\nmetadata: {name: demo}\n",
            "x.yaml:1:1: missing field `apiVersion`",
        ),
        // An anvil apiVersion with an unknown kind.
        (
            "apiVersion: anvil/v1\nkind: Deployment\n",
            "x.yaml:2:1: kind: unknown kind `Deployment`",
        ),
        // Broken YAML that mentions anvil.
        (
            "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: [\n",
            "x.yaml:4:",
        ),
    ];
    for (text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("x.yaml"), text).unwrap();
        let e = load(&[dir.path().to_path_buf()], &opts()).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains(&format!("{}", dir.path().join(want).display())),
            "{text:?}: {shown}"
        );
    }
}

#[test]
fn a_foreign_file_named_explicitly_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("redis.yml");
    std::fs::write(&manifest, BOSH_MANIFEST).unwrap();
    std::fs::write(dir.path().join("main.yaml"), GOOD).unwrap();
    let want = format!("{}:1:1: missing field `apiVersion`", manifest.display());
    let e = load(std::slice::from_ref(&manifest), &opts()).unwrap_err();
    assert_eq!(
        e.0.len(),
        1,
        "one error for the file, not one per missing field: {e}"
    );
    let e = e.to_string();
    assert!(e.starts_with(&want), "{e}");
    assert!(
        e.contains("not an anvil spec (a CI pipeline or a BOSH manifest?)"),
        "{e}"
    );
    // Also when the directory holding it is named first.
    let e = load(&[dir.path().to_path_buf(), manifest.clone()], &opts())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&want), "{e}");
}

#[test]
fn directory_with_only_foreign_yaml_is_an_error_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yml"), PIPELINE).unwrap();
    std::fs::write(dir.path().join("redis.yml"), BOSH_MANIFEST).unwrap();
    let e = load(&[dir.path().to_path_buf()], &opts()).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}: directory has no spec files: 2 YAML file(s) below it were skipped",
            dir.path().display()
        )),
        "{shown}"
    );
    assert!(shown.contains("--verbose"), "{shown}");
}

#[test]
fn directory_without_spec_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hi").unwrap();
    let e = load(&[dir.path().to_path_buf()], &opts()).unwrap_err();
    assert_eq!(e.0.len(), 1);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}: directory has no spec files",
            dir.path().display()
        )),
        "{shown}"
    );
}

#[test]
fn unreadable_and_binary_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let binary = dir.path().join("bin.yaml");
    std::fs::write(&binary, b"apiVersion: anvil/v1\nkind: \xff\xfe\x00garbage").unwrap();
    let nul = dir.path().join("nul.yaml");
    std::fs::write(&nul, b"a: b\nc: \x00\x01").unwrap();
    let e = load(&[missing.clone(), binary.clone(), nul.clone()], &opts()).unwrap_err();
    let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            format!("{}: cannot read: no such file or directory", missing.display()),
            format!("{}:2:7: invalid UTF-8: expected a UTF-8 text file (is this a binary file?)", binary.display()),
            format!("{}:2:4: file contains a NUL byte: expected UTF-8 YAML text (is this a binary file?)", nul.display()),
        ]
    );
}

#[test]
fn errors_from_several_files_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "kind: Resources\n").unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "apiVersion: anvil/v1\nkind: Nope\n",
    )
    .unwrap();
    let e = load(&[dir.path().to_path_buf()], &opts()).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    assert_eq!(
        e.0[0].file.as_deref(),
        Some(dir.path().join("a.yaml").as_path())
    );
    assert_eq!(e.0[1].location.as_ref().map(|l| l.line), Some(2));
}

#[test]
fn var_files_and_var_args() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("vars.yaml");
    std::fs::write(&yaml, "size: large\ncount: 3\ntags: {a: [1]}\n").unwrap();
    let vars = load_var_file(&yaml).unwrap();
    assert_eq!(vars["size"], json!("large"));
    assert_eq!(vars["count"], json!(3));
    assert_eq!(vars["tags"], json!({"a": [1]}));
    let jsonf = dir.path().join("vars.json");
    std::fs::write(&jsonf, "{\"x\": [1, 2.5, null], \"y\": \"z\"}").unwrap();
    let vars = load_var_file(&jsonf).unwrap();
    assert_eq!(vars["x"], json!([1, 2.5, null]));
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing\n").unwrap();
    assert!(load_var_file(&empty).unwrap().is_empty());
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "- a\n").unwrap();
    let e = load_var_file(&bad).unwrap_err().to_string();
    assert!(
        e.ends_with(
            "bad.yaml:1:1: variables file is a sequence: expected a mapping of NAME: VALUE"
        ),
        "{e}"
    );
    std::fs::write(&bad, "ok: 1\n\"bad name\": 2\n").unwrap();
    let e = load_var_file(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad.yaml:2:1: bad name: invalid variable name `bad name`")
            || e.contains(":2:1: [\"bad name\"]: invalid variable name"),
        "{e}"
    );
    let e = load_var_file(&dir.path().join("nope.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("nope.yaml: cannot read: no such file or directory"),
        "{e}"
    );

    assert_eq!(
        parse_var_arg("a=b=c").unwrap(),
        ("a".to_owned(), json!("b=c"))
    );
    assert_eq!(parse_var_arg("a=").unwrap(), ("a".to_owned(), json!("")));
    assert_eq!(
        parse_var_arg("novalue").unwrap_err().to_string(),
        "invalid --var `novalue`: expected NAME=VALUE"
    );
    assert!(parse_var_arg("1x=2")
        .unwrap_err()
        .to_string()
        .contains("variable name `1x`"));
}

#[test]
fn schema_for_kind_is_case_insensitive() {
    let s = schema_for_kind("resources").unwrap();
    assert_eq!(s, schema_for_kind("Resources").unwrap());
    assert!(s["$id"]
        .as_str()
        .unwrap()
        .ends_with("resources.schema.json"));
    assert_eq!(s["title"], json!("anvil Resources"));
    assert!(s["description"].is_string());
    assert!(schema_for_kind("Nope").is_none());
    assert_eq!(KINDS, ["Resources", "Foundation", "Environment"]);
}

#[test]
fn typed_round_trip_matches_schema() {
    // A document that passes the schema must deserialize; serialising it back must pass too.
    let spec = load_text(GOOD).unwrap();
    let back = serde_json::to_value(resources(&spec, 0)).unwrap();
    let text = serde_json::to_string(&back).unwrap();
    let again = load_text(&text).unwrap();
    assert_eq!(resources(&again, 0), resources(&spec, 0));
}

#[test]
fn crlf_and_bom_are_accepted() {
    let text = format!("\u{feff}{}", GOOD.replace('\n', "\r\n"));
    let spec = load_text(&text).unwrap();
    assert_eq!(spec.workspace(), Some("demo"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("x.yaml");
            std::fs::write(&file, &bytes).unwrap();
            let _ = load(std::slice::from_ref(&file), &LoadOptions::default());
            let _ = load_var_file(&file);
        }

        #[test]
        fn yamlish_text_never_panics(text in "[-:{}\\[\\],&*!|>'\"#?%@ \n\ta-z0-9$.~]{0,300}") {
            let _ = load_str(Path::new("x.yaml"), &text, &LoadOptions::default());
            let header = format!("{HEAD}{text}");
            let _ = load_str(Path::new("x.yaml"), &header, &LoadOptions::default());
        }
    }
}

#[test]
fn every_spec_module_has_a_doc_comment() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/spec");
    let mut seen: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} lacks a `//!` module doc",
            path.display()
        );
        seen.push(path);
    }
    assert!(seen.len() >= 6);
}
