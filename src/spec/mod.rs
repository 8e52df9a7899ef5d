//! Loading and validating spec files: YAML in, typed [`Spec`] out, or every problem found
//! as [`SpecErrors`] naming `file:line:column`, the field path and what was expected.
//!
//! Stages, per document: a located YAML tree (`yaml`, explicit stack, nesting and alias
//! limits) → envelope checks (`apiVersion`, `kind`) → `${env:NAME}` / `${var.NAME}`
//! substitution (`subst`) → JSON Schema validation (`validate`) → typed
//! deserialisation. Then all documents must share one `metadata.name`, the workspace.
//! A directory scan skips YAML files with no anvil document (CI pipelines, BOSH
//! manifests) and lists them in [`Spec::skipped`]; files named explicitly are checked.
//!
//! This module only reads files. It does not resolve `${TYPE.NAME.ATTR}` references or
//! unescape `$${`; the model does.

mod environment;
mod error;
mod subst;
mod suggest;
mod types;
mod validate;
mod yaml;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use environment::{
    CloudProvider, DatabaseSpec, Engine, EnvironmentDoc, EnvironmentKind, KubernetesSpec,
    NetworkSpec, Size, StorageSpec,
};
pub use error::{FieldPath, Location, Seg, SpecError, SpecErrors};
pub use suggest::{did_you_mean, hint as did_you_mean_hint};
pub use types::{
    schema_for_kind, ApiVersion, Catalog, DirectorSpec, FoundationDoc, FoundationKind,
    InstanceSpec, Lifecycle, Metadata, OutputSpec, PlanSpec, ProviderEntries, ResourceSpec,
    ResourcesDoc, ResourcesKind, ServiceSpec, VaultSpec, API_VERSION, KINDS,
};

use yaml::{Node, Pos, Value};

/// Errors beyond this many are dropped (with a note saying so).
pub const MAX_ERRORS: usize = 50;

/// Files larger than this are refused rather than parsed.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// What `${var.NAME}` and `${env:NAME}` read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// `--var` / `--var-file` values by name.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// The environment, passed in so loading stays deterministic and testable.
    pub env: BTreeMap<String, String>,
}

/// Every document loaded, validated and typed.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Documents in load order: files in order, documents in file order.
    pub documents: Vec<Document>,
    /// `sha256:<hex>` over the path and bytes of every file loaded, in order.
    pub digest: String,
    /// The files loaded, in order.
    pub files: Vec<PathBuf>,
    /// YAML files a directory scan found that hold no anvil document (CI pipelines, BOSH
    /// manifests, compose files), in order. They are not loaded and not in the digest.
    pub skipped: Vec<PathBuf>,
}

impl Spec {
    /// The workspace: the `metadata.name` every document shares. `None` without documents.
    #[must_use]
    pub fn workspace(&self) -> Option<&str> {
        self.documents.first().map(Document::name)
    }
}

/// One validated document.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file it came from.
    pub file: PathBuf,
    /// 0-based index of the document in its file (counting empty `---` documents).
    pub index: usize,
    /// The typed content.
    pub body: DocumentBody,
    /// Files the document refers to (a Foundation's manifest templates), by the path as
    /// written in the document. Their bytes are part of the spec digest.
    pub attachments: BTreeMap<String, Attachment>,
    /// The located tree after substitution, so later stages can point at fields.
    root: Node,
}

/// A file a document refers to, read at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Where it was read from (relative paths resolve against the document's file).
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

/// The typed content of a document, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum DocumentBody {
    /// `kind: Resources`.
    Resources(ResourcesDoc),
    /// `kind: Foundation`.
    Foundation(Box<FoundationDoc>),
    /// `kind: Environment`.
    Environment(Box<EnvironmentDoc>),
}

impl Document {
    /// Where `path` is in the file: the deepest node that exists along it; for a mapping
    /// entry, the position of its key. The empty path gives the document's start.
    #[must_use]
    pub fn locate(&self, path: &FieldPath) -> Location {
        self.location(validate::locate(&self.root, path))
    }

