//! Attribute expressions: JSON values whose strings may hold `${TYPE.NAME.ATTR}`
//! references, parsed once and resolved later against recorded outputs.
//!
//! `$${` is the escape for a literal `${`. Resolution is pure: the caller passes a lookup
//! function, and a reference the lookup cannot know yet resolves to [`PValue::Unknown`].

use super::Address;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// A reference to an attribute (or output) of another resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub target: Address,
    /// Attribute name followed by an optional path into it (`triggers.size`).
    pub attr: Vec<String>,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.target, self.attr.join("."))
    }
}

/// One piece of a string template.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Lit(String),
    Ref(Reference),
}

/// An attribute value with references still unresolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A value without any reference in it.
    Lit(Value),
    Template(Vec<Part>),
    Array(Vec<Expr>),
    Object(BTreeMap<String, Expr>),
}

/// A value as planned: known, or with parts only known after apply.
#[derive(Debug, Clone, PartialEq)]
pub enum PValue {
    Known(Value),
    Unknown,
    /// An array with at least one unknown element.
    Array(Vec<PValue>),
    /// An object with at least one unknown member.
    Object(BTreeMap<String, PValue>),
}

impl PValue {
    /// The value, when nothing in it is unknown.
    pub fn known(&self) -> Option<&Value> {
        match self {
            PValue::Known(v) => Some(v),
            _ => None,
        }
    }

    /// Replaces every unknown leaf with `null`, for places that need plain JSON.
    pub fn to_value_lossy(&self) -> Value {
        match self {
            PValue::Known(v) => v.clone(),
            PValue::Unknown => Value::Null,
            PValue::Array(items) => {
                Value::Array(items.iter().map(PValue::to_value_lossy).collect())
            }
            PValue::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.to_value_lossy()))
                    .collect(),
            ),
        }
    }

    /// Dotted paths (relative to this value) of every unknown leaf.
    pub fn unknown_paths(&self, prefix: &str, out: &mut Vec<String>) {
        match self {
            PValue::Known(_) => {}
            PValue::Unknown => out.push(prefix.to_string()),
            PValue::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    v.unknown_paths(&format!("{prefix}[{i}]"), out);
                }
            }
            PValue::Object(m) => {
                for (k, v) in m {
                    v.unknown_paths(&format!("{prefix}.{k}"), out);
                }
            }
        }
    }
}

/// What a lookup knows of a referenced attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Known(Value),
    /// Will be known after apply (the target is being created or replaced).
    Unknown,
    /// The target has no such attribute; the string says why, for the error message.
    Missing(String),
}

/// A reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("${{{reference}}}: {message}")]
pub struct ResolveError {
    pub reference: Reference,
    pub message: String,
}

/// Whether any string in `v` has a `$` (keys are names, never templates).
fn has_dollar(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('$'),
        Value::Array(items) => items.iter().any(has_dollar),
        Value::Object(m) => m.values().any(has_dollar),
        _ => false,
    }
}

/// Error from parsing a template string.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

