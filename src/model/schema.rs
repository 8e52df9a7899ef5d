//! Resource type schemas: what a provider declares about each attribute of a type.
//!
//! Plain data, produced by providers and consumed by `model` (validation) and `plan`
//! (which attributes force replacement, are computed, or are sensitive).

use serde::Serialize;
use std::collections::BTreeMap;

/// The JSON shape an attribute accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttrKind {
    Any,
    String,
    Number,
    Bool,
    Map,
    List,
}

impl AttrKind {
    /// Whether `v` has this shape. Strings with references are accepted anywhere, since
    /// a whole-value reference may resolve to any type.
    pub fn accepts(self, v: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (self, v) {
            (AttrKind::Any, _) | (_, V::Null) => true,
            (_, V::String(s)) if s.contains("${") && !s.contains("$${") => true,
            (AttrKind::String, V::String(_)) => true,
            (AttrKind::Number, V::Number(_)) => true,
            (AttrKind::Bool, V::Bool(_)) => true,
            (AttrKind::Map, V::Object(_)) => true,
            (AttrKind::List, V::Array(_)) => true,
            _ => false,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            AttrKind::Any => "any value",
            AttrKind::String => "a string",
            AttrKind::Number => "a number",
            AttrKind::Bool => "a boolean",
            AttrKind::Map => "a map",
            AttrKind::List => "a list",
        }
    }
}

/// One attribute of a resource type.
#[derive(Debug, Clone, Serialize)]
pub struct AttrSchema {
    pub kind: AttrKind,
    pub required: bool,
    /// A change to this attribute replaces the resource instead of updating it.
    pub force_new: bool,
    /// Redacted in every output and stored in state only as a fingerprint.
    pub sensitive: bool,
    pub description: &'static str,
}

impl AttrSchema {
    pub fn new(kind: AttrKind, description: &'static str) -> AttrSchema {
        AttrSchema {
            kind,
            required: false,
            force_new: false,
            sensitive: false,
            description,
        }
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn force_new(mut self) -> Self {
        self.force_new = true;
        self
    }
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
}

/// Everything a provider declares about one resource type.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceSchema {
    #[serde(rename = "type")]
    pub ty: String,
    pub provider: String,
    pub attributes: BTreeMap<String, AttrSchema>,
    /// Values the provider computes on create (e.g. `id`), known only after apply.
    pub outputs: BTreeMap<String, &'static str>,
}

impl ResourceSchema {
    pub fn is_sensitive(&self, attr: &str) -> bool {
        self.attributes.get(attr).is_some_and(|a| a.sensitive)
    }
    pub fn forces_new(&self, attr: &str) -> bool {
        self.attributes.get(attr).is_some_and(|a| a.force_new)
    }
}

/// The schemas of every known resource type, by type name.
pub type Schemas = BTreeMap<String, ResourceSchema>;

/// A provider's own view of a change, shown under it in a plan (the BOSH Director's
/// `POST /deployments/{name}/diff`). Informational: apply does not depend on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ProviderDiff {
    /// Who produced it and how, e.g. `BOSH Director (POST /deployments/x/diff)`.
    pub source: String,
    /// The lines, each `added`, `removed` or unchanged context (`null`).
    pub lines: Vec<DiffLine>,
    /// Why there is no diff, when the provider said so (e.g. "Unable to diff manifest").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of a [`ProviderDiff`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct DiffLine {
    pub text: String,
    /// `added`, `removed`, or `null` for context.
    pub change: Option<String>,
}
