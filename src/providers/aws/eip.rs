//! `aws_eip`: an Elastic IP address in the VPC domain (for a NAT gateway); release is
//! retried while the address is still held by a NAT gateway being deleted.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, ChangeRequest, ProviderError},
    crate::state::ResourceState,
    aws_sdk_ec2::types::{DomainType, ResourceType},
    serde_json::Value,
};

/// The `aws_eip` type.
pub struct Eip;

/// The attribute table of `aws_eip`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[(
    "domain",
    AttrKind::String,
    Mode::OptionalNew,
    "`vpc` (the only kind anvil allocates).",
)];

#[async_trait]
impl AwsResource for Eip {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_eip",
            ATTRS,
            true,
            &[
                ("id", "The allocation ID (`eipalloc-…`)."),
                ("public_ip", "The public IPv4 address."),
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
            .describe_addresses()
            .filters(sdk::id_filter("allocation-id", items)?)
            .send()
            .await
            .map_err(c.err("ec2", "DescribeAddresses"))?;
        sdk::each_found(
            items,
            out.addresses(),
            |a| a.allocation_id(),
            |r, a| Some(observe(r, a)),
        )
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        if let Some(d) = sdk::opt_str(a, "domain").filter(|d| *d != "vpc") {
            return Err(ProviderError::invalid(format!(
                "domain `{d}` is not supported; write `vpc` (EC2-Classic is gone)"
            )));
        }
        let found = c
            .ec2
            .describe_addresses()
            .set_filters(Some(sdk::ec2_owner_filters(req.address, req.lineage)))
            .send()
            .await
            .map_err(c.err("ec2", "DescribeAddresses"))?;
        let ids = found
            .addresses()
            .iter()
            .filter(|x| sdk::ec2_owned_by(x.tags(), req.address, req.lineage))
            .filter_map(|x| x.allocation_id().map(str::to_string))
            .collect();
        let (adopt, stale) = super::adopt_first(self, c, req, ids).await?;
        sdk::remove_stale(req, "Elastic IP", &stale, |id| remove(c, id)).await;
        if let Some(addr) = adopt.and_then(|id| {
            found
                .addresses()
                .iter()
                .find(|x| x.allocation_id() == Some(&id))
        }) {
            return Ok(sdk::applied(req, outputs(addr)));
        }
        let tags = sdk::all_tags(req.address, req.lineage, a);
        let out = c
            .ec2
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(sdk::ec2_tag_spec(ResourceType::ElasticIp, &tags))
            .send()
            .await
            .map_err(c.err("ec2", "AllocateAddress"))?;
        let id = out.allocation_id().unwrap_or_default().to_string();
        // Older EC2 implementations ignore tag specifications on AllocateAddress.
        c.ec2
            .create_tags()
            .resources(&id)
            .set_tags(Some(sdk::ec2_tags(&tags)))
            .send()
            .await
            .map_err(c.err("ec2", "CreateTags"))?;
        Ok(sdk::applied(
            req,
            sdk::outputs([
                ("id", Value::from(id)),
                (
                    "public_ip",
                    Value::from(out.public_ip().unwrap_or_default()),
                ),
            ]),
        ))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let prior = req
            .prior
            .ok_or_else(|| ProviderError::new("no prior record to update"))?;
        let id = sdk::recorded_id(prior)?;
        sdk::ec2_retag(c, id, Some(prior), req).await?;
        Ok(sdk::applied(req, prior.outputs.clone()))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let id = sdk::recorded_id(recorded)?;
        sdk::delete_retrying(|| remove(c, id.to_string())).await
    }
}

/// One `ReleaseAddress` attempt.
#[cfg(feature = "aws")]
async fn remove(c: &Clients, id: String) -> Result<(), ProviderError> {
    c.ec2
        .release_address()
        .allocation_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(c.err("ec2", "ReleaseAddress"))
}

#[cfg(feature = "aws")]
fn outputs(addr: &aws_sdk_ec2::types::Address) -> std::collections::BTreeMap<String, Value> {
    sdk::outputs([
        ("id", Value::from(addr.allocation_id().unwrap_or_default())),
        (
            "public_ip",
            Value::from(addr.public_ip().unwrap_or_default()),
        ),
    ])
}

/// The record of the address `addr` as AWS reports it.
#[cfg(feature = "aws")]
fn observe(recorded: &ResourceState, addr: &aws_sdk_ec2::types::Address) -> ResourceState {
    sdk::observed(
        recorded,
        vec![
            (
                "domain",
                Value::from(addr.domain().map(|d| d.as_str()).unwrap_or("vpc")),
            ),
            ("tags", sdk::ec2_user_tags(addr.tags())),
        ],
        &["tags"],
        outputs(addr),
    )
}
