//! The typed shape of an `Environment` document (design §1): a cloud environment — a
//! network, a Kubernetes cluster, a database and a bucket — described by a few choices
//! that `model::environment` normalises into AWS resources.
//!
//! Only the shape lives here (serde + schemars). What the values must satisfy beyond
//! their JSON types (CIDRs, regions, ARNs, bucket names) is checked, located, by the
//! normalisation, which also holds the size-profile and region tables these doc comments
//! repeat (a test keeps them in step).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{ApiVersion, Metadata};

/// `kind: Environment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EnvironmentKind {
    /// A cloud environment.
    Environment,
}

/// An `Environment` document: a cloud environment (VPC with public and private subnets
/// per availability zone, NAT, an EKS cluster and node group, an RDS database and an S3
/// bucket), sized by one profile. See docs/environment.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentDoc {
    /// Always `anvil/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: ApiVersion,
    /// Always `Environment`.
    pub kind: EnvironmentKind,
    /// Names the workspace; every document loaded together must share it.
    pub metadata: Metadata,
    /// The environment's name, carried by every resource name (`aws_vpc.NAME`, cluster
    /// `NAME`, database `NAME-db`) and by the provider instance its resources use
    /// (`aws.NAME`). Default: `metadata.name`. Set it to keep several environments in one
    /// workspace; their outputs are then named `NAME.vpc_id`, ... instead of `vpc_id`.
    /// A lowercase letter first, then lowercase letters, digits and `-`, at most 32
    /// characters (RDS identifiers start with a letter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"))]
    pub name: Option<String>,
    /// The cloud: `aws`. `gcp` is accepted by the schema and refused when planning
    /// (not supported yet).
    pub provider: CloudProvider,
    /// The AWS region, e.g. `eu-central-1`. Supported regions and their availability
    /// zones: us-east-1 (a–f), us-east-2 (a–c), us-west-2 (a–d), ca-central-1 (a, b, d),
    /// eu-west-1, eu-west-2, eu-west-3, eu-central-1, eu-north-1 (a–c), ap-south-1,
    /// ap-southeast-1, ap-southeast-2 (a–c), ap-northeast-1 (a, c, d), sa-east-1 (a–c).
    pub region: String,
    /// The AWS account id: 12 digits. Default role ARNs are derived from it.
    #[schemars(pattern(r"^[0-9]{12}$"))]
    pub account_id: String,
    /// A role to assume for every AWS call (`arn:aws:iam::ACCOUNT:role/NAME`, in
    /// `account_id`). Without it the ambient credentials (environment, profile) are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for (only with `role_arn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The size profile:
    ///
    /// | size | node instance type | nodes min/desired/max | node disk GiB | DB class | DB storage GiB | DB multi-AZ | DB backup days | NAT gateways |
    /// |---|---|---|---|---|---|---|---|---|
    /// | small | t3.large | 1/2/3 | 50 | db.t3.medium | 20 | no | 1 | 1 |
    /// | medium | m5.xlarge | 2/3/6 | 100 | db.m5.large | 100 | yes | 7 | one per AZ |
    /// | large | m5.xlarge | 3/6/12 | 100 | db.r5.xlarge | 500 | yes | 14 | one per AZ |
    pub size: Size,
    /// The network.
    pub network: NetworkSpec,
    /// The EKS cluster and its node group.
    pub kubernetes: KubernetesSpec,
    /// The RDS database; without it, none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,
    /// The S3 bucket; without it, none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Extra tags on every taggable resource (beside `Name` and `Environment`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// The cloud an environment lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CloudProvider {
    Aws,
    Gcp,
}

/// A size profile: `small`, `medium` or `large` (see `size` for the table).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    /// The name as written in specs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }
}

/// The VPC and how many availability zones it spans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// The VPC's IPv4 block, `/16` to `/28`, e.g. `10.0.0.0/16`. It is cut into
    /// 2 × `az_count` equal subnets (a private and a public one per zone), so it must be
    /// big enough for subnets of at most `/28`.
    pub cidr: String,
    /// How many availability zones to use: at least 2 (EKS and RDS need two), at most
    /// what the region has (see `region`). Default 3.
    #[serde(default = "three")]
    pub az_count: u32,
}

fn three() -> u32 {
    3
}

/// The EKS cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// The Kubernetes version, `MAJOR.MINOR`, e.g. `1.31`.
    #[schemars(pattern(r"^[0-9]+\.[0-9]+$"))]
    pub version: String,
    /// The cluster's IAM role. Default
    /// `arn:aws:iam::ACCOUNT_ID:role/NAME-eks-cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_role_arn: Option<String>,
    /// The nodes' IAM role. Default `arn:aws:iam::ACCOUNT_ID:role/NAME-eks-node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_role_arn: Option<String>,
}

/// The RDS database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Mysql,
    Mariadb,
}

impl Engine {
    /// The RDS engine name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
            Engine::Mariadb => "mariadb",
        }
    }

    /// The port the database security group opens.
    #[must_use]
    pub fn port(self) -> u16 {
        match self {
            Engine::Postgres => 5432,
            Engine::Mysql | Engine::Mariadb => 3306,
        }
    }
}

/// The RDS database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    /// `postgres` (port 5432), `mysql` or `mariadb` (port 3306).
    pub engine: Engine,
    /// The engine version, e.g. `16.4`.
    pub version: String,
    /// The size profile for the database alone (its instance class); default the
    /// environment's `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Allocated storage in GiB, 20 to 65536; default from the size profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_gib: Option<u32>,
    /// A standby in another zone; default from the size profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_az: Option<bool>,
    /// Days of automated backups, 0 to 35; default from the size profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_retention_days: Option<u32>,
    /// The master user name; default `anvil`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The master password (sensitive: only its fingerprint is kept in state). Write
    /// `${env:NAME}`, not the password. Without it (and by default) AWS manages the
    /// password in Secrets Manager (`manage_master_user_password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Let AWS generate and keep the password in Secrets Manager (its ARN is the
    /// `rds_secret_arn` output). Default: true unless `password` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manage_master_user_password: Option<bool>,
    /// Delete without a final snapshot. Default true.
    #[serde(default = "yes")]
    pub skip_final_snapshot: bool,
}

fn yes() -> bool {
    true
}

/// The S3 bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// The bucket name: 3–63 lowercase letters, digits, `-` and `.`, starting and ending
    /// with a letter or digit, no `..`, not an IP address, no `xn--`/`sthree-`/
    /// `amzn-s3-demo-` prefix and no `-s3alias`/`--ol-s3`/`.mrap`/`--x-s3`/
    /// `--table-s3` suffix. Default `NAME-ACCOUNT_ID-REGION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Keep object versions. Default true.
    #[serde(default = "yes")]
    pub versioning: bool,
    /// Expire objects this many days after creation (at least 1); without it, never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_days: Option<u32>,
    /// Let `destroy` delete a bucket that still holds objects. Default false.
    #[serde(default)]
    pub force_destroy: bool,
}
