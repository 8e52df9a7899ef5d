//! Normalisation of an `Environment` document into AWS resources (design §1, issue 10).
//!
//! With `N` the environment's name and `Z` each availability-zone letter it uses:
//! - `aws_vpc.N`; `aws_subnet.N-public-Z` and `aws_subnet.N-private-Z`, their CIDRs
//!   carved from `network.cidr` ([`carve`]); `aws_internet_gateway.N`;
//! - NAT: `aws_eip.N-nat-Z` + `aws_nat_gateway.N-Z` in the public subnet of each zone
//!   (`small`: only the first zone's, shared);
//! - routes: `aws_route_table.N-public` (0.0.0.0/0 → the internet gateway) and
//!   `aws_route_table.N-private-Z` (0.0.0.0/0 → the zone's NAT gateway), each subnet
//!   associated (`aws_route_table_association.N-public-Z`, `…N-private-Z`);
//! - `aws_security_group.N-cluster` (443 from the VPC) and, with a database,
//!   `aws_security_group.N-db` (the engine's port from the private subnets);
//! - `aws_eks_cluster.N` and `aws_eks_node_group.N-default` in the private subnets;
//! - `aws_db_subnet_group.N` and `aws_db_instance.N` (identifier `N-db`);
//! - `aws_s3_bucket.N` with `aws_s3_bucket_versioning.N`,
//!   `aws_s3_bucket_public_access_block.N` and, with `lifecycle_days`,
//!   `aws_s3_bucket_lifecycle_configuration.N`.
//!
//! Computed values (ids) are `${TYPE.NAME.ATTR}` references, which give the dependency
//! edges; names AWS takes as plain strings (cluster, subnet group, bucket) are written
//! out and ordered by `depends_on`, so plans show them. Every resource uses the provider
//! instance `aws.N`, configured from `region`, `role_arn` and `external_id`.
//!
//! Checks, each located at its field: `gcp` (not supported yet), unknown region, role
//! ARNs (shape, account), CIDRs (parse, network address, `/16`–`/28`, room for the
//! subnets), `az_count` against the region table, names AWS would refuse (bucket,
//! identifiers), database limits, reserved tag prefixes. No IO.

#[cfg(test)]
#[path = "environment_tests.rs"]
mod tests;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Map, Value};

use crate::spec::{
    CloudProvider, DatabaseSpec, Document, EnvironmentDoc, FieldPath, Lifecycle, ResourceSpec,
    Size, SpecError, StorageSpec,
};

/// What one size profile means. The table is documented in docs/environment.md and in
/// the schema's description of `size`; a test keeps both in step with [`PROFILES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeProfile {
    pub size: Size,
    /// The node group's EC2 instance type.
    pub node_instance_type: &'static str,
    pub nodes_min: u32,
    pub nodes_desired: u32,
    pub nodes_max: u32,
    /// The nodes' root volume, GiB.
    pub node_disk_gib: u32,
    /// The RDS instance class.
    pub db_class: &'static str,
    /// Default allocated storage, GiB.
    pub db_storage_gib: u32,
    /// Default for `database.multi_az`.
    pub db_multi_az: bool,
    /// Default for `database.backup_retention_days`.
    pub db_backup_days: u32,
    /// One NAT gateway per zone (else one, in the first zone, shared: cheaper, not
    /// zone-redundant).
    pub nat_per_az: bool,
}

/// The size profiles, smallest first. Medium and large scale out (more nodes of the
/// same type and disk), so moving between them changes the node group in place; small
/// uses smaller nodes, so leaving it replaces the node group (`instance_types` and
/// `disk_size` force a new one in AWS).
pub const PROFILES: [SizeProfile; 3] = [
    SizeProfile {
        size: Size::Small,
        node_instance_type: "t3.large",
        nodes_min: 1,
        nodes_desired: 2,
        nodes_max: 3,
        node_disk_gib: 50,
        db_class: "db.t3.medium",
        db_storage_gib: 20,
        db_multi_az: false,
        db_backup_days: 1,
        nat_per_az: false,
    },
    SizeProfile {
        size: Size::Medium,
        node_instance_type: "m5.xlarge",
        nodes_min: 2,
        nodes_desired: 3,
        nodes_max: 6,
        node_disk_gib: 100,
        db_class: "db.m5.large",
        db_storage_gib: 100,
        db_multi_az: true,
        db_backup_days: 7,
        nat_per_az: true,
    },
    SizeProfile {
        size: Size::Large,
        node_instance_type: "m5.xlarge",
        nodes_min: 3,
        nodes_desired: 6,
        nodes_max: 12,
        node_disk_gib: 100,
        db_class: "db.r5.xlarge",
        db_storage_gib: 500,
        db_multi_az: true,
        db_backup_days: 14,
        nat_per_az: true,
    },
];

