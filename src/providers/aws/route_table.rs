//! `aws_route_table`: a route table and its routes. Routes change in place (created,
//! replaced and deleted one by one, keyed by destination); the VPC's `local` route is
//! implicit and never listed.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, Attributes, ChangeRequest, ProviderError},
    crate::state::ResourceState,
    aws_sdk_ec2::types::ResourceType,
    serde_json::{Map, Value},
    std::collections::BTreeMap,
};

/// The `aws_route_table` type.
pub struct RouteTable;

/// The attribute table of `aws_route_table`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    ("vpc_id", AttrKind::String, Mode::RequiredNew, "The VPC."),
    ("route", AttrKind::List, Mode::Optional, "Routes: a list of `{cidr_block, gateway_id?, nat_gateway_id?}` (the VPC's local route is implicit)."),
];

#[async_trait]
impl AwsResource for RouteTable {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_route_table",
            ATTRS,
            true,
            &[("id", "The route table ID (`rtb-…`).")],
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
            .describe_route_tables()
            .filters(sdk::id_filter("route-table-id", items)?)
            .send()
            .await
            .map_err(c.err("ec2", "DescribeRouteTables"))?;
        sdk::each_found(
            items,
            out.route_tables(),
            |t| t.route_table_id(),
            |r, t| Some(observe(r, t)),
        )
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let found = c
            .ec2
            .describe_route_tables()
            .set_filters(Some(sdk::ec2_owner_filters(req.address, req.lineage)))
            .send()
            .await
            .map_err(c.err("ec2", "DescribeRouteTables"))?;
        let ids = found
            .route_tables()
            .iter()
            .filter(|t| sdk::ec2_owned_by(t.tags(), req.address, req.lineage))
            .filter_map(|t| t.route_table_id().map(str::to_string))
            .collect();
        let (adopt, stale) = super::adopt_first(self, c, req, ids).await?;
        sdk::remove_stale(req, "route table", &stale, |id| async move {
            // A table cannot go while subnets are associated with it.
            if let Some(t) = describe(c, &id).await? {
                for x in t.associations().iter().filter(|x| x.main() != Some(true)) {
                    c.ec2
                        .disassociate_route_table()
                        .set_association_id(x.route_table_association_id().map(str::to_string))
                        .send()
                        .await
                        .map_err(c.err("ec2", "DisassociateRouteTable"))?;
                }
            }
            remove(c, id).await
        })
        .await;
        let (id, have) = match adopt.and_then(|id| {
            found
                .route_tables()
                .iter()
                .find(|t| t.route_table_id() == Some(&id))
        }) {
            Some(t) => (
                t.route_table_id().unwrap_or_default().to_string(),
                real_routes(t),
            ),
            None => {
                let tags = sdk::all_tags(req.address, req.lineage, a);
                let out = c
                    .ec2
                    .create_route_table()
                    .vpc_id(sdk::str_attr(a, "vpc_id")?)
                    .tag_specifications(sdk::ec2_tag_spec(ResourceType::RouteTable, &tags))
                    .send()
                    .await
                    .map_err(c.err("ec2", "CreateRouteTable"))?;
                let id = out
                    .route_table()
                    .and_then(|t| t.route_table_id())
                    .unwrap_or_default()
                    .to_string();
                (id, BTreeMap::new())
            }
        };
        sync_routes(c, &id, &have, a).await?;
        Ok(sdk::applied(req, sdk::outputs([("id", Value::from(id))])))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let prior = req
            .prior
            .ok_or_else(|| ProviderError::new("no prior record to update"))?;
        let id = sdk::recorded_id(prior)?;
        let Some(t) = describe(c, id).await? else {
            return Err(ProviderError::of(
                crate::providers::ErrorKind::NotFound,
                format!("route table {id} is gone; run `anvil plan` to recreate it"),
            ));
        };
        sync_routes(c, id, &real_routes(&t), req.attributes).await?;
        sdk::ec2_retag(c, id, Some(prior), req).await?;
        Ok(sdk::applied(req, prior.outputs.clone()))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let id = sdk::recorded_id(recorded)?;
        sdk::delete_retrying(|| remove(c, id.to_string())).await
    }
}

/// One `DeleteRouteTable` attempt.
#[cfg(feature = "aws")]
async fn remove(c: &Clients, id: String) -> Result<(), ProviderError> {
    c.ec2
        .delete_route_table()
        .route_table_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(c.err("ec2", "DeleteRouteTable"))
}

