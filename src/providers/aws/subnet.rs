//! `aws_subnet`: a subnet of a VPC in one availability zone; its VPC, CIDR block and
//! zone force replacement, `map_public_ip_on_launch` and tags change in place.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, ChangeRequest, ProviderError},
    crate::state::ResourceState,
    aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType},
    serde_json::Value,
};

/// The `aws_subnet` type.
pub struct Subnet;

/// The attribute table of `aws_subnet`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    (
        "vpc_id",
        AttrKind::String,
        Mode::RequiredNew,
        "The VPC, usually `${aws_vpc.NAME.id}`.",
    ),
    (
        "cidr_block",
        AttrKind::String,
        Mode::RequiredNew,
        "The IPv4 CIDR block inside the VPC's.",
    ),
    (
        "availability_zone",
        AttrKind::String,
        Mode::OptionalNew,
        "The availability zone, e.g. `eu-west-1a`.",
    ),
    (
        "map_public_ip_on_launch",
        AttrKind::Bool,
        Mode::Optional,
        "Whether instances launched here get a public IP (public subnets).",
    ),
];

#[async_trait]
impl AwsResource for Subnet {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_subnet",
            ATTRS,
            true,
            &[
                ("id", "The subnet ID (`subnet-…`)."),
                ("arn", "The subnet ARN."),
            ],
        )
    }

    /// One record is a batch of one: the same filtered `Describe*` as refresh's.
    #[cfg(feature = "aws")]
    async fn read(
        &self,
        c: &Clients,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        Ok(self.read_many(c, &[recorded]).await?.pop().flatten())
    }

    fn batches_reads(&self) -> bool {
        true
    }

    #[cfg(feature = "aws")]
    async fn read_many(
        &self,
        c: &Clients,
        items: &[&ResourceState],
    ) -> Result<Vec<Option<ResourceState>>, ProviderError> {
        let out = c
            .ec2
            .describe_subnets()
            .filters(sdk::id_filter("subnet-id", items)?)
            .send()
            .await
            .map_err(c.err("ec2", "DescribeSubnets"))?;
        sdk::each_found(
            items,
            out.subnets(),
            |s| s.subnet_id(),
            |r, s| Some(observe(r, s)),
        )
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let found = c
            .ec2
            .describe_subnets()
            .set_filters(Some(sdk::ec2_owner_filters(req.address, req.lineage)))
            .send()
            .await
            .map_err(c.err("ec2", "DescribeSubnets"))?;
        let ids = found
            .subnets()
            .iter()
            .filter(|x| sdk::ec2_owned_by(x.tags(), req.address, req.lineage))
            .filter_map(|s| s.subnet_id().map(str::to_string))
            .collect();
        let (adopt, stale) = super::adopt_first(self, c, req, ids).await?;
        sdk::remove_stale(req, "subnet", &stale, |id| remove(c, id)).await;
        let subnet = match adopt
            .and_then(|id| found.subnets().iter().find(|s| s.subnet_id() == Some(&id)))
        {
            Some(s) => s.clone(),
            None => {
                let tags = sdk::all_tags(req.address, req.lineage, a);
                let out = c
                    .ec2
                    .create_subnet()
                    .vpc_id(sdk::str_attr(a, "vpc_id")?)
                    .cidr_block(sdk::str_attr(a, "cidr_block")?)
                    .set_availability_zone(sdk::opt_str(a, "availability_zone").map(str::to_string))
                    .tag_specifications(sdk::ec2_tag_spec(ResourceType::Subnet, &tags))
                    .send()
                    .await
                    .map_err(c.err("ec2", "CreateSubnet"))?;
                out.subnet().cloned().ok_or_else(|| {
                    ProviderError::new(format!(
                        "CreateSubnet at {} returned no subnet; run apply again",
                        c.endpoint("ec2")
                    ))
                })?
            }
        };
        set_public_ip(c, subnet.subnet_id().unwrap_or_default(), a).await?;
        Ok(sdk::applied(req, outputs(&subnet)))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let prior = req
            .prior
            .ok_or_else(|| ProviderError::new("no prior record to update"))?;
        let id = sdk::recorded_id(prior)?;
        set_public_ip(c, id, req.attributes).await?;
        sdk::ec2_retag(c, id, Some(prior), req).await?;
        Ok(sdk::applied(req, prior.outputs.clone()))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let id = sdk::recorded_id(recorded)?;
        sdk::delete_retrying(|| remove(c, id.to_string())).await
    }
}

/// One `DeleteSubnet` attempt.
#[cfg(feature = "aws")]
async fn remove(c: &Clients, id: String) -> Result<(), ProviderError> {
    c.ec2
        .delete_subnet()
        .subnet_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(c.err("ec2", "DeleteSubnet"))
}

/// The record of the subnet `s` as AWS reports it.
#[cfg(feature = "aws")]
fn observe(recorded: &ResourceState, s: &aws_sdk_ec2::types::Subnet) -> ResourceState {
    sdk::observed(
        recorded,
        vec![
            ("vpc_id", Value::from(s.vpc_id().unwrap_or_default())),
            (
                "cidr_block",
                Value::from(s.cidr_block().unwrap_or_default()),
            ),
            (
                "availability_zone",
                Value::from(s.availability_zone().unwrap_or_default()),
            ),
            (
                "map_public_ip_on_launch",
                Value::from(s.map_public_ip_on_launch().unwrap_or(false)),
            ),
            ("tags", sdk::ec2_user_tags(s.tags())),
        ],
        &["tags"],
        outputs(s),
    )
}

#[cfg(feature = "aws")]
fn outputs(s: &aws_sdk_ec2::types::Subnet) -> std::collections::BTreeMap<String, Value> {
    sdk::outputs([
        ("id", Value::from(s.subnet_id().unwrap_or_default())),
        ("arn", Value::from(s.subnet_arn().unwrap_or_default())),
    ])
}

#[cfg(feature = "aws")]
async fn set_public_ip(
    c: &Clients,
    id: &str,
    a: &crate::providers::Attributes,
) -> Result<(), ProviderError> {
    if let Some(b) = sdk::opt_bool(a, "map_public_ip_on_launch") {
        c.ec2
            .modify_subnet_attribute()
            .subnet_id(id)
            .map_public_ip_on_launch(AttributeBooleanValue::builder().value(b).build())
            .send()
            .await
            .map_err(c.err("ec2", "ModifySubnetAttribute"))?;
    }
    Ok(())
}