/// The profile of a size.
#[must_use]
pub fn profile(size: Size) -> &'static SizeProfile {
    match size {
        Size::Small => &PROFILES[0],
        Size::Medium => &PROFILES[1],
        Size::Large => &PROFILES[2],
    }
}

impl SizeProfile {
    /// The profile's row of the documented table (docs/environment.md, schema).
    #[must_use]
    pub fn table_row(&self) -> String {
        format!(
            "| {} | {} | {}/{}/{} | {} | {} | {} | {} | {} | {} |",
            self.size.as_str(),
            self.node_instance_type,
            self.nodes_min,
            self.nodes_desired,
            self.nodes_max,
            self.node_disk_gib,
            self.db_class,
            self.db_storage_gib,
            if self.db_multi_az { "yes" } else { "no" },
            self.db_backup_days,
            if self.nat_per_az { "one per AZ" } else { "1" },
        )
    }
}

/// A supported region and the letters of the availability zones anvil uses there (the
/// zones open to every account; `ap-northeast-1b` and `ca-central-1c` are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub name: &'static str,
    pub zones: &'static str,
}

/// The regions anvil supports, with their zones (docs/environment.md).
pub const REGIONS: &[Region] = &[
    Region {
        name: "us-east-1",
        zones: "abcdef",
    },
    Region {
        name: "us-east-2",
        zones: "abc",
    },
    Region {
        name: "us-west-2",
        zones: "abcd",
    },
    Region {
        name: "ca-central-1",
        zones: "abd",
    },
    Region {
        name: "eu-west-1",
        zones: "abc",
    },
    Region {
        name: "eu-west-2",
        zones: "abc",
    },
    Region {
        name: "eu-west-3",
        zones: "abc",
    },
    Region {
        name: "eu-central-1",
        zones: "abc",
    },
    Region {
        name: "eu-north-1",
        zones: "abc",
    },
    Region {
        name: "ap-south-1",
        zones: "abc",
    },
    Region {
        name: "ap-southeast-1",
        zones: "abc",
    },
    Region {
        name: "ap-southeast-2",
        zones: "abc",
    },
    Region {
        name: "ap-northeast-1",
        zones: "acd",
    },
    Region {
        name: "sa-east-1",
        zones: "abc",
    },
];

/// The region's entry, if supported.
#[must_use]
pub fn region(name: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.name == name)
}

/// The smallest subnet AWS allows, as a prefix length.
const SMALLEST_SUBNET: u8 = 28;
/// The biggest VPC block AWS allows, as a prefix length.
const BIGGEST_VPC: u8 = 16;

/// The subnets carved from a VPC block: per zone, in zone order, a public and a private
/// CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carved {
    pub public: Vec<Ipv4Net>,
    pub private: Vec<Ipv4Net>,
}

/// Cuts `net` into `2 × zones` equal subnets, each the largest power-of-two part that
/// lets them all fit: public subnets first (zone order), then private ones. With 3 zones
/// a `/16` gives six `/19`s (two `/19`s stay free for later).
///
/// # Errors
/// Why it cannot (the subnets would be smaller than `/28`), saying what would fit.
pub fn carve(net: Ipv4Net, zones: u32) -> Result<Carved, String> {
    // u64: any u32 zone count doubles without overflow.
    let count = 2 * u64::from(zones.max(1));
    // ceil(log2(count)) extra prefix bits.
    let bits = u8::try_from(64 - (count - 1).leading_zeros()).unwrap_or(u8::MAX);
    let prefix = net.prefix_len().saturating_add(bits);
    if bits > SMALLEST_SUBNET - BIGGEST_VPC {
        return Err(format!(
            "no VPC block holds {count} subnets (a public and a private one in each of {zones} zones) of at least /{SMALLEST_SUBNET}: use fewer zones"
        ));
    }
    if prefix > SMALLEST_SUBNET {
        let need = SMALLEST_SUBNET.saturating_sub(bits);
        return Err(format!(
            "{net} cannot hold {count} subnets (a public and a private one in each of {zones} zones): they would be /{prefix}, smaller than the /{SMALLEST_SUBNET} AWS allows; use a block of /{need} or bigger, e.g. {}/{need}, or fewer zones",
            net.network(),
        ));
    }
    let all: Vec<Ipv4Net> = net
        .subnets(prefix)
        .map_err(|e| format!("{net} cannot be cut into /{prefix} subnets: {e}"))?
        .take(usize::try_from(count).unwrap_or(usize::MAX))
        .collect();
    // `all` has `count` subnets: the prefix check above guarantees that many fit.
    let (public, private) = all.split_at((all.len() / 2).min(zones as usize));
    Ok(Carved {
        public: public.to_vec(),
        private: private.to_vec(),
    })
}

