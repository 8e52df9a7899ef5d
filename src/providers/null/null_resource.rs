//! `null_resource`: records its attributes and generates an `id`; `read` returns what
//! was recorded.
//!
//! Two attributes exist for testing anvil itself: `fail_on` (`create`, `update` or
//! `delete`) makes that operation fail, and `sleep_ms` delays every operation.

use super::NullContext;
use crate::model::{AttrKind, AttrSchema, ResourceSchema};
use crate::providers::resource::ResourceType;
use crate::providers::{Applied, ChangeRequest, ProviderError};
use crate::state::ResourceState;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The `null_resource` type.
pub struct NullResource;

fn schema() -> ResourceSchema {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "triggers".into(),
        AttrSchema::new(AttrKind::Map, "Values whose change replaces the resource.").force_new(),
    );
    attributes.insert(
        "inputs".into(),
        AttrSchema::new(
            AttrKind::Any,
            "Values recorded as they are; a change updates in place.",
        ),
    );
    attributes.insert(
        "sensitive_inputs".into(),
        AttrSchema::new(
            AttrKind::Map,
            "Like inputs, but redacted and stored only as a fingerprint.",
        )
        .sensitive(),
    );
    attributes.insert(
        "fail_on".into(),
        AttrSchema::new(
            AttrKind::String,
            "Testing aid: `create`, `update` or `delete` makes that operation fail.",
        ),
    );
    attributes.insert(
        "sleep_ms".into(),
        AttrSchema::new(
            AttrKind::Number,
            "Testing aid: milliseconds every operation takes.",
        ),
    );
    let mut outputs = BTreeMap::new();
    outputs.insert("id".into(), "A random identifier generated on create.");
    ResourceSchema {
        ty: "null_resource".into(),
        provider: "null".into(),
        attributes,
        outputs,
    }
}

/// The testing aids. A `sleep_ms` wait ends early, as an error, when the run is aborted
/// (`cancel`), like a provider that stops following a long remote operation.
async fn behave(
    attrs: &BTreeMap<String, Value>,
    op: &str,
    cancel: Option<&tokio_util::sync::CancellationToken>,
) -> Result<(), ProviderError> {
    if let Some(ms) = attrs.get("sleep_ms").and_then(Value::as_u64) {
        let sleep = tokio::time::sleep(Duration::from_millis(ms));
        match cancel {
            Some(cancel) => tokio::select! {
                () = sleep => {}
                () = cancel.cancelled() => {
                    return Err(ProviderError::cancelled(format!(
                        "{op} aborted after the run was interrupted twice; it is retried by the next apply"
                    )));
                }
            },
            None => sleep.await,
        }
    }
    if attrs.get("fail_on").and_then(Value::as_str) == Some(op) {
        return Err(ProviderError::new(format!(
            "{op} failed because `fail_on: {op}` is set (testing aid)"
        )));
    }
    Ok(())
}

#[async_trait]
impl ResourceType<NullContext> for NullResource {
    fn schema(&self) -> ResourceSchema {
        schema()
    }

    async fn read(
        &self,
        _: &NullContext,
        _address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        Ok(Some(recorded.clone()))
    }

    /// Any non-empty ID becomes the `id` output; the attributes are taken from the spec
    /// when the import is recorded (there is no real object to read them from).
    async fn import(&self, _: &NullContext, id: &str) -> Result<ResourceState, ProviderError> {
        if id.trim().is_empty() {
            return Err(ProviderError::invalid(
                "the import ID of a null_resource becomes its `id` and must not be empty",
            ));
        }
        let mut outputs = BTreeMap::new();
        outputs.insert("id".to_string(), Value::String(id.to_string()));
        Ok(crate::providers::imported_record(
            "null_resource",
            "null",
            BTreeMap::new(),
            outputs,
        ))
    }

    async fn create(
        &self,
        _: &NullContext,
        req: &ChangeRequest<'_>,
    ) -> Result<Applied, ProviderError> {
        behave(req.attributes, "create", Some(&req.cancel)).await?;
        let mut outputs = BTreeMap::new();
        outputs.insert(
            "id".to_string(),
            Value::String(uuid::Uuid::new_v4().simple().to_string()),
        );
        Ok(Applied {
            attributes: req.attributes.clone(),
            outputs,
        })
    }

    async fn update(
        &self,
        _: &NullContext,
        req: &ChangeRequest<'_>,
    ) -> Result<Applied, ProviderError> {
        behave(req.attributes, "update", Some(&req.cancel)).await?;
        let outputs = req.prior.map(|p| p.outputs.clone()).unwrap_or_default();
        Ok(Applied {
            attributes: req.attributes.clone(),
            outputs,
        })
    }

    async fn delete(
        &self,
        _: &NullContext,
        _address: &str,
        recorded: &ResourceState,
    ) -> Result<(), ProviderError> {
        behave(&recorded.attributes, "delete", None).await
    }
}
