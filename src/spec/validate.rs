//! JSON Schema validation of one document, with errors mapped back to the located tree.
//!
//! The validator is built once per kind from the schemars schema. `jsonschema` reports
//! JSON pointers and terse messages; this module turns each into a [`FieldPath`], a
//! position (the key itself for mapping entries) and a message that says what to do.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, Validator};

use super::error::{FieldPath, Seg};
use super::types::schema_for_kind;
use super::yaml::{Node, Pos, Value};

/// A schema violation at a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub path: FieldPath,
    pub pos: Pos,
    pub message: String,
}

struct Compiled {
    schema: serde_json::Value,
    validator: Validator,
}

fn compiled(kind: &str) -> Result<&'static Compiled, String> {
    static RESOURCES: OnceLock<Result<Compiled, String>> = OnceLock::new();
    static FOUNDATION: OnceLock<Result<Compiled, String>> = OnceLock::new();
    static ENVIRONMENT: OnceLock<Result<Compiled, String>> = OnceLock::new();
    let cell = match kind {
        "Resources" => &RESOURCES,
        "Foundation" => &FOUNDATION,
        "Environment" => &ENVIRONMENT,
        other => return Err(format!("no schema for kind `{other}`")),
    };
    cell.get_or_init(|| {
        let schema = schema_for_kind(kind).ok_or_else(|| format!("no schema for kind `{kind}`"))?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("internal error: the `{kind}` schema does not compile: {e}"))?;
        Ok(Compiled { schema, validator })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Validates `root` (already converted to `instance`) against the schema of `kind`.
///
/// # Errors
///
/// Returns a message when the schema itself cannot be built, which is a bug.
pub(crate) fn validate(
    kind: &str,
    root: &Node,
    instance: &serde_json::Value,
) -> Result<Vec<Violation>, String> {
    let compiled = compiled(kind)?;
    let mut out = Vec::new();
    // Nobody reads more than a screenful; a huge bad document must not cost a huge list.
    for error in compiled
        .validator
        .iter_errors(instance)
        .take(super::MAX_ERRORS + 1)
    {
        let base = pointer_to_path(root, error.instance_path.as_str());
        match &error.kind {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let fields = expected_fields(&compiled.schema, &base);
                let expected = if fields.is_empty() {
                    "the fields in the schema".to_owned()
                } else {
                    fields
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                for key in unexpected {
                    let path = base.key(key.as_str());
                    let message = match super::did_you_mean(key, fields.iter().map(String::as_str)) {
                        Some(near) => format!(
                            "unknown field `{key}`: did you mean \"{near}\"? (expected one of {expected})"
                        ),
                        None => format!("unknown field `{key}`: expected one of {expected}"),
                    };
                    out.push(Violation {
                        pos: locate(root, &path),
                        message,
                        path,
                    });
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_owned);
                out.push(Violation {
                    pos: locate(root, &base),
                    message: format!("missing field `{name}`"),
                    path: base,
                });
            }
            ValidationErrorKind::Type { kind } => {
                let found = node_at(root, &base).map_or("nothing", |n| n.value.kind_name());
                out.push(Violation {
                    pos: locate(root, &base),
                    message: format!("expected {}, found {found}", type_names(kind)),
                    path: base,
                });
            }
            ValidationErrorKind::Pattern { pattern } => {
                let what = match base.0.last() {
                    Some(Seg::Key(k)) => k.clone(),
                    Some(Seg::Index(_)) => match base.0.iter().rev().nth(1) {
                        Some(Seg::Key(k)) => format!("{k} entry"),
                        _ => "value".to_owned(),
                    },
                    None => "value".to_owned(),
                };
                let shown = error
                    .instance
                    .as_str()
                    .map_or_else(|| error.instance.to_string(), str::to_owned);
                out.push(Violation {
                    pos: locate(root, &base),
                    message: format!(
                        "invalid {what} `{shown}`: must match {pattern} ({})",
                        pattern_hint(pattern)
                    ),
                    path: base,
                });
            }
            ValidationErrorKind::Enum { options } => {
                let list = options
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|o| format!("`{}`", display_json(o)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_else(|| options.to_string());
                out.push(Violation {
                    pos: locate(root, &base),
                    message: format!(
                        "invalid value `{}`: expected one of {list}",
                        display_json(&error.instance)
                    ),
                    path: base,
                });
            }
            ValidationErrorKind::Constant { expected_value } => {
                out.push(Violation {
                    pos: locate(root, &base),
                    message: format!(
                        "invalid value `{}`: expected `{}`",
                        display_json(&error.instance),
                        display_json(expected_value)
                    ),
                    path: base,
                });
            }
            _ => out.push(Violation {
                pos: locate(root, &base),
                message: error.to_string(),
                path: base,
            }),
        }
    }
    Ok(out)
}

fn display_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn type_name(t: JsonType) -> &'static str {
    match t {
        JsonType::Array => "a sequence",
        JsonType::Boolean => "a boolean (true or false)",
        JsonType::Integer => "an integer",
        JsonType::Null => "null",
        JsonType::Number => "a number",
        JsonType::Object => "a mapping",
        JsonType::String => "a string",
    }
}

fn type_names(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => type_name(*t).to_owned(),
        TypeKind::Multiple(set) => set.iter().map(type_name).collect::<Vec<_>>().join(" or "),
    }
}