/// Parses a VPC block: an IPv4 CIDR, its network address, `/16` to `/28`.
///
/// # Errors
/// What is wrong and what to write instead.
pub fn parse_vpc_cidr(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s.trim().parse().map_err(|_| {
        format!("`{s}` is not an IPv4 CIDR block: expected ADDRESS/PREFIX, e.g. 10.0.0.0/16")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "`{s}` has host bits set: the block starts at {}, write `{}`",
            net.network(),
            net.trunc()
        ));
    }
    if net.prefix_len() < BIGGEST_VPC || net.prefix_len() > SMALLEST_SUBNET {
        return Err(format!(
            "`{s}` is a /{} block: AWS VPCs take /{BIGGEST_VPC} to /{SMALLEST_SUBNET}",
            net.prefix_len()
        ));
    }
    Ok(net)
}

/// Why AWS would refuse `name` as a general-purpose S3 bucket name, if it would.
#[must_use]
pub fn bucket_name_problem(name: &str) -> Option<String> {
    let len = name.chars().count();
    if !(3..=63).contains(&len) {
        return Some(format!(
            "is {len} characters long: bucket names have 3 to 63"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Some(format!(
            "contains `{c}`: bucket names use only lowercase letters, digits, `-` and `.`"
        ));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge(name.chars().next()) || !edge(name.chars().last()) {
        return Some("must start and end with a lowercase letter or digit".into());
    }
    if name.contains("..") {
        return Some("contains `..`: no two adjacent periods".into());
    }
    if name.contains(".-") || name.contains("-.") {
        return Some("has a `-` next to a `.`: AWS refuses `.-` and `-.`".into());
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return Some("is formatted as an IP address, which AWS refuses".into());
    }
    for p in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(p) {
            return Some(format!("starts with `{p}`, a prefix AWS reserves"));
        }
    }
    for s in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(s) {
            return Some(format!("ends with `{s}`, a suffix AWS reserves"));
        }
    }
    None
}

/// Why `arn` is not an IAM role ARN in `account`, if it is not.
fn role_arn_problem(arn: &str, account: &str) -> Option<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let shape =
        "expected arn:aws:iam::ACCOUNT_ID:role/NAME, e.g. arn:aws:iam::123456789012:role/anvil";
    let [scheme, partition, service, region, acct, resource] = parts.as_slice() else {
        return Some(format!("`{arn}` is not an IAM role ARN: {shape}"));
    };
    if *scheme != "arn" || !matches!(*partition, "aws" | "aws-cn" | "aws-us-gov") {
        return Some(format!("`{arn}` is not an IAM role ARN: {shape}"));
    }
    if *service != "iam" || !region.is_empty() {
        return Some(format!(
            "`{arn}` is not an IAM role ARN (service `{service}`, region `{region}`): {shape}"
        ));
    }
    if acct.len() != 12 || !acct.chars().all(|c| c.is_ascii_digit()) {
        return Some(format!(
            "`{arn}` has account `{acct}`: an account id is 12 digits; {shape}"
        ));
    }
    let Some(path) = resource.strip_prefix("role/") else {
        return Some(format!("`{arn}` names `{resource}`, not a role: {shape}"));
    };
    let name = path.rsplit('/').next().unwrap_or("");
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
        return Some(format!(
            "`{arn}` has role name `{name}`: 1 to 64 letters, digits and +=,.@_-"
        ));
    }
    if *acct != account {
        return Some(format!(
            "`{arn}` is in account {acct}, but account_id is {account}: use a role of the environment's account, or fix account_id"
        ));
    }
    None
}