    /// A [`SpecError`] at `path` in this document, for later stages to report problems
    /// (unknown reference, dependency cycle) in the same format.
    #[must_use]
    pub fn error_at(&self, path: &FieldPath, message: impl Into<String>) -> SpecError {
        SpecError::at(self.locate(path), path, message)
    }

    /// The document's `metadata.name`.
    #[must_use]
    pub fn name(&self) -> &str {
        match &self.body {
            DocumentBody::Resources(d) => &d.metadata.name,
            DocumentBody::Foundation(d) => &d.metadata.name,
            DocumentBody::Environment(d) => &d.metadata.name,
        }
    }

    /// The document's `kind`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match &self.body {
            DocumentBody::Resources(_) => "Resources",
            DocumentBody::Foundation(_) => "Foundation",
            DocumentBody::Environment(_) => "Environment",
        }
    }

    fn location(&self, pos: Pos) -> Location {
        Location {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
        }
    }
}

/// Collects errors up to [`MAX_ERRORS`].
#[derive(Default)]
struct Errors {
    list: Vec<SpecError>,
    /// Whether any error was dropped (not how many: later stages stop counting early).
    dropped: bool,
}

impl Errors {
    fn push(&mut self, e: SpecError) {
        if self.list.len() < MAX_ERRORS {
            self.list.push(e);
        } else {
            self.dropped = true;
        }
    }

    fn full(&self) -> bool {
        self.list.len() >= MAX_ERRORS
    }

    fn finish(mut self) -> Result<(), SpecErrors> {
        if self.list.is_empty() {
            return Ok(());
        }
        if self.dropped {
            self.list.push(SpecError::bare(format!(
                "too many errors: only the first {MAX_ERRORS} are shown; fix those first"
            )));
        }
        Err(SpecErrors(self.list))
    }
}

fn at(file: &Path, pos: Pos, path: &FieldPath, message: impl Into<String>) -> SpecError {
    SpecError::at(
        Location {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.column,
        },
        path,
        message,
    )
}

/// Loads, validates and types every spec document under `paths`.
///
/// A path is a file or a directory; a directory means every `*.yaml` / `*.yml` file below
/// it (recursively, sorted by path, skipping hidden entries whose names start with `.`)
/// that holds an anvil document: a directory also holds CI pipelines, BOSH manifests and
/// the like, so a file found by the scan whose documents have neither an `anvil/…`
/// `apiVersion` nor an anvil `kind` is skipped and listed in [`Spec::skipped`]. A file
/// named explicitly is always loaded. A file named twice is loaded once.
///
/// # Errors
///
/// Returns every problem found (up to [`MAX_ERRORS`]), each naming its file and, where
/// possible, `line:column` and field path: unreadable paths, directories without spec
/// files (saying how many foreign YAML files were skipped), files that are not UTF-8
/// YAML or have no documents, unknown `apiVersion` or `kind`, unset variables, schema
/// violations, and documents naming different workspaces.
pub fn load(paths: &[PathBuf], opts: &LoadOptions) -> Result<Spec, SpecErrors> {
    let mut errors = Errors::default();
    let collected = collect_files(paths, &mut errors);
    let mut loader = Loader::new(opts);
    let mut files = Vec::with_capacity(collected.files.len());
    let mut skipped = Vec::new();
    for (file, scanned) in collected.files {
        if errors.full() {
            break;
        }
        match read_text(&file) {
            Ok(text) => {
                if loader.load_text(&file, &text, scanned, &mut errors) {
                    files.push(file);
                } else {
                    skipped.push(file);
                }
            }
            Err(e) => {
                errors.push(e);
                files.push(file);
            }
        }
    }
    for (dir, found) in &collected.dirs {
        if !found.is_empty() && found.iter().all(|f| skipped.contains(f)) {
            errors.push(SpecError::file(
                dir,
                format!(
                    "directory has no spec files: {} YAML file(s) below it were skipped because none of their documents has `apiVersion: {API_VERSION}` (run with --verbose to list them); add a spec file or name one explicitly",
                    found.len()
                ),
            ));
        }
    }
    let mut spec = loader.finish(files, errors)?;
    spec.skipped = skipped;
    Ok(spec)
}

