//! `aws_db_subnet_group`: an RDS DB subnet group. The name forces replacement; the
//! description and subnets change in place. Create adopts a group of that name tagged
//! with this state's lineage and refuses one that is not.

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

/// The `aws_db_subnet_group` type.
pub struct DbSubnetGroup;

/// The attribute table of `aws_db_subnet_group`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    (
        "name",
        AttrKind::String,
        Mode::RequiredNew,
        "The group name (lower case).",
    ),
    (
        "description",
        AttrKind::String,
        Mode::Optional,
        "The description (default `Managed by anvil`).",
    ),
    (
        "subnet_ids",
        AttrKind::List,
        Mode::Required,
        "The subnets, in at least two availability zones (changed in place).",
    ),
];

#[async_trait]
impl AwsResource for DbSubnetGroup {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_db_subnet_group",
            ATTRS,
            true,
            &[("id", "The group name."), ("arn", "The group ARN.")],
        )
    }

    #[cfg(feature = "aws")]
    async fn read(
        &self,
        c: &Clients,
        recorded: &ResourceState,
    ) -> Result<Option<ResourceState>, ProviderError> {
        let name = sdk::str_attr(&recorded.attributes, "name")?;
        let Some(g) = describe(c, name).await? else {
            return Ok(None);
        };
        let arn = g.db_subnet_group_arn().unwrap_or_default();
        let tags = super::db_instance::rds_tags(c, arn).await?;
        let subnets = g
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_identifier().map(Value::from))
            .collect();
        Ok(Some(sdk::observed(
            recorded,
            vec![
                (
                    "description",
                    Value::from(g.db_subnet_group_description().unwrap_or_default()),
                ),
                (
                    "subnet_ids",
                    sdk::align(recorded.attributes.get("subnet_ids"), subnets),
                ),
                (
                    "tags",
                    sdk::user_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                ),
            ],
            &["tags"],
            outputs(&g),
        )))
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let name = sdk::str_attr(a, "name")?;
        if let Some(g) = describe(c, name).await? {
            let tags = super::db_instance::rds_tags(c, g.db_subnet_group_arn().unwrap_or_default())
                .await?;
            if !sdk::has_lineage(
                tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                req.lineage,
            ) {
                return Err(sdk::not_ours("DB subnet group", name));
            }
            // Adopted as it is: the next plan shows any difference as an update.
            super::db_instance::rds_retag(c, g.db_subnet_group_arn().unwrap_or_default(), req)
                .await?;
            return Ok(sdk::applied(req, outputs(&g)));
        }
        let out = c
            .rds
            .create_db_subnet_group()
            .db_subnet_group_name(name)
            .db_subnet_group_description(
                sdk::opt_str(a, "description").unwrap_or("Managed by anvil"),
            )
            .set_subnet_ids(Some(sdk::str_list(a, "subnet_ids")))
            .set_tags(Some(super::db_instance::rds_tag_list(&sdk::all_tags(
                req.address,
                req.lineage,
                a,
            ))))
            .send()
            .await
            .map_err(c.err("rds", "CreateDBSubnetGroup"))?;
        let g = out
            .db_subnet_group()
            .ok_or_else(|| no_group(c, "CreateDBSubnetGroup"))?;
        Ok(sdk::applied(req, outputs(g)))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let prior = req.prior.map(|p| &p.attributes);
        let changed = |k: &str| prior.is_none_or(|p| p.get(k) != a.get(k));
        if !changed("description") && !changed("subnet_ids") {
            let name = sdk::str_attr(a, "name")?;
            let g = describe(c, name)
                .await?
                .ok_or_else(|| no_group(c, "DescribeDBSubnetGroups"))?;
            super::db_instance::rds_retag(c, g.db_subnet_group_arn().unwrap_or_default(), req)
                .await?;
            return Ok(sdk::applied(req, outputs(&g)));
        }
        let out = c
            .rds
            .modify_db_subnet_group()
            .db_subnet_group_name(sdk::str_attr(a, "name")?)
            .db_subnet_group_description(
                sdk::opt_str(a, "description").unwrap_or("Managed by anvil"),
            )
            .set_subnet_ids(Some(sdk::str_list(a, "subnet_ids")))
            .send()
            .await
            .map_err(c.err("rds", "ModifyDBSubnetGroup"))?;
        let g = out
            .db_subnet_group()
            .ok_or_else(|| no_group(c, "ModifyDBSubnetGroup"))?;
        super::db_instance::rds_retag(c, g.db_subnet_group_arn().unwrap_or_default(), req).await?;
        Ok(sdk::applied(req, outputs(g)))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let name = sdk::str_attr(&recorded.attributes, "name")?;
        sdk::delete_retrying(|| async {
            c.rds
                .delete_db_subnet_group()
                .db_subnet_group_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(c.err("rds", "DeleteDBSubnetGroup"))
        })
        .await
    }
}

#[cfg(feature = "aws")]
fn no_group(c: &Clients, op: &str) -> ProviderError {
    ProviderError::new(format!(
        "{op} at {} returned no DB subnet group; run apply again",
        c.endpoint("rds")
    ))
}

#[cfg(feature = "aws")]
fn outputs(g: &aws_sdk_rds::types::DbSubnetGroup) -> std::collections::BTreeMap<String, Value> {
    sdk::outputs([
        (
            "id",
            Value::from(g.db_subnet_group_name().unwrap_or_default()),
        ),
        (
            "arn",
            Value::from(g.db_subnet_group_arn().unwrap_or_default()),
        ),
    ])
}

#[cfg(feature = "aws")]
async fn describe(
    c: &Clients,
    name: &str,
) -> Result<Option<aws_sdk_rds::types::DbSubnetGroup>, ProviderError> {
    let out = sdk::found(
        c.rds
            .describe_db_subnet_groups()
            .db_subnet_group_name(name)
            .send()
            .await
            .map_err(c.err("rds", "DescribeDBSubnetGroups")),
    )?;
    Ok(out.and_then(|o| o.db_subnet_groups().first().cloned()))
}
