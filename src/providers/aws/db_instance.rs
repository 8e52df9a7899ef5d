//! `aws_db_instance`: an RDS DB instance. Identifier, engine, master user name and
//! subnet group force replacement; class, storage, version, Multi-AZ, backups, security
//! groups and the password change in place (applied immediately). Create and updates
//! wait for `available`, delete until the instance is gone. The master password is
//! sensitive (only its fingerprint is recorded) or delegated to RDS with
//! `manage_master_user_password`, whose secret ARN is an output.

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
    serde_json::Value,
    std::time::Duration,
};

/// The `aws_db_instance` type.
pub struct DbInstance;

/// The attribute table of `aws_db_instance`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    ("identifier", AttrKind::String, Mode::RequiredNew, "The DB instance identifier."),
    ("engine", AttrKind::String, Mode::RequiredNew, "The engine, e.g. `postgres`."),
    ("engine_version", AttrKind::String, Mode::Optional, "The engine version, e.g. `16.4` (upgraded in place)."),
    ("instance_class", AttrKind::String, Mode::Required, "The instance class, e.g. `db.m6g.large`."),
    ("allocated_storage", AttrKind::Number, Mode::Required, "Storage in GiB."),
    ("multi_az", AttrKind::Bool, Mode::Optional, "Whether a standby runs in another availability zone."),
    ("backup_retention_period", AttrKind::Number, Mode::Optional, "Days automated backups are kept."),
    ("username", AttrKind::String, Mode::RequiredNew, "The master user name."),
    ("password", AttrKind::String, Mode::Sensitive, "The master password (only a fingerprint in state). Unset with `manage_master_user_password: true`."),
    ("manage_master_user_password", AttrKind::Bool, Mode::Optional, "Let RDS generate the master password and keep it in Secrets Manager."),
    ("db_subnet_group_name", AttrKind::String, Mode::RequiredNew, "The DB subnet group."),
    ("vpc_security_group_ids", AttrKind::List, Mode::Optional, "Security groups of the instance."),
    ("skip_final_snapshot", AttrKind::Bool, Mode::Optional, "Whether delete skips the final snapshot (default true; else the snapshot is `IDENTIFIER-final`)."),
];

/// How long an RDS instance may take to become available or go away.
#[cfg(feature = "aws")]
const RDS_TIMEOUT: Duration = Duration::from_secs(60 * 60);