/// Whether a file found by a directory scan is meant for anvil: some document has an
/// `apiVersion` starting with `anvil/` or an anvil `kind` (in any case). Such a file is
/// loaded, so a wrong `apiVersion` on a `kind: Resources` document is still reported.
/// When the YAML does not parse, the text is searched for `anvil/` instead: a broken
/// anvil spec must be reported, not skipped.
fn is_anvil_stream(stream: &yaml::Stream, text: &str) -> bool {
    let broken = stream.fatal.is_some() || stream.docs.iter().any(|d| !d.errors.is_empty());
    if broken {
        return text.contains("anvil/");
    }
    stream.docs.iter().any(|d| is_anvil_document(&d.root))
}

fn is_anvil_document(root: &Node) -> bool {
    let string = |key: &str| match root.get(key).map(|e| &e.value.value) {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    };
    string("apiVersion").is_some_and(|v| v.starts_with("anvil/"))
        || string("kind").is_some_and(|k| KINDS.iter().any(|known| known.eq_ignore_ascii_case(k)))
}

/// Like [`load`], for one file's text already in memory; `file` is only used in errors
/// and in the digest. Handy for tests and for specs that do not come from disk.
///
/// # Errors
///
/// As [`load`], for the problems a single file can have.
pub fn load_str(file: &Path, text: &str, opts: &LoadOptions) -> Result<Spec, SpecErrors> {
    let mut errors = Errors::default();
    let mut loader = Loader::new(opts);
    loader.load_text(file, text, false, &mut errors);
    loader.finish(vec![file.to_path_buf()], errors)
}

struct Loader<'a> {
    opts: &'a LoadOptions,
    hasher: Sha256,
    documents: Vec<Document>,
}

impl<'a> Loader<'a> {
    fn new(opts: &'a LoadOptions) -> Self {
        Loader {
            opts,
            hasher: Sha256::new(),
            documents: Vec::new(),
        }
    }

    /// Loads the documents of one file and feeds it into the digest. A file a directory
    /// scan found (`scanned`) that is not meant for anvil is skipped: returns `false`.
    fn load_text(&mut self, file: &Path, raw: &str, scanned: bool, errors: &mut Errors) -> bool {
        let text = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        if let Some(pos) = nul_position(text) {
            hash_file(&mut self.hasher, file, raw.as_bytes());
            errors.push(at(
                file,
                pos,
                &FieldPath::root(),
                "file contains a NUL byte: expected UTF-8 YAML text (is this a binary file?)",
            ));
            return true;
        }
        let t = std::time::Instant::now();
        let stream = yaml::parse_stream(text);
        tracing::debug!(elapsed = ?t.elapsed(), file = %file.display(), "yaml parsed");
        let foreign = !is_anvil_stream(&stream, text);
        if scanned && foreign {
            return false;
        }
        hash_file(&mut self.hasher, file, raw.as_bytes());
        let no_docs = stream.docs.is_empty() && stream.fatal.is_none();
        // Named explicitly but plainly something else (mappings without an anvil
        // `apiVersion` or `kind`): one error saying so reads better than a missing
        // `apiVersion` and `kind` per document.
        if foreign
            && !no_docs
            && stream.fatal.is_none()
            && stream
                .docs
                .iter()
                .all(|d| d.errors.is_empty() && matches!(d.root.value, Value::Map(_)))
        {
            let pos = stream
                .docs
                .first()
                .map_or(Pos { line: 1, column: 1 }, |d| d.root.pos);
            errors.push(at(
                file,
                pos,
                &FieldPath::root(),
                format!(
                    "missing field `apiVersion`: expected `{API_VERSION}`; no document in this file has it or a `kind` of {}, so it is not an anvil spec (a CI pipeline or a BOSH manifest?): name only spec files, or their directory (a directory scan skips such files)",
                    KINDS.join(", ")
                ),
            ));
            return true;
        }
        for raw in stream.docs {
            if errors.full() {
                return true;
            }
            if raw.errors.is_empty() {
                if let Some(mut doc) = check_document(file, raw.index, raw.root, self.opts, errors)
                {
                    if read_attachments(&mut doc, &mut self.hasher, errors) {
                        self.documents.push(doc);
                    }
                }
            } else {
                for e in raw.errors {
                    errors.push(at(file, e.pos, &FieldPath::root(), e.message));
                }
            }
        }
        if let Some(fatal) = stream.fatal {
            errors.push(at(file, fatal.pos, &FieldPath::root(), fatal.message));
        }
        if no_docs {
            errors.push(at(
                file,
                Pos { line: 1, column: 1 },
                &FieldPath::root(),
                format!("no documents: expected at least one `apiVersion: {API_VERSION}` document"),
            ));
        }
        true
    }

