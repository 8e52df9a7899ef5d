//! `aws_security_group`: a security group and its rules. Name, description and VPC force
//! replacement; rules change in place by authorizing what is missing and revoking what
//! is extra. A rule added outside anvil shows up in `read`, so drift names it.
//!
//! A rule is `{protocol, from_port, to_port, cidr_blocks: [...], description?}`;
//! protocol `-1` (all traffic) has ports 0. Rules are compared as sets of
//! (protocol, ports, CIDR, description), so their order and grouping are not drift.

use super::{schema, AwsResource, Mode};
use crate::model::{AttrKind, ResourceSchema};
use async_trait::async_trait;
#[cfg(feature = "aws")]
use {
    super::sdk::{self, Clients},
    crate::providers::{Applied, Attributes, ChangeRequest, ProviderError},
    crate::state::ResourceState,
    aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType},
    serde_json::{Map, Value},
    std::collections::BTreeSet,
};

/// The `aws_security_group` type.
pub struct SecurityGroup;

/// The attribute table of `aws_security_group`.
const ATTRS: &[(&str, AttrKind, Mode, &str)] = &[
    ("name", AttrKind::String, Mode::RequiredNew, "The group name, unique in the VPC."),
    ("description", AttrKind::String, Mode::OptionalNew, "The description (default `Managed by anvil`)."),
    ("vpc_id", AttrKind::String, Mode::RequiredNew, "The VPC."),
    ("ingress", AttrKind::List, Mode::Optional, "Inbound rules: a list of `{protocol, from_port, to_port, cidr_blocks: [...], description?}`; protocol `-1` is all traffic (ports 0)."),
    ("egress", AttrKind::List, Mode::Optional, "Outbound rules, as `ingress`. When unset, AWS's default allow-all egress rule is left alone."),
];

/// One rule for one CIDR block: (protocol, from, to, CIDR, description).
#[cfg(feature = "aws")]
type Atom = (String, i64, i64, String, String);