#[async_trait]
impl AwsResource for DbInstance {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_db_instance",
            ATTRS,
            true,
            &[
                ("id", "The DB instance identifier."),
                ("arn", "The DB instance ARN."),
                ("endpoint", "`ADDRESS:PORT`."),
                ("address", "The host name."),
                (
                    "master_user_secret_arn",
                    "The Secrets Manager secret holding the master password, when RDS manages it.",
                ),
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

    /// One `DescribeDBInstances` filtered by the identifiers.
    #[cfg(feature = "aws")]
    async fn read_many(
        &self,
        c: &Clients,
        items: &[&ResourceState],
    ) -> Result<Vec<Option<ResourceState>>, ProviderError> {
        let idents = items
            .iter()
            .map(|r| sdk::str_attr(&r.attributes, "identifier").map(str::to_string))
            .collect::<Result<Vec<_>, _>>()?;
        let out = c
            .rds
            .describe_db_instances()
            .filters(
                aws_sdk_rds::types::Filter::builder()
                    .name("db-instance-id")
                    .set_values(Some(idents.clone()))
                    .build(),
            )
            .send()
            .await
            .map_err(c.err("rds", "DescribeDBInstances"))?;
        Ok(items
            .iter()
            .zip(&idents)
            .map(|(r, ident)| {
                out.db_instances()
                    .iter()
                    .find(|d| d.db_instance_identifier() == Some(ident.as_str()))
                    .and_then(|d| observe(r, d))
            })
            .collect())
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let ident = sdk::str_attr(a, "identifier")?;
        let managed = sdk::opt_bool(a, "manage_master_user_password") == Some(true);
        let password = sdk::opt_str(a, "password");
        if managed == password.is_some() {
            return Err(ProviderError::invalid(
                "set exactly one of `password` and `manage_master_user_password: true`",
            ));
        }
        let adopt = match describe(c, ident).await? {
            Some(db) => {
                let tags = db
                    .tag_list()
                    .iter()
                    .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()));
                if !sdk::has_lineage(tags, req.lineage) {
                    return Err(sdk::not_ours("DB instance", ident));
                }
                if db.db_instance_status() == Some("deleting") {
                    // Going away: wait, then create anew under the same identifier.
                    wait_gone(c, ident).await?;
                    false
                } else if super::fits(self, c, req, ident).await? {
                    true
                } else {
                    // A database is never deleted on anvil's own initiative, not even
                    // one an interrupted run of this state made.
                    return Err(ProviderError::of(
                        ErrorKind::Conflict,
                        format!(
                            "DB instance `{ident}` was made by an interrupted run of this state, \
                             but its engine, username or subnet group is not what the spec \
                             asks, and anvil does not delete databases on its own: delete it \
                             (aws rds delete-db-instance --db-instance-identifier {ident}) or \
                             change `identifier`, and apply again"
                        ),
                    ));
                }
            }
            None => false,
        };
        if !adopt {
            c.rds
                .create_db_instance()
                .db_instance_identifier(ident)
                .engine(sdk::str_attr(a, "engine")?)
                .set_engine_version(sdk::opt_str(a, "engine_version").map(str::to_string))
                .db_instance_class(sdk::str_attr(a, "instance_class")?)
                .set_allocated_storage(int(a, "allocated_storage"))
                .set_multi_az(sdk::opt_bool(a, "multi_az"))
                .set_backup_retention_period(int(a, "backup_retention_period"))
                .master_username(sdk::str_attr(a, "username")?)
                .set_master_user_password(password.map(str::to_string))
                .set_manage_master_user_password(managed.then_some(true))
                .db_subnet_group_name(sdk::str_attr(a, "db_subnet_group_name")?)
                .set_vpc_security_group_ids(Some(sdk::str_list(a, "vpc_security_group_ids")))
                .set_tags(Some(rds_tag_list(&sdk::all_tags(
                    req.address,
                    req.lineage,
                    a,
                ))))
                .send()
                .await
                .map_err(c.err("rds", "CreateDBInstance"))?;
        }
        let db = wait_available(c, ident, &req.progress, &req.cancel).await?;
        Ok(sdk::applied(req, outputs(&db)))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let ident = sdk::str_attr(a, "identifier")?;
        let prior = req.prior.map(|p| &p.attributes);
        let changed = |k: &str| prior.is_none_or(|p| p.get(k) != a.get(k));
        let mut m = c
            .rds
            .modify_db_instance()
            .db_instance_identifier(ident)
            .apply_immediately(true);
        if changed("instance_class") {
            m = m.set_db_instance_class(sdk::opt_str(a, "instance_class").map(str::to_string));
        }
        if changed("allocated_storage") {
            m = m.set_allocated_storage(int(a, "allocated_storage"));
        }
        if changed("engine_version") {
            m = m
                .set_engine_version(sdk::opt_str(a, "engine_version").map(str::to_string))
                .allow_major_version_upgrade(true);
        }
        if changed("multi_az") {
            m = m.set_multi_az(sdk::opt_bool(a, "multi_az"));
        }
        if changed("backup_retention_period") {
            m = m.set_backup_retention_period(int(a, "backup_retention_period"));
        }
        if changed("vpc_security_group_ids") {
            m = m.set_vpc_security_group_ids(Some(sdk::str_list(a, "vpc_security_group_ids")));
        }
        // The password is sensitive: the prior record holds only its fingerprint, so it
        // is sent whenever the spec gives one (setting the same password is harmless).
        if let Some(p) = sdk::opt_str(a, "password") {
            m = m.master_user_password(p);
        }
        if changed("manage_master_user_password") {
            m = m.set_manage_master_user_password(sdk::opt_bool(a, "manage_master_user_password"));
        }
        m.send().await.map_err(c.err("rds", "ModifyDBInstance"))?;
        let db = wait_available(c, ident, &req.progress, &req.cancel).await?;
        rds_retag(c, db.db_instance_arn().unwrap_or_default(), req).await?;
        Ok(sdk::applied(req, outputs(&db)))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let a = &recorded.attributes;
        let ident = sdk::str_attr(a, "identifier")?;
        let skip = sdk::opt_bool(a, "skip_final_snapshot").unwrap_or(true);
        sdk::delete_retrying(|| async {
            let mut d = c
                .rds
                .delete_db_instance()
                .db_instance_identifier(ident)
                .skip_final_snapshot(skip);
            if !skip {
                d = d.final_db_snapshot_identifier(format!("{ident}-final"));
            }
            d.send()
                .await
                .map(|_| ())
                .map_err(c.err("rds", "DeleteDBInstance"))
        })
        .await?;
        wait_gone(c, ident).await
    }
}