impl Expr {
    /// Parses a JSON value, turning strings with `${...}` into templates.
    ///
    /// # Errors
    /// The first malformed interpolation, with the dotted path (relative to `value`) of
    /// the string it is in.
    pub fn parse(value: &Value) -> Result<Expr, (String, TemplateError)> {
        // Without a `$` there is neither a reference nor an escape: the value is a
        // literal as written (most attributes; no copy into a template and back).
        if !has_dollar(value) {
            return Ok(Expr::Lit(value.clone()));
        }
        match value {
            Value::String(s) => match parse_template(s) {
                Ok(parts) => {
                    if parts.iter().all(|p| matches!(p, Part::Lit(_))) {
                        let text: String = parts
                            .into_iter()
                            .map(|p| match p {
                                Part::Lit(s) => s,
                                Part::Ref(_) => String::new(),
                            })
                            .collect();
                        Ok(Expr::Lit(Value::String(text)))
                    } else {
                        Ok(Expr::Template(parts))
                    }
                }
                Err(e) => Err((String::new(), e)),
            },
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    out.push(Expr::parse(v).map_err(|(p, e)| (format!("[{i}]{}", dot(&p)), e))?);
                }
                if out.iter().all(|e| matches!(e, Expr::Lit(_))) {
                    Ok(Expr::Lit(Value::Array(out.into_iter().map(lit).collect())))
                } else {
                    Ok(Expr::Array(out))
                }
            }
            Value::Object(m) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let e = Expr::parse(v).map_err(|(p, e)| (join(k, &p), e))?;
                    out.insert(k.clone(), e);
                }
                if out.values().all(|e| matches!(e, Expr::Lit(_))) {
                    Ok(Expr::Lit(Value::Object(
                        out.into_iter()
                            .map(|(k, e)| (k, lit(e)))
                            .collect::<Map<_, _>>(),
                    )))
                } else {
                    Ok(Expr::Object(out))
                }
            }
            other => Ok(Expr::Lit(other.clone())),
        }
    }

    /// Every reference in this expression, in order of appearance.
    pub fn references(&self, out: &mut Vec<Reference>) {
        match self {
            Expr::Lit(_) => {}
            Expr::Template(parts) => {
                for p in parts {
                    if let Part::Ref(r) = p {
                        out.push(r.clone());
                    }
                }
            }
            Expr::Array(items) => items.iter().for_each(|e| e.references(out)),
            Expr::Object(m) => m.values().for_each(|e| e.references(out)),
        }
    }

    /// Resolves references through `lookup`.
    ///
    /// # Errors
    /// A reference the lookup reports missing, or a non-scalar value interpolated into a
    /// longer string.
    pub fn resolve(&self, lookup: &dyn Fn(&Reference) -> Lookup) -> Result<PValue, ResolveError> {
        match self {
            Expr::Lit(v) => Ok(PValue::Known(v.clone())),
            Expr::Template(parts) => {
                if let [Part::Ref(r)] = parts.as_slice() {
                    return match lookup(r) {
                        Lookup::Known(v) => Ok(PValue::Known(v)),
                        Lookup::Unknown => Ok(PValue::Unknown),
                        Lookup::Missing(message) => Err(ResolveError {
                            reference: r.clone(),
                            message,
                        }),
                    };
                }
                let mut text = String::new();
                let mut unknown = false;
                for p in parts {
                    match p {
                        Part::Lit(s) => text.push_str(s),
                        Part::Ref(r) => match lookup(r) {
                            Lookup::Known(Value::String(s)) => text.push_str(&s),
                            Lookup::Known(Value::Null) => {}
                            Lookup::Known(v @ (Value::Number(_) | Value::Bool(_))) => {
                                text.push_str(&v.to_string())
                            }
                            Lookup::Known(_) => {
                                return Err(ResolveError {
                                    reference: r.clone(),
                                    message: "is a list or map and cannot be interpolated into a string; reference it as the whole value instead".into(),
                                })
                            }
                            Lookup::Unknown => unknown = true,
                            Lookup::Missing(message) => {
                                return Err(ResolveError { reference: r.clone(), message })
                            }
                        },
                    }
                }
                Ok(if unknown {
                    PValue::Unknown
                } else {
                    PValue::Known(Value::String(text))
                })
            }
            Expr::Array(items) => {
                let vals = items
                    .iter()
                    .map(|e| e.resolve(lookup))
                    .collect::<Result<Vec<_>, _>>()?;
                if vals.iter().all(|v| matches!(v, PValue::Known(_))) {
                    Ok(PValue::Known(Value::Array(
                        vals.into_iter().map(|v| v.to_value_lossy()).collect(),
                    )))
                } else {
                    Ok(PValue::Array(vals))
                }
            }
            Expr::Object(m) => {
                let mut out = BTreeMap::new();
                for (k, e) in m {
                    out.insert(k.clone(), e.resolve(lookup)?);
                }
                if out.values().all(|v| matches!(v, PValue::Known(_))) {
                    Ok(PValue::Known(Value::Object(
                        out.into_iter()
                            .map(|(k, v)| (k, v.to_value_lossy()))
                            .collect(),
                    )))
                } else {
                    Ok(PValue::Object(out))
                }
            }
        }
    }
}

fn lit(e: Expr) -> Value {
    match e {
        Expr::Lit(v) => v,
        _ => Value::Null,
    }
}

fn dot(p: &str) -> String {
    if p.is_empty() || p.starts_with('[') {
        p.to_string()
    } else {
        format!(".{p}")
    }
}

fn join(k: &str, p: &str) -> String {
    format!("{k}{}", dot(p))
}

/// Splits a string into literal text and `${TYPE.NAME.ATTR}` references.
///
/// # Errors
/// An unterminated `${`, or an interpolation that is not a resource reference.
pub fn parse_template(s: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos..];
        if after.starts_with("$${") {
            lit.push_str(&rest[..pos]);
            lit.push_str("${");
            rest = &rest[pos + 3..];
        } else if let Some(inner_start) = after.strip_prefix("${") {
            lit.push_str(&rest[..pos]);
            let Some(end) = inner_start.find('}') else {
                return Err(TemplateError(format!(
                    "unterminated `${{` in {s:?}: close it with `}}`, or write `$${{` for a literal `${{`"
                )));
            };
            let inner = &inner_start[..end];
            let r = parse_reference(inner)?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Ref(r));
            rest = &inner_start[end + 1..];
        } else {
            lit.push_str(&rest[..pos + 1]);
            rest = &rest[pos + 1..];
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() || parts.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(parts)
}

fn parse_reference(inner: &str) -> Result<Reference, TemplateError> {
    let segs: Vec<&str> = inner.split('.').collect();
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if segs.len() < 3 || !segs.iter().all(|s| valid(s)) {
        return Err(TemplateError(format!(
            "`${{{inner}}}` is not a reference: expected `${{TYPE.NAME.ATTR}}` (or `${{env:NAME}}` / `${{var.NAME}}`); write `$${{` for a literal `${{`"
        )));
    }
    Ok(Reference {
        target: Address::new(segs[0], segs[1]),
        attr: segs[2..].iter().map(|s| s.to_string()).collect(),
    })
}