/// The resources, outputs and provider instance of one Environment document.
#[derive(Debug, Default)]
pub struct Normalised {
    pub resources: Vec<ResourceSpec>,
    /// `(name, value template, description)`, in a fixed order.
    pub outputs: Vec<(String, String, &'static str)>,
}

/// The provider instance an `aws` environment's resources use: `aws.N`, configured with
/// `region` and, when set, `role_arn` and `external_id`. `None` for other clouds.
#[must_use]
pub fn provider_instance(e: &EnvironmentDoc) -> Option<(String, Map<String, Value>)> {
    if e.provider != CloudProvider::Aws {
        return None;
    }
    let mut settings = Map::new();
    settings.insert("region".into(), json!(e.region));
    if let Some(r) = &e.role_arn {
        settings.insert("role_arn".into(), json!(r));
    }
    if let Some(x) = &e.external_id {
        settings.insert("external_id".into(), json!(x));
    }
    Some((env_name(e).to_string(), settings))
}

/// The environment's name: `name`, else `metadata.name`.
#[must_use]
pub fn env_name(e: &EnvironmentDoc) -> &str {
    e.name.as_deref().unwrap_or(&e.metadata.name)
}

/// A string attribute value that the model reads back literally (`${` escaped).
fn lit(s: &str) -> Value {
    Value::String(s.replace("${", "$${"))
}

fn reference(ty: &str, name: &str, attr: &str) -> Value {
    Value::String(format!("${{{ty}.{name}.{attr}}}"))
}

struct Builder<'a> {
    env: &'a str,
    provider: String,
    tags: &'a BTreeMap<String, String>,
    out: Vec<ResourceSpec>,
}

impl Builder<'_> {
    /// The tags of a resource: the user's, then `Name` and `Environment`.
    fn tags(&self, name: &str) -> Value {
        let mut m: Map<String, Value> =
            self.tags.iter().map(|(k, v)| (k.clone(), lit(v))).collect();
        m.insert("Name".into(), lit(name));
        m.insert("Environment".into(), lit(self.env));
        Value::Object(m)
    }

    fn add(&mut self, ty: &str, name: &str, attrs: Value, depends_on: &[String]) {
        let attributes = match attrs {
            Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        self.out.push(ResourceSpec {
            ty: ty.into(),
            name: name.into(),
            attributes,
            depends_on: depends_on.to_vec(),
            lifecycle: Lifecycle::default(),
            provider: Some(self.provider.clone()),
            origin: None,
        });
    }

    /// Adds a taggable resource: `tags` with `Name` = `tag_name` is set here.
    fn tagged(&mut self, ty: &str, name: &str, tag_name: &str, mut attrs: Value, deps: &[String]) {
        if let Value::Object(m) = &mut attrs {
            m.insert("tags".into(), self.tags(tag_name));
        }
        self.add(ty, name, attrs, deps);
    }
}

