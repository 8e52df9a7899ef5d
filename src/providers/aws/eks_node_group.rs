//! `aws_eks_node_group`: a managed node group. Its cluster, name, role, subnets,
//! instance types and disk size force replacement; `scaling_config` changes in place.
//! Create and updates wait for `ACTIVE`, delete until the group is gone. Create adopts
//! a group of that name tagged with this state's lineage.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::eks_cluster::{owned, retag, tag_map, tags_value, EKS_TIMEOUT},
    super::sdk::{self, Clients},
    super::waiter::{self, Probe, Wait},
    crate::providers::{
        Applied, CancellationToken, ChangeRequest, ErrorKind, ProgressFn, ProviderError,
    },
    crate::state::ResourceState,
    aws_sdk_eks::types::NodegroupScalingConfig,
    serde_json::{Map, Value},
    std::time::Duration,
};

/// The `aws_eks_node_group` type.
pub struct EksNodeGroup;

/// The attribute table of `aws_eks_node_group`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    (
        "cluster_name",
        AttrKind::String,
        Mode::RequiredNew,
        "The cluster, `${aws_eks_cluster.NAME.id}`.",
    ),
    (
        "node_group_name",
        AttrKind::String,
        Mode::RequiredNew,
        "The node group name.",
    ),
    (
        "node_role_arn",
        AttrKind::String,
        Mode::RequiredNew,
        "The IAM role of the nodes.",
    ),
    (
        "subnet_ids",
        AttrKind::List,
        Mode::RequiredNew,
        "The subnets of the nodes.",
    ),
    (
        "instance_types",
        AttrKind::List,
        Mode::OptionalNew,
        "Instance types, e.g. `[m6i.large]`.",
    ),
    (
        "disk_size",
        AttrKind::Number,
        Mode::OptionalNew,
        "Root volume size in GiB.",
    ),
    (
        "scaling_config",
        AttrKind::Map,
        Mode::Required,
        "`{desired_size, min_size, max_size}` (changed in place).",
    ),
];

#[async_trait]
impl AwsResource for EksNodeGroup {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_eks_node_group",
            ATTRS,
            true,
            &[
                ("id", "`CLUSTER:NODE_GROUP`."),
                ("arn", "The node group ARN."),
                ("status", "The node group status (`ACTIVE`)."),
            ],
        )
    }

    #[cfg(feature = "aws")]
    async fn read(
        &self,
        c: &Clients,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        let (cluster, name) = names(&recorded.attributes)?;
        let Some(g) = describe(c, cluster, name).await? else {
            return Ok(None);
        };
        if g.status().map(|s| s.as_str()) == Some("DELETING") {
            return Ok(None);
        }
        let list =
            |v: &[String]| -> Vec<Value> { v.iter().map(|s| Value::from(s.as_str())).collect() };
        Ok(Some(sdk::observed(
            recorded,
            vec![
                (
                    "node_role_arn",
                    Value::from(g.node_role().unwrap_or_default()),
                ),
                (
                    "subnet_ids",
                    sdk::align(recorded.attributes.get("subnet_ids"), list(g.subnets())),
                ),
                (
                    "instance_types",
                    sdk::align(
                        recorded.attributes.get("instance_types"),
                        list(g.instance_types()),
                    ),
                ),
                ("disk_size", g.disk_size().map_or(Value::Null, Value::from)),
                ("scaling_config", scaling_value(g.scaling_config())),
                ("tags", tags_value(g.tags())),
            ],
            &["tags"],
            outputs(&g),
        )))
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let (cluster, name) = names(a)?;
        let id = format!("{cluster}:{name}");
        let adopt = match describe(c, cluster, name).await? {
            Some(g) => {
                if !owned(g.tags(), req.lineage) {
                    return Err(sdk::not_ours("EKS node group", name));
                }
                super::adopt_named(self, c, req, "EKS node group", &id, || {
                    remove(c, cluster, name)
                })
                .await?
            }
            None => false,
        };
        if !adopt {
            c.eks
                .create_nodegroup()
                .cluster_name(cluster)
                .nodegroup_name(name)
                .node_role(sdk::str_attr(a, "node_role_arn")?)
                .set_subnets(Some(sdk::str_list(a, "subnet_ids")))
                .set_instance_types(
                    Some(sdk::str_list(a, "instance_types")).filter(|v| !v.is_empty()),
                )
                .set_disk_size(sdk::opt_i64(a, "disk_size").and_then(|d| i32::try_from(d).ok()))
                .scaling_config(scaling(a)?)
                .set_tags(Some(tag_map(&sdk::all_tags(req.address, req.lineage, a))))
                .send()
                .await
                .map_err(c.err("eks", "CreateNodegroup"))?;
        }
        let g = wait_active(c, cluster, name, &req.progress, &req.cancel).await?;
        Ok(sdk::applied(req, outputs(&g)))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let (cluster, name) = names(a)?;
        let g = describe(c, cluster, name).await?.ok_or_else(|| {
            ProviderError::of(
                ErrorKind::NotFound,
                format!("EKS node group {cluster}:{name} is gone; run `anvil plan` to recreate it"),
            )
        })?;
        let want = scaling(a)?;
        if g.scaling_config() != Some(&want) {
            c.eks
                .update_nodegroup_config()
                .cluster_name(cluster)
                .nodegroup_name(name)
                .scaling_config(want)
                .send()
                .await
                .map_err(c.err("eks", "UpdateNodegroupConfig"))?;
        }
        retag(c, g.nodegroup_arn().unwrap_or_default(), g.tags(), req).await?;
        let g = wait_active(c, cluster, name, &req.progress, &req.cancel).await?;
        Ok(sdk::applied(req, outputs(&g)))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let (cluster, name) = names(&recorded.attributes)?;
        remove(c, cluster, name).await
    }
}

