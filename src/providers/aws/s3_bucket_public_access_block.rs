//! `aws_s3_bucket_public_access_block`: the public access block of a bucket (all four
//! switches default to on); delete removes it.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, ChangeRequest, ProviderError},
    crate::state::ResourceState,
    aws_sdk_s3::types::PublicAccessBlockConfiguration,
    serde_json::Value,
};

/// The `aws_s3_bucket_public_access_block` type.
pub struct S3BucketPublicAccessBlock;

/// The four switches.
#[cfg(feature = "aws")]
const SWITCHES: [&str; 4] = [
    "block_public_acls",
    "block_public_policy",
    "ignore_public_acls",
    "restrict_public_buckets",
];

/// The attribute table of `aws_s3_bucket_public_access_block`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    ("bucket", AttrKind::String, Mode::RequiredNew, "The bucket."),
    (
        "block_public_acls",
        AttrKind::Bool,
        Mode::Optional,
        "Refuse new public ACLs (default true).",
    ),
    (
        "block_public_policy",
        AttrKind::Bool,
        Mode::Optional,
        "Refuse public bucket policies (default true).",
    ),
    (
        "ignore_public_acls",
        AttrKind::Bool,
        Mode::Optional,
        "Ignore existing public ACLs (default true).",
    ),
    (
        "restrict_public_buckets",
        AttrKind::Bool,
        Mode::Optional,
        "Restrict access under public policies (default true).",
    ),
];

#[async_trait]
impl AwsResource for S3BucketPublicAccessBlock {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_s3_bucket_public_access_block",
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
            c.s3.get_public_access_block()
                .bucket(bucket)
                .send()
                .await
                .map_err(c.err("s3", "GetPublicAccessBlock")),
        )?
        else {
            return Ok(None);
        };
        let Some(p) = out.public_access_block_configuration() else {
            return Ok(None);
        };
        let vals = [
            p.block_public_acls(),
            p.block_public_policy(),
            p.ignore_public_acls(),
            p.restrict_public_buckets(),
        ];
        Ok(Some(sdk::observed(
            recorded,
            SWITCHES
                .iter()
                .zip(vals)
                .map(|(k, v)| (*k, Value::from(v.unwrap_or(false))))
                .collect(),
            &[],
            sdk::outputs([("id", Value::from(bucket))]),
        )))
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let bucket = sdk::str_attr(a, "bucket")?;
        let on = |k: &str| sdk::opt_bool(a, k).unwrap_or(true);
        c.s3.put_public_access_block()
            .bucket(bucket)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(on("block_public_acls"))
                    .block_public_policy(on("block_public_policy"))
                    .ignore_public_acls(on("ignore_public_acls"))
                    .restrict_public_buckets(on("restrict_public_buckets"))
                    .build(),
            )
            .send()
            .await
            .map_err(c.err("s3", "PutPublicAccessBlock"))?;
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
            c.s3.delete_public_access_block()
                .bucket(bucket)
                .send()
                .await
                .map_err(c.err("s3", "DeletePublicAccessBlock")),
        )
        .map(|_| ())
    }
}
