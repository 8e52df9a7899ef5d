//! An Environment document submitted to `anvil serve` (`POST /api/v1/environments`),
//! checked exactly like a spec file: the same loader (`spec::load_str`: envelope, JSON
//! Schema, typed decoding), the same normalisation (`model::build`: CIDRs, zones, ARNs,
//! bucket names) and the same provider-settings check, under a virtual file name so
//! every error names `file:line:column` and the field path.
//!
//! Differences from a spec file on disk, on purpose: the body must hold exactly one
//! document, of kind `Environment`; `${env:…}` and `${var.…}` resolve to nothing (a
//! client must not read the server's environment, which holds its tokens), so they are
//! reported as unset.

use crate::model;
use crate::providers::Registry;
use crate::spec::{self, DocumentBody, FieldPath, LoadOptions, Location, SpecError, SpecErrors};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// How the body is written (from its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
}

/// A submitted document that passed every check.
#[derive(Debug, Clone)]
pub struct CheckedEnvironment {
    /// `metadata.name`: the environment's name and its state workspace.
    pub name: String,
    /// The document in its canonical JSON form (what the queue records and the worker
    /// loads again).
    pub document: serde_json::Value,
    /// The loaded spec, ready for the model (the worker uses it; the API drops it).
    pub spec: spec::Spec,
}

/// Why a submitted document was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentDocError {
    /// The body is not JSON / YAML at all (the API answers 400).
    #[error("{location}: the body is not valid {format}: {message}")]
    Malformed {
        location: Location,
        format: &'static str,
        message: String,
    },
    /// It parses but is not a valid Environment document (the API answers 422); every
    /// error names the field path and `line:column`.
    #[error(transparent)]
    Invalid(SpecErrors),
}

/// The virtual file name of environment `key`'s document in errors: `environments/KEY.yaml`.
#[must_use]
pub fn virtual_file(key: &str, format: BodyFormat) -> PathBuf {
    let ext = match format {
        BodyFormat::Json => "json",
        BodyFormat::Yaml => "yaml",
    };
    Path::new("environments").join(format!("{key}.{ext}"))
}

/// Checks a submitted body: it parses as `format`, holds exactly one document of kind
/// `Environment` that loads like a spec file, and the model built from it is valid.
/// `file` is the name errors locate problems in (see [`virtual_file`]).
///
/// # Errors
/// [`EnvironmentDocError::Malformed`] when the text does not parse (with its
/// `line:column`); [`EnvironmentDocError::Invalid`] with every problem, located, otherwise.
pub fn check(
    file: &Path,
    text: &str,
    format: BodyFormat,
) -> Result<CheckedEnvironment, EnvironmentDocError> {
    if text.trim().is_empty() {
        return Err(EnvironmentDocError::Malformed {
            location: Location {
                file: file.to_path_buf(),
                line: 1,
                column: 1,
            },
            format: format_name(format),
            message: "the body is empty; send an Environment document (docs/environment.md)".into(),
        });
    }
    let text = match format {
        BodyFormat::Json => Cow::Owned(json_text(file, text)?),
        BodyFormat::Yaml => Cow::Borrowed(text),
    };
    let opts = LoadOptions::default();
    let spec = spec::load_str(file, &text, &opts).map_err(|errors| {
        // A YAML syntax error is told apart from a document that is merely wrong only
        // when loading failed, so a good document is scanned once.
        if format == BodyFormat::Yaml {
            if let Err(malformed) = yaml_syntax(file, &text) {
                return malformed;
            }
        }
        EnvironmentDocError::Invalid(errors)
    })?;
    let doc = match spec.documents.as_slice() {
        [only] => only,
        [] => {
            return Err(invalid(SpecError::file(
                file,
                "the body holds no document; send one Environment document",
            )))
        }
        [_, second, ..] => {
            return Err(invalid(second.error_at(
                &FieldPath::root(),
                "the body holds more than one document; send exactly one Environment document per request",
            )))
        }
    };
    let DocumentBody::Environment(env) = &doc.body else {
        return Err(invalid(doc.error_at(
            &FieldPath::root().key("kind"),
            format!(
                "`kind: {}` is not served here; POST an `kind: Environment` document",
                doc.kind()
            ),
        )));
    };
    // The built-in providers and their schemas, made once: a check only reads them.
    static BUILTIN: OnceLock<Registry> = OnceLock::new();
    let registry = BUILTIN.get_or_init(Registry::builtin);
    let model = model::build(&spec, registry.schemas()).map_err(EnvironmentDocError::Invalid)?;
    registry.check_instances(&model.providers).map_err(|errs| {
        EnvironmentDocError::Invalid(SpecErrors(
            errs.into_iter()
                .map(|(i, e)| model.providers[i].error(e.message))
                .collect(),
        ))
    })?;
    let document = serde_json::to_value(env.as_ref()).map_err(|e| {
        invalid(SpecError::file(
            file,
            format!("the document could not be recorded as JSON: {e}"),
        ))
    })?;
    Ok(CheckedEnvironment {
        name: env.metadata.name.clone(),
        document,
        spec,
    })
}

fn invalid(e: SpecError) -> EnvironmentDocError {
    EnvironmentDocError::Invalid(SpecErrors(vec![e]))
}

fn format_name(format: BodyFormat) -> &'static str {
    match format {
        BodyFormat::Json => "JSON",
        BodyFormat::Yaml => "YAML",
    }
}