/// The route table, `None` when it is gone.
///
/// # Errors
/// EC2 could not be asked.
#[cfg(feature = "aws")]
pub(super) async fn describe(
    c: &Clients,
    id: &str,
) -> Result<Option<aws_sdk_ec2::types::RouteTable>, ProviderError> {
    let out = sdk::found(
        c.ec2
            .describe_route_tables()
            .route_table_ids(id)
            .send()
            .await
            .map_err(c.err("ec2", "DescribeRouteTables")),
    )?;
    Ok(out.and_then(|o| o.route_tables().first().cloned()))
}

/// The table's routes by destination, as `{cidr_block, gateway_id?, nat_gateway_id?}`,
/// without the VPC's local route.
#[cfg(feature = "aws")]
fn real_routes(t: &aws_sdk_ec2::types::RouteTable) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in t.routes() {
        let Some(cidr) = r.destination_cidr_block() else {
            continue;
        };
        if r.gateway_id() == Some("local") {
            continue;
        }
        let mut m = Map::new();
        m.insert("cidr_block".into(), Value::from(cidr));
        if let Some(g) = r.gateway_id() {
            m.insert("gateway_id".into(), Value::from(g));
        }
        if let Some(n) = r.nat_gateway_id() {
            m.insert("nat_gateway_id".into(), Value::from(n));
        }
        out.insert(cidr.to_string(), Value::Object(m));
    }
    out
}

/// The requested routes by destination, empty and null targets left out.
///
/// # Errors
/// A route is not a map with a `cidr_block`.
#[cfg(feature = "aws")]
fn wanted_routes(a: &Attributes) -> Result<BTreeMap<String, Value>, ProviderError> {
    let mut out = BTreeMap::new();
    for r in a
        .get("route")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let cidr = r.get("cidr_block").and_then(Value::as_str).ok_or_else(|| {
            ProviderError::invalid(
                "each `route` needs a `cidr_block` and a `gateway_id` or `nat_gateway_id`",
            )
        })?;
        let mut m = Map::new();
        m.insert("cidr_block".into(), Value::from(cidr));
        for k in ["gateway_id", "nat_gateway_id"] {
            if let Some(v) = r.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()) {
                m.insert(k.into(), Value::from(v));
            }
        }
        out.insert(cidr.to_string(), Value::Object(m));
    }
    Ok(out)
}

/// Makes the table's routes the requested ones: create what is missing, replace what
/// points elsewhere, delete the rest.
#[cfg(feature = "aws")]
async fn sync_routes(
    c: &Clients,
    id: &str,
    have: &BTreeMap<String, Value>,
    a: &Attributes,
) -> Result<(), ProviderError> {
    let want = wanted_routes(a)?;
    for (cidr, r) in &want {
        let gw = r
            .get("gateway_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let nat = r
            .get("nat_gateway_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        match have.get(cidr) {
            Some(h) if h == r => {}
            Some(_) => {
                c.ec2
                    .replace_route()
                    .route_table_id(id)
                    .destination_cidr_block(cidr)
                    .set_gateway_id(gw)
                    .set_nat_gateway_id(nat)
                    .send()
                    .await
                    .map_err(c.err("ec2", "ReplaceRoute"))?;
            }
            None => {
                c.ec2
                    .create_route()
                    .route_table_id(id)
                    .destination_cidr_block(cidr)
                    .set_gateway_id(gw)
                    .set_nat_gateway_id(nat)
                    .send()
                    .await
                    .map_err(c.err("ec2", "CreateRoute"))?;
            }
        }
    }
    for cidr in have.keys().filter(|k| !want.contains_key(*k)) {
        c.ec2
            .delete_route()
            .route_table_id(id)
            .destination_cidr_block(cidr)
            .send()
            .await
            .map_err(c.err("ec2", "DeleteRoute"))?;
    }
    Ok(())
}

/// The record of the route table `t` as AWS reports it.
#[cfg(feature = "aws")]
fn observe(recorded: &ResourceState, t: &aws_sdk_ec2::types::RouteTable) -> ResourceState {
    let routes = real_routes(t);
    sdk::observed(
        recorded,
        vec![
            ("vpc_id", Value::from(t.vpc_id().unwrap_or_default())),
            (
                "route",
                sdk::align(
                    recorded.attributes.get("route"),
                    routes.into_values().collect(),
                ),
            ),
            ("tags", sdk::ec2_user_tags(t.tags())),
        ],
        &["tags", "route"],
        sdk::outputs([("id", Value::from(t.route_table_id().unwrap_or_default()))]),
    )
}