#[async_trait]
impl AwsResource for SecurityGroup {
    fn schema(&self) -> ResourceSchema {
        schema(
            "aws_security_group",
            ATTRS,
            true,
            &[("id", "The group ID (`sg-…`)."), ("arn", "The group ARN.")],
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
            .describe_security_groups()
            .filters(sdk::id_filter("group-id", items)?)
            .send()
            .await
            .map_err(c.err("ec2", "DescribeSecurityGroups"))?;
        sdk::each_found(
            items,
            out.security_groups(),
            |g| g.group_id(),
            |r, g| Some(observe(c, r, g)),
        )
    }

    #[cfg(feature = "aws")]
    async fn create(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let a = req.attributes;
        let found = c
            .ec2
            .describe_security_groups()
            .set_filters(Some(sdk::ec2_owner_filters(req.address, req.lineage)))
            .send()
            .await
            .map_err(c.err("ec2", "DescribeSecurityGroups"))?;
        let ids = found
            .security_groups()
            .iter()
            .filter(|g| sdk::ec2_owned_by(g.tags(), req.address, req.lineage))
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect();
        let (adopt, stale) = super::adopt_first(self, c, req, ids).await?;
        // Before creating: a stale group of the same name in the same VPC would be in the
        // way.
        sdk::remove_stale(req, "security group", &stale, |id| remove(c, id)).await;
        let id = match adopt {
            Some(id) => id,
            None => {
                let tags = sdk::all_tags(req.address, req.lineage, a);
                let out = c
                    .ec2
                    .create_security_group()
                    .group_name(sdk::str_attr(a, "name")?)
                    .description(sdk::opt_str(a, "description").unwrap_or("Managed by anvil"))
                    .vpc_id(sdk::str_attr(a, "vpc_id")?)
                    .tag_specifications(sdk::ec2_tag_spec(ResourceType::SecurityGroup, &tags))
                    .send()
                    .await
                    .map_err(c.err("ec2", "CreateSecurityGroup"))?;
                out.group_id().unwrap_or_default().to_string()
            }
        };
        let g = sync_rules(c, &id, a).await?;
        Ok(sdk::applied(req, outputs(c, &g)))
    }

    #[cfg(feature = "aws")]
    async fn update(&self, c: &Clients, req: &ChangeRequest<'_>) -> Result<Applied, ProviderError> {
        let prior = req
            .prior
            .ok_or_else(|| ProviderError::new("no prior record to update"))?;
        let id = sdk::recorded_id(prior)?;
        sync_rules(c, id, req.attributes).await?;
        sdk::ec2_retag(c, id, Some(prior), req).await?;
        Ok(sdk::applied(req, prior.outputs.clone()))
    }

    #[cfg(feature = "aws")]
    async fn delete(&self, c: &Clients, recorded: &ResourceState) -> Result<(), ProviderError> {
        let id = sdk::recorded_id(recorded)?;
        sdk::delete_retrying(|| remove(c, id.to_string())).await
    }
}

/// One `DeleteSecurityGroup` attempt.
#[cfg(feature = "aws")]
async fn remove(c: &Clients, id: String) -> Result<(), ProviderError> {
    c.ec2
        .delete_security_group()
        .group_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(c.err("ec2", "DeleteSecurityGroup"))
}

#[cfg(feature = "aws")]
fn outputs(
    c: &Clients,
    g: &aws_sdk_ec2::types::SecurityGroup,
) -> std::collections::BTreeMap<String, Value> {
    let id = g.group_id().unwrap_or_default();
    sdk::outputs([
        ("id", Value::from(id)),
        ("arn", sdk::ec2_arn(c, g.owner_id(), "security-group", id)),
    ])
}

#[cfg(feature = "aws")]
async fn describe(
    c: &Clients,
    id: &str,
) -> Result<Option<aws_sdk_ec2::types::SecurityGroup>, ProviderError> {
    let out = sdk::found(
        c.ec2
            .describe_security_groups()
            .group_ids(id)
            .send()
            .await
            .map_err(c.err("ec2", "DescribeSecurityGroups")),
    )?;
    Ok(out.and_then(|o| o.security_groups().first().cloned()))
}

/// Makes the group's rules the requested ones (egress only when the spec has it) and
/// returns the group.
#[cfg(feature = "aws")]
async fn sync_rules(
    c: &Clients,
    id: &str,
    a: &Attributes,
) -> Result<aws_sdk_ec2::types::SecurityGroup, ProviderError> {
    let g = describe(c, id).await?.ok_or_else(|| {
        ProviderError::of(
            crate::providers::ErrorKind::NotFound,
            format!("security group {id} is gone; run `anvil plan` to recreate it"),
        )
    })?;
    let want_in = atoms_of_rules(a.get("ingress"))?;
    let have_in = atoms_of_permissions(g.ip_permissions());
    let revoke: Vec<IpPermission> = have_in.difference(&want_in).map(permission).collect();
    let grant: Vec<IpPermission> = want_in.difference(&have_in).map(permission).collect();
    if !revoke.is_empty() {
        c.ec2
            .revoke_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(revoke))
            .send()
            .await
            .map_err(c.err("ec2", "RevokeSecurityGroupIngress"))?;
    }
    if !grant.is_empty() {
        c.ec2
            .authorize_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(grant))
            .send()
            .await
            .map_err(c.err("ec2", "AuthorizeSecurityGroupIngress"))?;
    }
    if a.contains_key("egress") {
        let want = atoms_of_rules(a.get("egress"))?;
        let have = atoms_of_permissions(g.ip_permissions_egress());
        let revoke: Vec<IpPermission> = have.difference(&want).map(permission).collect();
        let grant: Vec<IpPermission> = want.difference(&have).map(permission).collect();
        // Revoke first: AWS refuses a rule that differs from an existing one only in its
        // description as a duplicate.
        if !revoke.is_empty() {
            c.ec2
                .revoke_security_group_egress()
                .group_id(id)
                .set_ip_permissions(Some(revoke))
                .send()
                .await
                .map_err(c.err("ec2", "RevokeSecurityGroupEgress"))?;
        }
        if !grant.is_empty() {
            c.ec2
                .authorize_security_group_egress()
                .group_id(id)
                .set_ip_permissions(Some(grant))
                .send()
                .await
                .map_err(c.err("ec2", "AuthorizeSecurityGroupEgress"))?;
        }
    }
    Ok(g)
}

#[cfg(feature = "aws")]
fn permission(a: &Atom) -> IpPermission {
    let (proto, from, to, cidr, desc) = a;
    let mut range = IpRange::builder().cidr_ip(cidr);
    if !desc.is_empty() {
        range = range.description(desc);
    }
    let mut p = IpPermission::builder()
        .ip_protocol(proto)
        .ip_ranges(range.build());
    if proto != "-1" {
        p = p
            .from_port(i32::try_from(*from).unwrap_or(0))
            .to_port(i32::try_from(*to).unwrap_or(0));
    }
    p.build()
}

