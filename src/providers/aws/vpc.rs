//! `aws_vpc`: A VPC: its CIDR block (a change replaces it) and DNS settings (changed in
//! place with `ModifyVpcAttribute`).

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, ChangeRequest, ProviderError},
    crate::state::ResourceState,
    aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, VpcAttributeName},
    serde_json::Value,
};

/// The `aws_vpc` type.
pub struct Vpc;

/// The attribute table of `aws_vpc`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    (
        "cidr_block",
        AttrKind::String,
        Mode::RequiredNew,
        "The IPv4 CIDR block, e.g. `10.0.0.0/16`.",
    ),
    (
        "enable_dns_support",
        AttrKind::Bool,
        Mode::Optional,
        "Whether the Amazon DNS server answers in the VPC (default true).",
    ),
    (
        "enable_dns_hostnames",
        AttrKind::Bool,
        Mode::Optional,
        "Whether instances get public DNS hostnames (default false).",
    ),
];

#[async_trait]
impl AwsResource for Vpc {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_vpc",
            ATTRS,
            true,
            &[("id", "The VPC ID (`vpc-…`)."), ("arn", "The VPC ARN.")],
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

    /// One `DescribeVpcs` for all; the DNS attributes (one call each, AWS has no batch
    /// form) concurrently.
    #[cfg(feature = "aws")]
    async fn read_many(
        &self,
        c: &Clients,
        items: &[&ResourceState],
    ) -> Result<Vec<Option<ResourceState>>, ProviderError> {
        let out = c
            .ec2
            .describe_vpcs()
            .filters(sdk::id_filter("vpc-id", items)?)
            .send()
            .await
            .map_err(c.err("ec2", "DescribeVpcs"))?;
        let reads = items.iter().map(|r| async {
            let id = sdk::recorded_id(r)?;
            match out.vpcs().iter().find(|v| v.vpc_id() == Some(id)) {
                Some(vpc) => observe(c, r, vpc).await.map(Some),
                None => Ok(None),
            }
        });
        futures::future::try_join_all(reads).await
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let found = c
            .ec2
            .describe_vpcs()
            .set_filters(Some(sdk::ec2_owner_filters(req.address, req.lineage)))
            .send()
            .await
            .map_err(c.err("ec2", "DescribeVpcs"))?;
        let ids = found
            .vpcs()
            .iter()
            .filter(|v| sdk::ec2_owned_by(v.tags(), req.address, req.lineage))
            .filter_map(|v| v.vpc_id().map(str::to_string))
            .collect();
        let (adopt, stale) = super::adopt_first(self, c, req, ids).await?;
        sdk::remove_stale(req, "VPC", &stale, |id| remove(c, id)).await;
        let vpc = match adopt.and_then(|id| found.vpcs().iter().find(|v| v.vpc_id() == Some(&id))) {
            // Created by a run that was killed before it could journal the ID: adopt it.
            Some(v) => v.clone(),
            None => {
                let tags = sdk::all_tags(req.address, req.lineage, a);
                let out = c
                    .ec2
                    .create_vpc()
                    .cidr_block(sdk::str_attr(a, "cidr_block")?)
                    .tag_specifications(sdk::ec2_tag_spec(ResourceType::Vpc, &tags))
                    .send()
                    .await
                    .map_err(c.err("ec2", "CreateVpc"))?;
                out.vpc().cloned().ok_or_else(|| {
                    ProviderError::new(format!(
                        "CreateVpc at {} returned no VPC; run apply again",
                        c.endpoint("ec2")
                    ))
                })?
            }
        };
        let id = vpc.vpc_id().unwrap_or_default();
        set_dns(c, id, a).await?;
        Ok(sdk::applied(req, outputs(c, &vpc)))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let prior = req
            .prior
            .ok_or_else(|| ProviderError::new("no prior record to update"))?;
        let id = sdk::recorded_id(prior)?;
        set_dns(c, id, req.attributes).await?;
        sdk::ec2_retag(c, id, Some(prior), req).await?;
        Ok(sdk::applied(req, prior.outputs.clone()))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let id = sdk::recorded_id(recorded)?;
        sdk::delete_retrying(|| remove(c, id.to_string())).await
    }
}

/// One `DeleteVpc` attempt.
#[cfg(feature = "aws")]
async fn remove(c: &Clients, id: String) -> Result<(), ProviderError> {
    c.ec2
        .delete_vpc()
        .vpc_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(c.err("ec2", "DeleteVpc"))
}

#[cfg(feature = "aws")]
fn outputs(
    c: &Clients,
    vpc: &aws_sdk_ec2::types::Vpc,
) -> std::collections::BTreeMap<String, Value> {
    let id = vpc.vpc_id().unwrap_or_default();
    sdk::outputs([
        ("id", Value::from(id)),
        ("arn", sdk::ec2_arn(c, vpc.owner_id(), "vpc", id)),
    ])
}

#[cfg(feature = "aws")]
async fn dns_attr(c: &Clients, id: &str, which: VpcAttributeName) -> Result<bool, ProviderError> {
    let out = c
        .ec2
        .describe_vpc_attribute()
        .vpc_id(id)
        .attribute(which.clone())
        .send()
        .await
        .map_err(c.err("ec2", "DescribeVpcAttribute"))?;
    let v = match which {
        VpcAttributeName::EnableDnsHostnames => out.enable_dns_hostnames(),
        _ => out.enable_dns_support(),
    };
    Ok(v.and_then(AttributeBooleanValue::value).unwrap_or(false))
}

/// Sets the DNS attributes the spec gives (one per call: AWS takes one at a time).
#[cfg(feature = "aws")]
async fn set_dns(
    c: &Clients,
    id: &str,
    a: &crate::providers::Attributes,
) -> Result<(), ProviderError> {
    if let Some(b) = sdk::opt_bool(a, "enable_dns_support") {
        c.ec2
            .modify_vpc_attribute()
            .vpc_id(id)
            .enable_dns_support(AttributeBooleanValue::builder().value(b).build())
            .send()
            .await
            .map_err(c.err("ec2", "ModifyVpcAttribute"))?;
    }
    if let Some(b) = sdk::opt_bool(a, "enable_dns_hostnames") {
        c.ec2
            .modify_vpc_attribute()
            .vpc_id(id)
            .enable_dns_hostnames(AttributeBooleanValue::builder().value(b).build())
            .send()
            .await
            .map_err(c.err("ec2", "ModifyVpcAttribute"))?;
    }
    Ok(())
}

/// The record of the VPC `vpc` as AWS reports it, with its DNS attributes.
#[cfg(feature = "aws")]
async fn observe(
    c: &Clients,
    recorded: &ResourceState,
    vpc: &aws_sdk_ec2::types::Vpc,
) -> Result<ResourceState, ProviderError> {
    let id = vpc.vpc_id().unwrap_or_default();
    let (support, hostnames) = futures::try_join!(
        dns_attr(c, id, VpcAttributeName::EnableDnsSupport),
        dns_attr(c, id, VpcAttributeName::EnableDnsHostnames)
    )?;
    Ok(sdk::observed(
        recorded,
        vec![
            (
                "cidr_block",
                Value::from(vpc.cidr_block().unwrap_or_default()),
            ),
            ("enable_dns_support", Value::from(support)),
            ("enable_dns_hostnames", Value::from(hostnames)),
            ("tags", sdk::ec2_user_tags(vpc.tags())),
        ],
        &["tags"],
        outputs(c, vpc),
    ))
}
