//! `aws_s3_bucket`: an S3 bucket, tagged like everything anvil makes. Create adopts a
//! bucket of the same name tagged with this state's lineage and refuses one that is
//! not; delete empties the bucket first (all versions) only with `force_destroy`.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, ChangeRequest, ErrorKind, ProviderError},
    crate::state::ResourceState,
    aws_sdk_s3::types::{
        BucketLocationConstraint, CreateBucketConfiguration, Delete, ObjectIdentifier, Tag, Tagging,
    },
    serde_json::Value,
};

/// The `aws_s3_bucket` type.
pub struct S3Bucket;

/// The attribute table of `aws_s3_bucket`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    (
        "bucket",
        AttrKind::String,
        Mode::RequiredNew,
        "The bucket name (globally unique).",
    ),
    (
        "force_destroy",
        AttrKind::Bool,
        Mode::Optional,
        "Whether delete empties the bucket first (else a non-empty bucket is not deleted).",
    ),
];

#[async_trait]
impl AwsResource for S3Bucket {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_s3_bucket",
            ATTRS,
            true,
            &[("id", "The bucket name."), ("arn", "The bucket ARN.")],
        )
    }

    #[cfg(feature = "aws")]
    async fn read(
        &self,
        c: &Clients,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        let bucket = sdk::str_attr(&recorded.attributes, "bucket")?;
        let Some(tags) = tags(c, bucket).await? else {
            return Ok(None);
        };
        Ok(Some(sdk::observed(
            recorded,
            vec![(
                "tags",
                sdk::user_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            )],
            &["tags"],
            outputs(bucket),
        )))
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let bucket = sdk::str_attr(a, "bucket")?;
        match tags(c, bucket).await? {
            Some(t)
                if sdk::has_lineage(
                    t.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    req.lineage,
                ) => {}
            // S3 cannot tag a bucket as it creates it: a bucket this account can see with
            // no tags at all is one a killed run created and had not tagged yet.
            Some(t) if t.is_empty() => {}
            Some(_) => return Err(sdk::not_ours("S3 bucket", bucket)),
            None => {
                let mut create = c.s3.create_bucket().bucket(bucket);
                if c.region() != "us-east-1" {
                    create = create.create_bucket_configuration(
                        CreateBucketConfiguration::builder()
                            .location_constraint(BucketLocationConstraint::from(c.region()))
                            .build(),
                    );
                }
                if let Err(e) = create.send().await {
                    let e = c.error("s3", "CreateBucket", &e);
                    if !e.message.contains("BucketAlreadyOwnedByYou") {
                        return Err(e);
                    }
                }
            }
        }
        put_tags(c, bucket, &sdk::all_tags(req.address, req.lineage, a)).await?;
        Ok(sdk::applied(req, outputs(bucket)))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let bucket = sdk::str_attr(req.attributes, "bucket")?;
        put_tags(
            c,
            bucket,
            &sdk::all_tags(req.address, req.lineage, req.attributes),
        )
        .await?;
        Ok(sdk::applied(req, outputs(bucket)))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let bucket = sdk::str_attr(&recorded.attributes, "bucket")?;
        if sdk::opt_bool(&recorded.attributes, "force_destroy") == Some(true) {
            empty(c, bucket).await?;
        }
        match c.s3.delete_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = c.error("s3", "DeleteBucket", &e);
                if e.kind == ErrorKind::NotFound {
                    Ok(())
                } else if e.message.contains("BucketNotEmpty") {
                    Err(ProviderError {
                        message: format!(
                            "{}; empty the bucket, or set `force_destroy: true` and apply before destroying",
                            e.message
                        ),
                        ..e
                    })
                } else {
                    Err(e)
                }
            }
        }
    }
}

#[cfg(feature = "aws")]
fn outputs(bucket: &str) -> std::collections::BTreeMap<String, Value> {
    sdk::outputs([
        ("id", Value::from(bucket)),
        ("arn", Value::from(format!("arn:aws:s3:::{bucket}"))),
    ])
}

/// The bucket's tags, `None` when the bucket does not exist.
#[cfg(feature = "aws")]
async fn tags(c: &Clients, bucket: &str) -> Result<Option<Vec<(String, String)>>, ProviderError> {
    if sdk::found(
        c.s3.head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(c.err("s3", "HeadBucket")),
    )?
    .is_none()
    {
        return Ok(None);
    }
    match c.s3.get_bucket_tagging().bucket(bucket).send().await {
        Ok(o) => Ok(Some(
            o.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
        )),
        Err(e) => {
            let e = c.error("s3", "GetBucketTagging", &e);
            if e.kind == ErrorKind::NotFound && e.message.contains("NoSuchTagSet") {
                Ok(Some(Vec::new()))
            } else if e.kind == ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(feature = "aws")]
async fn put_tags(
    c: &Clients,
    bucket: &str,
    tags: &[(String, String)],
) -> Result<(), ProviderError> {
    let set = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ProviderError::invalid(format!("bucket tags: {e}")))?;
    let tagging = Tagging::builder()
        .set_tag_set(Some(set))
        .build()
        .map_err(|e| ProviderError::invalid(format!("bucket tags: {e}")))?;
    c.s3.put_bucket_tagging()
        .bucket(bucket)
        .tagging(tagging)
        .send()
        .await
        .map_err(c.err("s3", "PutBucketTagging"))?;
    Ok(())
}

/// Deletes every object version and delete marker of the bucket, a page at a time.
#[cfg(feature = "aws")]
async fn empty(c: &Clients, bucket: &str) -> Result<(), ProviderError> {
    loop {
        let page = match sdk::found(
            c.s3.list_object_versions()
                .bucket(bucket)
                .send()
                .await
                .map_err(c.err("s3", "ListObjectVersions")),
        )? {
            Some(p) => p,
            None => return Ok(()),
        };
        let mut ids = Vec::new();
        for v in page.versions() {
            ids.push((v.key().unwrap_or_default(), v.version_id()));
        }
        for m in page.delete_markers() {
            ids.push((m.key().unwrap_or_default(), m.version_id()));
        }
        if ids.is_empty() {
            return Ok(());
        }
        let objects = ids
            .into_iter()
            .map(|(k, v)| {
                ObjectIdentifier::builder()
                    .key(k)
                    .set_version_id(v.map(str::to_string))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ProviderError::new(format!("emptying bucket {bucket}: {e}")))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| ProviderError::new(format!("emptying bucket {bucket}: {e}")))?;
        c.s3.delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(c.err("s3", "DeleteObjects"))?;
    }
}
