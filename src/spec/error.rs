//! Error types of the `spec` module: where in which file, at which field, and what to do.
//!
//! Errors are layered like cargo's `ManifestError`: a [`SpecError`] carries an optional
//! [`Location`] (file, line, column), the [`FieldPath`] inside the document rendered as a
//! string, and a message that says what was expected.

use std::fmt;
use std::path::PathBuf;

/// A position in a spec file. Line and column are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file as it was named or discovered.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index, 0-based.
    Index(usize),
}

/// A path to a field inside one document, e.g. `resources[3].attributes.triggers.parent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// The empty path: the document itself.
    #[must_use]
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by a mapping key.
    #[must_use]
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.into()));
        FieldPath(segs)
    }

    /// This path extended by a sequence index.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        FieldPath(segs)
    }

    /// The path without its last step (the root stays the root).
    #[must_use]
    pub fn parent(&self) -> Self {
        let mut segs = self.0.clone();
        segs.pop();
        FieldPath(segs)
    }

    /// Whether this is the document itself.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Keys that need no quoting in a displayed path.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                // Keys with dots or spaces would make the path ambiguous: quote them.
                Seg::Key(k) => write!(f, "[{}]", serde_json::Value::String(k.clone()))?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One problem with the spec files.
///
/// Displays as `file:line:column: path: message`, leaving out what is absent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.location.as_ref(), .file.as_ref(), .path, .message))]
pub struct SpecError {
    /// Where the problem is, when it is inside a file.
    pub location: Option<Location>,
    /// The file, when the problem is with a whole file (unreadable, not UTF-8). Also set
    /// when `location` is.
    pub file: Option<PathBuf>,
    /// The field path inside the document (`FieldPath` rendered), or empty.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn render(
    location: Option<&Location>,
    file: Option<&PathBuf>,
    path: &str,
    message: &str,
) -> String {
    let mut out = String::new();
    if let Some(loc) = location {
        out.push_str(&format!("{loc}: "));
    } else if let Some(file) = file {
        out.push_str(&format!("{}: ", file.display()));
    }
    if !path.is_empty() {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

impl SpecError {
    /// An error at a position in a file.
    #[must_use]
    pub fn at(location: Location, path: &FieldPath, message: impl Into<String>) -> Self {
        SpecError {
            file: Some(location.file.clone()),
            location: Some(location),
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// An error about a whole file (or directory).
    #[must_use]
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SpecError {
            location: None,
            file: Some(file.into()),
            path: String::new(),
            message: message.into(),
        }
    }

    /// An error not tied to any file, such as a bad `--var` argument.
    #[must_use]
    pub fn bare(message: impl Into<String>) -> Self {
        SpecError {
            location: None,
            file: None,
            path: String::new(),
            message: message.into(),
        }
    }
}

/// Every problem found while loading, in file order. Displays one error per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_all(.0))]
pub struct SpecErrors(pub Vec<SpecError>);

fn render_all(errors: &[SpecError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl From<SpecError> for SpecErrors {
    fn from(e: SpecError) -> Self {
        SpecErrors(vec![e])
    }
}
