//! TEMPORARY stand-in for the spec module (replaced by branch `spec`).
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(pub Vec<Seg>);
impl FieldPath {
    pub fn key(&self, k: &str) -> FieldPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        FieldPath(v)
    }
    pub fn index(&self, i: usize) -> FieldPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        FieldPath(v)
    }
}
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}
#[derive(Debug, thiserror::Error)]
#[error("{}: {path}: {message}", location.as_ref().map(|l| l.to_string()).unwrap_or_default())]
pub struct SpecError {
    pub location: Option<Location>,
    pub file: Option<PathBuf>,
    pub path: String,
    pub message: String,
}
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct SpecErrors(pub Vec<SpecError>);
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    pub vars: BTreeMap<String, serde_json::Value>,
    pub env: BTreeMap<String, String>,
}
pub struct Spec {
    pub documents: Vec<Document>,
    pub digest: String,
    pub files: Vec<PathBuf>,
}
impl Spec {
    pub fn workspace(&self) -> Option<&str> {
        self.documents.first().map(|d| d.name())
    }
}
pub struct Document {
    pub file: PathBuf,
    pub index: usize,
    pub body: DocumentBody,
}
impl Document {
    pub fn locate(&self, _path: &FieldPath) -> Location {
        Location {
            file: self.file.clone(),
            line: 1,
            column: 1,
        }
    }
    pub fn name(&self) -> &str {
        match &self.body {
            DocumentBody::Resources(r) => &r.metadata.name,
        }
    }
}
pub enum DocumentBody {
    Resources(ResourcesDoc),
}
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ResourcesDoc {
    pub metadata: Metadata,
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
}
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Metadata {
    pub name: String,
}
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ResourceSpec {
    #[serde(rename = "type")]
    pub ty: String,
    pub name: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub lifecycle: Lifecycle,
}
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Lifecycle {
    #[serde(default)]
    pub prevent_destroy: bool,
    #[serde(default)]
    pub create_before_destroy: bool,
    #[serde(default)]
    pub ignore_changes: Vec<String>,
    #[serde(default)]
    pub retain_on_delete: bool,
}
pub fn load(_paths: &[PathBuf], _opts: &LoadOptions) -> Result<Spec, SpecErrors> {
    Err(SpecErrors(vec![]))
}
pub fn load_var_file(_path: &Path) -> Result<BTreeMap<String, serde_json::Value>, SpecErrors> {
    Ok(BTreeMap::new())
}
pub fn parse_var_arg(s: &str) -> Result<(String, serde_json::Value), SpecError> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    Ok((k.into(), serde_json::Value::String(v.into())))
}
pub fn schema_for_kind(_kind: &str) -> Option<serde_json::Value> {
    None
}
pub const KINDS: &[&str] = &["Resources"];