/// Checks one Environment document and, when it has no problem, turns it into
/// resources. Problems go to `errors`, each located at its field; then nothing is
/// produced.
pub fn normalise(doc: &Document, e: &EnvironmentDoc, errors: &mut Vec<SpecError>) -> Normalised {
    let before = errors.len();
    let root = FieldPath::root();
    let mut fail = |path: FieldPath, message: String| errors.push(doc.error_at(&path, message));

    if e.provider == CloudProvider::Gcp {
        fail(
            root.key("provider"),
            "provider `gcp` is not supported yet: only `aws` environments can be planned; write `provider: aws`".into(),
        );
        return Normalised::default();
    }

    let name = env_name(e);
    let name_path = if e.name.is_some() {
        root.key("name")
    } else {
        root.key("metadata").key("name")
    };
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.len() > 32 || name.contains("--")
    {
        fail(
            name_path,
            format!(
                "environment name `{name}` cannot name AWS resources: it must start with a lowercase letter, have at most 32 characters and no `--` (RDS identifiers are stricter than workspace names); set `name:` to one that does"
            ),
        );
    }

    let region = region(&e.region);
    if region.is_none() {
        let known: Vec<&str> = REGIONS.iter().map(|r| r.name).collect();
        fail(
            root.key("region"),
            format!(
                "unknown region `{}`: {}expected one of {} (the regions in anvil's zone table, docs/environment.md)",
                e.region,
                crate::spec::did_you_mean_hint(&e.region, known.iter().copied()),
                known.join(", ")
            ),
        );
    }

    if let Some(arn) = &e.role_arn {
        if let Some(p) = role_arn_problem(arn, &e.account_id) {
            fail(root.key("role_arn"), p);
        }
    }
    if let Some(x) = &e.external_id {
        if e.role_arn.is_none() {
            fail(
                root.key("external_id"),
                "external_id is only used to assume `role_arn`: set role_arn, or remove external_id".into(),
            );
        } else if !(2..=1224).contains(&x.len())
            || !x
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c))
        {
            fail(
                root.key("external_id"),
                "external_id must be 2 to 1224 letters, digits and +=,.@:/_-".into(),
            );
        }
    }
    let k8s = root.key("kubernetes");
    for (field, arn) in [
        ("cluster_role_arn", &e.kubernetes.cluster_role_arn),
        ("node_role_arn", &e.kubernetes.node_role_arn),
    ] {
        if let Some(p) = arn
            .as_ref()
            .and_then(|a| role_arn_problem(a, &e.account_id))
        {
            fail(k8s.key(field), p);
        }
    }

    let net_path = root.key("network");
    let zones = e.network.az_count;
    let mut carved = None;
    let zones_ok = zones >= 2 && region.is_none_or(|r| zones as usize <= r.zones.len());
    match region {
        Some(r) if !zones_ok => fail(
            net_path.key("az_count"),
            format!(
                "az_count {zones}: {} has {} zones in anvil's table ({}), and EKS and RDS need at least 2; use 2 to {}",
                r.name,
                r.zones.len(),
                r.zones.chars().map(|z| format!("{}{z}", r.name)).collect::<Vec<_>>().join(", "),
                r.zones.len()
            ),
        ),
        _ if !zones_ok => fail(
            net_path.key("az_count"),
            format!("az_count {zones}: EKS and RDS need at least 2 zones"),
        ),
        _ => {}
    }
    match parse_vpc_cidr(&e.network.cidr) {
        Err(m) => fail(net_path.key("cidr"), m),
        // Whether the block holds the subnets only means something for a usable count.
        Ok(net) if zones_ok => match carve(net, zones) {
            Err(m) => fail(net_path.key("cidr"), m),
            Ok(c) => carved = Some(c),
        },
        Ok(_) => {}
    }

    for key in e.tags.keys() {
        let lower = key.to_ascii_lowercase();
        if lower.starts_with("aws:") || lower.starts_with("anvil:") {
            fail(
                root.key("tags").key(key.as_str()),
                format!("tag `{key}`: the `aws:` and `anvil:` prefixes are reserved (AWS's and the provider's own tags); rename it"),
            );
        } else if key == "Name" || key == "Environment" {
            fail(
                root.key("tags").key(key.as_str()),
                format!("tag `{key}` is set by anvil on every resource (the resource's name, the environment's name); remove it"),
            );
        } else if key.is_empty() || key.chars().count() > 128 {
            fail(
                root.key("tags").key(key.as_str()),
                "tag keys have 1 to 128 characters".into(),
            );
        }
    }
    for (key, value) in &e.tags {
        if value.chars().count() > 256 {
            fail(
                root.key("tags").key(key.as_str()),
                "tag values have at most 256 characters".into(),
            );
        }
    }

    if let Some(db) = &e.database {
        check_database(db, &root.key("database"), &mut fail);
    }
    let bucket = e
        .storage
        .as_ref()
        .map(|s| default_bucket(s, name, &e.account_id, &e.region));
    if let (Some(s), Some(b)) = (&e.storage, &bucket) {
        let p = root.key("storage");
        if let Some(problem) = bucket_name_problem(b) {
            let (at, what) = if s.bucket.is_some() {
                (p.key("bucket"), format!("bucket name `{b}`"))
            } else {
                (
                    p.clone(),
                    format!("the default bucket name `{b}` (NAME-ACCOUNT_ID-REGION)"),
                )
            };
            fail(at, format!("{what} {problem}; AWS would refuse it"));
        }
        if s.lifecycle_days == Some(0) {
            fail(
                p.key("lifecycle_days"),
                "lifecycle_days 0: objects expire at least 1 day after creation; remove it to keep objects".into(),
            );
        }
    }

    if errors.len() > before {
        return Normalised::default();
    }
    let (Some(region), Some(carved)) = (region, carved) else {
        return Normalised::default();
    };
    build(e, name, region, &carved, bucket.as_deref())
}

fn default_bucket(s: &StorageSpec, name: &str, account: &str, region: &str) -> String {
    s.bucket
        .clone()
        .unwrap_or_else(|| format!("{name}-{account}-{region}"))
}