    fn finish(self, files: Vec<PathBuf>, mut errors: Errors) -> Result<Spec, SpecErrors> {
        check_workspace(&self.documents, &mut errors);
        errors.finish()?;
        Ok(Spec {
            documents: self.documents,
            digest: format!("sha256:{}", hex::encode(self.hasher.finalize())),
            files,
            skipped: Vec::new(),
        })
    }
}

/// Reads the files a document refers to (a Foundation's manifest templates), relative to
/// the document's file, into [`Document::attachments`]. Returns whether all were read.
fn read_attachments(doc: &mut Document, hasher: &mut Sha256, errors: &mut Errors) -> bool {
    let DocumentBody::Foundation(f) = &doc.body else {
        return true;
    };
    let base = doc.file.parent().unwrap_or_else(|| Path::new(""));
    let mut ok = true;
    let mut attachments = BTreeMap::new();
    for (si, service) in f.catalog.services.iter().enumerate() {
        for (pi, plan) in service.plans.iter().enumerate() {
            if attachments.contains_key(&plan.manifest) {
                continue;
            }
            let path = base.join(&plan.manifest);
            match read_text(&path) {
                Ok(text) => {
                    hash_file(hasher, &path, text.as_bytes());
                    attachments.insert(plan.manifest.clone(), Attachment { path, text });
                }
                Err(e) => {
                    let field = FieldPath::root()
                        .key("catalog")
                        .key("services")
                        .index(si)
                        .key("plans")
                        .index(pi)
                        .key("manifest");
                    errors.push(doc.error_at(
                        &field,
                        format!(
                            "manifest template {}: {}: give a path relative to this file",
                            path.display(),
                            e.message
                        ),
                    ));
                    ok = false;
                }
            }
        }
    }
    doc.attachments = attachments;
    ok
}

/// All documents must name the same workspace.
fn check_workspace(documents: &[Document], errors: &mut Errors) {
    let Some(first) = documents.first() else {
        return;
    };
    let path = FieldPath::root().key("metadata").key("name");
    for doc in &documents[1..] {
        if doc.name() != first.name() {
            errors.push(doc.error_at(
                &path,
                format!(
                    "workspace `{}` differs from `{}` named at {}: all documents must share one metadata.name",
                    doc.name(),
                    first.name(),
                    first.locate(&path)
                ),
            ));
        }
    }
}

