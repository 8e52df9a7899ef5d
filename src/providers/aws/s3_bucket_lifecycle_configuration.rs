//! `aws_s3_bucket_lifecycle_configuration`: one lifecycle rule (`anvil-expiration`)
//! expiring a bucket's objects after some days; delete removes the configuration.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, ChangeRequest, ProviderError},
    crate::state::ResourceState,
    aws_sdk_s3::types::{
        BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
        LifecycleRuleFilter,
    },
    serde_json::Value,
};

/// The ID of the rule anvil writes.
#[cfg(feature = "aws")]
const RULE_ID: &str = "anvil-expiration";

/// The `aws_s3_bucket_lifecycle_configuration` type.
pub struct S3BucketLifecycleConfiguration;

/// The attribute table of `aws_s3_bucket_lifecycle_configuration`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    ("bucket", AttrKind::String, Mode::RequiredNew, "The bucket."),
    (
        "expiration_days",
        AttrKind::Number,
        Mode::Required,
        "Days after which objects expire.",
    ),
];

#[async_trait]
impl AwsResource for S3BucketLifecycleConfiguration {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_s3_bucket_lifecycle_configuration",
            ATTRS,
            false,
            &[("id", "The bucket name.")],
        )
    }

    #[cfg(feature = "aws")]
    async fn read(
        &self,
        c: &Clients,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        let bucket = sdk::str_attr(&recorded.attributes, "bucket")?;
        let Some(out) = sdk::found(
            c.s3.get_bucket_lifecycle_configuration()
                .bucket(bucket)
                .send()
                .await
                .map_err(c.err("s3", "GetBucketLifecycleConfiguration")),
        )?
        else {
            return Ok(None);
        };
        let days = out
            .rules()
            .iter()
            .find(|r| r.id() == Some(RULE_ID))
            .and_then(|r| r.expiration())
            .and_then(|e| e.days());
        let Some(days) = days else {
            return Ok(None);
        };
        Ok(Some(sdk::observed(
            recorded,
            vec![("expiration_days", Value::from(days))],
            &[],
            sdk::outputs([("id", Value::from(bucket))]),
        )))
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let bucket = sdk::str_attr(req.attributes, "bucket")?;
        let days = sdk::opt_i64(req.attributes, "expiration_days")
            .and_then(|d| i32::try_from(d).ok())
            .filter(|d| *d > 0)
            .ok_or_else(|| {
                ProviderError::invalid(
                    "`expiration_days` must be a whole number of days, at least 1",
                )
            })?;
        let bad = |e: aws_sdk_s3::error::BuildError| {
            ProviderError::invalid(format!("lifecycle rule for bucket {bucket}: {e}"))
        };
        let rule = LifecycleRule::builder()
            .id(RULE_ID)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .expiration(LifecycleExpiration::builder().days(days).build())
            .build()
            .map_err(bad)?;
        let config = BucketLifecycleConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(bad)?;
        c.s3.put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(config)
            .send()
            .await
            .map_err(c.err("s3", "PutBucketLifecycleConfiguration"))?;
        Ok(sdk::applied(
            req,
            sdk::outputs([("id", Value::from(bucket))]),
        ))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        self.create(c, req).await
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let bucket = sdk::str_attr(&recorded.attributes, "bucket")?;
        sdk::found(
            c.s3.delete_bucket_lifecycle()
                .bucket(bucket)
                .send()
                .await
                .map_err(c.err("s3", "DeleteBucketLifecycle")),
        )
        .map(|_| ())
    }
}
