//! `${env:NAME}` and `${var.NAME}` substitution in the strings of a located tree.
//!
//! Only these two forms are substituted. `$${` (a literal `${`) and every other `${...}`,
//! such as the resource reference `${null_resource.a.id}`, are left exactly as written:
//! the model resolves references and unescapes `$${` later. A substituted value that
//! itself contains `${` is escaped to `$${` so it cannot turn into a reference.

use std::collections::BTreeMap;

use super::error::FieldPath;
use super::yaml::{Entry, Node, Pos, Value, MAX_DEPTH};

/// A substitution problem: where, at which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubstError {
    pub pos: Pos,
    pub path: FieldPath,
    pub message: String,
}

/// Where values come from.
pub(crate) struct Sources<'a> {
    pub vars: &'a BTreeMap<String, serde_json::Value>,
    pub env: &'a BTreeMap<String, String>,
}

/// Substitutes in every string value of the tree (mapping keys are left alone).
pub(crate) fn substitute(root: &mut Node, sources: &Sources<'_>) -> Vec<SubstError> {
    let mut errors = Vec::new();
    walk(root, &FieldPath::root(), 0, sources, &mut errors);
    errors
}

/// Recursion is bounded: trees are at most [`MAX_DEPTH`] deep.
fn walk(
    node: &mut Node,
    path: &FieldPath,
    depth: usize,
    sources: &Sources<'_>,
    errors: &mut Vec<SubstError>,
) {
    match &mut node.value {
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &path.index(i), depth + 1, sources, errors);
            }
        }
        Value::Map(entries) => {
            for Entry { key, value, .. } in entries.iter_mut() {
                walk(value, &path.key(key.as_str()), depth + 1, sources, errors);
            }
        }
        Value::String(s) => match expand(s, sources) {
            Ok(Expanded::Unchanged) => {}
            Ok(Expanded::Text(t)) => *s = t,
            Ok(Expanded::Typed(v)) => match json_to_node(&v, node.pos, depth) {
                Ok(n) => *node = n,
                Err(message) => errors.push(SubstError {
                    pos: node.pos,
                    path: path.clone(),
                    message,
                }),
            },
            Err(messages) => errors.extend(messages.into_iter().map(|message| SubstError {
                pos: node.pos,
                path: path.clone(),
                message,
            })),
        },
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

enum Expanded {
    Unchanged,
    Text(String),
    /// The whole string was one `${var.NAME}` whose value is not a string.
    Typed(serde_json::Value),
}

/// Makes a substituted value inert: `${` becomes `$${`.
fn escape(s: &str) -> String {
    s.replace("${", "$${")
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Variable names: letters, digits, `_` and `-`, not starting with a digit or `-`.
pub(crate) fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn stringify(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn lookup_var<'a>(name: &str, sources: &'a Sources<'_>) -> Result<&'a serde_json::Value, String> {
    if !is_var_name(name) {
        return Err(format!(
            "invalid variable reference `${{var.{name}}}`: expected `${{var.NAME}}` with NAME made of letters, digits, `_` and `-`"
        ));
    }
    sources.vars.get(name).ok_or_else(|| {
        format!("variable `{name}` is not set: pass --var {name}=VALUE or --var-file")
    })
}

fn lookup_env<'a>(name: &str, sources: &'a Sources<'_>) -> Result<&'a str, String> {
    if !is_env_name(name) {
        return Err(format!(
            "invalid environment reference `${{env:{name}}}`: expected `${{env:NAME}}` with NAME made of letters, digits and `_`"
        ));
    }
    sources
        .env
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("environment variable `{name}` is not set"))
}

fn expand(s: &str, sources: &Sources<'_>) -> Result<Expanded, Vec<String>> {
    if !s.contains("${") {
        return Ok(Expanded::Unchanged);
    }
    // A whole string that is exactly one `${var.NAME}` keeps the variable's type.
    if let Some(name) = s.strip_prefix("${var.").and_then(|r| r.strip_suffix('}')) {
        if !name.contains('}') {
            return match lookup_var(name, sources) {
                Ok(serde_json::Value::String(v)) => Ok(Expanded::Text(escape(v))),
                Ok(v) => Ok(Expanded::Typed(v.clone())),
                Err(e) => Err(vec![e]),
            };
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut errors: Vec<String> = Vec::new();
    let mut changed = false;
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("$${");
            rest = after;
            continue;
        }
        let Some(body) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let Some(end) = body.find('}') else {
            // Unterminated: not ours to judge; leave it for the model.
            out.push_str(tail);
            rest = "";
            break;
        };
        let inner = &body[..end];
        let whole = &tail[..end + 3];
        let replacement = if let Some(name) = inner.strip_prefix("env:") {
            Some(lookup_env(name, sources).map(escape))
        } else {
            inner
                .strip_prefix("var.")
                .map(|name| lookup_var(name, sources).map(|v| escape(&stringify(v))))
        };
        match replacement {
            Some(Ok(text)) => {
                out.push_str(&text);
                changed = true;
            }
            Some(Err(e)) => {
                if !errors.contains(&e) {
                    errors.push(e);
                }
                out.push_str(whole);
            }
            None => out.push_str(whole),
        }
        rest = &tail[end + 3..];
    }
    out.push_str(rest);
    if !errors.is_empty() {
        Err(errors)
    } else if changed {
        Ok(Expanded::Text(out))
    } else {
        Ok(Expanded::Unchanged)
    }
}

/// Turns a variable's JSON value into located nodes, escaping `${` in its strings.
///
/// `depth` is the depth of the node being replaced; the result must keep the whole tree
/// within [`MAX_DEPTH`], which also bounds this recursion.
pub(crate) fn json_to_node(v: &serde_json::Value, pos: Pos, depth: usize) -> Result<Node, String> {
    let value = match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Number(n.clone()),
        serde_json::Value::String(s) => Value::String(escape(s)),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) if depth >= MAX_DEPTH => {
            return Err(format!(
                "variable value nests deeper than {MAX_DEPTH} levels: flatten it"
            ));
        }
        serde_json::Value::Array(items) => Value::Seq(
            items
                .iter()
                .map(|i| json_to_node(i, pos, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => Value::Map(
            map.iter()
                .map(|(k, i)| {
                    Ok(Entry {
                        key: k.clone(),
                        key_pos: pos,
                        value: json_to_node(i, pos, depth + 1)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
    };
    Ok(Node { value, pos })
}