fn check_database(db: &DatabaseSpec, p: &FieldPath, fail: &mut impl FnMut(FieldPath, String)) {
    if db.version.is_empty()
        || !db.version.starts_with(|c: char| c.is_ascii_digit())
        || !db
            .version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        fail(
            p.key("version"),
            format!(
                "engine version `{}`: expected digits and dots, e.g. 16.4",
                db.version
            ),
        );
    }
    if let Some(g) = db.storage_gib {
        if !(20..=65536).contains(&g) {
            fail(
                p.key("storage_gib"),
                format!("storage_gib {g}: RDS allocates 20 to 65536 GiB"),
            );
        }
    }
    if let Some(d) = db.backup_retention_days {
        if d > 35 {
            fail(
                p.key("backup_retention_days"),
                format!("backup_retention_days {d}: RDS keeps backups 0 to 35 days"),
            );
        }
    }
    if let Some(u) = &db.username {
        let ok = u.starts_with(|c: char| c.is_ascii_alphabetic())
            && u.len() <= 16
            && u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok || u.eq_ignore_ascii_case("rdsadmin") {
            fail(
                p.key("username"),
                format!("username `{u}`: RDS master user names are 1 to 16 letters, digits and `_`, starting with a letter, and not `rdsadmin`"),
            );
        }
    }
    if let Some(pw) = &db.password {
        // Never echo the password: only say what is wrong with it.
        let max = match db.engine {
            crate::spec::Engine::Postgres => 128,
            _ => 41,
        };
        let bad = pw
            .chars()
            .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | '"' | '@'));
        if pw.len() < 8 || pw.len() > max {
            fail(
                p.key("password"),
                format!(
                    "the password has {} characters: RDS {} takes 8 to {max}",
                    pw.len(),
                    db.engine.as_str()
                ),
            );
        } else if bad.is_some() {
            fail(
                p.key("password"),
                "the password has a character RDS refuses: use printable ASCII other than `/`, `\"`, `@` and space".into(),
            );
        }
        if db.manage_master_user_password == Some(true) {
            fail(
                p.key("manage_master_user_password"),
                "manage_master_user_password: true lets AWS choose the password, but `password` sets one: keep one of them".into(),
            );
        }
    }
}

