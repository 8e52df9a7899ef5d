//! The `null` provider: `null_resource`, which records its attributes and generates an
//! `id`. Used for tests, benchmarks and glue. It has no real world: `read` returns what
//! was recorded.
//!
//! Two attributes exist for testing anvil itself: `fail_on` (`create`, `update` or
//! `delete`) makes that operation fail, and `sleep_ms` delays every operation.

use super::{Applied, ChangeRequest, Provider, ProviderError};
use crate::model::{AttrKind, AttrSchema, ResourceSchema};
use crate::state::ResourceState;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct NullProvider;

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

async fn behave(
    attrs: &BTreeMap<String, Value>,
    op: &str,
    address: &str,
) -> Result<(), ProviderError> {
    if let Some(ms) = attrs.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if attrs.get("fail_on").and_then(Value::as_str) == Some(op) {
        return Err(ProviderError::new(format!(
            "{address}: {op} failed because `fail_on: {op}` is set (testing aid)"
        )));
    }
    Ok(())
}

#[async_trait]
impl Provider for NullProvider {
    fn name(&self) -> &'static str {
        "null"
    }

    fn schemas(&self) -> Vec<ResourceSchema> {
        vec![schema()]
    }

    fn concurrency_limit(&self) -> usize {
        usize::MAX
    }

    fn reads_real_world(&self) -> bool {
        false
    }

    async fn read(
        &self,
        _address: &str,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        Ok(Some(recorded.clone()))
    }

    /// Any non-empty ID becomes the `id` output; the attributes are taken from the spec
    /// when the import is recorded (there is no real object to read them from).
    async fn import(
        &self,
        address: &str,
        ty: &str,
        id: &str,
    ) -> Result<ResourceState, ProviderError> {
        if ty != "null_resource" {
            return Err(ProviderError::new(format!(
                "{address}: the null provider has no resource type `{ty}`"
            )));
        }
        if id.trim().is_empty() {
            return Err(ProviderError::new(format!(
                "{address}: the import ID of a null_resource becomes its `id` and must not be empty"
            )));
        }
        let mut outputs = BTreeMap::new();
        outputs.insert("id".to_string(), Value::String(id.to_string()));
        Ok(super::imported_record(ty, "null", BTreeMap::new(), outputs))
    }

    async fn create(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        behave(req.attributes, "create", req.address).await?;
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

    async fn update(&self, req: ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        behave(req.attributes, "update", req.address).await?;
        let outputs = req.prior.map(|p| p.outputs.clone()).unwrap_or_default();
        Ok(Applied {
            attributes: req.attributes.clone(),
            outputs,
        })
    }

    async fn delete(&self, address: &str, recorded: &ResourceState) -> Result<(), ProviderError> {
        behave(&recorded.attributes, "delete", address).await
    }
}
