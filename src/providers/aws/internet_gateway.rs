//! `aws_internet_gateway`: an internet gateway attached to a VPC (a new VPC replaces
//! it); delete detaches it first.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, ChangeRequest, ProviderError},
    crate::state::ResourceState,
    aws_sdk_ec2::types::ResourceType,
    serde_json::Value,
};

/// The `aws_internet_gateway` type.
pub struct InternetGateway;

/// The attribute table of `aws_internet_gateway`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[(
    "vpc_id",
    AttrKind::String,
    Mode::RequiredNew,
    "The VPC it is attached to.",
)];

#[async_trait]
impl AwsResource for InternetGateway {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_internet_gateway",
            ATTRS,
            true,
            &[("id", "The gateway ID (`igw-…`).")],
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
            .describe_internet_gateways()
            .filters(sdk::id_filter("internet-gateway-id", items)?)
            .send()
            .await
            .map_err(c.err("ec2", "DescribeInternetGateways"))?;
        sdk::each_found(
            items,
            out.internet_gateways(),
            |g| g.internet_gateway_id(),
            |r, g| Some(observe(r, g)),
        )
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let vpc = sdk::str_attr(a, "vpc_id")?;
        let found = c
            .ec2
            .describe_internet_gateways()
            .set_filters(Some(sdk::ec2_owner_filters(req.address, req.lineage)))
            .send()
            .await
            .map_err(c.err("ec2", "DescribeInternetGateways"))?;
        // Adopt-first: a gateway attached to the wanted VPC, or to none (a run killed
        // between create and attach). One attached to another VPC (a VPC since replaced)
        // is stale and removed.
        let attached_to = |g: &aws_sdk_ec2::types::InternetGateway| {
            g.attachments()
                .first()
                .and_then(|x| x.vpc_id())
                .map(str::to_string)
        };
        let mut adopt = None;
        let mut stale = Vec::new();
        for g in found
            .internet_gateways()
            .iter()
            .filter(|g| sdk::ec2_owned_by(g.tags(), req.address, req.lineage))
        {
            let Some(id) = g.internet_gateway_id() else {
                continue;
            };
            if Some(id) == sdk::replaced_id(req) {
                continue;
            }
            let at = attached_to(g);
            if adopt.is_none() && at.as_deref().is_none_or(|v| v == vpc) {
                adopt = Some((id.to_string(), at.is_some()));
            } else {
                stale.push(id.to_string());
            }
        }
        sdk::remove_stale(req, "internet gateway", &stale, |id| {
            let at = found
                .internet_gateways()
                .iter()
                .find(|g| g.internet_gateway_id() == Some(&id))
                .and_then(attached_to);
            async move {
                if let Some(v) = at {
                    detach(c, &id, &v).await?;
                }
                remove(c, id).await
            }
        })
        .await;
        let (id, attached) = match adopt {
            Some(x) => x,
            None => {
                let tags = sdk::all_tags(req.address, req.lineage, a);
                let out = c
                    .ec2
                    .create_internet_gateway()
                    .tag_specifications(sdk::ec2_tag_spec(ResourceType::InternetGateway, &tags))
                    .send()
                    .await
                    .map_err(c.err("ec2", "CreateInternetGateway"))?;
                let id = out
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .unwrap_or_default()
                    .to_string();
                (id, false)
            }
        };
        if !attached {
            c.ec2
                .attach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(vpc)
                .send()
                .await
                .map_err(c.err("ec2", "AttachInternetGateway"))?;
        }
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
        if let Some(vpc) = sdk::opt_str(&recorded.attributes, "vpc_id") {
            // Detaching fails while the VPC still has public addresses mapped (a NAT
            // gateway being deleted): retried.
            sdk::delete_retrying(|| detach(c, id, vpc)).await?;
        }
        sdk::delete_retrying(|| remove(c, id.to_string())).await
    }
}

/// One `DetachInternetGateway` attempt; not attached (any more) is success.
#[cfg(feature = "aws")]
async fn detach(c: &Clients, id: &str, vpc: &str) -> Result<(), ProviderError> {
    match c
        .ec2
        .detach_internet_gateway()
        .internet_gateway_id(id)
        .vpc_id(vpc)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = c.error("ec2", "DetachInternetGateway", &e);
            if e.message.contains("Gateway.NotAttached") {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// One `DeleteInternetGateway` attempt.
#[cfg(feature = "aws")]
async fn remove(c: &Clients, id: String) -> Result<(), ProviderError> {
    c.ec2
        .delete_internet_gateway()
        .internet_gateway_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(c.err("ec2", "DeleteInternetGateway"))
}

/// The record of the internet gateway `g` as AWS reports it.
#[cfg(feature = "aws")]
fn observe(recorded: &ResourceState, g: &aws_sdk_ec2::types::InternetGateway) -> ResourceState {
    let vpc = g
        .attachments()
        .first()
        .and_then(|a| a.vpc_id())
        .map_or(Value::Null, Value::from);
    sdk::observed(
        recorded,
        vec![("vpc_id", vpc), ("tags", sdk::ec2_user_tags(g.tags()))],
        &["tags"],
        sdk::outputs([(
            "id",
            Value::from(g.internet_gateway_id().unwrap_or_default()),
        )]),
    )
}
