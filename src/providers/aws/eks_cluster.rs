//! `aws_eks_cluster`: an EKS control plane. Its name, role, subnets and security groups
//! force replacement; the Kubernetes version is upgraded in place. Create and upgrades
//! wait for `ACTIVE`, delete until the cluster is gone (retried while node groups still
//! hold it). Create adopts a cluster of that name tagged with this state's lineage.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    super::waiter::{self, Probe, Wait},
    crate::providers::{
        Applied, CancellationToken, ChangeRequest, ErrorKind, ProgressFn, ProviderError,
    },
    crate::state::ResourceState,
    aws_sdk_eks::types::VpcConfigRequest,
    serde_json::Value,
    std::collections::HashMap,
    std::time::Duration,
};

/// The `aws_eks_cluster` type.
pub struct EksCluster;

/// The attribute table of `aws_eks_cluster`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    (
        "name",
        AttrKind::String,
        Mode::RequiredNew,
        "The cluster name.",
    ),
    (
        "role_arn",
        AttrKind::String,
        Mode::RequiredNew,
        "The IAM role the control plane uses.",
    ),
    (
        "subnet_ids",
        AttrKind::List,
        Mode::RequiredNew,
        "The subnets of the control plane's network interfaces.",
    ),
    (
        "security_group_ids",
        AttrKind::List,
        Mode::OptionalNew,
        "Extra security groups for the control plane.",
    ),
    (
        "version",
        AttrKind::String,
        Mode::Optional,
        "The Kubernetes version, e.g. `1.31` (upgraded in place).",
    ),
];

/// How long a control plane may take to become active or go away.
#[cfg(feature = "aws")]
pub(super) const EKS_TIMEOUT: Duration = Duration::from_secs(45 * 60);

#[async_trait]
impl AwsResource for EksCluster {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_eks_cluster",
            ATTRS,
            true,
            &[
                ("id", "The cluster name."),
                ("arn", "The cluster ARN."),
                ("endpoint", "The API server endpoint."),
                ("status", "The cluster status (`ACTIVE`)."),
                (
                    "certificate_authority",
                    "The cluster's CA certificate, base64-encoded PEM (a kubeconfig's `certificate-authority-data`).",
                ),
            ],
        )
    }

    #[cfg(feature = "aws")]
    async fn read(
        &self,
        c: &Clients,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        let name = sdk::str_attr(&recorded.attributes, "name")?;
        let Some(k) = describe(c, name).await? else {
            return Ok(None);
        };
        if k.status().map(|s| s.as_str()) == Some("DELETING") {
            return Ok(None);
        }
        let vpc = k.resources_vpc_config();
        let list = |v: Option<&[String]>| -> Vec<Value> {
            v.unwrap_or_default()
                .iter()
                .map(|s| Value::from(s.as_str()))
                .collect()
        };
        Ok(Some(sdk::observed(
            recorded,
            vec![
                ("role_arn", Value::from(k.role_arn().unwrap_or_default())),
                ("version", Value::from(k.version().unwrap_or_default())),
                (
                    "subnet_ids",
                    sdk::align(
                        recorded.attributes.get("subnet_ids"),
                        list(vpc.map(|v| v.subnet_ids())),
                    ),
                ),
                (
                    "security_group_ids",
                    sdk::align(
                        recorded.attributes.get("security_group_ids"),
                        list(vpc.map(|v| v.security_group_ids())),
                    ),
                ),
                ("tags", tags_value(k.tags())),
            ],
            &["tags"],
            outputs(&k),
        )))
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let name = sdk::str_attr(a, "name")?;
        let adopt = match describe(c, name).await? {
            Some(k) => {
                if !owned(k.tags(), req.lineage) {
                    return Err(sdk::not_ours("EKS cluster", name));
                }
                super::adopt_named(self, c, req, "EKS cluster", name, || remove(c, name)).await?
            }
            None => false,
        };
        if !adopt {
            c.eks
                .create_cluster()
                .name(name)
                .role_arn(sdk::str_attr(a, "role_arn")?)
                .resources_vpc_config(
                    VpcConfigRequest::builder()
                        .set_subnet_ids(Some(sdk::str_list(a, "subnet_ids")))
                        .set_security_group_ids(Some(sdk::str_list(a, "security_group_ids")))
                        .build(),
                )
                .set_version(sdk::opt_str(a, "version").map(str::to_string))
                .set_tags(Some(tag_map(&sdk::all_tags(req.address, req.lineage, a))))
                .send()
                .await
                .map_err(c.err("eks", "CreateCluster"))?;
        }
        let k = wait_active(c, name, &req.progress, &req.cancel).await?;
        Ok(sdk::applied(req, outputs(&k)))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let name = sdk::str_attr(a, "name")?;
        let k = describe(c, name).await?.ok_or_else(|| {
            ProviderError::of(
                ErrorKind::NotFound,
                format!("EKS cluster {name} is gone; run `anvil plan` to recreate it"),
            )
        })?;
        if let Some(v) = sdk::opt_str(a, "version").filter(|v| Some(*v) != k.version()) {
            c.eks
                .update_cluster_version()
                .name(name)
                .version(v)
                .send()
                .await
                .map_err(c.err("eks", "UpdateClusterVersion"))?;
        }
        retag(c, k.arn().unwrap_or_default(), k.tags(), req).await?;
        let k = wait_active(c, name, &req.progress, &req.cancel).await?;
        Ok(sdk::applied(req, outputs(&k)))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        remove(c, sdk::str_attr(&recorded.attributes, "name")?).await
    }
}