/// Deletes a node group and waits until it is gone.
#[cfg(feature = "aws")]
async fn remove(c: &Clients, cluster: &str, name: &str) -> Result<(), ProviderError> {
    sdk::delete_retrying(|| async {
        c.eks
            .delete_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .send()
            .await
            .map(|_| ())
            .map_err(c.err("eks", "DeleteNodegroup"))
    })
    .await?;
    let wait = Wait::gone(
        format!("EKS node group {cluster}:{name}"),
        &[],
        Duration::from_secs(30),
        EKS_TIMEOUT,
    );
    let quiet: ProgressFn = std::sync::Arc::new(|_| {});
    waiter::until(
        &Status { c, cluster, name },
        &wait,
        &quiet,
        &CancellationToken::new(),
    )
    .await
}

#[cfg(feature = "aws")]
fn names(a: &crate::providers::Attributes) -> Result<(&str, &str), ProviderError> {
    Ok((
        sdk::str_attr(a, "cluster_name")?,
        sdk::str_attr(a, "node_group_name")?,
    ))
}

/// The requested scaling, checked.
#[cfg(feature = "aws")]
fn scaling(a: &crate::providers::Attributes) -> Result<NodegroupScalingConfig, ProviderError> {
    let m = a.get("scaling_config").and_then(Value::as_object);
    let get = |k: &str| -> Option<i32> {
        m.and_then(|m| m.get(k))
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
    };
    match (get("desired_size"), get("min_size"), get("max_size")) {
        (Some(d), Some(lo), Some(hi)) if lo <= d && d <= hi && hi >= 1 => {
            Ok(NodegroupScalingConfig::builder()
                .desired_size(d)
                .min_size(lo)
                .max_size(hi)
                .build())
        }
        _ => Err(ProviderError::invalid(
            "`scaling_config` needs whole numbers `min_size` <= `desired_size` <= `max_size`, \
             and `max_size` of at least 1",
        )),
    }
}

#[cfg(feature = "aws")]
fn scaling_value(s: Option<&NodegroupScalingConfig>) -> Value {
    let mut m = Map::new();
    if let Some(s) = s {
        for (k, v) in [
            ("desired_size", s.desired_size()),
            ("min_size", s.min_size()),
            ("max_size", s.max_size()),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), Value::from(v));
            }
        }
    }
    Value::Object(m)
}

#[cfg(feature = "aws")]
fn outputs(g: &aws_sdk_eks::types::Nodegroup) -> std::collections::BTreeMap<String, Value> {
    sdk::outputs([
        (
            "id",
            Value::from(format!(
                "{}:{}",
                g.cluster_name().unwrap_or_default(),
                g.nodegroup_name().unwrap_or_default()
            )),
        ),
        ("arn", Value::from(g.nodegroup_arn().unwrap_or_default())),
        (
            "status",
            g.status().map_or(Value::Null, |s| Value::from(s.as_str())),
        ),
    ])
}

#[cfg(feature = "aws")]
async fn describe(
    c: &Clients,
    cluster: &str,
    name: &str,
) -> Result<Option<aws_sdk_eks::types::Nodegroup>, ProviderError> {
    let out = sdk::found(
        c.eks
            .describe_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .send()
            .await
            .map_err(c.err("eks", "DescribeNodegroup")),
    )?;
    Ok(out.and_then(|o| o.nodegroup().cloned()))
}

#[cfg(feature = "aws")]
async fn wait_active(
    c: &Clients,
    cluster: &str,
    name: &str,
    progress: &ProgressFn,
    cancel: &CancellationToken,
) -> Result<aws_sdk_eks::types::Nodegroup, ProviderError> {
    let wait = Wait::status(
        format!("EKS node group {cluster}:{name}"),
        &["ACTIVE"],
        Duration::from_secs(30),
        EKS_TIMEOUT,
    )
    .failing_on(&["CREATE_FAILED", "DEGRADED"]);
    waiter::until(&Status { c, cluster, name }, &wait, progress, cancel).await?;
    describe(c, cluster, name).await?.ok_or_else(|| {
        ProviderError::of(
            ErrorKind::NotFound,
            format!("EKS node group {cluster}:{name} disappeared after it became active"),
        )
    })
}

/// The status of one node group, for the waiter.
#[cfg(feature = "aws")]
struct Status<'a> {
    c: &'a Clients,
    cluster: &'a str,
    name: &'a str,
}

#[cfg(feature = "aws")]
#[async_trait]
impl Probe for Status<'_> {
    async fn status(&self) -> Result<Option<String>, ProviderError> {
        Ok(describe(self.c, self.cluster, self.name)
            .await?
            .and_then(|g| g.status().map(|s| s.as_str().to_string())))
    }
}
