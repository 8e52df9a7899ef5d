//! `aws_s3_bucket_versioning`: the versioning state of a bucket (`Enabled` or
//! `Suspended`). A bucket that was never versioned reads as `Suspended`; delete suspends
//! versioning (a bucket cannot go back to never-versioned).

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, ChangeRequest, ProviderError},
    crate::state::ResourceState,
    aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration},
    serde_json::Value,
};

/// The `aws_s3_bucket_versioning` type.
pub struct S3BucketVersioning;

/// The attribute table of `aws_s3_bucket_versioning`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    ("bucket", AttrKind::String, Mode::RequiredNew, "The bucket."),
    (
        "status",
        AttrKind::String,
        Mode::Required,
        "`Enabled` or `Suspended`.",
    ),
];

#[async_trait]
impl AwsResource for S3BucketVersioning {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_s3_bucket_versioning",
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
        let status = match c.s3.get_bucket_versioning().bucket(bucket).send().await {
            Ok(out) => out.status().map(|s| s.as_str().to_string()),
            Err(e) => {
                // moto answers with a `GetBucketVersioningResponse` root element, which the
                // SDK refuses (S3's is `VersioningConfiguration`); its body still says
                // the status.
                let body = e
                    .raw_response()
                    .filter(|r| r.status().as_u16() == 200)
                    .and_then(|r| r.body().bytes())
                    .map(|b| String::from_utf8_lossy(b).into_owned());
                match body {
                    Some(b) => b
                        .split_once("<Status>")
                        .and_then(|(_, r)| r.split_once("</Status>"))
                        .map(|(s, _)| s.to_string()),
                    None => {
                        let e = c.error("s3", "GetBucketVersioning", &e);
                        if e.kind == crate::providers::ErrorKind::NotFound {
                            return Ok(None);
                        }
                        return Err(e);
                    }
                }
            }
        };
        let status = status.unwrap_or_else(|| "Suspended".to_string());
        Ok(Some(sdk::observed(
            recorded,
            vec![("status", Value::from(status))],
            &[],
            sdk::outputs([("id", Value::from(bucket))]),
        )))
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let bucket = sdk::str_attr(req.attributes, "bucket")?;
        let status = sdk::str_attr(req.attributes, "status")?;
        if !matches!(status, "Enabled" | "Suspended") {
            return Err(ProviderError::invalid(format!(
                "versioning status `{status}` is not `Enabled` or `Suspended`"
            )));
        }
        put(c, bucket, status).await?;
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
        sdk::found(put(c, bucket, "Suspended").await).map(|_| ())
    }
}

#[cfg(feature = "aws")]
async fn put(c: &Clients, bucket: &str, status: &str) -> Result<(), ProviderError> {
    c.s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::from(status))
                .build(),
        )
        .send()
        .await
        .map_err(c.err("s3", "PutBucketVersioning"))?;
    Ok(())
}