/// The atoms of AWS's permissions.
#[cfg(feature = "aws")]
fn atoms_of_permissions(perms: &[IpPermission]) -> BTreeSet<Atom> {
    let mut out = BTreeSet::new();
    for p in perms {
        let proto = p.ip_protocol().unwrap_or("-1").to_string();
        let (from, to) = if proto == "-1" {
            (0, 0)
        } else {
            (
                i64::from(p.from_port().unwrap_or(0)),
                i64::from(p.to_port().unwrap_or(0)),
            )
        };
        for r in p.ip_ranges() {
            out.insert((
                proto.clone(),
                from,
                to,
                r.cidr_ip().unwrap_or_default().to_string(),
                r.description().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// The atoms of the spec's rules.
///
/// # Errors
/// A rule lacks its protocol, ports or CIDR blocks.
#[cfg(feature = "aws")]
fn atoms_of_rules(rules: Option<&Value>) -> Result<BTreeSet<Atom>, ProviderError> {
    let mut out = BTreeSet::new();
    for r in rules.and_then(Value::as_array).into_iter().flatten() {
        out.extend(atoms_of_rule(r)?);
    }
    Ok(out)
}

#[cfg(feature = "aws")]
fn atoms_of_rule(r: &Value) -> Result<BTreeSet<Atom>, ProviderError> {
    let bad = || {
        ProviderError::invalid(format!(
            "security group rule {r} needs `protocol`, `from_port`, `to_port` and \
             `cidr_blocks` (a list), and may have `description`"
        ))
    };
    let proto = match r.get("protocol") {
        Some(Value::String(s)) => s.to_lowercase(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(bad()),
    };
    let proto = if proto == "all" {
        "-1".to_string()
    } else {
        proto
    };
    let port = |k: &str| -> Result<i64, ProviderError> {
        r.get(k)
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .ok_or_else(bad)
    };
    let (from, to) = if proto == "-1" {
        (0, 0)
    } else {
        (port("from_port")?, port("to_port")?)
    };
    let desc = r
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let cidrs = r
        .get("cidr_blocks")
        .and_then(Value::as_array)
        .ok_or_else(bad)?;
    let mut out = BTreeSet::new();
    for cidr in cidrs {
        let cidr = cidr.as_str().ok_or_else(bad)?;
        out.insert((proto.clone(), from, to, cidr.to_string(), desc.clone()));
    }
    Ok(out)
}

/// Real atoms as rules: the recorded rules that are all there (as recorded, in their
/// order), then the atoms left over, one rule each.
#[cfg(feature = "aws")]
fn align_rules(recorded: Option<&Value>, real: BTreeSet<Atom>) -> Value {
    let mut rest = real;
    let mut out = Vec::new();
    for r in recorded.and_then(Value::as_array).into_iter().flatten() {
        let Ok(atoms) = atoms_of_rule(r) else {
            continue;
        };
        if !atoms.is_empty() && atoms.is_subset(&rest) {
            for a in &atoms {
                rest.remove(a);
            }
            out.push(r.clone());
        }
    }
    for (proto, from, to, cidr, desc) in rest {
        let mut m = Map::new();
        m.insert("protocol".into(), Value::from(proto));
        m.insert("from_port".into(), Value::from(from));
        m.insert("to_port".into(), Value::from(to));
        m.insert("cidr_blocks".into(), Value::from(vec![Value::from(cidr)]));
        if !desc.is_empty() {
            m.insert("description".into(), Value::from(desc));
        }
        out.push(Value::Object(m));
    }
    Value::Array(out)
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_compare_as_sets_and_extra_rules_show() {
        let recorded = json!([
            {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["10.0.0.0/16", "10.1.0.0/16"]},
            {"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"], "description": "all"},
        ]);
        let mut real = atoms_of_rules(Some(&recorded)).unwrap();
        assert_eq!(real.len(), 3);
        // Same atoms: the recorded rules come back as recorded.
        assert_eq!(align_rules(Some(&recorded), real.clone()), recorded);
        // An extra rule added outside anvil is listed after them.
        real.insert(("tcp".into(), 22, 22, "0.0.0.0/0".into(), String::new()));
        let seen = align_rules(Some(&recorded), real);
        assert_eq!(seen.as_array().unwrap().len(), 3);
        assert_eq!(
            seen[2],
            json!({"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["0.0.0.0/0"]})
        );
        // A rule with a missing field is refused, naming what a rule needs.
        let e = atoms_of_rules(Some(&json!([{"protocol": "tcp", "cidr_blocks": []}]))).unwrap_err();
        assert!(e.message.contains("from_port"), "{}", e.message);
    }
}

/// The record of the security group `g` as AWS reports it.
#[cfg(feature = "aws")]
fn observe(
    c: &Clients,
    recorded: &ResourceState,
    g: &aws_sdk_ec2::types::SecurityGroup,
) -> ResourceState {
    let ingress = align_rules(
        recorded.attributes.get("ingress"),
        atoms_of_permissions(g.ip_permissions()),
    );
    let egress = align_rules(
        recorded.attributes.get("egress"),
        atoms_of_permissions(g.ip_permissions_egress()),
    );
    sdk::observed(
        recorded,
        vec![
            ("name", Value::from(g.group_name().unwrap_or_default())),
            (
                "description",
                Value::from(g.description().unwrap_or_default()),
            ),
            ("vpc_id", Value::from(g.vpc_id().unwrap_or_default())),
            ("ingress", ingress),
            ("egress", egress),
            ("tags", sdk::ec2_user_tags(g.tags())),
        ],
        &["tags", "ingress"],
        outputs(c, g),
    )
}