/// Builds the resources of a checked environment.
fn build(
    e: &EnvironmentDoc,
    name: &str,
    region: &Region,
    carved: &Carved,
    bucket: Option<&str>,
) -> Normalised {
    let n = name;
    let prof = profile(e.size);
    let mut b = Builder {
        env: n,
        provider: format!("aws.{n}"),
        tags: &e.tags,
        out: Vec::new(),
    };
    let zones: Vec<char> = region
        .zones
        .chars()
        .take(e.network.az_count as usize)
        .collect();
    let vpc_id = reference("aws_vpc", n, "id");

    b.tagged(
        "aws_vpc",
        n,
        n,
        json!({
            "cidr_block": e.network.cidr.trim(),
            "enable_dns_support": true,
            "enable_dns_hostnames": true,
        }),
        &[],
    );
    for (i, z) in zones.iter().enumerate() {
        for (kind, cidr, public) in [
            ("public", carved.public[i], true),
            ("private", carved.private[i], false),
        ] {
            let sn = format!("{n}-{kind}-{z}");
            let attrs = json!({
                "vpc_id": vpc_id,
                "cidr_block": cidr.to_string(),
                "availability_zone": format!("{}{z}", region.name),
                "map_public_ip_on_launch": public,
            });
            b.tagged("aws_subnet", &sn, &sn, attrs, &[]);
            // Where Kubernetes puts load balancers.
            if let Some(Value::Object(tags)) =
                b.out.last_mut().and_then(|r| r.attributes.get_mut("tags"))
            {
                let role = if public {
                    "kubernetes.io/role/elb"
                } else {
                    "kubernetes.io/role/internal-elb"
                };
                tags.insert(role.into(), json!("1"));
            }
        }
    }
    b.tagged(
        "aws_internet_gateway",
        n,
        n,
        json!({ "vpc_id": vpc_id }),
        &[],
    );
    let igw = format!("aws_internet_gateway.{n}");

    // NAT gateways: per zone, or one in the first zone shared by all (small).
    let nat_zones: Vec<char> = if prof.nat_per_az {
        zones.clone()
    } else {
        zones.iter().take(1).copied().collect()
    };
    for z in &nat_zones {
        let eip = format!("{n}-nat-{z}");
        b.tagged(
            "aws_eip",
            &eip,
            &eip,
            json!({ "domain": "vpc" }),
            std::slice::from_ref(&igw),
        );
        let nat = format!("{n}-{z}");
        b.tagged(
            "aws_nat_gateway",
            &nat,
            &nat,
            json!({
                "allocation_id": reference("aws_eip", &eip, "id"),
                "subnet_id": reference("aws_subnet", &format!("{n}-public-{z}"), "id"),
            }),
            // AWS: a NAT gateway needs the VPC's internet gateway attached first.
            std::slice::from_ref(&igw),
        );
    }

    let public_rt = format!("{n}-public");
    b.tagged(
        "aws_route_table",
        &public_rt,
        &public_rt,
        json!({
            "vpc_id": vpc_id,
            "route": [{
                "cidr_block": "0.0.0.0/0",
                "gateway_id": reference("aws_internet_gateway", n, "id"),
            }],
        }),
        &[],
    );
    for z in &zones {
        let nat_zone = if prof.nat_per_az { *z } else { nat_zones[0] };
        let rt = format!("{n}-private-{z}");
        b.tagged(
            "aws_route_table",
            &rt,
            &rt,
            json!({
                "vpc_id": vpc_id,
                "route": [{
                    "cidr_block": "0.0.0.0/0",
                    "nat_gateway_id": reference("aws_nat_gateway", &format!("{n}-{nat_zone}"), "id"),
                }],
            }),
            &[],
        );
        for (kind, table) in [("public", &public_rt), ("private", &rt)] {
            let sn = format!("{n}-{kind}-{z}");
            b.add(
                "aws_route_table_association",
                &sn,
                json!({
                    "subnet_id": reference("aws_subnet", &sn, "id"),
                    "route_table_id": reference("aws_route_table", table, "id"),
                }),
                &[],
            );
        }
    }

    let all_out = json!([{
        "protocol": "-1",
        "from_port": 0,
        "to_port": 0,
        "cidr_blocks": ["0.0.0.0/0"],
        "description": "all outbound",
    }]);
    let cluster_sg = format!("{n}-cluster");
    b.tagged(
        "aws_security_group",
        &cluster_sg,
        &cluster_sg,
        json!({
            "name": cluster_sg,
            "description": format!("EKS cluster {n}: the Kubernetes API from inside the VPC"),
            "vpc_id": vpc_id,
            "ingress": [{
                "protocol": "tcp",
                "from_port": 443,
                "to_port": 443,
                "cidr_blocks": [e.network.cidr.trim()],
                "description": "Kubernetes API from the VPC",
            }],
            "egress": all_out,
        }),
        &[],
    );

    let private_ids: Vec<Value> = zones
        .iter()
        .map(|z| reference("aws_subnet", &format!("{n}-private-{z}"), "id"))
        .collect();
    let account = &e.account_id;
    let cluster_role = e
        .kubernetes
        .cluster_role_arn
        .clone()
        .unwrap_or_else(|| format!("arn:aws:iam::{account}:role/{n}-eks-cluster"));
    let node_role = e
        .kubernetes
        .node_role_arn
        .clone()
        .unwrap_or_else(|| format!("arn:aws:iam::{account}:role/{n}-eks-node"));
    b.tagged(
        "aws_eks_cluster",
        n,
        n,
        json!({
            "name": n,
            "role_arn": lit(&cluster_role),
            "version": e.kubernetes.version,
            "subnet_ids": private_ids,
            "security_group_ids": [reference("aws_security_group", &cluster_sg, "id")],
        }),
        // The nodes reach the internet through the private routes.
        &zones
            .iter()
            .map(|z| format!("aws_route_table_association.{n}-private-{z}"))
            .collect::<Vec<_>>(),
    );
    let ng = format!("{n}-default");
    b.tagged(
        "aws_eks_node_group",
        &ng,
        &ng,
        json!({
            "cluster_name": n,
            "node_group_name": ng,
            "node_role_arn": lit(&node_role),
            "subnet_ids": private_ids,
            "instance_types": [prof.node_instance_type],
            "scaling_config": {
                "desired_size": prof.nodes_desired,
                "min_size": prof.nodes_min,
                "max_size": prof.nodes_max,
            },
            "disk_size": prof.node_disk_gib,
        }),
        &[format!("aws_eks_cluster.{n}")],
    );

    let mut outputs: Vec<(String, String, &'static str)> = vec![
        (
            "vpc_id".into(),
            format!("${{aws_vpc.{n}.id}}"),
            "the VPC's id",
        ),
        (
            "cluster_name".into(),
            format!("${{aws_eks_cluster.{n}.name}}"),
            "the EKS cluster's name",
        ),
        (
            "cluster_endpoint".into(),
            format!("${{aws_eks_cluster.{n}.endpoint}}"),
            "the Kubernetes API endpoint",
        ),
    ];

    if let Some(db) = &e.database {
        let dprof = profile(db.size.unwrap_or(e.size));
        let db_sg = format!("{n}-db");
        let private_cidrs: Vec<String> = carved.private.iter().map(ToString::to_string).collect();
        b.tagged(
            "aws_security_group",
            &db_sg,
            &db_sg,
            json!({
                "name": db_sg,
                "description": format!("RDS {} of {n}: from the private subnets", db.engine.as_str()),
                "vpc_id": vpc_id,
                "ingress": [{
                    "protocol": "tcp",
                    "from_port": db.engine.port(),
                    "to_port": db.engine.port(),
                    "cidr_blocks": private_cidrs,
                    "description": format!("{} from the private subnets", db.engine.as_str()),
                }],
                "egress": all_out,
            }),
            &[],
        );
        let group = format!("{n}-db");
        b.tagged(
            "aws_db_subnet_group",
            n,
            &group,
            json!({
                "name": group,
                "description": format!("private subnets of {n}"),
                "subnet_ids": private_ids,
            }),
            &[],
        );
        let managed = db.password.is_none() && db.manage_master_user_password != Some(false);
        let mut attrs = json!({
            "identifier": format!("{n}-db"),
            "engine": db.engine.as_str(),
            "engine_version": db.version,
            "instance_class": dprof.db_class,
            "allocated_storage": db.storage_gib.unwrap_or(prof.db_storage_gib),
            "multi_az": db.multi_az.unwrap_or(prof.db_multi_az),
            "backup_retention_period": db.backup_retention_days.unwrap_or(prof.db_backup_days),
            "db_subnet_group_name": group,
            "vpc_security_group_ids": [reference("aws_security_group", &db_sg, "id")],
            "username": db.username.as_deref().unwrap_or("anvil"),
            "manage_master_user_password": managed,
            "skip_final_snapshot": db.skip_final_snapshot,
        });
        if let (Some(pw), Value::Object(m)) = (&db.password, &mut attrs) {
            m.insert("password".into(), lit(pw));
        }
        b.tagged(
            "aws_db_instance",
            n,
            &format!("{n}-db"),
            attrs,
            &[format!("aws_db_subnet_group.{n}")],
        );
        outputs.push((
            "rds_endpoint".into(),
            format!("${{aws_db_instance.{n}.endpoint}}"),
            "the database endpoint, HOST:PORT",
        ));
        if managed {
            outputs.push((
                "rds_secret_arn".into(),
                format!("${{aws_db_instance.{n}.master_user_secret_arn}}"),
                "the Secrets Manager secret holding the master password",
            ));
        }
    }

    if let (Some(s), Some(bucket)) = (&e.storage, bucket) {
        let after = [format!("aws_s3_bucket.{n}")];
        b.tagged(
            "aws_s3_bucket",
            n,
            bucket,
            json!({ "bucket": bucket, "force_destroy": s.force_destroy }),
            &[],
        );
        b.add(
            "aws_s3_bucket_versioning",
            n,
            json!({
                "bucket": bucket,
                "status": if s.versioning { "Enabled" } else { "Suspended" },
            }),
            &after,
        );
        b.add(
            "aws_s3_bucket_public_access_block",
            n,
            json!({
                "bucket": bucket,
                "block_public_acls": true,
                "block_public_policy": true,
                "ignore_public_acls": true,
                "restrict_public_buckets": true,
            }),
            &after,
        );
        if let Some(days) = s.lifecycle_days {
            b.add(
                "aws_s3_bucket_lifecycle_configuration",
                n,
                json!({ "bucket": bucket, "expiration_days": days }),
                &after,
            );
        }
        outputs.push((
            "bucket_name".into(),
            format!("${{aws_s3_bucket.{n}.bucket}}"),
            "the bucket's name",
        ));
        outputs.push((
            "bucket_arn".into(),
            format!("${{aws_s3_bucket.{n}.arn}}"),
            "the bucket's ARN",
        ));
    }

    // Several environments in one workspace keep their outputs apart by name.
    if e.name.is_some() {
        for o in &mut outputs {
            o.0 = format!("{n}.{}", o.0);
        }
    }
    Normalised {
        resources: b.out,
        outputs,
    }
}
