//! `aws_route_table_association`: the association of a subnet with a route table.
//! Create adopts an association the subnet already has with that table (a run killed
//! before journalling it); read finds it on the table, so an association deleted
//! outside anvil reads as gone.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, ChangeRequest, ProviderError},
    crate::state::ResourceState,
    serde_json::Value,
};

/// The `aws_route_table_association` type.
pub struct RouteTableAssociation;

/// The attribute table of `aws_route_table_association`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    (
        "subnet_id",
        AttrKind::String,
        Mode::RequiredNew,
        "The subnet.",
    ),
    (
        "route_table_id",
        AttrKind::String,
        Mode::RequiredNew,
        "The route table.",
    ),
];

#[async_trait]
impl AwsResource for RouteTableAssociation {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_route_table_association",
            ATTRS,
            false,
            &[("id", "The association ID (`rtbassoc-…`).")],
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

    /// One `DescribeRouteTables` for the tables of all the associations.
    #[cfg(feature = "aws")]
    async fn read_many(
        &self,
        c: &Clients,
        items: &[&ResourceState],
    ) -> Result<Vec<Option<ResourceState>>, ProviderError> {
        let mut tables = items
            .iter()
            .map(|r| sdk::str_attr(&r.attributes, "route_table_id").map(str::to_string))
            .collect::<Result<Vec<_>, _>>()?;
        tables.sort();
        tables.dedup();
        let out = c
            .ec2
            .describe_route_tables()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("route-table-id")
                    .set_values(Some(tables))
                    .build(),
            )
            .send()
            .await
            .map_err(c.err("ec2", "DescribeRouteTables"))?;
        items
            .iter()
            .map(|r| {
                sdk::recorded_id(r)?;
                let table = sdk::str_attr(&r.attributes, "route_table_id")?;
                Ok(out
                    .route_tables()
                    .iter()
                    .find(|t| t.route_table_id() == Some(table))
                    .and_then(|t| observe(r, t)))
            })
            .collect()
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let table = sdk::str_attr(a, "route_table_id")?;
        let subnet = sdk::str_attr(a, "subnet_id")?;
        if let Some(t) = super::route_table::describe(c, table).await? {
            if let Some(id) = t
                .associations()
                .iter()
                .find(|x| x.subnet_id() == Some(subnet))
                .and_then(|x| x.route_table_association_id())
            {
                return Ok(sdk::applied(req, sdk::outputs([("id", Value::from(id))])));
            }
        }
        let out = c
            .ec2
            .associate_route_table()
            .route_table_id(table)
            .subnet_id(subnet)
            .send()
            .await
            .map_err(c.err("ec2", "AssociateRouteTable"))?;
        Ok(sdk::applied(
            req,
            sdk::outputs([("id", Value::from(out.association_id().unwrap_or_default()))]),
        ))
    }

    #[cfg(feature = "aws")]
    async fn update(
        &self,
        _c: &Clients,
        req: &ChangeRequest<'_>,
    ) -> Result<Applied, ProviderError> {
        // Both attributes force replacement: nothing changes in place.
        let prior = req
            .prior
            .ok_or_else(|| ProviderError::new("no prior record to update"))?;
        Ok(sdk::applied(req, prior.outputs.clone()))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let id = sdk::recorded_id(recorded)?;
        sdk::delete_retrying(|| async {
            c.ec2
                .disassociate_route_table()
                .association_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(c.err("ec2", "DisassociateRouteTable"))
        })
        .await
    }
}

/// The record of the association `recorded` names in the route table `t` as AWS reports
/// it; `None` when the table no longer has it.
#[cfg(feature = "aws")]
fn observe(recorded: &ResourceState, t: &aws_sdk_ec2::types::RouteTable) -> Option<ResourceState> {
    let id = sdk::recorded_id(recorded).ok()?;
    let assoc = t
        .associations()
        .iter()
        .find(|a| a.route_table_association_id() == Some(id))?;
    Some(sdk::observed(
        recorded,
        vec![
            (
                "subnet_id",
                Value::from(assoc.subnet_id().unwrap_or_default()),
            ),
            (
                "route_table_id",
                Value::from(t.route_table_id().unwrap_or_default()),
            ),
        ],
        &[],
        sdk::outputs([("id", Value::from(id))]),
    ))
}