/// JSON is checked by a JSON parser (its errors are the ones a client expects), then
/// loaded as YAML text: JSON is YAML, so locations point into the body as sent. A JSON
/// text the YAML scanner refuses (tabs before keys) is loaded re-indented instead.
fn json_text(file: &Path, text: &str) -> Result<String, EnvironmentDocError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| EnvironmentDocError::Malformed {
            location: Location {
                file: file.to_path_buf(),
                line: e.line().max(1),
                column: e.column().max(1),
            },
            format: "JSON",
            message: e.to_string(),
        })?;
    if yaml_syntax(file, text).is_ok() {
        return Ok(text.to_string());
    }
    serde_json::to_string_pretty(&value).map_err(|e| EnvironmentDocError::Malformed {
        location: Location {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
        },
        format: "JSON",
        message: e.to_string(),
    })
}

/// Scans the YAML events without building a tree (no recursion, no alias expansion),
/// so a syntax error is told apart from a document that is merely wrong.
fn yaml_syntax(file: &Path, text: &str) -> Result<(), EnvironmentDocError> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                return Err(EnvironmentDocError::Malformed {
                    location: Location {
                        file: file.to_path_buf(),
                        line: e.marker().line().max(1),
                        column: e.marker().col() + 1,
                    },
                    format: "YAML",
                    message: e.info().to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: anvil/v1
kind: Environment
metadata:
  name: demo
provider: aws
region: eu-central-1
account_id: \"123456789012\"
size: small
network:
  cidr: 10.20.0.0/16
  az_count: 2
kubernetes:
  version: \"1.31\"
";

    fn file() -> PathBuf {
        virtual_file("new", BodyFormat::Yaml)
    }

    #[test]
    fn a_good_yaml_document_is_accepted_with_its_name_and_canonical_json() {
        let c = check(&file(), GOOD, BodyFormat::Yaml).unwrap();
        assert_eq!(c.name, "demo");
        assert_eq!(c.document["network"]["cidr"], "10.20.0.0/16");
        assert_eq!(c.document["kind"], "Environment");
    }

    #[test]
    fn the_canonical_json_is_accepted_again_as_json() {
        let c = check(&file(), GOOD, BodyFormat::Yaml).unwrap();
        let text = serde_json::to_string(&c.document).unwrap();
        let again = check(&file(), &text, BodyFormat::Json).unwrap();
        assert_eq!(again.document, c.document);
    }

    #[test]
    fn json_with_tabs_is_loaded_and_errors_still_name_the_field() {
        let text = "{\n\t\"apiVersion\": \"anvil/v1\",\n\t\"kind\": \"Environment\",\n\t\"metadata\": {\"name\": \"Bad_Name\"}\n}";
        let Err(EnvironmentDocError::Invalid(errs)) = check(&file(), text, BodyFormat::Json) else {
            panic!("expected schema errors");
        };
        assert!(errs.0.iter().any(|e| e.path == "metadata.name"), "{errs}");
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = check(&file(), "{\n  \"kind\": ,\n}", BodyFormat::Json).unwrap_err();
        let EnvironmentDocError::Malformed { location, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!((location.line, location.column), (2, 11), "{err}");
        assert!(
            err.to_string().starts_with("environments/new.yaml:2:11"),
            "{err}"
        );
    }

    #[test]
    fn malformed_yaml_is_malformed_not_invalid() {
        let err = check(&file(), "kind: [Environment\nmetadata: {", BodyFormat::Yaml).unwrap_err();
        assert!(
            matches!(err, EnvironmentDocError::Malformed { format: "YAML", .. }),
            "{err}"
        );
    }

    #[test]
    fn an_empty_body_is_malformed() {
        let err = check(&file(), " \n", BodyFormat::Json).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn schema_violations_name_the_field_path_and_position() {
        let text = GOOD.replace("az_count: 2", "az_count: many");
        let Err(EnvironmentDocError::Invalid(errs)) = check(&file(), &text, BodyFormat::Yaml)
        else {
            panic!("expected schema errors");
        };
        let e = errs
            .0
            .iter()
            .find(|e| e.path == "network.az_count")
            .unwrap();
        assert_eq!(e.location.as_ref().unwrap().line, 11, "{errs}");
    }

    #[test]
    fn model_checks_apply_as_to_a_spec_file() {
        let text = GOOD.replace("10.20.0.0/16", "10.20.0.0/33");
        let Err(EnvironmentDocError::Invalid(errs)) = check(&file(), &text, BodyFormat::Yaml)
        else {
            panic!("expected a model error");
        };
        assert!(errs.to_string().contains("network.cidr"), "{errs}");
    }

    #[test]
    fn other_kinds_and_several_documents_are_refused() {
        let text =
            "apiVersion: anvil/v1\nkind: Resources\nmetadata:\n  name: demo\nresources: []\n";
        let err = check(&file(), text, BodyFormat::Yaml).unwrap_err();
        assert!(err.to_string().contains("kind"), "{err}");
        let two = format!("{GOOD}---\n{GOOD}");
        let err = check(&file(), &two, BodyFormat::Yaml).unwrap_err();
        assert!(err.to_string().contains("more than one document"), "{err}");
    }

    #[test]
    fn the_servers_environment_is_not_readable() {
        std::env::set_var("ANVIL_DOC_TEST_SECRET", "hunter2");
        let text = GOOD.replace("team: x", "").replace(
            "size: small",
            "size: small\ntags:\n  leak: ${env:ANVIL_DOC_TEST_SECRET}",
        );
        let err = check(&file(), &text, BodyFormat::Yaml).unwrap_err();
        assert!(err.to_string().contains("tags.leak"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