/// Feeds one file into the digest: its path, its length and its bytes, so that
/// concatenations cannot collide.
fn hash_file(hasher: &mut Sha256, file: &Path, bytes: &[u8]) {
    let name = file.to_string_lossy();
    hasher.update((name.len() as u64).to_le_bytes());
    hasher.update(name.as_bytes());
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Reads a spec file or template as UTF-8 text (at most [`MAX_FILE_BYTES`]). The caller
/// feeds it into the digest when it is used.
fn read_text(file: &Path) -> Result<String, SpecError> {
    let meta = fs::metadata(file).map_err(|e| io_error(file, &e))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(SpecError::file(
            file,
            format!(
                "file is {} bytes: spec files may be at most {MAX_FILE_BYTES} bytes",
                meta.len()
            ),
        ));
    }
    // The size from metadata says nothing for devices and pipes (`/dev/zero` has 0):
    // read at most one byte past the limit, whatever the file is.
    let mut bytes = Vec::new();
    fs::File::open(file)
        .and_then(|f| io::Read::read_to_end(&mut io::Read::take(f, MAX_FILE_BYTES + 1), &mut bytes))
        .map_err(|e| io_error(file, &e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SpecError::file(
            file,
            format!(
                "file is over {MAX_FILE_BYTES} bytes: spec files and templates may be at most that"
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // `good` is valid UTF-8 by construction; fall back to a lossy view just in case.
        let prefix = String::from_utf8_lossy(good);
        let pos = end_position(&prefix);
        at(
            file,
            pos,
            &FieldPath::root(),
            "invalid UTF-8: expected a UTF-8 text file (is this a binary file?)",
        )
    })
}

/// The 1-based position just after `prefix`.
fn end_position(prefix: &str) -> Pos {
    let line = prefix.matches('\n').count() + 1;
    let last = prefix.rsplit('\n').next().unwrap_or("");
    Pos {
        line,
        column: last.chars().count() + 1,
    }
}

fn nul_position(text: &str) -> Option<Pos> {
    text.find('\0').map(|i| end_position(&text[..i]))
}

fn io_error(path: &Path, e: &io::Error) -> SpecError {
    let what = match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    };
    SpecError::file(path, format!("cannot read: {what}"))
}

fn is_spec_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// The files to read, each with whether a directory scan found it (`true`) or it was named
/// explicitly; and each directory named with the YAML files found below it.
#[derive(Default)]
struct Collected {
    files: Vec<(PathBuf, bool)>,
    dirs: Vec<(PathBuf, Vec<PathBuf>)>,
}

/// Expands directories into their spec files; keeps argument order and drops repeats.
fn collect_files(paths: &[PathBuf], errors: &mut Errors) -> Collected {
    let mut out = Collected::default();
    let mut seen = HashSet::new();
    for path in paths {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                errors.push(io_error(path, &e));
                continue;
            }
        };
        if !meta.is_dir() {
            if seen.insert(path.clone()) {
                out.files.push((path.clone(), false));
            } else if let Some(f) = out.files.iter_mut().find(|(f, _)| f == path) {
                // Named explicitly after a directory scan found it: never skipped.
                f.1 = false;
            }
            continue;
        }
        let mut found = Vec::new();
        walk_dir(path, &mut found, errors);
        if found.is_empty() {
            errors.push(SpecError::file(
                path,
                "directory has no spec files: expected `*.yaml` or `*.yml` files below it",
            ));
        }
        found.sort();
        for f in &found {
            if seen.insert(f.clone()) {
                out.files.push((f.clone(), true));
            }
        }
        out.dirs.push((path.clone(), found));
    }
    out
}

/// Finds spec files below `dir` with an explicit stack. Symlinked directories are not
/// followed, so link cycles cannot loop; hidden entries (`.git`, `.github`) are skipped.
fn walk_dir(dir: &Path, found: &mut Vec<PathBuf>, errors: &mut Errors) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                errors.push(io_error(&d, &e));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    errors.push(io_error(&d, &e));
                    continue;
                }
            };
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(ty) = entry.file_type() else {
                continue;
            };
            if ty.is_dir() {
                stack.push(path);
            } else if is_spec_file(&path) && (ty.is_file() || path.is_file()) {
                found.push(path);
            }
        }
    }
}