/// Waits until a DB instance being deleted is gone.
#[cfg(feature = "aws")]
async fn wait_gone(c: &Clients, ident: &str) -> Result<(), ProviderError> {
    let wait = Wait::gone(
        format!("DB instance {ident}"),
        &[],
        Duration::from_secs(30),
        RDS_TIMEOUT,
    );
    let quiet: ProgressFn = std::sync::Arc::new(|_| {});
    waiter::until(
        &Status { c, ident },
        &wait,
        &quiet,
        &CancellationToken::new(),
    )
    .await
}

/// An integer attribute as RDS takes it.
#[cfg(feature = "aws")]
fn int(a: &crate::providers::Attributes, k: &str) -> Option<i32> {
    sdk::opt_i64(a, k).and_then(|v| i32::try_from(v).ok())
}

#[cfg(feature = "aws")]
fn outputs(db: &aws_sdk_rds::types::DbInstance) -> std::collections::BTreeMap<String, Value> {
    let address = db.endpoint().and_then(|e| e.address());
    let port = db.endpoint().and_then(|e| e.port());
    sdk::outputs([
        (
            "id",
            Value::from(db.db_instance_identifier().unwrap_or_default()),
        ),
        ("arn", Value::from(db.db_instance_arn().unwrap_or_default())),
        (
            "endpoint",
            match (address, port) {
                (Some(a), Some(p)) => Value::from(format!("{a}:{p}")),
                _ => Value::Null,
            },
        ),
        ("address", address.map_or(Value::Null, Value::from)),
        (
            "master_user_secret_arn",
            db.master_user_secret()
                .and_then(|s| s.secret_arn())
                .map_or(Value::Null, Value::from),
        ),
    ])
}

#[cfg(feature = "aws")]
async fn describe(
    c: &Clients,
    ident: &str,
) -> Result<Option<aws_sdk_rds::types::DbInstance>, ProviderError> {
    let out = sdk::found(
        c.rds
            .describe_db_instances()
            .db_instance_identifier(ident)
            .send()
            .await
            .map_err(c.err("rds", "DescribeDBInstances")),
    )?;
    Ok(out.and_then(|o| o.db_instances().first().cloned()))
}

#[cfg(feature = "aws")]
async fn wait_available(
    c: &Clients,
    ident: &str,
    progress: &ProgressFn,
    cancel: &CancellationToken,
) -> Result<aws_sdk_rds::types::DbInstance, ProviderError> {
    let wait = Wait::status(
        format!("DB instance {ident}"),
        &["available"],
        Duration::from_secs(30),
        RDS_TIMEOUT,
    )
    .failing_on(&[
        "failed",
        "incompatible-parameters",
        "incompatible-network",
        "storage-full",
    ]);
    waiter::until(&Status { c, ident }, &wait, progress, cancel).await?;
    describe(c, ident).await?.ok_or_else(|| {
        ProviderError::of(
            ErrorKind::NotFound,
            format!("DB instance {ident} disappeared after it became available"),
        )
    })
}

