//! `aws_nat_gateway`: a public NAT gateway. Create waits until it is `available`,
//! delete until it is `deleted` (its address and subnet can go only then); a gateway
//! `deleting`, `deleted` or `failed` reads as gone.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    super::waiter::{self, Probe, Wait},
    crate::providers::{Applied, CancellationToken, ChangeRequest, ProgressFn, ProviderError},
    crate::state::ResourceState,
    aws_sdk_ec2::types::ResourceType,
    serde_json::Value,
    std::time::Duration,
};

/// The `aws_nat_gateway` type.
pub struct NatGateway;

/// The attribute table of `aws_nat_gateway`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    (
        "allocation_id",
        AttrKind::String,
        Mode::RequiredNew,
        "The Elastic IP allocation, `${aws_eip.NAME.id}`.",
    ),
    (
        "subnet_id",
        AttrKind::String,
        Mode::RequiredNew,
        "The public subnet it lives in.",
    ),
];

#[async_trait]
impl AwsResource for NatGateway {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_nat_gateway",
            ATTRS,
            true,
            &[("id", "The NAT gateway ID (`nat-…`).")],
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
            .describe_nat_gateways()
            .filter(sdk::id_filter("nat-gateway-id", items)?)
            .send()
            .await
            .map_err(c.err("ec2", "DescribeNatGateways"))?;
        sdk::each_found(items, out.nat_gateways(), |g| g.nat_gateway_id(), observe)
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let mut filters = sdk::ec2_owner_filters(req.address, req.lineage);
        filters.push(
            aws_sdk_ec2::types::Filter::builder()
                .name("state")
                .values("pending")
                .values("available")
                .build(),
        );
        let found = c
            .ec2
            .describe_nat_gateways()
            .set_filter(Some(filters))
            .send()
            .await
            .map_err(c.err("ec2", "DescribeNatGateways"))?;
        // Adopt only a live gateway in the wanted subnet with the wanted address: one left
        // by a killed run whose subnet or address has since been replaced (moto even lets
        // the subnet go first) is not this resource, and adopting it would record an
        // object the next plan must replace. Such a gateway is deleted (not awaited).
        let ids = found
            .nat_gateways()
            .iter()
            .filter(|g| sdk::ec2_owned_by(g.tags(), req.address, req.lineage))
            .filter_map(|g| g.nat_gateway_id().map(str::to_string))
            .collect();
        let (adopt, stale) = super::adopt_first(self, c, req, ids).await?;
        sdk::remove_stale(req, "NAT gateway", &stale, |id| remove(c, id)).await;
        let id = match adopt {
            Some(id) => id,
            None => {
                let tags = sdk::all_tags(req.address, req.lineage, a);
                let out = c
                    .ec2
                    .create_nat_gateway()
                    .allocation_id(sdk::str_attr(a, "allocation_id")?)
                    .subnet_id(sdk::str_attr(a, "subnet_id")?)
                    .tag_specifications(sdk::ec2_tag_spec(ResourceType::Natgateway, &tags))
                    .send()
                    .await
                    .map_err(c.err("ec2", "CreateNatGateway"))?;
                out.nat_gateway()
                    .and_then(|g| g.nat_gateway_id())
                    .unwrap_or_default()
                    .to_string()
            }
        };
        let wait = Wait::status(
            format!("NAT gateway {id}"),
            &["available"],
            Duration::from_secs(10),
            Duration::from_secs(15 * 60),
        )
        .failing_on(&["failed"]);
        waiter::until(&State { c, id: &id }, &wait, &req.progress, &req.cancel).await?;
        Ok(sdk::applied(req, sdk::outputs([("id", Value::from(id))])))
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
        sdk::delete_retrying(|| remove(c, id.to_string())).await?;
        let wait = Wait::gone(
            format!("NAT gateway {id}"),
            &["deleted"],
            Duration::from_secs(10),
            Duration::from_secs(15 * 60),
        );
        let quiet: ProgressFn = std::sync::Arc::new(|_| {});
        waiter::until(&State { c, id }, &wait, &quiet, &CancellationToken::new()).await
    }
}

/// One `DeleteNatGateway` attempt (the deletion itself goes on in the background).
#[cfg(feature = "aws")]
async fn remove(c: &Clients, id: String) -> Result<(), ProviderError> {
    c.ec2
        .delete_nat_gateway()
        .nat_gateway_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(c.err("ec2", "DeleteNatGateway"))
}

#[cfg(feature = "aws")]
async fn describe(
    c: &Clients,
    id: &str,
) -> Result<Option<aws_sdk_ec2::types::NatGateway>, ProviderError> {
    let out = sdk::found(
        c.ec2
            .describe_nat_gateways()
            .nat_gateway_ids(id)
            .send()
            .await
            .map_err(c.err("ec2", "DescribeNatGateways")),
    )?;
    Ok(out.and_then(|o| o.nat_gateways().first().cloned()))
}

/// The state of one NAT gateway, for the waiter.
#[cfg(feature = "aws")]
struct State<'a> {
    c: &'a Clients,
    id: &'a str,
}

#[cfg(feature = "aws")]
#[async_trait]
impl Probe for State<'_> {
    async fn status(&self) -> Result<Option<String>, ProviderError> {
        Ok(describe(self.c, self.id)
            .await?
            .and_then(|g| g.state().map(|s| s.as_str().to_string())))
    }
}

/// The record of the NAT gateway `g` as AWS reports it; `None` once it is going away.
#[cfg(feature = "aws")]
fn observe(recorded: &ResourceState, g: &aws_sdk_ec2::types::NatGateway) -> Option<ResourceState> {
    if matches!(
        g.state().map(|s| s.as_str()),
        Some("deleting" | "deleted" | "failed")
    ) {
        return None;
    }
    let alloc = g
        .nat_gateway_addresses()
        .first()
        .and_then(|a| a.allocation_id())
        .map_or(Value::Null, Value::from);
    Some(sdk::observed(
        recorded,
        vec![
            ("allocation_id", alloc),
            ("subnet_id", Value::from(g.subnet_id().unwrap_or_default())),
            ("tags", sdk::ec2_user_tags(g.tags())),
        ],
        &["tags"],
        sdk::outputs([("id", Value::from(g.nat_gateway_id().unwrap_or_default()))]),
    ))
}