/// Envelope checks, substitution, schema validation and typing of one document.
fn check_document(
    file: &Path,
    index: usize,
    mut root: Node,
    opts: &LoadOptions,
    errors: &mut Errors,
) -> Option<Document> {
    let here = |pos: Pos, path: &FieldPath, msg: String| at(file, pos, path, msg);
    let Value::Map(_) = &root.value else {
        errors.push(here(
            root.pos,
            &FieldPath::root(),
            format!(
                "document is {}: expected a mapping with `apiVersion: {API_VERSION}`, `kind` and `metadata`",
                root.value.kind_name()
            ),
        ));
        return None;
    };
    let kinds = KINDS.join(", ");
    let mut ok = true;
    match root.get("apiVersion") {
        None => {
            errors.push(here(
                root.pos,
                &FieldPath::root(),
                format!("missing field `apiVersion`: expected `{API_VERSION}`"),
            ));
            ok = false;
        }
        Some(e) => match &e.value.value {
            Value::String(v) if v == API_VERSION => {}
            Value::String(v) => {
                errors.push(here(
                    e.key_pos,
                    &FieldPath::root().key("apiVersion"),
                    format!("unsupported apiVersion `{v}`: expected `{API_VERSION}`"),
                ));
                ok = false;
            }
            other => {
                errors.push(here(
                    e.key_pos,
                    &FieldPath::root().key("apiVersion"),
                    format!("expected `{API_VERSION}`, found {}", other.kind_name()),
                ));
                ok = false;
            }
        },
    }
    let kind: Option<&'static str> = match root.get("kind") {
        None => {
            errors.push(here(
                root.pos,
                &FieldPath::root(),
                format!("missing field `kind`: expected one of {kinds}"),
            ));
            None
        }
        Some(e) => match &e.value.value {
            Value::String(v) => match KINDS.iter().find(|k| **k == v.as_str()) {
                Some(k) => Some(*k),
                None => {
                    let hint = KINDS
                        .iter()
                        .find(|k| k.eq_ignore_ascii_case(v))
                        .map(|k| format!(" (kinds are case-sensitive: did you mean `{k}`?)"))
                        .unwrap_or_default();
                    errors.push(here(
                        e.key_pos,
                        &FieldPath::root().key("kind"),
                        format!("unknown kind `{v}`: expected one of {kinds}{hint}"),
                    ));
                    None
                }
            },
            other => {
                errors.push(here(
                    e.key_pos,
                    &FieldPath::root().key("kind"),
                    format!("expected one of {kinds}, found {}", other.kind_name()),
                ));
                None
            }
        },
    };
    let kind = kind.filter(|_| ok)?;

    let sources = subst::Sources {
        vars: &opts.vars,
        env: &opts.env,
    };
    let t = std::time::Instant::now();
    let subst_errors = subst::substitute(&mut root, &sources);
    tracing::debug!(elapsed = ?t.elapsed(), "substituted");
    if !subst_errors.is_empty() {
        for e in subst_errors {
            errors.push(here(e.pos, &e.path, e.message));
        }
        return None;
    }

    let t = std::time::Instant::now();
    let instance = root.to_json();
    tracing::debug!(elapsed = ?t.elapsed(), "converted to JSON");
    let t = std::time::Instant::now();
    let violations = validate::validate(kind, &root, &instance);
    tracing::debug!(elapsed = ?t.elapsed(), "schema checked");
    let violations = match violations {
        Ok(v) => v,
        Err(message) => {
            errors.push(here(root.pos, &FieldPath::root(), message));
            return None;
        }
    };
    if !violations.is_empty() {
        for v in violations {
            errors.push(here(v.pos, &v.path, v.message));
        }
        return None;
    }

    let t = std::time::Instant::now();
    let body = match kind {
        "Resources" => serde_json::from_value(instance).map(DocumentBody::Resources),
        "Foundation" => {
            serde_json::from_value(instance).map(|f| DocumentBody::Foundation(Box::new(f)))
        }
        "Environment" => {
            serde_json::from_value(instance).map(|e| DocumentBody::Environment(Box::new(e)))
        }
        other => {
            errors.push(here(
                root.pos,
                &FieldPath::root(),
                format!("unknown kind `{other}`: expected one of {kinds}"),
            ));
            return None;
        }
    };
    tracing::debug!(elapsed = ?t.elapsed(), "typed");
    match body {
        Ok(body) => Some(Document {
            file: file.to_path_buf(),
            index,
            body,
            attachments: BTreeMap::new(),
            root,
        }),
        Err(e) => {
            errors.push(here(
                root.pos,
                &FieldPath::root(),
                format!("document does not match the `{kind}` shape: {e}"),
            ));
            None
        }
    }
}

