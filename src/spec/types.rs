//! The typed shape of each spec kind, and the JSON Schemas generated from it.
//!
//! These types are the single source of truth: `schemars` turns them into the schema that
//! validates documents (and that is checked into `schemas/`), and `serde` turns a
//! validated document into them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every kind of document anvil accepts, as written in `kind:`.
pub const KINDS: &[&str] = &["Resources"];

/// The only `apiVersion` anvil accepts.
pub const API_VERSION: &str = "anvil/v1";

/// Where the generated schemas claim to live; editors only use it as an identifier.
const SCHEMA_BASE: &str = "https://anvil.invalid/schemas";

/// `apiVersion: anvil/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first and only version.
    #[serde(rename = "anvil/v1")]
    V1,
}

/// `kind: Resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ResourcesKind {
    /// Resources written by hand.
    Resources,
}

/// A `Resources` document: the InfraModel written by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesDoc {
    /// Always `anvil/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: ApiVersion,
    /// Always `Resources`.
    pub kind: ResourcesKind,
    /// Names the workspace; every document loaded together must share it.
    pub metadata: Metadata,
    /// The resources, each addressed as `TYPE.NAME`.
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
}

/// Document metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The workspace name: lowercase letters, digits and `-`, at most 63 characters,
    /// starting and ending with a letter or digit.
    #[schemars(pattern(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
}

/// One resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// The resource type, e.g. `null_resource` or `aws_vpc`.
    #[serde(rename = "type")]
    #[schemars(pattern(r"^[a-z][a-z0-9_]*$"))]
    pub ty: String,
    /// The resource name, unique per type.
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    pub name: String,
    /// Provider attributes. A string `${TYPE.NAME.ATTR}` anywhere is a reference to another
    /// resource's output; `$${` writes a literal `${`.
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Addresses (`TYPE.NAME`) this resource must be applied after.
    #[serde(default)]
    #[schemars(inner(pattern(r"^[a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_-]*$")))]
    pub depends_on: Vec<String>,
    /// How changes to this resource are applied.
    #[serde(default)]
    pub lifecycle: Lifecycle,
}

/// How changes to a resource are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Refuse any plan that would delete this resource.
    #[serde(default)]
    pub prevent_destroy: bool,
    /// On replacement, create the new resource before deleting the old one.
    #[serde(default)]
    pub create_before_destroy: bool,
    /// Attribute names whose changes are ignored when planning.
    #[serde(default)]
    pub ignore_changes: Vec<String>,
    /// On delete, forget the resource in state but leave it in the real world.
    #[serde(default)]
    pub retain_on_delete: bool,
}

/// The generated JSON Schema for a kind (`"Resources"`, matched case-insensitively), with
/// `$id`, `title` and `description` set; `None` for an unknown kind.
#[must_use]
pub fn schema_for_kind(kind: &str) -> Option<serde_json::Value> {
    let canonical = KINDS.iter().find(|k| k.eq_ignore_ascii_case(kind))?;
    let (schema, description) = match *canonical {
        "Resources" => (
            schemars::schema_for!(ResourcesDoc),
            "An anvil `Resources` document: resources written by hand, each addressed as TYPE.NAME.",
        ),
        _ => return None,
    };
    let mut value = serde_json::to_value(schema).ok()?;
    let obj = value.as_object_mut()?;
    let file = format!("{}.schema.json", canonical.to_ascii_lowercase());
    obj.insert(
        "$id".into(),
        serde_json::Value::String(format!("{SCHEMA_BASE}/{file}")),
    );
    obj.insert(
        "title".into(),
        serde_json::Value::String(format!("anvil {canonical}")),
    );
    obj.insert(
        "description".into(),
        serde_json::Value::String(description.into()),
    );
    Some(value)
}