/// Deletes a cluster (retried while node groups still hold it) and waits until it is gone.
#[cfg(feature = "aws")]
async fn remove(c: &Clients, name: &str) -> Result<(), ProviderError> {
    sdk::delete_retrying(|| async {
        c.eks
            .delete_cluster()
            .name(name)
            .send()
            .await
            .map(|_| ())
            .map_err(c.err("eks", "DeleteCluster"))
    })
    .await?;
    let wait = Wait::gone(
        format!("EKS cluster {name}"),
        &[],
        Duration::from_secs(30),
        EKS_TIMEOUT,
    );
    let quiet: ProgressFn = std::sync::Arc::new(|_| {});
    waiter::until(
        &Status { c, name },
        &wait,
        &quiet,
        &CancellationToken::new(),
    )
    .await
}

#[cfg(feature = "aws")]
fn outputs(k: &aws_sdk_eks::types::Cluster) -> std::collections::BTreeMap<String, Value> {
    sdk::outputs([
        ("id", Value::from(k.name().unwrap_or_default())),
        ("arn", Value::from(k.arn().unwrap_or_default())),
        ("endpoint", k.endpoint().map_or(Value::Null, Value::from)),
        (
            "status",
            k.status().map_or(Value::Null, |s| Value::from(s.as_str())),
        ),
        (
            "certificate_authority",
            k.certificate_authority()
                .and_then(|c| c.data())
                .map_or(Value::Null, Value::from),
        ),
    ])
}

#[cfg(feature = "aws")]
async fn describe(
    c: &Clients,
    name: &str,
) -> Result<Option<aws_sdk_eks::types::Cluster>, ProviderError> {
    let out = sdk::found(
        c.eks
            .describe_cluster()
            .name(name)
            .send()
            .await
            .map_err(c.err("eks", "DescribeCluster")),
    )?;
    Ok(out.and_then(|o| o.cluster().cloned()))
}

#[cfg(feature = "aws")]
async fn wait_active(
    c: &Clients,
    name: &str,
    progress: &ProgressFn,
    cancel: &CancellationToken,
) -> Result<aws_sdk_eks::types::Cluster, ProviderError> {
    let wait = Wait::status(
        format!("EKS cluster {name}"),
        &["ACTIVE"],
        Duration::from_secs(30),
        EKS_TIMEOUT,
    )
    .failing_on(&["FAILED"]);
    waiter::until(&Status { c, name }, &wait, progress, cancel).await?;
    describe(c, name).await?.ok_or_else(|| {
        ProviderError::of(
            ErrorKind::NotFound,
            format!("EKS cluster {name} disappeared after it became active"),
        )
    })
}

/// The status of one cluster, for the waiter.
#[cfg(feature = "aws")]
struct Status<'a> {
    c: &'a Clients,
    name: &'a str,
}

#[cfg(feature = "aws")]
#[async_trait]
impl Probe for Status<'_> {
    async fn status(&self) -> Result<Option<String>, ProviderError> {
        Ok(describe(self.c, self.name)
            .await?
            .and_then(|k| k.status().map(|s| s.as_str().to_string())))
    }
}

/// Tags as EKS takes them.
#[cfg(feature = "aws")]
pub(super) fn tag_map(tags: &[(String, String)]) -> HashMap<String, String> {
    tags.iter().cloned().collect()
}

/// The user's tags of an EKS object.
#[cfg(feature = "aws")]
pub(super) fn tags_value(tags: Option<&HashMap<String, String>>) -> Value {
    sdk::user_tags(
        tags.into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// Whether an EKS object's tags put it in `lineage`.
#[cfg(feature = "aws")]
pub(super) fn owned(tags: Option<&HashMap<String, String>>, lineage: &str) -> bool {
    sdk::has_lineage(
        tags.into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        lineage,
    )
}

/// Makes an EKS object's user tags the requested ones.
///
/// # Errors
/// EKS refused.
#[cfg(feature = "aws")]
pub(super) async fn retag(
    c: &Clients,
    arn: &str,
    have: Option<&HashMap<String, String>>,
    req: &ChangeRequest<'_>,
) -> Result<(), ProviderError> {
    let want = sdk::all_tags(req.address, req.lineage, req.attributes);
    let same = have
        .is_some_and(|h| h.len() == want.len() && want.iter().all(|(k, v)| h.get(k) == Some(v)));
    if same {
        // Nothing to change (and moto cannot tag node groups at all).
        return Ok(());
    }
    let stale: Vec<String> = have
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| !want.iter().any(|(w, _)| w == *k))
        .cloned()
        .collect();
    if !stale.is_empty() {
        c.eks
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(stale))
            .send()
            .await
            .map_err(c.err("eks", "UntagResource"))?;
    }
    c.eks
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(tag_map(&want)))
        .send()
        .await
        .map_err(c.err("eks", "TagResource"))?;
    Ok(())
}