/// Writes an expression back as JSON, with `${` in literal text escaped as `$${`, so that
/// `Expr::parse(&e.to_source())` gives `e` again.
pub fn to_source(e: &Expr) -> Value {
    match e {
        Expr::Lit(v) => escape_value(v),
        Expr::Template(parts) => Value::String(
            parts
                .iter()
                .map(|p| match p {
                    Part::Lit(s) => s.replace("${", "$${"),
                    Part::Ref(r) => format!("${{{r}}}"),
                })
                .collect(),
        ),
        Expr::Array(items) => Value::Array(items.iter().map(to_source).collect()),
        Expr::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), to_source(v))).collect())
        }
    }
}

fn escape_value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("${", "$${")),
        Value::Array(items) => Value::Array(items.iter().map(escape_value).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), escape_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A value without `$` parses to itself; one with `$` anywhere inside still goes
    /// through the template parser (references, and `$${` unescaped).
    #[test]
    fn values_without_a_dollar_are_literal_as_written() {
        for v in [
            json!("plain"),
            json!(""),
            json!(42),
            json!(null),
            json!(["a", 1, {"b": [true, "c"]}]),
            json!({"x": {"y": "z"}, "$key": "keys are not templates"}),
        ] {
            assert_eq!(Expr::parse(&v).unwrap(), Expr::Lit(v.clone()), "{v}");
        }
        assert_eq!(
            Expr::parse(&json!({"a": ["x", "$${literal}"]})).unwrap(),
            Expr::Lit(json!({"a": ["x", "${literal}"]}))
        );
        assert_eq!(
            Expr::parse(&json!({"a": "cost: 5$"})).unwrap(),
            Expr::Lit(json!({"a": "cost: 5$"}))
        );
        let Expr::Object(m) = Expr::parse(&json!({"a": 1, "b": {"c": "${x.y.z}"}})).unwrap() else {
            panic!("a reference inside makes an object expression");
        };
        assert_eq!(m["a"], Expr::Lit(json!(1)));
        assert!(matches!(&m["b"], Expr::Object(_)));
    }

    fn r(s: &str) -> Reference {
        let segs: Vec<&str> = s.split('.').collect();
        Reference {
            target: Address::new(segs[0], segs[1]),
            attr: segs[2..].iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn plain_strings_stay_literal_and_escape_unescapes() {
        assert_eq!(
            Expr::parse(&json!("a $b c")).unwrap(),
            Expr::Lit(json!("a $b c"))
        );
        assert_eq!(
            Expr::parse(&json!("x $${HOME} y")).unwrap(),
            Expr::Lit(json!("x ${HOME} y"))
        );
        assert_eq!(
            Expr::parse(&json!({"a": [1, "$"]})).unwrap(),
            Expr::Lit(json!({"a": [1, "$"]}))
        );
    }

    #[test]
    fn references_are_found_everywhere() {
        let e = Expr::parse(
            &json!({"a": ["${null_resource.x.id}"], "b": "p-${null_resource.y.triggers.k}-s"}),
        )
        .unwrap();
        let mut refs = vec![];
        e.references(&mut refs);
        assert_eq!(
            refs,
            vec![r("null_resource.x.id"), r("null_resource.y.triggers.k")]
        );
    }

    #[test]
    fn bad_interpolations_are_errors_with_paths() {
        let (path, err) = Expr::parse(&json!({"t": {"k": "${foo}"}})).unwrap_err();
        assert_eq!(path, "t.k");
        assert!(err.0.contains("expected `${TYPE.NAME.ATTR}`"), "{err}");
        let (path, err) = Expr::parse(&json!({"t": ["ok", "${a.b.c"]})).unwrap_err();
        assert_eq!(path, "t[1]");
        assert!(err.0.contains("unterminated"), "{err}");
    }

    #[test]
    fn resolution_known_unknown_and_typed() {
        let e = Expr::parse(&json!({"whole": "${null_resource.x.size}", "s": "n=${null_resource.x.size}", "u": "${null_resource.y.id}"})).unwrap();
        let lookup = |r: &Reference| match r.target.name.as_str() {
            "x" => Lookup::Known(json!(3)),
            _ => Lookup::Unknown,
        };
        let v = e.resolve(&lookup).unwrap();
        let PValue::Object(m) = v else {
            panic!("expected partially unknown object")
        };
        assert_eq!(m["whole"], PValue::Known(json!(3)));
        assert_eq!(m["s"], PValue::Known(json!("n=3")));
        assert_eq!(m["u"], PValue::Unknown);
        let e = Expr::parse(&json!("${null_resource.x.nope}")).unwrap();
        let err = e
            .resolve(&|_| Lookup::Missing("has no attribute `nope`".into()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "${null_resource.x.nope}: has no attribute `nope`"
        );
    }

    #[test]
    fn to_source_round_trips() {
        for v in [
            json!("a $${b} ${null_resource.x.id} c"),
            json!({"k": ["$${x}", "${null_resource.y.id}"]}),
            json!(5),
        ] {
            let e = Expr::parse(&v).unwrap();
            assert_eq!(Expr::parse(&to_source(&e)).unwrap(), e);
        }
    }
}