/// Reads a variables file: a YAML (or JSON) mapping of variable name to value.
/// An empty file gives no variables.
///
/// # Errors
///
/// Returns the problems found, each naming the file: unreadable, not UTF-8, not YAML,
/// more than one document, not a mapping, or a name that is not a valid variable name.
pub fn load_var_file(path: &Path) -> Result<BTreeMap<String, serde_json::Value>, SpecErrors> {
    let text = read_text(path)?;
    parse_var_text(path, &text)
}

fn parse_var_text(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, serde_json::Value>, SpecErrors> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(pos) = nul_position(text) {
        return Err(at(
            path,
            pos,
            &FieldPath::root(),
            "file contains a NUL byte: expected UTF-8 YAML text (is this a binary file?)",
        )
        .into());
    }
    let mut errors = Errors::default();
    let stream = yaml::parse_stream(text);
    if let Some(fatal) = stream.fatal {
        errors.push(at(path, fatal.pos, &FieldPath::root(), fatal.message));
    }
    let mut vars = BTreeMap::new();
    for (i, raw) in stream.docs.into_iter().enumerate() {
        for e in &raw.errors {
            errors.push(at(path, e.pos, &FieldPath::root(), e.message.clone()));
        }
        if i > 0 {
            errors.push(at(
                path,
                raw.root.pos,
                &FieldPath::root(),
                "a variables file holds one document: expected a single mapping of NAME: VALUE",
            ));
            continue;
        }
        let Value::Map(entries) = &raw.root.value else {
            errors.push(at(
                path,
                raw.root.pos,
                &FieldPath::root(),
                format!(
                    "variables file is {}: expected a mapping of NAME: VALUE",
                    raw.root.value.kind_name()
                ),
            ));
            continue;
        };
        for e in entries {
            if subst::is_var_name(&e.key) {
                vars.insert(e.key.clone(), e.value.to_json());
            } else {
                errors.push(at(
                    path,
                    e.key_pos,
                    &FieldPath::root().key(e.key.as_str()),
                    format!(
                        "invalid variable name `{}`: use letters, digits, `_` and `-`, not starting with a digit or `-`",
                        e.key
                    ),
                ));
            }
        }
    }
    errors.finish()?;
    Ok(vars)
}

/// Parses a `--var NAME=VALUE` argument; the value is always a string.
///
/// # Errors
///
/// Returns an error when there is no `=` or the name is not a valid variable name.
pub fn parse_var_arg(s: &str) -> Result<(String, serde_json::Value), SpecError> {
    let Some((name, value)) = s.split_once('=') else {
        return Err(SpecError::bare(format!(
            "invalid --var `{s}`: expected NAME=VALUE"
        )));
    };
    if !subst::is_var_name(name) {
        return Err(SpecError::bare(format!(
            "invalid --var `{s}`: variable name `{name}` must be letters, digits, `_` and `-`, not starting with a digit or `-`"
        )));
    }
    Ok((name.to_owned(), serde_json::Value::String(value.to_owned())))
}
