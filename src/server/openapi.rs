//! The OpenAPI 3.1 document of `anvil serve`, generated from the handlers' and bodies'
//! annotations (utoipa) and checked in as `schemas/openapi-environments.json` (a test
//! keeps it current). The request body's schema is the Environment spec's own JSON
//! Schema (schemars, as `anvil schema environment` prints it), so the API and spec files
//! can never disagree on what a document is.

use super::api;
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "anvil serve: environments API",
        description = "Submit Environment documents; workers plan, apply and bootstrap them through anvil's engine. See docs/serve.md.",
        license(name = "Apache-2.0")
    ),
    paths(
        api::create,
        api::list,
        api::show,
        api::destroy,
        api::refresh,
        api::events,
        api::health,
        api::metrics
    ),
    components(schemas(
        api::EnvironmentView,
        api::EnvironmentList,
        api::EventList,
        api::Health,
        api::ErrorBody,
        api::FieldError
    )),
    modifiers(&Bearer),
    tags(
        (name = "environments", description = "Environments and their jobs"),
        (name = "operations", description = "Health and metrics (no token needed)")
    )
)]
struct Doc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "ANVIL_SERVE_TOKEN, or a token of --token-file; its name is the user_id",
                    ))
                    .build(),
            ),
        );
    }
}

/// Prefix of the Environment schema's definitions among the components.
const DEF_PREFIX: &str = "EnvironmentDocument.";

/// The document, as JSON.
#[must_use]
pub fn document() -> Value {
    let mut doc = serde_json::to_value(Doc::openapi()).unwrap_or(Value::Null);
    // The version is the API's, not the binary's: bumping anvil must not make the
    // checked-in document stale.
    doc["info"]["version"] = json!("1");
    let mut env = crate::ops::schema("environment").unwrap_or(Value::Null);
    let defs = env
        .as_object_mut()
        .and_then(|o| {
            o.remove("$schema");
            // An `$id` would make the references inside resolve against it, not the document.
            o.remove("$id");
            o.remove("$defs")
        })
        .unwrap_or_else(|| json!({}));
    let schemas = &mut doc["components"]["schemas"];
    if let Value::Object(defs) = defs {
        for (name, mut schema) in defs {
            rewrite_refs(&mut schema);
            schemas[format!("{DEF_PREFIX}{name}")] = schema;
        }
    }
    rewrite_refs(&mut env);
    schemas["EnvironmentDocument"] = env;
    let body_ref = json!({"$ref": "#/components/schemas/EnvironmentDocument"});
    doc["paths"][api::ENVIRONMENTS]["post"]["requestBody"] = json!({
        "description": "An Environment document (docs/environment.md), as JSON or YAML; checked exactly like a spec file",
        "required": true,
        "content": {
            "application/json": {"schema": body_ref},
            "application/yaml": {"schema": body_ref},
        }
    });
    doc
}

/// `#/$defs/X` (schemars) → `#/components/schemas/EnvironmentDocument.X`.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "$ref" {
                    if let Some(name) = child.as_str().and_then(|r| r.strip_prefix("#/$defs/")) {
                        *child = json!(format!("#/components/schemas/{DEF_PREFIX}{name}"));
                    }
                } else {
                    rewrite_refs(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// The document as checked in: pretty JSON and a final newline.
#[must_use]
pub fn text() -> String {
    serde_json::to_string_pretty(&document()).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    /// `schemas/openapi-environments.json` is generated; `UPDATE_SCHEMAS=1 cargo test`
    /// rewrites it.
    #[test]
    fn checked_in_openapi_document_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/openapi-environments.json"
        );
        let want = super::text();
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "{path} is stale: run `UPDATE_SCHEMAS=1 cargo test` and commit it"
        );
    }

    #[test]
    fn every_reference_resolves_and_every_route_is_documented() {
        let doc = super::document();
        let text = doc.to_string();
        assert!(!text.contains("#/$defs/"), "unrewritten schemars reference");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for r in text.split("\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
        for (path, method) in [
            ("/api/v1/environments", "post"),
            ("/api/v1/environments", "get"),
            ("/api/v1/environments/{id}", "get"),
            ("/api/v1/environments/{id}", "delete"),
            ("/api/v1/environments/{id}/refresh", "post"),
            ("/api/v1/environments/{id}/events", "get"),
            ("/health", "get"),
            ("/metrics", "get"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        assert_eq!(
            doc["paths"]["/api/v1/environments"]["post"]["requestBody"]["content"]
                ["application/json"]["schema"]["$ref"],
            "#/components/schemas/EnvironmentDocument"
        );
    }
}