/// The status of one DB instance, for the waiter.
#[cfg(feature = "aws")]
struct Status<'a> {
    c: &'a Clients,
    ident: &'a str,
}

#[cfg(feature = "aws")]
#[async_trait]
impl Probe for Status<'_> {
    async fn status(&self) -> Result<Option<String>, ProviderError> {
        Ok(describe(self.c, self.ident)
            .await?
            .and_then(|d| d.db_instance_status().map(str::to_string)))
    }
}

/// Tags as RDS takes them.
#[cfg(feature = "aws")]
pub(super) fn rds_tag_list(tags: &[(String, String)]) -> Vec<aws_sdk_rds::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build())
        .collect()
}

/// The tags of an RDS object by ARN.
///
/// # Errors
/// RDS could not be asked.
#[cfg(feature = "aws")]
pub(super) async fn rds_tags(
    c: &Clients,
    arn: &str,
) -> Result<Vec<(String, String)>, ProviderError> {
    let out = c
        .rds
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .map_err(c.err("rds", "ListTagsForResource"))?;
    Ok(out
        .tag_list()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// Makes an RDS object's user tags the requested ones (anvil's stay).
///
/// # Errors
/// RDS refused.
#[cfg(feature = "aws")]
pub(super) async fn rds_retag(
    c: &Clients,
    arn: &str,
    req: &ChangeRequest<'_>,
) -> Result<(), ProviderError> {
    let want = sdk::all_tags(req.address, req.lineage, req.attributes);
    let have = rds_tags(c, arn).await?;
    let stale: Vec<String> = have
        .iter()
        .filter(|(k, _)| !want.iter().any(|(w, _)| w == k))
        .map(|(k, _)| k.clone())
        .collect();
    if !stale.is_empty() {
        c.rds
            .remove_tags_from_resource()
            .resource_name(arn)
            .set_tag_keys(Some(stale))
            .send()
            .await
            .map_err(c.err("rds", "RemoveTagsFromResource"))?;
    }
    c.rds
        .add_tags_to_resource()
        .resource_name(arn)
        .set_tags(Some(rds_tag_list(&want)))
        .send()
        .await
        .map_err(c.err("rds", "AddTagsToResource"))?;
    Ok(())
}

/// The record of the DB instance `db` as AWS reports it; `None` once it is being deleted.
#[cfg(feature = "aws")]
fn observe(recorded: &ResourceState, db: &aws_sdk_rds::types::DbInstance) -> Option<ResourceState> {
    if db.db_instance_status() == Some("deleting") {
        return None;
    }
    let tags = db
        .tag_list()
        .iter()
        .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()));
    let sgs = db
        .vpc_security_groups()
        .iter()
        .filter_map(|g| g.vpc_security_group_id().map(Value::from))
        .collect();
    Some(sdk::observed(
        recorded,
        vec![
            ("engine", Value::from(db.engine().unwrap_or_default())),
            (
                "engine_version",
                Value::from(db.engine_version().unwrap_or_default()),
            ),
            (
                "instance_class",
                Value::from(db.db_instance_class().unwrap_or_default()),
            ),
            (
                "allocated_storage",
                Value::from(db.allocated_storage().unwrap_or(0)),
            ),
            ("multi_az", Value::from(db.multi_az().unwrap_or(false))),
            (
                "backup_retention_period",
                Value::from(db.backup_retention_period().unwrap_or(0)),
            ),
            (
                "username",
                Value::from(db.master_username().unwrap_or_default()),
            ),
            (
                "db_subnet_group_name",
                Value::from(
                    db.db_subnet_group()
                        .and_then(|g| g.db_subnet_group_name())
                        .unwrap_or_default(),
                ),
            ),
            (
                "vpc_security_group_ids",
                sdk::align(recorded.attributes.get("vpc_security_group_ids"), sgs),
            ),
            ("tags", sdk::user_tags(tags)),
        ],
        &["tags"],
        outputs(db),
    ))
}