/// Says in words what each pattern in the schemas allows.
fn pattern_hint(pattern: &str) -> &'static str {
    match pattern {
        r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" => {
            "lowercase letters, digits and `-`, at most 63 characters, starting and ending with a letter or digit"
        }
        r"^[a-z][a-z0-9_]*$" => "lowercase letters, digits and `_`, starting with a letter",
        r"^[A-Za-z_][A-Za-z0-9_-]*$" => {
            "letters, digits, `_`, `-`, not starting with a digit or `-`"
        }
        r"^[a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_-]*$" => "a resource address TYPE.NAME",
        r"^[0-9]{12}$" => "an AWS account id: 12 digits",
        r"^[0-9]+\.[0-9]+$" => "a version MAJOR.MINOR, e.g. 1.31",
        r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$" => {
            "a lowercase letter first, then lowercase letters, digits and `-`, at most 32 characters, not ending with `-`"
        }
        _ => "see the schema",
    }
}

/// Turns a JSON pointer into a path, using the tree to tell indexes from keys.
fn pointer_to_path(root: &Node, pointer: &str) -> FieldPath {
    let mut path = FieldPath::root();
    let mut node = Some(root);
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let seg = match (node.map(|n| &n.value), token.parse::<usize>()) {
            (Some(Value::Seq(_)), Ok(i)) => Seg::Index(i),
            _ => Seg::Key(token),
        };
        node = node.and_then(|n| child(n, &seg));
        path.0.push(seg);
    }
    path
}

fn child<'a>(node: &'a Node, seg: &Seg) -> Option<&'a Node> {
    match (seg, &node.value) {
        (Seg::Key(k), Value::Map(_)) => node.get(k).map(|e| &e.value),
        (Seg::Index(i), Value::Seq(items)) => items.get(*i),
        _ => None,
    }
}

/// The node at `path`, if it exists.
pub(crate) fn node_at<'a>(root: &'a Node, path: &FieldPath) -> Option<&'a Node> {
    let mut node = root;
    for seg in &path.0 {
        node = child(node, seg)?;
    }
    Some(node)
}

/// The position of the deepest node that exists along `path`; for a mapping entry, the
/// position of its key.
pub(crate) fn locate(root: &Node, path: &FieldPath) -> Pos {
    let mut node = root;
    let mut pos = root.pos;
    for seg in &path.0 {
        match (seg, &node.value) {
            (Seg::Key(k), Value::Map(_)) => match node.get(k) {
                Some(entry) => {
                    pos = entry.key_pos;
                    node = &entry.value;
                }
                None => break,
            },
            (Seg::Index(i), Value::Seq(items)) => match items.get(*i) {
                Some(item) => {
                    pos = item.pos;
                    node = item;
                }
                None => break,
            },
            _ => break,
        }
    }
    pos
}

/// The fields the schema allows for the object at `path` (empty when the schema does not
/// say).
fn expected_fields(schema: &serde_json::Value, path: &FieldPath) -> Vec<String> {
    let mut current = Some(schema);
    for seg in &path.0 {
        current = current.map(|s| deref(schema, s)).and_then(|s| match seg {
            Seg::Key(k) => s.get("properties").and_then(|p| p.get(k)),
            Seg::Index(_) => s.get("items"),
        });
    }
    current
        .map(|s| deref(schema, s))
        .and_then(|s| s.get("properties"))
        .and_then(serde_json::Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Follows local `$ref`s (`#/$defs/...`); gives up after a few hops.
fn deref<'a>(root: &'a serde_json::Value, mut s: &'a serde_json::Value) -> &'a serde_json::Value {
    for _ in 0..8 {
        let Some(target) = s
            .get("$ref")
            .and_then(serde_json::Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|p| root.pointer(p))
        else {
            break;
        };
        s = target;
    }
    s
}
